/**
 * A webhook's configuration as the API takes it (snake_case, seed field names) turned into the checked,
 * canonical form the store keeps. Structural checks are the OpenAPI schema's job (schemas/openapi/
 * webhooks.json); this file does what a schema cannot: URL safety, permissions on topic filters and event
 * types, template parsing, condition operators, reserved headers. Returns errors with codes; never throws.
 */
import type { ErrorCode } from '../../../src/core/index.js';
import type { Permissions } from '../../../src/core/index.js';
import type { EventType } from '../../../src/core/index.js';
import { validateTopicFilter, type TopicLimits } from '../../../src/core/index.js';
import { checkUrl } from './http-client.js';
import type { Allowlist } from './ssrf.js';
import { isValidSecret } from './signing.js';
import { catalogEntry, isEventType } from './event-catalog.js';
import { compileTemplate } from './template.js';
import { normalizeConditions, type Condition } from './matcher.js';
import { DEFAULT_SCHEDULE_S } from './retry-policy.js';

/** Shown instead of the value of an auth-like custom header. Sending it back on update keeps the value. */
export const REDACTED = '[redacted]';

export const DEFAULTS = Object.freeze({
  timeoutMs: 10_000,
  batchMaxSize: 100,
  batchMaxLingerMs: 250,
  maxConcurrency: 4,
});

/** What the API accepts (create, PUT; PATCH is merged over the current values first). */
export interface WebhookInput {
  name: string;
  description?: string | null;
  url: string;
  events: string[];
  headers?: Record<string, string>;
  secret?: string;
  is_active?: boolean;
  retry_config?: {
    schedule_s?: number[];
    timeout_ms?: number;
    /** Seed-style alternative to schedule_s: max_retries delays of retry_delay ms × backoff_multiplier^n. */
    max_retries?: number;
    retry_delay?: number;
    backoff_multiplier?: number;
  };
  filters?: { topics?: string[]; conditions?: Array<{ field: string; operator: string; value?: unknown }> };
  payload_template?: string | Record<string, unknown> | unknown[] | null;
  batch?: { max_size?: number; max_linger_ms?: number };
  ordered?: boolean;
  max_concurrency?: number;
}

/** The canonical, checked configuration (everything but identity, secrets and health). */
export interface WebhookSpec {
  readonly name: string;
  readonly description: string | null;
  readonly url: string;
  readonly events: readonly EventType[];
  readonly headers: Readonly<Record<string, string>>;
  readonly isActive: boolean;
  readonly retry: { readonly scheduleS: readonly number[]; readonly timeoutMs: number };
  readonly topics: readonly string[];
  readonly conditions: readonly Condition[];
  readonly template: string | null;
  readonly batch: { readonly maxSize: number; readonly maxLingerMs: number };
  readonly ordered: boolean;
  readonly maxConcurrency: number;
}

export type SpecResult = { ok: true; spec: WebhookSpec } | { ok: false; code: ErrorCode; message: string };

export interface SpecContext {
  readonly allowlist: Allowlist;
  /** The owner's read permissions: topic filters and topic-less event types must lie inside them. */
  readonly perms: Permissions;
  readonly topicLimits: TopicLimits;
  /** Current headers, so that a redacted value sent back keeps the stored one. */
  readonly previousHeaders?: Readonly<Record<string, string>>;
}

/** Set by the sender; a custom header may not replace them. */
const RESERVED_HEADERS = new Set([
  'host', 'content-length', 'content-type', 'transfer-encoding', 'connection', 'upgrade', 'expect', 'te', 'trailer',
  'webhook-id', 'webhook-timestamp', 'webhook-signature', 'x-webhook-signature',
]);
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const SENSITIVE = /^(?:authorization|proxy-authorization|cookie)$|token|secret|key|auth|passw|signature|session|credential/i;

export function isSensitiveHeader(name: string): boolean {
  return SENSITIVE.test(name);
}

/** Custom headers as shown by the API: auth-like values replaced (docs/guarantees.md: secrets never returned). */
export function redactHeaders(headers: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) out[k] = isSensitiveHeader(k) ? REDACTED : v;
  return out;
}

function fail(code: ErrorCode, message: string): SpecResult {
  return { ok: false, code, message };
}

function scheduleFrom(rc: NonNullable<WebhookInput['retry_config']>): number[] {
  if (rc.schedule_s !== undefined) return rc.schedule_s;
  if (rc.max_retries === undefined && rc.retry_delay === undefined && rc.backoff_multiplier === undefined) return [...DEFAULT_SCHEDULE_S];
  const n = rc.max_retries ?? DEFAULT_SCHEDULE_S.length;
  const first = (rc.retry_delay ?? 5_000) / 1000;
  const m = rc.backoff_multiplier ?? 2;
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(Math.min(86_400, Math.round(first * m ** i * 1000) / 1000));
  return out;
}

