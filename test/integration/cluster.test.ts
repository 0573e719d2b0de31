/**
 * Cluster mode over a real redis-server: two instances on one namespace and one database. A subscriber on
 * one gets what a publisher on the other sent (stored once), retained messages included; the streams of
 * either show both; a persistent session moves with its client from one instance to the other and back; a
 * Redis outage leaves each instance accepting, storing and delivering locally (and /ready degraded) and
 * cross-instance delivery comes back with Redis; a kill -9 of one instance under QoS 1 load loses nothing
 * acknowledged and stores nothing twice, and its persistent sessions are taken over by the survivor.
 */
import { expect } from 'chai';
import { mkdtempSync, chmodSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import mqtt, { type MqttClient, type IClientOptions } from 'mqtt';
import { TestPostgres, query } from '../helpers/postgres.js';
import { TestRedis } from '../helpers/redis.js';
import { spawnServer, type ChildServer } from '../helpers/child-server.js';
import { SseStream } from '../helpers/sse.js';
import { startReceiver } from '../helpers/webhook-receiver.js';
import { ADMIN, testConfig, startTestServer, connect, publish, waitFor, roleToken } from '../helpers/server.js';
import type { RunningServer } from '../../src/main.js';

interface Sub { client: MqttClient; sessionPresent: boolean; got: Array<{ topic: string; value: number; retain: boolean }> }

function subscriber(port: number, clientId: string, clean: boolean, opts: IClientOptions = {}): Promise<Sub> {
  const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, { clientId, clean, username: ADMIN.username, password: ADMIN.password, reconnectPeriod: 0, connectTimeout: 10_000, ...opts });
  const s: Sub = { client, sessionPresent: false, got: [] };
  client.on('message', (topic, payload, packet) => { s.got.push({ topic, value: (JSON.parse(payload.toString()) as { value: number }).value, retain: packet.retain }); });
  return new Promise((res, rej) => {
    client.once('connect', (c) => { s.sessionPresent = c.sessionPresent; client.on('error', () => undefined); res(s); });
    client.once('error', rej);
  });
}

const end = (c: MqttClient): Promise<void> => new Promise((r) => c.end(false, {}, () => r()));
const T = (leaf: string): string => `acme/plant2/warehouse/line7/${leaf}/seq`;

interface ClusterCheck { connected: boolean; instance: string; peers: Array<{ id: string; clients: number }> }
const clusterOf = (s: RunningServer): ClusterCheck => s.readiness().checks['cluster'] as ClusterCheck;

