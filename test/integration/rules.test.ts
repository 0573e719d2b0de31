/**
 * Threshold rules against a real server: REST CRUD with permission checks, rules from topics.yaml, one event
 * per crossing over real MQTT, the minimum duration firing from its timer, and rule state surviving a restart.
 */
import { expect } from 'chai';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import type { MqttClient } from 'mqtt';
import { query } from '../helpers/postgres.js';
import { testConfig, startTestServer, connect, publish, cleanup, waitFor, roleToken, ADMIN } from '../helpers/server.js';
import { packageRoot } from '../../src/core/paths.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';
import type { UnsEvent } from '../../src/core/events.js';

type Json = Record<string, unknown>;

const FILE_RULE_TOPIC = 'acme/plant2/packaging/line9/filler/temperature';

describe('threshold rules - REST, events, restart', function () {
  this.timeout(60_000);
  let dir: string;
  let config: Config;
  let server: RunningServer;
  let base: string;
  let admin: string;
  let mqtt: MqttClient;
  let events: UnsEvent[] = [];
  let unsubscribe = (): void => undefined;

  async function call(method: string, path: string, token: string, body?: unknown): Promise<{ status: number; body: Json }> {
    const headers: Record<string, string> = { authorization: `Bearer ${token}` };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(`${base}${path}`, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as Json) : {} };
  }
  const code = (b: Json): unknown => (b['error'] as { code?: string } | undefined)?.code;

  async function boot(): Promise<void> {
    server = await startTestServer(config);
    base = `http://127.0.0.1:${server.httpPort}`;
    events = [];
    unsubscribe = server.events.on((e) => { if (e.type.startsWith('sensor.threshold')) events.push(e); });
    await waitFor(() => server.rules.ready, 10_000, 'rules loaded');
    const login = await fetch(`${base}/api/v1/auth/login`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: ADMIN.username, password: ADMIN.password }),
    });
    admin = ((await login.json()) as Json)['access_token'] as string;
    mqtt = await connect(server.mqttPort);
  }
  async function shutdown(): Promise<void> {
    unsubscribe();
    mqtt?.end(true);
    await server?.stop();
  }
  /** Publishes values (QoS 1: acknowledged once durable, after the rules saw them) and lets events go out. */
  async function send(topic: string, ...values: number[]): Promise<void> {
    for (const v of values) await publish(mqtt, topic, JSON.stringify({ value: v }));
    await server.rules.engine.idle();
  }
  const of = (ruleId: string): string[] => events.filter((e) => e.data['rule_id'] === ruleId).map((e) => e.type);

  before(async () => {
    // The shipped namespace, with a file rule of our own.
    dir = mkdtempSync(join(tmpdir(), 'uns-rules-'));
    const doc = parseYaml(readFileSync(join(packageRoot(), 'topics.yaml'), 'utf8')) as Json;
    doc['rules'] = [{ name: 'filler-hot', filter: 'acme/plant2/packaging/+/filler/temperature', operator: '>', threshold: 50 }];
    const topicsFile = join(dir, 'topics.yaml');
    writeFileSync(topicsFile, stringifyYaml(doc));
    config = testConfig(null, { topicsFile });
    await boot();
  });
  after(async () => {
    await shutdown();
    cleanup(config);
    rmSync(dir, { recursive: true, force: true });
  });

  it('loads rules from topics.yaml, read-only through the API, and fires them', async () => {
    const list = await call('GET', '/api/v1/rules', admin);
    expect(list.status).to.equal(200);
    const fileRule = (list.body['rules'] as Json[]).find((r) => r['name'] === 'filler-hot');
    expect(fileRule).to.include({ source: 'file', operator: '>', threshold: 50, topic_filter: 'acme/plant2/packaging/+/filler/temperature' });
    const id = fileRule?.['id'] as string;
    expect((await call('PATCH', `/api/v1/rules/${id}`, admin, { threshold: 60 })).status).to.equal(403);
    expect((await call('DELETE', `/api/v1/rules/${id}`, admin)).status).to.equal(403);
    await send(FILE_RULE_TOPIC, 40, 55, 56);
    expect(of(id)).to.deep.equal(['sensor.threshold_exceeded']);
  });

  it('validates rules: bad operator 400, bad filter 400, filter outside read permissions 403', async () => {
    const analyst = roleToken('ana', ['analyst']);
    const good = { name: 'x', topic_filter: 'acme/plant1/#', operator: '>', threshold: 1 };
    let r = await call('POST', '/api/v1/rules', analyst, { ...good, operator: '!=' });
    expect([r.status, code(r.body)]).to.deep.equal([400, 'UNS_ERR_BAD_REQUEST']);
    r = await call('POST', '/api/v1/rules', analyst, { ...good, threshold: 'high' });
    expect([r.status, code(r.body)]).to.deep.equal([400, 'UNS_ERR_BAD_REQUEST']);
    r = await call('POST', '/api/v1/rules', analyst, { ...good, topic_filter: 'acme/#/x' });
    expect([r.status, code(r.body)]).to.deep.equal([400, 'UNS_ERR_FILTER_INVALID']);
    r = await call('POST', '/api/v1/rules', analyst, { ...good, topic_filter: 'spBv1.0/#' });
    expect([r.status, code(r.body)]).to.deep.equal([403, 'UNS_ERR_FORBIDDEN']);
    r = await call('POST', '/api/v1/rules', roleToken('plc1', ['plc']), good);
    expect([r.status, code(r.body)]).to.deep.equal([403, 'UNS_ERR_FORBIDDEN']);
    r = await call('POST', '/api/v1/rules', admin, {});
    expect(r.status).to.equal(400);
    expect((await call('GET', '/api/v1/rules', '')).status).to.equal(401);
  });

  it('creates, reads, changes and deletes a rule, for its owner only', async () => {
    const analyst = roleToken('ana', ['analyst']);
    const created = await call('POST', '/api/v1/rules', analyst, { name: 'level low', topic_filter: 'acme/plant1/brewing/+/+/level', operator: '<', threshold: 10, hysteresis: 1 });
    expect(created.status).to.equal(201);
    expect(created.body).to.include({ source: 'api', owner: 'ana', min_duration_ms: 0, enabled: true });
    const id = created.body['id'] as string;
    expect((await call('GET', `/api/v1/rules/${id}`, analyst)).body).to.include({ name: 'level low', threshold: 10 }).and.have.property('states');
    // scada may read the filter, so it sees the rule, but it is not the owner
    expect((await call('GET', `/api/v1/rules/${id}`, roleToken('sc', ['scada']))).status).to.equal(200);
    expect((await call('PATCH', `/api/v1/rules/${id}`, roleToken('sc', ['scada']), { threshold: 5 })).status).to.equal(403);
    // plc cannot read acme/#: the rule does not exist for it
    expect((await call('GET', `/api/v1/rules/${id}`, roleToken('p', ['plc']))).status).to.equal(404);
    const changed = await call('PATCH', `/api/v1/rules/${id}`, analyst, { threshold: 12, min_duration_ms: 500 });
    expect(changed.body).to.include({ threshold: 12, min_duration_ms: 500, hysteresis: 1 });
    expect((await call('PATCH', `/api/v1/rules/${id}`, analyst, { topic_filter: 'spBv1.0/#' })).status).to.equal(403);
    expect((await call('PATCH', `/api/v1/rules/${id}`, analyst, { operator: 'lt' })).status).to.equal(400);
    expect((await call('DELETE', `/api/v1/rules/${id}`, analyst)).status).to.equal(204);
    expect((await call('GET', `/api/v1/rules/${id}`, analyst)).status).to.equal(404);
    const rows = await query(server.databaseUrl, 'SELECT id FROM rules WHERE id = $1', [id]);
    expect(rows).to.deep.equal([]);
  });

  it('sends one exceeded per crossing and one cleared past threshold - hysteresis', async () => {
    const topic = 'acme/plant1/packaging/line1/filler/temperature';
    const r = await call('POST', '/api/v1/rules', admin, { name: 'filler', topic_filter: 'acme/plant1/packaging/+/filler/temperature', operator: '>', threshold: 80, hysteresis: 5 });
    const id = r.body['id'] as string;
    await send(topic, 70, 81);
    expect(of(id)).to.deep.equal(['sensor.threshold_exceeded']);
    const ev = events.find((e) => e.data['rule_id'] === id);
    expect(ev?.topic).to.equal(topic);
    expect(ev?.data).to.include({ rule_name: 'filler', operator: '>', threshold: 80, value: 81 });
    expect(ev?.data['timestamp']).to.be.a('string');
    await send(topic, 90, 95, 85);
    expect(of(id), 'more values above: no new event').to.have.length(1);
    await send(topic, 79, 77);
    expect(of(id), 'below the threshold but within the hysteresis: none').to.have.length(1);
    await send(topic, 74, 60);
    expect(of(id)).to.deep.equal(['sensor.threshold_exceeded', 'sensor.threshold_cleared']);
    expect(events.filter((e) => e.data['rule_id'] === id)[1]?.data).to.include({ value: 74 });
    await send(topic, 82);
    expect(of(id)).to.deep.equal(['sensor.threshold_exceeded', 'sensor.threshold_cleared', 'sensor.threshold_exceeded']);
    await send(topic, 10);
  });

  it('with a minimum duration fires only after the value held that long, without a new message', async () => {
    const topic = 'acme/plant1/packaging/line2/capper/pressure';
    const r = await call('POST', '/api/v1/rules', admin, { name: 'capper', topic_filter: topic, operator: '>=', threshold: 6, min_duration_ms: 700 });
    const id = r.body['id'] as string;
    // A short excursion does not fire: once the value is back below, the topic's pending state (and with it
    // its timer, engine.ts evaluate()) is gone; the timer itself is driven on a fake clock in the unit tests.
    await send(topic, 7, 5);
    const after = await call('GET', `/api/v1/rules/${id}`, admin);
    expect((after.body['states'] as Json[]).filter((s) => s['state'] === 'pending' || s['state'] === 'exceeded')).to.deep.equal([]);
    expect(of(id)).to.deep.equal([]);
    const t = Date.now();
    await send(topic, 6.5);
    const state = await call('GET', `/api/v1/rules/${id}`, admin);
    expect((state.body['states'] as Json[])[0]).to.include({ topic, state: 'pending', value: 6.5 });
    await waitFor(() => of(id).length > 0, 5_000, 'exceeded from the timer');
    const ev = events.find((e) => e.data['rule_id'] === id) as UnsEvent;
    expect(ev.occurredAt - t).to.be.at.least(650);
    expect(ev.data).to.include({ value: 6.5, min_duration_ms: 700 });
  });

  it('keeps rule state across a restart: no second exceeded, and the cleared still comes', async () => {
    const topic = 'acme/plant1/brewing/line3/kettle/temperature';
    const r = await call('POST', '/api/v1/rules', admin, { name: 'kettle', topic_filter: 'acme/+/brewing/+/kettle/temperature', operator: '>', threshold: 100, hysteresis: 2 });
    const id = r.body['id'] as string;
    await send(topic, 101);
    expect(of(id)).to.deep.equal(['sensor.threshold_exceeded']);
    const rows = await query(server.databaseUrl, 'SELECT state, value FROM rule_state WHERE rule_id = $1 AND topic = $2', [id, topic]);
    expect(rows).to.deep.equal([{ state: 'exceeded', value: 101 }]);

    await shutdown();
    await boot();
    await send(topic, 102, 105, 99);
    expect(of(id), 'no duplicate exceeded after the restart').to.deep.equal([]);
    await send(topic, 97);
    expect(of(id)).to.deep.equal(['sensor.threshold_cleared']);
    expect(await query(server.databaseUrl, 'SELECT 1 FROM rule_state WHERE rule_id = $1', [id])).to.deep.equal([]);
  });
});
