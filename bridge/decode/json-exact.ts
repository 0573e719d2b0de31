/**
 * Exact, bounded JSON decoding for the per-message path.
 *
 * - Integers beyond Number.MAX_SAFE_INTEGER come back as bigint with the exact digits: a counter or a
 *   64-bit id silently rounded by JSON.parse would be stored wrong forever.
 * - Size, ill-formed UTF-8, U+0000 and depth are checked BEFORE any parser runs: native indexOf passes
 *   first, and a string-aware linear scan only when they cannot rule a problem out. A 1 MB `[[[[...` bomb
 *   costs one pass over the text and never recurses.
 * - Nothing here throws to the caller: every outcome is a value.
 */
import type { ErrorCode } from '../../src/core/index.js';
import type { JsonValue } from '../../src/core/index.js';

export interface JsonLimits {
  /** Largest accepted payload, in bytes (before decoding). */
  readonly maxBytes: number;
  /** Deepest accepted nesting of arrays/objects; a bare scalar has depth 0, `[1]` depth 1. */
  readonly maxDepth: number;
}

export type JsonParseResult =
  | { readonly ok: true; readonly value: JsonValue }
  | { readonly ok: false; readonly code: ErrorCode; readonly reason: string };

// Created once: a TextDecoder per message would cost more than the parse of a small payload.
// fatal: ill-formed UTF-8 is refused, not replaced with U+FFFD (RFC 8259 §8.1 requires UTF-8).
const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Decodes UTF-8 strictly; undefined if the bytes are not well-formed UTF-8. */
export function decodeUtf8(bytes: Uint8Array): string | undefined {
  try {
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}

const MAX_SAFE = Number.MAX_SAFE_INTEGER;

/** Pre-scan verdicts. */
const PLAIN = 0; // JSON.parse is exact for this text
const HAS_UNSAFE_INTEGER = 1; // needs the exact parser

type ScanVerdict = typeof PLAIN | typeof HAS_UNSAFE_INTEGER | { code: ErrorCode; reason: string };

function failure(code: ErrorCode, reason: string): { ok: false; code: ErrorCode; reason: string } {
  return { ok: false, code, reason };
}

/**
 * Parses JSON exactly. Order of checks: size, UTF-8, U+0000 and depth (before any parser runs), parse,
 * number range.
 */
export function parseJsonExact(bytes: Uint8Array, limits: JsonLimits): JsonParseResult {
  if (bytes.length > limits.maxBytes) {
    return failure('UNS_ERR_PAYLOAD_TOO_LARGE', `payload is ${bytes.length} bytes; the limit is ${limits.maxBytes}`);
  }
  const text = decodeUtf8(bytes);
  if (text === undefined) return failure('UNS_ERR_DECODE_JSON', 'payload is not well-formed UTF-8');
  return parseJsonText(text, limits.maxDepth);
}

/** As parseJsonExact, for text already decoded (no size check). */
export function parseJsonText(text: string, maxDepth: number): JsonParseResult {
  try {
    if (needsScan(text, maxDepth)) {
      const verdict = scan(text, maxDepth);
      if (typeof verdict === 'object') return failure(verdict.code, verdict.reason);
      return { ok: true, value: verdict === PLAIN ? (JSON.parse(text) as JsonValue) : new ExactParser(text).parse() };
    }
    // The fast path: JSON.parse, then a walk over the numbers it produced. A number beyond 2^53 may be a
    // rounded integer literal, so the text is parsed again exactly; this is rare, so typical payloads pay
    // only for JSON.parse plus a walk over their values.
    const value = JSON.parse(text) as JsonValue;
    const numbers = inspectNumbers(value);
    if (numbers === NUMBERS_OK) return { ok: true, value };
    if (numbers === NUMBER_INFINITE) return failure('UNS_ERR_DECODE_JSON', 'number out of range');
    return { ok: true, value: new ExactParser(text).parse() };
  } catch (err) {
    return failure('UNS_ERR_DECODE_JSON', err instanceof Error ? err.message : 'malformed JSON');
  }
}

/**
 * True unless the text provably passes the scan's U+0000 and depth rules: no `\u0000` escape, no raw
 * NUL, and too few opening brackets to nest deeper than maxDepth. indexOf is native and far cheaper than
 * the per-character scan, and it bounds the depth of the value walked after JSON.parse.
 */
function needsScan(text: string, maxDepth: number): boolean {
  if (text.indexOf('\\u0000') !== -1 || text.indexOf('\u0000') !== -1) return true;
  let opened = 0;
  for (let i = text.indexOf('{'); i !== -1; i = text.indexOf('{', i + 1)) if (++opened > maxDepth) return true;
  for (let i = text.indexOf('['); i !== -1; i = text.indexOf('[', i + 1)) if (++opened > maxDepth) return true;
  return false;
}

const NUMBERS_OK = 0;
const NUMBER_BEYOND_SAFE = 1;
const NUMBER_INFINITE = 2;

/** Walks a JSON.parse result (depth already bounded) for numbers beyond the safe range or infinite. */
function inspectNumbers(v: unknown): number {
  if (typeof v === 'number') {
    if (v <= MAX_SAFE && v >= -MAX_SAFE) return NUMBERS_OK;
    return Number.isFinite(v) ? NUMBER_BEYOND_SAFE : NUMBER_INFINITE;
  }
  if (typeof v !== 'object' || v === null) return NUMBERS_OK;
  let worst = NUMBERS_OK;
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const r = inspectNumbers(v[i]);
      if (r === NUMBER_INFINITE) return r;
      if (r !== NUMBERS_OK) worst = r;
    }
  } else {
    const o = v as Record<string, unknown>;
    for (const k in o) {
      const r = inspectNumbers(o[k]);
      if (r === NUMBER_INFINITE) return r;
      if (r !== NUMBERS_OK) worst = r;
    }
  }
  return worst;
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

