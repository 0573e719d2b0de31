/**
 * The ISA-95 levels of topics.yaml as rules: each level a function that passes a value or says why not, the
 * per-topic check (cached) that yields the equipment path, and the start-up check that a route's filter can
 * pass them at all.
 */
import type { LevelCheck, LevelSpec } from './topics.js';
import { DEFAULT_MATCH_CACHE_SIZE } from './topic-filter.js';

// ---------------------------------------------------------------------------------------------------------
// Levels

/** A level's rule as a function: null when the value passes, else the reason. */
export type LevelRule = (value: string) => string | null;

const MAX_LISTED = 10;

export function levelRule(spec: LevelSpec): LevelRule {
  const { name, allowed, pattern } = spec;
  if (allowed !== undefined) {
    const names = [...allowed];
    const list = names.slice(0, MAX_LISTED).join(', ') + (names.length > MAX_LISTED ? ', ...' : '');
    return (value) =>
      value === '' ? `level ${name} is empty` : allowed.has(value) ? null : `level ${name}: ${JSON.stringify(value)} is not one of ${list}`;
  }
  if (pattern !== undefined) {
    return (value) =>
      value === '' ? `level ${name} is empty` : pattern.test(value) ? null : `level ${name}: ${JSON.stringify(value)} does not match ${pattern.source}`;
  }
  // An empty level (acme//line1) names no equipment, whatever the level accepts.
  return (value) => (value === '' ? `level ${name} is empty` : null);
}

export function makeCheckLevels(levels: readonly LevelSpec[]): (topic: string) => LevelCheck {
  const rules = levels.map(levelRule);
  const names = levels.map((l) => l.name);
  const n = levels.length;
  const cache = new Map<string, LevelCheck>();
  const compute = (topic: string): LevelCheck => {
    const path: Record<string, string> = {};
    let pos = 0; // start of the next topic level; length + 1 once all are consumed
    for (let i = 0; i < n; i++) {
      if (pos > topic.length) {
        return { reason: `level ${names[i]} is missing: the topic has ${i} level(s), the namespace needs ${n} (${names.join('/')})` };
      }
      let end = topic.indexOf('/', pos);
      if (end === -1) end = topic.length;
      const value = topic.slice(pos, end);
      const why = (rules[i] as LevelRule)(value);
      if (why !== null) return { reason: why };
      path[names[i] as string] = value;
      pos = end + 1;
    }
    return { path: Object.freeze(path) };
  };
  return (topic) => {
    let result = cache.get(topic);
    if (result === undefined) {
      result = Object.freeze(compute(topic));
      // Same bound and policy as the route matcher: the topic set is large but recurring.
      if (cache.size >= DEFAULT_MATCH_CACHE_SIZE) cache.clear();
      cache.set(topic, result);
    }
    return result;
  };
}


/**
 * For an isa95 route, the filter's literal leading levels must be able to pass the level rules, and the
 * filter must reach every level; otherwise every topic it routes would be rejected.
 */
export function checkFilterAgainstLevels(
  filter: string,
  levels: readonly LevelSpec[],
  rules: readonly LevelRule[],
  report: (message: string) => void,
): void {
  const parts = filter.split('/');
  for (let i = 0; i < levels.length; i++) {
    const part = parts[i];
    if (part === '#') return;
    if (part === undefined) {
      report(`has ${parts.length} level(s) but isa95 needs at least ${levels.length} (${levels.map((l) => l.name).join('/')}); set isa95: false or extend the filter`);
      return;
    }
    if (part === '+') continue;
    const why = (rules[i] as LevelRule)(part);
    if (why !== null) {
      report(`can never pass the ISA-95 check: ${why}`);
      return;
    }
  }
}
