/**
 * A subscriber that stops reading never stalls the others nor grows the server's memory without bound,
 * and its disappearing under load does not take the server down.
 */
import { expect } from 'chai';
import { connect as netConnect, type Socket } from 'node:net';
import mqttPacket from 'mqtt-packet';
import { testConfig, startTestServer, connect, waitFor, cleanup, ADMIN } from '../helpers/server.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';

async function stalledSubscriber(port: number, filter: string): Promise<Socket> {
  const sock = netConnect(port, '127.0.0.1');
  sock.on('error', () => undefined);
  await new Promise<void>((r) => sock.once('connect', () => r()));
  sock.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'stalled', keepalive: 0,
    username: ADMIN.username, password: Buffer.from(ADMIN.password) }));
  await new Promise<void>((r) => sock.once('data', () => r()));
  sock.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: filter, qos: 0 }] }));
  await new Promise<void>((r) => sock.once('data', () => r()));
  sock.pause(); // from here on it reads nothing
  return sock;
}

describe('slow consumer - a subscriber that stops reading', function () {
  this.timeout(90_000);
  let config: Config;
  let server: RunningServer;

  before(async () => {
    config = testConfig(null, { mqtt: { host: '127.0.0.1', port: 0, slowConsumerBytes: 65_536 } });
    server = await startTestServer(config);
  });
  after(async () => {
    await server?.stop();
    cleanup(config);
  });

  it('is dropped to, while a live subscriber gets everything, and its vanishing does not crash the server', async () => {
    const stalled = await stalledSubscriber(server.mqttPort, 'acme/#');
    const live = await connect(server.mqttPort, { clientId: 'live' });
    let got = 0;
    live.on('message', () => { got++; });
    await new Promise<void>((res, rej) => live.subscribe('acme/plant1/utilities/line4/#', { qos: 1 }, (e) => (e ? rej(e) : res())));
    const pub = await connect(server.mqttPort, { clientId: 'pub' });
    const N = 3_000;
    const body = JSON.stringify({ value: 1, note: 'x'.repeat(12_000) });
    let acked = 0;
    await new Promise<void>((res) => {
      let sent = 0;
      const next = (): void => {
        if (sent >= N) return;
        const i = sent++;
        pub.publish(`acme/plant1/utilities/line4/valve${i % 20}/position`, body, { qos: 1 }, () => {
          if (++acked === N) res();
          next();
        });
      };
      for (let w = 0; w < 20; w++) next();
    });
    await waitFor(() => got >= N, 20_000, 'the live subscriber to receive every message');
    expect(got).to.equal(N);
    expect(server.broker!.stats.forwardsDropped).to.be.greaterThan(0);
    // What waits for the stalled subscriber stays near the limit, not the ~36 MB published.
    const waiting = (server.broker!.aedes as unknown as { clients: Record<string, { conn: { writableLength: number } }> }).clients['stalled']?.conn.writableLength ?? 0;
    // That is the limit plus the deliveries Aedes had already scheduled when the check ran (at most the
    // 20 publishes in flight).
    expect(waiting).to.be.at.most(65_536 + 20 * (body.length + 100));

    const clients = server.broker!.connectedClients;
    stalled.destroy();
    await waitFor(() => server.broker!.connectedClients < clients, 5_000, 'the broker to drop the stalled subscriber');
    const health = await fetch(`http://127.0.0.1:${server.httpPort}/health`);
    expect(health.status).to.equal(200);
    await new Promise<void>((res, rej) => pub.publish('acme/plant1/utilities/line4/valve1/position', body, { qos: 1 }, (e) => (e ? rej(e) : res())));
    pub.end(true);
    live.end(true);
  });
});
