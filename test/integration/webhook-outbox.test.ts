/**
 * The outbox SQL (bridge/sinks/webhooks/outbox.ts) conforms to the delivery state machine and the endpoint
 * health rules of retry-policy.ts. Each step is applied to the model (transition, recordAttempt,
 * checkHealth) and run as the production statement on a real PostgreSQL whose schema comes from the
 * migrations; every stored row, projected to the model's shape, must then equal the model's state.
 * Settlements come from Dispatcher.settlementOf, the dispatcher's own mapping of a transition to what
 * Outbox.settle writes. Time is explicit epoch ms throughout: nothing sleeps.
 */
import { expect } from 'chai';
import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { TestPostgres } from '../helpers/postgres.js';
import { PgStore } from '../../bridge/index.js';
import { Dispatcher } from '../../bridge/sinks/webhooks/dispatcher.js';
import { Outbox, type ClaimedDelivery, type HealthChange } from '../../bridge/sinks/webhooks/outbox.js';
import { WebhookStore } from '../../bridge/sinks/webhooks/webhook-store.js';
import { EMPTY_ALLOWLIST } from '../../bridge/sinks/webhooks/ssrf.js';
import {
  INITIAL_HEALTH, checkHealth, classify, newDelivery, recordAttempt, transition,
  type DeliveryEvent, type DeliveryState, type EndpointHealth, type RetryPolicy,
} from '../../bridge/sinks/webhooks/retry-policy.js';
import type { DeliveryErrorClass, DeliveryResult } from '../../bridge/sinks/webhooks/http-client.js';
import { Permissions } from '../../src/core/acl.js';
import { silentLogger } from '../../src/core/log.js';

const T0 = Date.UTC(2026, 0, 15, 10, 0, 0);
const [TIMEOUT_MS, MARGIN_MS, DISABLE_S, SCHEDULE_S] = [2_000, 500, 3_600, [10, 60, 300]];
const LEASE_MS = TIMEOUT_MS + MARGIN_MS;

/** A delivery as stored: the model's fields that have a column ('failed' is settled before it is written). */
type Stored = { status: string; attempts: number; dueAt?: number; startedAt?: number | undefined; reason?: string | null };
interface Hook { id: string; model: Map<string, DeliveryState>; health: EndpointHealth }

function persisted(s: DeliveryState): Stored {
  if (s.status === 'pending') return { status: s.status, attempts: s.attempts, dueAt: s.dueAt };
  if (s.status === 'in_flight') return { status: s.status, attempts: s.attempts, startedAt: s.startedAt };
  if (s.status === 'dead') return { status: s.status, attempts: s.attempts, reason: s.reason };
  if (s.status === 'succeeded') return { status: s.status, attempts: s.attempts };
  throw new Error(`the model left a delivery ${s.status}: it is never stored`);
}

/** Health without disabledAt, which has no column. */
function shape(h: EndpointHealth): Record<string, unknown> {
  return h.state === 'disabled' ? { state: h.state, lastSuccessAt: h.lastSuccessAt, reason: h.reason } : { ...h };
}

const res = (status: number, latencyMs: number, headers: Record<string, string> = {}): DeliveryResult =>
  ({ kind: 'response', status, headers, bodyExcerpt: '', truncated: false, latencyMs });
const err = (errorClass: DeliveryErrorClass, latencyMs: number): DeliveryResult => ({ kind: 'error', errorClass, message: errorClass, latencyMs });

