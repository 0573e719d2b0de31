/**
 * A real HTTP receiver on 127.0.0.1 (port 0) for webhook tests. It verifies signatures with its own
 * node:crypto code, written from the Standard Webhooks spec ("Signature scheme": HMAC-SHA256 over
 * `${id}.${timestamp}.${body}` keyed with the base64-decoded part of `whsec_…`) and not with the project's
 * signer, so a bug shared by signer and verifier cannot hide.
 */
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHmac, timingSafeEqual } from 'node:crypto';

export interface Received {
  readonly n: number;
  readonly at: number;
  /** Request path without the query. */
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
  readonly json: unknown;
  readonly id: string;
  /** Some v1 signature in webhook-signature verifies against one of the secrets. */
  readonly standardOk: boolean;
  /** Secrets (by index in `secrets`) that some v1 signature verifies against. */
  readonly verifiedWith: number[];
  /** X-Webhook-Signature verifies against one of the secrets. */
  readonly simpleOk: boolean;
}

export type Reply = { status: number; headers?: Record<string, string>; body?: string } | 'hang';

export interface Receiver {
  readonly url: string;
  readonly port: number;
  readonly received: Received[];
  /** Secrets the receiver verifies against (set after the webhook is created). */
  secrets: string[];
  /** Decides each answer (may wait first); default 200. */
  reply: (r: Received) => Reply | Promise<Reply>;
  /** Most requests per path being answered at the same time. */
  readonly maxConcurrent: Map<string, number>;
  /** Received requests for one path prefix. */
  on(path: string): Received[];
  close(): Promise<void>;
}

function keyOf(secret: string): Buffer {
  return secret.startsWith('whsec_') ? Buffer.from(secret.slice('whsec_'.length), 'base64') : Buffer.from(secret, 'utf8');
}

function header(h: IncomingHttpHeaders, name: string): string {
  const v = h[name];
  return Array.isArray(v) ? (v[0] ?? '') : (v ?? '');
}

function safeEqual(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

export async function startReceiver(): Promise<Receiver> {
  const received: Received[] = [];
  const byPath = new Map<string, Received[]>();
  const hanging = new Set<ServerResponse>();
  let n = 0;
  const concurrent = new Map<string, number>();
  const state: Receiver = {
    url: '', port: 0, received, secrets: [], reply: () => ({ status: 200, body: 'ok' }), maxConcurrent: new Map(),
    on: (path) => byPath.get(path) ?? [],
    close: async () => undefined,
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const id = header(req.headers, 'webhook-id');
      const ts = header(req.headers, 'webhook-timestamp');
      const offered = header(req.headers, 'webhook-signature').split(' ')
        .filter((s) => s.startsWith('v1,')).map((s) => Buffer.from(s.slice(3), 'base64'));
      const verifiedWith: number[] = [];
      state.secrets.forEach((secret, i) => {
        const mac = createHmac('sha256', keyOf(secret)).update(`${id}.${ts}.`).update(body).digest();
        if (offered.some((o) => safeEqual(o, mac))) verifiedWith.push(i);
      });
      const simple = header(req.headers, 'x-webhook-signature');
      const simpleOk = state.secrets.some((secret) => safeEqual(Buffer.from(simple), Buffer.from(`sha256=${createHmac('sha256', keyOf(secret)).update(body).digest('hex')}`)));
      let json: unknown = null;
      try { json = JSON.parse(body.toString('utf8')); } catch { json = null; }
      const path = (req.url ?? '/').split('?')[0] as string;
      const r: Received = { n: ++n, at: Date.now(), path, headers: req.headers, body, json, id, standardOk: verifiedWith.length > 0, verifiedWith, simpleOk };
      received.push(r);
      const list = byPath.get(path) ?? [];
      list.push(r);
      byPath.set(path, list);
      concurrent.set(path, (concurrent.get(path) ?? 0) + 1);
      state.maxConcurrent.set(path, Math.max(state.maxConcurrent.get(path) ?? 0, concurrent.get(path) ?? 0));
      const done = (): void => { concurrent.set(path, (concurrent.get(path) ?? 1) - 1); };
      Promise.resolve(state.reply(r)).then((reply) => {
        if (reply === 'hang') { hanging.add(res); res.on('close', done); return; }
        res.writeHead(reply.status, reply.headers ?? {});
        res.end(reply.body ?? '', done);
      }, () => { res.destroy(); done(); });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  Object.assign(state, {
    url: `http://127.0.0.1:${port}`, port,
    close: () => new Promise<void>((resolve) => {
      for (const r of hanging) r.destroy();
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  });
  return state;
}
