/**
 * PostgreSQL array literals for the batch inserts, built directly: node-pg's generic array encoding
 * (prepareValue and escaping per element) was a visible share of the hot path's CPU. Only the element
 * types the store sends: numbers, booleans and text, with NULL.
 */

/** `{1,2.5,NULL}` for float8[] / int[] / int8[] columns (int8 values may arrive as decimal strings). */
export function numArray(values: ReadonlyArray<number | string | null>): string {
  let out = '{';
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (i > 0) out += ',';
    out += v === null || v === undefined ? 'NULL' : String(v);
  }
  return `${out}}`;
}

export function boolArray(values: ReadonlyArray<boolean | null>): string {
  let out = '{';
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (i > 0) out += ',';
    out += v === null || v === undefined ? 'NULL' : v ? 't' : 'f';
  }
  return `${out}}`;
}

const NEEDS_ESCAPE = /["\\]/g;

/** `{"a","b \"q\"",NULL}` for text[] / jsonb[]: every element quoted, `"` and `\` escaped. */
export function textArray(values: ReadonlyArray<string | null>): string {
  let out = '{';
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (i > 0) out += ',';
    out += v === null || v === undefined ? 'NULL' : `"${v.replace(NEEDS_ESCAPE, '\\$&')}"`;
  }
  return `${out}}`;
}
