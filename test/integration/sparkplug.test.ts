/**
 * Sparkplug B end to end over real sockets: an edge node publishes NBIRTH/NDATA/DBIRTH/DDATA through the
 * embedded broker into the embedded PostgreSQL. One server for the file; each test uses its own metrics.
 */
import { expect } from 'chai';
import type { MqttClient } from 'mqtt';
import sparkplugPayload from 'sparkplug-payload';
import type { UMetric, UPayload } from 'sparkplug-payload/lib/sparkplugbpayload.js';
import { query } from '../helpers/postgres.js';
import { testConfig, startTestServer, connect, publish, cleanup } from '../helpers/server.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';

const codec = sparkplugPayload.get('spBv1.0');
if (codec === null) throw new Error('sparkplug-payload lacks spBv1.0');

const G = 'plant1';
const E = 'edge1';
const D = 'filler';
/** 2^53 + 1: a double cannot hold it. */
const BIG = '9007199254740993';
const BIGGER = '9223372036854775807';

function encode(p: UPayload): Buffer {
  return Buffer.from((codec as NonNullable<typeof codec>).encodePayload(p));
}

/** A metric; `name` undefined means alias only, as DATA messages send it. 64-bit values may be decimal strings. */
function metric(name: string | undefined, type: UMetric['type'], value: UMetric['value'] | string, extra: Partial<UMetric> = {}): UMetric {
  const m = { type, value, ...extra } as UMetric;
  if (name !== undefined) m.name = name;
  return m;
}

interface Sample {
  name: string;
  ms: number;
  v_num: number | null;
  v_text: string | null;
  v_bool: boolean | null;
  j: string | null;
  route: string;
}

