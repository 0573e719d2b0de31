/**
 * Webhook retry policy, delivery state machine and endpoint health, all pure (policies are data,
 * state machines are explicit types; time and randomness come in as arguments).
 *
 * Modelled on svix (core/retry.rs, worker.rs): a fixed schedule with ±20 % jitter, every non-2xx retried,
 * redirects never followed (a 3xx is a failed attempt), 410 Gone disables the endpoint, `Retry-After`
 * honoured on 429/503 but clamped, a minimum delay after 429s and timeouts, and endpoints disabled after
 * failing without a single success for a grace period.
 *
 * Units: policy fields are seconds; every `now`/`at` is epoch milliseconds.
 */
import type { DeliveryResult } from './http-client.js';

export interface RetryPolicy {
  /** Delay before retry n (n = 1..length) after attempt n failed; the length is the number of retries. */
  readonly scheduleS: readonly number[];
  /** Symmetric jitter as a fraction of the scheduled delay (0.2 = ±20 %). */
  readonly jitter: number;
  /** After a 429 or a timeout the next attempt waits at least this long (overload penalty). */
  readonly penaltyMinS: number;
  /** `Retry-After` is never followed beyond this (a hostile or buggy header cannot park a delivery). */
  readonly retryAfterMaxS: number;
  /** An endpoint failing with no success for this long is disabled. */
  readonly disableAfterS: number;
}

/** svix's schedule: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: 8 attempts over about 27.6 h. */
export const DEFAULT_SCHEDULE_S: readonly number[] = Object.freeze([5, 300, 1800, 7200, 18000, 36000, 36000]);

export const DEFAULT_RETRY_POLICY: RetryPolicy = Object.freeze({
  scheduleS: DEFAULT_SCHEDULE_S,
  jitter: 0.2,
  penaltyMinS: 60,
  retryAfterMaxS: 36000,
  disableAfterS: 5 * 24 * 3600,
});

// ---------------------------------------------------------------------------------------------------------
// Classifying one attempt

/**
 * - success: any 2xx.
 * - gone: 410; the receiver says the endpoint no longer exists, so the endpoint is disabled.
 * - fail: the request can never succeed as configured (invalid URL, request rejected before sending).
 * - retry: everything else: 1xx/3xx (redirects are not followed), 4xx other than 410, 5xx, timeouts, DNS,
 *   connect, TLS, reset, oversized head, and SSRF refusals (no connection was made; the name may resolve
 *   elsewhere later, and the attempt counts toward the endpoint's failure period).
 */
export type AttemptClass = 'success' | 'retry' | 'gone' | 'fail';

export function classify(result: DeliveryResult): AttemptClass {
  if (result.kind === 'response') {
    if (result.status >= 200 && result.status <= 299) return 'success';
    if (result.status === 410) return 'gone';
    return 'retry';
  }
  if (result.errorClass === 'invalid-url' || result.errorClass === 'invalid-request') return 'fail';
  return 'retry';
}

function headerValue(h: Readonly<Record<string, string | string[] | undefined>>, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * RFC 9110 §10.2.3: `Retry-After: <delay-seconds> | <HTTP-date>`. Seconds until then (0 for a past date),
 * or undefined when absent or unparseable.
 */
export function parseRetryAfter(value: string | undefined, now: number): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v);
  // HTTP-date: IMF-fixdate, or the obsolete RFC 850 / asctime forms (§5.6.7), all of which Date.parse reads.
  if (!/[A-Za-z]/.test(v)) return undefined;
  const at = Date.parse(v);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, Math.ceil((at - now) / 1000));
}

export type NextAttempt =
  | { at: number; delayMs: number }
  | { exhausted: true; reason: 'schedule' | 'gone' | 'fail' | 'succeeded' };

/**
 * When to try again after attempt `attemptNo` (1-based) ended with `result`, or why not.
 *
 * delay = scheduled[attemptNo] × (1 ± jitter), then
 *   429 or timeout      -> at least penaltyMinS (60 s) — the receiver is overloaded;
 *   429/503 Retry-After -> raised to the header's value, capped at retryAfterMaxS (10 h).
 * So Retry-After is clamped to [the jittered scheduled delay, 10 h]: it can slow us down, never speed us
 * up past the schedule, and never hold a delivery longer than the longest scheduled gap. An attempt
 * honouring Retry-After still uses up one retry.
 */
