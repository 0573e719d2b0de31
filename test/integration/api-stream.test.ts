/**
 * The live datapoint stream over WebSocket, end to end: a real server, real `ws` clients, data published
 * over real MQTT. Every server message is checked against StreamServerMessage (schemas/openapi/stream.json).
 */
import { expect } from 'chai';
import jwt from 'jsonwebtoken';
import WebSocket from 'ws';
import type { MqttClient } from 'mqtt';
import { testConfig, startTestServer, connect, publish, waitFor, cleanup } from '../helpers/server.js';
import { loadOpenApi, RequestValidator } from '../../src/api/openapi.js';
import { overrideLivePolicy } from '../../src/api/live-policy.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';

const SECRET = 'test-secret-that-is-long-enough-0123456789';
const LINE = 'acme/plant1/packaging/line1';
const validator = new RequestValidator(loadOpenApi());

type Msg = Record<string, unknown> & { type: string };
type Point = { topic: string; value: unknown; timestamp: string; quality: string; unit?: string | null };

function sign(claims: object, opts: jwt.SignOptions = { expiresIn: 600 }): string {
  return jwt.sign(claims, SECRET, { algorithm: 'HS256', ...opts });
}

/** A stream client that records every message and lets a test wait for the next one it cares about. */
class Client {
  readonly messages: Msg[] = [];
  /** Arrival time of each message (epoch ms). */
  readonly times: number[] = [];
  private cursor = 0;
  private wake: (() => void) | null = null;
  closed: { code: number; reason: string } | null = null;

  constructor(readonly ws: WebSocket) {
    ws.on('message', (data) => {
      const msg = JSON.parse(String(data)) as Msg;
      const bad = validator.validate('StreamServerMessage', msg);
      if (bad !== null) throw new Error(`server message breaks StreamServerMessage: ${bad}: ${String(data).slice(0, 200)}`);
      this.messages.push(msg);
      this.times.push(Date.now());
      this.wake?.();
    });
    ws.on('close', (code, reason) => { this.closed = { code, reason: reason.toString() }; this.wake?.(); });
    ws.on('error', () => undefined);
  }

  static async open(port: number, token: string | null, how: 'query' | 'header' = 'query'): Promise<Client> {
    const url = `ws://127.0.0.1:${port}/ws/datapoints/stream${token !== null && how === 'query' ? `?token=${encodeURIComponent(token)}` : ''}`;
    const ws = new WebSocket(url, token !== null && how === 'header' ? { headers: { authorization: `Bearer ${token}` } } : {});
    const c = new Client(ws);
    await new Promise<void>((res, rej) => {
      ws.once('open', () => res());
      ws.once('unexpected-response', (_req, r) => rej(Object.assign(new Error(`HTTP ${r.statusCode}`), { status: r.statusCode })));
      ws.once('error', rej);
    });
    return c;
  }

  send(msg: unknown): void {
    this.ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg));
  }

  /** The next message (after the last one taken) that matches; later ones stay for later takes. */
  async take(pred: (m: Msg) => boolean, timeoutMs = 5_000, what = 'message'): Promise<Msg> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      for (let i = this.cursor; i < this.messages.length; i++) {
        const m = this.messages[i] as Msg;
        if (pred(m)) { this.cursor = i + 1; return m; }
      }
      const left = end - Date.now();
      if (left <= 0 || this.closed) throw new Error(`no ${what} (got ${this.messages.slice(this.cursor).map((m) => m.type).join(', ') || 'nothing'})`);
      await new Promise<void>((r) => { const t = setTimeout(r, left); this.wake = () => { clearTimeout(t); r(); }; });
      this.wake = null;
    }
  }

  /** Live points received so far for a topic, in order. */
  live(topic: string): Point[] {
    return this.messages.filter((m) => m.type === 'datapoints_batch').flatMap((m) => (m['datapoints'] as Point[]).filter((p) => p.topic === topic));
  }

  async point(topic: string, value: unknown, timeoutMs = 5_000): Promise<Point> {
    const m = await this.take((x) => x.type === 'datapoints_batch' && (x['datapoints'] as Point[]).some((p) => p.topic === topic && p.value === value), timeoutMs, `live ${topic}=${String(value)}`);
    return (m['datapoints'] as Point[]).find((p) => p.topic === topic && p.value === value) as Point;
  }

  async subscribe(filters: string[], extra: Record<string, unknown> = {}): Promise<Msg> {
    this.send({ type: 'subscribe', filters, ...extra });
    await this.take((m) => m.type === 'subscribed', 5_000, 'subscribed');
    return this.take((m) => m.type === 'snapshot', 5_000, 'snapshot');
  }

  close(): void {
    this.ws.terminate();
  }
}

