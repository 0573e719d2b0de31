/**
 * A first start as a new operator makes it: without UNS_ADMIN_USER nobody can log in, which the server says
 * loudly (log and /ready) instead of locking everyone out in silence; `uns-bridge user add` creates a user
 * that the running server takes within seconds, with no restart and no edit of topics.yaml; a misspelled
 * UNS_* variable is named with the closest real one.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnServer, type ChildServer } from '../helpers/child-server.js';
import { connect, waitFor } from '../helpers/server.js';
import { packageRoot } from '../../src/core/paths.js';

const CLI = join(packageRoot(), 'dist', 'src', 'cli.js');

describe('first start - no users yet, users added while running', function () {
  this.timeout(120_000);
  let dir: string;
  let server: ChildServer;
  const ready = async (): Promise<{ status: number; users: { count: number; warning: string | null } }> => {
    const r = await fetch(`http://127.0.0.1:${server.httpPort}/ready`);
    const body = (await r.json()) as { checks: { users: { count: number; warning: string | null } } };
    return { status: r.status, users: body.checks.users };
  };
  const userAdd = (args: string[], password: string): { status: number | null; stdout: string; stderr: string } => {
    const r = spawnSync(process.execPath, [CLI, 'user', 'add', ...args], {
      input: `${password}\n`, encoding: 'utf8', timeout: 60_000,
      env: { PATH: process.env['PATH'] ?? '', UNS_DATA_DIR: dir, UNS_TOPICS: join(packageRoot(), 'topics.yaml'), UNS_LOG_LEVEL: 'warn' },
    });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'uns-first-'));
    chmodSync(dir, 0o755);
    server = await spawnServer({ dataDir: dir, databaseUrl: null, env: { UNS_ADMIN_USER: '', UNS_ADMIN_PASSWORD: '', UNS_MQTT_PROT: '1884' } });
    await waitFor(async () => (await ready()).status === 200, 60_000, 'ready');
  });
  after(async () => {
    await server?.kill('SIGTERM');
    rmSync(dir, { recursive: true, force: true });
  });

  it('says on /ready and in the log that nobody can authenticate', async () => {
    const r = await ready();
    expect(r.users.count).to.equal(0);
    expect(r.users.warning).to.match(/no users: nobody can log in/).and.match(/uns-bridge user add/);
    expect(server.output()).to.contain('no users: nobody can log in');
  });

  it('names a misspelled UNS_* variable with the closest real one', () => {
    expect(server.output()).to.contain('UNS_MQTT_PROT is not a uns-bridge variable (did you mean UNS_MQTT_PORT?)');
  });

  it('refuses a role topics.yaml does not define, naming the roles it has', () => {
    const r = userAdd(['ops', '--role', 'superuser'], 'a-good-password');
    expect(r.status).to.equal(2);
    expect(r.stderr).to.contain('unknown role superuser').and.contain('admin');
  });

  it('adds a user the running server takes within seconds: HTTP login and MQTT CONNECT work, /ready is quiet', async () => {
    const r = userAdd(['ops', '--role', 'admin'], 'a-good-password');
    expect(r.status, r.stderr).to.equal(0);
    expect(r.stdout).to.contain('user ops saved with role admin');
    // Waited for on /ready, not by trying to log in: failed logins are throttled.
    await waitFor(async () => (await ready()).users.count === 1, 15_000, 'the server to take the new user');
    const login = await fetch(`http://127.0.0.1:${server.httpPort}/api/v1/auth/login`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'ops', password: 'a-good-password' }),
    });
    expect(login.status).to.equal(200);
    expect(((await login.json()) as { access_token?: string }).access_token).to.be.a('string');
    const c = await connect(server.mqttPort, { username: 'ops', password: 'a-good-password', clientId: 'ops-1' });
    c.end(true);
    expect(await ready()).to.deep.include({ users: { count: 1, warning: null } });
  });
});
