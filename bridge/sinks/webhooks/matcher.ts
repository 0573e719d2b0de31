/**
 * Which events an endpoint receives: its event types, its topic filters, its conditions, and its owner's
 * read permissions. Compiled once per endpoint; `matches` runs on the event path and never throws.
 *
 * - An event about a topic needs the owner's roles to read that topic (checked per event, whatever the
 *   filters say, so a webhook never sends a topic its owner cannot read) and, when topic filters are set,
 *   one of them to match.
 * - An event about no topic (device.*, system.*) needs the catalog's `requires` read filter, checked once
 *   here; topic filters do not apply to it.
 * - Conditions are all required (AND). They look fields up and compare; nothing is evaluated.
 */
import { TopicMatcher } from '../../../src/core/index.js';
import type { Permissions } from '../../../src/core/index.js';
import type { EventType, UnsEvent } from '../../../src/core/index.js';
import { catalogEntry } from './event-catalog.js';
import { lookup } from './template.js';

export const OPERATORS = ['eq', 'ne', 'gt', 'gte', 'lt', 'lte', 'in', 'not_in', 'contains', 'starts_with', 'exists'] as const;
export type Operator = (typeof OPERATORS)[number];

/** Spellings accepted on input (seed documents use several); stored canonical. */
const ALIASES: Readonly<Record<string, Operator>> = {
  '=': 'eq', '==': 'eq', equals: 'eq', eq: 'eq',
  '!=': 'ne', '<>': 'ne', not_equals: 'ne', ne: 'ne',
  '>': 'gt', greater_than: 'gt', gt: 'gt',
  '>=': 'gte', greater_than_or_equal: 'gte', gte: 'gte',
  '<': 'lt', less_than: 'lt', lt: 'lt',
  '<=': 'lte', less_than_or_equal: 'lte', lte: 'lte',
  in: 'in', not_in: 'not_in', contains: 'contains', starts_with: 'starts_with', exists: 'exists',
};

export interface Condition {
  readonly field: string;
  readonly operator: Operator;
  readonly value?: unknown;
}

const FIELD = /^(?:topic|value|quality|unit|timestamp)$|^(?:value|data)(?:\.[A-Za-z0-9_]+)+$/;

export type ConditionsResult = { ok: true; conditions: Condition[] } | { ok: false; message: string };

/** Checks and canonicalises conditions from the API. */
export function normalizeConditions(input: ReadonlyArray<{ field: string; operator: string; value?: unknown }>): ConditionsResult {
  const out: Condition[] = [];
  for (const [i, c] of input.entries()) {
    const where = `filters.conditions[${i}]`;
    const op = ALIASES[c.operator];
    if (op === undefined) return { ok: false, message: `${where}.operator: ${JSON.stringify(c.operator)} is not one of ${OPERATORS.join(', ')}` };
    if (!FIELD.test(c.field)) return { ok: false, message: `${where}.field: use topic, value, quality, unit, timestamp, value.<field> or data.<field>` };
    const v = c.value;
    if ((op === 'gt' || op === 'gte' || op === 'lt' || op === 'lte') && (typeof v !== 'number' || !Number.isFinite(v))) {
      return { ok: false, message: `${where}.value: ${op} compares numbers` };
    }
    if ((op === 'in' || op === 'not_in') && (!Array.isArray(v) || v.length === 0 || v.length > 100 || v.some((x) => x !== null && typeof x === 'object'))) {
      return { ok: false, message: `${where}.value: ${op} takes a list of 1 to 100 scalars` };
    }
    if ((op === 'contains' || op === 'starts_with') && typeof v !== 'string') return { ok: false, message: `${where}.value: ${op} takes a string` };
    if (op === 'exists' && v !== undefined && typeof v !== 'boolean') return { ok: false, message: `${where}.value: exists takes true or false` };
    if ((op === 'eq' || op === 'ne') && (v === undefined || (v !== null && typeof v === 'object'))) {
      return { ok: false, message: `${where}.value: ${op} compares with a scalar` };
    }
    out.push(v === undefined ? { field: c.field, operator: op } : { field: c.field, operator: op, value: v });
  }
  return { ok: true, conditions: out };
}

