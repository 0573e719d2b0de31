/**
 * decode -> validate -> route -> sinks. Takes the broker's InboundRecord and answers through `done` when
 * the broker may acknowledge. Never throws: every failure becomes a Rejection with a code, which is
 * counted, logged at debug, written to the rejections table and republished by the broker on
 * $uns/rejected/<topic>; it never reaches the good data.
 */
import type { ValidateFunction } from 'ajv';
import type { Logger } from '../src/core/log.js';
import type { ErrorCode } from '../src/core/errors.js';
import type { IngestFn, IngestOutcome } from '../src/core/ingest.js';
import { isRejection, rejection, type InboundRecord, type JsonValue, type Point, type Rejection, type UnsMessage } from '../src/core/message.js';
import type { Namespace, RouteSpec } from '../src/core/topics.js';
import { decodeValuePayload } from './decode/envelope.js';
import type { SparkplugDecoder } from './decode/sparkplug.js';
import type { StoreWriter, WriteResult } from './sinks/store/store-writer.js';
import { messageToItem, redeliveryKey, rejectionToItem, retainedDeleteItem } from './sinks/store/to-rows.js';
import type { WriteItem } from './sinks/store/rows.js';

export interface PipelineOptions {
  readonly namespace: Namespace;
  readonly schemas: ReadonlyMap<string, ValidateFunction>;
  readonly sparkplug: SparkplugDecoder;
  readonly writer: StoreWriter;
  readonly limits: { readonly maxBytes: number; readonly maxDepth: number };
  readonly dupWindowMs: number;
  /** See RESEND_LAG_MS (default). */
  readonly resendLagMs?: number;
  /** How many recent redelivery keys are remembered (default 100,000). */
  readonly recentKeys?: number;
  readonly log: Logger;
}

interface RecentMessage {
  readonly connection: number | undefined;
  readonly at: number;
  durable: boolean;
  /** Re-sends waiting for the original to become durable. */
  waiters: Array<(o: IngestOutcome) => void> | null;
  /** Its position in the eviction ring. */
  slot: number;
}

export interface PipelineStats {
  accepted: number;
  rejected: Partial<Record<ErrorCode, number>>;
  duplicatesDropped: number;
  deadbandSkipped: number;
  /** QoS 0 publishes held because the store was behind: their publishers' sockets stop being read. */
  backpressureHolds: number;
  sparkplugWarnings: number;
}

/** Listeners that see every accepted message (live fan-out hangs here). Must not throw or block. */
export type MessageListener = (msg: UnsMessage) => void;

let seq = 0;
/**
 * How close to the end of its connection a message must have come for its PUBACK to be possibly lost: a
 * connection that dies silently is noticed within 1.5 keep-alive intervals (60 s is common), or at once when
 * the client reconnects and takes its session over.
 */
const RESEND_LAG_MS = 120_000;
const bootId = Date.now().toString(36);

/** ajv checks `number` with typeof, so exact big integers are shown to it as (approximate) numbers. */
function forValidation(doc: JsonValue): unknown {
  if (typeof doc === 'bigint') return Number(doc);
  if (Array.isArray(doc)) return doc.map(forValidation);
  if (doc !== null && typeof doc === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(doc)) out[k] = forValidation(v);
    return out;
  }
  return doc;
}

function hasBigint(doc: JsonValue): boolean {
  if (typeof doc === 'bigint') return true;
  if (doc !== null && typeof doc === 'object') return Object.values(doc).some(hasBigint);
  return false;
}

export class Pipeline {
  readonly stats: PipelineStats = { accepted: 0, rejected: {}, duplicatesDropped: 0, deadbandSkipped: 0, backpressureHolds: 0, sparkplugWarnings: 0 };
  private readonly listeners: MessageListener[] = [];
  private readonly lastStored = new Map<string, number>();
  /** ISA-95 verdicts per topic: topics recur, the check need not. */
  private readonly levelChecks = new Map<string, ReturnType<Namespace['checkLevels']>>();
  /**
   * Redelivery keys of recent QoS > 0 messages, oldest first (bounded): a re-send of one of them from a
   * later connection is acknowledged with its original (once durable) and stored once, DUP flag or not.
   */
  private readonly recent = new Map<string, RecentMessage>();
  /**
   * The same keys in arrival order, as a ring: the oldest is evicted by position. (Evicting through
   * Map.keys().next() costs a walk over every deleted slot at the table's front: quadratic under load.)
   */
  private readonly ring: Array<string | undefined>;
  private ringAt = 0;
  /** When recent connections closed (epoch ms), oldest first (bounded). */
  private readonly closedAt = new Map<number, number>();
  /** Message id -> state key whose snapshot must be written with that message. */
  private readonly stateChanges = new Map<string, string>();
  /** Revisions grow across restarts too: start from the clock. */
  private stateRev = Date.now() * 1000;
  private readonly log: Logger;

  constructor(private readonly opts: PipelineOptions) {
    this.log = opts.log;
    this.ring = new Array<string | undefined>(opts.recentKeys ?? 100_000);
  }

