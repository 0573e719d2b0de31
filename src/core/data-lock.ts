/**
 * One server per data directory. The data dir holds the embedded database, the outage spool and the JWT
 * key; two servers on one would adopt (and stop) each other's PostgreSQL and interleave spool segments. A
 * lock file names the process holding it, as PostgreSQL's postmaster.pid does: created exclusively, kept
 * for the process lifetime, removed on stop. One left by a process that is gone (kill -9, power loss) is
 * taken over, after checking that the PID is not alive.
 */
import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { UnsError } from './errors.js';

export const LOCK_FILE = 'uns-bridge.pid';

export interface DataDirLock {
  readonly file: string;
  release(): void;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists but belongs to another user; still alive.
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The holder's PID and host from a lock file's text, or null when it is not one of ours. */
function holder(text: string): { pid: number; host: string } | null {
  const [pidLine, host] = text.split('\n');
  const pid = Number(pidLine);
  return Number.isInteger(pid) && pid > 0 ? { pid, host: host ?? '' } : null;
}

export function lockDataDir(dataDir: string): DataDirLock {
  mkdirSync(dataDir, { recursive: true });
  const file = join(dataDir, LOCK_FILE);
  for (let attempt = 0; attempt < 3; attempt++) {
    let fd: number;
    try {
      fd = openSync(file, 'wx', 0o644);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new UnsError('UNS_ERR_CONFIG_INVALID', `data dir ${dataDir}: cannot create ${LOCK_FILE}: ${(e as Error).message}`);
      }
      let text = '';
      try { text = readFileSync(file, 'utf8'); } catch { continue; } // removed meanwhile: try again
      const h = holder(text);
      // Another host's lock on a shared folder cannot be checked from here: never taken over.
      if (h !== null && (h.host !== hostname() ? true : alive(h.pid))) {
        throw new UnsError('UNS_ERR_CONFIG_INVALID',
          `data dir ${dataDir} is in use by uns-bridge PID ${h.pid}${h.host !== hostname() ? ` on ${h.host}` : ''} (${file}); ` +
          'stop that server first, or give this one its own UNS_DATA_DIR');
      }
      // Left by a process that is gone: taken over.
      rmSync(file, { force: true });
      continue;
    }
    writeSync(fd, `${process.pid}\n${hostname()}\n${new Date().toISOString()}\n`);
    closeSync(fd);
    let released = false;
    return {
      file,
      release(): void {
        if (released) return;
        released = true;
        try {
          const h = holder(readFileSync(file, 'utf8'));
          if (h !== null && h.pid === process.pid) rmSync(file, { force: true });
        } catch { /* already gone */ }
      },
    };
  }
  throw new UnsError('UNS_ERR_CONFIG_INVALID', `data dir ${dataDir}: could not take ${LOCK_FILE} (it keeps changing)`);
}
