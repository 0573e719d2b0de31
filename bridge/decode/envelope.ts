/**
 * Decodes a non-Sparkplug payload (encodings json, number, string, raw) into points plus the document that
 * JSON Schema validation sees. Never throws: every failure is a Rejection.
 */
import { rejection } from '../../src/core/index.js';
import type { JsonValue, Point, Quality, Rejection, Value } from '../../src/core/index.js';
import { decodeUtf8, parseJsonExact } from './json-exact.js';
import type { JsonLimits } from './json-exact.js';

export type ValueEncoding = 'json' | 'number' | 'string' | 'raw';

export interface ValueDecodeContext {
  readonly topic: string;
  /** Epoch milliseconds; the default point timestamp and the reference for "too far in the future". */
  readonly receivedAt: number;
  /** The route's unit (topics.yaml); an envelope `unit` overrides it. */
  readonly unit?: string | undefined;
  readonly limits: JsonLimits;
}

export interface DecodedValue {
  readonly points: Point[];
  /** What JSON Schema validation sees: the envelope object, or `{ value }` for a bare value. */
  readonly document: JsonValue;
}

/** Timestamps are epoch MILLISECONDS. Below 2000-01-01 a value almost surely is epoch seconds (1e9..2e9
 * seconds read as ms is January 1970), so it is refused rather than guessed. */
const MIN_TIMESTAMP_MS = 946_684_800_000;
/** Clocks drift, but a day ahead is a wrong clock or a wrong unit (microseconds, nanoseconds). */
const MAX_FUTURE_MS = 86_400_000;

/** OPC-DA quality is one byte; its top two bits are the major status: 11 good, 01 uncertain, 00 bad. */
function opcDaQuality(q: number): Quality {
  if (q >= 192) return 'good';
  if (q >= 64) return 'uncertain';
  return 'bad';
}

export function decodeValuePayload(
  bytes: Uint8Array,
  encoding: ValueEncoding,
  ctx: ValueDecodeContext,
): DecodedValue | Rejection {
  if (bytes.length > ctx.limits.maxBytes) {
    return rejection('UNS_ERR_PAYLOAD_TOO_LARGE', ctx.topic, `payload is ${bytes.length} bytes; the limit is ${ctx.limits.maxBytes}`);
  }
  switch (encoding) {
    case 'json':
      return decodeJson(bytes, ctx);
    case 'number':
      return decodeNumber(bytes, ctx);
    case 'string':
      return decodeString(bytes, ctx);
    case 'raw':
      return decodeRaw(bytes, ctx);
    default:
      return rejection('UNS_ERR_DECODE_JSON', ctx.topic, `unknown encoding ${String(encoding)}`);
  }
}

function single(ctx: ValueDecodeContext, value: Value, document: JsonValue): DecodedValue {
  const point: Point = {
    topic: ctx.topic,
    value,
    timestamp: ctx.receivedAt,
    // A null value carries no measurement, so without an explicit quality it is not "good".
    quality: value === null ? 'bad' : 'good',
    unit: ctx.unit,
  };
  return { points: [point], document };
}

function decodeJson(bytes: Uint8Array, ctx: ValueDecodeContext): DecodedValue | Rejection {
  const parsed = parseJsonExact(bytes, ctx.limits);
  if (!parsed.ok) return rejection(parsed.code, ctx.topic, parsed.reason);
  return fromJson(parsed.value, ctx);
}

