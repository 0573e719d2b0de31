/**
 * Threshold rule evaluation: one state machine per (rule, topic), in memory, fed by every accepted message.
 *
 *   normal --beyond, minDuration 0--> exceeded            emits sensor.threshold_exceeded
 *   normal --beyond, minDuration > 0--> pending            (timer set for minDuration)
 *   pending --not beyond--> normal                         (no event: the condition did not hold long enough)
 *   pending --held for minDuration (a new value or the timer)--> exceeded   emits sensor.threshold_exceeded
 *   exceeded --cleared (past threshold ∓ hysteresis)--> normal             emits sensor.threshold_cleared
 *
 * "Held" is measured on the server clock from the first value beyond the threshold; the last value is taken
 * to hold until a new one arrives (last-value semantics of a UNS), so the timer fires without a new message.
 * Normal is the absence of a state, so memory grows with the topics that are out of bounds, not with all.
 *
 * The hot path (onMessage) never awaits and never throws. State changes are queued and written to
 * rule_state in batches; an event is emitted only after the change that produced it is committed, so a
 * restart never sends a second exceeded event for the same crossing. While the database is unreachable,
 * writes are retried on a schedule and events wait (bounded: beyond maxQueuedEvents the oldest are dropped
 * and counted). A crash between commit and emit loses that event rather than duplicating it.
 */
import type { Logger } from '../../src/core/index.js';
import type { UnsMessage, Value } from '../../src/core/index.js';
import { eventId, type EventType, type UnsEvent } from '../../src/core/index.js';
import { TopicMatcher, compileFilter } from '../../src/core/index.js';
import { isBeyond, isCleared, type Rule } from './rule.js';

export type RuleStateName = 'normal' | 'pending' | 'exceeded';

/** A row of rule_state as loaded at start-up. */
export interface StoredRuleState {
  readonly ruleId: string;
  readonly topic: string;
  readonly state: 'pending' | 'exceeded';
  /** Epoch ms the state was entered. */
  readonly since: number;
  readonly value: number | null;
}

/** A change to persist; 'normal' deletes the row. */
export interface StateChange {
  readonly ruleId: string;
  readonly topic: string;
  readonly state: RuleStateName;
  readonly since: number;
  readonly value: number | null;
}

export interface RuleStatePersistence {
  /** In one transaction: forget every state of the `resets` rules, then apply `changes`. */
  saveStates(resets: readonly string[], changes: readonly StateChange[]): Promise<void>;
}

/** Timers are injected so tests drive time. */
export interface Scheduler {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

export const realScheduler: Scheduler = {
  set: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clear: (h) => clearTimeout(h as NodeJS.Timeout),
};

/** Retry schedule for rule_state writes while the database is unreachable (policy as data). */
export const PERSIST_RETRY_MS: readonly number[] = [500, 1_000, 2_000, 5_000, 10_000, 30_000];

export interface RuleEngineOptions {
  readonly persistence: RuleStatePersistence;
  readonly emit: (e: UnsEvent) => void;
  readonly log: Logger;
  readonly now?: () => number;
  readonly scheduler?: Scheduler | undefined;
  /** Events waiting for their state to be durable, at most; overflow policy: drop the oldest. */
  readonly maxQueuedEvents?: number;
  /** Rules whose filter is no longer inside their creator's read permissions are not evaluated. */
  readonly permitted?: (rule: Rule) => boolean;
}

export interface RuleEngineStats {
  exceeded: number;
  cleared: number;
  eventsDropped: number;
  persistFailures: number;
}

export interface TopicStateView {
  readonly topic: string;
  readonly state: 'pending' | 'exceeded';
  readonly since: number;
  readonly value: number;
}

interface TopicState {
  state: 'pending' | 'exceeded';
  /** When the current state was entered (server clock). */
  since: number;
  /** When the condition started to hold (the pending start, or since when there was none). */
  conditionSince: number;
  value: number;
  /** Source time of `value`; older values are ignored (a backfill must not flip a live state). */
  valueTs: number;
  unit: string | undefined;
  timer: unknown;
}

const SEP = '\u0000';

function numeric(v: Value): number | null {
  if (typeof v === 'number') return Number.isFinite(v) ? v : null;
  if (typeof v === 'bigint') return Number(v);
  return null;
}

function iso(ms: number): string | null {
  return Number.isFinite(ms) && ms > 0 ? new Date(ms).toISOString() : null;
}

export class RuleEngine {
  readonly stats: RuleEngineStats = { exceeded: 0, cleared: 0, eventsDropped: 0, persistFailures: 0 };
  private readonly now: () => number;
  private readonly sched: Scheduler;
  private readonly maxQueued: number;
  private readonly rules = new Map<string, Rule>();
  private matcher = new TopicMatcher<Rule>([]);
  /** ruleId -> topic -> state (normal = absent). */
  private readonly states = new Map<string, Map<string, TopicState>>();
  private loaded = false;
  private closing = false;
  // The persistence queue: latest change per (rule, topic), rules to reset, events waiting for both.
  private dirty = new Map<string, StateChange>();
  private resets = new Set<string>();
  private outbox: UnsEvent[] = [];
  private flushing = false;
  private flushTimer: unknown = null;
  private retries = 0;
  private idleWaiters: Array<() => void> = [];