/**
 * One linear pass, string-aware: rejects U+0000 (raw or `\u0000`), nesting beyond maxDepth and non-integer
 * numbers that overflow to Infinity; reports whether any integer literal is beyond the safe range. It is
 * lenient about grammar on purpose: JSON.parse (or the exact parser) judges syntax afterwards.
 */
function scan(text: string, maxDepth: number): ScanVerdict {
  let depth = 0;
  let verdict: ScanVerdict = PLAIN;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      for (i++; i < n; i++) {
        const d = text.charCodeAt(i);
        if (d === 0x22) break;
        if (d === 0x5c /* \ */) {
          // PostgreSQL text and jsonb cannot hold U+0000, so the message could never be stored.
          if (text.charCodeAt(i + 1) === 0x75 /* u */ && text.startsWith('0000', i + 2)) {
            return { code: 'UNS_ERR_PAYLOAD_NUL', reason: `string holds \\u0000 at position ${i}` };
          }
          i++; // skip the escaped character, so `\"` does not end the string
        } else if (d === 0) {
          return { code: 'UNS_ERR_PAYLOAD_NUL', reason: `string holds a raw U+0000 at position ${i}` };
        }
      }
    } else if (c === 0x5b /* [ */ || c === 0x7b /* { */) {
      if (++depth > maxDepth) {
        return { code: 'UNS_ERR_PAYLOAD_TOO_DEEP', reason: `nesting exceeds ${maxDepth} at position ${i}` };
      }
    } else if (c === 0x5d /* ] */ || c === 0x7d /* } */) {
      depth--;
    } else if (c === 0x2d /* - */ || isDigit(c)) {
      let j = c === 0x2d ? i + 1 : i;
      const intStart = j;
      while (j < n && isDigit(text.charCodeAt(j))) j++;
      const intDigits = j - intStart;
      let fraction = false;
      let exponent = false;
      if (text.charCodeAt(j) === 0x2e /* . */) {
        fraction = true;
        j++;
        while (j < n && isDigit(text.charCodeAt(j))) j++;
      }
      const e = text.charCodeAt(j);
      if (e === 0x65 || e === 0x45 /* e E */) {
        exponent = true;
        j++;
        const s = text.charCodeAt(j);
        if (s === 0x2b || s === 0x2d) j++;
        while (j < n && isDigit(text.charCodeAt(j))) j++;
      }
      if (!fraction && !exponent) {
        // 2^53 has 16 digits, so shorter literals are always safe: the common case costs no conversion.
        // A leading zero is invalid JSON; leave it for the parser to reject.
        if (intDigits >= 16 && text.charCodeAt(intStart) !== 0x30 && !Number.isSafeInteger(Number(text.slice(i, j)))) {
          verdict = HAS_UNSAFE_INTEGER;
        }
      } else if (exponent || intDigits > 308) {
        const v = Number(text.slice(i, j));
        if (v === Infinity || v === -Infinity) {
          return { code: 'UNS_ERR_DECODE_JSON', reason: `number out of range at position ${i}` };
        }
      }
      i = j - 1;
    } else if (c === 0) {
      return { code: 'UNS_ERR_PAYLOAD_NUL', reason: `raw U+0000 at position ${i}` };
    }
  }
  return verdict;
}

