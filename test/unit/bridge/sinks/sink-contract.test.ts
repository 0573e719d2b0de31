/**
 * The Sink contract (bridge/sinks/sink.ts), run against every implementation: a name, a moment, and an
 * accept() that takes any accepted message synchronously, without throwing and without a promise.
 */
import { expect } from 'chai';
import type { UnsMessage, Value, UnsEvent } from '../../../../src/core/index.js';
import { silentLogger } from '../../../../src/core/index.js';
import type { Sink } from '../../../../bridge/sinks/sink.js';
import { LiveHub } from '../../../../bridge/sinks/live/hub.js';
import { liveSink } from '../../../../bridge/sinks/live/live-sink.js';
import { sensorReadingSink } from '../../../../bridge/sinks/webhooks/reading-sink.js';
import { rulesSink } from '../../../../bridge/rules/rules-sink.js';
import { RuleEngine } from '../../../../bridge/rules/engine.js';

const T = 'acme/plant1/packaging/line1/filler/temperature';
const values: Value[] = [21.5, -0, Number.NaN, 9007199254740993n, true, 'hot', '', new Uint8Array([1, 2, 3]), { a: [1, { b: null }] }, [1, 2], null];

function message(points: ReadonlyArray<{ value: Value; topic?: string }>, store = true): UnsMessage {
  return {
    id: 'm', topic: T, path: null, encoding: 'json', route: 'r', store, receivedAt: 1_700_000_000_000,
    source: { protocol: 'mqtt', clientId: 'c', qos: 1, retain: false, dup: false },
    points: points.map((p) => ({ topic: p.topic ?? T, value: p.value, timestamp: 1_700_000_000_000, quality: 'good' as const })),
  };
}

const messages: UnsMessage[] = [
  message([]),
  ...values.map((v) => message([{ value: v }])),
  message(values.map((v, i) => ({ value: v, topic: `${T}/${i}` }))),
  message([{ value: 1 }], false),
];

interface Implementation {
  readonly name: string;
  make(): Sink;
}

const events: UnsEvent[] = [];
const implementations: Implementation[] = [
  {
    name: 'live fan-out',
    make: () => {
      const hub = new LiveHub();
      hub.subscribe('acme/#', () => undefined);
      return liveSink(hub);
    },
  },
  { name: 'webhooks sensor.reading', make: () => sensorReadingSink(() => true, (e) => events.push(e)) },
  {
    name: 'threshold rules',
    make: () => {
      const engine = new RuleEngine({ persistence: { saveStates: async () => undefined }, emit: (e) => events.push(e), log: silentLogger() });
      engine.load([{
        id: 'r1', name: 'hot', topicFilter: 'acme/#', operator: '>', threshold: 30, hysteresis: 1, minDurationMs: 0, enabled: true,
        source: 'api', owner: 'test', roles: [], createdAt: 0, updatedAt: 0,
      }], []);
      return rulesSink(engine.onMessage);
    },
  },
];

for (const impl of implementations) {
  describe(`sink contract - ${impl.name}`, () => {
    it("has a name and says when it wants a message ('accepted' or 'durable')", () => {
      const s = impl.make();
      expect(s.name).to.be.a('string').and.not.equal('');
      expect(['accepted', 'durable']).to.include(s.when);
    });

    it('takes every kind of accepted message synchronously, never throwing and never returning a promise', () => {
      const s = impl.make();
      for (const m of messages) {
        let returned: unknown;
        expect(() => { returned = s.accept(m); }, `message with ${m.points.length} point(s)`).to.not.throw();
        expect(returned).to.equal(undefined);
      }
    });
  });
}
