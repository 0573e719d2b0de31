/**
 * Sparkplug B on the wire: the protobuf shapes (decoded with the codec generated inside
 * `sparkplug-payload`), datatype codes and exact conversions of 64-bit values, and readers of payload fields
 * (seq, bdSeq, properties) and of the top-level metric count before a full decode.
 */
import sparkplugProto from 'sparkplug-payload/lib/sparkplugPayloadProto.js';
import type { ErrorCode, Quality } from '../../src/core/index.js';

// ------------------------------------------------------------------------------------------- wire shapes

// Minimal views of the protobufjs messages. Absent scalar fields read as prototype defaults, so presence of
// name/alias/timestamp/datatype/seq is tested with Object.hasOwn; value fields default to null.
export interface LongLike {
  readonly low: number;
  readonly high: number;
}
export type U64 = number | LongLike;

export interface WireValueHolder {
  readonly intValue?: number | null;
  readonly longValue?: U64 | null;
  readonly floatValue?: number | null;
  readonly doubleValue?: number | null;
  readonly booleanValue?: boolean | null;
  readonly stringValue?: string | null;
}
export interface WirePropertyValue extends WireValueHolder {
  readonly type?: number;
  readonly isNull?: boolean;
}
export interface WirePropertySet {
  readonly keys: string[];
  readonly values: WirePropertyValue[];
}
export interface WireDataSet {
  readonly columns: string[];
  readonly types: number[];
  readonly rows: { readonly elements: WireValueHolder[] }[];
}
export interface WireParameter extends WireValueHolder {
  readonly name?: string;
  readonly type?: number;
}
export interface WireTemplate {
  readonly version?: string;
  readonly templateRef?: string;
  readonly isDefinition?: boolean;
  readonly metrics: WireMetric[];
  readonly parameters: WireParameter[];
}
export interface WireMetric extends WireValueHolder {
  readonly name?: string;
  readonly alias?: U64;
  readonly timestamp?: U64;
  readonly datatype?: number;
  readonly isNull?: boolean;
  readonly isHistorical?: boolean;
  readonly isTransient?: boolean;
  readonly properties?: WirePropertySet | null;
  readonly bytesValue?: Uint8Array | null;
  readonly datasetValue?: WireDataSet | null;
  readonly templateValue?: WireTemplate | null;
}
export interface WirePayload {
  readonly timestamp?: U64;
  readonly metrics: WireMetric[];
  readonly seq?: U64;
  readonly uuid?: string;
  readonly body?: Uint8Array;
}

export const PayloadCodec = sparkplugProto.org.eclipse.tahu.protobuf.Payload;

export function decodeWire(bytes: Uint8Array): WirePayload {
  return PayloadCodec.decode(bytes) as unknown as WirePayload;
}

// ------------------------------------------------------------------------------------------------ datatypes

export const DT_INT8 = 1;
export const DT_INT16 = 2;
export const DT_INT32 = 3;
export const DT_INT64 = 4;
export const DT_UINT8 = 5;
export const DT_UINT16 = 6;
export const DT_UINT32 = 7;

export const DATATYPE_NAMES: readonly string[] = [
  'Unknown', 'Int8', 'Int16', 'Int32', 'Int64', 'UInt8', 'UInt16', 'UInt32', 'UInt64', 'Float', 'Double',
  'Boolean', 'String', 'DateTime', 'Text', 'UUID', 'DataSet', 'Bytes', 'File', 'Template', 'PropertySet',
  'PropertySetList',
];

export function datatypeName(dt: number): string {
  return DATATYPE_NAMES[dt] ?? 'Unknown';
}

export const MAX_SAFE = Number.MAX_SAFE_INTEGER;
export const TWO_32 = 4294967296;

/** A 64-bit integer, exactly: a number when |v| <= 2^53 - 1, else a bigint. */
export function exact64(v: U64, signed: boolean): number | bigint {
  if (typeof v === 'number') return v;
  const lo = v.low >>> 0;
  const hi = signed ? v.high | 0 : v.high >>> 0;
  // |hi| < 2^21 means |value| < 2^53: the common case, no bigint allocated.
  if (hi < 0x200000 && hi > -0x200000) return hi * TWO_32 + lo;
  const big = BigInt(hi) * 4294967296n + BigInt(lo);
  return big >= -9007199254740991n && big <= 9007199254740991n ? Number(big) : big;
}

