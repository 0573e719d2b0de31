import { expect } from 'chai';
import { RuleEngine, type Scheduler, type StateChange, type StoredRuleState } from '../../../../bridge/rules/engine.js';
import { fileRuleId, isBeyond, isCleared, type Rule } from '../../../../bridge/rules/rule.js';
import { silentLogger } from '../../../../src/core/log.js';
import type { UnsEvent } from '../../../../src/core/events.js';
import type { UnsMessage, Value, Quality } from '../../../../src/core/message.js';

const T0 = Date.UTC(2026, 0, 1, 8, 0, 0);
const TOPIC = 'acme/plant1/utilities/line1/boiler/temperature';

/** A fake clock and scheduler: time moves only when the test says so. */
class FakeTime implements Scheduler {
  t = T0;
  private seq = 0;
  private timers = new Map<number, { at: number; fn: () => void }>();
  now = (): number => this.t;
  set(fn: () => void, ms: number): unknown {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + ms, fn });
    return id;
  }
  clear(h: unknown): void {
    if (typeof h === 'number') this.timers.delete(h);
  }
  /** Moves time forward, running due timers in order, and lets promises settle in between. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      await new Promise((r) => setImmediate(r));
      const due = [...this.timers].filter(([, x]) => x.at <= end).sort((a, b) => a[1].at - b[1].at || a[0] - b[0])[0];
      if (!due) break;
      this.timers.delete(due[0]);
      this.t = Math.max(this.t, due[1].at);
      due[1].fn();
    }
    this.t = end;
    await new Promise((r) => setImmediate(r));
  }
}

/** rule_state in memory; can be made to fail or to hold writes. */
class MemStates {
  rows = new Map<string, StateChange>();
  fail = false;
  writes = 0;
  hold: Promise<void> | null = null;
  async saveStates(resets: readonly string[], changes: readonly StateChange[]): Promise<void> {
    if (this.hold) await this.hold;
    if (this.fail) throw new Error('database down');
    this.writes++;
    for (const id of resets) for (const k of [...this.rows.keys()]) if (k.startsWith(`${id}|`)) this.rows.delete(k);
    for (const c of changes) {
      if (c.state === 'normal') this.rows.delete(`${c.ruleId}|${c.topic}`);
      else this.rows.set(`${c.ruleId}|${c.topic}`, c);
    }
  }
  stored(): StoredRuleState[] {
    return [...this.rows.values()].map((c) => ({ ruleId: c.ruleId, topic: c.topic, state: c.state as 'pending' | 'exceeded', since: c.since, value: c.value }));
  }
}

function rule(over: Partial<Rule> = {}): Rule {
  return {
    id: fileRuleId('boiler'), name: 'boiler', topicFilter: 'acme/+/utilities/+/boiler/temperature', operator: '>', threshold: 80,
    hysteresis: 5, minDurationMs: 0, enabled: true, source: 'file', owner: 'topics.yaml', roles: [], createdAt: T0, updatedAt: T0, ...over,
  };
}

let seq = 0;
function msg(value: Value, opts: { topic?: string; ts?: number; quality?: Quality } = {}): UnsMessage {
  const topic = opts.topic ?? TOPIC;
  return {
    id: `m${seq++}`, topic, path: null, encoding: 'json', route: 'temperature',
    points: [{ topic, value, timestamp: opts.ts ?? T0 + seq, quality: opts.quality ?? 'good' }],
    source: { protocol: 'mqtt', clientId: 'c', qos: 1, retain: false, dup: false }, receivedAt: T0, store: true,
  };
}

