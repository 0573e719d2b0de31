/**
 * The TimescaleDB layer (bridge/sinks/store/timescale.ts) against real Debian PostgreSQL clusters: the
 * hypertable, compression, continuous aggregates and retention policy when the extension is loaded, and
 * the documented fallback to plain tables when it cannot be.
 */
import { expect } from 'chai';
import type { MqttClient } from 'mqtt';
import { TestPostgres, findPgBin, hasTimescale, query } from '../helpers/postgres.js';
import { testConfig, startTestServer, connect, publish, cleanup } from '../helpers/server.js';
import type { RunningServer } from '../../src/main.js';
import { loadConfig, type Config } from '../../src/core/config.js';
import { UnsError } from '../../src/core/errors.js';
import { parseDuration } from '../../src/core/topics.js';

const PG_BIN = findPgBin();
const TIMESCALE_INSTALLED = hasTimescale(PG_BIN);
const T = 'acme/plant1/brewing/line1/kettle/temperature';

/** What /ready says about TimescaleDB. */
async function readyTimescale(server: RunningServer): Promise<unknown> {
  const res = await fetch(`http://127.0.0.1:${server.httpPort}/ready`);
  const body = (await res.json()) as { checks?: { database?: { timescale?: unknown } } };
  return body.checks?.database?.timescale;
}

/** What kind of relation `samples` is: 'r' for a plain table. */
async function relkind(url: string): Promise<string | undefined> {
  return (await query<{ k: string }>(url, "SELECT relkind::text AS k FROM pg_class WHERE oid = 'samples'::regclass"))[0]?.k;
}

// Whether or not TimescaleDB is installed, a cluster without it preloaded cannot load it: CREATE EXTENSION
// fails ("must be preloaded") or the extension is not there at all. Both are the 'not available' case.
describe(TIMESCALE_INSTALLED
  ? 'timescale - fallback to plain PostgreSQL when the extension cannot be loaded'
  : `timescale - fallback to plain PostgreSQL (TimescaleDB-only tests NOT run: no timescaledb library for ${PG_BIN})`, function () {
  this.timeout(60_000);
  const pgPlain = new TestPostgres({ timescale: false });
  const configs: Config[] = [];

  before(async () => { await pgPlain.start(); });
  after(async () => {
    await pgPlain.destroy();
    for (const c of configs) cleanup(c);
  });

  it('starts with UNS_TIMESCALE=auto, reports TimescaleDB off with a reason and keeps samples a plain table', async () => {
    const url = await pgPlain.createDatabase('timescale_auto');
    const base = testConfig(url);
    configs.push(base);
    // The environment variable is what operators set; the test overrides leave database.timescale to it.
    const config = loadConfig({ UNS_TIMESCALE: 'auto' }, {
      dataDir: base.dataDir, topicsFile: base.topicsFile, mqtt: { host: '127.0.0.1', port: 0 }, http: { host: '127.0.0.1', port: 0 },
      database: { url }, auth: { ...base.auth }, log: { ...base.log },
    });
    expect(config.database.timescale).to.equal('auto');
    const server = await startTestServer(config);
    let client: MqttClient | undefined;
    try {
      expect(server.store.timescale.enabled).to.equal(false);
      expect(server.store.timescale.reason).to.be.a('string').and.not.equal('');
      expect(await readyTimescale(server)).to.equal(false);
      expect(await relkind(url)).to.equal('r');
      const ext = await query(url, "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'");
      expect(ext).to.have.length(0);
      const views = await query(url, "SELECT relname FROM pg_class WHERE relname IN ('samples_1m', 'samples_1h')");
      expect(views).to.have.length(0);
      // The plain schema serves the same ingest.
      client = await connect(server.mqttPort);
      await publish(client, T, JSON.stringify({ value: 64.5 }));
      const rows = await query(url, 'SELECT s.v_num FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name = $1', [T]);
      expect(rows.map((r) => r['v_num'])).to.deep.equal([64.5]);
    } finally {
      client?.end(true);
      await server.stop();
    }
  });

  it("refuses to start with database.timescale 'on' when the extension cannot be loaded: UNS_ERR_STORE_UNAVAILABLE", async () => {
    const url = await pgPlain.createDatabase('timescale_on');
    const config = testConfig(url, { database: { url, timescale: 'on' } });
    configs.push(config);
    let server: RunningServer | undefined;
    let err: unknown;
    try {
      server = await startTestServer(config);
    } catch (e) {
      err = e;
    } finally {
      await server?.stop();
    }
    expect(err).to.be.instanceOf(UnsError);
    expect((err as UnsError).code).to.equal('UNS_ERR_STORE_UNAVAILABLE');
  });
});

