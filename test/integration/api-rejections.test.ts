/**
 * GET /api/v1/rejections over real HTTP, after real MQTT publishes that the pipeline refuses: newest first,
 * with code, reason, topic, client and payload; narrowed by code and by MQTT filter; keyset pages that
 * return each rejection once; only topics the caller may read; bad parameters answer 400.
 */
import { expect } from 'chai';
import type { MqttClient } from 'mqtt';
import { TestPostgres } from '../helpers/postgres.js';
import { testConfig, startTestServer, connect, publish, roleToken, waitFor, cleanup } from '../helpers/server.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';

interface Rejection { id: string; time: string; topic: string; code: string; reason: string; client_id: string | null; payload_base64: string | null; payload_text: string | null }
interface Page { rejections: Rejection[]; next_before: string | null }

describe('API - rejections', function () {
  this.timeout(60_000);
  const pgs = new TestPostgres({ timescale: false });
  let config: Config;
  let server: RunningServer;
  let mqtt: MqttClient;
  const admin = roleToken('ops', ['admin']);
  const T1 = 'acme/plant1/packaging/line1/filler/temperature';
  const T2 = 'acme/plant2/packaging/line3/capper/temperature';

  async function get(query: string, token = admin): Promise<{ status: number; body: Page & { error?: { code: string } } }> {
    const r = await fetch(`http://127.0.0.1:${server.httpPort}/api/v1/rejections${query}`, { headers: { authorization: `Bearer ${token}` } });
    return { status: r.status, body: (await r.json()) as Page & { error?: { code: string } } };
  }

  before(async () => {
    await pgs.start();
    config = testConfig(await pgs.createDatabase('rejections'));
    server = await startTestServer(config);
    mqtt = await connect(server.mqttPort, { clientId: 'gateway-7' });
    // Refused: a string where the schema wants a number, text that is not JSON, and a good one between them.
    await publish(mqtt, T1, '{"value": "hot"}');
    await publish(mqtt, T1, '{"value": 71.5}');
    await publish(mqtt, T2, 'not json at all');
    await publish(mqtt, T2, Buffer.from([0xff, 0xfe, 0x00]));
    await waitFor(async () => (await get('')).body.rejections?.length === 3, 10_000, 'the rejections to be stored');
  });
  after(async () => {
    mqtt?.end(true);
    await server?.stop();
    if (config) cleanup(config);
    await pgs.destroy();
  });

  it('lists the newest first with code, reason, topic, client and payload (text when it is UTF-8)', async () => {
    const { status, body } = await get('');
    expect(status).to.equal(200);
    expect(body.rejections.map((r) => r.topic)).to.deep.equal([T2, T2, T1]);
    const [bytes, text, schema] = body.rejections as [Rejection, Rejection, Rejection];
    expect(schema.code).to.match(/^UNS_ERR_/);
    expect(schema.reason).to.be.a('string').and.not.equal('');
    expect(schema).to.include({ client_id: 'gateway-7', payload_text: '{"value": "hot"}' });
    expect(text.payload_text).to.equal('not json at all');
    expect(bytes.payload_text, 'not UTF-8: no text').to.equal(null);
    expect(Buffer.from(bytes.payload_base64 as string, 'base64')).to.deep.equal(Buffer.from([0xff, 0xfe, 0x00]));
    expect(body.next_before).to.equal(null);
  });

  it('narrows by code and by MQTT filter', async () => {
    const all = (await get('')).body.rejections;
    const code = all[2]!.code;
    const byCode = (await get(`?code=${code}`)).body.rejections;
    expect(byCode.length).to.be.greaterThan(0);
    expect(byCode.every((r) => r.code === code)).to.equal(true);
    const byFilter = (await get(`?filter=${encodeURIComponent('acme/plant1/#')}`)).body.rejections;
    expect(byFilter.map((r) => r.topic)).to.deep.equal([T1]);
  });

  it('pages with next_before, each rejection once', async () => {
    const seen: string[] = [];
    let before: string | null = null;
    for (let i = 0; i < 5; i++) {
      const q: string = `?limit=1${before === null ? '' : `&before=${before}`}`;
      const { body } = await get(q);
      seen.push(...body.rejections.map((r) => r.id));
      before = body.next_before;
      if (before === null) break;
    }
    const all = (await get('')).body.rejections.map((r) => r.id);
    expect(seen).to.deep.equal(all);
  });

  it('shows a role only the topics it may read', async () => {
    const { status, body } = await get('', roleToken('line-plc', ['plc']));
    expect(status).to.equal(200);
    expect(body.rejections).to.deep.equal([]);
    const analyst = (await get('', roleToken('dash', ['analyst']))).body.rejections;
    expect(analyst.length).to.equal(3);
  });

  it('answers 400 to a malformed code, filter or cursor, and 401 without a token', async () => {
    expect((await get('?code=schema')).status).to.equal(400);
    expect((await get(`?filter=${encodeURIComponent('acme/#/x')}`)).status).to.equal(400);
    expect((await get('?before=bm90LWEtY3Vyc29y')).status).to.equal(400);
    const anon = await fetch(`http://127.0.0.1:${server.httpPort}/api/v1/rejections`);
    expect(anon.status).to.equal(401);
  });
});
