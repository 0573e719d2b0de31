/**
 * The live datapoint stream as Server-Sent Events, end to end: a real server, real HTTP streams (fetch),
 * data published over real MQTT.
 */
import { expect } from 'chai';
import { get, type IncomingMessage } from 'node:http';
import jwt from 'jsonwebtoken';
import type { MqttClient } from 'mqtt';
import { testConfig, startTestServer, connect, publish, waitFor, cleanup } from '../helpers/server.js';
import { SseStream, type Point } from '../helpers/sse.js';
import { overrideLivePolicy } from '../../src/api/live-policy.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';

const SECRET = 'test-secret-that-is-long-enough-0123456789';
const LINE = 'acme/plant1/packaging/line1';


function sign(claims: object, opts: jwt.SignOptions = { expiresIn: 600 }): string {
  return jwt.sign(claims, SECRET, { algorithm: 'HS256', ...opts });
}

describe('api stream - server-sent events', function () {
  this.timeout(30_000);
  let config: Config;
  let server: RunningServer;
  let mqtt: MqttClient;
  let admin: string;
  let base: string;
  const streams: SseStream[] = [];
  const open = async (query: string, token?: string): Promise<SseStream> => {
    const s = await SseStream.open(`${base}/api/v1/events/stream?${query}`, token);
    streams.push(s);
    return s;
  };
  const code = (s: SseStream): unknown => (s.body?.['error'] as { code?: string } | undefined)?.code;

  before(async () => {
    config = testConfig(null);
    server = await startTestServer(config);
    base = `http://127.0.0.1:${server.httpPort}`;
    mqtt = await connect(server.mqttPort);
    admin = sign({ sub: 'admin', roles: ['admin'] });
  });
  afterEach(() => {
    for (const s of streams.splice(0)) s.close();
  });
  after(async () => {
    mqtt?.end(true);
    await server?.stop();
    if (config) cleanup(config);
  });

  it('streams subscribed, a snapshot with earlier values, then live batches', async () => {
    const topic = `${LINE}/sse1/count`;
    await publish(mqtt, topic, '11');
    const s = await open(`filter=${encodeURIComponent(`${LINE}/sse1/#`)}&filter=${encodeURIComponent(`${LINE}/sse1b/#`)}`, admin);
    expect(s.status).to.equal(200);
    expect(s.contentType).to.match(/^text\/event-stream/);
    const sub = await s.take((e) => e.event === 'subscribed');
    expect(sub.data['filters']).to.deep.equal([`${LINE}/sse1/#`, `${LINE}/sse1b/#`]);
    expect(s.retry).to.be.a('number').greaterThan(0);
    const snap = await s.take((e) => e.event === 'snapshot');
    expect((snap.data['datapoints'] as Point[])[0]).to.include({ topic, value: 11, quality: 'good' });
    await publish(mqtt, topic, '12');
    await s.point(topic, 12);
    await publish(mqtt, `${LINE}/sse1b/count`, '13');
    await s.point(`${LINE}/sse1b/count`, 13);
  });

  it('accepts ?token= and stops on client disconnect', async () => {
    const hubBefore = server.hub.size;
    const s = await open(`filter=${encodeURIComponent(`${LINE}/sse2/#`)}&token=${encodeURIComponent(admin)}`);
    expect(s.status).to.equal(200);
    await s.take((e) => e.event === 'snapshot');
    expect(server.hub.size).to.equal(hubBefore + 1);
    s.close();
    await waitFor(() => server.hub.size === hubBefore, 5_000, 'hub subscription removed');
  });

  it('applies deadband and history from the query', async () => {
    const topic = `${LINE}/sse3/count`;
    for (const v of [1, 2]) await publish(mqtt, topic, String(v));
    const s = await open(`filter=${encodeURIComponent(`${LINE}/sse3/#`)}&deadband=10&history=60`, admin);
    await s.take((e) => e.event === 'snapshot');
    const h = await s.take((e) => e.event === 'history');
    expect((h.data['datapoints'] as Point[]).map((p) => p.value)).to.deep.equal([1, 2]);
    for (const v of [5, 30]) await publish(mqtt, topic, String(v));
    await s.point(topic, 30);
    const live = s.events.filter((e) => e.event === 'datapoints_batch').flatMap((e) => (e.data['datapoints'] as Point[]).map((p) => p.value));
    expect(live).to.deep.equal([30]);
  });

  it('refuses a missing or garbage token with 401', async () => {
    const none = await open(`filter=${encodeURIComponent('acme/#')}`);
    expect(none.status).to.equal(401);
    expect(code(none)).to.equal('UNS_ERR_UNAUTHENTICATED');
    const garbage = await open(`filter=${encodeURIComponent('acme/#')}`, 'garbage');
    expect(garbage.status).to.equal(401);
    const expired = await open(`filter=${encodeURIComponent('acme/#')}`, sign({ sub: 'admin', roles: ['admin'], exp: Math.floor(Date.now() / 1000) - 60 }, {}));
    expect(expired.status).to.equal(401);
  });

  it('refuses a filter outside the role with 403, a malformed one with 400, none at all with 400', async () => {
    const analyst = sign({ sub: 'ana', roles: ['analyst'] });
    for (const f of ['#', 'spBv1.0/#']) {
      const s = await open(`filter=${encodeURIComponent(`${LINE}/x/#`)}&filter=${encodeURIComponent(f)}`, analyst);
      expect(s.status, f).to.equal(403);
      expect(code(s)).to.equal('UNS_ERR_FORBIDDEN');
    }
    const bad = await open(`filter=${encodeURIComponent('acme/#/x')}`, analyst);
    expect(bad.status).to.equal(400);
    expect(code(bad)).to.equal('UNS_ERR_FILTER_INVALID');
    const none = await open('', analyst);
    expect(none.status).to.equal(400);
    expect(code(none)).to.equal('UNS_ERR_BAD_REQUEST');
    const ok = await open(`filter=${encodeURIComponent('acme/plant1/#')}`, analyst);
    expect(ok.status).to.equal(200);
    await ok.take((e) => e.event === 'snapshot');
  });

  it('drops events for a reader that stops, then sends a gap event; other streams carry on', async () => {
    const restore = overrideLivePolicy({ highWaterBytes: 256 * 1024, lowWaterBytes: 64 * 1024 });
    try {
      const filter = encodeURIComponent(`${LINE}/sseslow/#`);
      const fast = await open(`filter=${filter}`, admin);
      await fast.take((e) => e.event === 'snapshot');
      // The slow reader: a plain http.get whose response stream is paused.
      let text = '';
      const slow = await new Promise<IncomingMessage>((res, rej) => {
        get(`${base}/api/v1/events/stream?filter=${filter}`, { headers: { authorization: `Bearer ${admin}` } }, res).on('error', rej);
      });
      slow.setEncoding('utf8');
      slow.on('data', (c: string) => { text += c; });
      await waitFor(() => text.includes('event: snapshot'), 5_000, 'slow snapshot');
      slow.pause();
      const dropped = async (): Promise<number> => (await server.metrics.droppedFrames.get()).values
        .filter((v) => v.labels['transport'] === 'sse').reduce((a, v) => a + v.value, 0);
      const before = await dropped();
      const blob = Buffer.alloc(200_000, 7);
      for (let n = 0; (await dropped()) === before; n += 10) {
        if (n >= 400) throw new Error('no event dropped after 400 blobs');
        for (let i = 0; i < 10; i++) mqtt.publish(`${LINE}/sseslow/raw/blob`, blob, { qos: 0 });
        await publish(mqtt, `${LINE}/sseslow/count`, String(n));
        await fast.point(`${LINE}/sseslow/count`, n);
      }
      slow.resume();
      await waitFor(() => /event: gap\ndata: \{"type":"gap","dropped":[1-9]/.test(text), 10_000, 'gap event');
      expect(fast.events.some((e) => e.event === 'gap')).to.equal(false);
      slow.destroy();
    } finally {
      restore();
    }
  });

  it('sends heartbeat comments, and an error event then the end when the token expires', async () => {
    const restore = overrideLivePolicy({ heartbeatMs: 200 });
    try {
      const s = await open(`filter=${encodeURIComponent(`${LINE}/sse4/#`)}`, sign({ sub: 'admin', roles: ['admin'], exp: Math.floor(Date.now() / 1000) + 2 }, {}));
      await s.take((e) => e.event === 'snapshot');
      await waitFor(() => s.comments.some((c) => c.startsWith('heartbeat')), 3_000, 'heartbeat comment');
      const err = await s.take((e) => e.event === 'error', 5_000);
      expect((err.data['error'] as { code: string }).code).to.equal('UNS_ERR_UNAUTHENTICATED');
      await waitFor(() => s.ended, 3_000, 'end of stream');
    } finally {
      restore();
    }
  });
});
