/**
 * Inbound ingest mappings: how a JSON body sent by an IT system becomes UNS values. A mapping names the
 * records (`match`, a JSONPath-lite such as `readings[*]`), the topic (`acme/plant1/{{area}}/line1/{{machine}}/temperature`),
 * and the fields holding the value, its timestamp, quality and unit.
 *
 * Paths: `a.b`, `a[0]`, `a[*]` (every element), chained (`sites[*].machines[*]`); relative to the record,
 * or to the whole body with a leading `$` (`$.device_id`). Compiled once at start-up (topics.ts reports
 * mistakes with their line); applying them never throws.
 */
import type { ErrorCode } from './errors.js';
import type { JsonValue } from './message.js';
import { validateTopicName } from './topic-filter.js';

export type PathSeg = { readonly kind: 'field'; readonly name: string } | { readonly kind: 'each' } | { readonly kind: 'index'; readonly index: number };

export interface FieldPath {
  /** As written. */
  readonly text: string;
  /** `$…`: from the body's root rather than the record. */
  readonly root: boolean;
  readonly segs: readonly PathSeg[];
  /** Has `[*]`: selects any number of values. */
  readonly wildcard: boolean;
}

export interface TopicTemplate {
  readonly text: string;
  /** Literal text and placeholders, in order. */
  readonly parts: readonly (string | FieldPath)[];
  /** The MQTT filter every produced topic matches: placeholder levels become `+`. */
  readonly filter: string;
}

export interface CompiledMapping {
  /** The records; null = the whole body is the one record. */
  readonly match: FieldPath | null;
  readonly topic: TopicTemplate;
  readonly value: FieldPath;
  readonly timestamp?: FieldPath | undefined;
  readonly quality?: FieldPath | undefined;
  readonly unit?: FieldPath | undefined;
}

export type MappedValue =
  | {
    readonly ok: true; readonly mapping: number; readonly topic: string; readonly value: JsonValue;
    readonly timestamp?: JsonValue | undefined; readonly quality?: JsonValue | undefined; readonly unit?: JsonValue | undefined;
  }
  | { readonly ok: false; readonly mapping: number; readonly topic: string | null; readonly code: ErrorCode; readonly reason: string };

const MAX_SEGMENTS = 16;
const FIELD = /^[^.[\]{}\s]+/;
const BRACKET = /^\[(\*|[0-9]{1,6})\]/;

/** Parses a path; returns the reason as a string when it is malformed. */
export function parsePath(text: string): FieldPath | string {
  let s = text.trim();
  let root = false;
  if (s === '$') return { text, root: true, segs: [], wildcard: false };
  if (s.startsWith('$.')) { root = true; s = s.slice(2); } else if (s.startsWith('$[')) { root = true; s = s.slice(1); }
  if (s === '') return 'empty path';
  const segs: PathSeg[] = [];
  let expectName = true;
  let i = 0;
  while (i < s.length) {
    const rest = s.slice(i);
    if (rest.startsWith('[')) {
      const m = BRACKET.exec(rest);
      if (m === null) return `bad index at "${rest}": use [*] or [<n>]`;
      segs.push(m[1] === '*' ? { kind: 'each' } : { kind: 'index', index: Number(m[1]) });
      i += m[0].length;
      expectName = false;
    } else if (rest.startsWith('.')) {
      if (expectName) return `empty field name at "${rest}"`;
      i++;
      expectName = true;
      if (i === s.length) return 'ends with "."';
    } else {
      if (!expectName) return `unexpected "${rest}": separate fields with "."`;
      const m = FIELD.exec(rest);
      if (m === null) return `bad field name at "${rest}"`;
      segs.push({ kind: 'field', name: m[0] });
      i += m[0].length;
      expectName = false;
    }
    if (segs.length > MAX_SEGMENTS) return `more than ${MAX_SEGMENTS} segments`;
  }
  return { text, root, segs, wildcard: segs.some((x) => x.kind === 'each') };
}

const PLACEHOLDER = /\{\{\s*([^{}]*?)\s*\}\}/g;

/**
 * Parses a topic template. Placeholders must select one value (no `[*]`); the literal text with
 * placeholders filled must be a valid MQTT topic name outside `$` topics.
 */
