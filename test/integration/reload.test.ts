/**
 * SIGHUP's reload (RunningServer.reload): users added to the database are known at once, and an edited
 * topics.yaml is reported (valid: restart to apply; invalid: a restart would fail) while the running
 * namespace stays as it is.
 */
import { expect } from 'chai';
import { appendFileSync, copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Writable } from 'node:stream';
import pino from 'pino';
import { TestPostgres } from '../helpers/postgres.js';
import { cleanup, connect, hashPassword, startServerWithLogger, testConfig } from '../helpers/server.js';
import { packageRoot } from '../../src/core/paths.js';
import type { RunningServer } from '../../src/main.js';

describe('reload (SIGHUP) - users and topics.yaml', function () {
  this.timeout(60_000);
  const pg = new TestPostgres();
  let server: RunningServer;
  let dir: string;
  let topicsFile: string;
  const lines: Array<{ level: number; msg: string; topics?: string }> = [];

  before(async () => {
    await pg.start();
    dir = mkdtempSync(join(tmpdir(), 'uns-reload-'));
    topicsFile = join(dir, 'topics.yaml');
    copyFileSync(join(packageRoot(), 'topics.yaml'), topicsFile);
    const sink = new Writable({ write(chunk: Buffer, _enc, cb) { for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l)); cb(); } });
    server = await startServerWithLogger(testConfig(pg.url, { topicsFile }), pino({ level: 'info' }, sink));
  });
  after(async () => {
    await server.stop();
    cleanup(server.config);
    rmSync(dir, { recursive: true, force: true });
    await pg.destroy();
  });

  it('knows a user added to the database at once', async () => {
    await server.store.upsertUser('line9-plc', await hashPassword('line9-password'), ['plc']);
    await server.reload('SIGHUP');
    const c = await connect(server.mqttPort, { username: 'line9-plc', password: 'line9-password' });
    expect(c.connected).to.equal(true);
    c.end();
  });

  it('says an edited, valid topics.yaml needs a restart, and keeps the running namespace', async () => {
    appendFileSync(topicsFile, '\n# edited\n');
    expect(await server.reload('SIGHUP')).to.deep.equal({ tls: false, topics: 'changed' });
    expect(lines.some((l) => l.level === 40 && /topics\.yaml changed since start-up and is valid: restart to apply/.test(l.msg))).to.equal(true);
  });

  it('says an edited, invalid topics.yaml would fail a restart', async () => {
    writeFileSync(topicsFile, 'version: 1\nroutes: [ { name: x } ]\n');
    expect(await server.reload('SIGHUP')).to.deep.equal({ tls: false, topics: 'invalid' });
    expect(lines.some((l) => l.level === 50 && /NOT valid: a restart would fail/.test(l.msg))).to.equal(true);
    // Still serving with the namespace it started with.
    const c = await connect(server.mqttPort);
    expect(c.connected).to.equal(true);
    c.end();
  });
});
