/**
 * The dispatcher's in-memory half with a fake clock, fake timers, fixed randomness and a fake outbox
 *: sensor.reading batching by size and linger, permissions and filters, rendering, ids,
 * signatures and retry scheduling. No database, no sockets.
 */
import { expect } from 'chai';
import { createHmac } from 'node:crypto';
import { Dispatcher, type Timers } from '../../../../bridge/sinks/webhooks/dispatcher.js';
import type { NewDelivery, Outbox } from '../../../../bridge/sinks/webhooks/outbox.js';
import type { WebhookRecord } from '../../../../bridge/sinks/webhooks/webhook-store.js';
import { EMPTY_ALLOWLIST } from '../../../../bridge/sinks/webhooks/ssrf.js';
import { Permissions } from '../../../../src/core/acl.js';
import type { UnsEvent } from '../../../../src/core/events.js';
import { silentLogger, type Logger } from '../../../../src/core/log.js';

const T0 = Date.UTC(2026, 0, 15, 10, 30, 0);
const SECRET = `whsec_${Buffer.alloc(32, 1).toString('base64')}`;

class FakeTimers implements Timers {
  now = T0;
  private tasks: Array<{ at: number; fn: () => void; id: number }> = [];
  private next = 1;
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.next++;
    this.tasks.push({ at: this.now + ms, fn, id });
    return id;
  }
  clearTimeout(h: unknown): void {
    this.tasks = this.tasks.filter((t) => t.id !== h);
  }
  async advance(ms: number): Promise<void> {
    const end = this.now + ms;
    for (;;) {
      this.tasks.sort((a, b) => a.at - b.at);
      const t = this.tasks[0];
      if (t === undefined || t.at > end) break;
      this.tasks.shift();
      this.now = t.at;
      t.fn();
      await new Promise((r) => setImmediate(r));
    }
    this.now = end;
  }
}

function record(over: Partial<WebhookRecord> = {}): WebhookRecord {
  return {
    id: '00000000-0000-4000-8000-000000000001', name: 'hook', description: null, url: 'https://hooks.example.com/x', events: ['sensor.reading', 'device.online'],
    headers: {}, isActive: true, retry: { scheduleS: [10, 60], timeoutMs: 1000 }, topics: ['acme/plant1/#'], conditions: [], template: null,
    batch: { maxSize: 3, maxLingerMs: 250 }, ordered: false, maxConcurrency: 4, secrets: [{ secret: SECRET, createdAt: T0, expiresAt: null }],
    disabledReason: null, owner: 'ana', roles: ['analyst'], failingSince: null, lastSuccessAt: null, createdAt: T0, updatedAt: T0, ...over,
  };
}

function reading(topic: string, value: number, n: number): UnsEvent {
  return { id: `evt_${n}`, type: 'sensor.reading', occurredAt: T0, topic, data: { value, timestamp: T0 + n, quality: 'good', unit: '°C' } };
}

async function setup(rec: WebhookRecord, over: { claim?: () => Promise<never[]>; log?: Logger } = {}): Promise<{ d: Dispatcher; timers: FakeTimers; inserted: NewDelivery[] }> {
  const timers = new FakeTimers();
  const inserted: NewDelivery[] = [];
  const outbox = {
    insert: async (rows: readonly NewDelivery[]) => { inserted.push(...rows); return rows.length; },
    claim: over.claim ?? (async () => []),
    settle: async () => [],
  } as unknown as Outbox;
  const d = new Dispatcher({
    store: { listActive: async () => [rec] }, outbox, log: over.log ?? silentLogger(),
    permissions: () => new Permissions(['acme/#'], []),
    settings: { allowlist: EMPTY_ALLOWLIST, workers: 4, pollIntervalMs: 1000, claimBatch: 10, leaseMarginMs: 1000, disableAfterS: 3600, maxQueued: 100,
      stopGraceMs: 0, refreshIntervalMs: 60_000, retentionS: 86_400, maxResponseBytes: 1024 },
    clock: () => timers.now, random: () => 0.5, randomBytes: (n) => Buffer.alloc(n, 0xab), timers,
  });
  await d.start();
  return { d, timers, inserted };
}

