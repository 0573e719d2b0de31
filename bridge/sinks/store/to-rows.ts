/** Turns a decoded message (or a rejection) into the rows the store writes. Runs once per message. */
import { createHash } from 'node:crypto';
import type { InboundRecord, Point, Rejection, UnsMessage, Value } from '../../../src/core/message.js';
import { stringifyJson } from '../../decode/json-exact.js';
import type { SampleRow, TopicMeta, WriteItem, RetainedRow } from './rows.js';

/** Rejected payloads are kept for inspection, up to this many bytes. */
const REJECTED_PAYLOAD_KEEP = 64 * 1024;

/**
 * Redelivery key: a resent QoS > 0 PUBLISH carries the same client, packet id, topic and payload
 * [MQTT-4.3.2-1 ... MQTT-3.3.1-1]. 63 bits of SHA-1, as a decimal int64 for PostgreSQL.
 */
export function redeliveryKey(record: InboundRecord): string | null {
  const s = record.source;
  if (s.qos === 0 || s.packetId === undefined) return null;
  const h = createHash('sha1').update(s.clientId).update('\0').update(String(s.packetId)).update('\0')
    .update(record.topic).update('\0').update(record.payload).digest();
  return (h.readBigUInt64BE(0) & 0x7fffffffffffffffn).toString();
}

function sample(p: Point, src: string | null): SampleRow {
  const v: Value = p.value;
  const quality = p.quality === 'good' ? null : p.quality;
  const base = { topic: p.topic, time: p.timestamp, quality, src };
  switch (typeof v) {
    case 'number':
      return { ...base, num: Number.isFinite(v) ? v : null, text: null, bool: null, json: Number.isFinite(v) ? null : JSON.stringify(String(v)), bytes: null };
    case 'bigint':
      // The double is for aggregates; jsonb keeps the exact integer.
      return { ...base, num: Number(v), text: null, bool: null, json: v.toString(), bytes: null };
    case 'boolean':
      return { ...base, num: null, text: null, bool: v, json: null, bytes: null };
    case 'string':
      return { ...base, num: null, text: v, bool: null, json: null, bytes: null };
    default:
      if (v === null) return { ...base, num: null, text: null, bool: null, json: null, bytes: null };
      if (v instanceof Uint8Array) return { ...base, num: null, text: null, bool: null, json: null, bytes: Buffer.from(v).toString('base64') };
      return { ...base, num: null, text: null, bool: null, json: stringifyJson(v), bytes: null };
  }
}

function retained(record: InboundRecord): RetainedRow | undefined {
  if (!record.source.retain) return undefined;
  return { topic: record.topic, payload: Buffer.from(record.payload).toString('base64'), qos: record.source.qos };
}

export function messageToItem(msg: UnsMessage, record: InboundRecord, src: string | null): WriteItem {
  const topics = new Map<string, TopicMeta>();
  const samples: SampleRow[] = [];
  for (const p of msg.points) {
    samples.push(sample(p, src));
    if (!topics.has(p.topic)) {
      topics.set(p.topic, { name: p.topic, levels: msg.path, route: msg.route, unit: p.unit ?? null });
    }
  }
  return { samples, topics: [...topics.values()], retained: retained(record), receivedAt: record.receivedAt };
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
