/**
 * Machine API tokens: `uns_<id>_<secret>`. The secret is 32 random bytes, shown once; the store keeps its
 * SHA-256 only (a token is a random key, not a password, so a fast hash is the right one). Verification
 * is cached briefly so a busy client does not cost a query per request; revocation clears the cache.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type pg from 'pg';

export interface ApiTokenInfo {
  readonly id: string;
  readonly name: string;
  readonly username: string;
  readonly roles: readonly string[];
  readonly createdAt: string;
  readonly expiresAt: string | null;
  readonly revokedAt: string | null;
  readonly lastUsedAt: string | null;
}

export interface VerifiedToken {
  readonly id: string;
  readonly username: string;
  readonly roles: readonly string[];
  /** Epoch ms, or null for no expiry. */
  readonly expiresAt: number | null;
}

const TOKEN_RE = /^uns_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$/;
const CACHE_MS = 30_000;

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

interface Row {
  id: string; name: string; username: string; roles: string[]; secret_sha256: Buffer;
  created_at: Date; expires_at: Date | null; revoked_at: Date | null; last_used_at: Date | null;
}

function info(r: Row): ApiTokenInfo {
  return {
    id: r.id, name: r.name, username: r.username, roles: r.roles, createdAt: r.created_at.toISOString(),
    expiresAt: r.expires_at?.toISOString() ?? null, revokedAt: r.revoked_at?.toISOString() ?? null,
    lastUsedAt: r.last_used_at?.toISOString() ?? null,
  };
}

export class ApiTokenStore {
  private readonly cache = new Map<string, { token: VerifiedToken; until: number }>();

  constructor(private readonly pool: pg.Pool, private readonly now: () => number = Date.now) {}

  static looksLikeToken(s: string): boolean {
    return s.startsWith('uns_');
  }

  async create(name: string, username: string, roles: readonly string[], ttlMs: number | null): Promise<{ token: string; info: ApiTokenInfo }> {
    const id = randomBytes(9).toString('base64url').toLowerCase().replace(/[^a-z0-9]/g, '0').slice(0, 12).padEnd(12, '0');
    const secret = randomBytes(32).toString('base64url');
    const expires = ttlMs === null ? null : new Date(this.now() + ttlMs);
    const r = await this.pool.query<Row>(
      `INSERT INTO api_tokens (id, name, username, roles, secret_sha256, expires_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING *`,
      [id, name, username, roles, sha256(secret), expires],
    );
    return { token: `uns_${id}_${secret}`, info: info(r.rows[0] as Row) };
  }

  async list(username: string | null): Promise<ApiTokenInfo[]> {
    const r = username === null
      ? await this.pool.query<Row>('SELECT * FROM api_tokens ORDER BY created_at DESC')
      : await this.pool.query<Row>('SELECT * FROM api_tokens WHERE username = $1 ORDER BY created_at DESC', [username]);
    return r.rows.map(info);
  }

  async get(id: string): Promise<ApiTokenInfo | null> {
    const r = await this.pool.query<Row>('SELECT * FROM api_tokens WHERE id = $1', [id]);
    return r.rows[0] ? info(r.rows[0]) : null;
  }

  async revoke(id: string): Promise<boolean> {
    const r = await this.pool.query('UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL', [id]);
    for (const [k, v] of this.cache) if (v.token.id === id) this.cache.delete(k);
    return (r.rowCount ?? 0) > 0;
  }

  /** The token's owner and roles, or null when it is unknown, revoked, expired or malformed. */
  async verify(token: string): Promise<VerifiedToken | null> {
    const m = TOKEN_RE.exec(token);
    if (!m) return null;
    const now = this.now();
    const cached = this.cache.get(token);
    if (cached && cached.until > now && (cached.token.expiresAt === null || cached.token.expiresAt > now)) return cached.token;
    const r = await this.pool.query<Row>('SELECT * FROM api_tokens WHERE id = $1', [m[1]]);
    const row = r.rows[0];
    if (!row || row.revoked_at !== null) return null;
    const want = sha256(m[2] as string);
    if (row.secret_sha256.length !== want.length || !timingSafeEqual(row.secret_sha256, want)) return null;
    const expiresAt = row.expires_at?.getTime() ?? null;
    if (expiresAt !== null && expiresAt <= now) return null;
    await this.pool.query('UPDATE api_tokens SET last_used_at = now() WHERE id = $1', [row.id]);
    const verified: VerifiedToken = { id: row.id, username: row.username, roles: row.roles, expiresAt };
    if (this.cache.size > 10_000) this.cache.clear();
    this.cache.set(token, { token: verified, until: now + CACHE_MS });
    return verified;
  }
}
