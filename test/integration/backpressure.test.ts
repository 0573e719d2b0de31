/**
 * The ingest queue is bounded for QoS 0 too: when the store is behind, the broker stops reading the
 * publisher's socket (TCP back-pressure) instead of growing memory or dropping, and counts it.
 */
import { expect } from 'chai';
import { connect as netConnect } from 'node:net';
import mqttPacket from 'mqtt-packet';
import { query } from '../helpers/postgres.js';
import { testConfig, startTestServer, waitFor, cleanup, ADMIN } from '../helpers/server.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';

describe('back-pressure - QoS 0 flood', function () {
  this.timeout(90_000);
  let config: Config;
  let server: RunningServer;

  before(async () => {
    config = testConfig(null, {
      store: { highWaterItems: 200, lowWaterItems: 50, batchMaxItems: 50, maxConcurrentFlushes: 1, batchMaxDelayMs: 2 },
    });
    server = await startTestServer(config);
  });
  after(async () => {
    await server?.stop();
    cleanup(config);
  });

  it('keeps the queue bounded, holds the publisher and loses nothing', async () => {
    const N = 20_000;
    const sock = netConnect(server.mqttPort, '127.0.0.1');
    await new Promise<void>((r) => sock.once('connect', () => r()));
    sock.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'flood', keepalive: 60,
      username: ADMIN.username, password: Buffer.from(ADMIN.password) }));
    await new Promise<void>((r) => sock.once('data', () => r())); // CONNACK
    // Build the whole flood up front and write it as fast as the socket takes it.
    const frames: Buffer[] = [];
    for (let i = 0; i < N; i++) {
      frames.push(mqttPacket.generate({ cmd: 'publish', topic: `acme/plant1/utilities/line2/pump${i % 50}/flow`, payload: Buffer.from(`{"value": ${i}}`), qos: 0, retain: false, dup: false }));
    }
    const flood = Buffer.concat(frames);
    let maxQueued = 0;
    const sampler = setInterval(() => { maxQueued = Math.max(maxQueued, server.writer.queued); }, 1);
    sock.on('error', () => undefined);
    sock.write(flood);
    const url = server.databaseUrl;
    await waitFor(async () => {
      const r = await query<{ n: number }>(url, `SELECT count(*)::int AS n FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name LIKE 'acme/plant1/utilities/line2/pump%'`);
      return (r[0]?.n ?? 0) >= N ? true : undefined;
    }, 60_000, 'every QoS 0 message stored');
    clearInterval(sampler);
    sock.destroy();
    expect(server.pipeline.stats.backpressureHolds).to.be.greaterThan(0);
    // What one connection had already read when it was held (a 64 KiB socket read plus the frame guard's
    // 16 KiB buffer, ~80 KiB of ~60-byte packets) can land past the high-water mark; nothing more.
    expect(maxQueued).to.be.at.most(200 + Math.ceil((80 * 1024) / 60));
    const r = await query<{ n: number }>(url, `SELECT count(*)::int AS n FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name LIKE 'acme/plant1/utilities/line2/pump%'`);
    expect(r[0]?.n).to.equal(N);
  });
});
