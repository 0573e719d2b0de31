/**
 * One live connection (WebSocket or SSE), transport-agnostic: its subscriptions on the LiveHub, the
 * per-subscription deadband and rate limit, the batch of live points, heartbeats, the credential's expiry,
 * and the slow-consumer policy (live-outbox.ts).
 *
 * Hub listeners run on the ingest path, so they only decide and append to a bounded in-memory batch;
 * serialising a batch and writing it happen later, on a timer.
 *
 * Semantics (documented in schemas/openapi/stream.json):
 * - `deadband`: a numeric point is sent only when it moved at least this far from the last one sent on
 *   that topic (the snapshot value counts as sent). Non-numeric points always pass.
 * - `maxRate`: at most this many points per second per topic; faster changes are conflated, the latest
 *   value is sent when the topic's interval has passed (so the client always ends on the current value).
 * - A point matched by several of the connection's subscriptions is sent once, under the first
 *   (oldest) subscription that accepts it.
 * - Order per subscribe: `subscribed`, `snapshot`, optional `history`, then live `datapoints_batch`.
 */
import type { Point } from '../core/index.js';
import type { ErrorCode } from '../core/index.js';
import type { Permissions } from '../core/index.js';
import { validateTopicFilter, type TopicLimits } from '../core/index.js';
import type { ApiDeps } from './deps.js';
import type { ApiPrincipal } from './auth.js';
import type { LivePolicy } from './live-policy.js';
import type { HistoryFn, HistoryWindow } from './live-history.js';
import { Outbox, type LiveTransport } from './live-outbox.js';
import { datapointsFrame, numericValue, pointJson } from './live-wire.js';
import { toJson } from './json.js';

export interface SubscribeRequest {
  readonly id?: string | undefined;
  readonly filters: readonly string[];
  readonly maxRate?: number | undefined;
  readonly deadband?: number | undefined;
  readonly history?: { readonly seconds: number } | undefined;
}

export interface FilterProblem {
  readonly code: ErrorCode;
  readonly message: string;
  readonly filter: string;
}

/** Splits requested filters into the acceptable ones and the refused ones (malformed, or not readable). */
export function checkFilters(filters: readonly string[], perms: Permissions, limits: TopicLimits): { accepted: string[]; refused: FilterProblem[] } {
  const accepted: string[] = [];
  const refused: FilterProblem[] = [];
  for (const filter of new Set(filters)) {
    const bad = validateTopicFilter(filter, limits);
    if (bad !== null) refused.push({ code: 'UNS_ERR_FILTER_INVALID', message: `filter ${JSON.stringify(filter)}: ${bad}`, filter });
    // A subscription must lie wholly inside the role's read filters, as on MQTT (src/core/acl.ts).
    else if (!perms.canSubscribe(filter)) refused.push({ code: 'UNS_ERR_FORBIDDEN', message: `your roles may not read all of ${filter}`, filter });
    else accepted.push(filter);
  }
  return { accepted, refused };
}

interface Subscription {
  readonly filter: string;
  readonly deadband: number;
  readonly minIntervalMs: number;
  unsubscribe: () => void;
  /** Last value accepted per numeric topic (deadband). */
  readonly lastValue: Map<string, number>;
  /** When a point of the topic was last accepted (rate). */
  readonly lastSentAt: Map<string, number>;
  /** Conflated points waiting for their topic's interval (rate). */
  readonly pending: Map<string, Point>;
}

export type LiveSessionDeps = Pick<ApiDeps, 'hub' | 'queries' | 'metrics' | 'log' | 'now' | 'auth'> & { readonly history: HistoryFn };