describe('sparkplug - Sparkplug B over MQTT into the store', function () {
  this.timeout(60_000);
  let config: Config;
  let server: RunningServer;
  let client: MqttClient;
  let watcher: MqttClient;
  let url: string;
  const deadLetters: Array<Record<string, unknown>> = [];
  const waiters: Array<() => void> = [];

  async function samplesUnder(prefix: string): Promise<Sample[]> {
    return query<Sample>(url, `SELECT t.name, (extract(epoch from s.time) * 1000)::float8 AS ms, s.v_num, s.v_text, s.v_bool,
        s.v_json::text AS j, t.route
      FROM samples s JOIN topics t ON t.id = s.topic_id WHERE starts_with(t.name, $1) ORDER BY t.name, s.time`, [prefix]);
  }

  async function sampleCount(): Promise<number> {
    return (await query<{ n: number }>(url, 'SELECT count(*)::int AS n FROM samples'))[0]?.n ?? -1;
  }

  /** The next dead letter for `topic` (they arrive in order, one per rejected publish). */
  function nextDeadLetter(topic: string): Promise<Record<string, unknown>> {
    return new Promise((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`no dead letter for ${topic}`)), 10_000);
      const check = (): void => {
        const i = deadLetters.findIndex((d) => d['topic'] === topic);
        if (i < 0) { waiters.push(check); return; }
        clearTimeout(timer);
        res(deadLetters.splice(i, 1)[0] as Record<string, unknown>);
      };
      check();
    });
  }

  before(async () => {
    config = testConfig(null);
    server = await startTestServer(config);
    url = server.databaseUrl;
    client = await connect(server.mqttPort);
    watcher = await connect(server.mqttPort);
    watcher.on('message', (_t, p) => {
      deadLetters.push(JSON.parse(p.toString()) as Record<string, unknown>);
      for (const w of waiters.splice(0)) w();
    });
    await new Promise<void>((res, rej) => watcher.subscribe('$uns/rejected/spBv1.0/#', { qos: 1 }, (e) => (e ? rej(e) : res())));
  });

  after(async () => {
    watcher?.end(true);
    client?.end(true);
    await server?.stop();
    if (config) cleanup(config);
  });

  it('stores NBIRTH metrics by name and resolves NDATA aliases, keeping Int64 beyond 2^53 exact', async () => {
    const t0 = Date.now() - 2_000;
    const t1 = t0 + 1_000;
    await publish(client, `spBv1.0/${G}/NBIRTH/${E}`, encode({
      timestamp: t0, seq: 0,
      metrics: [
        metric('bdSeq', 'Int64', 0),
        metric('Counter', 'Int64', BIG, { alias: 1 }),
        metric('Temperature', 'Double', 21.25, { alias: 2 }),
        metric('Running', 'Boolean', true, { alias: 3 }),
        metric('Recipe', 'String', 'IPA', { alias: 4 }),
      ],
    }));
    // [tck-id-payloads-alias-data-cmd-requirement] DATA carries only the aliases.
    await publish(client, `spBv1.0/${G}/NDATA/${E}`, encode({
      timestamp: t1, seq: 1,
      metrics: [
        metric(undefined, 'Int64', BIGGER, { alias: 1 }),
        metric(undefined, 'Double', 22.75, { alias: 2 }),
        metric(undefined, 'Boolean', false, { alias: 3 }),
        metric(undefined, 'String', 'Lager', { alias: 4 }),
      ],
    }));
    const p = `spBv1.0/${G}/${E}/`;
    const rows = (await samplesUnder(p)).filter((r) => r.name.split('/').length === 4); // node metrics only
    expect(rows.map((r) => [r.name, r.ms, r.v_num, r.v_text, r.v_bool, r.j, r.route])).to.deep.equal([
      [`${p}Counter`, t0, Number(BIG), null, null, BIG, 'sparkplug'],
      [`${p}Counter`, t1, Number(BIGGER), null, null, BIGGER, 'sparkplug'],
      [`${p}Recipe`, t0, null, 'IPA', null, null, 'sparkplug'],
      [`${p}Recipe`, t1, null, 'Lager', null, null, 'sparkplug'],
      [`${p}Running`, t0, null, null, true, null, 'sparkplug'],
      [`${p}Running`, t1, null, null, false, null, 'sparkplug'],
      [`${p}Temperature`, t0, 21.25, null, null, null, 'sparkplug'],
      [`${p}Temperature`, t1, 22.75, null, null, null, 'sparkplug'],
    ]);
    // bdSeq is session bookkeeping, not process data.
    expect(rows.map((r) => r.name)).not.to.include(`${p}bdSeq`);
    const lv = await query(url, `SELECT l.v_json::text AS j FROM last_values l JOIN topics t ON t.id = l.topic_id WHERE t.name = $1`, [`${p}Counter`]);
    expect(lv[0]?.['j']).to.equal(BIGGER);
  });

  it('stores DBIRTH and alias-only DDATA under the device topic', async () => {
    const t0 = Date.now() - 1_000;
    const t1 = t0 + 500;
    await publish(client, `spBv1.0/${G}/DBIRTH/${E}/${D}`, encode({
      timestamp: t0, seq: 2,
      metrics: [
        metric('Pressure', 'Double', 1.5, { alias: 10 }),
        metric('Bottles', 'Int64', BIG, { alias: 11 }),
      ],
    }));
    await publish(client, `spBv1.0/${G}/DDATA/${E}/${D}`, encode({
      timestamp: t1, seq: 3,
      metrics: [metric(undefined, 'Double', 1.75, { alias: 10 }), metric(undefined, 'Int64', 42, { alias: 11 })],
    }));
    const p = `spBv1.0/${G}/${E}/${D}/`;
    const rows = await samplesUnder(p);
    expect(rows.map((r) => [r.name, r.ms, r.v_num, r.j])).to.deep.equal([
      [`${p}Bottles`, t0, Number(BIG), BIG],
      [`${p}Bottles`, t1, 42, null],
      [`${p}Pressure`, t0, 1.5, null],
      [`${p}Pressure`, t1, 1.75, null],
    ]);
    expect(server.pipeline.stats.sparkplugWarnings).to.equal(0); // seq 0..3 had no gap
  });

  it('rejects NDATA before NBIRTH with UNS_ERR_SPARKPLUG_STATE, dead-letters it and stores nothing', async () => {
    const fresh = 'edge-never-born';
    const topic = `spBv1.0/${G}/NDATA/${fresh}`;
    const before = await sampleCount();
    const dead = nextDeadLetter(topic);
    await publish(client, topic, encode({ timestamp: Date.now(), seq: 1, metrics: [metric(undefined, 'Double', 1, { alias: 1 })] }));
    const d = await dead;
    expect(d['code']).to.equal('UNS_ERR_SPARKPLUG_STATE');
    const rej = await query(url, 'SELECT code, client_id FROM rejections WHERE topic = $1', [topic]);
    expect(rej.map((r) => r['code'])).to.deep.equal(['UNS_ERR_SPARKPLUG_STATE']);
    expect(rej[0]?.['client_id']).to.equal(client.options.clientId);
    expect(await sampleCount()).to.equal(before);
    expect(await samplesUnder(`spBv1.0/${G}/${fresh}/`)).to.deep.equal([]);
    await expectPublisherCarriesOn(4);
  });

  it('rejects bytes that are not a Sparkplug B protobuf with UNS_ERR_DECODE_SPARKPLUG', async () => {
    const topic = `spBv1.0/${G}/NDATA/${E}`;
    const before = await sampleCount();
    const dead = nextDeadLetter(topic);
    // A metrics field that claims 100 bytes and holds 2: truncated protobuf.
    await publish(client, topic, Buffer.from([0x12, 0x64, 0x01, 0x02]));
    expect((await dead)['code']).to.equal('UNS_ERR_DECODE_SPARKPLUG');
    const rej = await query(url, 'SELECT code FROM rejections WHERE topic = $1', [topic]);
    expect(rej.map((r) => r['code'])).to.deep.equal(['UNS_ERR_DECODE_SPARKPLUG']);
    expect(await sampleCount()).to.equal(before);
    expect(server.pipeline.stats.rejected['UNS_ERR_DECODE_SPARKPLUG']).to.equal(1);
    // The node's session survives a bad payload: its aliases still resolve.
    await expectPublisherCarriesOn(5);
  });

  /** The same connection goes on publishing NDATA for the live node, and it is stored. */
  async function expectPublisherCarriesOn(seq: number): Promise<void> {
    const t = Date.now();
    const value = 30 + seq;
    await publish(client, `spBv1.0/${G}/NDATA/${E}`, encode({ timestamp: t, seq, metrics: [metric(undefined, 'Double', value, { alias: 2 })] }));
    expect(client.connected).to.equal(true);
    const rows = await samplesUnder(`spBv1.0/${G}/${E}/Temperature`);
    expect(rows.at(-1)).to.deep.include({ ms: t, v_num: value });
  }
});