  /** The broker lost or closed a connection: its last messages are the ones whose PUBACK may be lost. */
  connectionClosed(connection: number, at: number): void {
    this.closedAt.set(connection, at);
    if (this.closedAt.size > 100_000) {
      const oldest = this.closedAt.keys().next();
      if (!oldest.done) this.closedAt.delete(oldest.value);
    }
  }

  onMessage(l: MessageListener): void {
    this.listeners.push(l);
  }

  readonly ingest: IngestFn = (record, done) => {
    const result = this.process(record);
    if (result === 'retained-delete') {
      this.submit(record, retainedDeleteItem(record), done, {});
      return;
    }
    if (isRejection(result)) {
      this.stats.rejected[result.code] = (this.stats.rejected[result.code] ?? 0) + 1;
      this.log.debug({ topic: record.topic, code: result.code, reason: result.reason }, 'message rejected');
      this.submit(record, rejectionToItem(result, record), done, { rejection: result });
      return;
    }
    this.stats.accepted++;
    const stateKey = this.stateChanges.get(result.id);
    if (stateKey !== undefined) this.stateChanges.delete(result.id);
    for (const l of this.listeners) l(result);
    if (!result.store) { this.release(record, done, {}); return; }
    const points = this.applyDeadband(result);
    const msg = points === result.points ? result : { ...result, points };
    const src = redeliveryKey(record);
    let item = messageToItem(msg, record, src);
    if (stateKey !== undefined) {
      item = { ...item, state: { key: stateKey, rev: this.stateRev++, value: JSON.stringify(this.opts.sparkplug.snapshot()) } };
    }
    if (item.samples.length === 0 && !item.retained && !item.state) { this.release(record, done, {}); return; }
    if (src !== null && record.source.connection !== undefined) { this.submitTracked(record, item, src, done); return; }
    this.submit(record, item, done, {});
  };

  /** Pure part: decode, check levels, validate. */
  private process(record: InboundRecord): UnsMessage | Rejection | 'retained-delete' {
    const { topic } = record;
    if (record.source.retain && record.payload.length === 0) return 'retained-delete';
    const route = this.opts.namespace.matchRoute(topic);
    if (!route) return rejection('UNS_ERR_NO_ROUTE', topic, 'no route in topics.yaml matches this topic');
    let path = null;
    if (route.isa95) {
      let check = this.levelChecks.get(topic);
      if (check === undefined) {
        check = this.opts.namespace.checkLevels(topic);
        if (this.levelChecks.size >= 100_000) this.levelChecks.clear();
        this.levelChecks.set(topic, check);
      }
      if ('reason' in check) return rejection('UNS_ERR_ISA95_LEVEL', topic, check.reason);
      path = check.path;
    }
    let points: readonly Point[];
    let document: JsonValue | undefined;
    let sparkplugChanged = false;
    if (route.encoding === 'sparkplugb') {
      const r = this.opts.sparkplug.decode(topic, record.payload, record.receivedAt);
      if (isRejection(r)) return r;
      if (r.kind !== 'metrics') points = [];
      else {
        points = r.points;
        // Births and deaths change the alias tables a restart must get back.
        sparkplugChanged = r.birth !== undefined || r.death === true;
        if (r.warning) {
          this.stats.sparkplugWarnings++;
          this.log.info({ topic, code: r.warning.code, reason: r.warning.reason }, 'sparkplug warning');
        }
      }
    } else {
      const r = decodeValuePayload(record.payload, route.encoding, {
        topic, receivedAt: record.receivedAt, unit: route.unit, limits: this.opts.limits,
      });
      if (isRejection(r)) return r;
      points = r.points;
      document = r.document;
    }
    if (route.schema !== undefined && document !== undefined) {
      const validate = this.opts.schemas.get(route.schema);
      const doc = hasBigint(document) ? forValidation(document) : document;
      if (validate && !validate(doc)) {
        const e = validate.errors?.[0];
        return rejection('UNS_ERR_SCHEMA_VIOLATION', topic,
          `schema ${route.schema}: ${e ? `${e.instancePath || '/'} ${e.message ?? ''}`.trim() : 'invalid'}`);
      }
    }
    const msg = this.message(record, route, path, points);
    if (sparkplugChanged) this.stateChanges.set(msg.id, 'sparkplug');
    return msg;
  }

  private message(record: InboundRecord, route: RouteSpec, path: UnsMessage['path'], points: readonly Point[]): UnsMessage {
    return {
      id: `${bootId}-${(seq++).toString(36)}`, topic: record.topic, path, encoding: route.encoding, route: route.name,
      points, source: record.source, receivedAt: record.receivedAt, store: route.store,
    };
  }

