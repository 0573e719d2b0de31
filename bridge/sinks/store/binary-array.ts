/**
 * One-dimensional PostgreSQL arrays in the binary format (array_recv), for the batch inserts' unnest()
 * parameters. node-pg sends a Buffer parameter in binary, so the numbers and timestamps of a batch cross as
 * machine values: nothing is formatted as text here, and nothing is parsed back from text in the server.
 *
 * Layout: ndim, has-nulls flag, element type OID, then (for one dimension) its length and lower bound (1), then
 * per element its byte length (-1: NULL) and its bytes, all integers big-endian.
 */

const OID = { bool: 16, int8: 20, int4: 23, text: 25, float8: 701, timestamptz: 1184, jsonb: 3802 } as const;
type ElementType = keyof typeof OID;

/** Microseconds from the Unix epoch to PostgreSQL's (2000-01-01T00:00:00Z). */
const PG_EPOCH_US = 946_684_800_000_000;
const TWO_32 = 0x1_0000_0000;

function header(buf: Buffer, n: number, hasNull: boolean, type: ElementType): number {
  buf.writeInt32BE(n === 0 ? 0 : 1, 0);
  buf.writeInt32BE(hasNull ? 1 : 0, 4);
  buf.writeInt32BE(OID[type], 8);
  if (n === 0) return 12;
  buf.writeInt32BE(n, 12);
  buf.writeInt32BE(1, 16);
  return 20;
}

function nulls(values: ArrayLike<unknown>): number {
  let c = 0;
  for (let i = 0; i < values.length; i++) if (values[i] === null || values[i] === undefined) c++;
  return c;
}

/** A whole number below 2^53 in magnitude as an int8 (two 32-bit halves: no BigInt per element). */
function writeInt64(buf: Buffer, v: number, at: number): void {
  const hi = Math.floor(v / TWO_32);
  buf.writeInt32BE(hi, at);
  buf.writeUInt32BE(v - hi * TWO_32, at + 4);
}

function fixedBuffer(n: number, nul: number, type: ElementType, width: number): { buf: Buffer; at: number } {
  const buf = Buffer.allocUnsafe((n === 0 ? 12 : 20) + n * 4 + (n - nul) * width);
  return { buf, at: header(buf, n, nul > 0, type) };
}

// One loop per element type (no callback per element): these run over every row of every batch.

export function float8Array(values: ArrayLike<number | null>): Buffer {
  const n = values.length;
  const { buf, at: start } = fixedBuffer(n, nulls(values), 'float8', 8);
  let at = start;
  for (let i = 0; i < n; i++) {
    const v = values[i];
    if (v === null || v === undefined) { buf.writeInt32BE(-1, at); at += 4; continue; }
    buf.writeInt32BE(8, at);
    buf.writeDoubleBE(v, at + 4);
    at += 12;
  }
  return buf;
}

/** int4 elements, none NULL (topic ids). */
export function int4Array(values: ArrayLike<number>): Buffer {
  const n = values.length;
  const { buf, at: start } = fixedBuffer(n, 0, 'int4', 4);
  let at = start;
  for (let i = 0; i < n; i++) {
    buf.writeInt32BE(4, at);
    buf.writeInt32BE(values[i] as number, at + 4);
    at += 8;
  }
  return buf;
}

/** int8 elements from safe integers, or their decimal strings (redelivery keys are kept as text in items). */
export function int8Array(values: ArrayLike<number | string | null>): Buffer {
  const n = values.length;
  const { buf, at: start } = fixedBuffer(n, nulls(values), 'int8', 8);
  let at = start;
  for (let i = 0; i < n; i++) {
    const v = values[i];
    if (v === null || v === undefined) { buf.writeInt32BE(-1, at); at += 4; continue; }
    const x = typeof v === 'string' ? Number(v) : v;
    if (!Number.isSafeInteger(x)) throw new RangeError(`int8 array element ${String(v)} is not a safe integer`);
    buf.writeInt32BE(8, at);
    writeInt64(buf, x, at + 4);
    at += 12;
  }
  return buf;
}

/** timestamptz elements from epoch microseconds (whole numbers), none NULL. */
export function timestamptzArray(values: ArrayLike<number>): Buffer {
  const n = values.length;
  const { buf, at: start } = fixedBuffer(n, 0, 'timestamptz', 8);
  let at = start;
  for (let i = 0; i < n; i++) {
    const us = values[i] as number;
    if (!Number.isSafeInteger(us)) throw new RangeError(`timestamp ${us} µs is not a whole number of microseconds`);
    buf.writeInt32BE(8, at);
    writeInt64(buf, us - PG_EPOCH_US, at + 4);
    at += 12;
  }
  return buf;
}

export function boolArray(values: ArrayLike<boolean | null>): Buffer {
  const n = values.length;
  const { buf, at: start } = fixedBuffer(n, nulls(values), 'bool', 1);
  let at = start;
  for (let i = 0; i < n; i++) {
    const v = values[i];
    if (v === null || v === undefined) { buf.writeInt32BE(-1, at); at += 4; continue; }
    buf.writeInt32BE(1, at);
    buf[at + 4] = v ? 1 : 0;
    at += 5;
  }
  return buf;
}

/**
 * text or jsonb elements as UTF-8 (a jsonb element is its text behind a format version byte, 1). The buffer is
 * sized for the worst case (3 bytes per UTF-16 unit) and cut to what was written: one pass over each string.
 */
function varlena(values: ArrayLike<string | null>, type: 'text' | 'jsonb'): Buffer {
  const n = values.length;
  const prefix = type === 'jsonb' ? 1 : 0;
  let max = (n === 0 ? 12 : 20) + n * 4;
  let hasNull = false;
  for (let i = 0; i < n; i++) {
    const v = values[i];
    if (v === null || v === undefined) hasNull = true;
    else max += prefix + v.length * 3;
  }
  const buf = Buffer.allocUnsafe(max);
  let at = header(buf, n, hasNull, type);
  for (let i = 0; i < n; i++) {
    const v = values[i];
    if (v === null || v === undefined) { buf.writeInt32BE(-1, at); at += 4; continue; }
    if (prefix === 1) buf[at + 4] = 1;
    const len = prefix + buf.write(v, at + 4 + prefix, "utf8");
    buf.writeInt32BE(len, at);
    at += 4 + len;
  }
  return at === max ? buf : buf.subarray(0, at);
}

export function textArray(values: ArrayLike<string | null>): Buffer {
  return varlena(values, 'text');
}

export function jsonbArray(values: ArrayLike<string | null>): Buffer {
  return varlena(values, 'jsonb');
}
