/**
 * MQTT topic names and topic filters: validation, matching, and filter-vs-filter reasoning (for ACLs).
 * Everything here runs on the per-message path, so nothing throws and nothing compiles a regex per call.
 */

export interface TopicLimits {
  /** Maximum length in UTF-8 bytes. MQTT caps any UTF-8 string at 65,535 bytes [MQTT-1.5.3]. */
  readonly maxBytes: number;
  /** Maximum number of levels (separators + 1). */
  readonly maxLevels: number;
}

/** Limits used when no deployment limits apply (e.g. validating filters written in topics.yaml). */
export const DEFAULT_TOPIC_LIMITS: TopicLimits = Object.freeze({ maxBytes: 65_535, maxLevels: 128 });

const SLASH = 0x2f;
const PLUS = 0x2b;
const HASH = 0x23;
const DOLLAR = 0x24;

/**
 * One pass over the string: character rules, wildcard placement, UTF-8 byte count and level count.
 * Returns null when the string is acceptable, else a short reason.
 */
function scan(s: string, limits: TopicLimits, wildcards: boolean): string | null {
  // Topic names and filters must be at least one character long [MQTT-4.7.3-1].
  if (s.length === 0) return 'empty';
  // Every UTF-16 code unit is at least one UTF-8 byte: reject huge strings before looking at them.
  if (s.length > limits.maxBytes) return `longer than ${limits.maxBytes} bytes`;
  let bytes = 0;
  let levels = 1;
  const last = s.length - 1;
  for (let i = 0; i <= last; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) {
      bytes += 1;
      if (c === SLASH) {
        levels++;
      } else if (c === 0) {
        // U+0000 is forbidden in topic names and filters [MQTT-4.7.3-2].
        return 'contains U+0000';
      } else if (c === PLUS) {
        if (!wildcards) return "contains wildcard '+'";
        // '+' must occupy an entire level [MQTT-4.7.1-3].
        const before = i === 0 || s.charCodeAt(i - 1) === SLASH;
        const after = i === last || s.charCodeAt(i + 1) === SLASH;
        if (!before || !after) return "'+' must occupy a whole level";
      } else if (c === HASH) {
        if (!wildcards) return "contains wildcard '#'";
        // '#' must be the last character, alone in its level [MQTT-4.7.1-2].
        const before = i === 0 || s.charCodeAt(i - 1) === SLASH;
        if (!before || i !== last) return "'#' must be the last level, alone";
      }
    } else if (c < 0x800) {
      bytes += 2;
    } else if (c >= 0xd800 && c <= 0xdbff) {
      const next = i < last ? s.charCodeAt(i + 1) : 0;
      if (next < 0xdc00 || next > 0xdfff) return 'contains a lone UTF-16 surrogate';
      bytes += 4;
      i++;
    } else if (c >= 0xdc00 && c <= 0xdfff) {
      return 'contains a lone UTF-16 surrogate';
    } else if (c === 0xfffd) {
      // The broker decodes topic bytes as UTF-8 with replacement, so U+FFFD here almost always means the
      // wire bytes were ill-formed UTF-8, which the server must treat as a protocol error [MQTT-1.5.3-1].
      // A client that sends a genuine U+FFFD loses nothing worth keeping.
      return 'contains U+FFFD (ill-formed UTF-8)';
    } else {
      bytes += 3;
    }
  }
  if (bytes > limits.maxBytes) return `longer than ${limits.maxBytes} bytes`;
  if (levels > limits.maxLevels) return `deeper than ${limits.maxLevels} levels`;
  return null;
}

/** Checks a topic name (PUBLISH): null if acceptable, else a short reason. Never throws. */
export function validateTopicName(topic: string, limits: TopicLimits = DEFAULT_TOPIC_LIMITS): string | null {
  // Wildcards are for subscriptions only; a topic name must not contain them [MQTT-4.7.1-1].
  return scan(topic, limits, false);
}

/** Checks a topic filter (SUBSCRIBE, ACL, route): null if acceptable, else a short reason. Never throws. */
export function validateTopicFilter(filter: string, limits: TopicLimits = DEFAULT_TOPIC_LIMITS): string | null {
  return scan(filter, limits, true);
}

function startsWithWildcard(levels: readonly string[]): boolean {
  const first = levels[0];
  return first === '+' || first === '#';
}

/**
 * Compiles a (valid) filter into a matcher. The filter is split once; each call walks the topic string
 * by index without allocating. Behaviour on invalid filters is unspecified: validate first.
 */
export function compileFilter(filter: string): (topic: string) => boolean {
  if (!filter.includes('+') && !filter.includes('#')) {
    return (topic) => topic === filter;
  }
  const levels = filter.split('/');
  // A filter starting with a wildcard must not match topics starting with '$' [MQTT-4.7.2-1].
  const guardDollar = startsWithWildcard(levels);
  if (filter === '#') {
    return (topic) => topic.length > 0 && topic.charCodeAt(0) !== DOLLAR;
  }
  const n = levels.length;
  return (topic) => {
    if (guardDollar && topic.charCodeAt(0) === DOLLAR) return false;
    let pos = 0; // start of the topic level to compare; length + 1 once every level is consumed
    for (let i = 0; i < n; i++) {
      const level = levels[i] as string;
      // '#' matches the parent level and any number of child levels [MQTT-4.7.1-2].
      if (level === '#') return true;
      if (pos > topic.length) return false; // topic has fewer levels than the filter
      let end = topic.indexOf('/', pos);
      if (end === -1) end = topic.length;
      if (level !== '+') {
        if (end - pos !== level.length || !topic.startsWith(level, pos)) return false;
      }
      pos = end + 1;
    }
    return pos === topic.length + 1; // and the topic has no levels left over
  };
}