  constructor(private readonly opts: RuleEngineOptions) {
    this.now = opts.now ?? Date.now;
    this.sched = opts.scheduler ?? realScheduler;
    this.maxQueued = opts.maxQueuedEvents ?? 10_000;
  }

  /** True once load() ran: before it nothing is evaluated, so no crossing is judged without its stored state. */
  get ready(): boolean {
    return this.loaded;
  }

  list(): readonly Rule[] {
    return [...this.rules.values()];
  }

  get(id: string): Rule | undefined {
    return this.rules.get(id);
  }

  statesOf(ruleId: string): TopicStateView[] {
    const m = this.states.get(ruleId);
    if (!m) return [];
    return [...m].map(([topic, s]) => ({ topic, state: s.state, since: s.since, value: s.value }));
  }

  /**
   * Start-up: every rule, and the states the previous run stored. States of unknown or disabled rules, and
   * of topics a rule's filter no longer matches, are dropped (and deleted from the table).
   */
  load(rules: readonly Rule[], stored: readonly StoredRuleState[]): void {
    for (const m of this.states.values()) for (const s of m.values()) this.sched.clear(s.timer);
    this.states.clear();
    this.rules.clear();
    for (const r of rules) this.rules.set(r.id, r);
    const matchers = new Map<string, (topic: string) => boolean>();
    for (const s of stored) {
      const rule = this.rules.get(s.ruleId);
      if (!rule || !this.active(rule)) { this.resets.add(s.ruleId); continue; }
      let match = matchers.get(rule.id);
      if (!match) { match = compileFilter(rule.topicFilter); matchers.set(rule.id, match); }
      if (!match(s.topic)) { this.record({ ruleId: rule.id, topic: s.topic, state: 'normal', since: this.now(), value: null }); continue; }
      const st: TopicState = {
        state: s.state, since: s.since, conditionSince: s.since, value: s.value ?? Number.NaN, valueTs: 0, unit: undefined, timer: null,
      };
      this.stateMap(rule.id).set(s.topic, st);
      if (st.state === 'pending') this.schedule(rule, s.topic, st);
    }
    this.rebuild();
    this.loaded = true;
    this.kick();
  }

  /** A rule created or edited. Its states are kept for topics its filter still matches; the next value is judged by the new definition. */
  upsert(rule: Rule): void {
    this.rules.set(rule.id, rule);
    if (!this.active(rule)) this.forget(rule.id);
    else {
      const m = this.states.get(rule.id);
      if (m) {
        const match = compileFilter(rule.topicFilter);
        for (const [topic, st] of m) {
          this.sched.clear(st.timer);
          st.timer = null;
          if (!match(topic)) {
            m.delete(topic);
            this.record({ ruleId: rule.id, topic, state: 'normal', since: this.now(), value: null });
          } else if (st.state === 'pending') {
            this.schedule(rule, topic, st);
          }
        }
      }
    }
    this.rebuild();
  }

  remove(id: string): void {
    this.rules.delete(id);
    this.forget(id);
    this.rebuild();
  }

  /** The pipeline listener. Never awaits, never throws. */
  readonly onMessage = (msg: UnsMessage): void => {
    if (!this.loaded || this.matcher.size === 0) return;
    try {
      let now: number | undefined;
      for (const p of msg.points) {
        const rules = this.matcher.matchAll(p.topic);
        if (rules.length === 0) continue;
        const v = numeric(p.value);
        // Only numeric, non-bad values: a bad-quality reading says nothing about the process.
        if (v === null || p.quality === 'bad') continue;
        now ??= this.now();
        for (const r of rules) this.evaluate(r, p.topic, v, p.timestamp, p.unit, now);
      }
    } catch (e) {
      this.opts.log.warn({ err: (e as Error).message, topic: msg.topic }, 'threshold rule evaluation failed');
    }
  };

