import { expect } from 'chai';
import {
  DEFAULT_RETRY_POLICY,
  DEFAULT_SCHEDULE_S,
  INITIAL_HEALTH,
  checkHealth,
  classify,
  disableEndpoint,
  enableEndpoint,
  newDelivery,
  nextAttempt,
  parseRetryAfter,
  recordAttempt,
  transition,
} from '../../../../bridge/sinks/webhooks/retry-policy.js';
import type { DeliveryEvent, DeliveryState, EndpointHealth } from '../../../../bridge/sinks/webhooks/retry-policy.js';
import type { DeliveryErrorClass, DeliveryResult } from '../../../../bridge/sinks/webhooks/http-client.js';

const T0 = Date.UTC(2025, 0, 1, 12, 0, 0);
const MID = (): number => 0.5; // no jitter
const LOW = (): number => 0; // -20 %
const HIGH = (): number => 1; // +20 %

function res(status: number, headers: Record<string, string> = {}): DeliveryResult {
  return { kind: 'response', status, headers, bodyExcerpt: '', truncated: false, latencyMs: 5 };
}
function err(errorClass: DeliveryErrorClass): DeliveryResult {
  return { kind: 'error', errorClass, message: errorClass, latencyMs: 5 };
}
function delayS(n: ReturnType<typeof nextAttempt>): number {
  if (!('at' in n)) throw new Error(`expected a retry, got ${JSON.stringify(n)}`);
  return n.delayMs / 1000;
}

describe('webhook retry policy - classify', () => {
  it('treats any 2xx as success', () => {
    for (const s of [200, 201, 202, 204, 299]) expect(classify(res(s)), String(s)).to.equal('success');
  });
  it('retries 3xx (redirects are never followed), 4xx other than 410, and 5xx', () => {
    for (const s of [100, 301, 302, 307, 308, 400, 401, 403, 404, 408, 413, 429, 500, 502, 503, 504]) {
      expect(classify(res(s)), String(s)).to.equal('retry');
    }
  });
  it('treats 410 as gone', () => {
    expect(classify(res(410))).to.equal('gone');
  });
  it('retries transport failures and SSRF refusals; fails requests that can never be sent', () => {
    for (const c of ['timeout', 'dns', 'connect', 'tls', 'reset', 'too-large', 'protocol', 'ssrf-blocked'] as const) {
      expect(classify(err(c)), c).to.equal('retry');
    }
    expect(classify(err('invalid-url'))).to.equal('fail');
    expect(classify(err('invalid-request'))).to.equal('fail');
  });
});