function isJsonSpace(c: number): boolean {
  return c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;
}

/** Sets a key the way JSON.parse does: `__proto__` becomes an own property, never the prototype. */
function setKey(obj: { [key: string]: JsonValue }, key: string, value: JsonValue): void {
  if (key === '__proto__') {
    Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
  } else {
    obj[key] = value;
  }
}

/**
 * The slow path, used only when the text holds an integer beyond 2^53. Recursive descent is safe here
 * because the pre-scan already bounded the depth. Strings are decoded by JSON.parse on the string token
 * itself, so escape handling is exactly JSON.parse's. Throws SyntaxError internally; parseJsonText
 * turns that into a result.
 */
class ExactParser {
  private pos = 0;
  constructor(private readonly text: string) {}

  parse(): JsonValue {
    const value = this.value();
    this.skipSpace();
    if (this.pos !== this.text.length) this.fail('Unexpected non-whitespace character after JSON');
    return value;
  }

  private fail(what: string): never {
    throw new SyntaxError(`${what} at position ${this.pos}`);
  }

  private skipSpace(): void {
    const t = this.text;
    while (this.pos < t.length && isJsonSpace(t.charCodeAt(this.pos))) this.pos++;
  }

  private value(): JsonValue {
    this.skipSpace();
    const t = this.text;
    const c = t.charCodeAt(this.pos);
    if (c === 0x7b) return this.object();
    if (c === 0x5b) return this.array();
    if (c === 0x22) return this.string();
    if (c === 0x2d || isDigit(c)) return this.number();
    if (t.startsWith('true', this.pos)) {
      this.pos += 4;
      return true;
    }
    if (t.startsWith('false', this.pos)) {
      this.pos += 5;
      return false;
    }
    if (t.startsWith('null', this.pos)) {
      this.pos += 4;
      return null;
    }
    return this.fail(this.pos >= t.length ? 'Unexpected end of JSON input' : 'Unexpected token');
  }

  private object(): JsonValue {
    const t = this.text;
    const obj: { [key: string]: JsonValue } = {};
    this.pos++;
    this.skipSpace();
    if (t.charCodeAt(this.pos) === 0x7d) {
      this.pos++;
      return obj;
    }
    for (;;) {
      this.skipSpace();
      if (t.charCodeAt(this.pos) !== 0x22) this.fail('Expected a property name');
      const key = this.string();
      this.skipSpace();
      if (t.charCodeAt(this.pos) !== 0x3a /* : */) this.fail("Expected ':'");
      this.pos++;
      setKey(obj, key, this.value());
      this.skipSpace();
      const c = t.charCodeAt(this.pos);
      this.pos++;
      if (c === 0x2c /* , */) continue;
      if (c === 0x7d) return obj;
      this.pos--;
      this.fail("Expected ',' or '}'");
    }
  }

