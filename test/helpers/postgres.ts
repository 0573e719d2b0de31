/**
 * A throwaway PostgreSQL cluster for tests: Debian's server binaries (UNS_TEST_PG_BIN to override), on
 * 127.0.0.1 and a free port, in a temp folder. Tests may stop and start it to simulate an outage.
 * TimescaleDB is preloaded when its library is installed for that server.
 */
import { existsSync, readdirSync, mkdtempSync, rmSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import { execFileSync } from 'node:child_process';
import pg from 'pg';
import { startPostgres, type PostgresProcess } from '../../bridge/index.js';
import { silentLogger } from '../../src/core/log.js';

export function findPgBin(): string {
  const env = process.env['UNS_TEST_PG_BIN'];
  if (env) return env;
  const base = '/usr/lib/postgresql';
  const versions = existsSync(base) ? readdirSync(base).filter((v) => existsSync(join(base, v, 'bin', 'postgres'))).sort((a, b) => Number(b) - Number(a)) : [];
  if (versions.length === 0) {
    throw new Error('no PostgreSQL server binaries found under /usr/lib/postgresql: install postgresql (see .ci/run) or set UNS_TEST_PG_BIN');
  }
  return join(base, versions[0] as string, 'bin');
}

export function hasTimescale(binDir: string): boolean {
  try {
    const lib = execFileSync(join(binDir, 'pg_config'), ['--pkglibdir'], { encoding: 'utf8' }).trim();
    return existsSync(join(lib, 'timescaledb.so'));
  } catch {
    return false;
  }
}

/**
 * A free port on 127.0.0.1, below Linux's ephemeral range (32768 and up): tests that kill a server and start
 * it again on the same port must not find it taken meanwhile as the local port of some outgoing connection.
 */
export async function freePort(): Promise<number> {
  const tryPort = (port: number): Promise<boolean> => new Promise((res) => {
    const s = createServer();
    s.once('error', () => res(false));
    s.listen(port, '127.0.0.1', () => s.close(() => res(true)));
  });
  for (let i = 0; i < 200; i++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (await tryPort(port)) return port;
  }
  throw new Error('no free port found between 20000 and 32000');
}

export class TestPostgres {
  private proc: PostgresProcess | null = null;
  readonly dir: string;
  readonly binDir: string;
  readonly timescale: boolean;
  port = 0;

  constructor(opts: { timescale?: boolean } = {}) {
    this.binDir = findPgBin();
    this.timescale = (opts.timescale ?? true) && hasTimescale(this.binDir);
    this.dir = mkdtempSync(join(tmpdir(), 'uns-test-pg-'));
    chmodSync(this.dir, 0o755); // the server may run as another user when tests run as root
  }

  get url(): string {
    return `postgresql://uns@127.0.0.1:${this.port}/postgres`;
  }

  /** A fresh database on this cluster, so tests do not see each other's rows. */
  async createDatabase(name: string): Promise<string> {
    const c = new pg.Client({ connectionString: this.url });
    await c.connect();
    try {
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.query(`CREATE DATABASE ${name}`);
    } finally {
      await c.end();
    }
    return `postgresql://uns@127.0.0.1:${this.port}/${name}`;
  }

  async start(): Promise<void> {
    if (this.port === 0) this.port = await freePort();
    this.proc = await startPostgres({
      binDir: this.binDir, dataDir: join(this.dir, 'data'), port: this.port, log: silentLogger(),
      settings: {
        ...(this.timescale ? { shared_preload_libraries: 'timescaledb', 'timescaledb.telemetry_level': 'off' } : {}),
        unix_socket_directories: '',
      },
    });
  }

  async stop(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    await this.proc?.stop(mode);
    this.proc = null;
  }

  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export async function query<T extends pg.QueryResultRow = pg.QueryResultRow>(url: string, sql: string, params: unknown[] = []): Promise<T[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<T>(sql, params)).rows;
  } finally {
    await c.end();
  }
}
