/**
 * Idempotent history: a sample is identified by (topic, time). The same reading sent again with its source
 * timestamp, over another connection (a gateway's store-and-forward replaying after a network cut), is one
 * row; a different value at the same instant replaces it (last write wins, counted); readings without a
 * source timestamp never merge, however fast they come. The migration that brings the identity to an
 * existing store reduces its duplicates first, on plain PostgreSQL and on TimescaleDB with compressed chunks.
 */
import { expect } from 'chai';
import type { MqttClient } from 'mqtt';
import { TestPostgres, findPgBin, hasTimescale, query } from '../helpers/postgres.js';
import { testConfig, startTestServer, connect, publish, cleanup, waitFor, roleToken } from '../helpers/server.js';
import type { RunningServer } from '../../src/main.js';
import { PgStore } from '../../bridge/index.js';
import { silentLogger } from '../../src/core/log.js';
import type { WriteItem } from '../../bridge/sinks/store/rows.js';

const PG_BIN = findPgBin();
const TIMESCALE_INSTALLED = hasTimescale(PG_BIN);

/** Rows of a topic: t in epoch ms (microseconds as the fraction). */
async function rows(url: string, topic: string): Promise<Array<{ t: number; v: number | null; q: string | null }>> {
  return query(url, `SELECT (extract(epoch FROM s.time) * 1000)::float8 AS t, s.v_num AS v, s.quality AS q FROM samples s JOIN topics t ON t.id = s.topic_id
    WHERE t.name = $1 ORDER BY s.time`, [topic]);
}

async function metric(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : Number.NaN;
}