describe('webhook dispatcher', () => {
  it('logs a database that stays away once, then at most once a minute, not at every poll', async () => {
    const warns: Array<{ msg: string; suppressed?: number }> = [];
    const log = {
      warn: (o: { suppressed?: number }, msg: string) => { warns.push({ msg, ...(o.suppressed !== undefined ? { suppressed: o.suppressed } : {}) }); },
      debug: () => undefined, info: () => undefined, error: () => undefined,
    } as unknown as Logger;
    const refused = async (): Promise<never[]> => { throw Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }); };
    const { d, timers } = await setup(record(), { claim: refused, log });
    await timers.advance(30_000);
    const claims = warns.filter((w) => w.msg === 'webhook claim failed');
    expect(claims).to.have.length(1);
    expect(d.stats.dbErrors).to.be.greaterThan(10);
    await timers.advance(31_000);
    const later = warns.filter((w) => w.msg === 'webhook claim failed');
    expect(later).to.have.length(2);
    expect(later[1]?.suppressed).to.be.greaterThan(10);
  });

  it('holds sensor.reading for max_linger_ms, then writes one batch', async () => {
    const { d, timers, inserted } = await setup(record());
    d.accept(reading('acme/plant1/a/line1/f/temperature', 20, 1));
    d.accept(reading('acme/plant1/a/line1/f/temperature', 21, 2));
    await timers.advance(249);
    expect(inserted).to.have.length(0);
    await timers.advance(1);
    expect(inserted).to.have.length(1);
    const row = inserted[0] as NewDelivery;
    expect(row.eventIds).to.deep.equal(['evt_1', 'evt_2']);
    expect(row.id).to.equal(`msg_${(T0 + 250).toString(36).padStart(9, '0')}${'ab'.repeat(10)}`);
    const body = JSON.parse(row.body) as { id: string; type: string; timestamp: string; data: { readings: Array<Record<string, unknown>> } };
    expect(body).to.include({ id: row.id, type: 'sensor.reading', timestamp: new Date(T0 + 250).toISOString() });
    expect(body.data.readings.map((r) => r['value'])).to.deep.equal([20, 21]);
    expect(body.data.readings[0]).to.deep.equal({ event_id: 'evt_1', topic: 'acme/plant1/a/line1/f/temperature', value: 20, timestamp: new Date(T0 + 1).toISOString(), quality: 'good', unit: '°C' });
  });

  it('seals a batch as soon as it reaches max_size', async () => {
    const { d, timers, inserted } = await setup(record());
    for (let i = 1; i <= 4; i++) d.accept(reading('acme/plant1/a/line1/f/temperature', i, i));
    await timers.advance(0);
    expect(inserted.map((r) => r.eventIds)).to.deep.equal([['evt_1', 'evt_2', 'evt_3']]);
    await timers.advance(250);
    expect(inserted.map((r) => r.eventIds)).to.deep.equal([['evt_1', 'evt_2', 'evt_3'], ['evt_4']]);
  });

  it('drops what the topic filters or the owner\'s permissions exclude', async () => {
    const { d, timers, inserted } = await setup(record());
    d.accept(reading('acme/plant2/a/line1/f/temperature', 1, 1)); // outside the filter
    d.accept(reading('spBv1.0/g/n/m', 1, 2)); // outside the owner's read permissions
    await timers.advance(1000);
    expect(inserted).to.have.length(0);
  });

  it('renders a template per reading into a JSON array for batches', async () => {
    const { d, timers, inserted } = await setup(record({ template: '{"t": "{{topic}}", "v": {{value}}}' }));
    d.accept(reading('acme/plant1/a/line1/f/x', 1.5, 1));
    d.accept({ ...reading('acme/plant1/a/line1/f/y', 0, 2), data: { value: 'a"b', quality: 'good' } });
    await timers.advance(250);
    expect(JSON.parse((inserted[0] as NewDelivery).body)).to.deep.equal([{ t: 'acme/plant1/a/line1/f/x', v: 1.5 }, { t: 'acme/plant1/a/line1/f/y', v: 'a"b' }]);
  });

  it('queues other events at once, in the envelope', async () => {
    const { d, timers, inserted } = await setup(record({ roles: ['admin'] }));
    (d as unknown as { opts: { permissions: () => Permissions } }).opts.permissions = () => new Permissions(['#', '$SYS/#'], []);
    await d.refresh();
    d.accept({ id: 'evt_9', type: 'device.online', occurredAt: T0, data: { client_id: 'plc1', username: null } });
    await timers.advance(0);
    expect(JSON.parse((inserted[0] as NewDelivery).body)).to.deep.equal({
      id: 'evt_9', type: 'device.online', timestamp: new Date(T0).toISOString(), data: { client_id: 'plc1', username: null },
    });
  });

  it('signs with every current secret and schedules retries from the injected clock and randomness', async () => {
    const { d } = await setup(record());
    const body = Buffer.from('{"a":1}');
    const old = `whsec_${Buffer.alloc(32, 2).toString('base64')}`;
    const h = d.signedHeaders('msg_1', { 'X-A': 'b' }, [SECRET, old], T0, body);
    const mac = (s: string): string => createHmac('sha256', Buffer.from(s.slice(6), 'base64')).update(`msg_1.${T0 / 1000}.{"a":1}`).digest('base64');
    expect(h).to.include({ 'webhook-id': 'msg_1', 'webhook-timestamp': String(T0 / 1000), 'content-type': 'application/json', 'X-A': 'b' });
    expect(h['webhook-signature']).to.equal(`v1,${mac(SECRET)} v1,${mac(old)}`);
    expect(h['x-webhook-signature']).to.equal(`sha256=${createHmac('sha256', Buffer.from(SECRET.slice(6), 'base64')).update(body).digest('hex')}`);
    const fail = { kind: 'response' as const, status: 500, headers: {}, bodyExcerpt: '', truncated: false, latencyMs: 3 };
    expect(d.settlementOf({ attempt: 1, attemptBase: 0, scheduleS: [10, 60] }, T0, fail)).to.deep.equal({ status: 'pending', dueAt: T0 + 10_000 });
    expect(d.settlementOf({ attempt: 3, attemptBase: 0, scheduleS: [10, 60] }, T0, fail)).to.deep.equal({ status: 'dead', reason: 'schedule' });
    // After a replay the schedule starts again.
    expect(d.settlementOf({ attempt: 3, attemptBase: 2, scheduleS: [10, 60] }, T0, fail)).to.deep.equal({ status: 'pending', dueAt: T0 + 10_000 });
    expect(d.settlementOf({ attempt: 1, attemptBase: 0, scheduleS: [10] }, T0, { ...fail, status: 410 })).to.deep.equal({ status: 'dead', reason: 'gone' });
    expect(d.settlementOf({ attempt: 1, attemptBase: 0, scheduleS: [10] }, T0, { ...fail, status: 204 })).to.deep.equal({ status: 'succeeded' });
  });
});
