/**
 * Deny rules in roles, on every door: a role that reads `acme/#` except the warehouse neither receives
 * warehouse topics on an `acme/#` MQTT subscription (live or retained), nor reads them over REST or the live
 * stream; a subscription wholly inside the denied area is refused; a denied write is refused.
 */
import { expect } from 'chai';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { testConfig, startTestServer, connect, publish, cleanup, roleToken, waitFor } from '../helpers/server.js';
import { SseStream, type Point } from '../helpers/sse.js';
import { packageRoot } from '../../src/core/paths.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';

const ROLE = `
  no-warehouse:
    description: Everything under acme/ except the warehouses; may not change setpoints.
    read: ["acme/#"]
    write: ["acme/#"]
    deny:
      read: ["acme/+/warehouse/#"]
      write: ["acme/+/+/+/+/setpoint"]
`;
const PACK = 'acme/plant1/packaging/line1/filler/temperature';
const WH = 'acme/plant1/warehouse/line1/dock1/temperature';

describe('acl deny rules - on MQTT, REST and the live stream', function () {
  this.timeout(60_000);
  let config: Config;
  let server: RunningServer;
  let admin: MqttClient;
  let base: string;
  const token = roleToken('wh-less', ['no-warehouse']);

  before(async () => {
    const base0 = testConfig(null);
    const file = join(base0.dataDir, 'topics.yaml');
    writeFileSync(file, readFileSync(join(packageRoot(), 'topics.yaml'), 'utf8').replace(/^roles:\n/m, `roles:\n${ROLE}`));
    config = testConfig(null, { topicsFile: file }, base0.dataDir);
    server = await startTestServer(config);
    base = `http://127.0.0.1:${server.httpPort}`;
    admin = await connect(server.mqttPort, { clientId: 'acl-admin' });
    await publish(admin, WH, JSON.stringify({ value: 4 }), { retain: true });
  });
  after(async () => {
    admin?.end(true);
    await server?.stop();
    if (config) cleanup(config);
  });

  it('an acme/# subscriber gets neither live nor retained warehouse messages; the rest arrives', async () => {
    const c = await connect(server.mqttPort, { clientId: 'acl-sub', username: 'wh-less', password: token });
    const got: string[] = [];
    c.on('message', (t) => got.push(t));
    const granted = await c.subscribeAsync('acme/#', { qos: 1 });
    expect(granted[0]?.qos).to.equal(1);
    await publish(admin, WH, JSON.stringify({ value: 5 }));
    await publish(admin, PACK, JSON.stringify({ value: 21 }));
    // Delivered in publish order on one subscription: once PACK is here, WH (live and retained) was decided.
    await waitFor(() => got.includes(PACK), 5_000, 'the packaging message');
    expect(got).to.deep.equal([PACK]);
    c.end(true);
  });

  it('refuses a subscription wholly inside the denied area (SUBACK 0x80)', async () => {
    const c = await connect(server.mqttPort, { clientId: 'acl-sub2', username: 'wh-less', password: token });
    const refused = await c.subscribeAsync('acme/plant1/warehouse/#', { qos: 1 }).then(() => null, (e: { packet?: { granted?: number[] } }) => e);
    expect(refused?.packet?.granted).to.deep.equal([128]);
    c.end(true);
  });

  it('refuses a denied write on MQTT and on POST /api/v1/publish with the same code', async () => {
    const r = await fetch(`${base}/api/v1/publish?topic=${encodeURIComponent('acme/plant1/packaging/line1/filler/setpoint')}`, {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ value: 80 }),
    });
    expect(r.status).to.equal(403);
    expect(((await r.json()) as { error: { code: string } }).error.code).to.equal('UNS_ERR_NOT_AUTHORIZED');
    const c = await connect(server.mqttPort, { clientId: 'acl-pub', username: 'wh-less', password: token });
    const closed = new Promise<void>((res) => c.once('close', () => res()));
    c.publish('acme/plant1/packaging/line1/filler/setpoint', JSON.stringify({ value: 80 }), { qos: 1 });
    await closed; // MQTT 3.1.1 has no negative PUBACK: the connection is closed
    c.end(true);
  });

  it('hides warehouse topics from REST reads and the live stream', async () => {
    const latest = await (await fetch(`${base}/api/v1/datapoints/latest?filter=${encodeURIComponent('acme/#')}`, { headers: { authorization: `Bearer ${token}` } })).json() as { datapoints: Point[] };
    expect(latest.datapoints.map((p) => p.topic)).to.include(PACK).and.not.include(WH);
    const one = await fetch(`${base}/api/v1/datapoints/history?topic=${encodeURIComponent(WH)}`, { headers: { authorization: `Bearer ${token}` } });
    expect(one.status).to.equal(403);
    const s = await SseStream.open(`${base}/api/v1/events/stream?filter=${encodeURIComponent('acme/plant1/#')}`, token);
    try {
      await publish(admin, WH, JSON.stringify({ value: 6 }));
      await publish(admin, PACK, JSON.stringify({ value: 22 }));
      await s.point(PACK, 22);
      const topics = s.events.flatMap((e) => (e.event === 'datapoints_batch' ? (e.data['datapoints'] as Point[]).map((p) => p.topic) : []));
      expect(topics).to.not.include(WH);
    } finally {
      s.close();
    }
  });
});