describe('sample identity - (topic, source timestamp) is one sample', function () {
  this.timeout(60_000);
  const pg = new TestPostgres();
  let server: RunningServer;
  let url: string;
  const clients: MqttClient[] = [];

  before(async () => {
    await pg.start();
    url = await pg.createDatabase('identity');
    server = await startTestServer(testConfig(url));
  });
  after(async () => {
    for (const c of clients) c.end(true);
    await server.stop();
    cleanup(server.config);
    await pg.destroy();
  });

  async function client(id: string): Promise<MqttClient> {
    const c = await connect(server.mqttPort, { clientId: id });
    clients.push(c);
    return c;
  }

  it('stores a reading replayed over another connection once, and counts it as repeated', async () => {
    // A route without a deadband (one would drop an equal value before the store).
    const topic = 'acme/plant1/brewing/line1/kettle/flow';
    const body = JSON.stringify({ value: 78.25, timestamp: '2026-11-30T08:00:00.000Z' });
    const before = server.store.sampleStats.repeated;
    await publish(await client('gateway-a'), topic, body);
    // The gateway comes back over a new connection and replays its buffer at QoS 0: same reading, same
    // source time, and nothing (no packet id, no DUP) that marks it as a re-send.
    await publish(await client('gateway-a-replay'), topic, body, { qos: 0 });
    await waitFor(() => server.store.sampleStats.repeated - before === 1, 10_000, 'the QoS 0 replay written');
    // And through the other door, HTTP publish.
    const res = await fetch(`http://127.0.0.1:${server.httpPort}/api/v1/publish?topic=${encodeURIComponent(topic)}`, {
      method: 'POST', headers: { authorization: `Bearer ${roleToken('historian-sync', ['admin'])}`, 'content-type': 'application/json' }, body,
    });
    expect(res.status).to.equal(202);
    const r = await rows(url, topic);
    expect(r.map((x) => x.v)).to.deep.equal([78.25]);
    expect(r[0]?.t).to.equal(Date.parse('2026-11-30T08:00:00.000Z'));
    expect(server.store.sampleStats.repeated - before).to.equal(2);
    expect(await metric(server.httpPort, 'uns_store_samples_repeated_total')).to.equal(server.store.sampleStats.repeated);
  });

  it('keeps the later of two different values at one instant (last write wins), counted as overwritten', async () => {
    const topic = 'acme/plant1/brewing/line1/kettle/pressure';
    const before = server.store.sampleStats.overwritten;
    const c = await client('gateway-b');
    await publish(c, topic, JSON.stringify({ value: 1.5, timestamp: 1_796_000_000_000 }));
    await publish(c, topic, JSON.stringify({ value: 1.75, timestamp: 1_796_000_000_000, quality: 'uncertain' }));
    expect(await rows(url, topic)).to.deep.equal([{ t: 1_796_000_000_000, v: 1.75, q: 'uncertain' }]);
    expect(server.store.sampleStats.overwritten - before).to.equal(1);
    expect(await metric(server.httpPort, 'uns_store_samples_overwritten_total')).to.equal(server.store.sampleStats.overwritten);
    // The latest value is the one kept.
    const latest = await query<{ v: number }>(url, `SELECT l.v_num AS v FROM last_values l JOIN topics t ON t.id = l.topic_id WHERE t.name = $1`, [topic]);
    expect(latest.map((x) => x.v)).to.deep.equal([1.75]);
  });

  it('never merges readings without a source timestamp, however many arrive in one millisecond', async () => {
    const topic = 'acme/plant1/brewing/line1/kettle/level';
    const c = await client('fast-plc');
    // 300 in flight at once: many share a receive millisecond and a batch.
    await Promise.all(Array.from({ length: 300 }, (_, n) => publish(c, topic, JSON.stringify({ value: n }))));
    const r = await rows(url, topic);
    expect(r).to.have.length(300);
    expect(new Set(r.map((x) => x.v)).size).to.equal(300);
    expect(new Set(r.map((x) => x.t)).size).to.equal(300);
  });

  it('one batch holding the same identity twice: one row, the later value, each counted', async () => {
    const store = new PgStore({ url, poolSize: 2, statementTimeoutMs: 10_000, timescale: 'off', timescalePolicy: { compressAfterMs: 0, dropAfterMs: null }, log: silentLogger() });
    try {
      await store.open();
      const topic = 'acme/plant1/brewing/line2/kettle/temperature';
      const item = (num: number): WriteItem => ({
        samples: [{ topic, time: 1_796_100_000_000, num, text: null, bool: null, json: null, bytes: null, quality: null, src: null }],
        topics: [{ name: topic, levels: null, route: 'temperature', unit: null }], receivedAt: 1_796_100_000_500,
      });
      expect(await store.writeBatch({ items: [item(1), item(1), item(2)] })).to.equal('committed');
      expect(await rows(url, topic)).to.deep.equal([{ t: 1_796_100_000_000, v: 2, q: null }]);
      // A new topic: the batch goes as a transaction; later ones (known topic) as one statement.
      expect(store.sampleStats).to.deep.equal({ overwritten: 1, repeated: 1, oneStatementBatches: 0, transactionBatches: 1 });
      // And against the stored row: the same again changes nothing, another value replaces it.
      expect(await store.writeBatch({ items: [item(2)] })).to.equal('committed');
      expect(await store.writeBatch({ items: [item(3)] })).to.equal('committed');
      expect(await rows(url, topic)).to.deep.equal([{ t: 1_796_100_000_000, v: 3, q: null }]);
      expect(store.sampleStats).to.deep.equal({ overwritten: 2, repeated: 2, oneStatementBatches: 2, transactionBatches: 1 });
    } finally {
      await store.close();
    }
  });

  it('a reading replayed after a database outage (spooled first) is still one row', async () => {
    const topic = 'acme/plant1/brewing/line3/kettle/flow';
    const body = JSON.stringify({ value: 64.5, timestamp: 1_796_200_000_000 });
    const c = await client('gateway-c');
    await pg.stop();
    try {
      // Acknowledged from the spool while the database is down.
      await publish(c, topic, body);
      await waitFor(() => server.writer.stats.spoolBytes > 0, 10_000, 'the message spooled');
    } finally {
      await pg.start();
    }
    await waitFor(() => server.readiness().ready, 30_000, 'the spool replayed');
    await publish(await client('gateway-c-replay'), topic, body);
    expect((await rows(url, topic)).map((x) => x.v)).to.deep.equal([64.5]);
  });
});

/** A store as the previous version left it: the non-unique index, duplicates, migration 8 not applied. */
async function downgrade(url: string): Promise<void> {
  await query(url, 'DROP INDEX samples_topic_time');
  await query(url, 'CREATE INDEX samples_topic_time ON samples (topic_id, time DESC)');
  await query(url, 'DELETE FROM uns_migrations WHERE version = 8');
}

async function duplicatesAndIndex(url: string): Promise<{ rows: number; keys: number; unique: boolean }> {
  const [c] = await query<{ rows: number; keys: number }>(url, 'SELECT count(*)::int AS rows, count(DISTINCT (topic_id, time))::int AS keys FROM samples');
  const [i] = await query<{ u: boolean }>(url, "SELECT indisunique AS u FROM pg_index WHERE indexrelid = 'samples_topic_time'::regclass");
  return { rows: c?.rows ?? -1, keys: c?.keys ?? -1, unique: i?.u ?? false };
}

function storeFor(url: string, timescale: 'on' | 'off'): PgStore {
  return new PgStore({ url, poolSize: 2, statementTimeoutMs: 30_000, timescale, timescalePolicy: { compressAfterMs: 7 * 86_400_000, dropAfterMs: null }, log: silentLogger() });
}