describe('webhook retry policy - nextAttempt', () => {
  it('follows the svix schedule as data: 5s, 5m, 30m, 2h, 5h, 10h, 10h', () => {
    expect(DEFAULT_SCHEDULE_S).to.deep.equal([5, 300, 1800, 7200, 18000, 36000, 36000]);
    DEFAULT_SCHEDULE_S.forEach((s, i) => {
      const n = nextAttempt(i + 1, res(500), T0, MID);
      expect(delayS(n)).to.equal(s);
      if ('at' in n) expect(n.at).to.equal(T0 + s * 1000);
    });
  });

  it('is exhausted after the last scheduled retry (8 attempts)', () => {
    expect(nextAttempt(8, res(500), T0, MID)).to.deep.equal({ exhausted: true, reason: 'schedule' });
    expect(nextAttempt(0, res(500), T0, MID)).to.deep.equal({ exhausted: true, reason: 'schedule' });
  });

  it('applies ±20 % jitter from the injected random source', () => {
    expect(delayS(nextAttempt(2, res(500), T0, LOW))).to.equal(240);
    expect(delayS(nextAttempt(2, res(500), T0, HIGH))).to.equal(360);
    expect(delayS(nextAttempt(2, res(500), T0, () => 0.75))).to.equal(330);
  });

  it('gives up at once on 410 and on requests that can never be sent', () => {
    expect(nextAttempt(1, res(410), T0, MID)).to.deep.equal({ exhausted: true, reason: 'gone' });
    expect(nextAttempt(1, err('invalid-url'), T0, MID)).to.deep.equal({ exhausted: true, reason: 'fail' });
    expect(nextAttempt(1, res(204), T0, MID)).to.deep.equal({ exhausted: true, reason: 'succeeded' });
  });

  it('waits at least a minute after 429 or a timeout (overload penalty)', () => {
    expect(delayS(nextAttempt(1, res(429), T0, MID))).to.equal(60);
    expect(delayS(nextAttempt(1, err('timeout'), T0, MID))).to.equal(60);
    expect(delayS(nextAttempt(1, res(500), T0, MID))).to.equal(5);
    expect(delayS(nextAttempt(1, err('connect'), T0, MID))).to.equal(5);
    expect(delayS(nextAttempt(2, res(429), T0, MID))).to.equal(300);
  });

  it('honours Retry-After seconds on 429/503, raising the delay but never past 10 h', () => {
    expect(delayS(nextAttempt(1, res(503, { 'retry-after': '120' }), T0, MID))).to.equal(120);
    expect(delayS(nextAttempt(1, res(429, { 'retry-after': '900' }), T0, MID))).to.equal(900);
    expect(delayS(nextAttempt(1, res(503, { 'retry-after': String(30 * 24 * 3600) }), T0, MID))).to.equal(36000);
  });

  it('never lets Retry-After shorten the schedule', () => {
    expect(delayS(nextAttempt(3, res(503, { 'retry-after': '1' }), T0, MID))).to.equal(1800);
    expect(delayS(nextAttempt(1, res(429, { 'retry-after': '0' }), T0, MID))).to.equal(60);
  });

  it('ignores Retry-After on other statuses and when unparseable', () => {
    expect(delayS(nextAttempt(1, res(500, { 'retry-after': '600' }), T0, MID))).to.equal(5);
    expect(delayS(nextAttempt(1, res(301, { 'retry-after': '600' }), T0, MID))).to.equal(5);
    expect(delayS(nextAttempt(1, res(503, { 'retry-after': 'soon' }), T0, MID))).to.equal(5);
    expect(delayS(nextAttempt(1, res(503, { 'retry-after': '-5' }), T0, MID))).to.equal(5);
  });

  it('reads Retry-After HTTP-dates (RFC 9110 §10.2.3)', () => {
    const date = new Date(T0 + 3600_000).toUTCString();
    expect(parseRetryAfter(date, T0)).to.equal(3600);
    expect(parseRetryAfter('Sun, 06 Nov 1994 08:49:37 GMT', T0)).to.equal(0);
    expect(parseRetryAfter(' 42 ', T0)).to.equal(42);
    expect(parseRetryAfter(undefined, T0)).to.equal(undefined);
    expect(parseRetryAfter('1.5', T0)).to.equal(undefined);
    expect(delayS(nextAttempt(1, res(503, { 'retry-after': date }), T0, MID))).to.equal(3600);
  });
});

describe('webhook retry policy - delivery state machine', () => {
  function step(s: DeliveryState, e: DeliveryEvent): DeliveryState {
    const r = transition(s, e);
    if (!r.ok) throw new Error(`invalid ${r.from} + ${r.event}`);
    return r.state;
  }

  it('pending -> in_flight -> succeeded', () => {
    let s = newDelivery(T0);
    s = step(s, { type: 'start', at: T0 });
    expect(s).to.deep.equal({ status: 'in_flight', attempts: 1, startedAt: T0 });
    s = step(s, { type: 'result', at: T0 + 10, result: res(200), rand: 0.5 });
    expect(s).to.deep.equal({ status: 'succeeded', attempts: 1, at: T0 + 10 });
  });

  it('failed -> pending (rescheduled) until the schedule is exhausted, then dead', () => {
    let s = newDelivery(T0);
    let now = T0;
    const due: number[] = [];
    for (let i = 0; i < 8; i++) {
      s = step(s, { type: 'start', at: now });
      s = step(s, { type: 'result', at: now, result: res(500), rand: 0.5 });
      expect(s.status).to.equal('failed');
      s = step(s, { type: 'reschedule' });
      if (s.status === 'pending') {
        due.push((s.dueAt - now) / 1000);
        now = s.dueAt;
      }
    }
    expect(due).to.deep.equal([...DEFAULT_SCHEDULE_S]);
    expect(s).to.deep.include({ status: 'dead', attempts: 8, reason: 'schedule' });
  });

  it('410 goes straight to dead (gone)', () => {
    let s = step(newDelivery(T0), { type: 'start', at: T0 });
    s = step(s, { type: 'result', at: T0, result: res(410), rand: 0.5 });
    expect(s).to.deep.include({ status: 'failed', outcome: 'gone' });
    expect(step(s, { type: 'reschedule' })).to.deep.include({ status: 'dead', reason: 'gone' });
  });

  it('recovers an interrupted in_flight delivery to pending, counting the attempt', () => {
    const s = step(step(newDelivery(T0), { type: 'start', at: T0 }), { type: 'recover', at: T0 + 5 });
    expect(s).to.deep.equal({ status: 'pending', attempts: 1, dueAt: T0 + 5 });
  });

  it('kills queued work when the endpoint is disabled', () => {
    expect(step(newDelivery(T0), { type: 'endpoint-disabled', at: T0 })).to.deep.include({ status: 'dead', reason: 'endpoint-disabled' });
  });

  it('refuses transitions the machine does not have, without throwing', () => {
    const pending = newDelivery(T0);
    expect(transition(pending, { type: 'result', at: T0, result: res(200), rand: 0 })).to.deep.equal({ ok: false, from: 'pending', event: 'result' });
    expect(transition(pending, { type: 'reschedule' }).ok).to.equal(false);
    const done = step(step(pending, { type: 'start', at: T0 }), { type: 'result', at: T0, result: res(200), rand: 0 });
    for (const e of [{ type: 'start', at: T0 }, { type: 'recover', at: T0 }, { type: 'endpoint-disabled', at: T0 }] as DeliveryEvent[]) {
      expect(transition(done, e).ok, e.type).to.equal(false);
    }
  });
});

