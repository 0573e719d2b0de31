/** The command line, run as a user would: a real process, exit codes, stdout/stderr. */
import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, chmodSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { packageRoot } from '../../src/core/paths.js';
import { verifyPassword } from '../../src/core/passwords.js';
import { spawnServer } from '../helpers/child-server.js';
import { connect } from '../helpers/server.js';

const CLI = join(packageRoot(), 'dist', 'src', 'cli.js');

function run(args: string[], opts: { input?: string; env?: Record<string, string> } = {}): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    input: opts.input ?? '', encoding: 'utf8', timeout: 20_000,
    env: { PATH: process.env['PATH'] ?? '', ...opts.env },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('cli', function () {
  this.timeout(60_000);

  it('prints help naming every command', () => {
    const r = run(['--help']);
    expect(r.status).to.equal(0);
    for (const cmd of ['start', 'check', 'hash-password']) expect(r.stdout).to.contain(cmd);
  });

  it('checks the shipped topics.yaml', () => {
    const r = run(['check', join(packageRoot(), 'topics.yaml')]);
    expect(r.status).to.equal(0);
    expect(r.stdout).to.contain('ok');
  });

  it('reports a bad topics.yaml with its code, file and line, and exit code 2', () => {
    const dir = mkdtempSync(join(tmpdir(), 'uns-cli-'));
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'version: 1\nlevels: []\nroutes:\n  - name: x\n    filter: a/#\n    encoding: xml\nroles: {}\n');
    const r = run(['check', file]);
    expect(r.status).to.equal(2);
    expect(r.stderr).to.contain('UNS_ERR_TOPICS_INVALID').and.to.contain('bad.yaml:6:');
    rmSync(dir, { recursive: true, force: true });
  });

  it('hashes a password from stdin into a verifiable scrypt hash', async () => {
    const r = run(['hash-password'], { input: 'correct horse battery\n' });
    expect(r.status).to.equal(0);
    const hash = r.stdout.trim();
    expect(hash).to.match(/^scrypt\$/);
    expect(await verifyPassword('correct horse battery', hash)).to.equal(true);
    expect(await verifyPassword('wrong', hash)).to.equal(false);
  });

  it('refuses a too-short password', () => {
    expect(run(['hash-password', 'short']).status).to.equal(2);
  });

  it('exits 64 on an unknown command', () => {
    expect(run(['frobnicate']).status).to.equal(64);
  });

  it('refuses to start with a bad variable, naming it, with exit code 2', () => {
    const r = run(['start'], { env: { UNS_MQTT_PORT: 'abc' } });
    expect(r.status).to.equal(2);
    expect(r.stderr).to.contain('UNS_ERR_CONFIG_INVALID').and.to.contain('UNS_MQTT_PORT');
  });

  it('stops cleanly on SIGTERM while clients are connected', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'uns-cli-data-'));
    chmodSync(dataDir, 0o755);
    const server = await spawnServer({ dataDir, databaseUrl: null });
    const client = await connect(server.mqttPort);
    const exited = new Promise<number | null>((res) => {
      const t = setInterval(() => {
        try { process.kill(server.pid, 0); } catch { clearInterval(t); res(0); }
      }, 50);
    });
    process.kill(server.pid, 'SIGTERM');
    const status = await Promise.race([exited, new Promise<string>((r) => setTimeout(() => r('timeout'), 15_000))]);
    client.end(true);
    expect(status).to.equal(0);
    // The embedded PostgreSQL it started is stopped too: nothing listens on its socket.
    const ps = spawnSync('pgrep', ['-f', join(dataDir, 'pg')], { encoding: 'utf8' });
    expect(ps.stdout.trim()).to.equal('');
    rmSync(dataDir, { recursive: true, force: true });
  });
});

void spawn;
