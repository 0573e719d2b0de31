/**
 * Sparkplug metrics mapped into the ISA-95 namespace by topics.yaml `sparkplug.map`, end to end: stored
 * under the ISA-95 topic with its levels, republished as JSON to plain MQTT subscribers, stale on death,
 * and one topic never shared by two metrics (at start-up for explicit renames, at BIRTH otherwise).
 */
import { expect } from 'chai';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import sparkplugPayload from 'sparkplug-payload';
import type { UMetric, UPayload } from 'sparkplug-payload/lib/sparkplugbpayload.js';
import { query } from '../helpers/postgres.js';
import { testConfig, startTestServer, connect, publish, waitFor, cleanup, ADMIN } from '../helpers/server.js';
import { packageRoot } from '../../src/core/paths.js';
import { loadTopics } from '../../src/core/topics.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';

const codec = sparkplugPayload.get('spBv1.0');
if (codec === null) throw new Error('sparkplug-payload lacks spBv1.0');
const encode = (p: UPayload): Buffer => Buffer.from((codec as NonNullable<typeof codec>).encodePayload(p));
const LINE = 'acme/plant1/packaging/line1';

const MAP = `
sparkplug:
  map:
    - group: mapgrp
      node: gw1
      device: "+"
      path: ${LINE}/{device}
      metrics: { "Motor/Speed": speed }
    - group: mapgrp
      node: gw2
      device: filler
      path: ${LINE}/filler
`;

function topicsWith(dir: string, extra: string): string {
  const file = join(dir, 'topics.yaml');
  writeFileSync(file, readFileSync(join(packageRoot(), 'topics.yaml'), 'utf8') + extra);
  return file;
}

describe('sparkplug map - Sparkplug metrics in the ISA-95 namespace', function () {
  this.timeout(60_000);
  let config: Config;
  let server: RunningServer;
  let mqtt: MqttClient;
  let watcher: MqttClient;
  const seen: Array<{ topic: string; body: Record<string, unknown> }> = [];

  before(async () => {
    config = testConfig(null);
    config = testConfig(null, { topicsFile: topicsWith(config.dataDir, MAP) }, config.dataDir);
    server = await startTestServer(config);
    mqtt = await connect(server.mqttPort, { clientId: 'sp-map-pub' });
    watcher = await connect(server.mqttPort, { clientId: 'sp-map-watch', username: ADMIN.username, password: ADMIN.password });
    watcher.on('message', (topic, payload) => seen.push({ topic, body: JSON.parse(payload.toString('utf8')) as Record<string, unknown> }));
    await watcher.subscribeAsync(`${LINE}/#`, { qos: 1 });
  });
  after(async () => {
    mqtt?.end(true);
    watcher?.end(true);
    await server?.stop();
    if (config) cleanup(config);
  });

  it('stores mapped metrics under the ISA-95 topic with its levels and republishes them as JSON', async () => {
    await publish(mqtt, 'spBv1.0/mapgrp/NBIRTH/gw1', encode({ timestamp: Date.now(), seq: 0, metrics: [{ name: 'bdSeq', type: 'UInt64', value: 0 }] }));
    const at = Date.now();
    await publish(mqtt, 'spBv1.0/mapgrp/DBIRTH/gw1/capper', encode({ timestamp: at, seq: 1, metrics: [
      { name: 'Motor/Speed', type: 'Double', value: 1200.5 }, { name: 'Torque', type: 'Int32', value: 17 },
    ] as UMetric[] }));
    const speed = await waitFor(() => seen.find((s) => s.topic === `${LINE}/capper/speed`), 5_000, 'republished speed');
    expect(speed.body).to.deep.equal({ value: 1200.5, timestamp: at, quality: 'good' });
    await waitFor(() => seen.find((s) => s.topic === `${LINE}/capper/Torque`), 5_000, 'republished Torque');
    const rows = await query<{ name: string; levels: Record<string, string>; route: string }>(server.databaseUrl,
      `SELECT name, levels, route FROM topics WHERE name LIKE $1 ORDER BY name`, [`${LINE}/capper/%`]);
    expect(rows.map((r) => r.name)).to.deep.equal([`${LINE}/capper/Torque`, `${LINE}/capper/speed`]);
    expect(rows[0]?.levels).to.include({ site: 'plant1', area: 'packaging', line: 'line1', cell: 'capper' });
    expect(rows[0]?.route).to.equal('sparkplug');
    const raw = await query<{ n: number }>(server.databaseUrl, `SELECT count(*)::int AS n FROM topics WHERE name LIKE 'spBv1.0/mapgrp/gw1/%'`);
    expect(raw[0]?.n, 'nothing under the Sparkplug topic').to.equal(0);
  });

  it('marks mapped metrics stale on DDEATH, on the ISA-95 topic, and tells MQTT subscribers', async () => {
    await publish(mqtt, 'spBv1.0/mapgrp/DDEATH/gw1/capper', encode({ timestamp: Date.now(), seq: 2, metrics: [] }));
    const stale = await waitFor(() => seen.find((s) => s.topic === `${LINE}/capper/speed` && s.body['quality'] === 'stale'), 5_000, 'stale republish');
    expect(stale.body['value']).to.equal(null);
    const lv = await waitFor(async () => {
      const r = await query<{ quality: string; v: number }>(server.databaseUrl, `SELECT l.quality, l.v_num AS v FROM last_values l JOIN topics t ON t.id = l.topic_id WHERE t.name = $1`, [`${LINE}/capper/speed`]);
      return r[0]?.quality === 'stale' ? r[0] : undefined;
    }, 5_000, 'stale last value');
    expect(lv.v, 'the value is kept').to.equal(1200.5);
  });

  it('refuses a BIRTH whose metric would land on a topic another live metric holds, naming both', async () => {
    await publish(mqtt, 'spBv1.0/mapgrp/NBIRTH/gw2', encode({ timestamp: Date.now(), seq: 0, metrics: [{ name: 'bdSeq', type: 'UInt64', value: 0 }] }));
    await publish(mqtt, 'spBv1.0/mapgrp/DBIRTH/gw2/filler', encode({ timestamp: Date.now(), seq: 1, metrics: [{ name: 'Level', type: 'Double', value: 3 }] }));
    await publish(mqtt, 'spBv1.0/mapgrp/DBIRTH/gw1/filler', encode({ timestamp: Date.now(), seq: 3, metrics: [{ name: 'Level', type: 'Double', value: 4 }] }));
    const rej = await waitFor(async () => (await query<{ code: string; reason: string }>(server.databaseUrl,
      'SELECT code, reason FROM rejections WHERE topic = $1', ['spBv1.0/mapgrp/DBIRTH/gw1/filler']))[0], 5_000, 'rejection');
    expect(rej.code).to.equal('UNS_ERR_SPARKPLUG_METRIC');
    expect(rej.reason).to.contain(`${LINE}/filler/Level`).and.contain('mapgrp/gw2/filler:Level');
  });

  it('two explicit renames onto one topic stop start-up, naming both entries', () => {
    const file = topicsWith(config.dataDir, `
sparkplug:
  map:
    - { group: g, node: a, path: ${LINE}/filler, metrics: { "Speed": speed } }
    - { group: g, node: b, path: ${LINE}/filler, metrics: { "Rate": speed } }
`);
    expect(() => loadTopics(file)).to.throw(/sparkplug\.map\[0\]\.metrics\["Speed"\]/);
  });
});