describe('webhook retry policy - endpoint health', () => {
  const DAY = 24 * 3600 * 1000;

  it('is failing from the first failure after the last success, and a success clears it', () => {
    let u = recordAttempt(INITIAL_HEALTH, 'retry', T0);
    expect(u).to.deep.equal({ health: { state: 'failing', lastSuccessAt: null, failingSince: T0 }, changed: true });
    u = recordAttempt(u.health, 'retry', T0 + DAY);
    expect(u.changed).to.equal(false);
    expect(u.health).to.deep.include({ failingSince: T0 });
    u = recordAttempt(u.health, 'success', T0 + 2 * DAY);
    expect(u).to.deep.equal({ health: { state: 'healthy', lastSuccessAt: T0 + 2 * DAY }, changed: true });
    expect(recordAttempt(u.health, 'success', T0 + 3 * DAY).changed).to.equal(false);
  });

  it('disables after failing for 5 days (default) and reports the change once', () => {
    let h: EndpointHealth = recordAttempt(INITIAL_HEALTH, 'retry', T0).health;
    let u = recordAttempt(h, 'retry', T0 + 5 * DAY - 1);
    expect(u.health.state).to.equal('failing');
    u = recordAttempt(u.health, 'retry', T0 + 5 * DAY);
    expect(u).to.deep.equal({ health: { state: 'disabled', lastSuccessAt: null, disabledAt: T0 + 5 * DAY, reason: 'failing' }, changed: true });
    h = u.health;
    expect(recordAttempt(h, 'success', T0 + 6 * DAY)).to.deep.equal({ health: h, changed: false });
  });

  it('honours a configured disable period and a time-driven check', () => {
    const policy = { ...DEFAULT_RETRY_POLICY, disableAfterS: 3600 };
    const h = recordAttempt(INITIAL_HEALTH, 'retry', T0, policy).health;
    expect(checkHealth(h, T0 + 3599_000, policy).changed).to.equal(false);
    expect(checkHealth(h, T0 + 3600_000, policy).health).to.deep.include({ state: 'disabled', reason: 'failing' });
  });

  it('disables at once on 410 Gone; operators can disable and re-enable', () => {
    const gone = recordAttempt(INITIAL_HEALTH, 'gone', T0);
    expect(gone).to.deep.equal({ health: { state: 'disabled', lastSuccessAt: null, disabledAt: T0, reason: 'gone' }, changed: true });
    const back = enableEndpoint(gone.health);
    expect(back).to.deep.equal({ health: { state: 'healthy', lastSuccessAt: null }, changed: true });
    expect(disableEndpoint(back.health, T0).health).to.deep.include({ state: 'disabled', reason: 'operator' });
    expect(enableEndpoint(back.health).changed).to.equal(false);
  });
});
