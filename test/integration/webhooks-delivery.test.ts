/**
 * Webhook deliveries end to end: MQTT publish -> pipeline -> outbox -> signed HTTP POST to a real receiver
 * on 127.0.0.1 (allow-listed), which verifies every signature with its own code. Retries, 410, redirects,
 * timeouts, ordered mode, templates, the delivery log, statistics and replays. Short retry schedules.
 */
import { expect } from 'chai';
import type { MqttClient } from 'mqtt';
import { testConfig, startTestServer, cleanup, connect, publish, waitFor, ADMIN } from '../helpers/server.js';
import { startReceiver, type Receiver, type Received } from '../helpers/webhook-receiver.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';

type Body = Record<string, unknown>;
const T = 'acme/plant1/packaging/line1';

interface Reading { event_id: string; topic: string; value: unknown; timestamp: string; quality: string; unit?: string }
const readingsOf = (r: Received): Reading[] => (((r.json as Body | null)?.['data'] as Body | undefined)?.['readings'] as Reading[] | undefined) ?? [];
/** Time as input only: receivers that answer slowly on purpose. */
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('webhooks - deliveries', function () {
  this.timeout(30_000);
  let config: Config;
  let server: RunningServer;
  let receiver: Receiver;
  let base: string;
  let admin: string;
  let mqtt: MqttClient;
  const replies = new Map<string, Receiver['reply']>();

  async function call(method: string, path: string, body?: unknown): Promise<{ status: number; body: Body }> {
    const res = await fetch(`${base}${path}`, {
      method, headers: { authorization: `Bearer ${admin}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as Body) : {} };
  }

  /** Creates a webhook posting to `${receiver.url}${path}` and registers its secret with the receiver. */
  async function create(path: string, over: Body): Promise<{ id: string; secret: string }> {
    const r = await call('POST', '/api/v1/webhooks', { name: path, url: `${receiver.url}${path}`, events: ['sensor.reading'], ...over });
    expect(r.status, JSON.stringify(r.body)).to.equal(201);
    receiver.secrets.push(r.body['secret'] as string);
    return { id: r.body['id'] as string, secret: r.body['secret'] as string };
  }

  const deliveries = async (id: string, q = ''): Promise<Body[]> => (await call('GET', `/api/v1/webhooks/${id}/deliveries${q}`)).body['deliveries'] as Body[];

  before(async () => {
    receiver = await startReceiver();
    receiver.reply = (r) => replies.get(r.path)?.(r) ?? { status: 200, body: 'ok' };
    config = testConfig(null, { webhooks: { allowlist: '127.0.0.1/32', pollIntervalMs: 100, leaseMarginMs: 1000, refreshIntervalMs: 500, stopGraceMs: 200 } });
    server = await startTestServer(config);
    base = `http://127.0.0.1:${server.httpPort}`;
    const r = await fetch(`${base}/api/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ADMIN) });
    admin = ((await r.json()) as Body)['access_token'] as string;
    mqtt = await connect(server.mqttPort, { clientId: 'webhook-tests' });
  });
  after(async () => {
    mqtt?.end(true);
    await server?.stop();
    await receiver?.close();
    if (config) cleanup(config);
  });

  it('delivers sensor.reading after an MQTT publish, batched, signed, inside the topic filter and conditions', async () => {
    await create('/readings', { filters: { topics: [`${T}/#`] }, batch: { max_size: 50, max_linger_ms: 400 } });
    await create('/hot', { filters: { topics: [`${T}/#`], conditions: [{ field: 'value', operator: '>', value: 100 }] }, batch: { max_size: 50, max_linger_ms: 100 } });
    // The one outside the filter goes before the last reading: each publish is durable before the next is sent
    // and the sink sees them in order, so once the last reading is delivered the outsider has been judged.
    for (const v of [21.5, 22, 150]) await publish(mqtt, `${T}/filler/temperature`, JSON.stringify({ value: v }));
    await publish(mqtt, 'acme/plant2/packaging/line1/filler/temperature', JSON.stringify({ value: 30 })); // outside the filter
    await publish(mqtt, `${T}/filler/temperature`, JSON.stringify({ value: 23 }));
    const got = await waitFor(() => {
      const all = receiver.on('/readings').flatMap(readingsOf);
      return all.length >= 4 ? receiver.on('/readings') : undefined;
    }, 10_000, 'four readings');
    const readings = got.flatMap(readingsOf);
    expect(readings.map((x) => x.value)).to.deep.equal([21.5, 22, 150, 23]);
    expect(got.length, 'published within one linger window: one batch').to.equal(1);
    const first = got[0] as Received;
    expect(first.standardOk && first.simpleOk, 'signatures verify').to.equal(true);
    expect(first.json).to.include({ type: 'sensor.reading', id: first.id });
    expect(readings[0]).to.include({ topic: `${T}/filler/temperature`, quality: 'good', unit: '°C' });
    expect(readings[0]?.event_id).to.match(/^evt_/);
    const hot = await waitFor(() => (receiver.on('/hot').length > 0 ? receiver.on('/hot') : undefined), 5_000, 'hot reading');
    expect(hot.flatMap(readingsOf).map((x) => x.value)).to.deep.equal([150]);
    expect(receiver.received.flatMap(readingsOf).some((x) => x.topic.startsWith('acme/plant2/'))).to.equal(false);
  });

  it('retries a failing receiver with the same webhook-id until it answers 2xx; nothing is lost', async () => {
    let failing = true;
    replies.set('/flaky', () => (failing ? { status: 500, body: 'boom' } : { status: 200, body: 'ok' }));
    const { id } = await create('/flaky', { filters: { topics: [`${T}/capper/#`] }, batch: { max_size: 1 }, retry_config: { schedule_s: [0.5, 0.5, 0.5, 0.5, 0.5, 0.5] } });
    for (const v of [1, 2, 3]) await publish(mqtt, `${T}/capper/pressure`, JSON.stringify({ value: v }));
    await waitFor(() => new Set(receiver.on('/flaky').map((r) => r.id)).size === 3 && receiver.on('/flaky').length >= 6, 10_000, 'failed attempts');
    failing = false;
    await waitFor(async () => (await deliveries(id, '?status=succeeded')).length === 3, 10_000, 'three succeeded deliveries');
    const byId = new Map<string, Received[]>();
    for (const r of receiver.on('/flaky')) byId.set(r.id, [...(byId.get(r.id) ?? []), r]);
    expect(byId.size, 'de-duplicated by webhook-id').to.equal(3);
    for (const [wid, reqs] of byId) {
      expect(reqs.length, `${wid} was retried`).to.be.greaterThan(1);
      expect(new Set(reqs.map((r) => r.body.toString())).size, 'same body on every attempt').to.equal(1);
      expect(reqs.every((r) => r.standardOk && r.simpleOk), 'every attempt signed').to.equal(true);
      expect(new Set(reqs.map((r) => readingsOf(r)[0]?.event_id)).size).to.equal(1);
    }
    expect([...byId.values()].map((reqs) => readingsOf(reqs[0] as Received)[0]?.value).sort()).to.deep.equal([1, 2, 3]);

    // The delivery log shows each attempt: 500s with a next retry, then the 200.
    const list = await deliveries(id);
    const one = list[0] as Body;
    expect(one).to.include({ status: 'succeeded', response_code: 200, event_type: 'sensor.reading' });
    const detail = await call('GET', `/api/v1/webhooks/${id}/deliveries/${String(one['id'])}`);
    const attempts = detail.body['attempts'] as Body[];
    expect(attempts.length).to.be.greaterThan(1);
    expect(attempts[0]).to.include({ attempt: 1, response_code: 500, outcome: 'retry', response_excerpt: 'boom' });
    expect(attempts[0]?.['next_retry_at']).to.be.a('string');
    expect(attempts.at(-1)).to.include({ response_code: 200, outcome: 'success', next_retry_at: null });
    expect((detail.body['payload'] as Body)['type']).to.equal('sensor.reading');

    const stats = await call('GET', `/api/v1/webhooks/${id}/stats?group_by=hour`);
    expect(stats.status).to.equal(200);
    const summary = stats.body['summary'] as Body;
    expect(summary).to.include({ total_deliveries: 3, succeeded: 3, dead: 0, success_rate: 100 });
    expect(summary['total_attempts']).to.equal(summary['failed_attempts'] as number + 3);
    expect(summary['avg_latency_ms']).to.be.a('number');
    expect(stats.body['events_by_type']).to.deep.equal([{ event: 'sensor.reading', count: 3, succeeded: 3, dead: 0, success_rate: 100 }]);
    expect((stats.body['error_breakdown'] as Body[])[0]).to.include({ error_type: 'http_500', percentage: 100 });
    expect((stats.body['time_series'] as Body[]).length).to.be.greaterThan(0);
    const get = await call('GET', `/api/v1/webhooks/${id}`);
    expect(get.body).to.include({ success_count: 3, failure_count: 0 });
    expect((get.body['health'] as Body)['state']).to.equal('healthy');
  });

  it('410 Gone disables the endpoint and says so with system.health_changed', async () => {
    replies.set('/gone', () => ({ status: 410, body: 'gone' }));
    const { id } = await create('/gone', { filters: { topics: [`${T}/labeler/#`] }, batch: { max_size: 1 } });
    const watcher = await create('/health', { events: ['system.health_changed'] });
    await publish(mqtt, `${T}/labeler/speed`, JSON.stringify({ value: 600 }));
    const note = await waitFor(() => receiver.on('/health').find((r) => ((r.json as Body)['data'] as Body)['webhook_id'] === id), 10_000, 'health event');
    expect(note.json).to.deep.include({ type: 'system.health_changed' });
    expect((note.json as Body)['data']).to.include({ component: 'webhook', state: 'disabled', reason: 'gone' });
    expect(note.standardOk).to.equal(true);
    const get = await call('GET', `/api/v1/webhooks/${id}`);
    expect(get.body).to.include({ is_active: false, disabled_reason: 'gone' });
    expect((get.body['health'] as Body)['state']).to.equal('disabled');
    expect((await deliveries(id))[0]).to.include({ status: 'dead', dead_reason: 'gone', response_code: 410 });
    const before = receiver.on('/gone').length;
    // A barrier: a second endpoint on the same filter. One accept() (dispatcher.ts) pushes the rows of every
    // matching endpoint for an event onto one serial insert queue, written in order (here by one INSERT), so
    // once the sentinel has its delivery any row for the disabled endpoint would be in the delivery log too.
    await create('/gone-sentinel', { filters: { topics: [`${T}/labeler/#`] }, batch: { max_size: 1 } });
    await publish(mqtt, `${T}/labeler/speed`, JSON.stringify({ value: 610 }));
    await waitFor(() => receiver.on('/gone-sentinel').some((r) => readingsOf(r).some((x) => x.value === 610)), 10_000, 'the sentinel delivery');
    expect(await deliveries(id), 'no delivery queued for a disabled endpoint').to.have.length(1);
    expect(receiver.on('/gone').length, 'nothing sent to a disabled endpoint').to.equal(before);
    expect((await call('GET', '/api/v1/webhooks?status=disabled')).body['webhooks']).to.satisfy((l: Body[]) => l.some((w) => w['id'] === id));
    void watcher;
  });

  it('never follows a 3xx: the redirect is a failed attempt; replay sends the same delivery again', async () => {
    replies.set('/moved', () => ({ status: 302, headers: { location: `${receiver.url}/target` }, body: '' }));
    const { id } = await create('/moved', { filters: { topics: [`${T}/palletizer/#`] }, batch: { max_size: 1 }, retry_config: { schedule_s: [] } });
    await publish(mqtt, `${T}/palletizer/speed`, JSON.stringify({ value: 12 }));
    const dead = await waitFor(async () => (await deliveries(id, '?status=dead'))[0], 10_000, 'dead delivery');
    expect(dead).to.include({ response_code: 302, dead_reason: 'schedule', attempts: 1 });
    expect(receiver.on('/target')).to.have.length(0);
    const firstId = receiver.on('/moved')[0]?.id;

    replies.set('/moved', () => ({ status: 204 }));
    const rp = await call('POST', `/api/v1/webhooks/${id}/deliveries/${String(dead['id'])}/replay`);
    expect(rp.status).to.equal(202);
    await waitFor(async () => (await deliveries(id, '?status=succeeded')).length === 1, 10_000, 'replayed delivery');
    expect(receiver.on('/moved').map((r) => r.id)).to.deep.equal([firstId, firstId]);

    // Bulk replay of everything dead since a time.
    replies.set('/moved', () => ({ status: 307, headers: { location: '/elsewhere' } }));
    await publish(mqtt, `${T}/palletizer/speed`, JSON.stringify({ value: 13 }));
    await waitFor(async () => (await deliveries(id, '?status=dead')).length === 1, 10_000, 'second dead delivery');
    replies.set('/moved', () => ({ status: 200 }));
    const bulk = await call('POST', `/api/v1/webhooks/${id}/replay`, { since: new Date(Date.now() - 60_000).toISOString() });
    expect(bulk.status).to.equal(202);
    expect(bulk.body['replayed']).to.equal(1);
    await waitFor(async () => (await deliveries(id, '?status=succeeded')).length === 2, 10_000, 'bulk replay');
    expect((await call('POST', `/api/v1/webhooks/${id}/replay`, { since: 'yesterday' })).status).to.equal(400);
  });

  it('a receiver that hangs: the attempt times out and is logged with its error class and next retry', async () => {
    replies.set('/hang', () => 'hang');
    const { id } = await create('/hang', { filters: { topics: [`${T}/washer/#`] }, batch: { max_size: 1 }, retry_config: { schedule_s: [30], timeout_ms: 400 } });
    await publish(mqtt, `${T}/washer/temperature`, JSON.stringify({ value: 60 }));
    const d = await waitFor(async () => (await deliveries(id)).find((x) => x['error_class'] === 'timeout'), 10_000, 'timed-out attempt');
    expect(d).to.include({ status: 'pending', attempts: 1, response_code: null });
    expect(d['latency_ms']).to.be.within(380, 2000);
    // 429/timeouts are penalised: at least 60 s before the next try (retry-policy.ts).
    expect(Date.parse(d['next_attempt_at'] as string) - Date.now()).to.be.greaterThan(50_000);
    const failed = await deliveries(id, '?status=failed');
    expect(failed).to.have.length(1);
  });

  it('ordered mode: one in flight at a time, in order, a failing head holding the rest back', async () => {
    let seen = 0;
    replies.set('/ordered', async (r) => {
      await sleep(30); // time as input: a slow answer, so a second request would overlap if ordering broke
      const v = readingsOf(r)[0]?.value;
      // The second reading fails twice before it is accepted.
      if (v === 2 && seen++ < 2) return { status: 503 };
      return { status: 200 };
    });
    const { id } = await create('/ordered', { filters: { topics: [`${T}/mixer/#`] }, batch: { max_size: 1 }, ordered: true, max_concurrency: 8, retry_config: { schedule_s: [0.3, 0.3, 0.3] } });
    for (const v of [1, 2, 3, 4, 5]) await publish(mqtt, `${T}/mixer/speed`, JSON.stringify({ value: v }));
    await waitFor(async () => (await deliveries(id, '?status=succeeded')).length === 5, 15_000, 'five ordered deliveries');
    const values = receiver.on('/ordered').map((r) => readingsOf(r)[0]?.value);
    expect(values).to.deep.equal([1, 2, 2, 2, 3, 4, 5]);
    expect(receiver.maxConcurrent.get('/ordered')).to.equal(1);
  });

  it('keeps to max_concurrency for an unordered endpoint', async () => {
    // time as input: each answer takes 80 ms, so more than two requests would overlap without the limit
    replies.set('/limited', async () => { await sleep(80); return { status: 200 }; });
    const { id } = await create('/limited', { filters: { topics: [`${T}/filler2/#`] }, batch: { max_size: 1 }, max_concurrency: 2 });
    for (let v = 0; v < 8; v++) await publish(mqtt, `${T}/filler2/speed`, JSON.stringify({ value: v * 10 }));
    await waitFor(async () => (await deliveries(id, '?status=succeeded')).length === 8, 15_000, 'eight deliveries');
    expect(receiver.maxConcurrent.get('/limited')).to.equal(2);
  });

  it('renders a payload template with JSON-escaped values, never evaluating them', async () => {
    const { id } = await create('/templated', {
      filters: { topics: [`${T}/filler/note`] }, batch: { max_size: 1 },
      payload_template: '{"text": "{{topic}} says {{value}}", "raw": {{value}}, "id": "{{event.id}}", "type": "{{event.type}}", "at": "{{timestamp}}", "hook": "{{webhook.name}}"}',
    });
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a literal ${...} is the injection payload under test
    const tricky = 'he said "hi" \\ {{event.id}} </script> ${process.exit()}';
    await publish(mqtt, `${T}/filler/note`, JSON.stringify({ value: tricky }));
    const r = await waitFor(() => receiver.on('/templated')[0], 10_000, 'templated delivery');
    const body = r.json as Body;
    expect(body['raw']).to.equal(tricky);
    expect(body['text']).to.equal(`${T}/filler/note says ${tricky}`);
    expect(body['id']).to.match(/^evt_/);
    expect(body).to.include({ type: 'sensor.reading', hook: '/templated' });
    expect(Date.parse(body['at'] as string)).to.be.greaterThan(0);
    expect(r.standardOk).to.equal(true);
    void id;
  });

  it('deleting a webhook while its delivery is in flight drops that result and holds nothing else up', async () => {
    let release: () => void = () => undefined;
    replies.set('/deleted', () => new Promise((res) => { release = () => res({ status: 200 }); }));
    const { id } = await create('/deleted', { filters: { topics: [`${T}/sorter/#`] }, batch: { max_size: 1 } });
    await publish(mqtt, `${T}/sorter/speed`, JSON.stringify({ value: 5 }));
    await waitFor(() => receiver.on('/deleted').length === 1, 10_000, 'attempt under way');
    expect((await call('DELETE', `/api/v1/webhooks/${id}`)).status).to.equal(204);
    release();
    const next = await create('/after-delete', { filters: { topics: [`${T}/sorter/#`] }, batch: { max_size: 1 } });
    await publish(mqtt, `${T}/sorter/speed`, JSON.stringify({ value: 6 }));
    await waitFor(async () => (await deliveries(next.id, '?status=succeeded')).length === 1, 10_000, 'later delivery settled');
  });

  it('delivers device.online / device.offline for MQTT clients', async () => {
    await create('/devices', { events: ['device.online', 'device.offline'] });
    const c = await connect(server.mqttPort, { clientId: 'line9-plc' });
    c.end(true);
    const got = await waitFor(() => {
      const l = receiver.on('/devices').filter((r) => ((r.json as Body)['data'] as Body)['client_id'] === 'line9-plc');
      return l.length >= 2 ? l : undefined;
    }, 10_000, 'device events');
    expect(got.map((r) => (r.json as Body)['type']).sort()).to.deep.equal(['device.offline', 'device.online']);
    expect(((got[0]?.json as Body | undefined)?.['data'] as Body | undefined)?.['username']).to.equal('admin');
  });
});