describe('webhook outbox - the SQL conforms to the delivery state machine', function () {
  this.timeout(60_000);
  const pgc = new TestPostgres({ timescale: false });
  let db: PgStore;
  let pool: pg.Pool;
  let outbox: Outbox;
  let store: WebhookStore;
  let dispatcher: Dispatcher;
  let policy: RetryPolicy;
  /** What the dispatcher's clock and jitter draw return while it builds a settlement. */
  let clockAt = T0;
  let draw = 0.5;
  let n = 0;

  before(async () => {
    await pgc.start();
    const url = await pgc.createDatabase('webhook_outbox');
    db = new PgStore({ url, poolSize: 4, statementTimeoutMs: 10_000, timescale: 'off', timescalePolicy: { compressAfterMs: 0, dropAfterMs: null }, log: silentLogger() });
    await db.migrate();
    [pool, outbox, store] = [db.pool, new Outbox(db.pool), new WebhookStore(db.pool)];
    dispatcher = new Dispatcher({
      store: { listActive: async () => [] }, outbox, log: silentLogger(), permissions: () => new Permissions([], []),
      settings: { allowlist: EMPTY_ALLOWLIST, workers: 4, pollIntervalMs: 1000, claimBatch: 10, leaseMarginMs: MARGIN_MS, disableAfterS: DISABLE_S,
        maxQueued: 100, stopGraceMs: 0, refreshIntervalMs: 60_000, retentionS: 86_400, maxResponseBytes: 1024 },
      clock: () => clockAt, random: () => draw,
    });
    policy = dispatcher.policyFor(SCHEDULE_S);
  });
  // Claims see every endpoint: no test may leave due work for the next one.
  afterEach(async () => { await pool?.query('DELETE FROM webhooks'); });
  after(async () => { await db?.close(); await pgc.destroy(); });

  async function hook(over: { ordered?: boolean; maxConcurrency?: number } = {}): Promise<Hook> {
    const id = randomUUID();
    await store.create(id, {
      name: `hook-${id}`, description: null, url: 'https://hooks.example.com/in', events: ['device.online'], headers: {}, isActive: true,
      retry: { scheduleS: SCHEDULE_S, timeoutMs: TIMEOUT_MS }, topics: [], conditions: [], template: null, batch: { maxSize: 1, maxLingerMs: 0 },
      ordered: over.ordered ?? false, maxConcurrency: over.maxConcurrency ?? 4,
    }, [], 'ana', ['admin'], T0);
    return { id, model: new Map(), health: INITIAL_HEALTH };
  }

  /** Applies an event to the model; one it forbids is a test error, unless `lenient` (then it is a no-op). */
  function step(h: Hook, id: string, e: DeliveryEvent, lenient = false): void {
    const r = transition(h.model.get(id) as DeliveryState, e, policy);
    if (r.ok) h.model.set(id, r.state);
    else if (!lenient) throw new Error(`model: '${r.event}' is invalid from ${r.from} (${id})`);
  }

  async function add(h: Hook, at: number): Promise<string> {
    const id = `msg_${++n}`;
    expect(await outbox.insert([{ id, webhookId: h.id, eventType: 'device.online', eventIds: [`evt_${n}`], body: '{}', at }])).to.equal(1);
    h.model.set(id, newDelivery(at));
    return id;
  }

  /** Outbox.claim; each row taken is 'start' in the model, after 'recover' if its lease ran out. */
  async function claim(h: Hook, now: number): Promise<ClaimedDelivery[]> {
    const got = (await outbox.claim(now, 10, MARGIN_MS, TIMEOUT_MS)).filter((c) => c.webhookId === h.id);
    for (const c of got) {
      if (h.model.get(c.id)?.status === 'in_flight') step(h, c.id, { type: 'recover', at: now });
      step(h, c.id, { type: 'start', at: now });
      expect(c.attempt - c.attemptBase, `${c.id}: attempt`).to.equal(h.model.get(c.id)?.attempts);
    }
    return got;
  }

  /**
   * An attempt ended at `at`: the model takes 'result' (and 'reschedule' from failed) unless the result is
   * stale, folds it into health, and takes 'endpoint-disabled' on every delivery once the endpoint is off;
   * Outbox.settle writes the settlement Dispatcher.settlementOf builds from the same time and draw.
   */
  async function settle(h: Hook, c: ClaimedDelivery | undefined, started: number, at: number, result: DeliveryResult, o: { rand?: number; stale?: boolean } = {}): Promise<HealthChange[]> {
    if (c === undefined) throw new Error('nothing was claimed');
    const rand = o.rand ?? 0.5;
    if (o.stale !== true) {
      step(h, c.id, { type: 'result', at, result, rand });
      if (h.model.get(c.id)?.status === 'failed') step(h, c.id, { type: 'reschedule' });
    }
    h.health = recordAttempt(h.health, classify(result), at, policy).health;
    // The endpoint is off: 'endpoint-disabled' goes to every delivery, those it is invalid for keep their state.
    if (h.health.state === 'disabled') for (const id of h.model.keys()) step(h, id, { type: 'endpoint-disabled', at }, true);
    [clockAt, draw] = [at, rand];
    const settlement = dispatcher.settlementOf(c, started, result);
    return outbox.settle([{ deliveryId: c.id, webhookId: h.id, attempt: c.attempt, startedAt: started, result, outcome: classify(result), settlement }],
      dispatcher.policyFor([]));
  }

  /**
   * Every stored delivery of the endpoint, and its health, equal the model. (While an endpoint stays healthy
   * foldHealth writes last_success_at at most once a second: successes here are further apart than that.)
   */
  async function conforms(h: Hook): Promise<void> {
    const { rows } = await pool.query<{ id: string; status: string; attempts: number; next_attempt_at: Date; last_attempt_at: Date | null; dead_reason: string | null }>(
      `SELECT id, status, attempts - attempt_base AS attempts, next_attempt_at, last_attempt_at, dead_reason FROM webhook_deliveries WHERE webhook_id = $1`, [h.id]);
    const stored = Object.fromEntries(rows.map((r): [string, Stored] => [r.id,
      r.status === 'pending' ? { status: r.status, attempts: r.attempts, dueAt: r.next_attempt_at.getTime() }
        : r.status === 'in_flight' ? { status: r.status, attempts: r.attempts, startedAt: r.last_attempt_at?.getTime() }
          : r.status === 'dead' ? { status: r.status, attempts: r.attempts, reason: r.dead_reason } : { status: r.status, attempts: r.attempts }]));
    expect(stored, 'deliveries').to.deep.equal(Object.fromEntries([...h.model].map(([id, s]) => [id, persisted(s)])));
    const w = await store.get(h.id);
    const health = !w?.isActive ? { state: 'disabled', lastSuccessAt: w?.lastSuccessAt, reason: w?.disabledReason }
      : w.failingSince !== null ? { state: 'failing', lastSuccessAt: w.lastSuccessAt, failingSince: w.failingSince } : { state: 'healthy', lastSuccessAt: w.lastSuccessAt };
    expect(health, 'endpoint health').to.deep.equal(shape(h.health));
  }

  const stateOf = (h: Hook, id: string | undefined): Stored => persisted(h.model.get(id as string) as DeliveryState);
  const lease = async (id: string): Promise<number | undefined> =>
    (await pool.query<{ l: Date }>('SELECT locked_until AS l FROM webhook_deliveries WHERE id = $1', [id])).rows[0]?.l.getTime();

  it('insert is pending with 0 attempts due at its time; claim offers it only once due, as attempt 1 leased for timeout + margin', async () => {
    const h = await hook();
    const id = await add(h, T0);
    await conforms(h);
    expect(await claim(h, T0 - 1)).to.deep.equal([]);
    await conforms(h);
    const [c] = await claim(h, T0 + 5);
    expect(c?.id).to.equal(id);
    expect(stateOf(h, id)).to.deep.equal({ status: 'in_flight', attempts: 1, startedAt: T0 + 5 });
    await conforms(h);
    expect(await lease(id)).to.equal(T0 + 5 + LEASE_MS);
  });

  const outcomes: Array<{ name: string; result: DeliveryResult; rand?: number; expected: Stored }> = [
    { name: 'a 204', result: res(204, 100), expected: { status: 'succeeded', attempts: 1 } },
    { name: 'a 500 with the lowest jitter draw', result: res(500, 100), rand: 0, expected: { status: 'pending', attempts: 1, dueAt: T0 + 100 + 8_000 } },
    { name: 'a 500 with a high jitter draw', result: res(500, 100), rand: 0.999, expected: { status: 'pending', attempts: 1, dueAt: T0 + 100 + 11_996 } },
    { name: 'a 429 (overload penalty)', result: res(429, 100), expected: { status: 'pending', attempts: 1, dueAt: T0 + 100 + 60_000 } },
    { name: 'a 503 with Retry-After: 120', result: res(503, 100, { 'retry-after': '120' }), expected: { status: 'pending', attempts: 1, dueAt: T0 + 100 + 120_000 } },
    { name: 'a timeout', result: err('timeout', 100), expected: { status: 'pending', attempts: 1, dueAt: T0 + 100 + 60_000 } },
    { name: 'an invalid URL', result: err('invalid-url', 100), expected: { status: 'dead', attempts: 1, reason: 'fail' } },
    { name: 'a 410 Gone', result: res(410, 100), expected: { status: 'dead', attempts: 1, reason: 'gone' } },
  ];
  for (const o of outcomes) {
    it(`settles ${o.name} as the model does: ${o.expected.status}${o.expected.reason ? ` '${o.expected.reason}'` : ''}`, async () => {
      const h = await hook();
      const id = await add(h, T0);
      const [c] = await claim(h, T0);
      await settle(h, c, T0, T0 + 100, o.result, { rand: o.rand ?? 0.5 });
      expect(stateOf(h, id)).to.deep.equal(o.expected);
      await conforms(h);
      const { rows } = await pool.query<{ next: Date | null }>('SELECT next_retry_at AS next FROM webhook_attempts WHERE delivery_id = $1 AND attempt = 1', [id]);
      expect(rows[0]?.next?.getTime()).to.equal(o.expected.dueAt);
    });
  }

  it('walks the whole schedule, never claimed a millisecond early, and ends dead \'schedule\' after 1 + scheduleS.length attempts', async () => {
    const h = await hook();
    const id = await add(h, T0);
    let due = T0;
    for (let i = 1; i <= SCHEDULE_S.length + 1; i++) {
      expect(await claim(h, due - 1), `attempt ${i} early`).to.deep.equal([]);
      const [c] = await claim(h, due);
      expect(c?.attempt).to.equal(i);
      await settle(h, c, due, due + 50, res(500, 50), { rand: i / 5 });
      await conforms(h);
      const s = h.model.get(id) as DeliveryState;
      if (s.status === 'pending') due = s.dueAt;
    }
    expect(stateOf(h, id)).to.deep.equal({ status: 'dead', attempts: SCHEDULE_S.length + 1, reason: 'schedule' });
  });

  it('410 disables the endpoint: its queued deliveries die \'endpoint-disabled\', one in flight dies so when it fails, a succeeded one stays', async () => {
    const h = await hook({ maxConcurrency: 2 });
    const [a, b, c, d] = [await add(h, T0), await add(h, T0 + 1), await add(h, T0 + 2), await add(h, T0 + 3)];
    const first = await claim(h, T0 + 10);
    expect(first.map((x) => x.id)).to.deep.equal([a, b]);
    await settle(h, first[0], T0 + 10, T0 + 100, res(200, 90));
    const [cc] = await claim(h, T0 + 200);
    expect(cc?.id).to.equal(c);
    const changes = await settle(h, cc, T0 + 200, T0 + 300, res(410, 100));
    expect(changes).to.deep.equal([{ webhookId: h.id, webhookName: `hook-${h.id}`, health: h.health }]);
    expect(h.health).to.include({ state: 'disabled', reason: 'gone' });
    expect(stateOf(h, d)).to.deep.equal({ status: 'dead', attempts: 0, reason: 'endpoint-disabled' });
    expect(h.model.get(b as string)?.status, 'in flight: endpoint-disabled is invalid').to.equal('in_flight');
    await conforms(h);
    await settle(h, first[1], T0 + 10, T0 + 400, res(500, 390));
    expect(stateOf(h, b)).to.deep.equal({ status: 'dead', attempts: 1, reason: 'endpoint-disabled' });
    await conforms(h);
    expect(await claim(h, T0 + 86_400_000)).to.deep.equal([]);
  });

  it('an expired lease is claimed again as the next attempt (recover, start); a late result of the old attempt is fenced off', async () => {
    const h = await hook();
    const id = await add(h, T0);
    const [c1] = await claim(h, T0);
    expect(await claim(h, T0 + LEASE_MS - 1), 'lease still running').to.deep.equal([]);
    const [c2] = await claim(h, T0 + LEASE_MS);
    expect(c2?.attempt).to.equal(2);
    expect(stateOf(h, id)).to.deep.equal({ status: 'in_flight', attempts: 2, startedAt: T0 + LEASE_MS });
    expect(await lease(id)).to.equal(T0 + 2 * LEASE_MS);
    // The old attempt did reach the receiver, so health counts it; the delivery is attempt 2's.
    await settle(h, c1, T0, T0 + LEASE_MS + 100, res(200, LEASE_MS + 100), { stale: true });
    await conforms(h);
    await settle(h, c2, T0 + LEASE_MS, T0 + 10_000, res(200, 10_000 - LEASE_MS));
    expect(stateOf(h, id)).to.deep.equal({ status: 'succeeded', attempts: 2 });
    await conforms(h);
  });

  it('an ordered endpoint offers only its head, through the head\'s retries, and the next delivery once the head is settled', async () => {
    const h = await hook({ ordered: true });
    const [a, b] = [await add(h, T0), await add(h, T0 + 1), await add(h, T0 + 2)];
    const [c1, ...more] = await claim(h, T0 + 10);
    expect([c1?.id, more]).to.deep.equal([a, []]);
    await settle(h, c1, T0 + 10, T0 + 100, res(500, 90));
    await conforms(h);
    const due = stateOf(h, a).dueAt as number;
    expect(await claim(h, due - 1), 'the others are due, the head is not').to.deep.equal([]);
    const [c2, ...more2] = await claim(h, due);
    expect([c2?.id, c2?.attempt, more2]).to.deep.equal([a, 2, []]);
    await settle(h, c2, due, due + 100, res(200, 100));
    expect((await claim(h, due + 200)).map((x) => x.id)).to.deep.equal([b]);
    await conforms(h);
  });

  it('an unordered endpoint keeps at most max_concurrency under a live lease; a settled or expired one frees its slot', async () => {
    const h = await hook({ maxConcurrency: 2 });
    const [a, b, c] = [await add(h, T0), await add(h, T0 + 1), await add(h, T0 + 2)];
    const first = await claim(h, T0 + 10);
    expect(first.map((x) => x.id)).to.deep.equal([a, b]);
    expect(await claim(h, T0 + 20), 'both slots taken').to.deep.equal([]);
    await settle(h, first[0], T0 + 10, T0 + 100, res(200, 90));
    expect((await claim(h, T0 + 200)).map((x) => x.id)).to.deep.equal([c]);
    await conforms(h);
    // b's lease ran out (c's has not): b is taken again as attempt 2, c still counts.
    const again = await claim(h, T0 + 10 + LEASE_MS);
    expect(again.map((x) => [x.id, x.attempt])).to.deep.equal([[b, 2]]);
    await conforms(h);
  });

  const invalid: Array<{ name: string; reach: 'retrying' | 'succeeded' | 'dead'; event: DeliveryEvent }> = [
    { name: 'a result on a pending retry', reach: 'retrying', event: { type: 'result', at: T0 + 5_000, result: res(200, 5_000), rand: 0.5 } },
    { name: 'a second result on a succeeded delivery', reach: 'succeeded', event: { type: 'result', at: T0 + 5_000, result: res(500, 5_000), rand: 0.5 } },
    { name: 'a result on a dead delivery', reach: 'dead', event: { type: 'result', at: T0 + 5_000, result: res(200, 5_000), rand: 0.5 } },
    { name: 'a start on a succeeded delivery', reach: 'succeeded', event: { type: 'start', at: T0 + 86_400_000 } },
    { name: 'a start on a dead delivery', reach: 'dead', event: { type: 'start', at: T0 + 86_400_000 } },
  ];
  for (const x of invalid) {
    it(`${x.name} is invalid in the model and changes no row in SQL`, async () => {
      const h = await hook();
      const id = await add(h, T0);
      const [c] = await claim(h, T0);
      await settle(h, c, T0, T0 + 100, x.reach === 'retrying' ? res(500, 100) : x.reach === 'succeeded' ? res(200, 100) : err('invalid-url', 100));
      expect(transition(h.model.get(id) as DeliveryState, x.event, policy)).to.deep.include({ ok: false });
      if (x.event.type === 'start') expect(await claim(h, x.event.at)).to.deep.equal([]);
      if (x.event.type === 'result') await settle(h, c, T0, x.event.at, x.event.result, { stale: true });
      await conforms(h);
    });
  }

  it('settle folds recordAttempt into health: failing from the first failure, healthy after a success, disabled after disableAfterS', async () => {
    const h = await hook();
    const a = await add(h, T0);
    const [c1] = await claim(h, T0);
    await settle(h, c1, T0, T0 + 100, res(500, 100));
    expect(h.health).to.deep.equal({ state: 'failing', lastSuccessAt: null, failingSince: T0 + 100 });
    await conforms(h);
    const due = stateOf(h, a).dueAt as number;
    const [c2] = await claim(h, due);
    await settle(h, c2, due, due + 100, res(200, 100));
    expect(h.health).to.deep.equal({ state: 'healthy', lastSuccessAt: due + 100 });
    await conforms(h);
    const x = due + 10_000;
    await Promise.all([add(h, x), add(h, x)]);
    const [b, c] = await claim(h, x);
    await settle(h, b, x, x + 1, res(502, 1));
    await conforms(h);
    const changes = await settle(h, c, x, x + 1 + DISABLE_S * 1000, res(502, 1 + DISABLE_S * 1000));
    expect(h.health).to.include({ state: 'disabled', reason: 'failing' });
    expect(changes.map((ch) => ch.health)).to.deep.equal([h.health]);
    await conforms(h);
  });

  it('a delivery left in flight to an endpoint disabled meanwhile is recovered and dead once its lease runs out, as the model says', async () => {
    const h = await hook();
    const inFlight = await add(h, T0);
    const queued = await add(h, T0 + 10);
    const [c] = await claim(h, T0);
    expect(c?.id).to.equal(inFlight);
    // An operator disables the endpoint; its worker crashed with the first delivery in flight.
    const w = await store.get(h.id);
    await pool.query(`UPDATE webhooks SET is_active = false, disabled_reason = 'operator' WHERE id = $1`, [h.id]);
    await pool.query(`UPDATE webhook_deliveries SET status = 'dead', dead_reason = 'endpoint-disabled' WHERE webhook_id = $1 AND status = 'pending'`, [h.id]);
    h.health = { state: 'disabled', lastSuccessAt: w?.lastSuccessAt ?? null, disabledAt: T0, reason: 'operator' };
    step(h, queued, { type: 'endpoint-disabled', at: T0 });
    const expiry = (await lease(inFlight)) as number;
    expect(await outbox.settleAbandoned(expiry - 1), 'not while the lease runs').to.equal(0);
    await conforms(h);
    expect(await outbox.settleAbandoned(expiry)).to.equal(1);
    step(h, inFlight, { type: 'recover', at: expiry });
    step(h, inFlight, { type: 'endpoint-disabled', at: expiry });
    await conforms(h);
    expect(await outbox.claim(expiry + 60_000, 10, MARGIN_MS, TIMEOUT_MS), 'nothing left to send').to.deep.equal([]);
  });

  for (const offset of [-1, 0]) {
    it(`disableExpired at failing_since + disableAfterS ${offset < 0 ? '- 1 ms keeps' : 'disables'} the endpoint as checkHealth does, and kills its queued work with it`, async () => {
      const h = await hook();
      await add(h, T0);
      const [c] = await claim(h, T0);
      await settle(h, c, T0, T0 + 100, res(500, 100));
      const now = T0 + 100 + DISABLE_S * 1000 + offset;
      const model = checkHealth(h.health, now, policy);
      h.health = model.health;
      if (h.health.state === 'disabled') for (const id of h.model.keys()) step(h, id, { type: 'endpoint-disabled', at: now }, true);
      const changes = await outbox.disableExpired(now, policy);
      expect(changes.map((ch) => ch.health)).to.deep.equal(model.changed ? [model.health] : []);
      expect(h.health.state).to.equal(offset < 0 ? 'failing' : 'disabled');
      await conforms(h);
    });
  }

  it('replayOne restarts the schedule: the replayed delivery is new in the model, and its next failure waits scheduleS[0]', async () => {
    const h = await hook();
    const id = await add(h, T0);
    const [c1] = await claim(h, T0);
    await settle(h, c1, T0, T0 + 100, err('invalid-url', 100));
    expect(await outbox.replayOne(h.id, id, T0 + 5_000)).to.equal('replayed');
    h.model.set(id, newDelivery(T0 + 5_000));
    await conforms(h);
    const [c2] = await claim(h, T0 + 5_000);
    expect([c2?.attempt, c2?.attemptBase]).to.deep.equal([2, 1]);
    await settle(h, c2, T0 + 5_000, T0 + 5_100, res(500, 100));
    expect(stateOf(h, id)).to.deep.equal({ status: 'pending', attempts: 1, dueAt: T0 + 5_100 + SCHEDULE_S[0]! * 1000 });
    await conforms(h);
  });
});