export class LiveSession {
  private readonly subs = new Map<string, Subscription>();
  private readonly outbox: Outbox;
  private batch: string[] = [];
  private batchBytes = 0;
  /** Subscribes in progress: live points wait until their snapshot (and history) is out. */
  private holds = 0;
  private lastAccepted: Point | null = null;
  private flushTimer: NodeJS.Timeout | null = null;
  private flushImmediate: NodeJS.Immediate | null = null;
  /** When the last frame of points went out (deps.now), for the batch interval. */
  private lastFrameAt = Number.NEGATIVE_INFINITY;
  private heartbeatTimer: NodeJS.Timeout | null = null;
  private expiryTimer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    private readonly deps: LiveSessionDeps,
    readonly principal: ApiPrincipal,
    private readonly transport: LiveTransport,
    private readonly policy: LivePolicy,
    /** The credential itself, to notice revoked API tokens. */
    private readonly credential: string,
  ) {
    const transportLabel = { transport: transport.name };
    this.outbox = new Outbox(transport, policy, {
      now: deps.now,
      delivered: (n) => deps.metrics.deliveredPoints.inc(transportLabel, n),
      droppedFrames: (n) => deps.metrics.droppedFrames.inc(transportLabel, n),
      stalled: () => {
        const reason = `consumer too slow: send buffer over ${policy.highWaterBytes} bytes for ${Math.round(policy.stallMs / 1000)} s`;
        deps.log.warn({ transport: transport.name, username: principal.username, reason }, 'live stream client closed (1013)');
        this.end(1013, reason);
      },
    });
    this.heartbeatTimer = setInterval(() => this.heartbeat(), policy.heartbeatMs);
    if (principal.expiresAt !== null) this.armExpiry(principal.expiresAt);
  }

  get filters(): string[] {
    return [...this.subs.keys()];
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** A control reply (subscribed, error, pong...): subject to the same buffer bound as data. */
  send(msg: { readonly type: string } & Record<string, unknown>): void {
    if (this.closed) return;
    this.outbox.offer(msg.type, toJson(msg));
  }

  error(code: ErrorCode, message: string, extra: { id?: string | undefined; details?: unknown } = {}): void {
    this.send({
      type: 'error', ...(extra.id !== undefined ? { id: extra.id } : {}),
      error: { code, message, ...(extra.details !== undefined ? { details: extra.details } : {}) },
    });
  }

  /**
   * Subscribes the (already checked) filters, then sends `subscribed`, the snapshot of last values and the
   * optional history. Live points for them are held back until then.
   */
  async subscribe(req: SubscribeRequest): Promise<void> {
    if (this.closed) return;
    const room = this.policy.maxFilters - this.subs.size;
    const filters: string[] = [];
    for (const f of req.filters) {
      if (this.subs.has(f) || filters.length < room) filters.push(f);
      else this.error('UNS_ERR_BAD_REQUEST', `at most ${this.policy.maxFilters} subscriptions per connection`, { id: req.id, details: { filter: f } });
    }
    if (filters.length === 0) return;
    const id = req.id;
    this.holds++;
    try {
      for (const f of filters) this.add(f, req);
      this.send({ type: 'subscribed', ...(id !== undefined ? { id } : {}), filters });
      await this.snapshot(filters, id);
      if (req.history !== undefined && !this.closed) await this.history(filters, req.history.seconds, id);
    } finally {
      this.holds--;
      if (this.holds === 0) this.scheduleFlush(true);
    }
  }

  /** Ends the named subscriptions; points already batched are sent before the reply. */
  unsubscribe(filters: readonly string[], id?: string): void {
    if (this.closed) return;
    const removed: string[] = [];
    for (const f of new Set(filters)) {
      const s = this.subs.get(f);
      if (!s) continue;
      s.unsubscribe();
      this.subs.delete(f);
      removed.push(f);
    }
    if (this.holds === 0) this.flush();
    this.send({ type: 'unsubscribed', ...(id !== undefined ? { id } : {}), filters: removed });
  }

  /** Ends everything (transport closed, or closing). Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.subs.values()) s.unsubscribe();
    this.subs.clear();
    this.batch = [];
    this.outbox.close();
    if (this.flushTimer) clearTimeout(this.flushTimer);
    if (this.flushImmediate) clearImmediate(this.flushImmediate);
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
  }

  /** Closes the transport with a code and reason, and this session with it. */
  end(code: number, reason: string): void {
    if (this.closed) return;
    this.close();
    this.transport.close(code, reason);
  }

  private add(filter: string, req: SubscribeRequest): void {
    // Subscribing a filter again replaces its options, as MQTT does [MQTT-3.8.4-3].
    this.subs.get(filter)?.unsubscribe();
    const sub: Subscription = {
      filter,
      deadband: req.deadband ?? 0,
      minIntervalMs: req.maxRate !== undefined && req.maxRate > 0 ? 1000 / req.maxRate : 0,
      unsubscribe: () => undefined,
      lastValue: new Map(),
      lastSentAt: new Map(),
      pending: new Map(),
    };
    sub.unsubscribe = this.deps.hub.subscribe(filter, (p) => this.onPoint(sub, p));
    this.subs.set(filter, sub);
  }

  /** The hub listener: decide, append, never block. */
  private onPoint(s: Subscription, p: Point): void {
    if (this.closed || p === this.lastAccepted) return;
    if (this.principal.perms.hasReadDenies && !this.principal.perms.canRead(p.topic)) return; // a deny rule
    if (s.deadband > 0) {
      const n = numericValue(p.value);
      if (n !== null) {
        const last = s.lastValue.get(p.topic);
        if (last !== undefined && Math.abs(n - last) < s.deadband) return;
        this.remember(s.lastValue, p.topic, n);
      }
    }
    this.lastAccepted = p;
    if (s.minIntervalMs > 0) {
      const now = this.deps.now();
      const last = s.lastSentAt.get(p.topic);
      if (last !== undefined && now - last < s.minIntervalMs) {
        // Conflate: the newest value waits for the topic's next slot.
        if (s.pending.size >= this.policy.maxTopicState && !s.pending.has(p.topic)) { this.outbox.drop(1, 0); return; }
        s.pending.set(p.topic, p);
        this.scheduleFlush(false);
        return;
      }
      this.remember(s.lastSentAt, p.topic, now);
    }
    this.append(p);
  }

  private remember<V>(m: Map<string, V>, topic: string, v: V): void {
    // Bounded like TopicMatcher's cache: cleared when full, which costs at most one extra point per topic.
    if (m.size >= this.policy.maxTopicState && !m.has(topic)) m.clear();
    m.set(topic, v);
  }

  private append(p: Point): void {
    const json = pointJson(p);
    if (this.batch.length >= this.policy.maxBatchPoints || this.batchBytes + json.length > this.policy.maxBatchBytes) {
      this.outbox.drop(1, 0);
      return;
    }
    this.batch.push(json);
    this.batchBytes += json.length + 1;
    this.scheduleFlush(this.batch.length >= this.policy.flushPoints || this.batchBytes >= this.policy.flushBytes);
  }

  private scheduleFlush(soon: boolean): void {
    if (this.closed) return;
    // Leading edge: after a quiet interval the points of this event-loop turn go out at once (in an immediate);
    // otherwise at the interval's end, so a connection gets at most one frame per batchMs either way.
    const wait = soon ? 0 : this.lastFrameAt + this.policy.batchMs - this.deps.now();
    if (wait <= 0) {
      this.flushImmediate ??= setImmediate(() => { this.flushImmediate = null; this.flush(); });
    } else {
      this.flushAfter(wait);
    }
  }

  private flushAfter(ms: number): void {
    this.flushTimer ??= setTimeout(() => { this.flushTimer = null; this.flush(); }, ms);
  }

  private flush(): void {
    if (this.closed || this.holds > 0) return;
    let due = false;
    const now = this.deps.now();
    for (const s of this.subs.values()) {
      if (s.pending.size === 0) continue;
      for (const [topic, p] of s.pending) {
        const last = s.lastSentAt.get(topic);
        if (last !== undefined && now - last < s.minIntervalMs) { due = true; continue; }
        s.pending.delete(topic);
        this.remember(s.lastSentAt, topic, now);
        this.append(p);
      }
    }
    if (this.batch.length > 0) {
      const parts = this.batch;
      this.batch = [];
      this.batchBytes = 0;
      if (this.flushTimer) { clearTimeout(this.flushTimer); this.flushTimer = null; }
      this.lastFrameAt = this.deps.now();
      if (this.outbox.admit()) this.outbox.write('datapoints_batch', datapointsFrame('datapoints_batch', parts), parts.length);
      else this.outbox.drop(parts.length, 1);
    }
    // Conflated points not due yet: looked at again an interval later (not at once, which would spin).
    if (due && !this.closed) this.flushAfter(this.policy.batchMs);
  }

  private async snapshot(filters: readonly string[], id: string | undefined): Promise<void> {
    const seen = new Set<string>();
    const parts: string[] = [];
    try {
      for (const f of filters) {
        const rows = await this.deps.queries.latest(f, (t) => this.principal.perms.canRead(t));
        const sub = this.subs.get(f);
        for (const d of rows) {
          if (seen.has(d.topic)) continue;
          seen.add(d.topic);
          parts.push(toJson({ topic: d.topic, value: d.value, timestamp: d.timestamp, quality: d.quality, unit: d.unit ?? null }));
          // The snapshot value counts as sent for the deadband.
          const n = typeof d.value === 'number' ? d.value : typeof d.value === 'bigint' ? Number(d.value) : null;
          if (sub && sub.deadband > 0 && n !== null && !sub.lastValue.has(d.topic)) this.remember(sub.lastValue, d.topic, n);
        }
      }
    } catch (e) {
      // The database may be down: live delivery goes on without the snapshot (docs/guarantees.md: database outage).
      this.deps.log.warn({ err: (e as Error).message }, 'live snapshot query failed');
      this.error('UNS_ERR_UNAVAILABLE', 'snapshot unavailable: the store cannot be read now; live data follows', { id, details: { stage: 'snapshot' } });
      return;
    }
    if (this.closed) return;
    this.outbox.offer('snapshot', datapointsFrame('snapshot', parts, id), parts.length);
  }

  private async history(filters: readonly string[], seconds: number, id: string | undefined): Promise<void> {
    const s = Math.min(Math.max(0, seconds), this.policy.maxHistorySeconds);
    const now = this.deps.now();
    let w: HistoryWindow;
    try {
      w = await this.deps.history(filters, now - s * 1000, now, (t) => this.principal.perms.canRead(t),
        { maxTopics: this.policy.maxHistoryTopics, maxPoints: this.policy.maxHistoryPoints });
    } catch (e) {
      this.deps.log.warn({ err: (e as Error).message }, 'live history query failed');
      this.error('UNS_ERR_UNAVAILABLE', 'history unavailable: the store cannot be read now; live data follows', { id, details: { stage: 'history' } });
      return;
    }
    if (this.closed) return;
    const parts = w.points.map((d) => toJson(d));
    const frame = datapointsFrame('history', parts, id);
    // `truncated`: the window held more samples (or topics) than the policy sends.
    this.outbox.offer('history', w.truncated ? `${frame.slice(0, -1)},"truncated":true}` : frame, parts.length);
  }

  /**
   * Before an action taken in the principal's name (a Sparkplug command): its credential checked again, as
   * REST would check it now. A revoked API token ends the session (4401) rather than waiting for a heartbeat.
   */
  async credentialValid(): Promise<boolean> {
    if (this.closed) return false;
    if (this.principal.expiresAt !== null && this.deps.now() >= this.principal.expiresAt) { this.end(4401, 'token expired'); return false; }
    if (this.principal.via !== 'api-token') return true;
    const r = await this.deps.auth.verify(this.credential);
    if ('failure' in r) { this.end(4401, 'token revoked'); return false; }
    return true;
  }

  private heartbeat(): void {
    if (this.closed) return;
    // A congested peer is not reading: the stall policy, not the heartbeat, decides its fate.
    if (this.outbox.state.kind === 'flowing' && this.outbox.admit()) this.transport.heartbeat(this.deps.now());
    if (this.principal.via === 'api-token') {
      // API tokens can be revoked: look again now and then (JWTs cannot, and expire on their own).
      this.deps.auth.verify(this.credential).then((r) => {
        if ('failure' in r) this.end(4401, 'token revoked');
      }, () => undefined);
    }
  }

  private armExpiry(at: number): void {
    // setTimeout holds at most 2^31-1 ms (~24.8 days): re-arm in steps for longer-lived API tokens.
    const wait = Math.min(Math.max(0, at - this.deps.now()), 2_147_483_647);
    this.expiryTimer = setTimeout(() => {
      if (this.deps.now() >= at) this.end(4401, 'token expired');
      else this.armExpiry(at);
    }, wait);
  }
}