export function normalizeSpec(input: WebhookInput, ctx: SpecContext): SpecResult {
  // URL: plainly blocked destinations are refused now; deliver() checks again at connect time.
  const u = checkUrl(input.url, ctx.allowlist);
  if (!u.ok) return fail('UNS_ERR_WEBHOOK_URL_REFUSED', `url: ${u.message}`);
  if (u.url.username !== '' || u.url.password !== '') {
    return fail('UNS_ERR_WEBHOOK_URL_REFUSED', 'url: credentials in the URL would be shown to every reader; send them in a custom header (its value is redacted)');
  }

  const events: EventType[] = [];
  for (const e of new Set(input.events)) {
    if (!isEventType(e)) return fail('UNS_ERR_BAD_REQUEST', `events: unknown event type ${JSON.stringify(e)} (see GET /api/v1/webhooks/events)`);
    const req = catalogEntry(e)?.requires;
    if (req !== null && req !== undefined && req !== 'topic' && !ctx.perms.canSubscribe(req.read)) {
      return fail('UNS_ERR_FORBIDDEN', `events: ${e} needs read permission on ${req.read}`);
    }
    events.push(e);
  }

  const topics = [...new Set(input.filters?.topics ?? [])];
  for (const f of topics) {
    const bad = validateTopicFilter(f, ctx.topicLimits);
    if (bad !== null) return fail('UNS_ERR_FILTER_INVALID', `filters.topics: ${JSON.stringify(f)}: ${bad}`);
    // As on MQTT: a filter must lie wholly inside the owner's read filters (src/core/acl.ts).
    if (!ctx.perms.canSubscribe(f)) return fail('UNS_ERR_FORBIDDEN', `filters.topics: the owner's roles may not read all of ${f}`);
  }
  const cond = normalizeConditions(input.filters?.conditions ?? []);
  if (!cond.ok) return fail('UNS_ERR_BAD_REQUEST', cond.message);

  const headers: Record<string, string> = {};
  const seen = new Set<string>();
  for (const [k, v] of Object.entries(input.headers ?? {})) {
    const lower = k.toLowerCase();
    if (!TOKEN.test(k)) return fail('UNS_ERR_BAD_REQUEST', `headers: ${JSON.stringify(k)} is not a header name`);
    if (RESERVED_HEADERS.has(lower)) return fail('UNS_ERR_BAD_REQUEST', `headers: ${k} is set by the sender`);
    if (seen.has(lower)) return fail('UNS_ERR_BAD_REQUEST', `headers: ${k} given twice`);
    seen.add(lower);
    let value = v;
    if (value === REDACTED) {
      const prev = Object.entries(ctx.previousHeaders ?? {}).find(([pk]) => pk.toLowerCase() === lower);
      if (prev === undefined) return fail('UNS_ERR_BAD_REQUEST', `headers: ${k} is ${REDACTED} but has no stored value to keep`);
      value = prev[1];
    }
    // RFC 9110 §5.5: no CR, LF or NUL in a field value (header injection).
    if (/[\r\n\0]/.test(value)) return fail('UNS_ERR_BAD_REQUEST', `headers: ${k} holds CR, LF or NUL`);
    headers[k] = value;
  }

  if (input.secret !== undefined && !isValidSecret(input.secret)) {
    return fail('UNS_ERR_BAD_REQUEST', 'secret: use whsec_ followed by base64 of 24 to 64 random bytes, or leave it out to have one generated');
  }

  let template: string | null = null;
  if (input.payload_template !== undefined && input.payload_template !== null) {
    template = typeof input.payload_template === 'string' ? input.payload_template : JSON.stringify(input.payload_template);
    const t = compileTemplate(template);
    if (!t.ok) return fail('UNS_ERR_WEBHOOK_TEMPLATE_INVALID', `payload_template: ${t.message}`);
  }

  const rc = input.retry_config ?? {};
  const schedule = scheduleFrom(rc);

  return {
    ok: true,
    spec: {
      name: input.name,
      description: input.description ?? null,
      url: u.url.href,
      events,
      headers,
      isActive: input.is_active ?? true,
      retry: { scheduleS: schedule, timeoutMs: rc.timeout_ms ?? DEFAULTS.timeoutMs },
      topics,
      conditions: cond.conditions,
      template,
      batch: { maxSize: input.batch?.max_size ?? DEFAULTS.batchMaxSize, maxLingerMs: input.batch?.max_linger_ms ?? DEFAULTS.batchMaxLingerMs },
      ordered: input.ordered ?? false,
      maxConcurrency: input.max_concurrency ?? DEFAULTS.maxConcurrency,
    },
  };
}

/** The API form of a spec (for PATCH: merge the request over this, then normalise as a whole). */
export function specToInput(s: WebhookSpec): WebhookInput {
  return {
    name: s.name, description: s.description, url: s.url, events: [...s.events], headers: { ...s.headers }, is_active: s.isActive,
    retry_config: { schedule_s: [...s.retry.scheduleS], timeout_ms: s.retry.timeoutMs },
    filters: { topics: [...s.topics], conditions: s.conditions.map((c) => ({ ...c, operator: c.operator })) },
    payload_template: s.template,
    batch: { max_size: s.batch.maxSize, max_linger_ms: s.batch.maxLingerMs }, ordered: s.ordered, max_concurrency: s.maxConcurrency,
  };
}
