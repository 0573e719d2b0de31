/**
 * The server as a process among others: `npm start` runs the build made at install (no compile on every
 * start) and passes signals through, so SIGTERM to npm stops node and the embedded PostgreSQL and frees the
 * ports; SIGHUP reloads (the server keeps running) and SIGINT then stops it; nothing is left running.
 */
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, chmodSync, existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import { freePort } from '../helpers/postgres.js';
import { waitFor } from '../helpers/server.js';
import { packageRoot } from '../../src/core/paths.js';

function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch { return false; }
}

/** The embedded PostgreSQL's postmaster PID from its lock file, or null. */
function postmasterOf(dataDir: string): number | null {
  const f = join(dataDir, 'pg', 'postmaster.pid');
  if (!existsSync(f)) return null;
  const pid = Number(readFileSync(f, 'utf8').split('\n')[0]);
  return Number.isInteger(pid) && pid > 0 ? pid : null;
}

async function portFree(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = createServer();
    s.once('error', () => res(false));
    s.listen(port, '127.0.0.1', () => s.close(() => res(true)));
  });
}

describe('process signals - npm start, SIGTERM, SIGHUP', function () {
  this.timeout(120_000);
  const dirs: string[] = [];
  const children: ChildProcess[] = [];

  async function launch(cmd: string, args: string[]): Promise<{ child: ChildProcess; dir: string; httpPort: number; mqttPort: number; out: () => string }> {
    const dir = mkdtempSync(join(tmpdir(), 'uns-sig-'));
    chmodSync(dir, 0o755);
    dirs.push(dir);
    const httpPort = await freePort();
    const mqttPort = await freePort();
    let out = '';
    // Its own process group, so a failed test can still end everything it started (after()).
    const child = spawn(cmd, args, {
      cwd: packageRoot(), stdio: ['ignore', 'pipe', 'pipe'], detached: true,
      env: {
        PATH: process.env['PATH'] ?? '', HOME: process.env['HOME'] ?? tmpdir(), UNS_DATA_DIR: dir, UNS_TOPICS: join(packageRoot(), 'topics.yaml'),
        UNS_MQTT_HOST: '127.0.0.1', UNS_HTTP_HOST: '127.0.0.1', UNS_MQTT_PORT: String(mqttPort), UNS_HTTP_PORT: String(httpPort),
        UNS_ADMIN_USER: 'admin', UNS_ADMIN_PASSWORD: 'admin-password-1', UNS_LOG_LEVEL: 'info',
      },
    });
    children.push(child);
    child.stdout?.on('data', (b: Buffer) => { out += b.toString(); });
    child.stderr?.on('data', (b: Buffer) => { out += b.toString(); });
    await waitFor(async () => {
      try { return (await fetch(`http://127.0.0.1:${httpPort}/ready`)).status === 200; } catch { return false; }
    }, 60_000, `${cmd} ${args.join(' ')} ready`);
    return { child, dir, httpPort, mqttPort, out: () => out };
  }

  after(() => {
    // The group: npm, node under it, and the embedded PostgreSQL node started (SIGTERM: it stops its database).
    for (const c of children) if (c.pid !== undefined) try { process.kill(-c.pid, 'SIGTERM'); } catch { /* already gone */ }
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('npm start runs without compiling; SIGTERM to npm stops node and the embedded PostgreSQL and frees the ports', async () => {
    const s = await launch('npm', ['start', '--silent']);
    expect(s.out()).to.not.match(/tsc -p/);
    const pg = postmasterOf(s.dir);
    expect(pg, 'the embedded PostgreSQL runs').to.be.a('number');
    const exited = new Promise<number | null>((res) => s.child.once('exit', (code) => res(code)));
    s.child.kill('SIGTERM');
    await exited;
    await waitFor(() => !alive(pg as number), 30_000, 'the embedded PostgreSQL to stop');
    expect(await portFree(s.httpPort), 'HTTP port free').to.equal(true);
    expect(await portFree(s.mqttPort), 'MQTT port free').to.equal(true);
    expect(s.out()).to.contain('uns-bridge stopped');
  });

  it('SIGHUP reloads and the server keeps serving; SIGINT then stops it and leaves no PostgreSQL behind', async () => {
    const s = await launch(process.execPath, [join(packageRoot(), 'dist', 'src', 'cli.js'), 'start']);
    const pg = postmasterOf(s.dir);
    s.child.kill('SIGHUP');
    await waitFor(() => /"reason":"SIGHUP".*"reloaded"/.test(s.out()), 10_000, 'the reload logged');
    expect((await fetch(`http://127.0.0.1:${s.httpPort}/ready`)).status).to.equal(200);
    expect(s.child.exitCode).to.equal(null);
    const exited = new Promise<number | null>((res) => s.child.once('exit', (code) => res(code)));
    s.child.kill('SIGINT');
    expect(await exited).to.equal(0);
    expect(s.out()).to.match(/"signal":"SIGINT".*shutting down/);
    expect(alive(pg as number)).to.equal(false);
  });
});
