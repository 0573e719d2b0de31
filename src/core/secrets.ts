/**
 * The key that signs API JWTs when UNS_JWT_SECRET is not set: 48 random bytes kept in the data dir
 * (mode 0600), so tokens survive restarts. Never logged. Clustered instances must share UNS_JWT_SECRET.
 */
import { existsSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';

export function jwtSecret(dataDir: string): string {
  const file = join(dataDir, 'jwt-secret');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  mkdirSync(dataDir, { recursive: true });
  const secret = randomBytes(48).toString('base64url');
  writeFileSync(file, `${secret}\n`, { mode: 0o600, flag: 'wx' });
  return secret;
}

/**
 * This server's instance id, kept in the data dir: the client id of its persistent session in
 * external-broker mode. Stable across restarts and container re-creations (the data dir is the volume);
 * different for each instance, as each has its own data dir. Made once from the host name and 4 random bytes.
 */
export function instanceId(dataDir: string, host: string): string {
  const file = join(dataDir, 'instance-id');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  mkdirSync(dataDir, { recursive: true });
  const safe = host.replace(/[^A-Za-z0-9_.-]/g, '').slice(0, 40) || 'host';
  const id = `uns-bridge-${safe}-${randomBytes(4).toString('hex')}`;
  writeFileSync(file, `${id}\n`, { mode: 0o644, flag: 'wx' });
  return id;
}
