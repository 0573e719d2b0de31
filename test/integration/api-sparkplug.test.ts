/**
 * The Sparkplug host application's REST side against a real server (embedded PostgreSQL) and a real MQTT
 * edge node: the node listing, NCMD/DCMD commands checked against the BIRTH datatypes and decoded by the
 * edge node, permissions, rebirth requests under the cooldown, and the command audit (no command is sent
 * unaudited), and the same commands sent as `sparkplug_command` messages on the WebSocket stream. Responses are
 * checked against their schemas in schemas/openapi/sparkplug.json and schemas/openapi/stream.json.
 */
import { expect } from 'chai';
import type { MqttClient } from 'mqtt';
import WebSocket from 'ws';
import sparkplugPayload from 'sparkplug-payload';
import type { UMetric, UPayload } from 'sparkplug-payload/lib/sparkplugbpayload.js';
import { query } from '../helpers/postgres.js';
import { testConfig, startTestServer, connect, publish, cleanup, waitFor, roleToken, ADMIN } from '../helpers/server.js';
import { loadOpenApi, RequestValidator } from '../../src/api/openapi.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';

const codec = sparkplugPayload.get('spBv1.0');
if (codec === null) throw new Error('sparkplug-payload lacks spBv1.0');
const encode = (p: UPayload): Buffer => Buffer.from((codec as NonNullable<typeof codec>).encodePayload(p));
const decode = (b: Buffer): UPayload => (codec as NonNullable<typeof codec>).decodePayload(b);

type Json = Record<string, unknown>;
interface Received { topic: string; payload: Buffer }

const G = 'apigrp';
const E = 'edge1';
const D = 'dev1';
/** A second node of the same group, born and then dead. */
const E_DEAD = 'edge2';
const BIG_INT64 = '9007199254740993'; // 2^53 + 1: exact only as a decimal string

