/**
 * Persistent MQTT sessions (clean=false) across restarts, over real sockets: a subscriber that is away while
 * messages are published gets them, once and in order, after a graceful restart and after a kill -9; a
 * message in flight at a kill -9 is sent again with DUP and its packet id; the QoS 2 receive state survives;
 * a session is its user's; and while the sessions cannot be read (database down at start-up) a persistent
 * CONNECT is refused as "server unavailable" while clean sessions work.
 */
import { expect } from 'chai';
import { mkdtempSync, chmodSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import mqtt, { type MqttClient, type IClientOptions } from 'mqtt';
import type { IPublishPacket } from 'mqtt-packet';
import { TestPostgres, query } from '../helpers/postgres.js';
import { spawnServer, type ChildServer } from '../helpers/child-server.js';
import { RawClient } from '../helpers/raw-mqtt.js';
import { ADMIN, testConfig, startTestServer, connect, publish, waitFor, roleToken } from '../helpers/server.js';
import type { RunningServer } from '../../src/main.js';

const TOPIC = 'acme/plant2/warehouse/line7/dock1/seq';

interface Subscriber { client: MqttClient; sessionPresent: boolean; values: number[]; dups: number }

/** Connects with the message handler in place before CONNACK (queued messages follow it at once). */
function subscriber(port: number, clientId: string, opts: IClientOptions = {}): Promise<Subscriber> {
  const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, {
    clientId, clean: false, username: ADMIN.username, password: ADMIN.password, reconnectPeriod: 0, connectTimeout: 5_000, ...opts,
  });
  const s: Subscriber = { client, sessionPresent: false, values: [], dups: 0 };
  client.on('message', (_t, payload, packet) => {
    s.values.push((JSON.parse(payload.toString()) as { value: number }).value);
    if ((packet as IPublishPacket).dup) s.dups++;
  });
  return new Promise((res, rej) => {
    client.once('connect', (connack) => { s.sessionPresent = connack.sessionPresent; client.on('error', () => undefined); res(s); });
    client.once('error', rej);
  });
}

function end(c: MqttClient): Promise<void> {
  return new Promise((r) => c.end(false, {}, () => r()));
}

/** Publishes values at QoS 1, each acknowledged (so stored) before the next. */
async function publishValues(port: number, values: number[]): Promise<void> {
  const pub = await connect(port, { clientId: `plc-${Math.random().toString(36).slice(2, 8)}` });
  for (const v of values) await publish(pub, TOPIC, JSON.stringify({ value: v }));
  await end(pub);
}