  /** A route's deadband: a numeric point is stored only when it moved at least that far from the last stored one. */
  private applyDeadband(msg: UnsMessage): readonly Point[] {
    const route = this.opts.namespace.matchRoute(msg.topic);
    const band = route?.deadband;
    if (band === undefined || band <= 0) return msg.points;
    const kept = msg.points.filter((p) => {
      if (typeof p.value !== 'number') return true;
      const last = this.lastStored.get(p.topic);
      if (last !== undefined && Math.abs(p.value - last) < band) { this.stats.deadbandSkipped++; return false; }
      this.lastStored.set(p.topic, p.value);
      return true;
    });
    return kept.length === msg.points.length ? msg.points : kept;
  }

  private submit(record: InboundRecord, item: WriteItem, done: (o: IngestOutcome) => void, outcome: IngestOutcome): void {
    if (record.source.qos > 0) {
      this.opts.writer.submit(item, (r) => done(this.outcome(record, r, outcome)));
      return;
    }
    this.opts.writer.submit(item);
    this.release(record, done, outcome);
  }

  /** The writer's answer as the door's answer: not durable, refused by the database (a rejection), or as planned. */
  private outcome(record: InboundRecord, r: WriteResult, planned: IngestOutcome): IngestOutcome {
    if (r.error) return { error: r.error };
    if (r.refused) {
      this.stats.rejected.UNS_ERR_STORE_REJECTED = (this.stats.rejected.UNS_ERR_STORE_REJECTED ?? 0) + 1;
      return { rejection: rejection('UNS_ERR_STORE_REJECTED', record.topic, `the database refused the row: ${r.refused.reason}`) };
    }
    return planned;
  }

  /** QoS 0, or nothing to store: acknowledge now, unless the store is behind (then hold: back-pressure). */
  private release(_record: InboundRecord, done: (o: IngestOutcome) => void, outcome: IngestOutcome): void {
    if (!this.opts.writer.aboveHighWater()) { done(outcome); return; }
    this.stats.backpressureHolds++;
    this.opts.writer.whenBelowLowWater(() => done(outcome));
  }

  /**
   * A QoS > 0 MQTT message: stored once even when it is a re-send. A re-send has its original's redelivery
   * key and comes on a later connection (or carries DUP); if the original is remembered it answers for both. If not,
   * and the broker marks it as a possible re-send (DUP, or first after CONNECT), the store is asked; a copy
   * still in the spool is caught when the spool is replayed (replay skips stored redelivery keys).
   */
  private submitTracked(record: InboundRecord, original: WriteItem, src: string, done: (o: IngestOutcome) => void): void {
    let item = original;
    const prev = this.recent.get(src);
    // A later connection's copy is a re-send; so is a DUP copy on the same connection (a first attempt never
    // carries DUP [MQTT-3.3.1-1]; some clients retry on the connection they have). Without DUP, the same key
    // on the same connection is a new message: its packet id was freed by the PUBACK.
    // A PUBACK can only have been lost near the end of the original's connection: a message from early in a
    // long connection, sent again by a device that restarts its packet ids, is new.
    const resent = prev !== undefined && record.receivedAt - prev.at <= this.opts.dupWindowMs && (record.source.dup ||
      (prev.connection !== record.source.connection && (this.closedAt.get(prev.connection as number) ?? record.receivedAt) - prev.at <= (this.opts.resendLagMs ?? RESEND_LAG_MS)));
    if (resent) {
      this.stats.duplicatesDropped++;
      if (prev.durable) done({});
      else (prev.waiters ??= []).push(done);
      return;
    }
    // Seen before on this connection (or too long ago to be its re-send): a new message reusing the key.
    if (prev !== undefined) item = { ...item, keyReused: true };
    // Not remembered, but possibly a re-send (DUP, or early in a connection, after a restart of ours): the
    // store's write skips it if its key is already stored near its time (no extra round trip per message),
    // and so does replay if it is spooled.
    if (prev === undefined && record.source.maybeResend) item = { ...item, resendCheck: true };
    this.submitRemembered(record, item, src, done);
  }

  private submitRemembered(record: InboundRecord, item: WriteItem, src: string, done: (o: IngestOutcome) => void): void {
    const entry: RecentMessage = { connection: record.source.connection, at: record.receivedAt, durable: false, waiters: null, slot: 0 };
    const evict = this.ring[this.ringAt];
    // The slot's key may have been remembered again since (a newer entry): only an entry this old goes.
    if (evict !== undefined && this.recent.get(evict)?.slot === this.ringAt) this.recent.delete(evict);
    this.ring[this.ringAt] = src;
    entry.slot = this.ringAt;
    this.ringAt = (this.ringAt + 1) % this.ring.length;
    this.recent.set(src, entry);
    this.opts.writer.submit(item, (r) => {
      const out = this.outcome(record, r, {});
      if (r.error) {
        // Not durable: the client sends again; that copy must not be taken for a duplicate.
        if (this.recent.get(src) === entry) this.recent.delete(src);
      } else {
        entry.durable = true;
      }
      done(out);
      const waiters = entry.waiters;
      entry.waiters = null;
      if (waiters) for (const w of waiters) w(r.error ? out : {});
    });
  }
}