// Registered always: without the extension these show as pending, with the reason in the suite's title.
describe(`timescale - hypertable, compression, continuous aggregates and retention policy${TIMESCALE_INSTALLED ? '' : ` (pending: no timescaledb library for ${PG_BIN}; build it against this server to run them)`}`, function () {
  this.timeout(60_000);
  let pgTs: TestPostgres;
  let config: Config;
  let server: RunningServer;
  let client: MqttClient;
  let url: string;

  before(async function () {
    if (!TIMESCALE_INSTALLED) { this.skip(); return; }
    pgTs = new TestPostgres();
    expect(pgTs.timescale, 'TestPostgres preloads TimescaleDB when its library is installed').to.equal(true);
    await pgTs.start();
    url = await pgTs.createDatabase('timescale_features');
    config = testConfig(url);
    server = await startTestServer(config);
    client = await connect(server.mqttPort);
  });

  after(async () => {
    client?.end(true);
    await server?.stop();
    await pgTs?.destroy();
    if (config) cleanup(config);
  });

  it('reports TimescaleDB in use with the installed version', async () => {
    const ext = await query<{ v: string }>(url, "SELECT extversion AS v FROM pg_extension WHERE extname = 'timescaledb'");
    expect(ext).to.have.length(1);
    expect(server.store.timescale).to.deep.include({ enabled: true, version: ext[0]?.v });
    expect(await readyTimescale(server)).to.equal(true);
  });

  it('makes samples a hypertable on time', async () => {
    const ht = await query(url, `SELECT compression_enabled FROM timescaledb_information.hypertables
      WHERE hypertable_schema = 'public' AND hypertable_name = 'samples'`);
    expect(ht).to.deep.equal([{ compression_enabled: true }]);
    const dims = await query(url, `SELECT column_name FROM timescaledb_information.dimensions WHERE hypertable_name = 'samples'`);
    expect(dims.map((d) => d['column_name'])).to.deep.equal(['time']);
  });

  it('compresses samples segmented by topic_id, with a compression policy', async () => {
    // hypertable_compression_settings is the per-hypertable view since 2.14 (compression_settings is per column).
    const cs = await query(url, `SELECT segmentby, orderby FROM timescaledb_information.hypertable_compression_settings
      WHERE hypertable = 'samples'::regclass`);
    expect(cs.map((c) => [c['segmentby'], String(c['orderby']).replaceAll('"', '')])).to.deep.equal([['topic_id', 'time DESC']]);
    const jobs = await query(url, `SELECT 1 FROM timescaledb_information.jobs
      WHERE proc_name = 'policy_compression' AND hypertable_name = 'samples'`);
    expect(jobs).to.have.length(1);
  });

  it('creates the samples_1m and samples_1h continuous aggregates with refresh policies', async () => {
    const caggs = await query(url, `SELECT view_name FROM timescaledb_information.continuous_aggregates ORDER BY view_name`);
    expect(caggs.map((c) => c['view_name'])).to.deep.equal(['samples_1h', 'samples_1m']);
    const jobs = await query(url, `SELECT count(*)::int AS n FROM timescaledb_information.jobs WHERE proc_name = 'policy_refresh_continuous_aggregate'`);
    expect(jobs[0]?.['n']).to.equal(2);
  });

  it('adds one drop_chunks retention policy at the longest route retention (2y)', async () => {
    const stored = server.namespace.routes.filter((r) => r.store);
    expect(stored.every((r) => r.retentionMs !== undefined), 'every stored route has a retention').to.equal(true);
    const longest = Math.max(...stored.map((r) => r.retentionMs as number));
    expect(longest).to.equal(parseDuration('2y'));
    const jobs = await query<{ s: number }>(url, `SELECT extract(epoch FROM (config->>'drop_after')::interval)::float8 AS s
      FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention' AND hypertable_name = 'samples'`);
    expect(jobs.map((j) => j.s)).to.deep.equal([longest / 1000]);
  });

  it('holds avg/min/max/count per topic and minute in samples_1m after a refresh', async () => {
    const minute = Math.floor(Date.now() / 60_000) * 60_000 - 10 * 60_000;
    // Values 1.5+ apart, beyond the route's 0.1 deadband, so each is stored.
    const values = [10.5, 12.5, 11, 14];
    for (const [i, v] of values.entries()) {
      await publish(client, T, JSON.stringify({ value: v, timestamp: minute + 5_000 + i * 10_000 }));
    }
    await publish(client, T, JSON.stringify({ value: 100, timestamp: minute + 60_000 + 1_000 })); // next bucket
    await query(url, "CALL refresh_continuous_aggregate('samples_1m', NULL, NULL)");
    const rows = await query(url, `SELECT (extract(epoch FROM a.bucket) * 1000)::float8 AS bucket, a.avg, a.min, a.max, a.count::int AS count
      FROM samples_1m a JOIN topics t ON t.id = a.topic_id WHERE t.name = $1 ORDER BY a.bucket`, [T]);
    expect(rows).to.deep.equal([
      { bucket: minute, avg: 12, min: 10.5, max: 14, count: 4 },
      { bucket: minute + 60_000, avg: 100, min: 100, max: 100, count: 1 },
    ]);
  });

  it('applies the same set-up again on restart without duplicating policies', async () => {
    client.end(true);
    await server.stop();
    server = await startTestServer(config);
    client = await connect(server.mqttPort);
    expect(server.store.timescale.enabled).to.equal(true);
    const jobs = await query(url, `SELECT proc_name, count(*)::int AS n FROM timescaledb_information.jobs
      WHERE hypertable_name IN ('samples', 'samples_1m', 'samples_1h') OR proc_name = 'policy_refresh_continuous_aggregate'
      GROUP BY 1 ORDER BY 1`);
    expect(jobs).to.deep.equal([
      { proc_name: 'policy_compression', n: 1 },
      { proc_name: 'policy_refresh_continuous_aggregate', n: 2 },
      { proc_name: 'policy_retention', n: 1 },
    ]);
  });
});
