/** Runs `uns-bridge start` as a child process, for tests that must kill it (kill -9) and start it again. */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { packageRoot } from '../../src/core/paths.js';
import { freePort } from './postgres.js';
import { ADMIN, waitFor } from './server.js';

export interface ChildServer {
  readonly pid: number;
  readonly mqttPort: number;
  readonly httpPort: number;
  readonly output: () => string;
  kill(signal: NodeJS.Signals): Promise<void>;
}

export async function spawnServer(opts: { dataDir: string; databaseUrl: string | null; mqttPort?: number; httpPort?: number; env?: Record<string, string> }): Promise<ChildServer> {
  const mqttPort = opts.mqttPort ?? (await freePort());
  const httpPort = opts.httpPort ?? (await freePort());
  const env: Record<string, string> = {
    PATH: process.env['PATH'] ?? '',
    UNS_MQTT_HOST: '127.0.0.1', UNS_HTTP_HOST: '127.0.0.1', UNS_MQTT_PORT: String(mqttPort), UNS_HTTP_PORT: String(httpPort),
    UNS_DATA_DIR: opts.dataDir, UNS_TOPICS: join(packageRoot(), 'topics.yaml'),
    UNS_ADMIN_USER: ADMIN.username, UNS_ADMIN_PASSWORD: ADMIN.password, UNS_LOG_LEVEL: process.env['UNS_TEST_LOG'] ?? 'warn',
    ...(opts.databaseUrl ? { UNS_DATABASE_URL: opts.databaseUrl } : {}),
    ...opts.env,
  };
  const child: ChildProcess = spawn(process.execPath, [join(packageRoot(), 'dist', 'src', 'cli.js'), 'start'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (b: Buffer): void => { out = (out + b.toString()).slice(-20_000); };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  let gone = false;
  void exited.then(() => { gone = true; });
  await waitFor(async () => {
    if (gone) throw new Error(`server exited during start-up:\n${out}`);
    try {
      return (await fetch(`http://127.0.0.1:${httpPort}/health`)).ok;
    } catch {
      return false;
    }
  }, 30_000, 'server start');
  return {
    pid: child.pid ?? 0, mqttPort, httpPort, output: () => out,
    async kill(signal) {
      if (gone) return;
      child.kill(signal);
      await exited;
    },
  };
}