export function nextAttempt(
  attemptNo: number,
  result: DeliveryResult,
  now: number,
  rand: () => number,
  policy: RetryPolicy = DEFAULT_RETRY_POLICY,
): NextAttempt {
  const c = classify(result);
  if (c === 'success') return { exhausted: true, reason: 'succeeded' };
  if (c === 'gone') return { exhausted: true, reason: 'gone' };
  if (c === 'fail') return { exhausted: true, reason: 'fail' };
  const base = policy.scheduleS[attemptNo - 1];
  if (base === undefined || attemptNo < 1) return { exhausted: true, reason: 'schedule' };
  const r = Math.min(1, Math.max(0, rand()));
  let delayS = base * (1 + policy.jitter * (2 * r - 1));
  const status = result.kind === 'response' ? result.status : undefined;
  if (status === 429 || (result.kind === 'error' && result.errorClass === 'timeout')) delayS = Math.max(delayS, policy.penaltyMinS);
  if (result.kind === 'response' && (status === 429 || status === 503)) {
    const ra = parseRetryAfter(headerValue(result.headers, 'retry-after'), now);
    if (ra !== undefined) delayS = Math.max(delayS, Math.min(ra, policy.retryAfterMaxS));
  }
  const delayMs = Math.round(delayS * 1000);
  return { at: now + delayMs, delayMs };
}

// ---------------------------------------------------------------------------------------------------------
// Delivery state machine: pending -> in_flight -> succeeded | failed -> (pending | dead)

export type DeadReason = 'schedule' | 'gone' | 'fail' | 'endpoint-disabled';

export type DeliveryState =
  /** Waiting for `dueAt`; `attempts` made so far (0 for a new message). */
  | { readonly status: 'pending'; readonly attempts: number; readonly dueAt: number }
  /** Attempt number `attempts` is under way since `startedAt`. */
  | { readonly status: 'in_flight'; readonly attempts: number; readonly startedAt: number }
  | { readonly status: 'succeeded'; readonly attempts: number; readonly at: number }
  /** Attempt `attempts` failed; `next` says whether and when to retry. Settled by 'reschedule'. */
  | { readonly status: 'failed'; readonly attempts: number; readonly at: number; readonly outcome: AttemptClass; readonly next: NextAttempt }
  | { readonly status: 'dead'; readonly attempts: number; readonly at: number; readonly reason: DeadReason };

export type DeliveryStatus = DeliveryState['status'];

export type DeliveryEvent =
  /** The dispatcher takes a due delivery. */
  | { readonly type: 'start'; readonly at: number }
  /** The attempt ended; `rand` is the jitter draw in [0, 1) for the reschedule. */
  | { readonly type: 'result'; readonly at: number; readonly result: DeliveryResult; readonly rand: number }
  /** Persist-then-move: failed -> pending at next.at, or dead. */
  | { readonly type: 'reschedule' }
  /** After a restart an in_flight row has an unknown outcome: send again (at-least-once; same webhook-id). */
  | { readonly type: 'recover'; readonly at: number }
  /** The endpoint was disabled (410, failure period, operator): queued work is dead. */
  | { readonly type: 'endpoint-disabled'; readonly at: number };

export type TransitionResult =
  | { ok: true; state: DeliveryState }
  | { ok: false; from: DeliveryStatus; event: DeliveryEvent['type'] };

export function newDelivery(now: number): DeliveryState {
  return { status: 'pending', attempts: 0, dueAt: now };
}