/** The 32-bit integer field, read per datatype: Int8/Int16/Int32 are two's complement in a uint32. */
export function fromUint32(v: number, dt: number): number {
  switch (dt) {
    case DT_INT8:
      return (v << 24) >> 24;
    case DT_INT16:
      return (v << 16) >> 16;
    case DT_INT32:
    case DT_INT64:
      return v | 0;
    case DT_UINT8:
      return v & 0xff;
    case DT_UINT16:
      return v & 0xffff;
    default:
      return v >>> 0;
  }
}

export function fromUint64(v: U64, dt: number): number | bigint {
  switch (dt) {
    case DT_INT8:
    case DT_INT16:
    case DT_INT32:
    case DT_UINT8:
    case DT_UINT16:
    case DT_UINT32:
      // A narrow type sent in long_value (some encoders do): its low 32 bits hold the value.
      return fromUint32(typeof v === 'number' ? v >>> 0 : v.low >>> 0, dt);
    case DT_INT64:
      return exact64(v, true);
    default:
      // UInt64, DateTime (epoch ms) and unknown types are unsigned.
      return exact64(v, false);
  }
}

/** OPC-DA quality byte: top two bits 11 good, 01 uncertain, 00 bad. Codes above a byte are vendor
 * error/stale codes (Ignition's 500 = stale), hence bad. */
export function qualityOf(code: number): Quality {
  if (!Number.isInteger(code) || code < 0 || code > 255) return 'bad';
  if (code >= 192) return 'good';
  if (code >= 64) return 'uncertain';
  return 'bad';
}

export class ConvertError {
  constructor(
    readonly code: ErrorCode,
    readonly reason: string,
  ) {}
}

export function seqOf(payload: WirePayload): number {
  if (!Object.hasOwn(payload, 'seq')) return -1;
  const s = exact64(payload.seq as U64, false);
  return typeof s === 'number' && s >= 0 && s <= 255 ? s : -1;
}

/**
 * [tck-id-payloads-sequence-num-incrementing] each message after NBIRTH carries seq + 1 mod 256. A gap
 * keeps the data (it is still true) but is reported, so the host can ask for a rebirth; the counter
 * follows the node so a single loss is reported once.
 */
export function bdSeqOf(payload: WirePayload): number | bigint | undefined {
  for (const m of payload.metrics) {
    if (m.name !== 'bdSeq') continue;
    if (m.longValue != null) return exact64(m.longValue, false);
    if (m.intValue != null) return m.intValue >>> 0;
    return undefined;
  }
  return undefined;
}

/** A numeric property (e.g. Quality) from a PropertySet, or undefined. */
export function propertyNumber(ps: WirePropertySet, key: string): number | undefined {
  const i = ps.keys.indexOf(key);
  if (i < 0) return undefined;
  const v = ps.values[i];
  if (v === undefined || v.isNull === true) return undefined;
  if (v.intValue != null) return fromUint32(v.intValue, v.type ?? DT_INT32);
  if (v.longValue != null) {
    const n = fromUint64(v.longValue, v.type ?? DT_INT64);
    return typeof n === 'number' ? n : undefined;
  }
  return undefined;
}

export function countTopLevelMetrics(b: Uint8Array, limit: number): number {
  let pos = 0;
  let count = 0;
  const len = b.length;
  while (pos < len) {
    // tag varint (uint32)
    let tag = 0;
    let mul = 1;
    let byte: number;
    do {
      if (pos >= len || mul > TWO_32) return count;
      byte = b[pos++] as number;
      tag += (byte & 0x7f) * mul;
      mul *= 128;
    } while (byte & 0x80);
    const wire = tag % 8;
    if (wire === 0) {
      while (pos < len && ((b[pos++] as number) & 0x80) !== 0);
    } else if (wire === 1) {
      pos += 8;
    } else if (wire === 5) {
      pos += 4;
    } else if (wire === 2) {
      let n = 0;
      mul = 1;
      do {
        if (pos >= len || mul > MAX_SAFE / 128) return count;
        byte = b[pos++] as number;
        n += (byte & 0x7f) * mul;
        mul *= 128;
      } while (byte & 0x80);
      pos += n;
      if (Math.floor(tag / 8) === 2 && ++count > limit) return count;
    } else {
      return count; // groups (3/4) or invalid wire types: let the decoder say so
    }
  }
  return count;
}
