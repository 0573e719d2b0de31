/**
 * One server per data directory: a second `uns-bridge start` on a data dir in use refuses at once, naming
 * the PID that holds it, and never touches the first server's embedded database; a lock left by a killed
 * server is taken over.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync, existsSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnServer, type ChildServer } from '../helpers/child-server.js';
import { freePort } from '../helpers/postgres.js';
import { ADMIN, connect, publish, waitFor } from '../helpers/server.js';
import { lockDataDir, LOCK_FILE } from '../../src/core/data-lock.js';
import { packageRoot } from '../../src/core/paths.js';

const CLI = join(packageRoot(), 'dist', 'src', 'cli.js');

function startAgain(dataDir: string): { status: number | null; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, 'start'], {
    encoding: 'utf8', timeout: 30_000,
    env: {
      PATH: process.env['PATH'] ?? '', UNS_DATA_DIR: dataDir, UNS_TOPICS: join(packageRoot(), 'topics.yaml'),
      UNS_MQTT_HOST: '127.0.0.1', UNS_HTTP_HOST: '127.0.0.1', UNS_MQTT_PORT: '0', UNS_HTTP_PORT: '0', UNS_LOG_LEVEL: 'warn',
    },
  });
  return { status: r.status, stderr: r.stderr };
}

describe('data dir lock - one server per data directory', function () {
  this.timeout(120_000);
  let dir: string;
  let a: ChildServer | null = null;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'uns-lock-'));
    chmodSync(dir, 0o755); // the embedded PostgreSQL runs as another user when tests run as root
  });
  after(async () => {
    await a?.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a second server on a data dir in use, naming the PID, and leaves the first one whole', async () => {
    a = await spawnServer({ dataDir: dir, databaseUrl: null });
    await waitFor(async () => (await fetch(`http://127.0.0.1:${(a as ChildServer).httpPort}/ready`)).status === 200, 60_000, 'A ready');
    const r = startAgain(dir);
    expect(r.status, r.stderr).to.equal(2);
    expect(r.stderr).to.contain(`in use by uns-bridge PID ${a.pid}`).and.contain('UNS_ERR_CONFIG_INVALID');
    // A's embedded PostgreSQL was not adopted, let alone stopped: A still stores and answers.
    const ready = await fetch(`http://127.0.0.1:${a.httpPort}/ready`);
    expect(ready.status).to.equal(200);
    const c = await connect(a.mqttPort, { clientId: 'lock-check' });
    await publish(c, 'acme/plant1/packaging/line1/filler/temperature', JSON.stringify({ value: 21.5 }));
    c.end(true);
    const login = await fetch(`http://127.0.0.1:${a.httpPort}/api/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ADMIN) });
    expect(login.status).to.equal(200);
    const token = ((await login.json()) as { access_token: string }).access_token;
    const latest = await fetch(`http://127.0.0.1:${a.httpPort}/api/v1/datapoints/latest?filter=${encodeURIComponent('acme/plant1/packaging/line1/filler/temperature')}`, { headers: { authorization: `Bearer ${token}` } });
    expect(latest.status).to.equal(200);
    expect(((await latest.json()) as { datapoints: Array<{ value: unknown }> }).datapoints[0]?.value).to.equal(21.5);
  });

  it('takes over the lock of a server that was killed (kill -9) and starts', async () => {
    const killed = a as ChildServer;
    await killed.kill('SIGKILL');
    a = null;
    expect(readFileSync(join(dir, LOCK_FILE), 'utf8').split('\n')[0], 'left behind by the killed server').to.equal(String(killed.pid));
    a = await spawnServer({ dataDir: dir, databaseUrl: null, mqttPort: await freePort() });
    expect(readFileSync(join(dir, LOCK_FILE), 'utf8').split('\n')[0]).to.equal(String(a.pid));
    await a.kill('SIGTERM');
    a = null;
    expect(existsSync(join(dir, LOCK_FILE)), 'removed on a graceful stop').to.equal(false);
  });

  it('never takes over a lock held on another host (a shared folder)', () => {
    const d = mkdtempSync(join(tmpdir(), 'uns-lock-'));
    try {
      writeFileSync(join(d, LOCK_FILE), `1\n${hostname()}-other\n`);
      expect(() => lockDataDir(d)).to.throw(/in use by uns-bridge PID 1 on .*-other/);
      rmSync(join(d, LOCK_FILE));
      const lock = lockDataDir(d);
      expect(() => lockDataDir(d), 'this process holds it').to.throw(`PID ${process.pid}`);
      lock.release();
      expect(existsSync(join(d, LOCK_FILE))).to.equal(false);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});
