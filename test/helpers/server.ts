/** Starts uns-bridge in this process on free ports with a temp data dir, against a given database. */
import { mkdtempSync, rmSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import mqtt, { type MqttClient, type IClientOptions } from 'mqtt';
import jwt from 'jsonwebtoken';
import { loadConfig, type Config } from '../../src/core/config.js';
import { silentLogger, createLogger, type Logger } from '../../src/core/log.js';
import { startServer, type RunningServer } from '../../src/main.js';
import { hashPassword } from '../../src/core/passwords.js';
import { packageRoot } from '../../src/core/paths.js';

export const ADMIN = { username: 'admin', password: 'admin-password-1' };
/** The JWT key testConfig gives the server. */
export const TEST_JWT_SECRET = 'test-secret-that-is-long-enough-0123456789';

/** A JWT for a principal with these roles, valid for expInS seconds (negative: already expired). */
export function roleToken(sub: string, roles: readonly string[], expInS = 600): string {
  return jwt.sign({ sub, roles, exp: Math.floor(Date.now() / 1000) + expInS }, TEST_JWT_SECRET, { algorithm: 'HS256' });
}

export function testConfig(databaseUrl: string | null, over: Record<string, unknown> = {}, dataDir?: string): Config {
  const dir = dataDir ?? mkdtempSync(join(tmpdir(), 'uns-test-data-'));
  chmodSync(dir, 0o755); // the embedded PostgreSQL runs as another user when tests run as root
  return loadConfig({}, {
    dataDir: dir,
    topicsFile: join(packageRoot(), 'topics.yaml'),
    mqtt: { host: '127.0.0.1', port: 0 },
    http: { host: '127.0.0.1', port: 0 },
    database: { url: databaseUrl, timescale: 'auto' },
    auth: { adminUser: ADMIN.username, adminPassword: ADMIN.password, jwtSecret: TEST_JWT_SECRET },
    log: { level: process.env['UNS_TEST_LOG'] ?? 'silent' },
    ...over,
  });
}

export async function startTestServer(config: Config): Promise<RunningServer> {
  const log = config.log.level === 'silent' ? silentLogger() : createLogger(config.log.level);
  return startServer(config, log);
}

/** For tests that read what the server logs. */
export async function startServerWithLogger(config: Config, log: Logger): Promise<RunningServer> {
  return startServer(config, log);
}

export function cleanup(config: Config): void {
  rmSync(config.dataDir, { recursive: true, force: true });
}

export async function connect(port: number, opts: IClientOptions = {}): Promise<MqttClient> {
  const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, {
    username: ADMIN.username, password: ADMIN.password, reconnectPeriod: 0, connectTimeout: 5000, ...opts,
  });
  await new Promise<void>((res, rej) => {
    client.once('connect', () => res());
    client.once('error', rej);
    client.once('close', () => rej(new Error('closed before CONNACK')));
  });
  client.removeAllListeners('error');
  client.on('error', () => undefined);
  return client;
}

export function publish(client: MqttClient, topic: string, payload: string | Buffer, opts: { qos?: 0 | 1 | 2; retain?: boolean } = {}): Promise<void> {
  return new Promise((res, rej) => client.publish(topic, payload, { qos: opts.qos ?? 1, retain: opts.retain ?? false }, (e) => (e ? rej(e) : res())));
}

export async function waitFor<T>(fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export { hashPassword };
