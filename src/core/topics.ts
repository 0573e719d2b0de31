/**
 * The namespace model: topics.yaml, loaded once at start-up, validated against schemas/topics.schema.json
 * and then by meaning (filters, names, references), and handed out as frozen data plus two hot-path
 * methods: matchRoute and checkLevels. Loading throws UnsError('UNS_ERR_TOPICS_INVALID') naming the file,
 * line, column and key path of every problem; the returned methods never throw.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { LineCounter, parseDocument } from 'yaml';
import { UnsError } from './errors.js';
import type { Encoding, Isa95Path } from './message.js';
import { TopicMatcher, filterCovers, filtersOverlap, validateTopicFilter } from './topic-filter.js';
import { parsePath, parseTemplate, type CompiledMapping, type FieldPath } from './ingest-mapping.js';
import { NO_SOURCE, PATTERN_HINTS, describeAjvError, fail, getTopicsValidator, positionOf, yamlLocator, type Locator, type PathSeg, type Problem } from './topics-problems.js';
import { checkFilterAgainstLevels, levelRule, makeCheckLevels } from './topic-levels.js';
import { buildSparkplugMap, type RawSparkplugMapEntry, type SparkplugMapEntry } from './sparkplug-map.js';

export interface LevelSpec {
  readonly name: string;
  /** The only names the level may take, when topics.yaml lists them. */
  readonly allowed?: ReadonlySet<string>;
  /** The level's pattern, anchored: the whole level must match. */
  readonly pattern?: RegExp;
  readonly description?: string;
}

export interface RouteSpec {
  readonly name: string;
  readonly filter: string;
  readonly encoding: Encoding;
  /** Id of the payload JSON Schema (schemas/payloads/<id>.schema.json). */
  readonly schema?: string;
  readonly store: boolean;
  /** Retention in milliseconds, parsed from `retention`. */
  readonly retentionMs?: number;
  /** Retention as written in topics.yaml, e.g. '90d'. */
  readonly retention?: string;
  readonly unit?: string;
  readonly deadband?: number;
  /** Check the topic's leading levels against `levels`. */
  readonly isa95: boolean;
  readonly description?: string;
}

export interface RoleSpec {
  /** Filters the role may subscribe to. */
  readonly read: readonly string[];
  /** Filters the role may publish to. */
  readonly write: readonly string[];
  /** Filters refused whatever any role allows, checked first. */
  readonly deny?: { readonly read: readonly string[]; readonly write: readonly string[] };
  readonly description?: string;
}

export interface UserSpec {
  readonly username: string;
  /** scrypt hash made by `uns-bridge hash-password`. */
  readonly passwordHash: string;
  readonly roles: readonly string[];
  readonly description?: string;
}

export type RuleOperator = '>' | '>=' | '<' | '<=';

/** A threshold rule written in topics.yaml (`rules:`); REST-managed rules have the same shape. */
export interface RuleSpec {
  readonly name: string;
  readonly filter: string;
  readonly operator: RuleOperator;
  readonly threshold: number;
  readonly hysteresis: number;
  readonly minDurationMs: number;
  readonly enabled: boolean;
  readonly description?: string;
}

export type SignatureScheme = 'standard' | 'sha256' | 'hex';

/** One mapping as written, for the verify endpoint. */
export interface IngestMappingText {
  readonly match?: string;
  readonly topic: string;
  readonly value: string;
  readonly timestamp?: string;
  readonly quality?: string;
  readonly unit?: string;
}

/** A source of signed inbound HTTP ingest (`ingest:`): POST /api/v1/ingest/<name>. */
export interface IngestSourceSpec {
  readonly name: string;
  readonly signature: SignatureScheme;
  /** Where the secret comes from: an environment variable (resolved by config.ts) or a literal (dev only). */
  readonly secret: { readonly env: string } | { readonly literal: string };
  /** Header carrying the signature (lower case). */
  readonly header: string;
  /** Delivery id for de-duplication: a header (lower case), a body field, or neither. */
  readonly idHeader: string | null;
  readonly idField: FieldPath | null;
  /** sha256/hex: a body field (covered by the signature) holding the send time. */
  readonly timestampField: FieldPath | null;
  readonly toleranceS: number;
  /** CIDRs as written; null = any address. */
  readonly allow: readonly string[] | null;
  /** The role whose write permissions apply to the mapped topics. */
  readonly role: string;
  readonly mappings: readonly CompiledMapping[];
  readonly mappingsText: readonly IngestMappingText[];
  readonly description?: string;
}

