/**
 * `node dist/bench/webhooks.js`: outbound webhook throughput and latency.
 *
 * One uns-bridge server (its own process, embedded PostgreSQL, 127.0.0.1 only) with one webhook on
 * sensor.reading (max_size 1: one HTTP POST per reading) pointing at a receiver in this process that checks
 * every Standard Webhooks signature with its own HMAC code. A publisher in this process sends plain-number
 * readings over MQTT (QoS 0) at a steady offered rate.
 *
 *   1. sustained   BENCH_WEBHOOK_RATE readings/s (default 2,500) for BENCH_WEBHOOK_SECONDS (default 10):
 *                  verified deliveries/s received over the window, outbox backlog left at the end, drain time
 *   2. latency     BENCH_WEBHOOK_LATENCY_RATE readings/s (default 200) for 5 s: event -> first attempt
 *                  received, p50/p99 (event time = the reading's server receive time, which is its timestamp)
 *
 * Targets: >= 2,000 signed deliveries/s sustained; event -> first attempt p99 <= 100 ms.
 * The server is stopped by PID (SIGTERM, graceful) at the end, also on failure.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { mkdtempSync, chmodSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt from 'mqtt';
import { Histogram } from './histogram.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const ADMIN = { username: 'admin', password: 'bench-admin-password' };
const TOPIC = 'acme/plant1/packaging/line1/filler/count';
const TARGET = { deliveriesPerS: 2000, firstAttemptP99Ms: 100 };

function intEnv(name: string, dflt: number): number {
  const raw = process.env[name];
  const n = raw === undefined || raw === '' ? dflt : Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name}=${raw ?? ''}: must be a positive integer`);
  return n;
}

const SECONDS = intEnv('BENCH_WEBHOOK_SECONDS', 10);
const RATE = intEnv('BENCH_WEBHOOK_RATE', 2500);
const LATENCY_RATE = intEnv('BENCH_WEBHOOK_LATENCY_RATE', 200);
const CONCURRENCY = intEnv('BENCH_WEBHOOK_CONCURRENCY', 64);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const progress = (msg: string): void => { process.stderr.write(`[webhooks bench] ${msg}\n`); };

async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createNetServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as AddressInfo).port;
      s.close(() => res(port));
    });
  });
}

interface Receiver {
  server: Server;
  port: number;
  secret: string;
  /** First arrival per webhook-id (verified). */
  firsts: number;
  duplicates: number;
  badSignatures: number;
  latency: Histogram | null;
}

function startReceiver(): Promise<Receiver> {
  const seen = new Set<string>();
  const r: Receiver = { server: null as unknown as Server, port: 0, secret: '', firsts: 0, duplicates: 0, badSignatures: 0, latency: null };
  let key = Buffer.alloc(0);
  r.server = createHttpServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const now = Date.now();
      const body = Buffer.concat(chunks);
      if (key.length === 0) key = Buffer.from(r.secret.slice('whsec_'.length), 'base64');
      const id = String(req.headers['webhook-id'] ?? '');
      const mac = createHmac('sha256', key).update(`${id}.${String(req.headers['webhook-timestamp'] ?? '')}.`).update(body).digest();
      const ok = String(req.headers['webhook-signature'] ?? '').split(' ').some((s) => {
        const b = Buffer.from(s.slice(3), 'base64');
        return s.startsWith('v1,') && b.length === mac.length && timingSafeEqual(b, mac);
      });
      if (!ok) { r.badSignatures++; res.writeHead(401).end(); return; }
      if (seen.has(id)) r.duplicates++;
      else {
        seen.add(id);
        r.firsts++;
        if (r.latency !== null) {
          const ts = (JSON.parse(body.toString('utf8')) as { data: { readings: Array<{ timestamp: string }> } }).data.readings[0]?.timestamp;
          if (ts !== undefined) r.latency.record(Math.max(0, now - Date.parse(ts)));
        }
      }
      res.writeHead(204).end();
    });
  });
  return new Promise((res) => r.server.listen(0, '127.0.0.1', () => { r.port = (r.server.address() as AddressInfo).port; res(r); }));
}

async function api(port: number, method: string, path: string, token: string | null, body?: unknown): Promise<Record<string, unknown>> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, {
    method, headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  if (res.status >= 300) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? (JSON.parse(text) as Record<string, unknown>) : {};
}

