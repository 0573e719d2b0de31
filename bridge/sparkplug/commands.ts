/**
 * NCMD/DCMD payloads: metrics written to an edge node or device, encoded with the datatype its BIRTH gave
 * each metric ([tck-id-topics-ncmd-payload] [tck-id-topics-dcmd-payload]: a timestamp and the metrics).
 */
import sparkplugPayload from 'sparkplug-payload';
import type { UMetric } from 'sparkplug-payload/lib/sparkplugbpayload.js';
import { datatypeName, DATATYPE_NAMES } from '../decode/sparkplug-wire.js';

const codec = sparkplugPayload.get('spBv1.0');

/** A command value, JSON-shaped: 64-bit integers beyond 2^53 as decimal strings. */
export type CommandValue = boolean | number | string | null;

export interface CommandMetric {
  readonly name: string;
  /** A Sparkplug datatype name ('Boolean', 'Int32', 'Double', 'String', ...). */
  readonly datatype: string;
  readonly value: CommandValue;
}

export function encodeCommand(metrics: readonly CommandMetric[], timestamp: number): Buffer {
  if (codec === null) throw new Error('sparkplug-payload lacks spBv1.0');
  const ms = metrics.map((m) => {
    const out = { name: m.name, type: m.datatype, timestamp } as UMetric;
    if (m.value === null) (out as { isNull?: boolean }).isNull = true;
    else out.value = m.value as UMetric['value'];
    return out;
  });
  return Buffer.from(codec.encodePayload({ timestamp, metrics: ms }));
}

const INT_RANGES: Readonly<Record<string, readonly [bigint, bigint]>> = {
  Int8: [-128n, 127n], Int16: [-32768n, 32767n], Int32: [-2147483648n, 2147483647n], Int64: [-(2n ** 63n), 2n ** 63n - 1n],
  UInt8: [0n, 255n], UInt16: [0n, 65535n], UInt32: [0n, 4294967295n], UInt64: [0n, 2n ** 64n - 1n], DateTime: [0n, 2n ** 63n - 1n],
};

/**
 * A requested value checked against the metric's BIRTH datatype (code), as the edge node will read it; the
 * reason says why not. Only scalar datatypes can be written (DataSet, Template, Bytes, File: not by this API).
 */
export function commandValue(datatype: number, value: unknown): { value: CommandValue; datatype: string } | { error: string } {
  const name = datatypeName(datatype);
  if (value === null) return { value: null, datatype: name };
  const range = INT_RANGES[name];
  if (range !== undefined) {
    const text = typeof value === 'number' && Number.isInteger(value) ? String(value) : typeof value === 'string' && /^-?\d{1,20}$/.test(value) ? value : null;
    if (text === null) return { error: `${name} needs an integer (beyond 2^53 as a decimal string)` };
    const b = BigInt(text);
    if (b < range[0] || b > range[1]) return { error: `${text} is out of range for ${name}` };
    return { value: b >= -9007199254740991n && b <= 9007199254740991n ? Number(b) : text, datatype: name };
  }
  switch (name) {
    case 'Float':
    case 'Double':
      return typeof value === 'number' && Number.isFinite(value) ? { value, datatype: name } : { error: `${name} needs a finite number` };
    case 'Boolean':
      return typeof value === 'boolean' ? { value, datatype: name } : { error: 'Boolean needs true or false' };
    case 'String':
    case 'Text':
    case 'UUID':
      return typeof value === 'string' && !value.includes('\u0000') ? { value, datatype: name } : { error: `${name} needs a string without U+0000` };
    default:
      return { error: `metrics of datatype ${name} cannot be written by command` };
  }
}

export const WRITABLE_DATATYPES: readonly string[] = DATATYPE_NAMES.filter((n) => n in INT_RANGES || ['Float', 'Double', 'Boolean', 'String', 'Text', 'UUID'].includes(n));
