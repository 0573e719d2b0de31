/**
 * Webhooks over real HTTP against a real server: management (CRUD, validation, permissions, secrets shown
 * once, header redaction, rotation), the event catalog, and the synchronous test send received by a real
 * local receiver that verifies the signatures with its own code.
 */
import { expect } from 'chai';
import jwt from 'jsonwebtoken';
import { testConfig, startTestServer, cleanup, ADMIN } from '../helpers/server.js';
import { startReceiver, type Receiver } from '../helpers/webhook-receiver.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';

const JWT_SECRET = 'test-secret-that-is-long-enough-0123456789';
type Body = Record<string, unknown>;

describe('webhooks - management API', function () {
  this.timeout(30_000);
  let config: Config;
  let server: RunningServer;
  let receiver: Receiver;
  let base: string;
  let admin: string;
  const analyst = jwt.sign({ sub: 'ana', roles: ['analyst'] }, JWT_SECRET, { algorithm: 'HS256', expiresIn: 600 });

  async function call(method: string, path: string, body?: unknown, token = admin): Promise<{ status: number; body: Body }> {
    const res = await fetch(`${base}${path}`, {
      method, headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as Body) : {} };
  }
  const code = (b: Body): unknown => (b['error'] as { code?: string } | undefined)?.code;
  const hook = (over: Body = {}): Body => ({ name: 'line1 alerts', url: `${receiver.url}/hook`, events: ['sensor.threshold_exceeded'], ...over });

  before(async () => {
    receiver = await startReceiver();
    config = testConfig(null, { webhooks: { allowlist: '127.0.0.1/32', pollIntervalMs: 100 } });
    server = await startTestServer(config);
    base = `http://127.0.0.1:${server.httpPort}`;
    const r = await fetch(`${base}/api/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ADMIN) });
    admin = ((await r.json()) as Body)['access_token'] as string;
  });
  after(async () => {
    await server?.stop();
    await receiver?.close();
    if (config) cleanup(config);
  });

  it('creates a webhook, shows a generated whsec_ secret once, and redacts auth-like headers', async () => {
    const c = await call('POST', '/api/v1/webhooks', hook({
      description: 'for the SCADA team', headers: { Authorization: 'Bearer s3cr3t', 'X-Api-Key': 'k-123', 'X-Site': 'plant1' },
      filters: { topics: ['acme/plant1/#'], conditions: [{ field: 'value', operator: '>', value: 100 }] },
      retry_config: { max_retries: 3, retry_delay: 1000, backoff_multiplier: 2 },
    }));
    expect(c.status).to.equal(201);
    expect(c.body['secret']).to.match(/^whsec_[A-Za-z0-9+/]{43}=$/);
    expect(c.body['headers']).to.deep.equal({ Authorization: '[redacted]', 'X-Api-Key': '[redacted]', 'X-Site': 'plant1' });
    expect(c.body['retry_config']).to.deep.equal({ schedule_s: [1, 2, 4], timeout_ms: 10000 });
    expect((c.body['filters'] as Body)['conditions']).to.deep.equal([{ field: 'value', operator: 'gt', value: 100 }]);
    expect(c.body).to.include({ is_active: true, owner: 'admin', ordered: false, max_concurrency: 4 });
    const id = c.body['id'] as string;

    const got = await call('GET', `/api/v1/webhooks/${id}`);
    expect(got.status).to.equal(200);
    expect(got.body['secret']).to.equal(undefined);
    expect(JSON.stringify(got.body)).not.to.contain(c.body['secret'] as string).and.not.to.contain('s3cr3t').and.not.to.contain('k-123');
    expect(got.body['secrets']).to.deep.equal({ active: 1, previous_expires_at: null });

    const list = await call('GET', '/api/v1/webhooks?status=active&event=sensor.threshold_exceeded');
    expect(list.status).to.equal(200);
    expect((list.body['webhooks'] as Body[]).map((w) => w['id'])).to.include(id);
    expect(JSON.stringify(list.body)).not.to.contain('s3cr3t');
    const none = await call('GET', '/api/v1/webhooks?event=device.online');
    expect((none.body['webhooks'] as Body[]).map((w) => w['id'])).not.to.include(id);
  });

  it('keeps a redacted header value sent back on update, and replaces the rest (PUT) or merges (PATCH)', async () => {
    const c = await call('POST', '/api/v1/webhooks', hook({ headers: { Authorization: 'Bearer keep-me' } }));
    const id = c.body['id'] as string;
    const got = await call('GET', `/api/v1/webhooks/${id}`);
    const put = await call('PUT', `/api/v1/webhooks/${id}`, { name: 'renamed', url: got.body['url'], events: ['sensor.threshold_exceeded', 'sensor.threshold_cleared'], headers: got.body['headers'] });
    expect(put.status).to.equal(200);
    expect(put.body).to.include({ name: 'renamed', description: null });
    const patch = await call('PATCH', `/api/v1/webhooks/${id}`, { description: 'patched', batch: { max_size: 10 } });
    expect(patch.status).to.equal(200);
    expect(patch.body).to.include({ name: 'renamed', description: 'patched' });
    expect(patch.body['batch']).to.deep.equal({ max_size: 10, max_linger_ms: 250 });
    // The stored value survived both updates: the test send carries it.
    receiver.reply = () => ({ status: 200, body: 'ok' });
    const t = await call('POST', `/api/v1/webhooks/${id}/test`, {});
    expect(t.body['status']).to.equal('success');
    expect(receiver.received.at(-1)?.headers['authorization']).to.equal('Bearer keep-me');
  });

  it('deletes a webhook (then 404), and hides other owners\' webhooks behind 404', async () => {
    const c = await call('POST', '/api/v1/webhooks', hook());
    const id = c.body['id'] as string;
    expect((await call('GET', `/api/v1/webhooks/${id}`, undefined, analyst)).status).to.equal(404);
    expect((await call('DELETE', `/api/v1/webhooks/${id}`, undefined, analyst)).status).to.equal(404);
    expect((await call('DELETE', `/api/v1/webhooks/${id}`)).status).to.equal(204);
    expect((await call('GET', `/api/v1/webhooks/${id}`)).status).to.equal(404);
    expect((await call('GET', '/api/v1/webhooks/not-a-uuid')).status).to.equal(404);
  });

  for (const [what, over, status, errorCode] of [
    ['a missing url', { url: undefined }, 400, 'UNS_ERR_BAD_REQUEST'],
    ['an unknown field', { colour: 'red' }, 400, 'UNS_ERR_BAD_REQUEST'],
    ['an unknown event type', { events: ['order.created'] }, 400, 'UNS_ERR_BAD_REQUEST'],
    ['a non-http(s) URL', { url: 'ftp://127.0.0.1/x' }, 400, 'UNS_ERR_WEBHOOK_URL_REFUSED'],
    ['a link-local URL (cloud metadata)', { url: 'http://169.254.169.254/latest/meta-data' }, 400, 'UNS_ERR_WEBHOOK_URL_REFUSED'],
    ['a private URL not allow-listed', { url: 'http://10.1.2.3/hook' }, 400, 'UNS_ERR_WEBHOOK_URL_REFUSED'],
    ['localhost', { url: 'http://localhost:9/hook' }, 400, 'UNS_ERR_WEBHOOK_URL_REFUSED'],
    ['loopback outside the allowlist', { url: 'http://127.0.0.2/hook' }, 400, 'UNS_ERR_WEBHOOK_URL_REFUSED'],
    ['credentials in the URL', { url: 'http://user:pw@127.0.0.1/hook' }, 400, 'UNS_ERR_WEBHOOK_URL_REFUSED'],
    ['a malformed topic filter', { filters: { topics: ['acme/#/x'] } }, 400, 'UNS_ERR_FILTER_INVALID'],
    ['a bad condition operator', { filters: { conditions: [{ field: 'value', operator: '=~', value: 1 }] } }, 400, 'UNS_ERR_BAD_REQUEST'],
    ['a numeric comparison with a string', { filters: { conditions: [{ field: 'value', operator: 'gt', value: 'high' }] } }, 400, 'UNS_ERR_BAD_REQUEST'],
    ['a reserved header', { headers: { 'webhook-id': 'x' } }, 400, 'UNS_ERR_BAD_REQUEST'],
    ['a header value with CR/LF', { headers: { 'X-A': 'a\r\nX-Injected: 1' } }, 400, 'UNS_ERR_BAD_REQUEST'],
    ['a malformed secret', { secret: 'whsec_tooshort' }, 400, 'UNS_ERR_BAD_REQUEST'],
    ['an expression in a template', { payload_template: '{"c": "{{alert.severity == \'critical\' ? \'danger\' : \'warning\'}}"}' }, 400, 'UNS_ERR_WEBHOOK_TEMPLATE_INVALID'],
    ['a template that is not JSON', { payload_template: '{"t": {{topic}' }, 400, 'UNS_ERR_WEBHOOK_TEMPLATE_INVALID'],
    ['an unknown placeholder', { payload_template: '{"u": "{{user.email}}"}' }, 400, 'UNS_ERR_WEBHOOK_TEMPLATE_INVALID'],
    ['a zero max_concurrency', { max_concurrency: 0 }, 400, 'UNS_ERR_BAD_REQUEST'],
  ] as const) {
    it(`refuses ${what} with ${status} ${errorCode}`, async () => {
      const body = hook(over as Body);
      for (const [k, v] of Object.entries(over)) if (v === undefined) delete body[k];
      const r = await call('POST', '/api/v1/webhooks', body);
      expect(r.status, JSON.stringify(r.body)).to.equal(status);
      expect(code(r.body)).to.equal(errorCode);
    });
  }

  it('refuses topic filters outside the owner\'s read permissions with 403', async () => {
    const r = await call('POST', '/api/v1/webhooks', hook({ filters: { topics: ['spBv1.0/#'] } }), analyst);
    expect(r.status).to.equal(403);
    expect(code(r.body)).to.equal('UNS_ERR_FORBIDDEN');
    // '#' would also cover $-free topics outside acme/: refused too.
    expect((await call('POST', '/api/v1/webhooks', hook({ filters: { topics: ['#'] } }), analyst)).status).to.equal(403);
    // Broker events need $SYS/# read permission.
    const dev = await call('POST', '/api/v1/webhooks', hook({ events: ['device.online'] }), analyst);
    expect(dev.status).to.equal(403);
    const ok = await call('POST', '/api/v1/webhooks', hook({ filters: { topics: ['acme/plant1/+/line1/#'] } }), analyst);
    expect(ok.status).to.equal(201);
    expect(ok.body['owner']).to.equal('ana');
    // Nor can an update widen them.
    const widen = await call('PATCH', `/api/v1/webhooks/${String(ok.body['id'])}`, { filters: { topics: ['spBv1.0/+/NDATA/#'] } }, analyst);
    expect(widen.status).to.equal(403);
    // The analyst lists only their own.
    const mine = await call('GET', '/api/v1/webhooks', undefined, analyst);
    expect((mine.body['webhooks'] as Body[]).every((w) => w['owner'] === 'ana')).to.equal(true);
  });

  it('serves the event catalog with a JSON Schema and an example per type', async () => {
    const r = await call('GET', '/api/v1/webhooks/events');
    expect(r.status).to.equal(200);
    const events = r.body['events'] as Body[];
    expect(events.map((e) => e['name'])).to.deep.equal([
      'sensor.reading', 'sensor.threshold_exceeded', 'sensor.threshold_cleared', 'device.online', 'device.offline', 'system.health_changed', 'webhook.test',
    ]);
    for (const e of events) {
      expect(e['payload_schema']).to.be.an('object');
      expect(e['example_payload']).to.be.an('object');
    }
    expect(r.body['envelope_schema']).to.have.property('required');
    const one = await call('GET', '/api/v1/webhooks/events/sensor.reading');
    expect(one.body).to.include({ name: 'sensor.reading', batched: true });
    expect(one.body['example_delivery']).to.have.nested.property('data.readings');
    expect((await call('GET', '/api/v1/webhooks/events/order.created')).status).to.equal(404);
  });

  it('test send: delivers webhook.test synchronously, verifiable by the receiver, and returns the headers sent', async () => {
    const c = await call('POST', '/api/v1/webhooks', hook({ url: `${receiver.url}/test-send`, headers: { 'X-Api-Key': 'abc', 'X-Plant': 'p1' } }));
    const id = c.body['id'] as string;
    receiver.secrets = [c.body['secret'] as string];
    receiver.reply = (q) => (q.path === '/test-send' ? { status: 202, body: 'accepted!' } : { status: 200 });
    const t = await call('POST', `/api/v1/webhooks/${id}/test`, { payload: { note: 'hello' } });
    expect(t.status).to.equal(200);
    expect(t.body).to.include({ status: 'success', response_code: 202, response_body: 'accepted!', error_class: null });
    const sent = t.body['headers_sent'] as Record<string, string>;
    expect(sent['webhook-id']).to.equal(t.body['delivery_id']);
    expect(sent['webhook-signature']).to.match(/^v1,[A-Za-z0-9+/]+=*$/);
    expect(sent['x-webhook-signature']).to.match(/^sha256=[0-9a-f]{64}$/);
    expect(sent['X-Api-Key']).to.equal('[redacted]');
    expect(sent['X-Plant']).to.equal('p1');
    expect(JSON.stringify(t.body)).not.to.contain(c.body['secret'] as string);
    expect(t.body['body_sent']).to.deep.include({ type: 'webhook.test' });
    expect((t.body['body_sent'] as Body)['data']).to.include({ note: 'hello', webhook_id: id });

    const got = receiver.on('/test-send').at(-1);
    expect(got?.standardOk, 'Standard Webhooks signature').to.equal(true);
    expect(got?.simpleOk, 'X-Webhook-Signature').to.equal(true);
    expect(got?.headers['x-api-key']).to.equal('abc');
    expect(Math.abs(Number(got?.headers['webhook-timestamp']) - Date.now() / 1000)).to.be.lessThan(5);

    // It is in the delivery log, with its attempt.
    const d = await call('GET', `/api/v1/webhooks/${id}/deliveries/${String(t.body['delivery_id'])}`);
    expect(d.status).to.equal(200);
    expect(d.body['delivery']).to.include({ status: 'succeeded', event_type: 'webhook.test', attempts: 1 });
    expect((d.body['attempts'] as Body[])[0]).to.include({ attempt: 1, response_code: 202, outcome: 'success' });
    // A real attempt: the endpoint's last success is now.
    const w = await call('GET', `/api/v1/webhooks/${id}`);
    expect(Date.now() - Date.parse(String((w.body['health'] as Body)['last_success_at']))).to.be.within(0, 10_000);
  });

  it('test send answered 410 Gone disables the endpoint, as any 410 does', async () => {
    const c = await call('POST', '/api/v1/webhooks', hook({ url: `${receiver.url}/gone-test` }));
    const id = c.body['id'] as string;
    receiver.reply = (q) => (q.path === '/gone-test' ? { status: 410 } : { status: 200 });
    const t = await call('POST', `/api/v1/webhooks/${id}/test`);
    expect(t.body).to.include({ status: 'failed', response_code: 410 });
    const w = await call('GET', `/api/v1/webhooks/${id}`);
    expect(w.body).to.include({ is_active: false, disabled_reason: 'gone' });
    const d = await call('GET', `/api/v1/webhooks/${id}/deliveries/${String(t.body['delivery_id'])}`);
    expect(d.body['delivery']).to.include({ status: 'dead', dead_reason: 'gone' });
  });

  it('test send that fails is dead with its attempt logged as final (no retry is scheduled for it)', async () => {
    const c = await call('POST', '/api/v1/webhooks', hook({ url: `${receiver.url}/fail-test` }));
    const id = c.body['id'] as string;
    receiver.reply = (q) => (q.path === '/fail-test' ? { status: 500 } : { status: 200 });
    const t = await call('POST', `/api/v1/webhooks/${id}/test`);
    const d = await call('GET', `/api/v1/webhooks/${id}/deliveries/${String(t.body['delivery_id'])}`);
    expect(d.body['delivery']).to.include({ status: 'dead', dead_reason: 'schedule' });
    expect((d.body['attempts'] as Body[])[0]).to.include({ response_code: 500, outcome: 'final', next_retry_at: null });
  });

  it('rotation: the new secret is shown once and both secrets sign for the grace period', async () => {
    const c = await call('POST', '/api/v1/webhooks', hook({ url: `${receiver.url}/rotate` }));
    const id = c.body['id'] as string;
    const oldSecret = c.body['secret'] as string;
    const rot = await call('POST', `/api/v1/webhooks/${id}/rotate-secret`, {});
    expect(rot.status).to.equal(200);
    const newSecret = rot.body['secret'] as string;
    expect(newSecret).to.match(/^whsec_/).and.not.equal(oldSecret);
    expect((rot.body['secrets'] as Body)['active']).to.equal(2);
    const expires = Date.parse((rot.body['secrets'] as Body)['previous_expires_at'] as string);
    expect(expires - Date.now()).to.be.within(86_400_000 - 60_000, 86_400_000 + 1000);
    receiver.secrets = [oldSecret, newSecret];
    const t = await call('POST', `/api/v1/webhooks/${id}/test`);
    expect(t.body['status']).to.equal('success');
    const got = receiver.on('/rotate').at(-1);
    expect(String(got?.headers['webhook-signature']).split(' ')).to.have.length(2);
    expect(got?.verifiedWith).to.deep.equal([0, 1]);
    // X-Webhook-Signature uses the newest secret.
    receiver.secrets = [newSecret];
    const t2 = await call('POST', `/api/v1/webhooks/${id}/test`);
    expect(t2.body['status']).to.equal('success');
    expect(receiver.on('/rotate').at(-1)?.simpleOk).to.equal(true);
    // A secret given through PATCH rotates too.
    const given = `whsec_${Buffer.alloc(32, 7).toString('base64')}`;
    const p = await call('PATCH', `/api/v1/webhooks/${id}`, { secret: given });
    expect(p.body['secret']).to.equal(given);
    expect((p.body['secrets'] as Body)['active']).to.equal(3);
  });

  it('test send to a receiver that fails reports the failure and the error class', async () => {
    const c = await call('POST', '/api/v1/webhooks', hook({ url: 'http://127.0.0.1:9/closed', retry_config: { timeout_ms: 1000 } }));
    const t = await call('POST', `/api/v1/webhooks/${String(c.body['id'])}/test`);
    expect(t.status).to.equal(200);
    expect(t.body).to.include({ status: 'failed', response_code: null, error_class: 'connect' });
  });

  it('documents every webhook endpoint in the OpenAPI document', async () => {
    const r = await fetch(`${base}/api/v1/openapi.json`);
    const doc = (await r.json()) as { paths: Record<string, unknown> };
    for (const p of ['/api/v1/webhooks', '/api/v1/webhooks/events', '/api/v1/webhooks/{id}', '/api/v1/webhooks/{id}/test', '/api/v1/webhooks/{id}/deliveries',
      '/api/v1/webhooks/{id}/deliveries/{delivery_id}', '/api/v1/webhooks/{id}/deliveries/{delivery_id}/replay', '/api/v1/webhooks/{id}/replay', '/api/v1/webhooks/{id}/stats']) {
      expect(doc.paths, p).to.have.property(p);
    }
  });
});