describe('durable MQTT sessions', function () {
  this.timeout(180_000);
  const pgs = new TestPostgres({ timescale: false });
  let url = '';
  const dirs: string[] = [];
  let server: RunningServer | null = null;
  let child: ChildServer | null = null;
  const clients: MqttClient[] = [];
  const raws: RawClient[] = [];

  const dataDir = (): string => {
    const d = mkdtempSync(join(tmpdir(), 'uns-sessions-'));
    chmodSync(d, 0o755);
    dirs.push(d);
    return d;
  };

  before(async () => {
    await pgs.start();
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.end(true);
    for (const r of raws.splice(0)) r.destroy();
    await server?.stop();
    server = null;
    await child?.kill('SIGKILL');
    child = null;
  });
  after(async () => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
    await pgs.destroy();
  });

  it('a subscriber away during a graceful restart gets what was published, once and in order, with session present', async () => {
    url = await pgs.createDatabase('graceful');
    const dir = dataDir();
    server = await startTestServer(testConfig(url, {}, dir));
    const first = await subscriber(server.mqttPort, 'scada-1');
    expect(first.sessionPresent).to.equal(false);
    await first.client.subscribeAsync('acme/plant2/#', { qos: 1 });
    await end(first.client);
    await publishValues(server.mqttPort, [1, 2, 3]);
    await server.stop();

    server = await startTestServer(testConfig(url, {}, dir));
    const back = await subscriber(server.mqttPort, 'scada-1');
    clients.push(back.client);
    expect(back.sessionPresent, 'session present after the restart').to.equal(true);
    await waitFor(() => back.values.length >= 3, 10_000, 'the queued messages');
    // One more, live: anything sent twice would have come before it on this connection.
    await publishValues(server.mqttPort, [4]);
    await waitFor(() => back.values.length >= 4, 10_000, 'the live message');
    expect(back.values).to.deep.equal([1, 2, 3, 4]);
    await waitFor(async () => (await query<{ n: number }>(url, 'SELECT count(*)::int AS n FROM mqtt_session_queue'))[0]!.n === 0, 10_000, 'acknowledged messages removed from the stored queue');
  });

  it('survives a kill -9: queued messages delivered once, in order, and a message in flight sent again with DUP and its packet id', async () => {
    url = await pgs.createDatabase('killed');
    const dir = dataDir();
    child = await spawnServer({ dataDir: dir, databaseUrl: url });
    // A subscriber that receives but never acknowledges: its message stays in flight.
    const { client: raw, returnCode } = await RawClient.connect(child.mqttPort, { clientId: 'hmi-raw', clean: false, username: ADMIN.username, password: ADMIN.password });
    raws.push(raw);
    expect(returnCode).to.equal(0);
    raw.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'acme/plant2/#', qos: 1 }] });
    expect(await raw.next('suback', 5_000)).to.not.equal(null);
    const away = await subscriber(child.mqttPort, 'scada-2');
    await away.client.subscribeAsync('acme/plant2/#', { qos: 1 });
    await end(away.client);

    await publishValues(child.mqttPort, [10]);
    const inFlight = (await raw.next('publish', 5_000)) as IPublishPacket | null;
    expect(inFlight, 'delivered to the raw subscriber').to.not.equal(null);
    await publishValues(child.mqttPort, [11, 12]);
    await child.kill('SIGKILL');
    raw.destroy();

    child = await spawnServer({ dataDir: dir, databaseUrl: url });
    const again = await RawClient.connect(child.mqttPort, { clientId: 'hmi-raw', clean: false, username: ADMIN.username, password: ADMIN.password });
    raws.push(again.client);
    const connack = again.client.received.find((p) => p.cmd === 'connack') as { sessionPresent?: boolean } | undefined;
    expect(connack?.sessionPresent, 'session present after kill -9').to.equal(true);
    const resent = (await again.client.next('publish', 5_000)) as IPublishPacket | null;
    expect(resent, 'the message in flight, sent again').to.not.equal(null);
    expect(resent!.dup, 'DUP set on the re-sent message').to.equal(true);
    expect(resent!.messageId).to.equal(inFlight!.messageId);
    expect(resent!.payload.toString()).to.equal(inFlight!.payload.toString());

    const back = await subscriber(child.mqttPort, 'scada-2');
    clients.push(back.client);
    expect(back.sessionPresent).to.equal(true);
    await waitFor(() => back.values.length >= 3, 10_000, 'the queued messages');
    await publishValues(child.mqttPort, [13]);
    await waitFor(() => back.values.length >= 4, 10_000, 'the live message');
    expect(back.values).to.deep.equal([10, 11, 12, 13]);
  });

  it('keeps the QoS 2 receive state across a kill -9: the PUBREL after the restart completes the message, stored once', async () => {
    url = await pgs.createDatabase('qos2');
    const dir = dataDir();
    child = await spawnServer({ dataDir: dir, databaseUrl: url });
    const pub = await RawClient.connect(child.mqttPort, { clientId: 'plc-qos2', clean: false, username: ADMIN.username, password: ADMIN.password });
    raws.push(pub.client);
    pub.client.send({ cmd: 'publish', topic: TOPIC, payload: Buffer.from('{"value": 42}'), qos: 2, messageId: 7, retain: false, dup: false });
    expect(await pub.client.next('pubrec', 5_000)).to.not.equal(null);
    await child.kill('SIGKILL');
    pub.client.destroy();

    child = await spawnServer({ dataDir: dir, databaseUrl: url });
    const again = await RawClient.connect(child.mqttPort, { clientId: 'plc-qos2', clean: false, username: ADMIN.username, password: ADMIN.password });
    raws.push(again.client);
    // The client re-sends its PUBREL [MQTT-4.4.0-1]: the server still knows packet id 7.
    again.client.send({ cmd: 'pubrel', messageId: 7 });
    const comp = await again.client.next('pubcomp', 5_000);
    expect(comp, 'PUBCOMP for the stored packet id').to.not.equal(null);
    const rows = await query<{ v: string }>(url, 'SELECT s.v_num AS v FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name = $1', [TOPIC]);
    expect(rows.map((r) => Number(r.v))).to.deep.equal([42]);
  });

  it("refuses another user's client id for a stored session (CONNACK 2), and lets its owner back", async () => {
    url = await pgs.createDatabase('owner');
    server = await startTestServer(testConfig(url));
    const alice = await subscriber(server.mqttPort, 'line-hmi');
    await alice.client.subscribeAsync('acme/plant2/#', { qos: 1 });
    await end(alice.client);
    const token = roleToken('mallory', ['admin']);
    for (const clean of [false, true]) {
      const r = await RawClient.connect(server.mqttPort, { clientId: 'line-hmi', clean, username: 'mallory', password: token });
      raws.push(r.client);
      expect(r.returnCode, `clean=${clean}`).to.equal(2);
    }
    const back = await subscriber(server.mqttPort, 'line-hmi');
    clients.push(back.client);
    expect(back.sessionPresent, 'the session is intact').to.equal(true);
  });

  it('refuses persistent sessions while they cannot be read (database down at start-up), serves clean ones, and resumes them when it returns', async () => {
    url = await pgs.createDatabase('late');
    const dir = dataDir();
    // The first server stores a session; the next starts with the database down.
    server = await startTestServer(testConfig(url, {}, dir));
    const s = await subscriber(server.mqttPort, 'scada-late');
    await s.client.subscribeAsync('acme/plant2/#', { qos: 1 });
    await end(s.client);
    await server.stop();
    await pgs.stop('fast');
    try {
      server = await startTestServer(testConfig(url, { store: { probeIntervalMs: 200 } }, dir));
      const refused = await RawClient.connect(server.mqttPort, { clientId: 'scada-late', clean: false, username: ADMIN.username, password: ADMIN.password });
      raws.push(refused.client);
      expect(refused.returnCode, 'server unavailable').to.equal(3);
      const clean = await connect(server.mqttPort, { clientId: 'clean-one', clean: true });
      clients.push(clean);
      await publish(clean, TOPIC, '{"value": 5}');
    } finally {
      await pgs.start();
    }
    const srv = server;
    await waitFor(() => srv.readiness().checks['sessions'] !== undefined && (srv.readiness().checks['sessions'] as { loaded: boolean }).loaded, 30_000, 'sessions loaded');
    const back = await subscriber(server.mqttPort, 'scada-late');
    clients.push(back.client);
    expect(back.sessionPresent).to.equal(true);
    // What was published before the sessions were read was not queued for them (it is in history).
    await publishValues(server.mqttPort, [6]);
    await waitFor(() => back.values.length >= 1, 10_000, 'a message published once the sessions were read');
    expect(back.values).to.deep.equal([6]);
    await waitFor(async () => (await query(url, 'SELECT 1 FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name = $1 AND s.v_num = 5', [TOPIC])).length === 1, 20_000, 'the early message in history');
  });
});
