/**
 * The webhook HTTP client against real local servers on 127.0.0.1 (port 0). Nothing is ever sent anywhere
 * else: a guard on net.Socket#connect refuses any IP-literal destination other than 127.0.0.1 and records
 * every attempt, so the SSRF tests can assert that no connection was made.
 */
import { expect } from 'chai';
import { createServer } from 'node:http';
import type { IncomingHttpHeaders, Server } from 'node:http';
import { Socket, isIP } from 'node:net';
import type { AddressInfo } from 'node:net';
import type { LookupAddress } from 'node:dns';
import { deliver, checkDestination } from '../../bridge/sinks/webhooks/http-client.js';
import type { DeliveryRequest, DeliveryResult, Resolver } from '../../bridge/sinks/webhooks/http-client.js';
import { parseAllowlist, EMPTY_ALLOWLIST } from '../../bridge/sinks/webhooks/ssrf.js';
import { signSimple, signStandard, verifySimple, verifyStandard } from '../../bridge/sinks/webhooks/signing.js';
import { classify } from '../../bridge/sinks/webhooks/retry-policy.js';

const LOOPBACK = parseAllowlist('127.0.0.1/32');

interface Received {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

interface TestServer {
  port: number;
  connections: number;
  received: Received[];
  close(): Promise<void>;
}

async function startServer(handler: (req: Received, res: import('node:http').ServerResponse) => void): Promise<TestServer> {
  const state: TestServer = { port: 0, connections: 0, received: [], close: async () => undefined };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const r: Received = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks) };
      state.received.push(r);
      handler(r, res);
    });
  });
  server.on('connection', () => {
    state.connections++;
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  state.port = (server.address() as AddressInfo).port;
  state.close = () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    });
  return state;
}

function request(url: string, over: Partial<DeliveryRequest> = {}): DeliveryRequest {
  return { url, method: 'POST', headers: { 'content-type': 'application/json' }, body: Buffer.from('{"value":21.5}'), timeoutMs: 2000, maxResponseBytes: 4096, ...over };
}

function resolverOf(...answers: string[][]): Resolver & { calls: string[] } {
  const calls: string[] = [];
  const fn = async (hostname: string): Promise<LookupAddress[]> => {
    calls.push(hostname);
    const a = answers[Math.min(calls.length - 1, answers.length - 1)] ?? [];
    return a.map((address) => ({ address, family: isIP(address) }));
  };
  return Object.assign(fn, { calls });
}

/**
 * Record the host of every net.Socket#connect (http and https both end there) and refuse any IP literal
 * other than 127.0.0.1, so a regression can never send test traffic anywhere. Returns the undo function.
 */
function installConnectGuard(attempts: string[]): () => void {
  const original = Socket.prototype.connect;
  Socket.prototype.connect = function guarded(this: Socket, ...args: unknown[]): Socket {
    const first = args[0];
    const opts = (Array.isArray(first) ? first[0] : first) as { host?: string } | undefined;
    const host = typeof opts === 'object' && opts !== null ? opts.host ?? 'localhost' : String(first);
    attempts.push(host);
    if (isIP(host) !== 0 && host !== '127.0.0.1') {
      process.nextTick(() => this.destroy(new Error(`test guard: refused outbound connection to ${host}`)));
      return this;
    }
    return (original as (...a: unknown[]) => Socket).apply(this, args);
  } as typeof Socket.prototype.connect;
  return () => {
    Socket.prototype.connect = original;
  };
}

function expectError(r: DeliveryResult, errorClass: string): void {
  expect(r.kind, JSON.stringify(r)).to.equal('error');
  if (r.kind === 'error') expect(r.errorClass, r.message).to.equal(errorClass);
}

