/**
 * PROXY protocol on the MQTT listener (UNS_MQTT_PROXY_PROTOCOL=on), as HAProxy sends it: the client's
 * address from a v1 or v2 header is the one logged and throttled; the MQTT after the header is untouched
 * (also when the header is split across TCP segments); a connection without a header is refused.
 */
import { expect } from 'chai';
import { Writable } from 'node:stream';
import pino from 'pino';
import { TestPostgres } from '../helpers/postgres.js';
import { RawClient, connectBytes } from '../helpers/raw-mqtt.js';
import { ADMIN, cleanup, startServerWithLogger, testConfig, waitFor } from '../helpers/server.js';
import type { RunningServer } from '../../src/main.js';

/** A PROXY protocol v2 header for a TCP over IPv4 connection from `src`. */
function v2Header(src: [number, number, number, number], srcPort: number): Buffer {
  const sig = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');
  const addr = Buffer.alloc(12);
  Buffer.from(src).copy(addr, 0);
  Buffer.from([127, 0, 0, 1]).copy(addr, 4);
  addr.writeUInt16BE(srcPort, 8);
  addr.writeUInt16BE(1883, 10);
  const len = Buffer.alloc(2);
  len.writeUInt16BE(addr.length);
  return Buffer.concat([sig, Buffer.from([0x21, 0x11]), len, addr]);
}

describe('PROXY protocol on the MQTT listener', function () {
  this.timeout(60_000);
  const pg = new TestPostgres();
  let server: RunningServer;
  const lines: Array<Record<string, unknown>> = [];

  before(async () => {
    await pg.start();
    const sink = new Writable({ write(chunk: Buffer, _e, cb) { for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>); cb(); } });
    server = await startServerWithLogger(testConfig(pg.url, { mqtt: { host: '127.0.0.1', port: 0, proxyProtocol: 'on' } }), pino({ level: 'info' }, sink));
  });
  after(async () => {
    await server.stop();
    cleanup(server.config);
    await pg.destroy();
  });

  it('v1: the address in the header is the client\'s, in the connect log line', async () => {
    const c = await RawClient.open(server.mqttPort);
    c.write(Buffer.concat([Buffer.from('PROXY TCP4 203.0.113.7 127.0.0.1 51234 1883\r\n'), connectBytes({ clientId: 'behind-lb-1', username: ADMIN.username, password: ADMIN.password })]));
    const ack = await c.next('connack', 3_000);
    expect(ack).to.include({ cmd: 'connack', returnCode: 0 });
    await waitFor(() => lines.find((l) => l['msg'] === 'client connected' && l['clientId'] === 'behind-lb-1'), 5_000, 'the connect line');
    expect(lines.find((l) => l['msg'] === 'client connected' && l['clientId'] === 'behind-lb-1')?.['address']).to.equal('203.0.113.7');
    c.destroy();
  });

  it('v2, split across segments: a wrong password is refused and logged with the client\'s address', async () => {
    const c = await RawClient.open(server.mqttPort);
    const bytes = Buffer.concat([v2Header([198, 51, 100, 9], 40000), connectBytes({ clientId: 'behind-lb-2', username: ADMIN.username, password: 'wrong-password' })]);
    c.write(bytes.subarray(0, 7));
    await new Promise((r) => setImmediate(r));
    c.write(bytes.subarray(7, 20));
    c.write(bytes.subarray(20));
    const ack = await c.next('connack', 5_000);
    expect(ack).to.include({ cmd: 'connack', returnCode: 4 });
    const refused = lines.find((l) => l['msg'] === 'connection refused' && l['clientId'] === 'behind-lb-2');
    expect(refused?.['address']).to.equal('198.51.100.9');
    c.destroy();
  });

  it('refuses a connection that does not start with a header, and counts it', async () => {
    const before = server.broker!.stats.proxyHeadersRefused;
    const c = await RawClient.open(server.mqttPort);
    c.write(connectBytes({ clientId: 'direct', username: ADMIN.username, password: ADMIN.password }));
    expect(await c.next('connack', 3_000)).to.equal(null);
    expect(c.isClosed).to.equal(true);
    expect(server.broker!.stats.proxyHeadersRefused).to.equal(before + 1);
    expect(lines.some((l) => l['msg'] === 'connection refused: PROXY protocol')).to.equal(true);
  });
});