  private array(): JsonValue {
    const t = this.text;
    const arr: JsonValue[] = [];
    this.pos++;
    this.skipSpace();
    if (t.charCodeAt(this.pos) === 0x5d) {
      this.pos++;
      return arr;
    }
    for (;;) {
      arr.push(this.value());
      this.skipSpace();
      const c = t.charCodeAt(this.pos);
      this.pos++;
      if (c === 0x2c) continue;
      if (c === 0x5d) return arr;
      this.pos--;
      this.fail("Expected ',' or ']'");
    }
  }

  private string(): string {
    const t = this.text;
    const start = this.pos;
    let i = start + 1;
    for (; i < t.length; i++) {
      const d = t.charCodeAt(i);
      if (d === 0x22) break;
      if (d === 0x5c) i++;
    }
    if (i >= t.length) this.fail('Unterminated string');
    this.pos = i + 1;
    // JSON.parse validates escapes and control characters exactly as on the fast path.
    return JSON.parse(t.slice(start, i + 1)) as string;
  }

  private number(): number | bigint {
    const t = this.text;
    const start = this.pos;
    let j = start;
    if (t.charCodeAt(j) === 0x2d) j++;
    const intStart = j;
    if (t.charCodeAt(j) === 0x30) {
      j++;
    } else if (isDigit(t.charCodeAt(j))) {
      while (isDigit(t.charCodeAt(j))) j++;
    } else {
      this.pos = j;
      this.fail('No number after minus sign');
    }
    const intDigits = j - intStart;
    let integer = true;
    if (t.charCodeAt(j) === 0x2e) {
      integer = false;
      j++;
      if (!isDigit(t.charCodeAt(j))) {
        this.pos = j;
        this.fail('Unterminated fractional number');
      }
      while (isDigit(t.charCodeAt(j))) j++;
    }
    const e = t.charCodeAt(j);
    if (e === 0x65 || e === 0x45) {
      integer = false;
      j++;
      const s = t.charCodeAt(j);
      if (s === 0x2b || s === 0x2d) j++;
      if (!isDigit(t.charCodeAt(j))) {
        this.pos = j;
        this.fail('Exponent part is missing a number');
      }
      while (isDigit(t.charCodeAt(j))) j++;
    }
    this.pos = j;
    const token = t.slice(start, j);
    const v = Number(token);
    if (integer) {
      if (intDigits >= 16 && !Number.isSafeInteger(v)) return BigInt(token);
      return v;
    }
    if (!Number.isFinite(v)) {
      this.pos = start;
      this.fail('number out of range');
    }
    return v;
  }
}

/**
 * JSON.stringify that writes bigint values as exact JSON numbers (jsonb keeps them as numeric). Values
 * without a bigint take JSON.stringify itself; the exact writer runs only when JSON.stringify refuses a
 * bigint, so the common case pays nothing.
 */
export function stringifyJson(value: JsonValue): string {
  try {
    return JSON.stringify(value);
  } catch {
    return writeExact(value);
  }
}

function writeExact(value: JsonValue): string {
  switch (typeof value) {
    case 'bigint':
      return value.toString();
    case 'number':
    case 'boolean':
    case 'string':
      return JSON.stringify(value);
    case 'object': {
      if (value === null) return 'null';
      if (Array.isArray(value)) {
        let out = '[';
        for (let i = 0; i < value.length; i++) {
          if (i > 0) out += ',';
          const item = value[i];
          // JSON.stringify writes null for undefined array slots; keep that.
          out += item === undefined ? 'null' : writeExact(item);
        }
        return out + ']';
      }
      let out = '{';
      let first = true;
      for (const key of Object.keys(value)) {
        const item = value[key];
        if (item === undefined) continue; // as JSON.stringify: undefined members are omitted
        if (!first) out += ',';
        first = false;
        out += JSON.stringify(key) + ':' + writeExact(item);
      }
      return out + '}';
    }
    default:
      return 'null';
  }
}
