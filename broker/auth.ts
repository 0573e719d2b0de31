/**
 * Who is connecting. No anonymous access unless topics.yaml names an anonymous role. A password is either
 * checked against a scrypt hash, or, when it is a JWT, verified with pinned algorithms and a required
 * `exp` (a token without an expiry is refused). Successful scrypt checks are remembered briefly, keyed by a
 * digest of the password, so reconnect storms do not queue hundreds of scrypt runs.
 */
import { createHash } from 'node:crypto';
import type { JwtVerifier } from '../src/core/index.js';
import { verifyPassword } from '../src/core/index.js';
import type { AccessControl, Permissions } from '../src/core/index.js';

export interface UserRecord {
  readonly username: string;
  readonly passwordHash: string;
  readonly roles: readonly string[];
}

export interface Principal {
  readonly username: string;
  readonly roles: readonly string[];
  readonly via: 'password' | 'jwt' | 'anonymous';
  readonly perms: Permissions;
}

export interface AuthFailure {
  readonly failure: string;
}

export interface AuthenticatorOptions {
  /** Looked up on every attempt, so users added at run time count at once. */
  readonly users: () => ReadonlyMap<string, UserRecord>;
  readonly anonymousRole: string | null;
  /** The server's one JWT verifier (src/core/jwt.ts), shared with the HTTP API. */
  readonly verifyJwt: JwtVerifier;
  readonly acl: AccessControl;
  readonly now?: () => number;
}

const CACHE_MS = 5 * 60_000;
const CACHE_MAX = 10_000;

function looksLikeJwt(s: string): boolean {
  return s.startsWith('eyJ') && s.split('.').length === 3;
}

export class Authenticator {
  private readonly verified = new Map<string, number>();
  private readonly now: () => number;

  constructor(private readonly opts: AuthenticatorOptions) {
    this.now = opts.now ?? Date.now;
  }

  async authenticate(username: string | undefined, password: Buffer | undefined): Promise<Principal | AuthFailure> {
    const pw = password?.toString('utf8');
    if (!username && !pw) {
      const role = this.opts.anonymousRole;
      if (role === null) return { failure: 'anonymous access is not enabled' };
      return { username: '', roles: [role], via: 'anonymous', perms: this.opts.acl.forRoles([role]) };
    }
    if (pw && looksLikeJwt(pw)) return this.fromJwt(username, pw);
    if (!username || !pw) return { failure: 'username and password required' };
    const user = this.opts.users().get(username);
    if (!user) return { failure: 'unknown user or bad password' };
    const key = `${username}\0${user.passwordHash}\0${createHash('sha256').update(pw).digest('base64')}`;
    const until = this.verified.get(key);
    if (until === undefined || until < this.now()) {
      if (!(await verifyPassword(pw, user.passwordHash))) return { failure: 'unknown user or bad password' };
      if (this.verified.size >= CACHE_MAX) this.verified.clear();
      this.verified.set(key, this.now() + CACHE_MS);
    }
    return { username, roles: user.roles, via: 'password', perms: this.opts.acl.forRoles(user.roles) };
  }

  private fromJwt(username: string | undefined, token: string): Principal | AuthFailure {
    const v = this.opts.verifyJwt(token);
    if ('failure' in v) return v;
    if (username && username !== v.sub) return { failure: 'username does not match the token subject' };
    return { username: v.sub, roles: v.roles, via: 'jwt', perms: this.opts.acl.forRoles(v.roles) };
  }
}

export function isFailure(r: Principal | AuthFailure): r is AuthFailure {
  return 'failure' in r;
}
