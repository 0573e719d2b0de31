/**
 * Payload templates: a JSON text with `{{path}}` placeholders, e.g.
 *   {"text": "{{topic}} is {{value}}", "value": {{value}}, "id": "{{event.id}}"}
 *
 * A placeholder is a plain field path and nothing else: it is looked up, never evaluated (no expressions,
 * no filters, no code), so `{{a == 'b' ? 1 : 2}}` is refused when the template is saved. Substitution is
 * JSON-aware, so the result is always valid JSON whatever the values hold:
 * - inside a JSON string, the value's text is inserted JSON-escaped (quotes, backslashes and control
 *   characters cannot end the string or inject structure);
 * - outside a string, the value's JSON encoding is inserted (a number stays a number, a string is quoted,
 *   an object is embedded; a missing value is `null`).
 * The template is parsed once when saved (not per message); render() only concatenates and never throws.
 */
import { stringifyJson } from '../../decode/json-exact.js';
import type { JsonValue } from '../../../src/core/index.js';

/** Looks a path up in the event being rendered; undefined when absent. */
export type PathResolver = (path: readonly string[]) => unknown;

export interface CompiledTemplate {
  readonly source: string;
  /** Placeholder paths in order of appearance, e.g. ['topic', 'event.id']. */
  readonly paths: readonly string[];
  render(resolve: PathResolver): string;
}

export type TemplateResult = { ok: true; template: CompiledTemplate } | { ok: false; message: string };

export const MAX_TEMPLATE_CHARS = 16_384;

/**
 * Roots a placeholder may start with. Subpaths: `event.{id,type,timestamp,topic,data…}`, `webhook.{id,name}`,
 * `data.…` and `value.…` (fields of an object value); the others stand alone.
 */
const ROOTS: Readonly<Record<string, 'leaf' | 'tree' | readonly string[]>> = {
  topic: 'leaf', value: 'tree', quality: 'leaf', unit: 'leaf', timestamp: 'leaf', data: 'tree',
  event: ['id', 'type', 'timestamp', 'topic', 'data'], webhook: ['id', 'name'],
};

const PATH = /^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*$/;

type Segment = string | { readonly path: readonly string[]; readonly inString: boolean };

function checkPath(text: string): string | null {
  if (!PATH.test(text)) return `placeholder {{${text}}} is not a field path (letters, digits, _ and dots; expressions are not evaluated)`;
  const parts = text.split('.');
  const root = ROOTS[parts[0] as string];
  if (root === undefined) return `placeholder {{${text}}}: unknown field ${parts[0] as string} (use ${Object.keys(ROOTS).join(', ')})`;
  if (root === 'leaf' && parts.length > 1) return `placeholder {{${text}}}: ${parts[0] as string} has no fields`;
  if (Array.isArray(root)) {
    const sub = parts[1];
    if (sub === undefined || !root.includes(sub)) return `placeholder {{${text}}}: use ${root.map((x) => `${parts[0] as string}.${x}`).join(', ')}`;
    if (sub !== 'data' && parts.length > 2) return `placeholder {{${text}}}: ${parts[0] as string}.${sub} has no fields`;
  }
  return null;
}

/** The JSON text of a value: bigint exact, bytes as {"base64"}, anything unencodable null. */
export function jsonText(v: unknown): string {
  if (v === undefined) return 'null';
  if (v instanceof Uint8Array) return JSON.stringify({ base64: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') });
  try {
    return stringifyJson(v as JsonValue) ?? 'null';
  } catch {
    return 'null';
  }
}

/** A value's text as the inside of a JSON string literal. */
function inStringText(v: unknown): string {
  const s = typeof v === 'string' ? v : v === undefined || v === null ? '' : jsonText(v);
  return JSON.stringify(s).slice(1, -1);
}

export function compileTemplate(source: string): TemplateResult {
  if (source.length > MAX_TEMPLATE_CHARS) return { ok: false, message: `template longer than ${MAX_TEMPLATE_CHARS} characters` };
  const segments: Segment[] = [];
  const paths: string[] = [];
  let probe = '';
  let literal = '';
  let inString = false;
  let i = 0;
  while (i < source.length) {
    const c = source[i] as string;
    if (c === '{' && source[i + 1] === '{') {
      const end = source.indexOf('}}', i + 2);
      if (end < 0) return { ok: false, message: 'template has {{ without a closing }}' };
      const text = source.slice(i + 2, end).trim();
      const bad = checkPath(text);
      if (bad !== null) return { ok: false, message: bad };
      if (literal !== '') segments.push(literal);
      literal = '';
      segments.push({ path: text.split('.'), inString });
      paths.push(text);
      probe += inString ? 'x' : 'null';
      i = end + 2;
      continue;
    }
    if (inString) {
      if (c === '\\') {
        // An escape: copy it and the escaped character, so an escaped quote does not end the string.
        const pair = source.slice(i, i + 2);
        literal += pair;
        probe += pair;
        i += pair.length;
        continue;
      }
      if (c === '"') inString = false;
    } else if (c === '"') {
      inString = true;
    }
    literal += c;
    probe += c;
    i++;
  }
  if (literal !== '') segments.push(literal);
  try {
    JSON.parse(probe);
  } catch (e) {
    return { ok: false, message: `template is not JSON once its placeholders are filled in: ${(e as Error).message}` };
  }
  const frozen = Object.freeze(segments);
  return {
    ok: true,
    template: Object.freeze({
      source,
      paths: Object.freeze(paths),
      render(resolve: PathResolver): string {
        let out = '';
        for (const s of frozen) {
          if (typeof s === 'string') { out += s; continue; }
          let v: unknown;
          try { v = resolve(s.path); } catch { v = undefined; }
          out += s.inString ? inStringText(v) : jsonText(v);
        }
        return out;
      },
    }),
  };
}

/** Own-property walk (never the prototype chain: `data.constructor` is absent, not a function). */
export function lookup(root: unknown, path: readonly string[], from = 0): unknown {
  let cur = root;
  for (let i = from; i < path.length; i++) {
    if (cur === null || typeof cur !== 'object' || cur instanceof Uint8Array) return undefined;
    const key = path[i] as string;
    if (Array.isArray(cur)) {
      if (!/^\d+$/.test(key)) return undefined;
      cur = cur[Number(key)];
      continue;
    }
    if (!Object.hasOwn(cur, key)) return undefined;
    cur = (cur as Record<string, unknown>)[key];
  }
  return cur;
}