function isObject(v: JsonValue): v is { [key: string]: JsonValue } {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * An object with an own `value` key is an envelope; any other object, array or scalar is itself the
 * value. Extra envelope keys are kept in the document (a schema may constrain them) but not in the point.
 */
function fromJson(json: JsonValue, ctx: ValueDecodeContext): DecodedValue | Rejection {
  if (!isObject(json) || !Object.hasOwn(json, 'value')) return single(ctx, json, { value: json });

  const value = json['value'] ?? null;
  let timestamp = ctx.receivedAt;
  let quality: Quality = value === null ? 'bad' : 'good';
  let unit = ctx.unit;

  // null members are treated as absent: many serialisers write every field and null the missing ones.
  const ts = json['timestamp'];
  if (ts !== undefined && ts !== null) {
    const t = parseTimestamp(ts, ctx.receivedAt);
    if (typeof t === 'string') return rejection('UNS_ERR_PAYLOAD_ENVELOPE', ctx.topic, t);
    timestamp = t;
  }
  const q = json['quality'];
  if (q !== undefined && q !== null) {
    if (q === 'good' || q === 'uncertain' || q === 'bad') {
      quality = q;
    } else if (typeof q === 'number' && Number.isInteger(q) && q >= 0 && q <= 255) {
      quality = opcDaQuality(q);
    } else {
      return rejection(
        'UNS_ERR_PAYLOAD_ENVELOPE',
        ctx.topic,
        'quality must be "good", "uncertain", "bad" or an OPC-DA quality byte 0..255',
      );
    }
  }
  const u = json['unit'];
  if (u !== undefined && u !== null) {
    if (typeof u !== 'string') return rejection('UNS_ERR_PAYLOAD_ENVELOPE', ctx.topic, 'unit must be a string');
    unit = u;
  }
  const point: Point = { topic: ctx.topic, value, timestamp, quality, unit };
  return { points: [point], document: json };
}

// RFC 3339 / ISO 8601 date-time WITH an offset: a zone-less time would be read in the server's local
// zone, which silently shifts data by hours, so it is refused.
const ISO_RE = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?(?:([Zz])|([+-])(\d{2}):?(\d{2}))$/;

function daysInMonth(year: number, month: number): number {
  return new Date(Date.UTC(year, month, 0)).getUTCDate();
}

/** Epoch ms, or a reason string. */
function parseTimestamp(ts: JsonValue, receivedAt: number): number | string {
  let ms: number;
  if (typeof ts === 'number') {
    if (!Number.isFinite(ts)) return 'timestamp is not a finite number';
    ms = ts;
  } else if (typeof ts === 'bigint') {
    return 'timestamp is out of range (epoch milliseconds expected)';
  } else if (typeof ts === 'string') {
    const m = ISO_RE.exec(ts);
    if (m === null) return 'timestamp string is not ISO 8601 date-time with offset (e.g. 2024-05-01T12:00:00Z)';
    const year = Number(m[1]);
    const month = Number(m[2]);
    const day = Number(m[3]);
    const hour = Number(m[4]);
    const minute = Number(m[5]);
    const second = m[6] === undefined ? 0 : Number(m[6]);
    // Digits beyond milliseconds are truncated, as Date.parse does: Point timestamps are epoch ms.
    const frac = m[7] === undefined ? 0 : Number(m[7].padEnd(3, '0').slice(0, 3));
    if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month) || hour > 23 || minute > 59 || second > 60) {
      return 'timestamp string has an out-of-range field';
    }
    let offset = 0;
    if (m[8] === undefined) {
      const oh = Number(m[10]);
      const om = Number(m[11]);
      if (oh > 23 || om > 59) return 'timestamp string has an out-of-range offset';
      offset = (oh * 60 + om) * 60_000 * (m[9] === '-' ? -1 : 1);
    }
    // A leap second (:60) is folded into the next second, as Date does.
    ms = Date.UTC(year, month - 1, day, hour, minute, second) + frac - offset;
  } else {
    return 'timestamp must be epoch milliseconds or an ISO 8601 string';
  }
  if (ms < 0) return 'timestamp is before 1970';
  if (ms < MIN_TIMESTAMP_MS) return 'timestamp looks like seconds; send epoch milliseconds';
  if (ms > receivedAt + MAX_FUTURE_MS) return 'timestamp is more than one day in the future';
  return ms;
}

// Exactly the brief's grammar: no sign '+', no leading '.', no hex, no NaN/Infinity.
const NUMBER_RE = /^-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?$/;

function isAsciiSpace(c: number | undefined): boolean {
  return c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;
}

function decodeNumber(bytes: Uint8Array, ctx: ValueDecodeContext): DecodedValue | Rejection {
  let start = 0;
  let end = bytes.length;
  while (start < end && isAsciiSpace(bytes[start])) start++;
  while (end > start && isAsciiSpace(bytes[end - 1])) end--;
  if (start === end) return rejection('UNS_ERR_DECODE_NUMBER', ctx.topic, 'payload is empty');
  // `{"value": 21.5, ...}` is accepted too, so a device can add a timestamp without a route change.
  if (bytes[start] === 0x7b) {
    const decoded = decodeJson(bytes, ctx);
    if (!('points' in decoded)) return decoded;
    const v = decoded.points[0]?.value;
    if (typeof v !== 'number' && typeof v !== 'bigint' && v !== null) {
      return rejection('UNS_ERR_DECODE_NUMBER', ctx.topic, 'envelope value is not a number');
    }
    return decoded;
  }

  // A number is ASCII; checking bytes first avoids decoding text that cannot match.
  let text = '';
  for (let i = start; i < end; i++) {
    const b = bytes[i] as number;
    if (b > 0x7e) return rejection('UNS_ERR_DECODE_NUMBER', ctx.topic, 'payload is not an ASCII decimal number');
    text += String.fromCharCode(b);
  }
  if (!NUMBER_RE.test(text)) return rejection('UNS_ERR_DECODE_NUMBER', ctx.topic, 'payload is not a decimal number');
  const n = Number(text);
  let value: number | bigint = n;
  if (!Number.isFinite(n)) return rejection('UNS_ERR_DECODE_NUMBER', ctx.topic, 'number out of range');
  // Integers beyond 2^53 stay exact, as in JSON payloads.
  if (Number.isInteger(n) && !Number.isSafeInteger(n) && !/[.eE]/.test(text)) value = BigInt(text);
  return single(ctx, value, { value });
}

function decodeString(bytes: Uint8Array, ctx: ValueDecodeContext): DecodedValue | Rejection {
  // PostgreSQL text cannot hold U+0000; in UTF-8 the only 0x00 byte is U+0000, so search the bytes.
  if (bytes.indexOf(0) !== -1) return rejection('UNS_ERR_PAYLOAD_NUL', ctx.topic, 'payload holds U+0000');
  const text = decodeUtf8(bytes);
  if (text === undefined) return rejection('UNS_ERR_DECODE_STRING', ctx.topic, 'payload is not well-formed UTF-8');
  return single(ctx, text, { value: text });
}

function decodeRaw(bytes: Uint8Array, ctx: ValueDecodeContext): DecodedValue | Rejection {
  // Bytes are not JSON, so a schema sees only their length (it may bound it with maximum).
  return single(ctx, bytes, { byteLength: bytes.length });
}
