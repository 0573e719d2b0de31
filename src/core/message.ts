/**
 * THE message type. The broker hands the bridge an InboundRecord; decode turns it into one immutable
 * UnsMessage; every later stage takes a message and returns a message or a Rejection.
 */
import type { ErrorCode } from './errors.js';

export type Encoding = 'json' | 'number' | 'string' | 'sparkplugb' | 'raw';

/**
 * OPC-style quality. Absent on the wire means good. 'stale': the source went away (a Sparkplug NDEATH or
 * DDEATH); the last value is kept but is no longer current.
 */
export type Quality = 'good' | 'uncertain' | 'bad' | 'stale';

/** A JSON value as decoded exactly: integers beyond 2^53 are kept as bigint, never rounded. */
export type JsonValue = null | boolean | number | bigint | string | JsonValue[] | { [key: string]: JsonValue };

/** A point's value: a scalar, an exact big integer, raw bytes (encoding raw), or a JSON object/array. */
export type Value = number | bigint | boolean | string | Uint8Array | JsonValue[] | { [key: string]: JsonValue } | null;

/** One timestamped value of one topic. A Sparkplug payload yields one point per metric. */
export interface Point {
  readonly topic: string;
  readonly value: Value;
  /** Source time in epoch milliseconds (payload timestamp, else receive time). */
  readonly timestamp: number;
  readonly quality: Quality;
  readonly unit?: string | undefined;
  /** Sparkplug is_historical: stored in history only; never the latest value, never fanned out live. */
  readonly historical?: true | undefined;
  /** Sparkplug is_transient: fanned out live, never stored. */
  readonly transient?: true | undefined;
  /** ISA-95 levels of this point's topic when they differ from its message's (Sparkplug metrics mapped into the namespace). */
  readonly path?: Isa95Path | undefined;
}

/** ISA-95 equipment path taken from the topic's leading levels, as named in topics.yaml. */
export type Isa95Path = Readonly<Record<string, string>>;

export interface Source {
  readonly protocol: 'mqtt' | 'http';
  readonly clientId: string;
  readonly username?: string | undefined;
  /** MQTT packet identifier (QoS > 0). */
  readonly packetId?: number | undefined;
  readonly qos: 0 | 1 | 2;
  readonly retain: boolean;
  /** MQTT DUP flag: a possible redelivery [MQTT-3.3.1-1]. */
  readonly dup: boolean;
  /** Serial of the network connection it came on (MQTT): a re-send comes on a later connection than its original. */
  readonly connection?: number | undefined;
  /**
   * It may re-send something sent before this connection (DUP set, or among the first publishes after
   * CONNECT, where clients re-send what was not acknowledged, with or without DUP): worth a look in the store.
   */
  readonly maybeResend?: boolean | undefined;
}

/** What the broker hands over: bytes plus transport facts. No decoding has happened yet. */
export interface InboundRecord {
  readonly topic: string;
  readonly payload: Uint8Array;
  readonly source: Source;
  /** Epoch milliseconds. */
  readonly receivedAt: number;
}

export interface UnsMessage {
  readonly id: string;
  readonly topic: string;
  readonly path: Isa95Path | null;
  readonly encoding: Encoding;
  /** Name of the topics.yaml route that matched. */
  readonly route: string;
  readonly points: readonly Point[];
  readonly source: Source;
  readonly receivedAt: number;
  /** Persist to the store (route's `store`). */
  readonly store: boolean;
  /**
   * A Sparkplug session change: a BIRTH opened (online) or a DEATH closed (offline) an edge node or device.
   * A death's points are its metrics marked 'stale' (value null): the store marks their latest values stale
   * and keeps the values; live subscribers see the stale quality.
   */
  readonly session?: SessionChange | undefined;
}

export interface SessionChange {
  readonly online: boolean;
  readonly group: string;
  readonly edge: string;
  readonly device?: string | undefined;
  /**
   * The BIRTH (or NDEATH) as received, kept retained on `$sparkplug/certificates/<its topic>` so a client
   * that subscribes later gets it without forcing a rebirth. DDEATH has none.
   */
  readonly certificate?: { readonly topic: string; readonly payload: Uint8Array } | undefined;
}

export interface Rejection {
  readonly code: ErrorCode;
  readonly topic: string;
  readonly reason: string;
}

export type StageResult = UnsMessage | Rejection;

export function isRejection(r: unknown): r is Rejection {
  return typeof r === 'object' && r !== null && 'code' in r && 'reason' in r && !('points' in r);
}

export function rejection(code: ErrorCode, topic: string, reason: string): Rejection {
  return { code, topic, reason };
}
