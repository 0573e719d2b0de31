/**
 * Crashes and re-sends: every acknowledged QoS 1 message is in the store exactly once after recovery, when
 * the server is killed (-9) while spooling, during a spool replay, or between spooling and a replay that
 * has to wait for the database; and when a client re-sends an unacknowledged PUBLISH on a new connection,
 * with or without DUP (MQTT.js 5 re-sends without it), while the original is only in the spool, also across
 * a kill -9. A packet id reused on the same connection after its PUBACK is a new message and is stored.
 */
import { expect } from 'chai';
import { mkdtempSync, mkdirSync, chmodSync, rmSync, writeFileSync, readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { TestPostgres, query } from '../helpers/postgres.js';
import { Load, storedValues, expectAllAckedStoredOnce } from '../helpers/load.js';
import { spawnServer, type ChildServer } from '../helpers/child-server.js';
import { RawClient, publishBytes } from '../helpers/raw-mqtt.js';
import { ADMIN, testConfig, startTestServer, waitFor, cleanup } from '../helpers/server.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';

interface ReadyBody {
  status: string;
  checks: {
    database: { state: 'healthy' | 'degraded' };
    spool: { segments: number; bytes: number; corrupt: number; holding: unknown; replay: { done: number; total: number; since: string } | null };
    backlog: { queued: number; inFlight: number };
  };
}

async function readyOf(httpPort: number): Promise<{ code: number; body: ReadyBody } | null> {
  try {
    const r = await fetch(`http://127.0.0.1:${httpPort}/ready`, { signal: AbortSignal.timeout(3_000) });
    return { code: r.status, body: (await r.json()) as ReadyBody };
  } catch {
    return null;
  }
}

/** /ready says 200 with an empty spool, nothing quarantined and nothing queued. */
async function recovered(httpPort: number, timeoutMs = 30_000): Promise<ReadyBody> {
  const r = await waitFor(async () => {
    const r = await readyOf(httpPort);
    const s = r?.body.checks.spool;
    return r && r.code === 200 && s && s.segments === 0 && s.replay === null && r.body.checks.backlog.queued === 0 ? r.body : false;
  }, timeoutMs, '/ready 200 with the spool empty');
  expect(r.checks.spool.corrupt, 'spool segments quarantined as corrupt').to.equal(0);
  return r;
}

async function degraded(httpPort: number, timeoutMs = 15_000): Promise<ReadyBody> {
  return waitFor(async () => {
    const r = await readyOf(httpPort);
    return r && r.code === 503 && r.body.checks.database.state === 'degraded' ? r.body : false;
  }, timeoutMs, '/ready 503 with the database degraded');
}

function segmentsOnDisk(dataDir: string): string[] {
  const dir = join(dataDir, 'spool');
  return existsSync(dir) ? readdirSync(dir).filter((n) => n.endsWith('.seg')).sort() : [];
}

async function valuesOf(url: string, topic: string): Promise<number[]> {
  const rows = await query<{ v: string }>(url,
    'SELECT s.v_num AS v FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name = $1 ORDER BY s.time', [topic]);
  return rows.map((r) => Number(r.v));
}

async function appliedSegments(url: string): Promise<Set<string>> {
  const rows = await query<{ segment: string }>(url, 'SELECT segment FROM spool_applied');
  return new Set(rows.map((r) => r.segment));
}

describe('crash-resend', function () {
  this.timeout(120_000);
  const pgs = new TestPostgres({ timescale: false });
  let dbUp = false;
  /** Start and stop one at a time (a failed test's body may still be stopping it when the next test starts it). */
  let dbOp: Promise<unknown> = Promise.resolve();
  const children: ChildServer[] = [];
  const raws: RawClient[] = [];
  const dirs: string[] = [];
  const loads: Load[] = [];
  let inProcess: { server: RunningServer | undefined; config: Config } | undefined;

  function dbStart(): Promise<void> {
    const op = dbOp.catch(() => undefined).then(async () => {
      if (dbUp) return;
      await pgs.start();
      dbUp = true;
    });
    dbOp = op;
    return op;
  }
  function dbStop(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    const op = dbOp.catch(() => undefined).then(async () => {
      if (!dbUp) return;
      dbUp = false;
      await pgs.stop(mode);
    });
    dbOp = op;
    return op;
  }

  /** A work folder with `data/` (the server's data dir) and `config.json` (UNS_CONFIG) for child servers. */
  function workDir(store: Record<string, number> = {}): { dataDir: string; env: Record<string, string> } {
    const dir = mkdtempSync(join(tmpdir(), 'uns-crash-'));
    chmodSync(dir, 0o755);
    dirs.push(dir);
    const dataDir = join(dir, 'data');
    mkdirSync(dataDir, { mode: 0o755 });
    const file = join(dir, 'config.json');
    writeFileSync(file, JSON.stringify({ store: { probeIntervalMs: 200, healthIntervalMs: 300, ...store } }));
    return { dataDir, env: { UNS_CONFIG: file } };
  }

  async function spawn(w: { dataDir: string; env: Record<string, string> }, url: string, ports: { mqttPort?: number; httpPort?: number } = {}): Promise<ChildServer> {
    const s = await spawnServer({ dataDir: w.dataDir, databaseUrl: url, env: w.env, ...ports });
    children.push(s);
    return s;
  }

  /**
   * An in-process server (its writer's and pipeline's counters are asserted), healthy, with no database
   * connection checked out, so that stopping the database meets no query in flight.
   */
  async function startInProcess(url: string, store: Record<string, number> = {}): Promise<RunningServer> {
    const config = testConfig(url, {
      store: { probeIntervalMs: 200, healthIntervalMs: 300, ...store },
      webhooks: { pollIntervalMs: 60_000, refreshIntervalMs: 3_600_000 },
    });
    inProcess = { server: undefined, config };
    const server = await startTestServer(config);
    inProcess.server = server;
    await recovered(server.httpPort);
    const pool = server.store.pool;
    await waitFor(() => pool.waitingCount === 0 && pool.idleCount === pool.totalCount, 10_000, 'no database connection in use');
    return server;
  }

  async function rawConnect(port: number, clientId: string): Promise<RawClient> {
    const { client, returnCode } = await RawClient.connect(port, { clientId, username: ADMIN.username, password: ADMIN.password, clean: true });
    raws.push(client);
    expect(returnCode, `CONNACK for ${clientId}`).to.equal(0);
    return client;
  }

  async function puback(c: RawClient, messageId: number, what: string): Promise<void> {
    const p = await c.next('puback', 15_000);
    expect(p, `PUBACK for ${what}`).to.not.equal(null);
    expect((p as { messageId?: number }).messageId).to.equal(messageId);
  }

  function newLoad(port: number, publishers: number, window: number, prefix: string): Load {
    const l = new Load(port, publishers, window, prefix);
    loads.push(l);
    return l;
  }

  before(async () => {
    await dbStart();
  });
  beforeEach(async () => {
    await dbStart(); // a failed test may have left it stopped
  });
  afterEach(async () => {
    for (const l of loads.splice(0)) l.stop();
    for (const r of raws.splice(0)) r.destroy();
    if (inProcess) {
      await inProcess.server?.stop().catch(() => undefined);
      cleanup(inProcess.config);
      inProcess = undefined;
    }
    for (const c of children.splice(0)) await c.kill('SIGKILL');
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  after(async () => {
    await pgs.destroy();
  });

  it('kill -9 while spooling: every acknowledged message is stored once after restart', async () => {
    const t0 = Date.now();
    const url = await pgs.createDatabase('crash_spooling');
    const w = workDir();
    let server = await spawn(w, url);
    const load = newLoad(server.mqttPort, 6, 20, 'ks');
    await load.start();
    await waitFor(() => load.total > 500, 20_000, 'load to get going');

    await dbStop('immediate');
    await waitFor(async () => ((await readyOf(server.httpPort))?.body.checks.spool.segments ?? 0) > 0, 15_000, 'spool segments');
    const ackedAtSpool = load.total;
    await waitFor(() => load.total > ackedAtSpool + 500, 15_000, 'acknowledgements to go on while spooling');
    await server.kill('SIGKILL');
    load.stop();
    const onDisk = segmentsOnDisk(w.dataDir);
    expect(onDisk.length, 'segments left by the killed server').to.be.greaterThan(0);

    await dbStart();
    server = await spawn(w, url, { mqttPort: server.mqttPort, httpPort: server.httpPort });
    await recovered(server.httpPort);
    const applied = await appliedSegments(url);
    for (const s of onDisk) expect(applied.has(s), `segment ${s} applied`).to.equal(true);
    expectAllAckedStoredOnce(load, await storedValues(url, 'ks'));
    console.log(`      acked ${load.total} (${load.total - ackedAtSpool}+ after spooling began), ${onDisk.length} segments replayed, ${Date.now() - t0} ms`);
  });

  it('kill -9 during a spool replay: no segment is applied twice or lost', async () => {
    const t0 = Date.now();
    const url = await pgs.createDatabase('crash_replay');
    const w = workDir({ batchMaxItems: 20 }); // more, smaller segments: a replay long enough to catch
    let server = await spawn(w, url);
    const load = newLoad(server.mqttPort, 8, 20, 'kr');
    await load.start();
    await waitFor(() => load.total > 500, 20_000, 'load to get going');

    await dbStop('fast');
    await waitFor(async () => ((await readyOf(server.httpPort))?.body.checks.spool.segments ?? 0) >= 400, 20_000, 'a large spool');
    load.stop();
    // Everything received is durable (spooled) before the replay starts.
    await waitFor(async () => {
      const b = (await readyOf(server.httpPort))?.body;
      return b && b.checks.backlog.queued === 0 && b.checks.backlog.inFlight === 0;
    }, 10_000, 'the writer to go idle');
    const before = segmentsOnDisk(w.dataDir);

    await dbStart();
    const caught = await waitFor(async () => {
      const r = await readyOf(server.httpPort);
      if (r?.code === 200) throw new Error('the replay finished before it could be caught: make the spool bigger');
      const p = r?.body.checks.spool.replay;
      return p && p.done > 0 && p.done < p.total ? p : false;
    }, 20_000, 'a replay in progress');
    await server.kill('SIGKILL');
    const left = segmentsOnDisk(w.dataDir);
    const appliedAtKill = await appliedSegments(url);
    expect(left.length, 'segments left after the kill').to.be.greaterThan(0);
    expect(appliedAtKill.size, 'segments applied before the kill').to.be.greaterThan(0);
    // Committed but not yet removed when the process died: must not be applied again.
    const committedNotRemoved = left.filter((s) => appliedAtKill.has(s)).length;

    server = await spawn(w, url, { mqttPort: server.mqttPort, httpPort: server.httpPort });
    await recovered(server.httpPort);
    const applied = await appliedSegments(url);
    for (const s of before) expect(applied.has(s), `segment ${s} applied`).to.equal(true);
    expect(applied.size, 'markers: one per segment').to.equal(before.length);
    expectAllAckedStoredOnce(load, await storedValues(url, 'kr'));
    console.log(`      ${before.length} segments, killed at replay ${caught.done}/${caught.total}, ${left.length} left on disk `
      + `(${committedNotRemoved} committed but not removed), acked ${load.total}, ${Date.now() - t0} ms`);
  });

  it('kill -9 between spooling and replay, database still down at restart: starts degraded, replays when it returns', async () => {
    const t0 = Date.now();
    const url = await pgs.createDatabase('crash_down_at_restart');
    const w = workDir();
    let server = await spawn(w, url);
    const load = newLoad(server.mqttPort, 6, 20, 'kd');
    await load.start();
    await waitFor(() => load.total > 300, 20_000, 'load to get going');
    await dbStop('fast');
    await waitFor(async () => ((await readyOf(server.httpPort))?.body.checks.spool.segments ?? 0) > 0, 15_000, 'spool segments');
    const ackedAtSpool = load.total;
    await waitFor(() => load.total > ackedAtSpool + 300, 15_000, 'acknowledgements to go on while spooling');
    await server.kill('SIGKILL');
    load.stop();
    const onDisk = segmentsOnDisk(w.dataDir);
    expect(onDisk.length).to.be.greaterThan(0);

    server = await spawn(w, url, { mqttPort: server.mqttPort, httpPort: server.httpPort });
    const r = await degraded(server.httpPort);
    expect(r.checks.spool.segments, 'the spool left by the killed server').to.equal(onDisk.length);
    expect(r.checks.spool.replay).to.equal(null);
    // The restarted server acknowledges into the spool too.
    const load2 = newLoad(server.mqttPort, 4, 10, 'ke');
    await load2.start();
    await waitFor(() => load2.total > 200, 15_000, 'acknowledgements from the restarted, degraded server');
    load2.stop();
    expect(segmentsOnDisk(w.dataDir).length).to.be.greaterThan(onDisk.length);
    expect((await readyOf(server.httpPort))?.code).to.equal(503);

    await dbStart();
    await recovered(server.httpPort);
    expectAllAckedStoredOnce(load, await storedValues(url, 'kd'));
    expectAllAckedStoredOnce(load2, await storedValues(url, 'ke'));
    console.log(`      acked ${load.total} + ${load2.total}, ${onDisk.length} segments from the killed server, ${Date.now() - t0} ms`);
  });

  for (const variant of [
    { dup: false, original: 'socket closed right after the PUBLISH' },
    { dup: true, original: 'PUBACK lost' },
  ] as const) {
    it(`re-send with DUP=${variant.dup} on a new connection (${variant.original}), original in the spool: one PUBACK, one row`, async () => {
      const url = await pgs.createDatabase(`resend_dup_${variant.dup}`);
      const server = await startInProcess(url);
      await dbStop('fast');
      await degraded(server.httpPort);
      const topic = `acme/plant2/warehouse/line7/rs${variant.dup ? 'd' : 'n'}/seq`;
      const payload = '{"value": 42}';
      const clientId = `resend-${variant.dup}`;

      const a = await rawConnect(server.mqttPort, clientId);
      a.write(publishBytes(topic, payload, { qos: 1, messageId: 7 }));
      if (variant.dup) await puback(a, 7, 'the original'); // ... and then pretend it was lost
      a.socket.end();
      // The original is in the spool (only there) before the re-send.
      await waitFor(() => server.writer.stats.spooledItems === 1, 10_000, 'the original in the spool');
      expect(server.writer.stats.committedItems).to.equal(0);

      const b = await rawConnect(server.mqttPort, clientId);
      b.write(publishBytes(topic, payload, { qos: 1, messageId: 7, dup: variant.dup }));
      await puback(b, 7, 'the re-send');
      expect(server.pipeline.stats.duplicatesDropped, 're-send recognised').to.equal(1);
      expect(server.writer.stats.spooledItems, 're-send not spooled again').to.equal(1);
      b.destroy();

      await dbStart();
      await recovered(server.httpPort);
      expect(await valuesOf(url, topic)).to.deep.equal([42]);
    });
  }

  it('re-send without DUP across a kill -9: original spooled, restart with the database down, re-send spooled again, one row', async () => {
    const url = await pgs.createDatabase('resend_kill_spooled');
    const w = workDir();
    let server = await spawn(w, url);
    await dbStop('fast');
    await degraded(server.httpPort);
    const topic = 'acme/plant2/warehouse/line7/rsk/seq';
    const payload = '{"value": 42}';

    const a = await rawConnect(server.mqttPort, 'resend-kill');
    a.write(publishBytes(topic, payload, { qos: 1, messageId: 7 }));
    await puback(a, 7, 'the original'); // in the spool; the client is taken not to have seen this
    expect((await readyOf(server.httpPort))?.body.checks.spool.segments).to.equal(1);
    await server.kill('SIGKILL');
    a.destroy();
    expect(segmentsOnDisk(w.dataDir).length).to.equal(1);

    server = await spawn(w, url, { mqttPort: server.mqttPort, httpPort: server.httpPort });
    expect((await degraded(server.httpPort)).checks.spool.segments).to.equal(1);
    const b = await rawConnect(server.mqttPort, 'resend-kill');
    b.write(publishBytes(topic, payload, { qos: 1, messageId: 7, dup: false }));
    await puback(b, 7, 'the re-send');
    b.destroy();
    // Nothing could tell it was a re-send (memory empty, database down): it is spooled again.
    await waitFor(async () => (await readyOf(server.httpPort))?.body.checks.spool.segments === 2, 10_000, 'the re-send in the spool');

    await dbStart();
    await recovered(server.httpPort);
    expect(await valuesOf(url, topic), 'replay stores the message once').to.deep.equal([42]);
    expect((await appliedSegments(url)).size).to.equal(2);
  });

  it('re-send without DUP across a kill -9: original committed, restart with the database up, one row', async () => {
    const url = await pgs.createDatabase('resend_kill_committed');
    const w = workDir();
    let server = await spawn(w, url);
    const topic = 'acme/plant2/warehouse/line7/rsc/seq';
    const payload = '{"value": 42}';
    const a = await rawConnect(server.mqttPort, 'resend-committed');
    a.write(publishBytes(topic, payload, { qos: 1, messageId: 7 }));
    await puback(a, 7, 'the original');
    await server.kill('SIGKILL');
    a.destroy();
    expect(await valuesOf(url, topic)).to.deep.equal([42]);

    server = await spawn(w, url, { mqttPort: server.mqttPort, httpPort: server.httpPort });
    await recovered(server.httpPort);
    const b = await rawConnect(server.mqttPort, 'resend-committed');
    b.write(publishBytes(topic, payload, { qos: 1, messageId: 7, dup: false }));
    await puback(b, 7, 'the re-send');
    // A later, distinct message on the same connection is still stored (the re-send did not poison it).
    b.write(publishBytes(topic, '{"value": 43}', { qos: 1, messageId: 8 }));
    await puback(b, 8, 'a new message');
    expect(await valuesOf(url, topic)).to.deep.equal([42, 43]);
  });

  // With the outage, the two messages of a pair land in two spool segments: the second is marked as reusing
  // the key, so replay's duplicate check (same redelivery key near the same time) passes it by.
  for (const outage of [false, true]) {
    it(`a packet id reused on the same connection after its PUBACK is a new message: two rows${outage ? ' (both spooled, then replayed)' : ''}`, async () => {
      const url = await pgs.createDatabase(`reuse_${outage ? 'spooled' : 'live'}`);
      const server = await startInProcess(url);
      if (outage) {
        await dbStop('fast');
        await degraded(server.httpPort);
      }
      const cell = outage ? 'rus' : 'rul';
      const sends = [
        { topic: `acme/plant2/warehouse/line7/${cell}/seq`, payload: '{"value": 5}', value: 5 }, // JSON, no timestamp
        { topic: `acme/plant2/warehouse/line7/${cell}/count`, payload: '1234', value: 1234 }, // bare number
      ];
      const c = await rawConnect(server.mqttPort, `reuse-${cell}`);
      for (const s of sends) {
        for (let i = 0; i < 2; i++) {
          c.write(publishBytes(s.topic, s.payload, { qos: 1, messageId: 7 }));
          await puback(c, 7, `${s.topic} #${i + 1}`);
        }
      }
      c.destroy();
      expect(server.pipeline.stats.duplicatesDropped).to.equal(0);
      if (outage) {
        expect(server.writer.stats.spooledItems).to.equal(4);
        await dbStart();
        await recovered(server.httpPort);
      }
      const stored: Record<string, number[]> = {};
      const expected: Record<string, number[]> = {};
      for (const s of sends) {
        stored[s.topic] = await valuesOf(url, s.topic);
        expected[s.topic] = [s.value, s.value];
      }
      expect(stored, 'both messages of each pair stored').to.deep.equal(expected);
    });
  }

  it('the same packet id and payload on a later connection, long after its original, is a new message: two rows', async () => {
    const url = await pgs.createDatabase('reuse_later');
    const server = await startInProcess(url, { resendLagMs: 300 });
    const topic = 'acme/plant2/warehouse/line7/rul2/seq';
    const first = await rawConnect(server.mqttPort, 'reboot-device');
    first.write(publishBytes(topic, '{"value": 1}', { qos: 1, messageId: 1 }));
    await puback(first, 1, 'the first boot message');
    // The device keeps its connection past the lag: that message's PUBACK cannot have been lost.
    const t0 = Date.now();
    await waitFor(() => Date.now() - t0 > 500, 2_000, 'the connection to outlive the resend lag');
    first.destroy();
    await waitFor(() => server.broker!.connectedClients === 0, 5_000, 'the first connection to close');
    // It reboots and starts its packet ids at 1 again, with the same first message.
    const second = await rawConnect(server.mqttPort, 'reboot-device');
    second.write(publishBytes(topic, '{"value": 1}', { qos: 1, messageId: 1 }));
    await puback(second, 1, 'the second boot message');
    expect(server.pipeline.stats.duplicatesDropped).to.equal(0);
    expect(await valuesOf(url, topic)).to.deep.equal([1, 1]);
  });
});
