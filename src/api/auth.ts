/**
 * API authentication: `POST /api/v1/auth/login` trades a username and password for a short-lived JWT;
 * machine API tokens (`uns_…`) are created, listed and revoked. Every request carries
 * `Authorization: Bearer <jwt | api token>` (WebSocket and SSE may pass `?token=`). JWTs are signed and
 * checked with pinned algorithms, `exp` is required, and the same role permissions as MQTT apply.
 */
import jwt, { type Algorithm } from 'jsonwebtoken';
import type { JwtVerifier } from '../core/index.js';
import type { Request, Response, NextFunction, RequestHandler } from 'express';
import type { AccessControl, Permissions } from '../core/index.js';
import { ApiError } from './errors.js';

export interface ApiPrincipal {
  readonly username: string;
  readonly roles: readonly string[];
  readonly perms: Permissions;
  /** 'ingest': a signed inbound ingest source acting with its configured role. */
  readonly via: 'jwt' | 'api-token' | 'ingest';
  /** Epoch ms when the credential stops being valid, or null. */
  readonly expiresAt: number | null;
  readonly tokenId?: string | undefined;
}

export type AuthResult = ApiPrincipal | { readonly failure: string };

export type PasswordCheck = (username: string, password: string, from: string, present: () => boolean) => Promise<{ username: string; roles: readonly string[] } | { failure: string; retryAfterS?: number; busy?: true }>;

export interface TokenVerifier {
  verify(token: string): Promise<{ id: string; username: string; roles: readonly string[]; expiresAt: number | null } | null>;
}

export interface ApiAuthOptions {
  readonly acl: AccessControl;
  readonly checkPassword: PasswordCheck;
  readonly tokens: TokenVerifier;
  readonly secret: string;
  readonly algorithm: Algorithm;
  readonly ttlS: number;
  /** The server's one JWT verifier (src/core/jwt.ts), shared with MQTT. */
  readonly verifyJwt: JwtVerifier;
  readonly now?: () => number;
}

export class ApiAuth {
  private readonly now: () => number;

  constructor(private readonly opts: ApiAuthOptions) {
    this.now = opts.now ?? Date.now;
  }

  async login(username: string, password: string, from = '', present: () => boolean = () => true): Promise<{ token: string; expiresIn: number; principal: ApiPrincipal } | { failure: string; retryAfterS?: number; busy?: true }> {
    const r = await this.opts.checkPassword(username, password, from, present);
    if ('failure' in r) return r;
    const roles = r.roles.filter((x) => this.opts.acl.hasRole(x));
    const iat = Math.floor(this.now() / 1000);
    const token = jwt.sign({ sub: r.username, roles, iat }, this.opts.secret, { algorithm: this.opts.algorithm, expiresIn: this.opts.ttlS });
    return {
      token, expiresIn: this.opts.ttlS,
      principal: { username: r.username, roles, perms: this.opts.acl.forRoles(roles), via: 'jwt', expiresAt: (iat + this.opts.ttlS) * 1000 },
    };
  }

  async verify(bearer: string): Promise<AuthResult> {
    if (bearer.startsWith('uns_')) {
      const t = await this.opts.tokens.verify(bearer);
      if (!t) return { failure: 'API token unknown, revoked or expired' };
      const roles = t.roles.filter((x) => this.opts.acl.hasRole(x));
      return { username: t.username, roles, perms: this.opts.acl.forRoles(roles), via: 'api-token', expiresAt: t.expiresAt, tokenId: t.id };
    }
    const v = this.opts.verifyJwt(bearer);
    if ('failure' in v) return v;
    return { username: v.sub, roles: v.roles, perms: this.opts.acl.forRoles(v.roles), via: 'jwt', expiresAt: v.expiresAt };
  }
}

/** The credential of a request: the Authorization header, or `?token=` where a header cannot be set. */
export function credentialOf(req: { headers: Record<string, string | string[] | undefined>; url?: string | undefined }, allowQuery: boolean): string | null {
  const h = req.headers['authorization'];
  const header = Array.isArray(h) ? h[0] : h;
  if (header) {
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    return m ? (m[1] as string) : null;
  }
  if (allowQuery && req.url) {
    const q = new URL(req.url, 'http://x').searchParams.get('token');
    if (q) return q;
  }
  return null;
}

declare module 'express-serve-static-core' {
  interface Request {
    principal?: ApiPrincipal;
  }
}

export function principalOf(req: Request): ApiPrincipal {
  if (!req.principal) throw new ApiError('UNS_ERR_UNAUTHENTICATED', 'authentication required');
  return req.principal;
}

export function requireAuth(auth: ApiAuth, opts: { allowQueryToken?: boolean } = {}): RequestHandler {
  return (req: Request, _res: Response, next: NextFunction) => {
    const cred = credentialOf(req, opts.allowQueryToken ?? false);
    if (!cred) { next(new ApiError('UNS_ERR_UNAUTHENTICATED', 'missing bearer token', { 'WWW-Authenticate': 'Bearer' })); return; }
    auth.verify(cred).then((r) => {
      if ('failure' in r) { next(new ApiError('UNS_ERR_UNAUTHENTICATED', r.failure, { 'WWW-Authenticate': 'Bearer error="invalid_token"' })); return; }
      req.principal = r;
      next();
    }, next);
  };
}

/** Admin-only endpoints (token management for other users). */
export function isAdmin(p: ApiPrincipal): boolean {
  return p.roles.includes('admin');
}