export type LevelCheck = { readonly path: Isa95Path } | { readonly reason: string };

export interface Namespace {
  /** The file it was loaded from ('<inline>' for namespaceFromObject). */
  readonly file: string;
  readonly version: 1;
  readonly levels: readonly LevelSpec[];
  /** In topics.yaml order; the first match wins. */
  readonly routes: readonly RouteSpec[];
  readonly roles: ReadonlyMap<string, RoleSpec>;
  /** Keyed by username. */
  readonly users: ReadonlyMap<string, UserSpec>;
  readonly anonymousRole: string | null;
  /** Threshold rules from topics.yaml, in file order. */
  readonly rules: readonly RuleSpec[];
  /** Signed inbound HTTP ingest sources, in file order. */
  readonly ingest: readonly IngestSourceSpec[];
  /** Where Sparkplug metrics live in the namespace (src/core/sparkplug-map.ts); the first match wins. */
  readonly sparkplugMap: readonly SparkplugMapEntry[];
  /** The first route whose filter matches the topic. Never throws. */
  matchRoute(topic: string): RouteSpec | undefined;
  /** Checks the topic's leading levels against `levels`. Never throws. */
  checkLevels(topic: string): LevelCheck;
}

// ---------------------------------------------------------------------------------------------------------
// Durations

const UNIT_MS: Readonly<Record<string, number>> = {
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
  y: 31_536_000_000, // 365 days: retention is a policy, not a calendar
};

/** Parses `<n>(s|m|h|d|w|y)` (y = 365 days) into milliseconds; null if malformed or beyond 2^53. */
export function parseDuration(text: string): number | null {
  const m = /^([0-9]{1,15})([smhdwy])$/.exec(text);
  if (m === null) return null;
  const ms = Number(m[1]) * (UNIT_MS[m[2] as string] as number);
  return Number.isSafeInteger(ms) ? ms : null;
}

// ---------------------------------------------------------------------------------------------------------
// The shape topics.yaml has once it matches the schema

interface RawLevel {
  name: string;
  allowed?: string[];
  pattern?: string;
  description?: string;
}

interface RawRoute {
  name: string;
  filter: string;
  encoding: Encoding;
  schema?: string;
  store?: boolean;
  retention?: string;
  unit?: string;
  deadband?: number;
  isa95?: boolean;
  description?: string;
}

interface RawRole {
  read?: string[];
  write?: string[];
  deny?: { read?: string[]; write?: string[] };
  description?: string;
}

interface RawUser {
  username: string;
  passwordHash: string;
  roles: string[];
  description?: string;
}

interface RawRule {
  name: string;
  filter: string;
  operator: RuleOperator;
  threshold: number;
  hysteresis?: number;
  minDuration?: string;
  enabled?: boolean;
  description?: string;
}

interface RawIngest {
  name: string;
  secretEnv?: string;
  secret?: string;
  signature: SignatureScheme;
  header?: string;
  idHeader?: string;
  idField?: string;
  timestampField?: string;
  tolerance?: string;
  allow?: string[];
  role: string;
  mappings: IngestMappingText[];
  description?: string;
}

interface RawTopics {
  version: 1;
  levels: RawLevel[];
  routes: RawRoute[];
  roles?: Record<string, RawRole>;
  users?: RawUser[];
  anonymous?: string | null;
  rules?: RawRule[];
  ingest?: RawIngest[];
  sparkplug?: { map?: RawSparkplugMapEntry[] };
}

// ---------------------------------------------------------------------------------------------------------
// Building the namespace