describe('cluster mode (Redis)', function () {
  this.timeout(180_000);
  const pgs = new TestPostgres({ timescale: false });
  const redis = new TestRedis();
  const dirs: string[] = [];
  const servers: RunningServer[] = [];
  const children: ChildServer[] = [];
  const clients: MqttClient[] = [];
  let url = '';

  const dataDir = (): string => {
    const d = mkdtempSync(join(tmpdir(), 'uns-cluster-'));
    chmodSync(d, 0o755);
    dirs.push(d);
    return d;
  };
  /** Two instances on the same database and Redis, each knowing the other. */
  const pair = async (db: string, over: Record<string, unknown> = {}): Promise<[RunningServer, RunningServer]> => {
    url = await pgs.createDatabase(db);
    const a = await startTestServer(testConfig(url, { cluster: { url: redis.url }, ...over }, dataDir()));
    servers.push(a);
    const b = await startTestServer(testConfig(url, { cluster: { url: redis.url }, ...over }, dataDir()));
    servers.push(b);
    await waitFor(() => clusterOf(a).peers.length === 1 && clusterOf(b).peers.length === 1, 10_000, 'the instances to hear each other');
    return [a, b];
  };

  before(async () => {
    await pgs.start();
    await redis.start();
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.end(true);
    for (const s of servers.splice(0)) await s.stop();
    for (const c of children.splice(0)) await c.kill('SIGKILL');
    await redis.start().catch(() => undefined);
  });
  after(async () => {
    await redis.destroy();
    await pgs.destroy();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('delivers across instances, retained messages too, and stores each message once; /ready names the instance and its peer', async () => {
    const [a, b] = await pair('cl_cross');
    expect(clusterOf(a).peers[0]!.id).to.equal(clusterOf(b).instance);
    const sub = await subscriber(b.mqttPort, 'hmi-b', true);
    clients.push(sub.client);
    await sub.client.subscribeAsync('acme/plant2/#', { qos: 1 });
    const pub = await connect(a.mqttPort, { clientId: 'plc-a' });
    clients.push(pub);
    await publish(pub, T('x'), '{"value": 1}');
    await publish(pub, T('r'), '{"value": 2}', { retain: true });
    await waitFor(() => sub.got.length >= 2, 10_000, 'messages from the other instance');
    expect(sub.got.map((g) => g.value)).to.deep.equal([1, 2]);
    const rows = await query<{ n: number }>(url, "SELECT count(*)::int AS n FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name LIKE 'acme/plant2/warehouse/line7/%'");
    expect(rows[0]!.n, 'stored once, by the instance the publisher is connected to').to.equal(2);
    // A retained message published on A is offered by B to a new subscriber.
    const late = await subscriber(b.mqttPort, 'hmi-b2', true);
    clients.push(late.client);
    await late.client.subscribeAsync(T('r'), { qos: 1 });
    await waitFor(() => late.got.length >= 1, 10_000, 'the retained message on the other instance');
    expect(late.got[0]).to.include({ value: 2, retain: true });
    const metrics = await (await fetch(`http://127.0.0.1:${b.httpPort}/metrics`)).text();
    expect(metrics).to.match(/^uns_cluster_redis_up 1$/m);
    expect(metrics).to.match(/^uns_cluster_peers 1$/m);
  });

  it('streams on either instance show what was accepted on the other', async () => {
    const [a, b] = await pair('cl_streams');
    const token = roleToken('viewer', ['admin']);
    const stream = await SseStream.open(`http://127.0.0.1:${b.httpPort}/api/v1/events/stream?filter=${encodeURIComponent('acme/plant2/#')}`, token);
    try {
      const pub = await connect(a.mqttPort, { clientId: 'plc-stream' });
      clients.push(pub);
      await publish(pub, T('s'), '{"value": 42}');
      await stream.point(T('s'), 42);
    } finally {
      stream.close();
    }
  });

  it('delivers each webhook event once with two instances polling the same outbox', async () => {
    const receiver = await startReceiver();
    try {
      receiver.reply = () => ({ status: 200, body: 'ok' });
      // Refresh on its own only every 60 s: what A knows of B's webhook it learns over the cluster.
      const [a, b] = await pair('cl_hooks', { webhooks: { allowlist: '127.0.0.1/32', pollIntervalMs: 50, refreshIntervalMs: 60_000, stopGraceMs: 200 } });
      const login = await fetch(`http://127.0.0.1:${b.httpPort}/api/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ADMIN) });
      const token = ((await login.json()) as { access_token: string }).access_token;
      const made = await fetch(`http://127.0.0.1:${b.httpPort}/api/v1/webhooks`, {
        method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'mes', url: `${receiver.url}/mes`, events: ['sensor.reading'], filters: { topics: ['acme/plant2/#'] }, batch: { max_size: 1, max_linger_ms: 0 } }),
      });
      expect(made.status).to.equal(201);
      receiver.secrets.push(((await made.json()) as { secret: string }).secret);
      const pubA = await connect(a.mqttPort, { clientId: 'plc-wa' });
      const pubB = await connect(b.mqttPort, { clientId: 'plc-wb' });
      clients.push(pubA, pubB);
      // A was told of the webhook made on B over Redis: its next refresh (polled here every 200 ms) is not waited for.
      await waitFor(() => a.webhooks.wants('sensor.reading'), 2_000, 'instance A to know the webhook');
      for (let v = 1; v <= 20; v++) await publish(v % 2 === 0 ? pubA : pubB, T('w'), JSON.stringify({ value: v }));
      const values = (): number[] => receiver.on('/mes').flatMap((r) => ((r.json as { data?: { readings?: Array<{ value: number; topic: string }> } } | null)?.data?.readings ?? [])
        .filter((x) => x.topic === T('w')).map((x) => x.value));
      await waitFor(() => values().length >= 20, 20_000, 'the 20 deliveries');
      // Both instances poll the outbox: a second delivery of one event would show up within a few polls.
      await publish(pubA, T('w'), '{"value": 21}');
      await waitFor(() => values().includes(21), 10_000, 'the last delivery');
      expect(values().sort((x, y) => x - y)).to.deep.equal(Array.from({ length: 21 }, (_, i) => i + 1));
    } finally {
      await receiver.close();
    }
  });

  it('moves a persistent session with its client: queued on A while away, resumed on B, and back to A', async () => {
    const [a, b] = await pair('cl_sessions');
    const pub = await connect(a.mqttPort, { clientId: 'plc-s' });
    clients.push(pub);
    const first = await subscriber(a.mqttPort, 'scada-x', false);
    await first.client.subscribeAsync('acme/plant2/#', { qos: 1 });
    await end(first.client);
    await publish(pub, T('q'), '{"value": 1}');

    const onB = await subscriber(b.mqttPort, 'scada-x', false);
    expect(onB.sessionPresent, 'the session came along').to.equal(true);
    await waitFor(() => onB.got.length >= 1, 10_000, 'the message queued on A');
    await publish(pub, T('q'), '{"value": 2}');
    await waitFor(() => onB.got.length >= 2, 10_000, 'a live message from A');
    await end(onB.client);
    // Away again: B holds the session now, and queues what A's publisher sends.
    await publish(pub, T('q'), '{"value": 3}');
    await waitFor(async () => (await query<{ n: number }>(url, "SELECT count(*)::int AS n FROM mqtt_session_queue WHERE client_id = 'scada-x'"))[0]!.n === 1, 10_000, 'the message queued on B');
    const back = await subscriber(a.mqttPort, 'scada-x', false);
    clients.push(back.client);
    expect(back.sessionPresent).to.equal(true);
    await waitFor(() => back.got.length >= 1, 10_000, 'the message queued on B, delivered on A');
    await publish(pub, T('q'), '{"value": 4}');
    await waitFor(() => back.got.length >= 2, 10_000, 'a live message');
    expect([...onB.got, ...back.got].map((g) => g.value)).to.deep.equal([1, 2, 3, 4]);
  });

  it('keeps storing, acknowledging and delivering locally while Redis is down (/ready degraded), and delivers across again when it returns', async () => {
    const [a, b] = await pair('cl_outage');
    const localSub = await subscriber(a.mqttPort, 'hmi-local', true);
    clients.push(localSub.client);
    await localSub.client.subscribeAsync('acme/plant2/#', { qos: 1 });
    const remoteSub = await subscriber(b.mqttPort, 'hmi-remote', true);
    clients.push(remoteSub.client);
    await remoteSub.client.subscribeAsync('acme/plant2/#', { qos: 1 });
    const pub = await connect(a.mqttPort, { clientId: 'plc-o' });
    clients.push(pub);
    await publish(pub, T('o'), '{"value": 1}');
    await waitFor(() => remoteSub.got.length >= 1, 10_000, 'delivery across before the outage');

    await redis.stop();
    await waitFor(() => !clusterOf(a).connected, 10_000, 'A to notice Redis is gone');
    const ready = await fetch(`http://127.0.0.1:${a.httpPort}/ready`);
    expect(ready.status, '/ready while Redis is down').to.equal(503);
    for (let v = 2; v <= 21; v++) await publish(pub, T('o'), JSON.stringify({ value: v }));
    await waitFor(() => localSub.got.length >= 21, 10_000, 'local delivery during the outage');

    await redis.start();
    await waitFor(() => clusterOf(a).connected && clusterOf(b).connected, 20_000, 'both back on Redis');
    await waitFor(async () => (await fetch(`http://127.0.0.1:${a.httpPort}/ready`)).status === 200, 20_000, '/ready 200 again');
    await publish(pub, T('o'), '{"value": 22}');
    await waitFor(() => remoteSub.got.some((g) => g.value === 22), 10_000, 'delivery across after the outage');
    const stored = await query<{ v: string }>(url, 'SELECT s.v_num AS v FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name = $1 ORDER BY s.v_num', [T('o')]);
    expect(stored.map((r) => Number(r.v))).to.deep.equal(Array.from({ length: 22 }, (_, i) => i + 1));
    expect(localSub.got.map((g) => g.value)).to.deep.equal(Array.from({ length: 22 }, (_, i) => i + 1));
  });

  it('a kill -9 of one instance under QoS 1 load: nothing acknowledged lost, nothing stored twice, its sessions taken over', async () => {
    url = await pgs.createDatabase('cl_killed');
    const env = { UNS_CLUSTER: redis.url };
    const a = await spawnServer({ dataDir: dataDir(), databaseUrl: url, env });
    children.push(a);
    const b = await spawnServer({ dataDir: dataDir(), databaseUrl: url, env });
    children.push(b);
    const peersOf = async (port: number): Promise<number> => ((await (await fetch(`http://127.0.0.1:${port}/ready`)).json()) as { checks: { cluster: ClusterCheck } }).checks.cluster.peers.length;
    await waitFor(async () => (await peersOf(a.httpPort)) === 1 && (await peersOf(b.httpPort)) === 1, 15_000, 'the instances to hear each other');

    // A persistent subscriber whose session A holds, away.
    const away = await subscriber(a.mqttPort, 'scada-k', false);
    await away.client.subscribeAsync(T('k0'), { qos: 1 });
    await end(away.client);

    // Publishers that fail over from A to B (as behind a load balancer), re-sending what was not acknowledged.
    const acked = new Map<number, Set<number>>();
    const pubs: MqttClient[] = [];
    let running = true;
    for (let i = 0; i < 4; i++) {
      const set = new Set<number>();
      acked.set(i, set);
      const c = mqtt.connect({
        servers: [{ host: '127.0.0.1', port: a.mqttPort }, { host: '127.0.0.1', port: b.mqttPort }],
        clientId: `plc-k${i}`, clean: false, username: ADMIN.username, password: ADMIN.password, reconnectPeriod: 200, connectTimeout: 5_000,
      });
      c.on('error', () => undefined);
      pubs.push(c);
      clients.push(c);
      let next = 0;
      const send = (): void => {
        if (!running) return;
        const n = next++;
        c.publish(T(`k${i}`), JSON.stringify({ value: n }), { qos: 1 }, (err) => { if (!err) set.add(n); setImmediate(send); });
      };
      c.once('connect', () => { for (let w = 0; w < 5; w++) send(); });
    }
    await waitFor(() => [...acked.values()].every((s) => s.size >= 50), 20_000, 'load on A');
    await a.kill('SIGKILL');
    const before = [...acked.values()].reduce((n, s) => n + s.size, 0);
    await waitFor(() => [...acked.values()].reduce((n, s) => n + s.size, 0) >= before + 200, 30_000, 'the load to go on through B');
    running = false;
    await waitFor(() => pubs.every((c) => Object.keys((c as unknown as { outgoing: object }).outgoing).length === 0), 20_000, 'in-flight publishes to settle');

    const rows = await query<{ name: string; v: string }>(url, "SELECT t.name, s.v_num AS v FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name LIKE 'acme/plant2/warehouse/line7/k%'");
    let missing = 0;
    let twice = 0;
    for (const [i, set] of acked) {
      const got = rows.filter((r) => r.name === T(`k${i}`)).map((r) => Number(r.v));
      twice += got.length - new Set(got).size;
      for (const n of set) if (!got.includes(n)) missing++;
    }
    expect(missing, 'acknowledged messages missing from the store').to.equal(0);
    expect(twice, 'messages stored twice').to.equal(0);

    // B took over A's sessions: what is published for scada-k now is queued on B.
    const bId = ((await (await fetch(`http://127.0.0.1:${b.httpPort}/ready`)).json()) as { checks: { cluster: ClusterCheck } }).checks.cluster.instance;
    await waitFor(async () => (await query<{ n: number }>(url, "SELECT count(*)::int AS n FROM mqtt_sessions WHERE client_id = 'scada-k' AND instance = $1", [bId]))[0]!.n === 1, 30_000, 'the session taken over by B');
    const late = await connect(b.mqttPort, { clientId: 'plc-late' });
    clients.push(late);
    await publish(late, T('k0'), '{"value": 1000000}');
    const back = await subscriber(b.mqttPort, 'scada-k', false);
    clients.push(back.client);
    expect(back.sessionPresent).to.equal(true);
    await waitFor(() => back.got.some((g) => g.value === 1_000_000), 10_000, 'the message queued on B for the taken-over session');
  });
});
