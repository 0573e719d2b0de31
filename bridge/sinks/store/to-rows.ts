/** Turns a decoded message (or a rejection) into the rows the store writes. Runs once per message. */
import type { InboundRecord, Point, Rejection, UnsMessage, Value } from '../../../src/core/index.js';
import { stringifyJson } from '../../decode/json-exact.js';
import type { SampleRow, TopicMeta, WriteItem, RetainedRow } from './rows.js';

/** Rejected payloads are kept for inspection, up to this many bytes. */
const REJECTED_PAYLOAD_KEEP = 64 * 1024;

/**
 * Redelivery key: a resent QoS > 0 PUBLISH carries the same client, packet id, topic and payload
 * [MQTT-3.3.1-1]. A 53-bit hash (two 32-bit FNV-1a lanes): an exact JS number, an int8 in PostgreSQL. It is only
 * ever compared among rows of one topic near one time, so 53 bits leave collisions out of reach, and it
 * costs a fraction of a cryptographic digest on the hot path.
 */
export function redeliveryKey(record: InboundRecord): number | null {
  const s = record.source;
  if (s.qos === 0 || s.packetId === undefined) return null;
  let h1 = 0x811c9dc5;
  let h2 = 0x01000193 ^ s.packetId;
  const mixStr = (str: string): void => {
    for (let i = 0; i < str.length; i++) {
      const c = str.charCodeAt(i);
      h1 = Math.imul(h1 ^ c, 0x01000193);
      h2 = Math.imul(h2 ^ c, 0x5bd1e995);
    }
    h1 = Math.imul(h1 ^ 0xff, 0x01000193);
  };
  mixStr(s.clientId);
  mixStr(record.topic);
  const p = record.payload;
  for (let i = 0; i < p.length; i++) {
    const c = p[i] as number;
    h1 = Math.imul(h1 ^ c, 0x01000193);
    h2 = Math.imul(h2 ^ c, 0x5bd1e995);
  }
  h2 ^= h2 >>> 15;
  // 21 bits of h2 above 32 bits of h1: a non-negative integer below 2^53.
  return (h2 >>> 11) * 0x100000000 + (h1 >>> 0);
}

/**
 * A stored sample's identity is (topic, time): a point timed by its source keeps that time, so the same
 * reading sent twice (a gateway's store-and-forward replaying after a network cut, over another connection)
 * is one row. A point timed at its receipt (no source timestamp) is kept apart from another of the same
 * topic received in the same millisecond by a step of one microsecond, so two readings never merge; those
 * rely on the redelivery key for re-sends instead. A point counts as timed at receipt when its time is its
 * message's receive time (a source timestamp equal to it, to the millisecond, is treated alike: it is
 * stored at that time, or a microsecond later when the topic already has a sample at that instant).
 */
export class ReceiptClock {
  private readonly last = new Map<string, number>();
  /** The latest time handed out: entries older than a new receive time can never collide again. */
  private horizon = Number.NEGATIVE_INFINITY;

  time(topic: string, t: number, receivedAt: number): number {
    if (t !== receivedAt) return t;
    if (receivedAt > this.horizon && this.last.size > 0) this.last.clear();
    const prev = this.last.get(topic);
    // Whole microseconds (the store's resolution): repeated `+ 0.001` would drift below it and collide.
    const out = prev !== undefined && prev >= t ? (Math.round(prev * 1000) + 1) / 1000 : t;
    this.last.set(topic, out);
    if (out > this.horizon) this.horizon = out;
    return out;
  }
}

/**
 * A topic's metadata row as a one-element list, made once per topic and handed to every item of it (the
 * same for every message: its route, unit and ISA-95 levels, which the levels stage caches per topic too).
 */
export class TopicMetas {
  private readonly byTopic = new Map<string, readonly TopicMeta[]>();

  constructor(private readonly max = 100_000) {}

  of(name: string, levels: TopicMeta['levels'], route: string, unit: string | null): readonly TopicMeta[] {
    const held = this.byTopic.get(name);
    const m = held?.[0];
    if (m !== undefined && m.levels === levels && m.route === route && m.unit === unit) return held as readonly TopicMeta[];
    if (this.byTopic.size >= this.max) this.byTopic.clear();
    const made = Object.freeze([Object.freeze({ name, levels, route, unit })]);
    this.byTopic.set(name, made);
    return made;
  }
}

