/**
 * Live datapoints on the wire: `{"topic","value","timestamp","quality"}` with ISO-8601 source time, exact
 * big integers and raw bytes as `{"base64": "..."}` (as the REST API returns them). A point is serialised
 * once however many connections receive it.
 */
import type { Point, Value } from '../core/index.js';
import { toJson } from './json.js';

const cache = new WeakMap<Point, string>();

function wireValue(v: Value): unknown {
  return v instanceof Uint8Array ? { base64: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') } : v;
}

function iso(ms: number): string | null {
  return Number.isFinite(ms) && Math.abs(ms) <= 8.64e15 ? new Date(ms).toISOString() : null;
}

/** The point as a JSON object text. Never throws (hub listeners must not). */
export function pointJson(p: Point): string {
  let s = cache.get(p);
  if (s === undefined) {
    s = toJson({ topic: p.topic, value: wireValue(p.value), timestamp: iso(p.timestamp), quality: p.quality });
    cache.set(p, s);
  }
  return s;
}

/** A numeric view of a value for deadbands; null when it is not a number. */
export function numericValue(v: Value): number | null {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  return null;
}

/** `{"type":<type>,["id":<id>,]"datapoints":[...]}` from already serialised points. */
export function datapointsFrame(type: string, parts: readonly string[], id?: string): string {
  const head = id === undefined ? `{"type":${JSON.stringify(type)},` : `{"type":${JSON.stringify(type)},"id":${JSON.stringify(id)},`;
  return `${head}"datapoints":[${parts.join(',')}]}`;
}