  /** Resolves when every queued state change is written and its events emitted (or, while closing, a write failed). */
  idle(): Promise<void> {
    if (!this.flushing && this.flushTimer === null && this.queueEmpty()) return Promise.resolve();
    return new Promise((res) => this.idleWaiters.push(res));
  }

  /** Stops timers and evaluation; makes one last attempt to write what is queued. */
  async close(): Promise<void> {
    this.loaded = false;
    this.closing = true;
    for (const m of this.states.values()) for (const s of m.values()) { this.sched.clear(s.timer); s.timer = null; }
    if (this.flushTimer !== null) { this.sched.clear(this.flushTimer); this.flushTimer = null; }
    const done = this.idle();
    this.flushNow();
    await done;
  }

  // -------------------------------------------------------------------------------------------------------

  private active(rule: Rule): boolean {
    return rule.enabled && (this.opts.permitted?.(rule) ?? true);
  }

  private rebuild(): void {
    const live = [...this.rules.values()].filter((r) => this.active(r));
    this.matcher = new TopicMatcher<Rule>(live.map((r) => [r.topicFilter, r] as const), { cacheSize: 10_000 });
  }

  private stateMap(ruleId: string): Map<string, TopicState> {
    let m = this.states.get(ruleId);
    if (!m) { m = new Map(); this.states.set(ruleId, m); }
    return m;
  }

  /** Drops every state of a rule, in memory and (through the queue) in the table. */
  private forget(ruleId: string): void {
    const m = this.states.get(ruleId);
    if (m) for (const s of m.values()) this.sched.clear(s.timer);
    this.states.delete(ruleId);
    for (const [k, c] of this.dirty) if (c.ruleId === ruleId) this.dirty.delete(k);
    this.resets.add(ruleId);
    this.kick();
  }

  private evaluate(rule: Rule, topic: string, v: number, ts: number, unit: string | undefined, now: number): void {
    const m = this.states.get(rule.id);
    const st = m?.get(topic);
    if (st === undefined) {
      if (!isBeyond(rule, v)) return;
      const fresh: TopicState = { state: 'pending', since: now, conditionSince: now, value: v, valueTs: ts, unit, timer: null };
      this.stateMap(rule.id).set(topic, fresh);
      if (rule.minDurationMs <= 0) { this.fire(rule, topic, fresh, now); return; }
      this.schedule(rule, topic, fresh);
      this.record({ ruleId: rule.id, topic, state: 'pending', since: now, value: v });
      return;
    }
    if (ts < st.valueTs) return;
    if (st.state === 'pending') {
      if (!isBeyond(rule, v)) {
        this.sched.clear(st.timer);
        m?.delete(topic);
        this.record({ ruleId: rule.id, topic, state: 'normal', since: now, value: v });
        return;
      }
      st.value = v;
      st.valueTs = ts;
      st.unit = unit ?? st.unit;
      if (now - st.since >= rule.minDurationMs) this.fire(rule, topic, st, now);
      return;
    }
    // exceeded
    if (isCleared(rule, v)) {
      m?.delete(topic);
      this.stats.cleared++;
      this.record({ ruleId: rule.id, topic, state: 'normal', since: now, value: v }, this.event('sensor.threshold_cleared', rule, topic, now, {
        value: v, timestamp: iso(ts), unit: unit ?? st.unit, exceeded_since: iso(st.since), duration_ms: Math.max(0, now - st.since),
      }));
      return;
    }
    st.value = v;
    st.valueTs = ts;
  }

  private schedule(rule: Rule, topic: string, st: TopicState): void {
    const delay = Math.max(0, st.since + rule.minDurationMs - this.now());
    st.timer = this.sched.set(() => this.onTimer(rule.id, topic, st), delay);
  }

