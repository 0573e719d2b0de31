/**
 * The spine, end to end over real sockets: MQTT client -> broker -> pipeline -> PostgreSQL. One contract
 * suite, run against every store: the embedded PostgreSQL (npm binaries) and an external server.
 */
import { expect } from 'chai';
import type { MqttClient } from 'mqtt';
import { TestPostgres, query } from '../helpers/postgres.js';
import { testConfig, startTestServer, connect, publish, waitFor, cleanup } from '../helpers/server.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';

const T = 'acme/plant1/packaging/line1/filler/temperature';

interface Backend {
  name: string;
  setup(): Promise<string | null>;
  teardown(): Promise<void>;
}

function contract(backend: Backend): void {
  describe(`ingest - ${backend.name}`, function () {
    this.timeout(60_000);
    let config: Config;
    let server: RunningServer;
    let client: MqttClient;
    let url: string;

    before(async () => {
      config = testConfig(await backend.setup());
      server = await startTestServer(config);
      url = server.databaseUrl;
      client = await connect(server.mqttPort);
    });

    after(async () => {
      client?.end(true);
      await server?.stop();
      await backend.teardown();
      if (config) cleanup(config);
    });

    it('stores a QoS 1 JSON measurement with its unit and time before the PUBACK', async () => {
      const ts = Date.now() - 5_000;
      await publish(client, T, JSON.stringify({ value: 21.5, timestamp: ts }));
      // PUBACK has arrived: the row must already be committed, no waiting.
      const rows = await query(url, `SELECT s.v_num, t.unit, t.route, t.levels, extract(epoch from s.time) * 1000 AS ms
        FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name = $1`, [T]);
      expect(rows).to.have.length(1);
      expect(rows[0]).to.include({ v_num: 21.5, unit: '°C', route: 'temperature' });
      expect(Number(rows[0]!['ms'])).to.equal(ts);
      expect(rows[0]!['levels']).to.deep.equal({ enterprise: 'acme', site: 'plant1', area: 'packaging', line: 'line1', cell: 'filler' });
      const lv = await query(url, 'SELECT l.v_num FROM last_values l JOIN topics t ON t.id = l.topic_id WHERE t.name = $1', [T]);
      expect(lv[0]?.['v_num']).to.equal(21.5);
    });

    it('stores bare JSON values and plain-text numbers', async () => {
      await publish(client, 'acme/plant1/packaging/line1/filler/count', '1234');
      await publish(client, 'acme/plant1/packaging/line1/capper/state', 'RUNNING');
      await publish(client, 'acme/plant1/packaging/line1/capper/misc', JSON.stringify({ value: true }));
      const rows = await query(url, `SELECT t.name, s.v_num, s.v_text, s.v_bool FROM samples s JOIN topics t ON t.id = s.topic_id
        WHERE t.name LIKE 'acme/plant1/packaging/line1/%' AND t.name <> $1 ORDER BY t.name`, [T]);
      expect(rows.map((r) => [r['name'], r['v_num'], r['v_text'], r['v_bool']])).to.deep.equal([
        ['acme/plant1/packaging/line1/capper/misc', null, null, true],
        ['acme/plant1/packaging/line1/capper/state', null, 'RUNNING', null],
        ['acme/plant1/packaging/line1/filler/count', 1234, null, null],
      ]);
    });

    it('keeps integers beyond 2^53 exact', async () => {
      const big = '123456789012345678901234567890';
      await publish(client, 'acme/plant1/utilities/line1/meter/energy_total', `{"value": ${big}}`);
      const rows = await query(url, `SELECT s.v_json::text AS j FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name = $1`,
        ['acme/plant1/utilities/line1/meter/energy_total']);
      expect(rows[0]?.['j']).to.equal(big);
    });

    for (const [what, topic, payload, code] of [
      ['malformed JSON', T, '{"value": 21.', 'UNS_ERR_DECODE_JSON'],
      ['a schema violation', T, '{"value": "hot"}', 'UNS_ERR_SCHEMA_VIOLATION'],
      ['an ISA-95 level outside the namespace', 'acme/plant9/packaging/line1/filler/temperature', '{"value": 1}', 'UNS_ERR_ISA95_LEVEL'],
      ['a topic with no route', 'other/thing', '1', 'UNS_ERR_NO_ROUTE'],
      ['U+0000 in a string', 'acme/plant1/packaging/line1/filler/note', '{"value": "a\\u0000b"}', 'UNS_ERR_PAYLOAD_NUL'],
      ['a JSON depth bomb', 'acme/plant1/packaging/line1/filler/note', '['.repeat(5000), 'UNS_ERR_PAYLOAD_TOO_DEEP'],
    ] as const) {
      it(`rejects ${what} with ${code}, dead-letters it and stores no data`, async () => {
        const watcher = await connect(server.mqttPort);
        const got = new Promise<Record<string, unknown>>((res) => watcher.on('message', (_t, p) => res(JSON.parse(p.toString()) as Record<string, unknown>)));
        await new Promise<void>((res, rej) => watcher.subscribe(`$uns/rejected/${topic}`, { qos: 1 }, (e) => (e ? rej(e) : res())));
        const before = await query(url, 'SELECT count(*)::int AS n FROM samples');
        await publish(client, topic, payload);
        const dead = await got;
        expect(dead['code']).to.equal(code);
        expect(dead['topic']).to.equal(topic);
        const rej = await query(url, 'SELECT code FROM rejections WHERE topic = $1 ORDER BY time DESC LIMIT 1', [topic]);
        expect(rej[0]?.['code']).to.equal(code);
        const after = await query(url, 'SELECT count(*)::int AS n FROM samples');
        expect(after[0]?.['n']).to.equal(before[0]?.['n']);
        watcher.end(true);
        // The publisher's connection carries on.
        await publish(client, T, JSON.stringify({ value: 30 + Math.random() }));
        expect(client.connected).to.equal(true);
      });
    }

    it('stores a redelivered (DUP) QoS 1 message once', async () => {
      const topic = 'acme/plant1/packaging/line1/labeler/count'; // no deadband on this route
      const payload = '42';
      // The same packet twice, the second flagged DUP as after a lost PUBACK [MQTT-3.3.1-1].
      const raw = client as unknown as { _sendPacket(p: object, cb: () => void): void };
      const packet = { cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, messageId: 4242, retain: false, dup: false };
      await new Promise<void>((r) => raw._sendPacket(packet, r));
      await waitFor(async () => (await query(url, `SELECT 1 FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name = $1`, [topic])).length > 0);
      await new Promise<void>((r) => raw._sendPacket({ ...packet, dup: true }, r));
      await publish(client, T, JSON.stringify({ value: 50 + Math.random() })); // fence: the DUP is handled before this acks
      const rows = await query(url, `SELECT count(*)::int AS n FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name = $1`, [topic]);
      expect(rows[0]?.['n']).to.equal(1);
      expect(server.pipeline.stats.duplicatesDropped).to.be.greaterThan(0);
    });

    it('keeps retained messages across a restart', async () => {
      const topic = 'acme/plant2/brewing/line2/kettle/state';
      await publish(client, topic, 'RUNNING', { retain: true });
      client.end(true);
      await server.stop();
      server = await startTestServer(config);
      client = await connect(server.mqttPort);
      const sub = await connect(server.mqttPort);
      const msg = await new Promise<{ payload: string; retain: boolean }>((res) => {
        sub.on('message', (_t, p, pkt) => res({ payload: p.toString(), retain: pkt.retain }));
        sub.subscribe(topic, { qos: 1 });
      });
      expect(msg).to.deep.equal({ payload: 'RUNNING', retain: true });
      sub.end(true);
    });

    it('[MQTT-3.8.4-6] sends a retained message at the lower of its QoS and the granted QoS, also to wildcard subscribers', async () => {
      const topic = 'acme/plant2/brewing/line2/kettle/note';
      await publish(client, topic, JSON.stringify({ value: 'AUTO' }), { qos: 1, retain: true });
      const got: Record<string, number> = {};
      for (const [filter, qos] of [[topic, 0], ['acme/plant2/brewing/#', 0], ['acme/plant2/+/line2/kettle/note', 1]] as const) {
        const sub = await connect(server.mqttPort);
        const delivered = new Promise<number>((res) => sub.on('message', (_t, _p, pkt) => res(pkt.qos)));
        await sub.subscribeAsync(filter, { qos });
        got[filter] = await delivered;
        sub.end(true);
      }
      expect(got).to.deep.equal({ [topic]: 0, 'acme/plant2/brewing/#': 0, 'acme/plant2/+/line2/kettle/note': 1 });
    });

    it('reports ready on /ready and alive on /health', async () => {
      const ready = await fetch(`http://127.0.0.1:${server.httpPort}/ready`);
      expect(ready.status).to.equal(200);
      expect(((await ready.json()) as { status: string }).status).to.equal('ready');
      const health = await fetch(`http://127.0.0.1:${server.httpPort}/health`);
      expect(health.status).to.equal(200);
    });
  });
}

const external = new TestPostgres();
contract({
  name: `external PostgreSQL${external.timescale ? ' + TimescaleDB' : ''}`,
  async setup() { await external.start(); return external.createDatabase('ingest_contract'); },
  async teardown() { await external.destroy(); },
});
contract({
  name: 'embedded PostgreSQL',
  async setup() { return null; },
  async teardown() { /* the server stops its own embedded PostgreSQL */ },
});
