/**
 * What is wrong with a topics.yaml, and where: problems with their key path, located at a line and column of
 * the source, checked first against schemas/topics.schema.json. Loading fails with all of them at once.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv2020, type ErrorObject, type ValidateFunction } from 'ajv/dist/2020.js';
import { isMap, isNode, isScalar, isSeq, type Document, type LineCounter, type Node } from 'yaml';
import { UnsError } from './errors.js';
import { schemasDir } from './paths.js';

// ---------------------------------------------------------------------------------------------------------
// Problems and where they are

export type PathSeg = string | number;

export interface Problem {
  readonly path: readonly PathSeg[];
  /** Point at the key (e.g. an unknown property) or at the value. */
  readonly at: 'key' | 'value';
  readonly message: string;
}

interface Position {
  readonly line: number;
  readonly col: number;
}

export type Locator = (path: readonly PathSeg[], at: 'key' | 'value') => Position | null;

export const NO_SOURCE: Locator = () => null;

/** Most problems worth listing at once; past this the file is probably not a topics.yaml at all. */
const MAX_REPORTED = 50;

function formatPath(path: readonly PathSeg[]): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (/^[A-Za-z_][A-Za-z0-9_-]*$/.test(seg)) out += out === '' ? seg : `.${seg}`;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

export function fail(file: string, problems: readonly Problem[], locate: Locator): never {
  const located = problems.map((p) => ({ p, pos: locate(p.path, p.at) }));
  located.sort((a, b) => (a.pos?.line ?? 0) - (b.pos?.line ?? 0) || (a.pos?.col ?? 0) - (b.pos?.col ?? 0));
  const lines: string[] = [];
  for (const { p, pos } of located) {
    const where = pos === null ? file : `${file}:${pos.line}:${pos.col}`;
    const key = formatPath(p.path);
    const line = key === '' ? `${where} ${p.message}` : `${where} ${key}: ${p.message}`;
    if (!lines.includes(line)) lines.push(line);
  }
  const shown = lines.slice(0, MAX_REPORTED);
  if (lines.length > MAX_REPORTED) shown.push(`... and ${lines.length - MAX_REPORTED} more`);
  throw new UnsError('UNS_ERR_TOPICS_INVALID', shown.join('\n'));
}

export function positionOf(lineCounter: LineCounter, offset: number): Position {
  const { line, col } = lineCounter.linePos(offset);
  // line 0 means no newline was seen before the offset, i.e. the first line.
  return { line: Math.max(line, 1), col: Math.max(col, 1) };
}

/** Maps a key path to the YAML node it came from: the deepest node that exists on the path. */
export function yamlLocator(doc: Document, lineCounter: LineCounter): Locator {
  return (path, at) => {
    let node: unknown = doc.contents;
    let best: Node | null = isNode(node) ? node : null;
    let keyNode: Node | null = null;
    let resolved = true;
    for (const seg of path) {
      keyNode = null;
      if (isMap(node)) {
        const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(seg));
        if (pair === undefined) {
          resolved = false;
          break;
        }
        keyNode = isNode(pair.key) ? pair.key : null;
        node = pair.value;
      } else if (isSeq(node) && typeof seg === 'number') {
        node = node.items[seg];
      } else {
        resolved = false;
        break;
      }
      if (isNode(node) && node.range) best = node;
      else if (keyNode !== null) best = keyNode; // `key:` with no value
    }
    const chosen = at === 'key' && resolved && keyNode !== null ? keyNode : best;
    return positionOf(lineCounter, chosen?.range?.[0] ?? 0);
  };
}

// ---------------------------------------------------------------------------------------------------------
// Schema validation

let topicsValidator: ValidateFunction | undefined;