describe('webhook client - delivery over real HTTP', function () {
  this.timeout(20_000);

  // Outbound guard: record every socket connect; refuse IP literals other than 127.0.0.1 outright.
  const attempts: string[] = [];
  let restore: () => void = () => undefined;
  before(() => {
    restore = installConnectGuard(attempts);
  });
  after(() => restore());
  beforeEach(() => {
    attempts.length = 0;
  });

  let server: TestServer;
  afterEach(async () => {
    await server?.close();
  });

  it('delivers a signed POST and returns the status, headers and body excerpt', async () => {
    server = await startServer((_req, res) => {
      res.setHeader('x-receiver', 'ok');
      res.end('accepted');
    });
    const secret = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
    const body = Buffer.from('{"topic":"acme/plant1/temp","value":21.5}');
    const std = signStandard([secret], 'msg_1', 1_700_000_000, body);
    const r = await deliver(
      request(`http://127.0.0.1:${server.port}/hooks/in?x=1`, { body, headers: { 'content-type': 'application/json', ...std, 'x-webhook-signature': signSimple(secret, body) } }),
      { allowlist: LOOPBACK },
    );
    expect(r).to.deep.include({ kind: 'response', status: 200, bodyExcerpt: 'accepted', truncated: false });
    if (r.kind === 'response') {
      expect(r.headers['x-receiver']).to.equal('ok');
      expect(r.latencyMs).to.be.a('number').and.be.at.least(0);
    }
    expect(classify(r)).to.equal('success');
    const got = server.received[0];
    expect(got?.method).to.equal('POST');
    expect(got?.url).to.equal('/hooks/in?x=1');
    expect(got?.body.equals(body)).to.equal(true);
    expect(got?.headers['content-length']).to.equal(String(body.length));
    expect(verifyStandard([secret], got?.headers ?? {}, got?.body ?? '', 1_700_000_000)).to.deep.equal({ ok: true });
    expect(verifySimple([secret], got?.headers['x-webhook-signature'], got?.body ?? '')).to.deep.equal({ ok: true });
  });

  it('returns a 3xx as a response and does not follow it', async () => {
    server = await startServer((req, res) => {
      if (req.url === '/moved') {
        res.writeHead(307, { location: `http://127.0.0.1:${server.port}/target` });
        res.end();
      } else res.end('target reached');
    });
    const r = await deliver(request(`http://127.0.0.1:${server.port}/moved`), { allowlist: LOOPBACK });
    expect(r).to.deep.include({ kind: 'response', status: 307 });
    expect(server.received.map((x) => x.url)).to.deep.equal(['/moved']);
    expect(classify(r)).to.equal('retry');
  });

  it('times out a hanging endpoint within the budget', async () => {
    server = await startServer(() => undefined); // never answers
    const t0 = performance.now();
    const r = await deliver(request(`http://127.0.0.1:${server.port}/`, { timeoutMs: 300 }), { allowlist: LOOPBACK });
    const took = performance.now() - t0;
    expectError(r, 'timeout');
    expect(took).to.be.at.least(290).and.below(1500);
  });

  it('bounds the response read and drops the connection', async () => {
    server = await startServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      const chunk = Buffer.alloc(64 * 1024, 'a');
      let sent = 0;
      const pump = (): void => {
        while (sent < 64 * 1024 * 1024) {
          sent += chunk.length;
          if (!res.write(chunk)) {
            res.once('drain', pump);
            return;
          }
        }
        res.end();
      };
      res.on('close', () => {
        sent = Infinity;
      });
      pump();
    });
    const t0 = performance.now();
    const r = await deliver(request(`http://127.0.0.1:${server.port}/`, { maxResponseBytes: 1000 }), { allowlist: LOOPBACK });
    expect(r).to.deep.include({ kind: 'response', status: 200, truncated: true });
    if (r.kind === 'response') expect(r.bodyExcerpt).to.equal('a'.repeat(1000));
    expect(performance.now() - t0).to.be.below(1500);
  });

  it('reports a refused connection as connect', async () => {
    server = await startServer(() => undefined);
    const port = server.port;
    await server.close();
    const r = await deliver(request(`http://127.0.0.1:${port}/`), { allowlist: LOOPBACK });
    expectError(r, 'connect');
    expect(classify(r)).to.equal('retry');
  });

  it('reports a TLS failure as tls (https to a plain-HTTP port)', async () => {
    server = await startServer((_req, res) => res.end('plain'));
    const r = await deliver(request(`https://127.0.0.1:${server.port}/`), { allowlist: LOOPBACK });
    expectError(r, 'tls');
  });

  it('reports a failed resolution as dns', async () => {
    const lookup = async (): Promise<LookupAddress[]> => {
      throw Object.assign(new Error('getaddrinfo ENOTFOUND nowhere.invalid'), { code: 'ENOTFOUND' });
    };
    const r = await deliver(request('http://nowhere.invalid/'), { lookup });
    expectError(r, 'dns');
    expect(attempts.every((h) => h === 'nowhere.invalid')).to.equal(true);
  });

  it('connects to the resolved address of an allow-listed host name', async () => {
    server = await startServer((req, res) => res.end(req.headers.host));
    const lookup = resolverOf(['127.0.0.1']);
    const r = await deliver(request(`http://hooks.local:${server.port}/`), { allowlist: parseAllowlist('hooks.local'), lookup });
    expect(r).to.deep.include({ kind: 'response', status: 200, bodyExcerpt: `hooks.local:${server.port}` });
    expect(lookup.calls).to.deep.equal(['hooks.local']);
  });

  it('connects to a name resolving into an allow-listed CIDR', async () => {
    server = await startServer((_req, res) => res.end('ok'));
    const r = await deliver(request(`http://internal.example:${server.port}/`), { allowlist: LOOPBACK, lookup: resolverOf(['127.0.0.1']) });
    expect(r).to.deep.include({ kind: 'response', status: 200 });
  });

  it('refuses invalid URLs without connecting', async () => {
    for (const url of ['ftp://127.0.0.1/', 'not a url', 'http://[::1']) {
      expectError(await deliver(request(url), { allowlist: LOOPBACK }), 'invalid-url');
    }
    expect(attempts).to.deep.equal([]);
  });
});