/** Default size of the per-topic result cache in {@link TopicMatcher}. */
export const DEFAULT_MATCH_CACHE_SIZE = 100_000;

/**
 * An ordered list of `[filter, value]` entries. `match` returns the value of the first entry whose
 * filter matches (first match wins, as in topics.yaml routes). Results are cached per topic because the
 * same topics recur on the hot path; the cache is cleared when full, which keeps it bounded without the
 * bookkeeping of an LRU.
 */
export class TopicMatcher<T> {
  readonly #filters: readonly ((topic: string) => boolean)[];
  readonly #values: readonly T[];
  readonly #cacheSize: number;
  /** topic -> index of the first matching entry, or -1. */
  readonly #first = new Map<string, number>();
  readonly #all = new Map<string, readonly T[]>();

  constructor(entries: Iterable<readonly [string, T]>, options: { cacheSize?: number } = {}) {
    const filters: ((topic: string) => boolean)[] = [];
    const values: T[] = [];
    for (const [filter, value] of entries) {
      filters.push(compileFilter(filter));
      values.push(value);
    }
    this.#filters = filters;
    this.#values = values;
    this.#cacheSize = Math.max(1, options.cacheSize ?? DEFAULT_MATCH_CACHE_SIZE);
  }

  get size(): number {
    return this.#values.length;
  }

  /** The value of the first entry (in list order) whose filter matches, or undefined. */
  match(topic: string): T | undefined {
    let index = this.#first.get(topic);
    if (index === undefined) {
      index = -1;
      const filters = this.#filters;
      for (let i = 0; i < filters.length; i++) {
        if ((filters[i] as (topic: string) => boolean)(topic)) {
          index = i;
          break;
        }
      }
      if (this.#first.size >= this.#cacheSize) this.#first.clear();
      this.#first.set(topic, index);
    }
    return index === -1 ? undefined : this.#values[index];
  }

  /** The values of every matching entry, in list order. The array is shared and frozen. */
  matchAll(topic: string): readonly T[] {
    let result = this.#all.get(topic);
    if (result === undefined) {
      const found: T[] = [];
      const filters = this.#filters;
      for (let i = 0; i < filters.length; i++) {
        if ((filters[i] as (topic: string) => boolean)(topic)) found.push(this.#values[i] as T);
      }
      result = Object.freeze(found);
      if (this.#all.size >= this.#cacheSize) this.#all.clear();
      this.#all.set(topic, result);
    }
    return result;
  }
}

function isLiteralDollar(level: string | undefined): boolean {
  return level !== undefined && level !== '+' && level !== '#' && level.charCodeAt(0) === DOLLAR;
}

/**
 * True if some topic name could match both (valid) filters. Used by ACLs to tell a subscription that
 * touches a permitted area from one that is entirely outside it.
 */
export function filtersOverlap(a: string, b: string): boolean {
  const la = a.split('/');
  const lb = b.split('/');
  // A '$' topic can only be matched by a filter whose first level is that literal [MQTT-4.7.2-1].
  if (startsWithWildcard(la) && isLiteralDollar(lb[0])) return false;
  if (startsWithWildcard(lb) && isLiteralDollar(la[0])) return false;
  const n = Math.max(la.length, lb.length);
  for (let i = 0; i < n; i++) {
    const x = la[i];
    const y = lb[i];
    // '#' also matches zero further levels, so it meets the other filter whether or not it has ended.
    if (x === '#' || y === '#') return true;
    if (x === undefined || y === undefined) return false;
    if (x !== '+' && y !== '+' && x !== y) return false;
  }
  return true;
}

/**
 * True if every topic name matched by `inner` is also matched by `outer` (both valid filters), e.g.
 * `acme/#` covers `acme/plant1/+/x`, but `acme/+/a` does not cover `acme/#`.
 */
export function filterCovers(outer: string, inner: string): boolean {
  const lo = outer.split('/');
  const li = inner.split('/');
  // An outer filter starting with a wildcard matches no '$' topic [MQTT-4.7.2-1], but an inner one that
  // starts with a '$' literal only matches '$' topics.
  if (startsWithWildcard(lo) && isLiteralDollar(li[0])) return false;
  const n = Math.max(lo.length, li.length);
  for (let i = 0; i < n; i++) {
    const o = lo[i];
    const x = li[i];
    // Outer '#' takes whatever is left of inner, including nothing [MQTT-4.7.1-2].
    if (o === '#') return true;
    // Inner has more levels (or '#', i.e. any number more) than outer can take, or fewer than it needs.
    if (o === undefined || x === undefined || x === '#') return false;
    if (o === '+') continue;
    if (x !== o) return false; // x is '+' (matches more than one literal) or a different literal
  }
  return true;
}
