/**
 * uns-bridge as a Sparkplug 3.0 host application, over real sockets: STATE, edge sessions with a real edge
 * node from the Eclipse Tahu JavaScript client (npm sparkplug-client), stale metrics everywhere after a
 * death, sequence gaps with the Reorder Timeout and rebirth requests, and validation against the BIRTH.
 * Each test names the spec statement it checks; each uses its own edge node, so cooldowns do not mix.
 */
import { expect } from 'chai';
import type { MqttClient } from 'mqtt';
import sparkplugPayload from 'sparkplug-payload';
import type { UMetric, UPayload } from 'sparkplug-payload/lib/sparkplugbpayload.js';
import sparkplugClient from 'sparkplug-client';
import { query } from '../helpers/postgres.js';
import { testConfig, startTestServer, connect, publish, waitFor, cleanup, ADMIN } from '../helpers/server.js';
import { SseStream, type Point } from '../helpers/sse.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';
import type { UnsEvent } from '../../src/core/events.js';

const codec = sparkplugPayload.get('spBv1.0');
if (codec === null) throw new Error('sparkplug-payload lacks spBv1.0');
const encode = (p: UPayload): Buffer => Buffer.from((codec as NonNullable<typeof codec>).encodePayload(p));
const decode = (b: Buffer): UPayload => (codec as NonNullable<typeof codec>).decodePayload(b);
const G = 'hostgrp';
const REORDER_MS = 300;

type Body = Record<string, unknown>;
interface Received { topic: string; payload: Buffer; retain: boolean; qos: number }

/** Births as an edge node sends them (bdSeq added by the caller for hand-built nodes). */
function nbirth(seq: number, bdSeq: number, metrics: UMetric[] = []): Buffer {
  return encode({ timestamp: Date.now(), seq, metrics: [{ name: 'bdSeq', type: 'UInt64', value: bdSeq }, ...metrics] });
}
function data(seq: number, metrics: UMetric[], timestamp = Date.now()): Buffer {
  return encode({ timestamp, seq, metrics });
}