describe('sparkplug REST - nodes, commands, rebirth, audit', function () {
  this.timeout(60_000);
  let config: Config;
  let server: RunningServer;
  let base: string;
  let admin: string;
  let edge: MqttClient;
  const received: Received[] = [];
  const schemas = new RequestValidator(loadOpenApi());
  const analyst = roleToken('ana', ['analyst']);
  const scada = roleToken('sc', ['scada']);

  async function call(method: string, path: string, token: string, body?: unknown): Promise<{ status: number; body: Json; headers: Headers }> {
    const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${base}${path}`, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as Json) : {}, headers: res.headers };
  }
  const code = (b: Json): unknown => (b['error'] as { code?: string } | undefined)?.code;
  const message = (b: Json): string => String((b['error'] as { message?: string } | undefined)?.message);
  const command = (token: string, body: Json) => call('POST', '/api/v1/sparkplug/commands', token, body);
  const rebirth = (token: string, group: string, node: string) =>
    call('POST', `/api/v1/sparkplug/nodes/${encodeURIComponent(group)}/${encodeURIComponent(node)}/rebirth`, token);
  const conforms = (schema: string, body: Json): void => { expect(schemas.validate(schema, body), schema).to.equal(null); };
  /** The first message on a topic received after `from` messages, decoded. */
  const nextOn = (topic: string, from: number, what: string): Promise<UPayload> =>
    waitFor(() => {
      const r = received.slice(from).find((m) => m.topic === topic);
      return r === undefined ? undefined : decode(r.payload);
    }, 10_000, what);
  const metricOf = (p: UPayload, name: string): UMetric => {
    const m = p.metrics?.find((x) => x.name === name);
    if (m === undefined) throw new Error(`no metric ${name} in ${JSON.stringify(p.metrics?.map((x) => x.name))}`);
    return m;
  };
  const streams: WebSocket[] = [];
  /** A stream connection; `reply(id)` waits for the server message carrying that id, checked against StreamServerMessage. */
  async function stream(token: string): Promise<{ send: (msg: Json) => void; reply: (id: string) => Promise<Json>; closed: Promise<number> }> {
    const ws = new WebSocket(`ws://127.0.0.1:${server.httpPort}/ws/datapoints/stream?token=${encodeURIComponent(token)}`);
    streams.push(ws);
    const messages: Json[] = [];
    ws.on('message', (data) => messages.push(JSON.parse(String(data)) as Json));
    const closed = new Promise<number>((res) => ws.once('close', (c) => res(c)));
    await new Promise<void>((res, rej) => { ws.once('open', () => res()); ws.once('error', rej); });
    return {
      closed,
      send: (msg) => ws.send(JSON.stringify(msg)),
      reply: async (id) => {
        const m = await waitFor(() => messages.find((x) => x['id'] === id), 10_000, `stream reply ${id}`);
        conforms('StreamServerMessage', m);
        return m;
      },
    };
  }
  const audit = async (limit = 100): Promise<Json[]> => {
    const r = await call('GET', `/api/v1/sparkplug/commands?limit=${limit}`, admin);
    expect(r.status).to.equal(200);
    conforms('SparkplugCommandAuditList', r.body);
    return r.body['commands'] as Json[];
  };

  before(async () => {
    config = testConfig(null, { sparkplug: { hostId: 'uns-api-sp-host', rebirthCooldownMs: 60_000 } });
    server = await startTestServer(config);
    base = `http://127.0.0.1:${server.httpPort}`;
    const login = await fetch(`${base}/api/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ADMIN) });
    admin = ((await login.json()) as Json)['access_token'] as string;

    // The edge node: births its node and one device, and listens for its commands.
    edge = await connect(server.mqttPort, { clientId: 'api-sp-edge' });
    edge.on('message', (topic, payload) => received.push({ topic, payload }));
    await edge.subscribeAsync([`spBv1.0/${G}/NCMD/${E}`, `spBv1.0/${G}/DCMD/${E}/#`], { qos: 1 });
    const now = Date.now();
    await publish(edge, `spBv1.0/${G}/NBIRTH/${E}`, encode({ timestamp: now, seq: 0, metrics: [
      { name: 'bdSeq', type: 'UInt64', value: 0 },
      { name: 'Node Control/Rebirth', type: 'Boolean', value: false },
      { name: 'Uptime', type: 'Int32', value: 1 },
    ] }));
    await publish(edge, `spBv1.0/${G}/DBIRTH/${E}/${D}`, encode({ timestamp: now, seq: 1, metrics: [
      { name: 'Setpoint', type: 'Int32', value: 20 },
      { name: 'Running', type: 'Boolean', value: true },
      { name: 'Mode', type: 'String', value: 'auto' },
      { name: 'Temperature', type: 'Double', value: 21.5 },
      { name: 'Counter', type: 'Int64', value: 1000 },
    ] }));
    // A node of the same group that dies right after its birth.
    await publish(edge, `spBv1.0/${G}/NBIRTH/${E_DEAD}`, encode({ timestamp: now, seq: 0, metrics: [
      { name: 'bdSeq', type: 'UInt64', value: 3 }, { name: 'Uptime', type: 'Int32', value: 1 },
    ] }));
    await publish(edge, `spBv1.0/${G}/NDEATH/${E_DEAD}`, encode({ timestamp: now, metrics: [{ name: 'bdSeq', type: 'UInt64', value: 3 }] }));
    await waitFor(() => {
      const nodes = server.sparkplug.nodes();
      const live = nodes.find((n) => n.edge_node_id === E);
      const dead = nodes.find((n) => n.edge_node_id === E_DEAD);
      return live?.devices.some((d) => d.device_id === D && d.online) === true && dead?.online === false;
    }, 10_000, 'births and the death decoded');
  });
  after(async () => {
    for (const ws of streams) ws.terminate();
    edge?.end(true);
    await server?.stop();
    if (config) cleanup(config);
  });

  it('lists the born node and its device, online, with their BIRTH metric counts (bdSeq not counted)', async () => {
    const r = await call('GET', '/api/v1/sparkplug/nodes', admin);
    expect(r.status).to.equal(200);
    conforms('SparkplugNodeList', r.body);
    const nodes = r.body['nodes'] as Json[];
    const node = nodes.find((n) => n['group_id'] === G && n['edge_node_id'] === E);
    expect(node).to.include({ online: true, bd_seq: '0', metrics: 2, rebirths_requested: 0 });
    const devices = node?.['devices'] as Json[];
    expect(devices).to.have.length(1);
    expect(devices[0]).to.include({ device_id: D, online: true, metrics: 5 });
    expect(devices[0]?.['born_at']).to.be.a('string');
    expect(nodes.find((n) => n['edge_node_id'] === E_DEAD)).to.include({ online: false, bd_seq: '3' });
  });

  it('lists nodes only in groups the caller may read: scada sees the group, analyst sees none, no token is 401', async () => {
    const sc = await call('GET', '/api/v1/sparkplug/nodes', scada);
    expect((sc.body['nodes'] as Json[]).map((n) => n['edge_node_id'])).to.include.members([E, E_DEAD]);
    const an = await call('GET', '/api/v1/sparkplug/nodes', analyst);
    expect([an.status, an.body]).to.deep.equal([200, { nodes: [] }]);
    const anon = await call('GET', '/api/v1/sparkplug/nodes', '');
    expect([anon.status, code(anon.body)]).to.deep.equal([401, 'UNS_ERR_UNAUTHENTICATED']);
  });

  it('sends a DCMD the edge node decodes with the BIRTH datatypes and exact values, including an Int64 beyond 2^53', async () => {
    const from = received.length;
    const sentBefore = server.sparkplug.stats.commandsSent;
    const r = await command(admin, { group_id: G, edge_node_id: E, device_id: D, metrics: [
      { name: 'Setpoint', value: -25 }, { name: 'Running', value: false }, { name: 'Mode', value: 'manual' },
      { name: 'Temperature', value: 22.25 }, { name: 'Counter', value: BIG_INT64 },
    ] });
    expect(r.status, message(r.body)).to.equal(202);
    conforms('SparkplugCommandSent', r.body);
    expect(r.body).to.deep.equal({ sent: true, topic: `spBv1.0/${G}/DCMD/${E}/${D}`, metrics: [
      { name: 'Setpoint', datatype: 'Int32', value: -25 }, { name: 'Running', datatype: 'Boolean', value: false },
      { name: 'Mode', datatype: 'String', value: 'manual' }, { name: 'Temperature', datatype: 'Double', value: 22.25 },
      { name: 'Counter', datatype: 'Int64', value: BIG_INT64 },
    ] });
    const dcmd = await nextOn(`spBv1.0/${G}/DCMD/${E}/${D}`, from, 'DCMD');
    expect(dcmd.timestamp, 'a DCMD carries a timestamp').to.not.equal(undefined);
    const got = (name: string): [unknown, unknown] => { const m = metricOf(dcmd, name); return [m.type, m.value]; };
    expect(got('Setpoint')).to.deep.equal(['Int32', -25]);
    expect(got('Running')).to.deep.equal(['Boolean', false]);
    expect(got('Mode')).to.deep.equal(['String', 'manual']);
    expect(got('Temperature')).to.deep.equal(['Double', 22.25]);
    expect(metricOf(dcmd, 'Counter').type).to.equal('Int64');
    expect(String(metricOf(dcmd, 'Counter').value)).to.equal(BIG_INT64);
    expect(server.sparkplug.stats.commandsSent).to.equal(sentBefore + 1);
  });

  it('sends an NCMD to the edge node itself when device_id is absent, for a role allowed to write NCMD (scada)', async () => {
    const from = received.length;
    const r = await command(scada, { group_id: G, edge_node_id: E, metrics: [{ name: 'Uptime', value: 7 }] });
    expect(r.status, message(r.body)).to.equal(202);
    expect(r.body['topic']).to.equal(`spBv1.0/${G}/NCMD/${E}`);
    const ncmd = await nextOn(`spBv1.0/${G}/NCMD/${E}`, from, 'NCMD');
    expect([metricOf(ncmd, 'Uptime').type, metricOf(ncmd, 'Uptime').value]).to.deep.equal(['Int32', 7]);
  });

  it('refuses values the BIRTH datatype does not take with 400 UNS_ERR_SPARKPLUG_METRIC, sending nothing', async () => {
    const sentBefore = server.sparkplug.stats.commandsSent;
    const wrong: Array<[string, unknown]> = [
      ['Setpoint', 'high'], ['Setpoint', 2_147_483_648], ['Setpoint', 1.5], ['Running', 1], ['Mode', true], ['Temperature', '22'],
      ['Counter', '99999999999999999999'],
    ];
    for (const [name, value] of wrong) {
      const r = await command(admin, { group_id: G, edge_node_id: E, device_id: D, metrics: [{ name, value }] });
      expect([r.status, code(r.body)], `${name} = ${JSON.stringify(value)}`).to.deep.equal([400, 'UNS_ERR_SPARKPLUG_METRIC']);
    }
    // One bad metric refuses the whole command.
    const mixed = await command(admin, { group_id: G, edge_node_id: E, device_id: D, metrics: [{ name: 'Setpoint', value: 1 }, { name: 'Running', value: 'yes' }] });
    expect([mixed.status, code(mixed.body)]).to.deep.equal([400, 'UNS_ERR_SPARKPLUG_METRIC']);
    expect(server.sparkplug.stats.commandsSent).to.equal(sentBefore);
  });

  it('refuses metrics not in the BIRTH with 400 UNS_ERR_SPARKPLUG_METRIC, and Node Control/Rebirth with 400 (rebirth endpoint)', async () => {
    const unknown = await command(admin, { group_id: G, edge_node_id: E, device_id: D, metrics: [{ name: 'Nope', value: 1 }] });
    expect([unknown.status, code(unknown.body)]).to.deep.equal([400, 'UNS_ERR_SPARKPLUG_METRIC']);
    // A device metric is not a node metric.
    const wrongScope = await command(admin, { group_id: G, edge_node_id: E, metrics: [{ name: 'Setpoint', value: 1 }] });
    expect([wrongScope.status, code(wrongScope.body)]).to.deep.equal([400, 'UNS_ERR_SPARKPLUG_METRIC']);
    const bdSeq = await command(admin, { group_id: G, edge_node_id: E, metrics: [{ name: 'bdSeq', value: 9 }] });
    expect([bdSeq.status, code(bdSeq.body)]).to.deep.equal([400, 'UNS_ERR_SPARKPLUG_METRIC']);
    const rb = await command(admin, { group_id: G, edge_node_id: E, metrics: [{ name: 'Node Control/Rebirth', value: true }] });
    expect([rb.status, code(rb.body)]).to.deep.equal([400, 'UNS_ERR_BAD_REQUEST']);
    expect(message(rb.body)).to.contain('/rebirth');
  });

  it('refuses malformed command bodies with 400 UNS_ERR_BAD_REQUEST: ids that are not one topic level, no metrics, over 100, repeated names', async () => {
    const ok = { group_id: G, edge_node_id: E, device_id: D, metrics: [{ name: 'Setpoint', value: 1 }] };
    const bodies: Json[] = [
      { ...ok, group_id: 'a/b' }, { ...ok, edge_node_id: '+' }, { ...ok, device_id: '#' }, { ...ok, edge_node_id: '' },
      { ...ok, metrics: [] }, { ...ok, metrics: Array.from({ length: 101 }, (_v, i) => ({ name: `m${i}`, value: i })) },
      { ...ok, metrics: [{ name: 'Setpoint' }] }, { ...ok, metrics: [{ name: 'Setpoint', value: { a: 1 } }] }, { ...ok, extra: 1 },
      { ...ok, metrics: [{ name: 'Setpoint', value: 1 }, { name: 'Setpoint', value: 2 }] },
    ];
    for (const b of bodies) {
      const r = await command(admin, b);
      expect([r.status, code(r.body)], JSON.stringify(b).slice(0, 120)).to.deep.equal([400, 'UNS_ERR_BAD_REQUEST']);
    }
    const rb = await rebirth(admin, 'a/b', E);
    expect([rb.status, code(rb.body)]).to.deep.equal([400, 'UNS_ERR_BAD_REQUEST']);
  });

  it('answers 404 UNS_ERR_NOT_FOUND for a node or device never born, for commands and rebirth', async () => {
    const node = await command(admin, { group_id: G, edge_node_id: 'ghost', metrics: [{ name: 'Uptime', value: 1 }] });
    expect([node.status, code(node.body)]).to.deep.equal([404, 'UNS_ERR_NOT_FOUND']);
    const device = await command(admin, { group_id: G, edge_node_id: E, device_id: 'ghost', metrics: [{ name: 'Setpoint', value: 1 }] });
    expect([device.status, code(device.body)]).to.deep.equal([404, 'UNS_ERR_NOT_FOUND']);
    const group = await command(admin, { group_id: 'nogroup', edge_node_id: E, metrics: [{ name: 'Uptime', value: 1 }] });
    expect([group.status, code(group.body)]).to.deep.equal([404, 'UNS_ERR_NOT_FOUND']);
    const rb = await rebirth(admin, G, 'ghost');
    expect([rb.status, code(rb.body)]).to.deep.equal([404, 'UNS_ERR_NOT_FOUND']);
  });

  it('answers 403 UNS_ERR_FORBIDDEN to a role without write permission on the command topic, before telling whether the node exists', async () => {
    const sentBefore = server.sparkplug.stats.commandsSent;
    const dcmd = await command(analyst, { group_id: G, edge_node_id: E, device_id: D, metrics: [{ name: 'Setpoint', value: 1 }] });
    expect([dcmd.status, code(dcmd.body)]).to.deep.equal([403, 'UNS_ERR_FORBIDDEN']);
    const ghost = await command(analyst, { group_id: G, edge_node_id: 'ghost', metrics: [{ name: 'Uptime', value: 1 }] });
    expect([ghost.status, code(ghost.body)]).to.deep.equal([403, 'UNS_ERR_FORBIDDEN']);
    const rb = await rebirth(analyst, G, E);
    expect([rb.status, code(rb.body)]).to.deep.equal([403, 'UNS_ERR_FORBIDDEN']);
    expect(server.sparkplug.stats.commandsSent).to.equal(sentBefore);
    expect(server.sparkplug.nodes().find((n) => n.edge_node_id === E)?.rebirths_requested).to.equal(0);
  });

  it('refuses commands and rebirths to a dead edge node with 400 "edge node offline"', async () => {
    const r = await command(admin, { group_id: G, edge_node_id: E_DEAD, metrics: [{ name: 'Uptime', value: 1 }] });
    expect([r.status, code(r.body)]).to.deep.equal([400, 'UNS_ERR_BAD_REQUEST']);
    expect(message(r.body)).to.contain('edge node offline');
    const rb = await rebirth(admin, G, E_DEAD);
    expect([rb.status, code(rb.body)]).to.deep.equal([400, 'UNS_ERR_BAD_REQUEST']);
    expect(message(rb.body)).to.contain('edge node offline');
  });

  it('sends a rebirth request as NCMD Node Control/Rebirth = true (202); a second within the cooldown is 429 with Retry-After in whole seconds', async () => {
    const from = received.length;
    const first = await rebirth(admin, G, E);
    expect([first.status, first.body]).to.deep.equal([202, { sent: true }]);
    conforms('SparkplugRebirthSent', first.body);
    const ncmd = await nextOn(`spBv1.0/${G}/NCMD/${E}`, from, 'rebirth NCMD');
    const m = metricOf(ncmd, 'Node Control/Rebirth');
    expect([m.type, m.value]).to.deep.equal(['Boolean', true]);

    const second = await rebirth(scada, G, E);
    expect([second.status, code(second.body)]).to.deep.equal([429, 'UNS_ERR_RATE_LIMITED']);
    const retryAfter = second.headers.get('retry-after') ?? '';
    expect(retryAfter).to.match(/^\d+$/);
    expect(Number(retryAfter)).to.be.within(1, 60);
    const node = (await call('GET', '/api/v1/sparkplug/nodes', admin)).body['nodes'] as Json[];
    expect(node.find((n) => n['edge_node_id'] === E)).to.include({ rebirths_requested: 1 });
  });

  it('audits every authenticated attempt, newest first, with its result and reason; the audit is for admins only', async () => {
    const rows = await audit();
    const ids = rows.map((r) => BigInt(r['id'] as string));
    expect(ids, 'newest first').to.deep.equal([...ids].sort((a, b) => (a > b ? -1 : 1)));
    // The two rebirth requests, the last attempts made.
    expect(rows.slice(0, 2).map((r) => [r['username'], r['edge_node_id'], r['result'], String(r['reason']).split(':')[0]])).to.deep.equal([
      ['sc', E, 'refused', 'UNS_ERR_RATE_LIMITED'], ['admin', E, 'sent', 'null'],
    ]);
    const sent = rows.filter((r) => r['result'] === 'sent' && r['device_id'] === D);
    expect(sent).to.have.length(1);
    expect(sent[0]).to.include({ username: 'admin', group_id: G, edge_node_id: E, reason: null });
    expect(sent[0]?.['metrics']).to.deep.include({ name: 'Counter', datatype: 'Int64', value: BIG_INT64 });
    const ncmd = rows.find((r) => r['result'] === 'sent' && r['username'] === 'sc');
    expect(ncmd).to.include({ device_id: null });
    expect(ncmd?.['metrics']).to.deep.equal([{ name: 'Uptime', datatype: 'Int32', value: 7 }]);
    const reasons = (user: string): string[] => rows.filter((r) => r['username'] === user && r['result'] === 'refused').map((r) => String(r['reason']).split(':')[0] as string);
    expect(reasons('ana'), 'the analyst: two commands and a rebirth, forbidden').to.deep.equal(['UNS_ERR_FORBIDDEN', 'UNS_ERR_FORBIDDEN', 'UNS_ERR_FORBIDDEN']);
    const refusedCodes = new Set(reasons('admin'));
    for (const c of ['UNS_ERR_SPARKPLUG_METRIC', 'UNS_ERR_NOT_FOUND', 'UNS_ERR_BAD_REQUEST']) expect(refusedCodes, c).to.include(c);
    // A refused request is kept as it was asked.
    expect(rows.some((r) => r['result'] === 'refused' && JSON.stringify(r['metrics']) === JSON.stringify([{ name: 'Nope', value: 1 }]))).to.equal(true);
    // Unauthenticated attempts are not audited.
    const count = (await query<{ n: string }>(server.databaseUrl, 'SELECT count(*) AS n FROM sparkplug_commands'))[0]?.n;
    await command('', { group_id: G, edge_node_id: E, metrics: [{ name: 'Uptime', value: 1 }] });
    expect((await query<{ n: string }>(server.databaseUrl, 'SELECT count(*) AS n FROM sparkplug_commands'))[0]?.n).to.equal(count);

    expect((await audit(2)).length).to.equal(2);
    const notAdmin = await call('GET', '/api/v1/sparkplug/commands', scada);
    expect([notAdmin.status, code(notAdmin.body)]).to.deep.equal([403, 'UNS_ERR_FORBIDDEN']);
    const badLimit = await call('GET', '/api/v1/sparkplug/commands?limit=0', admin);
    expect([badLimit.status, code(badLimit.body)]).to.deep.equal([400, 'UNS_ERR_BAD_REQUEST']);
  });

  it('refuses with 503 UNS_ERR_UNAVAILABLE and Retry-After: 1, sending nothing, when the audit row cannot be written', async () => {
    const sentBefore = server.sparkplug.stats.commandsSent;
    const from = received.length;
    await query(server.databaseUrl, 'ALTER TABLE sparkplug_commands RENAME TO sparkplug_commands_away');
    let r: Awaited<ReturnType<typeof command>>;
    try {
      r = await command(admin, { group_id: G, edge_node_id: E, device_id: D, metrics: [{ name: 'Setpoint', value: 111 }] });
    } finally {
      await query(server.databaseUrl, 'ALTER TABLE sparkplug_commands_away RENAME TO sparkplug_commands');
    }
    expect([r.status, code(r.body)]).to.deep.equal([503, 'UNS_ERR_UNAVAILABLE']);
    expect(r.headers.get('retry-after')).to.equal('1');
    expect(server.sparkplug.stats.commandsSent).to.equal(sentBefore);
    // Audited again: sent. The first DCMD the edge node gets after the refusal is this one.
    const ok = await command(admin, { group_id: G, edge_node_id: E, device_id: D, metrics: [{ name: 'Setpoint', value: 222 }] });
    expect(ok.status, message(ok.body)).to.equal(202);
    const dcmd = await nextOn(`spBv1.0/${G}/DCMD/${E}/${D}`, from, 'DCMD after the refusal');
    expect(metricOf(dcmd, 'Setpoint').value).to.equal(222);
    expect((await audit(1))[0]).to.include({ result: 'sent' });
  });
  it('takes a sparkplug_command on the WebSocket stream: the edge node gets the DCMD with the BIRTH datatypes, the reply is sparkplug_command_result with the id', async () => {
    const from = received.length;
    const ws = await stream(admin);
    ws.send({ type: 'sparkplug_command', id: 'c1', group_id: G, edge_node_id: E, device_id: D, metrics: [{ name: 'Setpoint', value: 42 }, { name: 'Counter', value: BIG_INT64 }] });
    expect(await ws.reply('c1')).to.deep.equal({ type: 'sparkplug_command_result', id: 'c1', sent: true, topic: `spBv1.0/${G}/DCMD/${E}/${D}`, metrics: [
      { name: 'Setpoint', datatype: 'Int32', value: 42 }, { name: 'Counter', datatype: 'Int64', value: BIG_INT64 },
    ] });
    const dcmd = await nextOn(`spBv1.0/${G}/DCMD/${E}/${D}`, from, 'DCMD from the stream');
    expect([metricOf(dcmd, 'Setpoint').type, metricOf(dcmd, 'Setpoint').value]).to.deep.equal(['Int32', 42]);
    expect([metricOf(dcmd, 'Counter').type, String(metricOf(dcmd, 'Counter').value)]).to.deep.equal(['Int64', BIG_INT64]);
    expect((await audit(1))[0]).to.deep.include({ username: 'admin', device_id: D, result: 'sent', reason: null, metrics: [
      { name: 'Setpoint', datatype: 'Int32', value: 42 }, { name: 'Counter', datatype: 'Int64', value: BIG_INT64 },
    ] });
  });

  it('answers a stream command with a wrong datatype by an error UNS_ERR_SPARKPLUG_METRIC with the id, sends nothing and audits the refusal; a malformed one is UNS_ERR_BAD_REQUEST', async () => {
    const sentBefore = server.sparkplug.stats.commandsSent;
    const ws = await stream(admin);
    ws.send({ type: 'sparkplug_command', id: 'w1', group_id: G, edge_node_id: E, device_id: D, metrics: [{ name: 'Setpoint', value: 'high' }] });
    ws.send({ type: 'sparkplug_command', id: 'w2', group_id: 'a/b', edge_node_id: E, metrics: [{ name: 'Uptime', value: 1 }] });
    const wrong = await ws.reply('w1');
    expect([wrong['type'], code(wrong)]).to.deep.equal(['error', 'UNS_ERR_SPARKPLUG_METRIC']);
    expect(message(wrong)).to.contain('Setpoint');
    const malformed = await ws.reply('w2');
    expect([malformed['type'], code(malformed)]).to.deep.equal(['error', 'UNS_ERR_BAD_REQUEST']);
    expect(server.sparkplug.stats.commandsSent).to.equal(sentBefore);
    const row = (await audit(1))[0];
    expect(row).to.deep.include({ username: 'admin', device_id: D, result: 'refused', metrics: [{ name: 'Setpoint', value: 'high' }] });
    expect(String(row?.['reason'])).to.equal(`UNS_ERR_SPARKPLUG_METRIC: ${message(wrong)}`);
  });

  it('answers a stream command from a role without write permission (analyst) by an error UNS_ERR_FORBIDDEN with the id, audited', async () => {
    const sentBefore = server.sparkplug.stats.commandsSent;
    const ws = await stream(analyst);
    ws.send({ type: 'sparkplug_command', id: 'f1', group_id: G, edge_node_id: E, metrics: [{ name: 'Uptime', value: 3 }] });
    const r = await ws.reply('f1');
    expect([r['type'], code(r)]).to.deep.equal(['error', 'UNS_ERR_FORBIDDEN']);
    expect(server.sparkplug.stats.commandsSent).to.equal(sentBefore);
    expect((await audit(1))[0]).to.deep.include({ username: 'ana', edge_node_id: E, device_id: null, result: 'refused', reason: `UNS_ERR_FORBIDDEN: ${message(r)}` });
  });

  it('checks the credential again before a stream command: an API token revoked meanwhile closes the stream (4401), nothing is sent', async () => {
    const created = await call('POST', '/api/v1/tokens', admin, { name: 'sp-ws' });
    expect(created.status).to.equal(201);
    const apiToken = created.body['token'] as string;
    const ws = await stream(apiToken);
    expect((await call('DELETE', `/api/v1/tokens/${String(created.body['id'])}`, admin)).status).to.be.oneOf([200, 204]);
    const sentBefore = server.sparkplug.stats.commandsSent;
    ws.send({ type: 'sparkplug_command', id: 'r1', group_id: G, edge_node_id: E, metrics: [{ name: 'Uptime', value: 4 }] });
    expect(await ws.closed).to.equal(4401);
    expect(server.sparkplug.stats.commandsSent).to.equal(sentBefore);
  });
});
