/**
 * Per-route retention (topics.yaml `retention`) on plain PostgreSQL: rows older than their own route's
 * retention are deleted, newer rows and other routes' rows are kept. Old rows arrive the ordinary way, as
 * QoS 1 JSON envelopes with an explicit past `timestamp` (the envelope accepts any time after 2000-01-01).
 */
import { expect } from 'chai';
import type { MqttClient } from 'mqtt';
import { TestPostgres, query } from '../helpers/postgres.js';
import { testConfig, startTestServer, connect, publish, waitFor, cleanup } from '../helpers/server.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';

const DAY = 86_400_000;
const TEMP = 'acme/plant1/packaging/line1/filler/temperature'; // route temperature, 1y
const MISC = 'acme/plant1/packaging/line1/filler/vibration'; // route catch-all, 30d
const PRES = 'acme/plant1/packaging/line1/filler/pressure'; // route pressure, 1y, left out of the call

describe('retention - per-route deletion of old samples', function () {
  this.timeout(60_000);
  const pgc = new TestPostgres({ timescale: false });
  const configs: Config[] = [];
  let server: RunningServer;
  let client: MqttClient;
  let url: string;

  /** Day offsets (from now, rounded) of the samples stored for a topic, oldest first. */
  async function agesInDays(topic: string): Promise<number[]> {
    const rows = await query<{ d: number }>(url, `SELECT round(extract(epoch FROM now() - s.time) / 86400)::int AS d
      FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name = $1 ORDER BY s.time`, [topic]);
    return rows.map((r) => r.d);
  }

  async function publishAt(topic: string, daysAgo: readonly number[]): Promise<void> {
    const now = Date.now();
    for (const [i, d] of daysAgo.entries()) {
      // Values 10 apart: far beyond any route's deadband.
      await publish(client, topic, JSON.stringify({ value: 10 * (i + 1), timestamp: now - d * DAY }));
    }
  }

  function retentionOf(name: string): { name: string; retentionMs: number } {
    const route = server.namespace.routes.find((r) => r.name === name);
    if (route?.retentionMs === undefined) throw new Error(`route ${name} has no retention`);
    return { name, retentionMs: route.retentionMs };
  }

  before(async () => {
    await pgc.start();
    url = await pgc.createDatabase('retention');
    const config = testConfig(url);
    configs.push(config);
    server = await startTestServer(config);
    client = await connect(server.mqttPort);
  });

  after(async () => {
    client?.end(true);
    await server?.stop();
    await pgc.destroy();
    for (const c of configs) cleanup(c);
  });

  it('deletes only rows older than each route\'s own retention', async () => {
    expect(server.namespace.matchRoute(TEMP)?.name).to.equal('temperature');
    expect(server.namespace.matchRoute(MISC)?.name).to.equal('catch-all');
    expect(server.namespace.matchRoute(PRES)?.name).to.equal('pressure');
    await publishAt(TEMP, [400, 40, 29]);
    await publishAt(MISC, [400, 40, 29]);
    await publishAt(PRES, [800, 40]);
    expect(await agesInDays(TEMP)).to.deep.equal([400, 40, 29]);

    const deleted = await server.store.applyRetention([retentionOf('catch-all'), retentionOf('temperature')]);
    expect(deleted).to.equal(3);
    expect(await agesInDays(TEMP)).to.deep.equal([40, 29]); // 1y: only the 400-day-old row goes
    expect(await agesInDays(MISC)).to.deep.equal([29]); // 30d: the 40-day-old row goes too
    expect(await agesInDays(PRES)).to.deep.equal([800, 40]); // not in the call: untouched

    // Nothing more is due: a second pass deletes nothing.
    expect(await server.store.applyRetention([retentionOf('catch-all'), retentionOf('temperature')])).to.equal(0);
  });

  it('applies every stored route\'s retention on its own timer', async () => {
    client.end(true);
    await server.stop();
    const config = testConfig(url, { store: { retentionIntervalMs: 1_000 } });
    configs.push(config);
    server = await startTestServer(config);
    client = await connect(server.mqttPort);
    await publishAt(PRES, [10]); // a fresh row, kept
    // The pressure route keeps 1y: the 800-day-old row from the previous test is due.
    await waitFor(async () => (await agesInDays(PRES)).length === 2, 5_000, 'the retention timer');
    expect(await agesInDays(PRES)).to.deep.equal([40, 10]);
    expect(await agesInDays(TEMP)).to.deep.equal([40, 29]);
    expect(await agesInDays(MISC)).to.deep.equal([29]);
  });
});