  /** The condition held for minDuration with no new value: fire on the last one. */
  private onTimer(ruleId: string, topic: string, st: TopicState): void {
    try {
      st.timer = null;
      const m = this.states.get(ruleId);
      const rule = this.rules.get(ruleId);
      if (m?.get(topic) !== st || st.state !== 'pending' || !rule || !this.active(rule) || this.closing) return;
      const now = this.now();
      // After a restart or an edit the stored value is judged again by the rule as it is now.
      if (!Number.isFinite(st.value) || !isBeyond(rule, st.value)) {
        m.delete(topic);
        this.record({ ruleId, topic, state: 'normal', since: now, value: Number.isFinite(st.value) ? st.value : null });
        return;
      }
      this.fire(rule, topic, st, now);
    } catch (e) {
      this.opts.log.warn({ err: (e as Error).message, rule: ruleId, topic }, 'threshold rule timer failed');
    }
  }

  private fire(rule: Rule, topic: string, st: TopicState, now: number): void {
    this.sched.clear(st.timer);
    st.timer = null;
    st.state = 'exceeded';
    st.since = now;
    this.stats.exceeded++;
    this.record({ ruleId: rule.id, topic, state: 'exceeded', since: now, value: st.value }, this.event('sensor.threshold_exceeded', rule, topic, now, {
      value: st.value, timestamp: iso(st.valueTs), unit: st.unit, condition_since: iso(st.conditionSince),
    }));
  }

  private event(type: EventType, rule: Rule, topic: string, now: number, extra: Record<string, unknown>): UnsEvent {
    const data: Record<string, unknown> = {
      rule_id: rule.id, rule_name: rule.name, operator: rule.operator, threshold: rule.threshold, hysteresis: rule.hysteresis,
      min_duration_ms: rule.minDurationMs,
    };
    for (const [k, v] of Object.entries(extra)) if (v !== undefined) data[k] = v;
    return { id: eventId(now), type, occurredAt: now, topic, data };
  }

  // ------------------------------------------------------------------------------------------------------
  // Persistence queue

  private queueEmpty(): boolean {
    return this.dirty.size === 0 && this.resets.size === 0 && this.outbox.length === 0;
  }

  private record(change: StateChange, event?: UnsEvent): void {
    this.dirty.set(change.ruleId + SEP + change.topic, change);
    if (event) {
      if (this.outbox.length >= this.maxQueued) {
        this.outbox.shift();
        this.stats.eventsDropped++;
      }
      this.outbox.push(event);
    }
    this.kick();
  }

  private kick(): void {
    if (this.flushing || this.flushTimer !== null || this.closing) return;
    this.flushTimer = this.sched.set(() => { this.flushTimer = null; this.flushNow(); }, 0);
  }

  private flushNow(): void {
    if (this.flushing) return;
    if (this.queueEmpty()) {
      const w = this.idleWaiters;
      this.idleWaiters = [];
      for (const res of w) res();
      return;
    }
    this.flushing = true;
    const resets = [...this.resets];
    const changes = [...this.dirty.values()];
    const events = this.outbox;
    this.resets = new Set();
    this.dirty = new Map();
    this.outbox = [];
    this.opts.persistence.saveStates(resets, changes).then(() => {
      this.flushing = false;
      this.retries = 0;
      for (const e of events) {
        try { this.opts.emit(e); } catch (err) { this.opts.log.warn({ err: (err as Error).message }, 'threshold event listener failed'); }
      }
      this.flushNow();
    }, (err: unknown) => {
      this.flushing = false;
      this.stats.persistFailures++;
      // Put the batch back under what arrived meanwhile: a newer change or a newer reset wins.
      for (const c of changes) {
        const k = c.ruleId + SEP + c.topic;
        if (!this.resets.has(c.ruleId) && !this.dirty.has(k)) this.dirty.set(k, c);
      }
      for (const id of resets) this.resets.add(id);
      const all = events.concat(this.outbox);
      const over = all.length - this.maxQueued;
      if (over > 0) this.stats.eventsDropped += over;
      this.outbox = over > 0 ? all.slice(over) : all;
      this.opts.log.warn({ err: (err as Error).message, queuedEvents: this.outbox.length }, 'rule state not saved; events wait');
      if (this.closing) {
        const w = this.idleWaiters;
        this.idleWaiters = [];
        for (const res of w) res();
        return;
      }
      const delay = PERSIST_RETRY_MS[Math.min(this.retries++, PERSIST_RETRY_MS.length - 1)] as number;
      this.flushTimer = this.sched.set(() => { this.flushTimer = null; this.flushNow(); }, delay);
    });
  }
}
