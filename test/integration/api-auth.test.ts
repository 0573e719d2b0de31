/**
 * The HTTP API's front door over real HTTP: login, tokens, JWT rules, publish through the MQTT path,
 * metrics and the OpenAPI document.
 */
import { expect } from 'chai';
import jwt from 'jsonwebtoken';
import { query } from '../helpers/postgres.js';
import { testConfig, startTestServer, connect, cleanup, ADMIN } from '../helpers/server.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';

const SECRET = 'test-secret-that-is-long-enough-0123456789';

describe('api - auth, tokens, publish, metrics', function () {
  this.timeout(60_000);
  let config: Config;
  let server: RunningServer;
  let base: string;
  let adminToken: string;

  async function call(method: string, path: string, opts: { token?: string; body?: unknown; raw?: string; type?: string } = {}): Promise<{ status: number; body: Record<string, unknown>; headers: Headers }> {
    const headers: Record<string, string> = {};
    if (opts.token) headers['authorization'] = `Bearer ${opts.token}`;
    let body: string | undefined;
    if (opts.raw !== undefined) { body = opts.raw; headers['content-type'] = opts.type ?? 'application/json'; }
    else if (opts.body !== undefined) { body = JSON.stringify(opts.body); headers['content-type'] = 'application/json'; }
    const res = await fetch(`${base}${path}`, { method, headers, ...(body !== undefined ? { body } : {}) });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as Record<string, unknown>) : {}, headers: res.headers };
  }
  const code = (b: Record<string, unknown>): unknown => (b['error'] as { code?: string } | undefined)?.code;
  const sign = (claims: object, opts: jwt.SignOptions = {}, key = SECRET): string => jwt.sign(claims, key, { algorithm: 'HS256', ...opts });

  before(async () => {
    config = testConfig(null);
    server = await startTestServer(config);
    base = `http://127.0.0.1:${server.httpPort}`;
    const r = await call('POST', '/api/v1/auth/login', { body: { username: ADMIN.username, password: ADMIN.password } });
    expect(r.status).to.equal(200);
    adminToken = r.body['access_token'] as string;
  });
  after(async () => {
    await server?.stop();
    cleanup(config);
  });

  describe('login', () => {
    it('returns a bearer JWT that names the user and roles', async () => {
      const me = await call('GET', '/api/v1/auth/me', { token: adminToken });
      expect(me.status).to.equal(200);
      expect(me.body).to.include({ username: 'admin', via: 'jwt' });
      expect(me.body['roles']).to.deep.equal(['admin']);
    });

    it('refuses a bad password with 401 UNS_ERR_UNAUTHENTICATED', async () => {
      const r = await call('POST', '/api/v1/auth/login', { body: { username: 'admin', password: 'nope-nope' } });
      expect(r.status).to.equal(401);
      expect(code(r.body)).to.equal('UNS_ERR_UNAUTHENTICATED');
    });

    it('refuses a malformed body with 400 UNS_ERR_BAD_REQUEST', async () => {
      expect(code((await call('POST', '/api/v1/auth/login', { body: { username: 'admin' } })).body)).to.equal('UNS_ERR_BAD_REQUEST');
      expect(code((await call('POST', '/api/v1/auth/login', { raw: '{"username":' })).body)).to.equal('UNS_ERR_BAD_REQUEST');
    });

    it('refuses an oversized body with 413 UNS_ERR_BODY_TOO_LARGE', async () => {
      const r = await call('POST', '/api/v1/auth/login', { body: { username: 'admin', password: 'x'.repeat(2 * 1024 * 1024) } });
      expect(r.status).to.equal(413);
      expect(code(r.body)).to.equal('UNS_ERR_BODY_TOO_LARGE');
    });

    it('rate-limits repeated failures with 429 and Retry-After', async () => {
      let last = { status: 0, body: {} as Record<string, unknown>, headers: new Headers() };
      for (let i = 0; i < 11; i++) last = await call('POST', '/api/v1/auth/login', { body: { username: 'ghost', password: 'wrong-password' } });
      expect(last.status).to.equal(429);
      expect(code(last.body)).to.equal('UNS_ERR_RATE_LIMITED');
      expect(Number(last.headers.get('retry-after'))).to.be.greaterThan(0);
    });
  });

  describe('bearer tokens', () => {
    for (const [what, token] of [
      ['a missing token', undefined],
      ['a garbage token', 'garbage'],
      ['an expired JWT', () => sign({ sub: 'admin', roles: ['admin'], exp: Math.floor(Date.now() / 1000) - 60 })],
      ['a not-yet-valid JWT', () => sign({ sub: 'admin', roles: ['admin'] }, { expiresIn: 3600, notBefore: 600 })],
      ['a JWT without exp', () => sign({ sub: 'admin', roles: ['admin'] })],
      ['a JWT good for ten years (beyond auth.jwtMaxLifetimeS)', () => sign({ sub: 'admin', roles: ['admin'] }, { expiresIn: 10 * 365 * 86_400 })],
      // As on MQTT: a token that grants no role the namespace knows is refused, not let in with no permissions.
      ['a JWT granting only an unknown role', () => sign({ sub: 'admin', roles: ['superuser'] }, { expiresIn: 600 })],
      ['a JWT signed with another key', () => sign({ sub: 'admin', roles: ['admin'] }, { expiresIn: 600 }, 'another-key-that-is-also-long-enough-000')],
      ['an alg=none JWT', () => `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from(JSON.stringify({ sub: 'admin', roles: ['admin'], exp: Math.floor(Date.now() / 1000) + 600 })).toString('base64url')}.`],
      ['an unknown API token', 'uns_aaaaaaaaaaaa_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'],
    ] as const) {
      it(`answers ${what} with 401 UNS_ERR_UNAUTHENTICATED`, async () => {
        const t = typeof token === 'function' ? token() : token;
        const r = await call('GET', '/api/v1/auth/me', t === undefined ? {} : { token: t });
        expect(r.status).to.equal(401);
        expect(code(r.body)).to.equal('UNS_ERR_UNAUTHENTICATED');
      });
    }

    it('creates an API token shown once, lists it without its secret, and revokes it', async () => {
      const created = await call('POST', '/api/v1/tokens', { token: adminToken, body: { name: 'historian', roles: ['admin'] } });
      expect(created.status).to.equal(201);
      const token = created.body['token'] as string;
      expect(token).to.match(/^uns_/);
      const me = await call('GET', '/api/v1/auth/me', { token });
      expect(me.body).to.include({ username: 'admin', via: 'api-token' });
      const list = await call('GET', '/api/v1/tokens', { token: adminToken });
      const listed = (list.body['tokens'] as Array<Record<string, unknown>>).find((t) => t['id'] === created.body['id']);
      expect(listed).to.include({ name: 'historian' });
      // The secret is the 43 characters after `uns_<id>_` (base64url: it may hold '_' itself).
      const secret = token.slice('uns_'.length + 12 + 1);
      expect(secret).to.have.length(43);
      expect(JSON.stringify(list.body)).not.to.contain(secret);
      expect((await call('DELETE', `/api/v1/tokens/${String(created.body['id'])}`, { token: adminToken })).status).to.equal(204);
      expect((await call('GET', '/api/v1/auth/me', { token })).status).to.equal(401);
    });

    it('refuses a token with roles beyond the creator\'s (403)', async () => {
      const analyst = sign({ sub: 'ana', roles: ['analyst'] }, { expiresIn: 600 });
      const r = await call('POST', '/api/v1/tokens', { token: analyst, body: { name: 'x', roles: ['admin'] } });
      expect(r.status).to.equal(403);
      expect(code(r.body)).to.equal('UNS_ERR_FORBIDDEN');
    });

    it('lets a login JWT authenticate on MQTT too', async () => {
      const c = await connect(server.mqttPort, { username: 'admin', password: adminToken });
      expect(c.connected).to.equal(true);
      c.end(true);
    });
  });

  describe('publish', () => {
    const topic = 'acme/plant1/packaging/line2/capper/temperature';

    it('stores a message and answers 202 only once durable, delivering it to MQTT subscribers', async () => {
      const sub = await connect(server.mqttPort);
      const got = new Promise<string>((res) => sub.on('message', (_t, p) => res(p.toString())));
      await new Promise<void>((res) => sub.subscribe(topic, { qos: 1 }, () => res()));
      const r = await call('POST', `/api/v1/publish?topic=${encodeURIComponent(topic)}`, { token: adminToken, body: { value: 64.5 } });
      expect(r.status).to.equal(202);
      const rows = await query(server.databaseUrl, 'SELECT s.v_num FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name = $1', [topic]);
      expect(rows.map((x) => x['v_num'])).to.deep.equal([64.5]);
      expect(JSON.parse(await got)).to.deep.equal({ value: 64.5 });
      sub.end(true);
    });

    it('answers a schema violation with 400 and the pipeline code, storing nothing', async () => {
      const r = await call('POST', `/api/v1/publish?topic=${encodeURIComponent(topic)}`, { token: adminToken, body: { value: 'hot' } });
      expect(r.status).to.equal(400);
      expect((r.body['error'] as { details: { code: string } }).details.code).to.equal('UNS_ERR_SCHEMA_VIOLATION');
      const rej = await query(server.databaseUrl, 'SELECT code FROM rejections WHERE topic = $1', [topic]);
      expect(rej.map((x) => x['code'])).to.deep.equal(['UNS_ERR_SCHEMA_VIOLATION']);
    });

    it('refuses a topic outside the write permissions with 403', async () => {
      const analyst = sign({ sub: 'ana', roles: ['analyst'] }, { expiresIn: 600 });
      const r = await call('POST', `/api/v1/publish?topic=${encodeURIComponent(topic)}`, { token: analyst, body: { value: 1 } });
      expect(r.status).to.equal(403);
      // The same code as an MQTT publish outside the role's permissions.
      expect(code(r.body)).to.equal('UNS_ERR_NOT_AUTHORIZED');
    });

    it('refuses $ topics, malformed topics and a missing topic, with the codes MQTT uses', async () => {
      const reserved = await call('POST', '/api/v1/publish?topic=%24SYS%2Fx', { token: adminToken, body: { value: 1 } });
      expect(reserved.status).to.equal(403);
      expect(code(reserved.body)).to.equal('UNS_ERR_TOPIC_RESERVED');
      const wild = await call('POST', `/api/v1/publish?topic=${encodeURIComponent('acme/+/x')}`, { token: adminToken, body: { value: 1 } });
      expect(wild.status).to.equal(400);
      expect(code(wild.body)).to.equal('UNS_ERR_TOPIC_INVALID');
      expect(code((await call('POST', '/api/v1/publish', { token: adminToken, body: { value: 1 } })).body)).to.equal('UNS_ERR_BAD_REQUEST');
    });
  });

  describe('documents', () => {
    it('serves Prometheus metrics with ingest counters', async () => {
      const res = await fetch(`${base}/metrics`);
      const text = await res.text();
      expect(res.status).to.equal(200);
      expect(text).to.match(/^uns_ingest_accepted_total \d+/m);
      expect(text).to.match(/^uns_ingest_rejected_total\{code="UNS_ERR_SCHEMA_VIOLATION"\} [1-9]/m);
      expect(text).to.contain('uns_store_flush_seconds_bucket');
    });

    it('serves an OpenAPI 3.1 document naming the endpoints', async () => {
      const r = await call('GET', '/api/v1/openapi.json');
      expect(r.body['openapi']).to.equal('3.1.0');
      expect(Object.keys(r.body['paths'] as object)).to.include.members(['/api/v1/auth/login', '/api/v1/tokens', '/api/v1/publish']);
    });

    it('answers unknown endpoints with 404 UNS_ERR_NOT_FOUND', async () => {
      const r = await call('GET', '/api/v1/nope', { token: adminToken });
      expect(r.status).to.equal(404);
      expect(code(r.body)).to.equal('UNS_ERR_NOT_FOUND');
    });
  });
});