/** Publishes `rate` messages/s for `seconds`, in 10 ms slices. Returns how many were sent. */
async function offer(client: mqtt.MqttClient, rate: number, seconds: number): Promise<number> {
  const start = Date.now();
  let sent = 0;
  while (Date.now() - start < seconds * 1000) {
    const due = Math.floor(((Date.now() - start) / 1000) * rate);
    while (sent < due) client.publish(TOPIC, String(sent++), { qos: 0 });
    await sleep(10);
  }
  return sent;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'uns-bench-webhooks-'));
  chmodSync(dir, 0o755);
  const [httpPort, mqttPort] = [await freePort(), await freePort()];
  const receiver = await startReceiver();
  let server: ChildProcess | null = null;
  try {
    server = spawn(process.execPath, [join(ROOT, 'dist', 'src', 'cli.js'), 'start'], {
      env: {
        ...process.env, UNS_DATA_DIR: dir, UNS_TOPICS: join(ROOT, 'topics.yaml'), UNS_HTTP_HOST: '127.0.0.1', UNS_HTTP_PORT: String(httpPort),
        UNS_MQTT_HOST: '127.0.0.1', UNS_MQTT_PORT: String(mqttPort), UNS_ADMIN_USER: ADMIN.username, UNS_ADMIN_PASSWORD: ADMIN.password,
        UNS_WEBHOOK_ALLOWLIST: '127.0.0.1/32', UNS_WEBHOOK_WORKERS: String(Math.max(CONCURRENCY, 16)), UNS_WEBHOOK_CLAIM_BATCH: '200', UNS_LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    progress(`server pid ${String(server.pid)}, waiting for /ready`);
    const readyBy = Date.now() + 60_000;
    for (;;) {
      const ok = await fetch(`http://127.0.0.1:${httpPort}/ready`).then((r) => r.status === 200, () => false);
      if (ok) break;
      if (Date.now() > readyBy) throw new Error('server not ready within 60 s');
      await sleep(200);
    }
    const token = (await api(httpPort, 'POST', '/api/v1/auth/login', null, ADMIN))['access_token'] as string;
    const hook = await api(httpPort, 'POST', '/api/v1/webhooks', token, {
      name: 'bench', url: `http://127.0.0.1:${receiver.port}/hook`, events: ['sensor.reading'], filters: { topics: [TOPIC] },
      batch: { max_size: 1 }, max_concurrency: CONCURRENCY, retry_config: { schedule_s: [1, 1, 1], timeout_ms: 5000 },
    });
    receiver.secret = hook['secret'] as string;
    const client = mqtt.connect(`mqtt://127.0.0.1:${mqttPort}`, { username: ADMIN.username, password: ADMIN.password, reconnectPeriod: 0 });
    await new Promise<void>((res, rej) => { client.once('connect', () => res()); client.once('error', rej); });

    // 1. Sustained throughput.
    progress(`sustained: offering ${RATE}/s for ${SECONDS} s (max_concurrency ${CONCURRENCY})`);
    const before = receiver.firsts;
    const t0 = Date.now();
    const offered = await offer(client, RATE, SECONDS);
    const windowS = (Date.now() - t0) / 1000;
    const inWindow = receiver.firsts - before;
    const drainStart = Date.now();
    while (receiver.firsts - before < offered && Date.now() - drainStart < 60_000) await sleep(20);
    const drainS = (Date.now() - drainStart) / 1000;
    const total = receiver.firsts - before;
    const sustained = {
      offeredPerS: Math.round(offered / windowS), deliveredPerS: Math.round(inWindow / windowS), backlogAtEnd: offered - inWindow,
      drainS: Math.round(drainS * 100) / 100, overallPerS: Math.round(total / (windowS + drainS)), delivered: total, offered,
    };

    // 2. Latency at a light steady load.
    await sleep(500);
    receiver.latency = new Histogram();
    progress(`latency: offering ${LATENCY_RATE}/s for 5 s`);
    const l0 = receiver.firsts;
    const lOffered = await offer(client, LATENCY_RATE, 5);
    const lStart = Date.now();
    while (receiver.firsts - l0 < lOffered && Date.now() - lStart < 30_000) await sleep(20);
    const lat = receiver.latency;
    const latency = { count: lat.count, p50Ms: lat.quantile(0.5), p99Ms: lat.quantile(0.99), maxMs: lat.quantile(1) };
    client.end(true);

    const result = {
      sustained, latency, duplicates: receiver.duplicates, badSignatures: receiver.badSignatures,
      targets: {
        deliveriesPerS: { target: TARGET.deliveriesPerS, met: sustained.deliveredPerS >= TARGET.deliveriesPerS && sustained.backlogAtEnd <= sustained.offeredPerS },
        firstAttemptP99Ms: { target: TARGET.firstAttemptP99Ms, met: latency.p99Ms !== null && latency.p99Ms <= TARGET.firstAttemptP99Ms },
      },
    };
    const f = (n: number | null): string => (n === null ? '-' : n.toFixed(1));
    process.stdout.write([
      'webhooks bench (one endpoint, one POST per reading, signatures verified by the receiver)',
      `  sustained  offered ${sustained.offeredPerS}/s for ${windowS.toFixed(1)} s -> delivered ${sustained.deliveredPerS}/s in the window; ` +
        `backlog at end ${sustained.backlogAtEnd}, drained in ${sustained.drainS} s (${sustained.delivered}/${sustained.offered} delivered)   ` +
        `target >= ${TARGET.deliveriesPerS}/s: ${result.targets.deliveriesPerS.met ? 'met' : 'NOT met'}`,
      `  latency    event -> first attempt at ${LATENCY_RATE}/s: p50 ${f(latency.p50Ms)} ms, p99 ${f(latency.p99Ms)} ms, max ${f(latency.maxMs)} ms (${latency.count} deliveries)   ` +
        `target p99 <= ${TARGET.firstAttemptP99Ms} ms: ${result.targets.firstAttemptP99Ms.met ? 'met' : 'NOT met'}`,
      `  duplicates ${receiver.duplicates}, bad signatures ${receiver.badSignatures}`,
      JSON.stringify(result),
      '',
    ].join('\n'));
  } finally {
    if (server?.pid !== undefined && server.exitCode === null) {
      const exited = new Promise((r) => server?.once('exit', r));
      process.kill(server.pid, 'SIGTERM');
      await Promise.race([exited, sleep(15_000)]);
    }
    await new Promise<void>((r) => { receiver.server.closeAllConnections(); receiver.server.close(() => r()); });
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`webhooks bench failed: ${(e as Error).stack ?? String(e)}\n`);
  process.exitCode = 1;
});