describe('sample identity - migrating a store that holds duplicates', function () {
  this.timeout(90_000);
  const plain = new TestPostgres({ timescale: false });
  before(async () => { await plain.start(); });
  after(async () => { await plain.destroy(); });

  it('plain PostgreSQL: duplicates are reduced to one row each, then the index is unique', async () => {
    const url = await plain.createDatabase('migrate_plain');
    let store = storeFor(url, 'off');
    await store.open();
    await store.close();
    await downgrade(url);
    await query(url, "INSERT INTO topics (id, name, route) VALUES (1000, 'acme/plant1/brewing/line1/kettle/x', 'temperature')");
    await query(url, `INSERT INTO samples (time, topic_id, v_num)
      SELECT timestamptz '2026-11-01' + (i % 50) * interval '1 s', 1000, i FROM generate_series(1, 200) i`);
    expect(await duplicatesAndIndex(url)).to.deep.equal({ rows: 200, keys: 50, unique: false });
    store = storeFor(url, 'off');
    await store.open();
    await store.close();
    expect(await duplicatesAndIndex(url)).to.deep.equal({ rows: 50, keys: 50, unique: true });
    const [v] = await query<{ n: number }>(url, 'SELECT version AS n FROM uns_migrations WHERE version = 8');
    expect(v?.n).to.equal(8);
  });
});

// Registered always: without the extension it shows as pending, with the reason in the title.
describe(`sample identity - migrating a TimescaleDB store with compressed chunks${TIMESCALE_INSTALLED ? '' : ` (pending: no timescaledb library for ${PG_BIN})`}`, function () {
  this.timeout(120_000);
  const ts = new TestPostgres({ timescale: true });
  before(async function () {
    if (!TIMESCALE_INSTALLED) { this.skip(); return; }
    await ts.start();
  });
  after(async () => { if (TIMESCALE_INSTALLED) await ts.destroy(); });

  it('reduces duplicates in compressed and uncompressed chunks, makes the index unique, and upserts into compressed chunks', async () => {
    const url = await ts.createDatabase('migrate_timescale');
    let store = storeFor(url, 'on');
    await store.open();
    expect(store.timescale.enabled).to.equal(true);
    await store.close();
    await downgrade(url);
    await query(url, "INSERT INTO topics (id, name, route) VALUES (1000, 'acme/plant1/brewing/line1/kettle/x', 'temperature')");
    // Ten days ago (then compressed) and an hour ago: 50 instants each, 4 rows per instant.
    await query(url, `INSERT INTO samples (time, topic_id, v_num)
      SELECT now() - interval '10 days' + (i % 50) * interval '1 s', 1000, i FROM generate_series(1, 200) i`);
    await query(url, `INSERT INTO samples (time, topic_id, v_num)
      SELECT now() - interval '1 hour' + (i % 50) * interval '1 s', 1000, i FROM generate_series(1, 200) i`);
    const compressed = await query<{ c: string }>(url, "SELECT compress_chunk(c)::text AS c FROM show_chunks('samples', older_than => interval '5 days') c");
    expect(compressed).to.have.length(1);
    expect(await duplicatesAndIndex(url)).to.deep.equal({ rows: 400, keys: 100, unique: false });

    store = storeFor(url, 'on');
    try {
      await store.open();
      expect(await duplicatesAndIndex(url)).to.deep.equal({ rows: 100, keys: 100, unique: true });
      const [still] = await query<{ n: number }>(url, "SELECT count(*)::int AS n FROM timescaledb_information.chunks WHERE hypertable_name = 'samples' AND is_compressed");
      expect(still?.n).to.equal(1);
      // A reading replayed into the compressed chunk: one row, its value replaced.
      const [old] = await query<{ t: number }>(url, "SELECT extract(epoch FROM min(time))::float8 * 1000 AS t FROM samples WHERE time < now() - interval '5 days'");
      const topic = 'acme/plant1/brewing/line1/kettle/x';
      const item: WriteItem = {
        samples: [{ topic, time: old?.t as number, num: -1, text: null, bool: null, json: null, bytes: null, quality: null, src: null, hist: true }],
        topics: [{ name: topic, levels: null, route: 'temperature', unit: null }], receivedAt: Date.now(),
      };
      expect(await store.writeBatch({ items: [item] })).to.equal('committed');
      expect(await duplicatesAndIndex(url)).to.deep.equal({ rows: 100, keys: 100, unique: true });
      const [v] = await query<{ v: number }>(url, 'SELECT v_num AS v FROM samples WHERE time = to_timestamp($1 / 1000.0)', [old?.t]);
      expect(v?.v).to.equal(-1);
      expect(store.sampleStats.overwritten).to.equal(1);
    } finally {
      await store.close();
    }
  });
});