async function refusedStatus(port: number, token: string | null, how: 'query' | 'header' = 'query'): Promise<number> {
  try {
    const c = await Client.open(port, token, how);
    c.close();
    return 101;
  } catch (e) {
    return (e as { status?: number }).status ?? -1;
  }
}

async function droppedFrames(server: RunningServer): Promise<number> {
  const m = await server.metrics.droppedFrames.get();
  return m.values.filter((v) => v.labels['transport'] === 'ws').reduce((a, v) => a + v.value, 0);
}

describe('api stream - websocket', function () {
  this.timeout(30_000);
  let config: Config;
  let server: RunningServer;
  let mqtt: MqttClient;
  let admin: string;
  const clients: Client[] = [];
  const open = async (token: string = admin, how: 'query' | 'header' = 'query'): Promise<Client> => {
    const c = await Client.open(server.httpPort, token, how);
    clients.push(c);
    return c;
  };

  before(async () => {
    config = testConfig(null);
    server = await startTestServer(config);
    mqtt = await connect(server.mqttPort);
    admin = sign({ sub: 'admin', roles: ['admin'] });
  });
  afterEach(() => {
    for (const c of clients.splice(0)) c.close();
  });
  after(async () => {
    mqtt?.end(true);
    await server?.stop();
    if (config) cleanup(config);
  });

  it('answers subscribe with subscribed, a snapshot of last values, then live batches', async () => {
    const topic = `${LINE}/snap/count`;
    await publish(mqtt, topic, '41');
    const c = await open();
    c.send({ type: 'subscribe', id: 's1', filters: [`${LINE}/snap/#`] });
    const sub = await c.take((m) => m.type === 'subscribed');
    expect(sub).to.deep.equal({ type: 'subscribed', id: 's1', filters: [`${LINE}/snap/#`] });
    const snap = await c.take((m) => m.type === 'snapshot');
    expect(snap['id']).to.equal('s1');
    const [p] = snap['datapoints'] as Point[];
    expect(p).to.include({ topic, value: 41, quality: 'good' });
    expect(p).to.have.property('unit');
    expect(Date.parse(p!.timestamp)).to.be.a('number').and.not.NaN;
    await publish(mqtt, topic, '42');
    const live = await c.point(topic, 42);
    expect(live).to.include({ topic, value: 42, quality: 'good' });
    expect(live.timestamp).to.match(/^\d{4}-\d\d-\d\dT/);
    // The gauge counts this client (prom-client's get() is asynchronous).
    expect((await server.metrics.wsClients.get()).values[0]?.value).to.be.at.least(1);
  });

  it('accepts the credential in an Authorization header too', async () => {
    const c = await open(admin, 'header');
    await c.subscribe([`${LINE}/hdr/#`]);
    await publish(mqtt, `${LINE}/hdr/count`, '1');
    await c.point(`${LINE}/hdr/count`, 1);
  });

  it('sends a history window after the snapshot when asked', async () => {
    const topic = `${LINE}/hist/count`;
    for (const v of [1, 2, 3]) await publish(mqtt, topic, String(v));
    const c = await open();
    await c.subscribe([`${LINE}/hist/#`], { history: { seconds: 60 } });
    const h = await c.take((m) => m.type === 'history');
    expect((h['datapoints'] as Point[]).filter((p) => p.topic === topic).map((p) => p.value)).to.deep.equal([1, 2, 3]);
  });

  it('stops delivery after unsubscribe', async () => {
    const gone = `${LINE}/unsub/count`;
    const fence = `${LINE}/unsubf/count`;
    const c = await open();
    await c.subscribe([`${LINE}/unsub/#`, `${LINE}/unsubf/#`]);
    await publish(mqtt, gone, '1');
    await c.point(gone, 1);
    c.send({ type: 'unsubscribe', id: 'u1', filters: [`${LINE}/unsub/#`] });
    expect(await c.take((m) => m.type === 'unsubscribed')).to.deep.equal({ type: 'unsubscribed', id: 'u1', filters: [`${LINE}/unsub/#`] });
    await publish(mqtt, gone, '2');
    await publish(mqtt, fence, '3');
    // Batches keep publish order: once the fence arrives, anything for the old filter would have too.
    await c.point(fence, 3);
    expect(c.live(gone).map((p) => p.value)).to.deep.equal([1]);
  });

  it('gives two clients with different filters only their own topics', async () => {
    const a = await open();
    const b = await open();
    await a.subscribe([`${LINE}/cella/#`]);
    await b.subscribe([`${LINE}/cellb/#`]);
    await publish(mqtt, `${LINE}/cella/count`, '1');
    await publish(mqtt, `${LINE}/cellb/count`, '2');
    await publish(mqtt, `${LINE}/cella/count`, '3');
    await publish(mqtt, `${LINE}/cellb/count`, '4');
    await a.point(`${LINE}/cella/count`, 3);
    await b.point(`${LINE}/cellb/count`, 4);
    expect(a.live(`${LINE}/cellb/count`)).to.deep.equal([]);
    expect(b.live(`${LINE}/cella/count`)).to.deep.equal([]);
    expect(a.live(`${LINE}/cella/count`).map((p) => p.value)).to.deep.equal([1, 3]);
  });

  it("refuses filters outside an analyst's read permissions and subscribes the rest", async () => {
    const analyst = sign({ sub: 'ana', roles: ['analyst'] });
    const c = await open(analyst);
    c.send({ type: 'subscribe', id: 'a1', filters: ['#', 'spBv1.0/#', `${LINE}/anl/#`, 'acme/+x'] });
    const errors = [await c.take((m) => m.type === 'error'), await c.take((m) => m.type === 'error'), await c.take((m) => m.type === 'error')];
    const byFilter = Object.fromEntries(errors.map((e) => {
      const err = e['error'] as { code: string; details: { filter: string } };
      return [err.details.filter, err.code];
    }));
    expect(byFilter).to.deep.equal({ '#': 'UNS_ERR_FORBIDDEN', 'spBv1.0/#': 'UNS_ERR_FORBIDDEN', 'acme/+x': 'UNS_ERR_FILTER_INVALID' });
    expect(errors.every((e) => e['id'] === 'a1')).to.equal(true);
    expect((await c.take((m) => m.type === 'subscribed'))['filters']).to.deep.equal([`${LINE}/anl/#`]);
    await c.take((m) => m.type === 'snapshot');
    await publish(mqtt, `${LINE}/anl/count`, '7');
    await c.point(`${LINE}/anl/count`, 7);
    // acme/plant1/# is inside acme/#: allowed.
    c.send({ type: 'subscribe', filters: ['acme/plant1/#'] });
    expect((await c.take((m) => m.type === 'subscribed'))['filters']).to.deep.equal(['acme/plant1/#']);
  });

  it('refuses a missing, garbage, wrongly signed, unsigned or expired token with HTTP 401', async () => {
    const port = server.httpPort;
    expect(await refusedStatus(port, null)).to.equal(401);
    expect(await refusedStatus(port, 'garbage')).to.equal(401);
    expect(await refusedStatus(port, 'garbage', 'header')).to.equal(401);
    expect(await refusedStatus(port, jwt.sign({ sub: 'admin', roles: ['admin'] }, 'another-secret-that-is-long-enough-000', { algorithm: 'HS256', expiresIn: 60 }))).to.equal(401);
    expect(await refusedStatus(port, jwt.sign({ sub: 'admin', roles: ['admin'] }, '', { algorithm: 'none' }))).to.equal(401);
    expect(await refusedStatus(port, sign({ sub: 'admin', roles: ['admin'], exp: Math.floor(Date.now() / 1000) - 60 }, {}))).to.equal(401);
    expect(await refusedStatus(port, sign({ sub: 'admin', roles: ['admin'] }, {}))).to.equal(401); // no exp
    // The refused upgrades left nothing behind, and the server carries on.
    const c = await open();
    c.send({ type: 'ping', id: 'p' });
    expect((await c.take((m) => m.type === 'pong'))['id']).to.equal('p');
  });

  it('closes with 4401 "token expired" when the credential expires', async () => {
    const c = await open(sign({ sub: 'admin', roles: ['admin'], exp: Math.floor(Date.now() / 1000) + 2 }, {}));
    await c.subscribe([`${LINE}/exp/#`]);
    await waitFor(() => c.closed ?? undefined, 6_000, 'close');
    expect(c.closed).to.deep.equal({ code: 4401, reason: 'token expired' });
  });

  it('answers malformed JSON and schema-breaking messages with UNS_ERR_BAD_REQUEST and keeps the connection', async () => {
    const c = await open();
    const bad: unknown[] = [
      'not json {',
      { type: 'subscribe' },
      { type: 'subscribe', filters: [] },
      { type: 'subscribe', filters: ['acme/#'], maxRate: -1 },
      { type: 'subscribe', filters: ['acme/#'], deadband: 'big' },
      { type: 'subscribe', filters: ['acme/#'], history: { seconds: 0 } },
      { type: 'subscribe', filters: ['acme/#'], extra: 1 },
      { type: 'publish', topic: 'x' },
      [1, 2],
      null,
    ];
    for (const m of bad) {
      c.send(typeof m === 'string' ? m : JSON.stringify(m));
      const e = await c.take((x) => x.type === 'error');
      expect((e['error'] as { code: string }).code, JSON.stringify(m)).to.equal('UNS_ERR_BAD_REQUEST');
    }
    c.ws.send(Buffer.from([1, 2, 3]), { binary: true });
    expect(((await c.take((x) => x.type === 'error'))['error'] as { code: string }).code).to.equal('UNS_ERR_BAD_REQUEST');
    expect(c.closed).to.equal(null);
    await c.subscribe([`${LINE}/bad/#`]);
    await publish(mqtt, `${LINE}/bad/count`, '5');
    await c.point(`${LINE}/bad/count`, 5);
  });

  it('closes with 1009 a message over 64 KiB', async () => {
    const c = await open();
    c.send(JSON.stringify({ type: 'ping', id: 'x'.repeat(70_000) }));
    await waitFor(() => c.closed ?? undefined, 5_000, 'close');
    expect(c.closed?.code).to.equal(1009);
  });

  it('applies a deadband per numeric topic, counting the snapshot value as sent', async () => {
    const topic = `${LINE}/dband/count`;
    const fence = `${LINE}/dband/counter/fence`;
    await publish(mqtt, topic, '100');
    const c = await open();
    const snap = await c.subscribe([`${LINE}/dband/#`], { deadband: 5 });
    expect((snap['datapoints'] as Point[]).map((p) => p.value)).to.deep.equal([100]);
    for (const v of [102, 104, 110, 111, 114.9, 100]) await publish(mqtt, topic, String(v));
    await publish(mqtt, fence, '1');
    await c.point(fence, 1);
    expect(c.live(topic).map((p) => p.value)).to.deep.equal([110, 100]);
  });

  it('limits maxRate points per second per topic, ending on the latest value', async () => {
    const topic = `${LINE}/rate/count`;
    const other = `${LINE}/rate/counter/other`;
    const c = await open();
    await c.subscribe([`${LINE}/rate/#`], { maxRate: 4 });
    // 30 changes over ~1.2 s on one topic, interleaved with another topic that has its own budget.
    for (let v = 1; v <= 30; v++) {
      await publish(mqtt, topic, String(v));
      if (v % 10 === 0) await publish(mqtt, other, String(v));
      await new Promise((r) => setTimeout(r, 40));
    }
    await c.point(topic, 30, 3_000);
    const arrivals = c.messages.flatMap((m, i) => (m.type === 'datapoints_batch' ? (m['datapoints'] as Point[]).filter((p) => p.topic === topic).map((p) => ({ v: p.value, at: c.times[i] as number })) : []));
    const values = arrivals.map((a) => a.v);
    // One point at once, then at most one per 250 ms; measured at the client, where a late frame can
    // arrive closer to the next one, so 150 ms bounds it; the last value always arrives.
    expect(values[0]).to.equal(1);
    expect(values[values.length - 1]).to.equal(30);
    expect(values.length).to.be.within(3, 8);
    for (let i = 1; i < arrivals.length; i++) expect((arrivals[i] as { at: number }).at - (arrivals[i - 1] as { at: number }).at).to.be.at.least(150);
    // The other topic is limited separately: all three of its spaced-out values arrive.
    await waitFor(() => c.live(other).length >= 3, 3_000, 'other topic');
    expect(c.live(other).map((p) => p.value)).to.deep.equal([10, 20, 30]);
  });

  it('sends a point after a quiet interval at once, and at most one frame per batch interval', async () => {
    // A long interval makes the two behaviours far apart: at once (leading edge) against its end.
    const restore = overrideLivePolicy({ batchMs: 1_500 });
    try {
      const topic = `${LINE}/edge/count`;
      const c = await open();
      await c.subscribe([`${LINE}/edge/#`]);
      const sentAt = Date.now();
      await publish(mqtt, topic, '1');
      await c.point(topic, 1, 1_000);
      const first = c.times[c.messages.length - 1] as number;
      expect(first - sentAt, 'the first point waits for no interval').to.be.below(1_000);
      await publish(mqtt, topic, '2');
      await publish(mqtt, topic, '3');
      const frame = await c.take((m) => m.type === 'datapoints_batch', 3_000, 'the second frame');
      const at = c.times[c.messages.indexOf(frame)] as number;
      expect((frame['datapoints'] as Point[]).map((p) => p.value), 'both held for the interval, in one frame').to.deep.equal([2, 3]);
      // The server stamps the interval on sending; the client's clock sees both frames' delivery delays.
      expect(at - first, 'the second frame waits for the interval').to.be.at.least(1_400);
    } finally {
      restore();
    }
  });

  it('sends heartbeats at the configured interval', async () => {
    const restore = overrideLivePolicy({ heartbeatMs: 200 });
    try {
      const c = await open();
      const hb = await c.take((m) => m.type === 'heartbeat', 3_000);
      expect(hb['ts']).to.be.a('number');
      await c.take((m) => m.type === 'heartbeat', 3_000); // and again: the peer answered the ping
      expect(c.closed).to.equal(null);
    } finally {
      restore();
    }
  });

  describe('slow consumers', () => {
    const blob = Buffer.alloc(200_000, 7);
    let restore: () => void = () => undefined;
    afterEach(() => restore());

    /** Floods raw (live-only) blobs until the server has dropped frames for the paused client. */
    async function flood(topic: string, fast: Client): Promise<number> {
      const before = await droppedFrames(server);
      let n = 0;
      while ((await droppedFrames(server)) === before) {
        if (n >= 400) throw new Error('no frame dropped after 400 blobs');
        for (let i = 0; i < 10; i++, n++) mqtt.publish(topic, blob, { qos: 0 });
        await publish(mqtt, `${topic}-fence`, 'x');
        await fast.take((m) => m.type === 'datapoints_batch' && (m['datapoints'] as Point[]).some((p) => p.topic === `${topic}-fence`), 10_000, 'fence');
      }
      return n;
    }

    it('drops frames for a reader that stops, sends a gap notice when it catches up, never delays others', async () => {
      restore = overrideLivePolicy({ highWaterBytes: 256 * 1024, lowWaterBytes: 64 * 1024 });
      const topic = `${LINE}/slow1/raw/blob`;
      const slow = await open();
      const fast = await open();
      await slow.subscribe([`${LINE}/slow1/#`]);
      await fast.subscribe([`${LINE}/slow1/#`]);
      slow.ws.pause();
      await flood(topic, fast);
      // The other client still gets a new point promptly.
      const t0 = Date.now();
      await publish(mqtt, `${LINE}/slow1/count`, '1');
      await fast.point(`${LINE}/slow1/count`, 1);
      expect(Date.now() - t0).to.be.lessThan(1_000);
      expect(fast.messages.some((m) => m.type === 'gap')).to.equal(false);
      slow.ws.resume();
      const gap = await slow.take((m) => m.type === 'gap', 10_000, 'gap');
      expect(gap['dropped']).to.be.greaterThan(0);
      expect(gap['frames']).to.be.greaterThan(0);
      // And it is live again.
      await publish(mqtt, `${LINE}/slow1/count`, '2');
      await slow.point(`${LINE}/slow1/count`, 2);
      expect(slow.closed).to.equal(null);
    });

    it('closes with 1013 a reader that stays behind too long', async () => {
      restore = overrideLivePolicy({ highWaterBytes: 256 * 1024, lowWaterBytes: 64 * 1024, stallMs: 1_000, checkMs: 100, closeGraceMs: 5_000 });
      const topic = `${LINE}/slow2/raw/blob`;
      const slow = await open();
      const fast = await open();
      await slow.subscribe([`${LINE}/slow2/#`]);
      await fast.subscribe([`${LINE}/slow2/#`]);
      slow.ws.pause();
      await flood(topic, fast);
      await new Promise((r) => setTimeout(r, 1_500));
      slow.ws.resume();
      await waitFor(() => slow.closed ?? undefined, 8_000, 'close');
      expect(slow.closed?.code).to.equal(1013);
      expect(slow.closed?.reason).to.match(/slow/);
      await publish(mqtt, `${LINE}/slow2/count`, '9');
      await fast.point(`${LINE}/slow2/count`, 9);
    });
  });
});
