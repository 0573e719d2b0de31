/**
 * The namespace's state survives restarts: Sparkplug alias tables learnt from a BIRTH are restored, so
 * DATA sent with aliases only after a restart is still resolved, and the BIRTH is still offered retained.
 */
import { expect } from 'chai';
import sparkplugPayload from 'sparkplug-payload';
import type { UPayload } from 'sparkplug-payload/lib/sparkplugbpayload.js';
import { query } from '../helpers/postgres.js';
import { testConfig, startTestServer, connect, publish, cleanup } from '../helpers/server.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';

const codec = sparkplugPayload.get('spBv1.0');

function encode(p: UPayload): Buffer {
  if (!codec) throw new Error('sparkplug-payload lacks spBv1.0');
  return Buffer.from(codec.encodePayload(p));
}

describe('restart state - Sparkplug alias tables', function () {
  this.timeout(60_000);
  let config: Config;
  let server: RunningServer;

  before(async () => {
    config = testConfig(null);
    server = await startTestServer(config);
  });
  after(async () => {
    await server?.stop();
    cleanup(config);
  });

  it('resolves aliases from a BIRTH received before the restart', async () => {
    let client = await connect(server.mqttPort);
    const now = Date.now();
    await publish(client, 'spBv1.0/brewery/NBIRTH/edge7', encode({
      timestamp: now, seq: 0,
      metrics: [
        { name: 'bdSeq', type: 'Int64', value: 0 },
        { name: 'Kettle/Temperature', alias: 11, type: 'Double', value: 78.5, timestamp: now },
      ],
    }));
    client.end(true);
    await server.stop();
    server = await startTestServer(config);
    client = await connect(server.mqttPort);
    await publish(client, 'spBv1.0/brewery/NDATA/edge7', encode({
      timestamp: now + 1000, seq: 1, metrics: [{ alias: 11, type: 'Double', value: 79.25, timestamp: now + 1000 }],
    }));
    client.end(true);
    const rows = await query(server.databaseUrl, `SELECT s.v_num FROM samples s JOIN topics t ON t.id = s.topic_id
      WHERE t.name = 'spBv1.0/brewery/edge7/Kettle/Temperature' ORDER BY s.time`);
    expect(rows.map((r) => r['v_num'])).to.deep.equal([78.5, 79.25]);
    const rejected = await query(server.databaseUrl, `SELECT code FROM rejections WHERE topic LIKE 'spBv1.0/brewery/%'`);
    expect(rejected).to.deep.equal([]);
  });

  it('offers the BIRTH received before the restart, retained on $sparkplug/certificates/...', async () => {
    const late = await connect(server.mqttPort, { clientId: 'cert-after-restart' });
    try {
      const got = new Promise<{ payload: Buffer; retain: boolean }>((res) => {
        late.on('message', (topic, payload, packet) => { if (topic === '$sparkplug/certificates/spBv1.0/brewery/NBIRTH/edge7') res({ payload, retain: packet.retain }); });
      });
      await late.subscribeAsync('$sparkplug/certificates/spBv1.0/brewery/#', { qos: 1 });
      const cert = await got;
      expect(cert.retain).to.equal(true);
      const birth = codec?.decodePayload(cert.payload);
      expect(birth?.metrics?.find((m) => m.name === 'Kettle/Temperature')?.value).to.equal(78.5);
    } finally {
      late.end(true);
    }
  });
});
