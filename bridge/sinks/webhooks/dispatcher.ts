/**
 * From events to HTTP attempts:
 *
 *   accept(event) ─match─> [sensor.reading: linger per endpoint ≤ max_linger_ms / max_size]
 *                 ─render─> insert queue ─(one multi-row INSERT at a time)─> webhook_deliveries (durable)
 *   workers: claim due rows (outbox.ts: SKIP LOCKED, leases, per-endpoint concurrency, ordered heads)
 *         ─> deliver() (http-client.ts: SSRF guard, no redirects, one time budget)
 *         ─> retry-policy.ts state machine ─> settle queue ─(one transaction per batch)─> attempts, states, health
 *
 * accept() runs on the ingest path: it matches and renders in memory and never awaits or throws: it runs on the per-message path.
 * An event is durable once its row commits; until then it is in memory: at most max_linger_ms of
 * sensor.reading plus one insert round trip. While the database is unreachable the queue is bounded
 * (maxQueued, oldest dropped and counted). Time, randomness and timers are injected, so tests use fake clocks.
 */
import { randomBytes as nodeRandomBytes } from 'node:crypto';
import type { Logger } from '../../../src/core/index.js';
import type { Permissions } from '../../../src/core/index.js';
import { eventId, type EventType, type UnsEvent } from '../../../src/core/index.js';
import { deliver as httpDeliver, type DeliveryRequest, type DeliveryOptions, type DeliveryResult } from './http-client.js';
import type { Allowlist } from './ssrf.js';
import { signSimple, signStandard } from './signing.js';
import { classify, transition, DEFAULT_RETRY_POLICY, type DeliveryState, type RetryPolicy } from './retry-policy.js';
import { compileMatcher, resolveField, type EventMatcher } from './matcher.js';
import { compileTemplate, jsonText, type CompiledTemplate } from './template.js';
import { activeSecrets, type WebhookRecord, type WebhookStore } from './webhook-store.js';
import type { AttemptOutcome, ClaimedDelivery, HealthChange, NewDelivery, Outbox, Settlement } from './outbox.js';
import { DEFAULTS } from './webhook-config.js';
import { SerialDrainer } from './serial-drainer.js';

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const realTimers: Timers = {
  setTimeout: (fn, ms) => { const t = setTimeout(fn, ms); t.unref(); return t; },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export interface DispatcherSettings {
  readonly allowlist: Allowlist;
  readonly workers: number;
  readonly pollIntervalMs: number;
  readonly claimBatch: number;
  readonly leaseMarginMs: number;
  readonly disableAfterS: number;
  readonly maxQueued: number;
  readonly stopGraceMs: number;
  readonly refreshIntervalMs: number;
  readonly retentionS: number;
  readonly maxResponseBytes: number;
}

/** Time, randomness and the network, injected so tests can use fake clocks and receivers. */
export interface Injections {
  /** Epoch ms. */
  readonly clock?: () => number;
  /** Jitter draws in [0, 1). */
  readonly random?: () => number;
  /** Delivery ids. */
  readonly randomBytes?: (n: number) => Buffer;
  readonly timers?: Timers;
  readonly deliver?: (req: DeliveryRequest, opts: DeliveryOptions) => Promise<DeliveryResult>;
}

export interface DispatcherOptions extends Injections {
  readonly store: Pick<WebhookStore, 'listActive'>;
  readonly outbox: Outbox;
  readonly permissions: (roles: readonly string[]) => Permissions;
  readonly settings: DispatcherSettings;
  readonly log: Logger;
  /** An endpoint was disabled (410, or failing for the disable period). */
  readonly onHealthChange?: (change: HealthChange) => void;
}

export interface DispatcherStats {
  matched: number;
  queued: number;
  inserted: number;
  dropped: number;
  attempts: number;
  succeeded: number;
  failed: number;
  /** Deliveries that ended dead (no retry left, 410, unsendable): the dead letters. */
  dead: number;
  inFlight: number;
  lingering: number;
  dbErrors: number;
}

interface Endpoint {
  readonly rec: WebhookRecord;
  readonly matcher: EventMatcher;
  readonly template: CompiledTemplate | null;
}

interface Linger {
  readonly events: UnsEvent[];
  timer: unknown;
}

export interface SentAttempt {
  readonly deliveryId: string;
  readonly headers: Record<string, string>;
  readonly body: string;
  readonly result: DeliveryResult;
}

const USER_AGENT = 'uns-bridge-webhooks/0.1';
const INSERT_CHUNK = 1_000;
const SETTLE_CHUNK = 1_000;
const RETRY_DB_MS = 1_000;
/** The same database failure is logged as a warning at most this often. */
const DB_WARN_EVERY_MS = 60_000;
const MAINTENANCE_MS = 60_000;


export class Dispatcher {
  readonly stats: DispatcherStats = { matched: 0, queued: 0, inserted: 0, dropped: 0, attempts: 0, succeeded: 0, failed: 0, dead: 0, inFlight: 0, lingering: 0, dbErrors: 0 };
  private readonly clock: () => number;
  private readonly random: () => number;
  private readonly randomBytes: (n: number) => Buffer;
  private readonly timers: Timers;
  private readonly send: (req: DeliveryRequest, opts: DeliveryOptions) => Promise<DeliveryResult>;
  private readonly s: DispatcherSettings;
  private readonly log: Logger;

  private endpoints = new Map<string, Endpoint>();
  private byType = new Map<EventType, Endpoint[]>();
  private readonly lingers = new Map<string, Linger>();
  /** Deliveries on their way into the outbox (durable insert, one statement in flight: seq follows queue order). */
  private readonly dbWarned = new Map<string, { at: number; suppressed: number }>();
  private readonly inserts: SerialDrainer<NewDelivery>;
  /** Attempt results on their way into the outbox. */
  private readonly results: SerialDrainer<AttemptOutcome>;

  private running = false;
  /** stop() has finished: late results are not written (their leases expire and the rows are re-sent). */
  private closed = false;
  private claiming = false;
  private again = false;
  private kickTimer: unknown = null;
  private pollTimer: unknown = null;
  private refreshTimer: unknown = null;
  private lastMaintenance = 0;
  private lastDropLog = 0;
  private readonly idle: Array<() => void> = [];

  constructor(private readonly opts: DispatcherOptions) {
    this.clock = opts.clock ?? Date.now;
    this.random = opts.random ?? Math.random;
    this.randomBytes = opts.randomBytes ?? nodeRandomBytes;
    this.timers = opts.timers ?? realTimers;
    this.send = opts.deliver ?? httpDeliver;
    this.s = opts.settings;
    this.log = opts.log;
    const live = (): boolean => this.running;
    this.inserts = new SerialDrainer<NewDelivery>({
      chunk: INSERT_CHUNK, retryMs: RETRY_DB_MS, timers: this.timers, live,
      write: async (rows) => {
        await this.opts.outbox.insert(rows);
        this.stats.inserted += rows.length;
        this.kick();
      },
      dropped: (rows, e) => {
        // The same rows would fail again and hold up everything behind them.
        this.stats.dropped += rows.length;
        this.log.error({ err: (e as Error).message, dropped: rows.length }, 'webhook deliveries refused by the database; dropped');
      },
      failed: (_rows, e) => {
        this.bound();
        this.dbError(e, 'webhook deliveries not inserted; retrying');
      },
    });
    this.results = new SerialDrainer<AttemptOutcome>({
      chunk: SETTLE_CHUNK, retryMs: RETRY_DB_MS, timers: this.timers, live,
      write: async (batch) => {
        this.announce(await this.opts.outbox.settle(batch, this.policyFor([])));
        this.kick();
      },
      // Not written; the leases expire and the deliveries are sent again (at-least-once).
      dropped: (batch, e) => this.log.error({ err: (e as Error).message, results: batch.length }, 'webhook attempt results refused by the database; dropped'),
      // Results stay in memory (bounded by the workers); if the process dies first, the leases expire and the
      // deliveries are attempted again with the same webhook-id.
      failed: (_batch, e) => this.dbError(e, 'webhook attempt results not written; retrying'),
    });
  }

  // ------------------------------------------------------------------------------------------------------
  // Life cycle

  /** Loads the endpoints and starts the workers. A database that is down is retried, not thrown. */
  async start(): Promise<void> {
    this.running = true;
    this.closed = false;
    await this.refresh();
    this.scheduleRefresh();
    this.kick();
  }

  /**
   * Stops claiming, makes what is queued durable (lingering batches are sealed and inserted), gives attempts
   * under way stopGraceMs to finish and settles them. Rows still in flight after that keep their lease and
   * are retried by whichever instance runs next.
   */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    for (const t of [this.pollTimer, this.refreshTimer, this.kickTimer]) if (t !== null) this.timers.clearTimeout(t);
    this.pollTimer = this.refreshTimer = this.kickTimer = null;
    for (const id of [...this.lingers.keys()]) this.seal(id);
    // Let a flush or a claim under way finish (its attempts are then covered by the grace period below).
    while (this.claiming) await new Promise((r) => setImmediate(r));
    await this.inserts.flushNow();
    const lost = this.inserts.items.length;
    if (lost > 0) this.log.warn({ lost }, 'webhook deliveries not made durable before stop (database unreachable)');
    if (this.stats.inFlight > 0) {
      await new Promise<void>((resolve) => {
        const t = this.timers.setTimeout(resolve, this.s.stopGraceMs);
        this.idle.push(() => { this.timers.clearTimeout(t); resolve(); });
      });
    }
    await this.results.flushNow();
    this.closed = true;
  }

  /** Re-reads the endpoints (after an API change, and periodically for changes made elsewhere). */
  async refresh(): Promise<void> {
    let recs: WebhookRecord[];
    try {
      recs = await this.opts.store.listActive();
    } catch (e) {
      this.dbError(e, 'webhook endpoints not loaded');
      return;
    }
    const endpoints = new Map<string, Endpoint>();
    const byType = new Map<EventType, Endpoint[]>();
    for (const rec of recs) {
      const ep = this.compile(rec);
      if (ep === undefined) continue;
      endpoints.set(rec.id, ep);
      for (const t of ep.matcher.events) {
        let list = byType.get(t);
        if (!list) byType.set(t, (list = []));
        list.push(ep);
      }
    }
    // Batches of endpoints that went away are dropped: their rows would be refused by the insert anyway.
    for (const [id, l] of this.lingers) {
      if (endpoints.has(id)) continue;
      if (l.timer !== null) this.timers.clearTimeout(l.timer);
      this.stats.lingering -= l.events.length;
      this.lingers.delete(id);
    }
    this.endpoints = endpoints;
    this.byType = byType;
  }

  compile(rec: WebhookRecord): Endpoint | undefined {
    try {
      let template: CompiledTemplate | null = null;
      if (rec.template !== null) {
        const t = compileTemplate(rec.template);
        if (!t.ok) { this.log.warn({ webhook: rec.id, reason: t.message }, 'stored template does not compile; endpoint skipped'); return undefined; }
        template = t.template;
      }
      return { rec, template, matcher: compileMatcher(rec, this.opts.permissions(rec.roles)) };
    } catch (e) {
      this.log.warn({ webhook: rec.id, err: (e as Error).message }, 'endpoint skipped');
      return undefined;
    }
  }

  /** Any active endpoint takes this event type (lets producers skip building events nobody wants). */
  wants(type: EventType): boolean {
    return (this.byType.get(type)?.length ?? 0) > 0;
  }

  // ------------------------------------------------------------------------------------------------------
  // Events in: match, batch, render, queue. Never throws, never awaits.

  accept(e: UnsEvent): void {
    if (!this.running) return;
    const list = this.byType.get(e.type);
    if (list === undefined) return;
    for (const ep of list) {
      try {
        if (!ep.matcher.matches(e)) continue;
        this.stats.matched++;
        if (e.type === 'sensor.reading') this.linger(ep, e);
        else this.enqueue(this.single(ep, e, this.clock()));
      } catch (err) {
        this.log.warn({ webhook: ep.rec.id, event: e.id, err: (err as Error).message }, 'event not queued');
      }
    }
  }

  private linger(ep: Endpoint, e: UnsEvent): void {
    const { maxSize, maxLingerMs } = ep.rec.batch;
    let l = this.lingers.get(ep.rec.id);
    if (l === undefined) {
      l = { events: [], timer: null };
      this.lingers.set(ep.rec.id, l);
    }
    l.events.push(e);
    this.stats.lingering++;
    if (l.events.length >= maxSize) { this.seal(ep.rec.id); return; }
    if (l.timer === null) {
      const id = ep.rec.id;
      l.timer = this.timers.setTimeout(() => this.seal(id), maxLingerMs);
    }
  }

  private seal(endpointId: string): void {
    const l = this.lingers.get(endpointId);
    if (l === undefined) return;
    this.lingers.delete(endpointId);
    if (l.timer !== null) this.timers.clearTimeout(l.timer);
    this.stats.lingering -= l.events.length;
    const ep = this.endpoints.get(endpointId);
    if (ep === undefined || l.events.length === 0) return;
    try {
      this.enqueue(this.batch(ep, l.events, this.clock()));
    } catch (err) {
      this.log.warn({ webhook: endpointId, err: (err as Error).message }, 'batch not queued');
    }
  }

  newDeliveryId(now: number): string {
    // Time first, so ids sort roughly by creation; 80 random bits make collisions moot.
    return `msg_${Math.max(0, Math.floor(now)).toString(36).padStart(9, '0')}${this.randomBytes(10).toString('hex')}`;
  }

  /** One event, one delivery: the template's rendering, or the envelope. */
  single(ep: Endpoint, e: UnsEvent, now: number): NewDelivery {
    const body = ep.template !== null
      ? ep.template.render((p) => resolveField(e, p, ep.rec))
      : `{"id":${jsonText(e.id)},"type":${jsonText(e.type)},"timestamp":${jsonText(new Date(e.occurredAt).toISOString())}${
        e.topic !== undefined ? `,"topic":${jsonText(e.topic)}` : ''},"data":${jsonText(e.data)}}`;
    return { id: this.newDeliveryId(now), webhookId: ep.rec.id, eventType: e.type, eventIds: [e.id], body, at: now };
  }

  /** sensor.reading: `data.readings[]`; with a template, an array of renderings (one object if max_size is 1). */
  batch(ep: Endpoint, events: readonly UnsEvent[], now: number): NewDelivery {
    const id = this.newDeliveryId(now);
    let body: string;
    if (ep.template !== null) {
      const t = ep.template;
      const parts = events.map((e) => t.render((p) => resolveField(e, p, ep.rec)));
      body = ep.rec.batch.maxSize <= 1 && parts.length === 1 ? (parts[0] as string) : `[${parts.join(',')}]`;
    } else {
      const readings = events.map((e) => {
        const d = e.data;
        const ts = typeof d['timestamp'] === 'number' ? (d['timestamp'] as number) : e.occurredAt;
        return `{"event_id":${jsonText(e.id)},"topic":${jsonText(e.topic ?? null)},"value":${jsonText(d['value'])},"timestamp":${jsonText(new Date(ts).toISOString())},"quality":${jsonText(d['quality'] ?? 'good')}${
          typeof d['unit'] === 'string' ? `,"unit":${jsonText(d['unit'])}` : ''}}`;
      });
      body = `{"id":${jsonText(id)},"type":"sensor.reading","timestamp":${jsonText(new Date(now).toISOString())},"data":{"readings":[${readings.join(',')}]}}`;
    }
    return { id, webhookId: ep.rec.id, eventType: 'sensor.reading', eventIds: events.map((e) => e.id), body, at: now };
  }

  private enqueue(row: NewDelivery): void {
    this.inserts.items.push(row);
    this.stats.queued++;
    this.bound();
    this.inserts.schedule(0);
  }

  /** Overflow policy while the database is away: drop the oldest rows, count them, say so (rate-limited). */
  private bound(): void {
    const over = this.inserts.items.length - this.s.maxQueued;
    if (over <= 0) return;
    this.inserts.items.splice(0, over);
    this.stats.dropped += over;
    const now = this.clock();
    if (now - this.lastDropLog > 10_000) {
      this.lastDropLog = now;
      this.log.warn({ dropped: this.stats.dropped, maxQueued: this.s.maxQueued }, 'webhook outbox queue full: oldest deliveries dropped');
    }
  }

  // ------------------------------------------------------------------------------------------------------
  // Workers

  /** Claim soon: something was inserted, settled or freed. */
  kick(): void {
    if (!this.running) return;
    if (this.claiming) { this.again = true; return; }
    if (this.kickTimer !== null) return;
    this.kickTimer = this.timers.setTimeout(() => {
      this.kickTimer = null;
      void this.pump();
    }, 0);
  }

  private async pump(): Promise<void> {
    if (!this.running || this.claiming) return;
    this.claiming = true;
    try {
      do {
        this.again = false;
        const free = Math.min(this.s.claimBatch, this.s.workers - this.stats.inFlight);
        if (free <= 0) break;
        let rows: ClaimedDelivery[];
        try {
          rows = await this.opts.outbox.claim(this.clock(), free, this.s.leaseMarginMs, DEFAULTS.timeoutMs);
        } catch (e) {
          this.dbError(e, 'webhook claim failed');
          break;
        }
        for (const r of rows) this.attempt(r);
        if (rows.length === free) this.again = true;
      } while (this.again && this.running);
    } finally {
      this.claiming = false;
    }
    if (!this.running) return;
    if (this.pollTimer !== null) this.timers.clearTimeout(this.pollTimer);
    this.pollTimer = this.timers.setTimeout(() => {
      this.pollTimer = null;
      void this.pump();
    }, this.s.pollIntervalMs);
  }

  /** Standard Webhooks headers with every current secret, plus X-Webhook-Signature with the newest. */
  signedHeaders(deliveryId: string, custom: Readonly<Record<string, string>>, secrets: readonly string[], now: number, body: Buffer): Record<string, string> {
    const headers: Record<string, string> = {};
    if (!Object.keys(custom).some((k) => k.toLowerCase() === 'user-agent')) headers['user-agent'] = USER_AGENT;
    Object.assign(headers, custom);
    headers['content-type'] = 'application/json';
    const newest = secrets[0];
    if (newest !== undefined) {
      Object.assign(headers, signStandard(secrets, deliveryId, Math.floor(now / 1000), body));
      headers['x-webhook-signature'] = signSimple(newest, body);
    } else {
      headers['webhook-id'] = deliveryId;
      headers['webhook-timestamp'] = String(Math.floor(now / 1000));
    }
    return headers;
  }

  private attempt(row: ClaimedDelivery): void {
    this.stats.inFlight++;
    this.stats.attempts++;
    const started = this.clock();
    const body = Buffer.from(row.body, 'utf8');
    const headers = this.signedHeaders(row.id, row.headers, activeSecrets(row.secrets, started), started, body);
    const req: DeliveryRequest = { url: row.url, method: 'POST', headers, body, timeoutMs: row.timeoutMs, maxResponseBytes: this.s.maxResponseBytes };
    this.send(req, { allowlist: this.s.allowlist })
      .catch((e: unknown): DeliveryResult => ({ kind: 'error', errorClass: 'invalid-request', message: (e as Error).message, latencyMs: 0 }))
      .then((result) => {
        this.stats.inFlight--;
        this.finish(row, started, result);
        if (this.stats.inFlight === 0) for (const f of this.idle.splice(0)) f();
        this.kick();
      })
      .catch((e: unknown) => this.log.error({ err: (e as Error).message }, 'webhook attempt bookkeeping failed'));
  }

  policyFor(scheduleS: readonly number[]): RetryPolicy {
    return { ...DEFAULT_RETRY_POLICY, scheduleS, disableAfterS: this.s.disableAfterS };
  }

  /** Runs the attempt's result through the delivery state machine (retry-policy.ts). */
  settlementOf(row: Pick<ClaimedDelivery, 'attempt' | 'attemptBase' | 'scheduleS'>, started: number, result: DeliveryResult): Settlement {
    const policy = this.policyFor(row.scheduleS);
    const inFlight: DeliveryState = { status: 'in_flight', attempts: row.attempt - row.attemptBase, startedAt: started };
    const r = transition(inFlight, { type: 'result', at: this.clock(), result, rand: this.random() }, policy);
    if (!r.ok) return { status: 'dead', reason: 'fail' };
    if (r.state.status === 'succeeded') return { status: 'succeeded' };
    const next = transition(r.state, { type: 'reschedule' }, policy);
    if (!next.ok) return { status: 'dead', reason: 'fail' };
    if (next.state.status === 'pending') return { status: 'pending', dueAt: next.state.dueAt };
    if (next.state.status === 'dead') return { status: 'dead', reason: next.state.reason };
    return { status: 'dead', reason: 'fail' };
  }

  private finish(row: ClaimedDelivery, started: number, result: DeliveryResult): void {
    if (this.closed) { this.log.debug({ delivery: row.id }, 'attempt ended after stop; its lease will expire'); return; }
    const outcome = classify(result);
    if (outcome === 'success') this.stats.succeeded++;
    else this.stats.failed++;
    const settlement = this.settlementOf(row, started, result);
    if (settlement.status === 'dead') this.stats.dead++;
    if (outcome !== 'success') {
      this.log.warn({
        webhook: row.webhookName, delivery: row.id, attempt: row.attempt,
        status: result.kind === 'response' ? result.status : null, error: result.kind === 'error' ? result.errorClass : null,
        next: settlement.status === 'pending' ? new Date(settlement.dueAt).toISOString() : settlement.status === 'dead' ? `dead (${settlement.reason})` : null,
      }, 'webhook attempt failed');
    }
    this.results.push({ deliveryId: row.id, webhookId: row.webhookId, attempt: row.attempt, startedAt: started, result, outcome, settlement });
  }


  private announce(changes: readonly HealthChange[]): void {
    if (changes.length === 0) return;
    for (const c of changes) {
      this.log.warn({ webhook: c.webhookId, state: c.health.state, reason: c.health.state === 'disabled' ? c.health.reason : null }, 'webhook endpoint disabled');
      try { this.opts.onHealthChange?.(c); } catch { /* a listener must not break settling */ }
    }
    void this.refresh();
  }

  // ------------------------------------------------------------------------------------------------------
  // Synchronous test send (POST /webhooks/{id}/test): logged like any delivery, one attempt, no retry.

  async sendTest(rec: WebhookRecord, data: Readonly<Record<string, unknown>>): Promise<SentAttempt> {
    const ep = this.compile(rec) ?? { rec, template: null, matcher: compileMatcher(rec, this.opts.permissions(rec.roles)) };
    const now = this.clock();
    const event: UnsEvent = { id: eventId(now), type: 'webhook.test', occurredAt: now, data };
    const row = this.single(ep, event, now);
    await this.opts.outbox.insertClaimed(row, rec.retry.timeoutMs + this.s.leaseMarginMs);
    const body = Buffer.from(row.body, 'utf8');
    const headers = this.signedHeaders(row.id, rec.headers, activeSecrets(rec.secrets, now), now, body);
    const result = await this.send({ url: rec.url, method: 'POST', headers, body, timeoutMs: rec.retry.timeoutMs, maxResponseBytes: this.s.maxResponseBytes }, { allowlist: this.s.allowlist });
    // One attempt, no retry (an empty schedule), through the state machine like any other: it is a real
    // attempt, so it moves the endpoint's health too (a 410 disables it, a success sets last_success_at).
    const announced = await this.opts.outbox.settle([{
      deliveryId: row.id, webhookId: rec.id, attempt: 1, startedAt: now, result, outcome: classify(result),
      settlement: this.settlementOf({ attempt: 1, attemptBase: 0, scheduleS: [] }, now, result),
    }], this.policyFor([]));
    this.announce(announced);
    return { deliveryId: row.id, headers, body: row.body, result };
  }

  // ------------------------------------------------------------------------------------------------------
  // Housekeeping

  private scheduleRefresh(): void {
    if (!this.running) return;
    this.refreshTimer = this.timers.setTimeout(() => {
      this.refreshTimer = null;
      void this.maintain().finally(() => this.scheduleRefresh());
    }, this.s.refreshIntervalMs);
  }

  private async maintain(): Promise<void> {
    await this.refresh();
    const now = this.clock();
    if (now - this.lastMaintenance < MAINTENANCE_MS) return;
    this.lastMaintenance = now;
    try {
      // checkHealth: failing endpoints whose period ran out with no attempt to notice it.
      this.announce(await this.opts.outbox.disableExpired(now, this.policyFor([])));
      const abandoned = await this.opts.outbox.settleAbandoned(now);
      if (abandoned > 0) this.log.info({ abandoned }, 'deliveries left in flight to disabled endpoints are dead');
      const pruned = await this.opts.outbox.prune(now - this.s.retentionS * 1000);
      if (pruned > 0) this.log.info({ pruned }, 'old webhook deliveries deleted');
    } catch (e) {
      this.dbError(e, 'webhook maintenance failed');
    }
  }

  /**
   * The database is away: say so once per kind of failure and then at most once a minute (with how many
   * were not logged), not at every poll; the store's outage is on /ready meanwhile.
   */
  private dbError(e: unknown, msg: string): void {
    this.stats.dbErrors++;
    const now = this.clock();
    const last = this.dbWarned.get(msg);
    if (last !== undefined && now - last.at < DB_WARN_EVERY_MS) {
      last.suppressed++;
      this.log.debug({ err: (e as Error).message }, msg);
      return;
    }
    this.log.warn({ err: (e as Error).message, ...(last !== undefined && last.suppressed > 0 ? { suppressed: last.suppressed } : {}) }, msg);
    this.dbWarned.set(msg, { at: now, suppressed: 0 });
  }
}