export function parseTemplate(text: string): TopicTemplate | string {
  const parts: (string | FieldPath)[] = [];
  let last = 0;
  let sample = '';
  for (const m of text.matchAll(PLACEHOLDER)) {
    const lit = text.slice(last, m.index);
    if (lit !== '') { parts.push(lit); sample += lit; }
    const p = parsePath(m[1] ?? '');
    if (typeof p === 'string') return `placeholder {{${m[1] ?? ''}}}: ${p}`;
    if (p.wildcard) return `placeholder {{${m[1] ?? ''}}} selects several values ([*]); it must select one`;
    parts.push(p);
    sample += 'x';
    last = m.index + m[0].length;
  }
  const tail = text.slice(last);
  if (tail !== '') { parts.push(tail); sample += tail; }
  if (/[{}]/.test(parts.filter((x): x is string => typeof x === 'string').join(''))) return 'unbalanced "{{" or "}}"';
  const bad = validateTopicName(sample);
  if (bad !== null) return `not a valid topic: ${bad}`;
  if (sample.startsWith('$')) return 'may not produce $ topics';
  // Which levels hold a placeholder: those become '+' in the filter.
  let withMarks = '';
  for (const part of parts) withMarks += typeof part === 'string' ? part : '\u0000';
  const filter = withMarks.split('/').map((l) => (l.includes('\u0000') ? '+' : l)).join('/');
  return { text, parts, filter };
}

function step(values: JsonValue[], seg: PathSeg): JsonValue[] {
  const out: JsonValue[] = [];
  for (const v of values) {
    if (seg.kind === 'field') {
      if (v !== null && typeof v === 'object' && !Array.isArray(v) && Object.hasOwn(v, seg.name)) {
        out.push((v as Record<string, JsonValue>)[seg.name] as JsonValue);
      }
    } else if (Array.isArray(v)) {
      if (seg.kind === 'each') out.push(...v);
      else if (seg.index < v.length) out.push(v[seg.index] as JsonValue);
    }
  }
  return out;
}

/** Every value the path selects (none when a field is absent). */
export function selectAll(path: FieldPath, record: JsonValue, body: JsonValue): JsonValue[] {
  let values: JsonValue[] = [path.root ? body : record];
  for (const seg of path.segs) {
    values = step(values, seg);
    if (values.length === 0) break;
  }
  return values;
}

function selectOne(path: FieldPath, record: JsonValue, body: JsonValue): JsonValue | undefined {
  return selectAll(path, record, body)[0];
}

/** A placeholder's value as one topic level: a non-empty string or a number, without `/ + #` or U+0000. */
function levelText(v: JsonValue | undefined): string | null {
  let s: string;
  if (typeof v === 'string') s = v;
  else if (typeof v === 'bigint') s = v.toString();
  else if (typeof v === 'number' && Number.isFinite(v)) s = String(v);
  else return null;
  // biome-ignore lint/suspicious/noControlCharactersInRegex: NUL is deliberately rejected, MQTT forbids it in topic names
  if (s === '' || /[/+#\u0000]/.test(s)) return null;
  return s;
}

/** Applies every mapping to a parsed body, in order. At most `limit` results; never throws. */
export function applyMappings(body: JsonValue, mappings: readonly CompiledMapping[], limit: number): MappedValue[] | { tooMany: true } {
  const out: MappedValue[] = [];
  for (let mi = 0; mi < mappings.length; mi++) {
    const m = mappings[mi] as CompiledMapping;
    const records = m.match === null ? [body] : selectAll(m.match, body, body);
    for (const rec of records) {
      if (out.length >= limit) return { tooMany: true };
      let topic = '';
      let why: string | null = null;
      for (const part of m.topic.parts) {
        if (typeof part === 'string') { topic += part; continue; }
        const level = levelText(selectOne(part, rec, body));
        if (level === null) { why = `placeholder {{${part.text}}} is missing, empty, not a string or number, or holds / + # or U+0000`; break; }
        topic += level;
      }
      if (why !== null) { out.push({ ok: false, mapping: mi, topic: null, code: 'UNS_ERR_INGEST_MAPPING', reason: why }); continue; }
      const value = selectOne(m.value, rec, body);
      if (value === undefined) {
        out.push({ ok: false, mapping: mi, topic, code: 'UNS_ERR_INGEST_MAPPING', reason: `value field ${m.value.text} is missing` });
        continue;
      }
      out.push({
        ok: true, mapping: mi, topic, value,
        timestamp: m.timestamp ? selectOne(m.timestamp, rec, body) : undefined,
        quality: m.quality ? selectOne(m.quality, rec, body) : undefined,
        unit: m.unit ? selectOne(m.unit, rec, body) : undefined,
      });
    }
  }
  return out;
}
