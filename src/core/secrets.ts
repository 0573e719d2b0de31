/**
 * Values made once and kept in the data dir, so they survive restarts (and container re-creation: the data
 * dir is the volume): the JWT signing key and the instance id.
 */
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

/** The value kept in `<dataDir>/<name>`, made by `make` and written (exclusively) the first time. */
function keptInDataDir(dataDir: string, name: string, mode: number, make: () => string): string {
  const file = join(dataDir, name);
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  mkdirSync(dataDir, { recursive: true });
  const value = make();
  writeFileSync(file, `${value}\n`, { mode, flag: 'wx' });
  return value;
}

/**
 * The key that signs API JWTs when UNS_JWT_SECRET is not set: 48 random bytes (mode 0600). Never logged.
 * Clustered instances must share UNS_JWT_SECRET.
 */
export function jwtSecret(dataDir: string): string {
  return keptInDataDir(dataDir, 'jwt-secret', 0o600, () => randomBytes(48).toString('base64url'));
}

/**
 * This server's instance id: the client id of its persistent session in external-broker mode. Different for
 * each instance, as each has its own data dir. Made from the host name and 4 random bytes.
 */
export function instanceId(dataDir: string, host: string): string {
  const safe = host.replace(/[^A-Za-z0-9_.-]/g, '').slice(0, 40) || 'host';
  return keptInDataDir(dataDir, 'instance-id', 0o644, () => `uns-bridge-${safe}-${randomBytes(4).toString('hex')}`);
}