function deepFreeze<T>(value: T): T {
  // Only plain objects and arrays: a frozen RegExp, Set or Map would still work but says nothing.
  if (Array.isArray(value)) {
    for (const v of value) deepFreeze(v);
    Object.freeze(value);
  } else if (typeof value === 'object' && value !== null && Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

function build(data: unknown, file: string, locate: Locator): Namespace {
  const validate = getTopicsValidator();
  if (!validate(data)) {
    const problems: Problem[] = [];
    for (const e of validate.errors ?? []) {
      const p = describeAjvError(e, data);
      if (p !== null) problems.push(p);
    }
    fail(file, problems, locate);
  }
  const raw = data as RawTopics;
  const problems: Problem[] = [];
  const add = (path: readonly PathSeg[], message: string, at: 'key' | 'value' = 'value'): void => {
    problems.push({ path, at, message });
  };

  // Levels
  const levels: LevelSpec[] = [];
  const levelIndex = new Map<string, number>();
  raw.levels.forEach((lv, i) => {
    const seen = levelIndex.get(lv.name);
    if (seen !== undefined) add(['levels', i, 'name'], `duplicate level name (also levels[${seen}])`);
    else levelIndex.set(lv.name, i);
    const spec: { -readonly [K in keyof LevelSpec]: LevelSpec[K] } = { name: lv.name };
    if (lv.allowed !== undefined) spec.allowed = new Set(lv.allowed);
    if (lv.pattern !== undefined) {
      try {
        // Compile the pattern alone first: wrapped, an unbalanced `a)|(b` would compile into an
        // unanchored alternation instead of failing.
        new RegExp(lv.pattern, 'u');
        spec.pattern = new RegExp(`^(?:${lv.pattern})$`, 'u');
      } catch (err) {
        add(['levels', i, 'pattern'], `not a valid regular expression: ${(err as Error).message}`);
      }
    }
    if (lv.description !== undefined) spec.description = lv.description;
    levels.push(spec);
  });
  const rules = levels.map(levelRule);

  // Routes
  const routes: RouteSpec[] = [];
  const routeIndex = new Map<string, number>();
  const validFilters: { index: number; name: string; filter: string }[] = [];
  raw.routes.forEach((r, i) => {
    const seen = routeIndex.get(r.name);
    if (seen !== undefined) add(['routes', i, 'name'], `duplicate route name (also routes[${seen}])`);
    else routeIndex.set(r.name, i);

    const isa95 = r.isa95 ?? r.encoding !== 'sparkplugb';
    const why = validateTopicFilter(r.filter);
    if (why !== null) {
      add(['routes', i, 'filter'], `invalid topic filter: ${why}`);
    } else {
      // First match wins, so a route behind one that covers its filter can never be reached.
      const shadow = validFilters.find((f) => filterCovers(f.filter, r.filter));
      if (shadow !== undefined) {
        add(['routes', i, 'filter'], `never matches: route ${shadow.name} (routes[${shadow.index}]) comes first and covers ${r.filter}`);
      }
      validFilters.push({ index: i, name: r.name, filter: r.filter });
      if (isa95) checkFilterAgainstLevels(r.filter, levels, rules, (msg) => add(['routes', i, 'filter'], msg));
    }

    const route: { -readonly [K in keyof RouteSpec]: RouteSpec[K] } = {
      name: r.name,
      filter: r.filter,
      encoding: r.encoding,
      store: r.store ?? true,
      isa95,
    };
    if (r.schema !== undefined) route.schema = r.schema;
    if (r.retention !== undefined) {
      const ms = parseDuration(r.retention);
      if (ms === null || ms <= 0) add(['routes', i, 'retention'], PATTERN_HINTS['retention'] as string);
      else route.retentionMs = ms;
      route.retention = r.retention;
    }
    if (r.unit !== undefined) route.unit = r.unit;
    if (r.deadband !== undefined) route.deadband = r.deadband;
    if (r.description !== undefined) route.description = r.description;
    routes.push(route);
  });

  // Roles
  const roles = new Map<string, RoleSpec>();
  for (const [name, role] of Object.entries(raw.roles ?? {})) {
    for (const kind of ['read', 'write'] as const) {
      (role[kind] ?? []).forEach((filter, k) => {
        const bad = validateTopicFilter(filter);
        if (bad !== null) add(['roles', name, kind, k], `invalid topic filter: ${bad}`);
      });
      (role.deny?.[kind] ?? []).forEach((filter, k) => {
        const bad = validateTopicFilter(filter);
        if (bad !== null) add(['roles', name, 'deny', kind, k], `invalid topic filter: ${bad}`);
      });
    }
    const spec: { -readonly [K in keyof RoleSpec]: RoleSpec[K] } = { read: [...(role.read ?? [])], write: [...(role.write ?? [])] };
    if (role.deny !== undefined) spec.deny = { read: [...(role.deny.read ?? [])], write: [...(role.deny.write ?? [])] };
    if (role.description !== undefined) spec.description = role.description;
    roles.set(name, spec);
  }

  // Users
  const users = new Map<string, UserSpec>();
  const userIndex = new Map<string, number>();
  (raw.users ?? []).forEach((u, i) => {
    const seen = userIndex.get(u.username);
    if (seen !== undefined) add(['users', i, 'username'], `duplicate username (also users[${seen}])`);
    else userIndex.set(u.username, i);
    u.roles.forEach((role, k) => {
      if (!roles.has(role)) add(['users', i, 'roles', k], `unknown role ${JSON.stringify(role)}${knownRoles(roles)}`);
    });
    const spec: { -readonly [K in keyof UserSpec]: UserSpec[K] } = {
      username: u.username,
      passwordHash: u.passwordHash,
      roles: [...u.roles],
    };
    if (u.description !== undefined) spec.description = u.description;
    if (seen === undefined) users.set(u.username, spec);
  });

  const anonymousRole = raw.anonymous ?? null;
  if (anonymousRole !== null && !roles.has(anonymousRole)) {
    add(['anonymous'], `unknown role ${JSON.stringify(anonymousRole)}${knownRoles(roles)}`);
  }

  const ruleSpecs = buildRules(raw.rules ?? [], add);
  const ingest = buildIngest(raw.ingest ?? [], roles, add);
  const checkLevels = makeCheckLevels(levels);
  const sparkplugMap = buildSparkplugMap(raw.sparkplug?.map ?? [], add, checkLevels);

  if (problems.length > 0) fail(file, problems, locate);

  deepFreeze(levels);
  deepFreeze(routes);
  for (const r of roles.values()) deepFreeze(r);
  for (const u of users.values()) deepFreeze(u);
  deepFreeze(ruleSpecs);
  deepFreeze(ingest);

  deepFreeze(sparkplugMap);
  const matcher = new TopicMatcher<RouteSpec>(routes.map((r) => [r.filter, r] as const));
  return Object.freeze({
    file,
    version: 1 as const,
    levels,
    routes,
    roles: roles as ReadonlyMap<string, RoleSpec>,
    users: users as ReadonlyMap<string, UserSpec>,
    anonymousRole,
    rules: ruleSpecs,
    ingest,
    sparkplugMap,
    matchRoute: (topic: string) => matcher.match(topic),
    checkLevels,
  });
}

// ---------------------------------------------------------------------------------------------------------
// Threshold rules and inbound ingest sources

type AddProblem = (path: readonly PathSeg[], message: string, at?: 'key' | 'value') => void;

/** The longest a rule may wait before firing: the rules table keeps it in an integer of milliseconds. */
export const MAX_RULE_MIN_DURATION_MS = 7 * 86_400_000;
/** Standard Webhooks' 5 minutes is also the most we tolerate (Standard Webhooks, and docs/guarantees.md). */
export const MAX_INGEST_TOLERANCE_S = 300;

const MS_UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

/** `0`, or `<n>ms|s|m|h`, as milliseconds; null if malformed. */
export function parseShortDuration(text: string): number | null {
  if (text === '0') return 0;
  const m = /^([0-9]{1,9})(ms|s|m|h)$/.exec(text);
  if (m === null) return null;
  return Number(m[1]) * (MS_UNITS[m[2] as string] as number);
}

function buildRules(raw: readonly RawRule[], add: AddProblem): RuleSpec[] {
  const out: RuleSpec[] = [];
  const seen = new Map<string, number>();
  raw.forEach((r, i) => {
    const dup = seen.get(r.name);
    if (dup !== undefined) add(['rules', i, 'name'], `duplicate rule name (also rules[${dup}])`);
    else seen.set(r.name, i);
    const bad = validateTopicFilter(r.filter);
    if (bad !== null) add(['rules', i, 'filter'], `invalid topic filter: ${bad}`);
    if (!Number.isFinite(r.threshold)) add(['rules', i, 'threshold'], 'must be a finite number');
    const hysteresis = r.hysteresis ?? 0;
    if (!Number.isFinite(hysteresis)) add(['rules', i, 'hysteresis'], 'must be a finite number');
    let minDurationMs = 0;
    if (r.minDuration !== undefined) {
      const ms = parseShortDuration(r.minDuration);
      if (ms === null || ms > MAX_RULE_MIN_DURATION_MS) add(['rules', i, 'minDuration'], 'must be 0 or a whole number and a unit ms, s, m or h, at most 7 days (e.g. 30s)');
      else minDurationMs = ms;
    }
    const spec: { -readonly [K in keyof RuleSpec]: RuleSpec[K] } = {
      name: r.name, filter: r.filter, operator: r.operator, threshold: r.threshold, hysteresis, minDurationMs, enabled: r.enabled ?? true,
    };
    if (r.description !== undefined) spec.description = r.description;
    out.push(spec);
  });
  return out;
}

/** An IP address or CIDR (`10.0.0.0/8`, `2001:db8::/32`, `127.0.0.1`). */
function isCidr(text: string): boolean {
  const slash = text.indexOf('/');
  const addr = slash < 0 ? text : text.slice(0, slash);
  const family = isIP(addr);
  if (family === 0) return false;
  if (slash < 0) return true;
  const p = text.slice(slash + 1);
  return /^[0-9]{1,3}$/.test(p) && Number(p) <= (family === 4 ? 32 : 128);
}

function buildIngest(raw: readonly RawIngest[], roles: ReadonlyMap<string, RoleSpec>, add: AddProblem): IngestSourceSpec[] {
  const out: IngestSourceSpec[] = [];
  const seen = new Map<string, number>();
  raw.forEach((src, i) => {
    const at = (...rest: PathSeg[]): PathSeg[] => ['ingest', i, ...rest];
    const dup = seen.get(src.name);
    if (dup !== undefined) add(at('name'), `duplicate source name (also ingest[${dup}])`);
    else seen.set(src.name, i);

    let secret: IngestSourceSpec['secret'] = { literal: '' };
    if (src.secretEnv !== undefined && src.secret !== undefined) add(at('secret'), 'set either secretEnv or secret, not both', 'key');
    else if (src.secretEnv !== undefined) secret = { env: src.secretEnv };
    else if (src.secret !== undefined) secret = { literal: src.secret };
    else add(at('secretEnv'), 'is required (the name of an UNS_INGEST_SECRET_* environment variable; `secret` is for development only)');

    const standard = src.signature === 'standard';
    if (standard) {
      // Standard Webhooks fixes its headers and signs the id and timestamp with the body.
      for (const k of ['header', 'idHeader', 'idField', 'timestampField'] as const) {
        if (src[k] !== undefined) add(at(k), 'not used with signature standard (webhook-id, webhook-timestamp and webhook-signature are fixed)', 'key');
      }
    }
    if (src.idHeader !== undefined && src.idField !== undefined) add(at('idField'), 'set either idHeader or idField, not both', 'key');
    const fieldPath = (key: 'idField' | 'timestampField'): FieldPath | null => {
      const text = src[key];
      if (text === undefined || standard) return null;
      const p = parsePath(text);
      if (typeof p === 'string') { add(at(key), `bad path: ${p}`); return null; }
      if (p.wildcard) { add(at(key), 'must select one value (no [*])'); return null; }
      return { ...p, root: true };
    };

    let toleranceS = MAX_INGEST_TOLERANCE_S;
    if (src.tolerance !== undefined) {
      const ms = parseShortDuration(src.tolerance);
      if (ms === null || ms < 1000 || ms % 1000 !== 0 || ms > MAX_INGEST_TOLERANCE_S * 1000) add(at('tolerance'), 'must be whole seconds between 1s and 5m (e.g. 300s)');
      else toleranceS = ms / 1000;
    }

    (src.allow ?? []).forEach((c, k) => { if (!isCidr(c)) add(at('allow', k), 'not an IP address or CIDR'); });

    const role = roles.get(src.role);
    if (role === undefined) add(at('role'), `unknown role ${JSON.stringify(src.role)}${knownRoles(roles)}`);

    const mappings: CompiledMapping[] = [];
    src.mappings.forEach((m, k) => {
      const mat = (...rest: PathSeg[]): PathSeg[] => at('mappings', k, ...rest);
      const path = (key: 'value' | 'timestamp' | 'quality' | 'unit'): FieldPath | undefined => {
        const text = m[key];
        if (text === undefined) return undefined;
        const p = parsePath(text);
        if (typeof p === 'string') { add(mat(key), `bad path: ${p}`); return undefined; }
        if (p.wildcard) { add(mat(key), 'must select one value (no [*])'); return undefined; }
        return p;
      };
      let match: FieldPath | null = null;
      if (m.match !== undefined) {
        const p = parsePath(m.match);
        if (typeof p === 'string') add(mat('match'), `bad path: ${p}`);
        else match = { ...p, root: true };
      }
      const topic = parseTemplate(m.topic);
      if (typeof topic === 'string') add(mat('topic'), topic);
      else if (role !== undefined && !role.write.some((w) => validateTopicFilter(w) === null && filtersOverlap(w, topic.filter))) {
        add(mat('topic'), `role ${src.role} may not write any topic of this template (${topic.filter})`);
      }
      const value = path('value');
      const mapping: { -readonly [K in keyof CompiledMapping]: CompiledMapping[K] } = {
        match, topic: typeof topic === 'string' ? { text: m.topic, parts: [], filter: '' } : topic,
        value: value ?? { text: m.value, root: false, segs: [], wildcard: false },
      };
      const ts = path('timestamp');
      const q = path('quality');
      const u = path('unit');
      if (ts) mapping.timestamp = ts;
      if (q) mapping.quality = q;
      if (u) mapping.unit = u;
      mappings.push(mapping);
    });

    const spec: { -readonly [K in keyof IngestSourceSpec]: IngestSourceSpec[K] } = {
      name: src.name, signature: src.signature, secret,
      header: standard ? 'webhook-signature' : (src.header ?? 'X-Webhook-Signature').toLowerCase(),
      idHeader: standard ? 'webhook-id' : src.idHeader?.toLowerCase() ?? null,
      idField: fieldPath('idField'),
      timestampField: fieldPath('timestampField'),
      toleranceS, allow: src.allow ? [...src.allow] : null, role: src.role, mappings,
      mappingsText: src.mappings.map((m) => ({ ...m })),
    };
    if (src.description !== undefined) spec.description = src.description;
    out.push(spec);
  });
  return out;
}

function knownRoles(roles: ReadonlyMap<string, RoleSpec>): string {
  return roles.size === 0 ? ' (no roles are defined)' : ` (defined: ${[...roles.keys()].join(', ')})`;
}


/**
 * Loads and checks a topics.yaml. Throws UnsError('UNS_ERR_TOPICS_INVALID') listing every problem as
 * `<file>:<line>:<col> <key path>: <what is wrong>`.
 */
export function loadTopics(file: string): Namespace {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new UnsError('UNS_ERR_TOPICS_INVALID', `${file}: cannot read: ${(err as Error).message}`, { cause: err });
  }
  const lineCounter = new LineCounter();
  // prettyErrors off: positions come from our LineCounter, messages stay one line.
  const doc = parseDocument(text, { lineCounter, prettyErrors: false });
  if (doc.errors.length > 0) {
    const lines = doc.errors.map((e) => {
      const pos = positionOf(lineCounter, e.pos[0]);
      return `${file}:${pos.line}:${pos.col} YAML: ${e.message.split('\n')[0]}`;
    });
    throw new UnsError('UNS_ERR_TOPICS_INVALID', lines.join('\n'));
  }
  let data: unknown;
  try {
    data = doc.toJS();
  } catch (err) {
    // e.g. too many alias expansions (a "billion laughs" document)
    throw new UnsError('UNS_ERR_TOPICS_INVALID', `${file}: ${(err as Error).message}`, { cause: err });
  }
  if (data === null || data === undefined) {
    throw new UnsError('UNS_ERR_TOPICS_INVALID', `${file}:1:1 the file is empty: expected version, levels and routes`);
  }
  return build(data, file, yamlLocator(doc, lineCounter));
}

/** The same checks as loadTopics on an already-parsed object; problems carry key paths, not lines. */
export function namespaceFromObject(obj: unknown, file = '<inline>'): Namespace {
  return build(obj, file, NO_SOURCE);
}