function sample(p: Point, src: string | null, time: number): SampleRow {
  const v: Value = p.value;
  const quality = p.quality === 'good' ? null : p.quality;
  // Object literals with one fixed shape (no spreads): this runs once per stored point.
  let num: number | null = null;
  let text: string | null = null;
  let bool: boolean | null = null;
  let json: string | null = null;
  let bytes: string | null = null;
  switch (typeof v) {
    case 'number':
      if (Number.isFinite(v)) num = v; else json = JSON.stringify(String(v));
      break;
    case 'bigint':
      // The double is for aggregates; jsonb keeps the exact integer.
      num = Number(v); json = v.toString();
      break;
    case 'boolean':
      bool = v;
      break;
    case 'string':
      text = v;
      break;
    default:
      if (v === null) break;
      if (v instanceof Uint8Array) bytes = Buffer.from(v).toString('base64');
      else json = stringifyJson(v);
  }
  if (p.historical) return { topic: p.topic, time, num, text, bool, json, bytes, quality, src, hist: true };
  return { topic: p.topic, time, num, text, bool, json, bytes, quality, src };
}

function retained(record: InboundRecord, msg: UnsMessage): RetainedRow | undefined {
  const cert = msg.session?.certificate;
  if (cert !== undefined) return { topic: cert.topic, payload: Buffer.from(cert.payload).toString('base64'), qos: 1 };
  if (!record.source.retain) return undefined;
  return { topic: record.topic, payload: Buffer.from(record.payload).toString('base64'), qos: record.source.qos };
}

/**
 * `clock`: separates samples timed at receipt (see ReceiptClock); null keeps every point's own time. `metas`:
 * the topic rows of single-point messages are shared per topic (see TopicMetas).
 */
export function messageToItem(msg: UnsMessage, record: InboundRecord, src: string | null, clock: ReceiptClock | null = null,
  metas: TopicMetas | null = null): WriteItem {
  const at = (p: Point): number => (clock === null ? p.timestamp : clock.time(p.topic, p.timestamp, record.receivedAt));
  const pts = msg.points;
  if (msg.session?.online === false) {
    // A DEATH: its points are the stale marks of the metrics it ends; the stored values stay.
    return { samples: [], topics: [], stale: { topics: pts.map((p) => p.topic) }, retained: retained(record, msg), receivedAt: record.receivedAt };
  }
  if (pts.length === 1 && !pts[0]?.transient) {
    const p = pts[0] as Point;
    return {
      samples: [sample(p, src, at(p))],
      topics: metas === null ? [{ name: p.topic, levels: p.path ?? msg.path, route: msg.route, unit: p.unit ?? null }]
        : metas.of(p.topic, p.path ?? msg.path, msg.route, p.unit ?? null),
      retained: retained(record, msg), receivedAt: record.receivedAt,
    };
  }
  const topics = new Map<string, TopicMeta>();
  const samples: SampleRow[] = [];
  for (const p of pts) {
    if (p.transient) continue; // Sparkplug is_transient: live only
    samples.push(sample(p, src, at(p)));
    if (!topics.has(p.topic)) {
      topics.set(p.topic, { name: p.topic, levels: p.path ?? msg.path, route: msg.route, unit: p.unit ?? null });
    }
  }
  return { samples, topics: [...topics.values()], retained: retained(record, msg), receivedAt: record.receivedAt };
}

/** A zero-length retained publish deletes the retained message [MQTT-3.3.1-10]; it is not data. */
export function retainedDeleteItem(record: InboundRecord): WriteItem {
  return { samples: [], topics: [], retained: { topic: record.topic, payload: '', qos: 0 }, receivedAt: record.receivedAt };
}

export function rejectionToItem(rej: Rejection, record: InboundRecord): WriteItem {
  return {
    samples: [], topics: [], receivedAt: record.receivedAt,
    rejection: {
      time: record.receivedAt, topic: record.topic, code: rej.code, reason: rej.reason.slice(0, 2000),
      clientId: record.source.clientId, payload: Buffer.from(record.payload.subarray(0, REJECTED_PAYLOAD_KEEP)).toString('base64'),
    },
  };
}