export function getTopicsValidator(): ValidateFunction {
  if (topicsValidator === undefined) {
    const file = join(schemasDir(), 'topics.schema.json');
    try {
      const schema: unknown = JSON.parse(readFileSync(file, 'utf8'));
      // verbose: errors carry parentSchema, used to list the allowed keys of an object.
      const ajv = new Ajv2020({ allErrors: true, strict: true, allowUnionTypes: true, verbose: true });
      topicsValidator = ajv.compile(schema as object);
    } catch (err) {
      throw new UnsError('UNS_ERR_TOPICS_INVALID', `cannot load ${file}: ${(err as Error).message}`, { cause: err });
    }
  }
  return topicsValidator;
}

function pointerToPath(instancePath: string, data: unknown): PathSeg[] {
  if (instancePath === '') return [];
  const out: PathSeg[] = [];
  let cur: unknown = data;
  for (const raw of instancePath.slice(1).split('/')) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (Array.isArray(cur)) {
      const i = Number(seg);
      out.push(i);
      cur = cur[i];
    } else {
      out.push(seg);
      cur = typeof cur === 'object' && cur !== null ? (cur as Record<string, unknown>)[seg] : undefined;
    }
  }
  return out;
}

/** Messages for patterns whose regex would tell a reader little. */
export const PATTERN_HINTS: Readonly<Record<string, string>> = {
  retention: 'must be a duration: a positive whole number and a unit s, m, h, d, w or y (e.g. 30d)',
  passwordHash: 'must be an scrypt hash made by `uns-bridge hash-password`',
  minDuration: 'must be 0 or a whole number and a unit ms, s, m or h (e.g. 30s)',
  tolerance: 'must be whole seconds or minutes between 1s and 5m (e.g. 300s)',
  secretEnv: 'must name an environment variable UNS_INGEST_SECRET_<NAME> (upper case, digits, _)',
};

export function describeAjvError(e: ErrorObject, data: unknown): Problem | null {
  const path = pointerToPath(e.instancePath, data);
  const params = e.params as Record<string, unknown>;
  // An error inside `propertyNames` is about a key of the object, not its value.
  if (e.propertyName !== undefined) {
    return { path: [...path, e.propertyName], at: 'key', message: `invalid name: ${e.message ?? 'is invalid'}` };
  }
  switch (e.keyword) {
    case 'propertyNames':
      return null; // the wrapper of the error above
    case 'required':
      return { path: [...path, String(params['missingProperty'])], at: 'value', message: 'is required' };
    case 'additionalProperties': {
      const props = (e.parentSchema as { properties?: Record<string, unknown> } | undefined)?.properties;
      const allowed = props === undefined ? '' : `; expected one of ${Object.keys(props).join(', ')}`;
      return { path: [...path, String(params['additionalProperty'])], at: 'key', message: `unknown key${allowed}` };
    }
    case 'enum':
      return { path, at: 'value', message: `must be one of ${(params['allowedValues'] as unknown[]).join(', ')}` };
    case 'const':
      return { path, at: 'value', message: `must be ${JSON.stringify(params['allowedValue'])}` };
    case 'type': {
      const expected = String(params['type']).split(',').join(' or ');
      const t = typeof e.data;
      const hint = expected.includes('string') && (t === 'number' || t === 'boolean') ? ' (quote it in YAML)' : '';
      return { path, at: 'value', message: `must be ${expected}${hint}` };
    }
    case 'pattern': {
      const last = path[path.length - 1];
      const hint = typeof last === 'string' ? PATTERN_HINTS[last] : undefined;
      return { path, at: 'value', message: hint ?? `must match /${String(params['pattern'])}/` };
    }
    case 'not':
      // The only `not` in the schema: a level is either a list of names or a pattern.
      return { path, at: 'value', message: 'set either `allowed` or `pattern`, not both' };
    case 'uniqueItems': {
      const i = Number(params['i']);
      const j = Number(params['j']);
      return { path: [...path, Math.max(i, j)], at: 'value', message: `duplicate of item [${Math.min(i, j)}]` };
    }
    default:
      return { path, at: 'value', message: e.message ?? 'is invalid' };
  }
}