/** The fields an event offers to conditions and templates (see template.ts for the path roots). */
export function resolveField(e: UnsEvent, path: readonly string[], webhook?: { id: string; name: string }): unknown {
  const data = e.data;
  switch (path[0]) {
    case 'topic': return e.topic ?? data['topic'];
    case 'value': return lookup(data['value'], path, 1);
    case 'quality': return data['quality'];
    case 'unit': return data['unit'];
    case 'timestamp': {
      const t = data['timestamp'];
      return new Date(typeof t === 'number' && Number.isFinite(t) ? t : e.occurredAt).toISOString();
    }
    case 'data': return lookup(data, path, 1);
    case 'event':
      switch (path[1]) {
        case 'id': return e.id;
        case 'type': return e.type;
        case 'timestamp': return new Date(e.occurredAt).toISOString();
        case 'topic': return e.topic;
        case 'data': return lookup(data, path, 2);
        default: return undefined;
      }
    case 'webhook':
      if (webhook === undefined) return undefined;
      return path[1] === 'id' ? webhook.id : path[1] === 'name' ? webhook.name : undefined;
    default: return undefined;
  }
}

function num(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  return undefined;
}

function same(a: unknown, b: unknown): boolean {
  if (typeof a === 'bigint' || typeof b === 'bigint') return num(a) !== undefined && num(a) === num(b);
  return a === b;
}

type Test = (e: UnsEvent) => boolean;

function compileCondition(c: Condition): Test {
  const path = c.field.split('.');
  const get = (e: UnsEvent): unknown => resolveField(e, path);
  const v = c.value;
  switch (c.operator) {
    case 'eq': return (e) => same(get(e), v);
    case 'ne': return (e) => !same(get(e), v);
    case 'gt': return (e) => { const x = num(get(e)); return x !== undefined && x > (v as number); };
    case 'gte': return (e) => { const x = num(get(e)); return x !== undefined && x >= (v as number); };
    case 'lt': return (e) => { const x = num(get(e)); return x !== undefined && x < (v as number); };
    case 'lte': return (e) => { const x = num(get(e)); return x !== undefined && x <= (v as number); };
    case 'in': { const list = v as unknown[]; return (e) => { const x = get(e); return list.some((y) => same(x, y)); }; }
    case 'not_in': { const list = v as unknown[]; return (e) => { const x = get(e); return !list.some((y) => same(x, y)); }; }
    case 'contains': return (e) => { const x = get(e); return typeof x === 'string' && x.includes(v as string); };
    case 'starts_with': return (e) => { const x = get(e); return typeof x === 'string' && x.startsWith(v as string); };
    case 'exists': { const want = v !== false; return (e) => (get(e) !== undefined && get(e) !== null) === want; }
    default: { const never: never = c.operator; return never; }
  }
}

export interface MatchSpec {
  readonly events: readonly EventType[];
  readonly topics: readonly string[];
  readonly conditions: readonly Condition[];
}

export interface EventMatcher {
  readonly events: ReadonlySet<EventType>;
  matches(e: UnsEvent): boolean;
}

/** `perms` are the owner's (the roles stored with the webhook). Filters must be valid (checked on save). */
export function compileMatcher(spec: MatchSpec, perms: Permissions): EventMatcher {
  const events = new Set(spec.events);
  const filters = spec.topics.length === 0 ? null : new TopicMatcher(spec.topics.map((f) => [f, true] as [string, true]), { cacheSize: 10_000 });
  const tests = spec.conditions.map(compileCondition);
  // Topic-less event types this owner may receive, decided once.
  const topicless = new Set<EventType>();
  for (const t of events) {
    const req = catalogEntry(t)?.requires;
    if (req === null || (req !== undefined && req !== 'topic' && perms.canSubscribe(req.read))) topicless.add(t);
  }
  return {
    events,
    matches(e: UnsEvent): boolean {
      try {
        if (!events.has(e.type)) return false;
        if (e.topic !== undefined) {
          if (!perms.canRead(e.topic)) return false;
          if (filters !== null && filters.match(e.topic) !== true) return false;
        } else if (!topicless.has(e.type)) {
          return false;
        }
        for (const t of tests) if (!t(e)) return false;
        return true;
      } catch {
        return false;
      }
    },
  };
}
