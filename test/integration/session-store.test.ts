/**
 * The PostgreSQL session store on its own: the aedes-persistence contract (abstract.js under node:test),
 * what a new instance reads back of what one wrote (the restart), the per-session queue bound and its two
 * overflow policies, expiry, what the journal does not write (a message queued and acknowledged within one
 * commit), and a database outage (changes kept, nothing held, written when it returns).
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import pg from 'pg';
import { TestPostgres, query } from '../helpers/postgres.js';
import { waitFor } from '../helpers/server.js';
import { SessionStore, type SessionStoreOptions } from '../../broker/session-store.js';
import { migrate } from '../../bridge/sinks/store/migrations.js';
import { silentLogger } from '../../src/core/log.js';
import { packageRoot } from '../../src/core/paths.js';

type Pkt = { cmd: string; topic?: string; payload?: Buffer; qos?: number; retain?: boolean; dup?: boolean; messageId?: number; brokerId?: string; brokerCounter?: number; properties?: Record<string, unknown> };

function publish(topic: string, n: number, over: Partial<Pkt> = {}): Pkt {
  return { cmd: 'publish', topic, payload: Buffer.from(`m${n}`), qos: 1, retain: false, dup: false, brokerId: 'b1', brokerCounter: n, ...over };
}

async function drain(stream: NodeJS.ReadableStream): Promise<Pkt[]> {
  const out: Pkt[] = [];
  for await (const p of stream as AsyncIterable<Pkt>) out.push(p);
  return out;
}

describe('session store (PostgreSQL)', function () {
  this.timeout(120_000);
  const pgs = new TestPostgres({ timescale: false });
  let url = '';
  let pool: pg.Pool;
  const stores: SessionStore[] = [];

  const open = async (over: Partial<SessionStoreOptions> = {}): Promise<SessionStore> => {
    const s = new SessionStore({ pool, log: silentLogger(), queueMax: 0, overflow: 'drop-new', expiryMs: 0, ...over });
    stores.push(s);
    await s.setup({ id: 'b1', clients: {} });
    await s.load();
    return s;
  };
  /** Closes the store (its journal written), as at a graceful stop, and opens a new one on the same tables. */
  const reopen = async (s: SessionStore, over: Partial<SessionStoreOptions> = {}): Promise<SessionStore> => {
    await s.close();
    return open(over);
  };

  before(async () => {
    await pgs.start();
    url = await pgs.createDatabase('sessions');
    pool = new pg.Pool({ connectionString: url, max: 4 });
    pool.on('error', () => undefined);
    await migrate(pool, silentLogger());
  });
  beforeEach(async () => {
    await query(url, 'TRUNCATE mqtt_sessions, mqtt_session_subs, mqtt_session_queue, mqtt_session_incoming');
  });
  afterEach(async () => {
    for (const s of stores.splice(0)) await s.close(500);
  });
  after(async () => {
    await pool.end();
    await pgs.destroy();
  });

  it('meets the aedes-persistence contract (abstract.js, node:test)', async () => {
    const file = join(packageRoot(), 'dist', 'test', 'contract', 'session-store.contract.js');
    const child = spawn(process.execPath, ['--test', '--test-reporter=tap', file], {
      env: { ...process.env, UNS_TEST_DATABASE_URL: url }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => { out += b.toString(); });
    child.stderr.on('data', (b: Buffer) => { out += b.toString(); });
    const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    const count = (name: string): number => {
      const m = new RegExp(`^# ${name} (\\d+)$`, 'm').exec(out);
      return m ? Number(m[1]) : -1;
    };
    const failures = out.split('\n').filter((l) => /^\s*not ok /.test(l));
    expect(failures, out.slice(-4000)).to.deep.equal([]);
    expect(code, out.slice(-4000)).to.equal(0);
    expect(count('fail')).to.equal(0);
    expect(count('pass'), 'contract cases passed').to.be.greaterThan(40);
  });

  it('a new instance reads back subscriptions, queues in order with packet ids, PUBREL state and QoS 2 receive state', async () => {
    const a = await open();
    const client = { id: 'scada-1', clean: false };
    await a.addSubscriptions(client, [{ topic: 'acme/+/temp', qos: 1 }, { topic: 'acme/#', qos: 2, rap: true, nl: false, rh: 0 }, { topic: 'acme/q0', qos: 0 }]);
    const subs = await a.subscriptionsByTopic('acme/line1/temp');
    expect(subs.map((s) => s.topic).sort()).to.deep.equal(['acme/#', 'acme/+/temp']);
    for (let i = 1; i <= 5; i++) await a.outgoingEnqueueCombi(subs.filter((s) => s.topic === 'acme/#'), publish('acme/line1/temp', i, { qos: 2, properties: { correlationData: Buffer.from([0, 1, 255]), userProperties: { site: 'a' } } }));
    // Two in flight: one with its packet id, one after PUBREC (the PUBREL stands in for it).
    await a.outgoingUpdate(client, { ...publish('acme/line1/temp', 1, { qos: 2 }), messageId: 11 });
    await a.outgoingUpdate(client, { ...publish('acme/line1/temp', 2, { qos: 2 }), messageId: 12 });
    await a.outgoingUpdate(client, { cmd: 'pubrel', messageId: 12, brokerId: 'other' });
    // QoS 2 received, PUBREC sent, PUBREL not yet.
    await a.incomingStorePacket(client, { ...publish('acme/in', 9, { qos: 2 }), messageId: 77 });

    const b = await reopen(a);
    const restored = (await b.subscriptionsByClient(client)).map((s) => `${s.topic}:${s.qos}`).sort();
    expect(restored).to.deep.equal(['acme/#:2', 'acme/+/temp:1', 'acme/q0:0']);
    expect((await b.subscriptionsByTopic('acme/x/temp')).map((s) => s.topic).sort(), 'QoS 0 subscriptions queue nothing').to.deep.equal(['acme/#', 'acme/+/temp']);
    const queue = await drain(b.outgoingStream(client));
    expect(queue.map((p) => p.cmd)).to.deep.equal(['publish', 'pubrel', 'publish', 'publish', 'publish']);
    expect(queue.map((p) => p.messageId ?? null)).to.deep.equal([11, 12, null, null, null]);
    expect(queue.filter((p) => p.cmd === 'publish').map((p) => p.payload?.toString())).to.deep.equal(['m1', 'm3', 'm4', 'm5']);
    expect(queue[0]!.properties, 'MQTT 5 properties, Buffers included').to.deep.equal({ correlationData: Buffer.from([0, 1, 255]), userProperties: { site: 'a' } });
    const inc = await b.incomingGetPacket(client, { messageId: 77 });
    expect(inc.payload?.toString()).to.equal('m9');
    expect(b.snapshot()).to.include({ sessions: 1, queued: 5 });

    // Acknowledged after the restart: gone for the next one too.
    await b.outgoingClearMessageId(client, { messageId: 11 });
    await b.incomingDelPacket(client, { messageId: 77 });
    await b.removeSubscriptions(client, ['acme/+/temp']);
    const c = await reopen(b);
    expect((await drain(c.outgoingStream(client))).map((p) => p.messageId ?? null)).to.deep.equal([12, null, null, null]);
    expect((await c.subscriptionsByClient(client)).map((s) => s.topic).sort()).to.deep.equal(['acme/#', 'acme/q0']);
    let missing: Error | null = null;
    await c.incomingGetPacket(client, { messageId: 77 }).catch((e: Error) => { missing = e; });
    expect(missing, 'QoS 2 receive state released by PUBREL').to.be.an('error');
  });

  it('reads a long queue back in its order (numeric, across pages of the start-up read)', async () => {
    const a = await open();
    const client = { id: 'long', clean: false };
    await a.addSubscriptions(client, [{ topic: 'acme/#', qos: 1 }]);
    const subs = await a.subscriptionsByTopic('acme/x');
    for (let i = 1; i <= 25_050; i++) void a.outgoingEnqueueCombi(subs, publish('acme/x', i));
    await a.outgoingEnqueueCombi(subs, publish('acme/x', 25_051));
    const b = await reopen(a);
    const values = (await drain(b.outgoingStream(client))).map((p) => Number(p.payload?.toString().slice(1)));
    expect(values.length).to.equal(25_051);
    expect(values.every((v, i) => v === i + 1), 'in the order queued').to.equal(true);
  });

  it('a clean session discards the persistent one, in the database too', async () => {
    const a = await open();
    const client = { id: 'hmi', clean: false };
    await a.addSubscriptions(client, [{ topic: 'acme/#', qos: 1 }]);
    await a.outgoingEnqueueCombi(await a.subscriptionsByTopic('acme/x'), publish('acme/x', 1));
    await a.cleanSubscriptions({ id: 'hmi', clean: true });
    await a.outgoingClearMessageId(client, { messageId: undefined as unknown as number });
    const b = await reopen(a);
    expect(await b.subscriptionsByClient(client)).to.deep.equal([]);
    expect(b.owner('hmi')).to.equal(undefined);
    expect((await query(url, 'SELECT count(*)::int AS n FROM mqtt_session_subs'))[0]!['n']).to.equal(0);
  });

  it('bounds an offline queue: drop-new keeps the first, drop-old the last, each drop counted', async () => {
    for (const overflow of ['drop-new', 'drop-old'] as const) {
      await query(url, 'TRUNCATE mqtt_sessions, mqtt_session_subs, mqtt_session_queue, mqtt_session_incoming');
      const a = await open({ queueMax: 3, overflow });
      const client = { id: `slow-${overflow}`, clean: false };
      await a.addSubscriptions(client, [{ topic: 'acme/#', qos: 1 }]);
      const subs = await a.subscriptionsByTopic('acme/v');
      for (let i = 1; i <= 5; i++) await a.outgoingEnqueueCombi(subs, publish('acme/v', i));
      expect(a.snapshot()).to.include({ dropped: 2, queued: 3 });
      const b = await reopen(a, { queueMax: 3, overflow });
      const kept = (await drain(b.outgoingStream(client))).map((p) => p.payload?.toString());
      expect(kept, overflow).to.deep.equal(overflow === 'drop-new' ? ['m1', 'm2', 'm3'] : ['m3', 'm4', 'm5']);
    }
  });

  it('expires a session not connected for the expiry, and keeps one whose client is connected', async () => {
    let now = Date.now();
    const clients: Record<string, unknown> = {};
    const a = new SessionStore({ pool, log: silentLogger(), queueMax: 0, overflow: 'drop-new', expiryMs: 60_000, now: () => now });
    stores.push(a);
    await a.setup({ id: 'b1', clients });
    await a.load();
    await a.addSubscriptions({ id: 'gone', clean: false }, [{ topic: 'acme/#', qos: 1 }]);
    await a.addSubscriptions({ id: 'here', clean: false }, [{ topic: 'acme/#', qos: 1 }]);
    await a.outgoingEnqueueCombi(await a.subscriptionsByTopic('acme/x'), publish('acme/x', 1));
    clients['here'] = {};
    now += 30_000;
    a.sweep();
    expect(a.snapshot()).to.include({ sessions: 2, expired: 0 });
    now += 31_000;
    a.sweep();
    expect(a.snapshot()).to.include({ sessions: 1, expired: 1, queued: 1 });
    expect((await a.subscriptionsByTopic('acme/x')).map((s) => s.clientId)).to.deep.equal(['here']);
    const b = await reopen(a);
    expect(await b.subscriptionsByClient({ id: 'gone' })).to.deep.equal([]);
    expect((await b.subscriptionsByClient({ id: 'here' })).length).to.equal(1);
  });

  it('does not write a message queued and acknowledged within one commit, and writes the removal of one already written', async () => {
    const a = await open();
    const client = { id: 'live', clean: false };
    await a.addSubscriptions(client, [{ topic: 'acme/#', qos: 1 }]);
    const p1 = publish('acme/x', 1);
    // Queued (committed), packet id set, acknowledged: the row written by the commit is removed again.
    await a.outgoingEnqueue({ clientId: 'live' }, p1);
    expect((await query(url, 'SELECT count(*)::int AS n FROM mqtt_session_queue'))[0]!['n']).to.equal(1);
    await a.outgoingUpdate(client, { ...p1, messageId: 1 });
    await a.outgoingClearMessageId(client, { messageId: 1 });
    // Queued and acknowledged before any write: both promises settle after the commit of what came before.
    const p2 = publish('acme/x', 2);
    const queued = a.outgoingEnqueue({ clientId: 'live' }, p2);
    await a.outgoingUpdate(client, { ...p2, messageId: 2 }).catch(() => undefined);
    await queued;
    await a.outgoingClearMessageId(client, { messageId: 2 });
    const b = await reopen(a);
    expect(await drain(b.outgoingStream(client))).to.deep.equal([]);
    expect((await query(url, 'SELECT count(*)::int AS n FROM mqtt_session_queue'))[0]!['n']).to.equal(0);
  });

  it('queues a QoS 1 message before its PUBACK, and Aedes queueing the same message after it adds no second copy', async () => {
    const a = await open();
    await a.addSubscriptions({ id: 'away', clean: false }, [{ topic: 'acme/#', qos: 1 }]);
    const payload = Buffer.from('{"value":1}');
    const received = { cmd: 'publish', topic: 'acme/x', payload, qos: 1, retain: false, dup: false, messageId: 5 };
    const early = a.queueBeforeAck(received);
    expect(early, 'something to wait for: a persistent session subscribes').to.not.equal(null);
    await early;
    expect((await query(url, 'SELECT count(*)::int AS n FROM mqtt_session_queue'))[0]!['n'], 'committed before the PUBACK').to.equal(1);
    expect(a.queueBeforeAck({ ...received, topic: 'other/x' }), 'no persistent subscriber: nothing to wait for').to.equal(null);
    // Aedes' publish: a new packet object with its own identity, carrying the same payload Buffer.
    await a.outgoingEnqueueCombi(await a.subscriptionsByTopic('acme/x'), { ...received, messageId: undefined, brokerId: 'b1', brokerCounter: 9001 });
    const queue = await drain(a.outgoingStream({ id: 'away' }));
    expect(queue.map((p) => p.brokerCounter)).to.deep.equal([9001]);
    // The live delivery finds it by that identity.
    await a.outgoingUpdate({ id: 'away' }, { ...queue[0]!, messageId: 3 });
    const b = await reopen(a);
    expect((await drain(b.outgoingStream({ id: 'away' }))).map((p) => [p.brokerCounter, p.messageId])).to.deep.equal([[9001, 3]]);
  });

  it('cluster mode: takes over the sessions of an instance only once its lease is stale', async () => {
    await query(url, 'TRUNCATE cluster_instances');
    const p = await open({ instanceId: 'inst-p' });
    await p.addSubscriptions({ id: 'held-by-p', clean: false }, [{ topic: 'acme/#', qos: 1 }]);
    await p.outgoingEnqueueCombi(await p.subscriptionsByTopic('acme/x'), publish('acme/x', 1));
    const b = await open({ instanceId: 'inst-b' });
    expect(b.holds('held-by-p'), 'not read by another instance at start-up').to.equal(false);
    // P renewed its lease when it read its sessions: it is alive as far as the database can tell.
    expect(await b.adoptInstance('inst-p')).to.equal(0);
    expect(await p.ownerInstance('held-by-p')).to.equal('inst-p');
    // P's lease goes stale (it died): now B takes its sessions, with their queues.
    await query(url, "UPDATE cluster_instances SET seen_at = now() - interval '10 seconds' WHERE instance = 'inst-p'");
    expect(await b.adoptInstance('inst-p')).to.equal(1);
    expect(b.holds('held-by-p')).to.equal(true);
    expect((await drain(b.outgoingStream({ id: 'held-by-p' }))).map((x) => x.payload?.toString())).to.deep.equal(['m1']);
    expect(await b.ownerInstance('held-by-p')).to.equal('inst-b');
    // P restarting after that reads nothing of it.
    await p.close();
    const p2 = await open({ instanceId: 'inst-p' });
    expect(p2.holds('held-by-p')).to.equal(false);
  });

  it('keeps changes in memory while the database is down, without holding anyone, and writes them when it returns', async () => {
    const a = await open();
    const client = { id: 'plant-hmi', clean: false };
    await a.addSubscriptions(client, [{ topic: 'acme/#', qos: 1 }]);
    await pgs.stop('immediate');
    try {
      const subs = await a.subscriptionsByTopic('acme/x');
      // Resolves although nothing can be written: the broker is not held by the sessions' database.
      await a.outgoingEnqueueCombi(subs, publish('acme/x', 1));
      await waitFor(() => a.snapshot().failingSince !== null, 10_000, 'the session store to notice the outage');
      for (let i = 2; i <= 4; i++) await a.outgoingEnqueueCombi(subs, publish('acme/x', i));
      expect(a.snapshot().unsaved).to.be.greaterThan(0);
      expect((await drain(a.outgoingStream(client))).length).to.equal(4);
    } finally {
      await pgs.start();
    }
    await waitFor(() => a.snapshot().failingSince === null && a.snapshot().unsaved === 0, 30_000, 'the journal written after the outage');
    const b = await reopen(a);
    expect((await drain(b.outgoingStream(client))).map((p) => p.payload?.toString())).to.deep.equal(['m1', 'm2', 'm3', 'm4']);
  });
});
