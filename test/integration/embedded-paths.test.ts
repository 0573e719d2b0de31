/**
 * A data dir too deep for a unix socket path: the socket lives in a temp folder, which a later process
 * finds again through postmaster.pid to adopt the server, and which is removed when the server stops.
 */
import { expect } from 'chai';
import { existsSync, mkdirSync, mkdtempSync, rmSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import pg from 'pg';
import { startPostgres, type PostgresProcess } from '../../bridge/index.js';
import { silentLogger } from '../../src/core/index.js';
import { findPgBin } from '../helpers/postgres.js';

async function selectOne(url: string): Promise<number> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try { return (await c.query<{ n: number }>('SELECT 1 AS n')).rows[0]?.n ?? 0; } finally { await c.end(); }
}

describe('embedded store - a data dir too deep for a socket path', function () {
  this.timeout(60_000);
  let root: string;
  let first: PostgresProcess | undefined;

  before(() => {
    root = mkdtempSync(join(tmpdir(), 'uns-deep-'));
    chmodSync(root, 0o755); // the server runs as another user when the tests run as root
  });
  after(async () => {
    await first?.stop().catch(() => undefined);
    rmSync(root, { recursive: true, force: true });
  });

  it('adopts the running server through the socket folder in postmaster.pid, and removes that folder on stop', async () => {
    let deep = root;
    for (let i = 0; i < 6; i++) { deep = join(deep, 'a-rather-long-folder-name'); mkdirSync(deep, { mode: 0o755 }); }
    const dataDir = join(deep, 'pg');
    const binDir = findPgBin();
    first = await startPostgres({ binDir, dataDir, log: silentLogger() });
    expect(first.runDir.startsWith(tmpdir()), 'socket in a temp folder').to.equal(true);
    expect(await selectOne(first.url)).to.equal(1);
    // A second process on the same data dir (as after a kill -9 of the first's owner) adopts, not starts.
    const second = await startPostgres({ binDir, dataDir, log: silentLogger() });
    expect(second.adopted).to.equal(true);
    expect(second.pid).to.equal(first.pid);
    expect(second.runDir).to.equal(first.runDir);
    expect(await selectOne(second.url)).to.equal(1);
    await second.stop();
    first = undefined;
    expect(existsSync(second.runDir), 'temp socket folder removed').to.equal(false);
  });
});
