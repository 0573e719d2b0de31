/**
 * The delivery promise under faults, with real processes: a QoS 1 publish acknowledged by the server is in
 * the store after kill -9, and across a database outage (spool, then replay), exactly once.
 */
import { expect } from 'chai';
import { mkdtempSync, chmodSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import mqtt from 'mqtt';
import { TestPostgres, query } from '../helpers/postgres.js';
import { Load, storedValues, expectAllAckedStoredOnce } from '../helpers/load.js';
import { spawnServer } from '../helpers/child-server.js';
import { ADMIN, connect, testConfig, startTestServer, waitFor, cleanup } from '../helpers/server.js';
import type { RunningServer } from '../../src/main.js';

describe('durability - kill -9 during QoS 1 load', function () {
  this.timeout(120_000);
  const pgs = new TestPostgres({ timescale: false });
  let dataDir: string;

  before(async () => {
    await pgs.start();
  });
  after(async () => {
    await pgs.destroy();
  });
  beforeEach(() => {
    dataDir = mkdtempSync(join(tmpdir(), 'uns-kill-'));
    chmodSync(dataDir, 0o755);
  });
  afterEach(() => rmSync(dataDir, { recursive: true, force: true }));

  for (const store of ['external PostgreSQL', 'embedded PostgreSQL'] as const) {
    it(`keeps every acknowledged message (${store})`, async () => {
      const url = store === 'external PostgreSQL' ? await pgs.createDatabase('kill9') : null;
      let server = await spawnServer({ dataDir, databaseUrl: url });
      const load = new Load(server.mqttPort, 8, 20, 'k');
      // A step that fails part-way leaves no server behind (kill is a no-op for one already gone).
      try {
        await load.start();
        await waitFor(() => load.total > 2_000, 20_000, 'load to get going');
        await server.kill('SIGKILL');
        load.stop();
        const ackedAtKill = load.total;
        server = await spawnServer({ dataDir, databaseUrl: url, mqttPort: server.mqttPort, httpPort: server.httpPort });
        const dbUrl = url ?? `postgresql://uns@/postgres?host=${encodeURIComponent(join(dataDir, 'pg', 'run'))}`;
        expect(ackedAtKill).to.be.greaterThan(2_000);
        expectAllAckedStoredOnce(load, await storedValues(dbUrl, 'k'));
      } finally {
        load.stop();
        await server.kill('SIGTERM');
      }
    });
  }
});

describe('durability - database outage under load', function () {
  this.timeout(120_000);
  const pgs = new TestPostgres({ timescale: false });
  let server: RunningServer;
  let config: ReturnType<typeof testConfig>;

  before(async () => {
    await pgs.start();
    config = testConfig(await pgs.createDatabase('outage'), {
      store: { probeIntervalMs: 200, highWaterItems: 2_000, lowWaterItems: 1_000 },
    });
    server = await startTestServer(config);
  });
  after(async () => {
    await server?.stop();
    await pgs.destroy();
    cleanup(config);
  });

  it('spools while the database is down, keeps live delivery, reports degraded, then drains exactly once', async () => {
    const live: number[] = [];
    const sub = await connect(server.mqttPort, { clientId: 'outage-sub' });
    sub.on('message', () => live.push(Date.now()));
    await new Promise<void>((res, rej) => sub.subscribe('acme/plant2/warehouse/line7/#', { qos: 0 }, (e) => (e ? rej(e) : res())));
    const load = new Load(server.mqttPort, 4, 10, 'o');
    await load.start();
    await waitFor(() => load.total > 500, 20_000, 'load before the outage');

    await pgs.stop('fast');
    const outageStart = Date.now();
    await waitFor(async () => (await fetch(`http://127.0.0.1:${server.httpPort}/ready`)).status === 503, 10_000, '/ready to say degraded');
    const ready = (await (await fetch(`http://127.0.0.1:${server.httpPort}/ready`)).json()) as { status: string };
    expect(ready.status).to.equal('degraded');
    const ackedBefore = load.total;
    // Acknowledgements and live delivery go on while the database is down (fails on the deadline if not).
    let maxQueued = 0;
    await waitFor(() => {
      maxQueued = Math.max(maxQueued, server.writer.queued);
      return load.total - ackedBefore > 2_000 && live.filter((t) => t > outageStart + 1_000).length > 500;
    }, 15_000, 'acknowledgements and live delivery during the outage');
    expect(server.writer.stats.spooledItems).to.be.greaterThan(0);
    // Bounded: the in-memory queue never outgrows the high-water mark by more than one read per publisher.
    expect(Math.max(maxQueued, server.writer.queued)).to.be.at.most(2_000 + 4 * 20);

    await pgs.start();
    load.stop();
    sub.end(true);
    await waitFor(async () => (await fetch(`http://127.0.0.1:${server.httpPort}/ready`)).status === 200, 20_000, '/ready to recover');
    await waitFor(() => server.writer.stats.spoolSegments === 0 && server.writer.queued === 0, 20_000, 'spool to drain');
    expectAllAckedStoredOnce(load, await storedValues(server.databaseUrl, 'o'));
  });
});

void mqtt;
void ADMIN;

describe('durability - database down at start-up', function () {
  this.timeout(120_000);
  const pgs = new TestPostgres({ timescale: false });
  let server: RunningServer | undefined;
  let config: ReturnType<typeof testConfig> | undefined;

  after(async () => {
    await server?.stop();
    await pgs.destroy();
    if (config) cleanup(config);
  });

  it('starts degraded instead of crash-looping, acknowledges into the spool, and migrates and drains when the database comes', async () => {
    await pgs.start();
    const url = await pgs.createDatabase('late');
    await pgs.stop('fast');
    config = testConfig(url, { store: { probeIntervalMs: 200 } });
    server = await startTestServer(config);
    const ready = await fetch(`http://127.0.0.1:${server.httpPort}/ready`);
    expect(ready.status).to.equal(503);
    const client = await connect(server.mqttPort, { clientId: 'early-bird' });
    const topic = 'acme/plant2/warehouse/line7/dock1/seq';
    await new Promise<void>((res, rej) => client.publish(topic, '{"value": 7}', { qos: 1 }, (e) => (e ? rej(e) : res())));
    expect(server.writer.stats.spooledItems).to.be.greaterThan(0);
    client.end(true);
    await pgs.start();
    await waitFor(async () => (await fetch(`http://127.0.0.1:${server!.httpPort}/ready`)).status === 200, 30_000, '/ready after the database came');
    await waitFor(() => server!.writer.stats.spoolSegments === 0, 20_000, 'spool to drain');
    const rows = await query(url, 'SELECT s.v_num FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name = $1', [topic]);
    expect(rows.map((r) => r['v_num'])).to.deep.equal([7]);
  });
});