describe('webhook client - SSRF refusals without any connection attempt', function () {
  this.timeout(20_000);

  const attempts: string[] = [];
  let restore: () => void = () => undefined;
  let server: TestServer;
  before(async () => {
    server = await startServer((_req, res) => res.end('should never be reached'));
    restore = installConnectGuard(attempts);
  });
  after(async () => {
    restore();
    await server.close();
  });
  beforeEach(() => {
    attempts.length = 0;
  });
  afterEach(() => {
    expect(server.connections, 'the local server must never see a connection').to.equal(0);
  });

  const literalUrls = (port: number): string[] => [
    `http://127.0.0.1:${port}/`,
    `http://[::1]:${port}/`,
    'http://169.254.169.254/latest/meta-data/',
    `http://0177.0.0.1:${port}/`,
    `http://2130706433:${port}/`,
    `http://0x7f.1:${port}/`,
    `http://127.1:${port}/`,
    `http://[::ffff:127.0.0.1]:${port}/`,
    'http://10.1.2.3/',
    'http://100.64.0.1/',
    'http://192.168.1.1/',
    'http://[fd00::1]/',
    'https://[::ffff:a9fe:a9fe]/',
  ];

  it('refuses loopback, link-local, private and CGNAT literals in every spelling before creating a socket', async () => {
    const lookup = resolverOf(['127.0.0.1']);
    for (const url of literalUrls(server.port)) {
      const r = await deliver(request(url), { allowlist: EMPTY_ALLOWLIST, lookup });
      expectError(r, 'ssrf-blocked');
      expect(classify(r), url).to.equal('retry');
    }
    expect(attempts, 'no socket was asked to connect').to.deep.equal([]);
    expect(lookup.calls, 'literals are never resolved').to.deep.equal([]);
  });

  it('refuses localhost without resolving it', async () => {
    const lookup = resolverOf(['93.184.216.34']);
    for (const url of [`http://localhost:${server.port}/`, `http://LocalHost.:${server.port}/`, `http://app.localhost:${server.port}/`]) {
      expectError(await deliver(request(url), { lookup }), 'ssrf-blocked');
    }
    expect(lookup.calls).to.deep.equal([]);
    expect(attempts).to.deep.equal([]);
  });

  it('checks the address actually connected to: DNS rebinding after a passing check is blocked', async () => {
    // First answer public (the registration-time check passes), then the connect-time answer is loopback.
    const lookup = resolverOf(['93.184.216.34'], ['127.0.0.1']);
    const url = `http://rebind.example:${server.port}/`;
    expect(await checkDestination(url, { lookup })).to.deep.include({ ok: true });
    const r = await deliver(request(url), { lookup });
    expectError(r, 'ssrf-blocked');
    if (r.kind === 'error') expect(r.blocked).to.deep.equal({ address: '127.0.0.1', class: 'loopback' });
    expect(lookup.calls).to.deep.equal(['rebind.example', 'rebind.example']);
  });

  it('refuses an answer in which any address is blocked', async () => {
    const lookup = resolverOf(['93.184.216.34', '127.0.0.1']);
    const r = await deliver(request(`http://mixed.example:${server.port}/`), { lookup });
    expectError(r, 'ssrf-blocked');
    expect(attempts.filter((h) => isIP(h) !== 0)).to.deep.equal([]);
  });

  it('refuses names that resolve to metadata, private, mapped and NAT64 addresses', async () => {
    for (const addr of ['169.254.169.254', '10.0.0.7', '::ffff:127.0.0.1', '64:ff9b::a9fe:a9fe', 'fe80::1', '::1']) {
      const r = await deliver(request(`http://svc.example:${server.port}/`), { lookup: resolverOf([addr]) });
      expectError(r, 'ssrf-blocked');
    }
    expect(attempts.filter((h) => isIP(h) !== 0)).to.deep.equal([]);
  });

  it('checkDestination refuses a name that resolves privately at registration time', async () => {
    expect(await checkDestination('https://hooks.example/x', { lookup: resolverOf(['192.168.0.10']) })).to.deep.include({ ok: false, errorClass: 'ssrf-blocked' });
    expect(await checkDestination('https://hooks.example/x', { lookup: resolverOf(['192.168.0.10']), allowlist: parseAllowlist('192.168.0.0/16') })).to.deep.include({ ok: true });
  });
});