describe('threshold rules - comparison', () => {
  it('exceeds past the threshold and clears only past threshold minus hysteresis for > and >=', () => {
    const r = { operator: '>' as const, threshold: 80, hysteresis: 5 };
    expect([isBeyond(r, 80), isBeyond(r, 80.1)]).to.deep.equal([false, true]);
    expect([isCleared(r, 77), isCleared(r, 75.1), isCleared(r, 75), isCleared(r, 60)]).to.deep.equal([false, false, true, true]);
    const ge = { operator: '>=' as const, threshold: 80, hysteresis: 5 };
    expect([isBeyond(ge, 80), isCleared(ge, 75), isCleared(ge, 74.9)]).to.deep.equal([true, false, true]);
  });

  it('mirrors for < and <= (clears past threshold plus hysteresis)', () => {
    const lt = { operator: '<' as const, threshold: 2, hysteresis: 0.5 };
    expect([isBeyond(lt, 1.9), isBeyond(lt, 2), isCleared(lt, 2.4), isCleared(lt, 2.5)]).to.deep.equal([true, false, false, true]);
    const le = { operator: '<=' as const, threshold: 2, hysteresis: 0 };
    expect([isBeyond(le, 2), isCleared(le, 2), isCleared(le, 2.01)]).to.deep.equal([true, false, true]);
  });

  it('gives file rules an id fixed by their name', () => {
    expect(fileRuleId('a')).to.equal(fileRuleId('a'));
    expect(fileRuleId('a')).to.not.equal(fileRuleId('b'));
    expect(fileRuleId('a')).to.match(/^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });
});

describe('threshold rules - engine', () => {
  let time: FakeTime;
  let states: MemStates;
  let events: UnsEvent[];
  const make = (rules: Rule[], stored: StoredRuleState[] = [], over: { maxQueuedEvents?: number } = {}): RuleEngine => {
    const e = new RuleEngine({
      persistence: states, emit: (ev) => events.push(ev), log: silentLogger(), now: time.now, scheduler: time, ...over,
    });
    e.load(rules, stored);
    return e;
  };
  const types = (): string[] => events.map((e) => e.type);

  beforeEach(() => {
    time = new FakeTime();
    states = new MemStates();
    events = [];
  });

  it('sends one exceeded per crossing and one cleared past the hysteresis', async () => {
    const e = make([rule()]);
    e.onMessage(msg(70));
    e.onMessage(msg(81));
    await time.advance(0);
    expect(types()).to.deep.equal(['sensor.threshold_exceeded']);
    expect(events[0]?.topic).to.equal(TOPIC);
    expect(events[0]?.data).to.include({ rule_id: rule().id, rule_name: 'boiler', operator: '>', threshold: 80, value: 81 });
    e.onMessage(msg(90));
    e.onMessage(msg(85));
    e.onMessage(msg(77)); // below the threshold, within the hysteresis
    await time.advance(0);
    expect(types()).to.have.length(1);
    e.onMessage(msg(74));
    e.onMessage(msg(70));
    await time.advance(0);
    expect(types()).to.deep.equal(['sensor.threshold_exceeded', 'sensor.threshold_cleared']);
    expect(events[1]?.data).to.include({ value: 74 });
    e.onMessage(msg(82));
    await time.advance(0);
    expect(types()).to.deep.equal(['sensor.threshold_exceeded', 'sensor.threshold_cleared', 'sensor.threshold_exceeded']);
  });

  it('keeps one state per topic', async () => {
    const e = make([rule()]);
    const other = 'acme/plant2/utilities/line3/boiler/temperature';
    e.onMessage(msg(81));
    e.onMessage(msg(81, { topic: other }));
    e.onMessage(msg(82, { topic: other }));
    await time.advance(0);
    expect(events.map((x) => x.topic)).to.deep.equal([TOPIC, other]);
  });

  it('emits only once the state change is written', async () => {
    let release = (): void => undefined;
    states.hold = new Promise((r) => { release = r; });
    const e = make([rule()]);
    e.onMessage(msg(81));
    await time.advance(0);
    expect(events).to.have.length(0);
    expect(states.rows.size).to.equal(0);
    states.hold = null;
    release();
    await time.advance(0);
    expect(types()).to.deep.equal(['sensor.threshold_exceeded']);
    expect(states.rows.get(`${rule().id}|${TOPIC}`)?.state).to.equal('exceeded');
  });

  it('with a minimum duration fires from the timer when the value holds without new messages', async () => {
    const e = make([rule({ minDurationMs: 10_000 })]);
    e.onMessage(msg(85));
    await time.advance(9_000);
    expect(events).to.have.length(0);
    expect(states.rows.get(`${rule().id}|${TOPIC}`)?.state).to.equal('pending');
    await time.advance(1_000);
    expect(types()).to.deep.equal(['sensor.threshold_exceeded']);
    expect(events[0]?.data['value']).to.equal(85);
    expect(events[0]?.data['condition_since']).to.equal(new Date(T0).toISOString());
  });

  it('with a minimum duration fires on a new value once the condition has held long enough', async () => {
    const e = make([rule({ minDurationMs: 10_000 })]);
    e.onMessage(msg(85));
    time.t += 10_500; // no timers run: the message decides
    e.onMessage(msg(86));
    await time.advance(0);
    expect(types()).to.deep.equal(['sensor.threshold_exceeded']);
    expect(events[0]?.data['value']).to.equal(86);
    await time.advance(60_000);
    expect(events).to.have.length(1);
  });

  it('with a minimum duration does not fire when the condition breaks in time', async () => {
    const e = make([rule({ minDurationMs: 10_000 })]);
    e.onMessage(msg(85));
    await time.advance(5_000);
    e.onMessage(msg(79));
    await time.advance(20_000);
    expect(events).to.have.length(0);
    expect(states.rows.size).to.equal(0);
  });

  it('after a restart in the exceeded state sends no second exceeded, and clears later', async () => {
    const first = make([rule()]);
    first.onMessage(msg(90));
    await first.close();
    expect(types()).to.deep.equal(['sensor.threshold_exceeded']);
    const second = make([rule()], states.stored());
    second.onMessage(msg(91));
    second.onMessage(msg(95));
    await time.advance(0);
    expect(types()).to.deep.equal(['sensor.threshold_exceeded']);
    second.onMessage(msg(60));
    await time.advance(0);
    expect(types()).to.deep.equal(['sensor.threshold_exceeded', 'sensor.threshold_cleared']);
  });

  it('after a restart in the pending state fires when the rest of the duration has passed', async () => {
    const first = make([rule({ minDurationMs: 30_000 })]);
    first.onMessage(msg(90));
    await time.advance(10_000);
    await first.close();
    const second = make([rule({ minDurationMs: 30_000 })], states.stored());
    await time.advance(19_000);
    expect(events).to.have.length(0);
    await time.advance(1_000);
    expect(types()).to.deep.equal(['sensor.threshold_exceeded']);
    second.onMessage(msg(1));
    await time.advance(0);
    expect(types()).to.deep.equal(['sensor.threshold_exceeded', 'sensor.threshold_cleared']);
  });

  it('drops stored states of unknown or disabled rules and of topics the filter no longer matches', async () => {
    const stale: StoredRuleState[] = [
      { ruleId: fileRuleId('gone'), topic: TOPIC, state: 'exceeded', since: T0, value: 99 },
      { ruleId: rule().id, topic: 'acme/plant1/utilities/line1/chiller/temperature', state: 'exceeded', since: T0, value: 99 },
    ];
    for (const s of stale) states.rows.set(`${s.ruleId}|${s.topic}`, { ...s });
    const e = make([rule()], stale);
    await time.advance(0);
    expect(states.rows.size).to.equal(0);
    expect(e.statesOf(rule().id)).to.deep.equal([]);
  });

  it('evaluates numeric, non-bad points only and ignores values older than the current state', async () => {
    const e = make([rule()]);
    e.onMessage(msg('hot'));
    e.onMessage(msg(true));
    e.onMessage(msg(null));
    e.onMessage(msg(99, { quality: 'bad' }));
    await time.advance(0);
    expect(events).to.have.length(0);
    e.onMessage(msg(99, { ts: T0 + 10_000 }));
    e.onMessage(msg(10, { ts: T0 + 5_000 })); // a backfilled old value must not clear a live alarm
    e.onMessage(msg(BigInt(10), { ts: T0 + 20_000 }));
    await time.advance(0);
    expect(types()).to.deep.equal(['sensor.threshold_exceeded', 'sensor.threshold_cleared']);
  });

  it('holds events while rule_state cannot be written and sends each once when it can', async () => {
    states.fail = true;
    const e = make([rule()]);
    e.onMessage(msg(81));
    await time.advance(0);
    e.onMessage(msg(10));
    await time.advance(5_000);
    expect(events).to.have.length(0);
    expect(e.stats.persistFailures).to.be.greaterThan(0);
    states.fail = false;
    await time.advance(60_000);
    expect(types()).to.deep.equal(['sensor.threshold_exceeded', 'sensor.threshold_cleared']);
    expect(states.rows.size).to.equal(0);
  });

  it('bounds the events waiting for the database, dropping the oldest', async () => {
    states.fail = true;
    const e = make([rule({ hysteresis: 0 })], [], { maxQueuedEvents: 3 });
    for (let i = 0; i < 5; i++) { e.onMessage(msg(90)); e.onMessage(msg(10)); }
    await time.advance(0);
    expect(e.stats.eventsDropped).to.equal(7);
    states.fail = false;
    await time.advance(60_000);
    expect(events).to.have.length(3);
  });

  it('forgets the states of a removed or disabled rule', async () => {
    const e = make([rule()]);
    e.onMessage(msg(90));
    await time.advance(0);
    e.upsert(rule({ enabled: false }));
    await time.advance(0);
    expect(states.rows.size).to.equal(0);
    e.onMessage(msg(95));
    await time.advance(0);
    expect(events).to.have.length(1);
    e.upsert(rule());
    e.onMessage(msg(95));
    await time.advance(0);
    expect(events).to.have.length(2);
    e.remove(rule().id);
    await time.advance(0);
    expect(states.rows.size).to.equal(0);
  });

  it('keeps states across an edit and judges the next value by the new definition', async () => {
    const e = make([rule()]);
    e.onMessage(msg(90));
    await time.advance(0);
    e.upsert(rule({ threshold: 100, hysteresis: 0 }));
    e.onMessage(msg(95)); // still exceeded under the old limit, cleared under the new one
    await time.advance(0);
    expect(types()).to.deep.equal(['sensor.threshold_exceeded', 'sensor.threshold_cleared']);
  });

  it('never throws on the message path', () => {
    const e = make([rule()]);
    const bad = { ...msg(1), points: null } as unknown as UnsMessage;
    expect(() => e.onMessage(bad)).to.not.throw();
  });
});