describe('sparkplug host - STATE, sessions, stale, rebirth (Sparkplug 3.0)', function () {
  this.timeout(60_000);
  let config: Config;
  let server: RunningServer;
  let mqtt: MqttClient;
  let watcher: MqttClient;
  let base: string;
  let admin: string;
  const seen: Received[] = [];
  const events: UnsEvent[] = [];
  const edges: Array<{ stop(): void; client: { end(force?: boolean): void } }> = [];

  const onTopic = (topic: string): Received[] => seen.filter((r) => r.topic === topic);
  const latest = async (filter: string): Promise<Point[]> => {
    const r = await fetch(`${base}/api/v1/datapoints/latest?filter=${encodeURIComponent(filter)}`, { headers: { authorization: `Bearer ${admin}` } });
    return ((await r.json()) as Body)['datapoints'] as Point[];
  };
  const rejectionsOf = async (topic: string): Promise<Array<{ code: string; reason: string }>> =>
    query(server.databaseUrl, 'SELECT code, reason FROM rejections WHERE topic = $1 ORDER BY time', [topic]);

  before(async () => {
    config = testConfig(null, { sparkplug: { hostId: 'uns-test-host', reorderTimeoutMs: REORDER_MS, rebirthCooldownMs: 60_000 } });
    server = await startTestServer(config);
    base = `http://127.0.0.1:${server.httpPort}`;
    const login = await fetch(`${base}/api/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ADMIN) });
    admin = ((await login.json()) as Body)['access_token'] as string;
    mqtt = await connect(server.mqttPort, { clientId: 'sp-host-publisher' });
    watcher = await connect(server.mqttPort, { clientId: 'sp-host-watcher' });
    watcher.on('message', (topic, payload, packet) => seen.push({ topic, payload, retain: packet.retain, qos: packet.qos }));
    await watcher.subscribeAsync(['spBv1.0/STATE/#', `spBv1.0/${G}/NCMD/#`, '$sparkplug/certificates/#'], { qos: 1 });
    server.events.on((e) => { events.push(e); });
  });
  after(async () => {
    for (const e of edges) e.client.end(true);
    mqtt?.end(true);
    watcher?.end(true);
    await server?.stop();
    if (config) cleanup(config);
  });

  it('[tck-id-operational-behavior-host-application-connect-birth] STATE online, retained, QoS 1, JSON with a timestamp', async () => {
    const state = await waitFor(() => onTopic('spBv1.0/STATE/uns-test-host')[0], 5_000, 'STATE');
    expect(state.retain, 'delivered as retained to a later subscriber').to.equal(true);
    expect(state.qos).to.equal(1);
    const body = JSON.parse(state.payload.toString('utf8')) as Body;
    expect(body['online']).to.equal(true);
    expect(body['timestamp']).to.be.a('number').within(Date.now() - 120_000, Date.now());
  });

  it('[tck-id-operational-behavior-edge-node-termination-host-action-ndeath-node-tags-stale] a Tahu edge node dies: node and device metrics stale in REST and live; values kept; BIRTH makes them good', async () => {
    const E = 'tahu1';
    const stream = await SseStream.open(`${base}/api/v1/events/stream?filter=${encodeURIComponent(`spBv1.0/${G}/${E}/#`)}`, admin);
    const edge = sparkplugClient.newClient({
      serverUrl: `mqtt://127.0.0.1:${server.mqttPort}`, username: ADMIN.username, password: ADMIN.password, clientId: 'tahu-edge-1',
      groupId: G, edgeNode: E, version: 'spBv1.0', publishDeath: true,
    });
    edges.push(edge as never);
    await new Promise<void>((res) => edge.once('birth', () => res()));
    edge.publishNodeBirth({ timestamp: Date.now(), metrics: [{ name: 'Uptime', type: 'Int32', value: 42 }] });
    edge.publishDeviceBirth('press1', { timestamp: Date.now(), metrics: [{ name: 'Pressure', type: 'Double', value: 3.5 }] });
    edge.publishDeviceData('press1', { timestamp: Date.now(), metrics: [{ name: 'Pressure', type: 'Double', value: 3.75 }] });
    const live = await waitFor(async () => {
      const l = await latest(`spBv1.0/${G}/${E}/#`);
      return l.length === 2 && l.some((p) => p.value === 3.75) ? l : undefined;
    }, 10_000, 'latest values');
    expect(live.map((p) => p.quality)).to.deep.equal(['good', 'good']);
    const online = await waitFor(() => events.find((e) => e.type === 'device.online' && (e.data as Body)['device_id'] === 'press1'), 5_000, 'device.online');
    expect(online.data).to.include({ source: 'sparkplug', group_id: G, edge_node_id: E });

    // The socket drops without DISCONNECT: the broker sends the NDEATH Will (bdSeq 0, as in the NBIRTH).
    (edge as unknown as { client: { stream: { destroy(): void } } }).client.stream.destroy();
    const stale = await waitFor(async () => {
      const l = await latest(`spBv1.0/${G}/${E}/#`);
      return l.every((p) => p.quality === 'stale') ? l : undefined;
    }, 10_000, 'stale latest values');
    expect(Object.fromEntries(stale.map((p) => [p.topic, p.value]))).to.deep.equal({
      [`spBv1.0/${G}/${E}/Uptime`]: 42, [`spBv1.0/${G}/${E}/press1/Pressure`]: 3.75,
    });
    const topic = await (await fetch(`${base}/api/v1/topics/spBv1.0/${G}/${E}/press1/Pressure`, { headers: { authorization: `Bearer ${admin}` } })).json() as Body;
    expect(topic).to.include({ quality: 'stale', last_value: 3.75 });
    await stream.take((e) => e.event === 'datapoints_batch' && (e.data['datapoints'] as Point[]).some((p) => p.topic === `spBv1.0/${G}/${E}/press1/Pressure` && p.quality === 'stale'), 5_000, 'stale on the live stream');
    const offline = await waitFor(() => events.filter((e) => e.type === 'device.offline' && (e.data as Body)['source'] === 'sparkplug' && (e.data as Body)['edge_node_id'] === E), 5_000, 'device.offline');
    expect(offline).to.have.length(1);
    expect(server.sparkplug.stats.staleMarks).to.be.at.least(2);

    // A new session: NBIRTH and DBIRTH make the metrics good again.
    await publish(mqtt, `spBv1.0/${G}/NBIRTH/${E}`, nbirth(0, 1, [{ name: 'Uptime', type: 'Int32', value: 43 }]));
    await publish(mqtt, `spBv1.0/${G}/DBIRTH/${E}/press1`, data(1, [{ name: 'Pressure', type: 'Double', value: 4 }]));
    const good = await waitFor(async () => {
      const l = await latest(`spBv1.0/${G}/${E}/#`);
      return l.every((p) => p.quality === 'good') ? l : undefined;
    }, 10_000, 'good again');
    expect(good.map((p) => p.value).sort()).to.deep.equal([4, 43]);
    stream.close();
  });

  it('[tck-id-payloads-ndeath-bdseq] an NDEATH from an older session (late Will) is ignored and counted; the node stays online', async () => {
    const E = 'late1';
    await publish(mqtt, `spBv1.0/${G}/NBIRTH/${E}`, nbirth(0, 5, [{ name: 'Level', type: 'Double', value: 1 }]));
    const before = server.sparkplug.stats.staleDeaths;
    await publish(mqtt, `spBv1.0/${G}/NDEATH/${E}`, encode({ timestamp: Date.now(), metrics: [{ name: 'bdSeq', type: 'UInt64', value: 4 }] }));
    const rej = await waitFor(async () => (await rejectionsOf(`spBv1.0/${G}/NDEATH/${E}`))[0], 5_000, 'stale NDEATH rejection');
    expect(rej.code).to.equal('UNS_ERR_SPARKPLUG_STATE');
    expect(server.sparkplug.stats.staleDeaths).to.equal(before + 1);
    const node = server.sparkplug.nodes().find((n) => n.edge_node_id === E);
    expect(node?.online).to.equal(true);
    expect((await latest(`spBv1.0/${G}/${E}/#`))[0]?.quality).to.equal('good');
  });

  it('[tck-id-operational-behavior-host-reordering-success] a gap closed inside the Reorder Timeout keeps every message and asks no rebirth', async () => {
    const E = 'reorder1';
    const t0 = Date.now() - 1000;
    const m = (v: number): UMetric[] => [{ name: 'Count', type: 'Int32', value: v, timestamp: t0 + v }];
    await publish(mqtt, `spBv1.0/${G}/NBIRTH/${E}`, nbirth(0, 0, m(0)));
    const gapsClosed = server.sparkplug.stats.gapsClosed;
    await publish(mqtt, `spBv1.0/${G}/NDATA/${E}`, data(1, m(1)));
    await publish(mqtt, `spBv1.0/${G}/NDATA/${E}`, data(3, m(3)));
    await publish(mqtt, `spBv1.0/${G}/NDATA/${E}`, data(2, m(2)));
    await waitFor(() => server.sparkplug.stats.gapsClosed > gapsClosed, 5_000, 'reorder window to end');
    const rows = await query<{ v: number }>(server.databaseUrl, `SELECT s.v_num AS v FROM samples s JOIN topics t ON t.id = s.topic_id
      WHERE t.name = $1 ORDER BY s.time`, [`spBv1.0/${G}/${E}/Count`]);
    expect(rows.map((r) => r.v)).to.deep.equal([0, 1, 2, 3]);
    expect(onTopic(`spBv1.0/${G}/NCMD/${E}`)).to.have.length(0);
    expect(server.sparkplug.nodes().find((n) => n.edge_node_id === E)?.awaiting_seq).to.deep.equal([]);
  });

  it('[tck-id-operational-behavior-host-reordering-rebirth] a gap still open when the Reorder Timeout ends sends NCMD Node Control/Rebirth; a second within the cooldown is suppressed', async () => {
    const E = 'gap1';
    await publish(mqtt, `spBv1.0/${G}/NBIRTH/${E}`, nbirth(0, 0, [{ name: 'Count', type: 'Int32', value: 0 }]));
    const started = Date.now();
    await publish(mqtt, `spBv1.0/${G}/NDATA/${E}`, data(6, [{ name: 'Count', type: 'Int32', value: 6 }]));
    const ncmd = await waitFor(() => onTopic(`spBv1.0/${G}/NCMD/${E}`)[0], 5_000, 'rebirth request');
    expect(Date.now() - started, 'not before the Reorder Timeout').to.be.at.least(REORDER_MS - 50);
    const p = decode(ncmd.payload);
    // [tck-id-operational-behavior-data-commands-rebirth-name] [-datatype] [-value]
    expect(p.metrics?.map((x) => ({ name: x.name, type: x.type, value: x.value }))).to.deep.equal([{ name: 'Node Control/Rebirth', type: 'Boolean', value: true }]);
    expect(server.sparkplug.nodes().find((n) => n.edge_node_id === E)?.rebirths_requested).to.equal(1);
    // DATA stays stored while the host waits: the gap costs no data.
    const stored = await query<{ n: number }>(server.databaseUrl, `SELECT count(*)::int AS n FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name = $1`, [`spBv1.0/${G}/${E}/Count`]);
    expect(stored[0]?.n).to.equal(2);
    const suppressed = server.sparkplug.stats.rebirthsSuppressed;
    // Far beyond the awaitable window: a rebirth is wanted at once, but the cooldown holds it back.
    await publish(mqtt, `spBv1.0/${G}/NDATA/${E}`, data(200, [{ name: 'Count', type: 'Int32', value: 7 }]));
    await waitFor(() => server.sparkplug.stats.rebirthsSuppressed > suppressed, 5_000, 'suppressed rebirth');
    expect(onTopic(`spBv1.0/${G}/NCMD/${E}`)).to.have.length(1);
  });

  it('[tck-id-principles-birth-certificates-order] DATA before BIRTH is refused and a rebirth is requested', async () => {
    const E = 'nobirth1';
    await publish(mqtt, `spBv1.0/${G}/NDATA/${E}`, data(3, [{ name: 'Count', type: 'Int32', value: 1 }]));
    const rej = await waitFor(async () => (await rejectionsOf(`spBv1.0/${G}/NDATA/${E}`))[0], 5_000, 'rejection');
    expect(rej).to.include({ code: 'UNS_ERR_SPARKPLUG_STATE' });
    const ncmd = await waitFor(() => onTopic(`spBv1.0/${G}/NCMD/${E}`)[0], 5_000, 'rebirth request');
    expect(decode(ncmd.payload).metrics?.[0]?.name).to.equal('Node Control/Rebirth');
  });

  it('[tck-id-topics-nbirth-metric-reqs] a metric not in the BIRTH, or with another datatype, is refused with UNS_ERR_SPARKPLUG_METRIC', async () => {
    const E = 'strict1';
    await publish(mqtt, `spBv1.0/${G}/NBIRTH/${E}`, nbirth(0, 0, [{ name: 'Speed', type: 'Int32', value: 1 }]));
    await publish(mqtt, `spBv1.0/${G}/NDATA/${E}`, data(1, [{ name: 'Torque', type: 'Int32', value: 1 }]));
    await publish(mqtt, `spBv1.0/${G}/NDATA/${E}`, data(2, [{ name: 'Speed', type: 'String', value: 'fast' }]));
    const rej = await waitFor(async () => { const r = await rejectionsOf(`spBv1.0/${G}/NDATA/${E}`); return r.length === 2 ? r : undefined; }, 5_000, 'two rejections');
    expect(rej.map((r) => r.code)).to.deep.equal(['UNS_ERR_SPARKPLUG_METRIC', 'UNS_ERR_SPARKPLUG_METRIC']);
    expect(rej[0]?.reason).to.match(/"Torque" is not in the BIRTH/);
    expect(rej[1]?.reason).to.match(/String here but Int32 in its BIRTH/);
  });

  it('[tck-id-payloads-timestamp-in-UTC] a metric stamped 3000-01-01 is refused with UNS_ERR_TIMESTAMP_RANGE and never pins the latest value', async () => {
    const E = 'clock1';
    await publish(mqtt, `spBv1.0/${G}/NBIRTH/${E}`, nbirth(0, 0, [{ name: 'Temp', type: 'Double', value: 20 }]));
    await publish(mqtt, `spBv1.0/${G}/NDATA/${E}`, data(1, [{ name: 'Temp', type: 'Double', value: 99, timestamp: Date.UTC(3000, 0, 1) }]));
    await publish(mqtt, `spBv1.0/${G}/NDATA/${E}`, data(2, [{ name: 'Temp', type: 'Double', value: 21 }]));
    const rej = await waitFor(async () => (await rejectionsOf(`spBv1.0/${G}/NDATA/${E}`))[0], 5_000, 'rejection');
    expect(rej.code).to.equal('UNS_ERR_TIMESTAMP_RANGE');
    const l = await waitFor(async () => { const x = await latest(`spBv1.0/${G}/${E}/#`); return x[0]?.value === 21 ? x : undefined; }, 5_000, 'latest 21');
    expect(l[0]?.value).to.equal(21);
  });

  it('metric names with + and # are stored percent-encoded, readable by topic; an empty level is refused', async () => {
    const E = 'names1';
    await publish(mqtt, `spBv1.0/${G}/NBIRTH/${E}`, nbirth(0, 0, [{ name: 'Tank+Level#2', type: 'Double', value: 7 }, { name: 'Folder/Pump%', type: 'Boolean', value: true }]));
    const l = await waitFor(async () => { const x = await latest(`spBv1.0/${G}/${E}/#`); return x.length === 2 ? x : undefined; }, 5_000, 'two topics');
    expect(l.map((p) => p.topic).sort()).to.deep.equal([`spBv1.0/${G}/${E}/Folder/Pump%25`, `spBv1.0/${G}/${E}/Tank%2BLevel%232`]);
    const one = await fetch(`${base}/api/v1/topics/${encodeURIComponent(`spBv1.0/${G}/${E}/Tank%2BLevel%232`).replace(/%2F/g, '/')}`, { headers: { authorization: `Bearer ${admin}` } });
    expect(one.status).to.equal(200);
    await publish(mqtt, `spBv1.0/${G}/NBIRTH/empty1`, nbirth(0, 0, [{ name: 'a//b', type: 'Double', value: 1 }]));
    const rej = await waitFor(async () => (await rejectionsOf(`spBv1.0/${G}/NBIRTH/empty1`))[0], 5_000, 'rejection');
    expect(rej.code).to.equal('UNS_ERR_SPARKPLUG_METRIC');
  });

  it('is_historical goes to history only (not latest, not live); is_transient goes live only (not stored)', async () => {
    const E = 'hist1';
    const stream = await SseStream.open(`${base}/api/v1/events/stream?filter=${encodeURIComponent(`spBv1.0/${G}/${E}/#`)}`, admin);
    await publish(mqtt, `spBv1.0/${G}/NBIRTH/${E}`, nbirth(0, 0, [{ name: 'Flow', type: 'Double', value: 10 }, { name: 'Blip', type: 'Double', value: 0 }]));
    const old = Date.now() - 3_600_000;
    await publish(mqtt, `spBv1.0/${G}/NDATA/${E}`, data(1, [{ name: 'Flow', type: 'Double', value: 5, timestamp: Date.now() + 1000, isHistorical: true } as UMetric]));
    await publish(mqtt, `spBv1.0/${G}/NDATA/${E}`, data(2, [{ name: 'Flow', type: 'Double', value: 6, timestamp: old, isHistorical: true } as UMetric]));
    await publish(mqtt, `spBv1.0/${G}/NDATA/${E}`, data(3, [{ name: 'Blip', type: 'Double', value: 99, isTransient: true } as UMetric]));
    await publish(mqtt, `spBv1.0/${G}/NDATA/${E}`, data(4, [{ name: 'Flow', type: 'Double', value: 11 }]));
    await stream.point(`spBv1.0/${G}/${E}/Flow`, 11);
    const livePoints = stream.events.flatMap((e) => (e.event === 'datapoints_batch' ? (e.data['datapoints'] as Point[]) : []));
    expect(livePoints.some((p) => p.topic.endsWith('/Blip') && p.value === 99), 'transient fanned out').to.equal(true);
    const liveFlows = livePoints.filter((p) => p.topic.endsWith('/Flow')).map((p) => p.value);
    expect(liveFlows).to.not.include(5);
    expect(liveFlows).to.not.include(6);
    const l = await waitFor(async () => { const x = await latest(`spBv1.0/${G}/${E}/Flow`); return x[0]?.value === 11 ? x : undefined; }, 5_000, 'latest 11');
    expect(l[0]?.value).to.equal(11);
    const hist = await query<{ v: number }>(server.databaseUrl, `SELECT s.v_num AS v FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name = $1 ORDER BY s.time`, [`spBv1.0/${G}/${E}/Flow`]);
    expect(hist.map((r) => r.v)).to.deep.equal([6, 10, 11, 5]);
    const blips = await query<{ v: number }>(server.databaseUrl, `SELECT s.v_num AS v FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name = $1`, [`spBv1.0/${G}/${E}/Blip`]);
    expect(blips.map((r) => r.v), 'transient 99 never stored').to.deep.equal([0]);
    stream.close();
  });

  it('births are retained on $sparkplug/certificates/... for late subscribers', async () => {
    const E = 'cert1';
    await publish(mqtt, `spBv1.0/${G}/NBIRTH/${E}`, nbirth(0, 3, [{ name: 'Mode', type: 'String', value: 'auto' }]));
    await waitFor(() => onTopic(`$sparkplug/certificates/spBv1.0/${G}/NBIRTH/${E}`)[0], 5_000, 'certificate');
    const late = await connect(server.mqttPort, { clientId: 'sp-late-sub' });
    try {
      const got = new Promise<Received>((res) => late.on('message', (topic, payload, packet) => { if (topic.endsWith(`/NBIRTH/${E}`)) res({ topic, payload, retain: packet.retain, qos: packet.qos }); }));
      await late.subscribeAsync(`$sparkplug/certificates/spBv1.0/${G}/NBIRTH/+`, { qos: 1 });
      const r = await got;
      expect(r.retain).to.equal(true);
      expect(decode(r.payload).metrics?.find((m) => m.name === 'Mode')?.value).to.equal('auto');
    } finally {
      late.end(true);
    }
  });

  it('[tck-id-operational-behavior-host-application-termination] a graceful stop publishes STATE offline with the online timestamp', async () => {
    const online = JSON.parse((onTopic('spBv1.0/STATE/uns-test-host')[0] as Received).payload.toString('utf8')) as Body;
    const cfg2 = testConfig(server.databaseUrl, { sparkplug: { hostId: 'uns-test-host2' } });
    const s2 = await startTestServer(cfg2);
    const w = await connect(s2.mqttPort, { clientId: 'sp-stop-watcher' });
    const states: Body[] = [];
    w.on('message', (_t, p) => states.push(JSON.parse(p.toString('utf8')) as Body));
    await w.subscribeAsync('spBv1.0/STATE/uns-test-host2', { qos: 1 });
    await waitFor(() => states[0], 5_000, 'online STATE');
    await s2.stop();
    cleanup(cfg2);
    await waitFor(() => states[1], 5_000, 'offline STATE');
    expect(states.map((s) => s['online'])).to.deep.equal([true, false]);
    expect(states[1]?.['timestamp']).to.equal(states[0]?.['timestamp']);
    expect(online['online']).to.equal(true);
    w.end(true);
  });
});