/** The only way a delivery changes state. Invalid pairs return ok: false; nothing throws. */
export function transition(state: DeliveryState, event: DeliveryEvent, policy: RetryPolicy = DEFAULT_RETRY_POLICY): TransitionResult {
  const invalid: TransitionResult = { ok: false, from: state.status, event: event.type };
  switch (event.type) {
    case 'start':
      if (state.status !== 'pending') return invalid;
      return { ok: true, state: { status: 'in_flight', attempts: state.attempts + 1, startedAt: event.at } };
    case 'result': {
      if (state.status !== 'in_flight') return invalid;
      const outcome = classify(event.result);
      if (outcome === 'success') return { ok: true, state: { status: 'succeeded', attempts: state.attempts, at: event.at } };
      const next = nextAttempt(state.attempts, event.result, event.at, () => event.rand, policy);
      return { ok: true, state: { status: 'failed', attempts: state.attempts, at: event.at, outcome, next } };
    }
    case 'reschedule': {
      if (state.status !== 'failed') return invalid;
      const n = state.next;
      if ('at' in n) return { ok: true, state: { status: 'pending', attempts: state.attempts, dueAt: n.at } };
      const reason: DeadReason = n.reason === 'succeeded' ? 'fail' : n.reason;
      return { ok: true, state: { status: 'dead', attempts: state.attempts, at: state.at, reason } };
    }
    case 'recover':
      if (state.status !== 'in_flight') return invalid;
      // The interrupted attempt still counts, so a delivery that crashes the process cannot loop forever.
      return { ok: true, state: { status: 'pending', attempts: state.attempts, dueAt: event.at } };
    case 'endpoint-disabled':
      if (state.status !== 'pending' && state.status !== 'failed') return invalid;
      return { ok: true, state: { status: 'dead', attempts: state.attempts, at: event.at, reason: 'endpoint-disabled' } };
    default: {
      const never: never = event;
      return never;
    }
  }
}

// ---------------------------------------------------------------------------------------------------------
// Endpoint health

export type EndpointHealth =
  | { readonly state: 'healthy'; readonly lastSuccessAt: number | null }
  /** Every attempt since `failingSince` (the first failure after the last success) has failed. */
  | { readonly state: 'failing'; readonly lastSuccessAt: number | null; readonly failingSince: number }
  | { readonly state: 'disabled'; readonly lastSuccessAt: number | null; readonly disabledAt: number; readonly reason: 'gone' | 'failing' | 'operator' };

export interface HealthUpdate {
  health: EndpointHealth;
  /** The state changed: the caller emits `system.health_changed`. */
  changed: boolean;
}

export const INITIAL_HEALTH: EndpointHealth = Object.freeze({ state: 'healthy', lastSuccessAt: null });

/**
 * Fold one attempt outcome into the endpoint's health. A success clears the failure period; 410 disables at
 * once; otherwise the endpoint is disabled once it has been failing for `disableAfterS`. A disabled endpoint
 * stays disabled until `enableEndpoint` (late results of attempts already in flight do not revive it).
 */
export function recordAttempt(health: EndpointHealth, outcome: AttemptClass, at: number, policy: RetryPolicy = DEFAULT_RETRY_POLICY): HealthUpdate {
  if (health.state === 'disabled') return { health, changed: false };
  if (outcome === 'success') {
    return { health: { state: 'healthy', lastSuccessAt: at }, changed: health.state !== 'healthy' };
  }
  if (outcome === 'gone') {
    return { health: { state: 'disabled', lastSuccessAt: health.lastSuccessAt, disabledAt: at, reason: 'gone' }, changed: true };
  }
  const failingSince = health.state === 'failing' ? health.failingSince : at;
  if (at - failingSince >= policy.disableAfterS * 1000) {
    return { health: { state: 'disabled', lastSuccessAt: health.lastSuccessAt, disabledAt: at, reason: 'failing' }, changed: true };
  }
  if (health.state === 'failing') return { health, changed: false };
  return { health: { state: 'failing', lastSuccessAt: health.lastSuccessAt, failingSince }, changed: true };
}

/** Time-driven check (no attempt needed): disables an endpoint whose failure period has run out. */
export function checkHealth(health: EndpointHealth, now: number, policy: RetryPolicy = DEFAULT_RETRY_POLICY): HealthUpdate {
  if (health.state !== 'failing' || now - health.failingSince < policy.disableAfterS * 1000) return { health, changed: false };
  return { health: { state: 'disabled', lastSuccessAt: health.lastSuccessAt, disabledAt: now, reason: 'failing' }, changed: true };
}

export function disableEndpoint(health: EndpointHealth, at: number): HealthUpdate {
  if (health.state === 'disabled') return { health, changed: false };
  return { health: { state: 'disabled', lastSuccessAt: health.lastSuccessAt, disabledAt: at, reason: 'operator' }, changed: true };
}

/** Operator re-enables: back to healthy with a fresh failure period. */
export function enableEndpoint(health: EndpointHealth): HealthUpdate {
  if (health.state !== 'disabled') return { health, changed: false };
  return { health: { state: 'healthy', lastSuccessAt: health.lastSuccessAt }, changed: true };
}
