/**
 * Who is connecting. No anonymous access unless topics.yaml names an anonymous role. A password is either
 * checked against a scrypt hash, or, when it is a JWT, verified with pinned algorithms and a required
 * `exp` (a token without an expiry is refused). Successful scrypt checks are remembered briefly, keyed by a
 * digest of the password, so reconnect storms do not queue hundreds of scrypt runs.
 *
 * Password guessing is throttled here, for MQTT CONNECT and HTTP login alike (rate-limiter-flexible, in
 * memory): per (address, user) and per address. A check reserves a failure before the scrypt runs and gives
 * it back on success, so a burst of wrong passwords in parallel cannot slip past the count. An unknown user
 * name is checked against a dummy hash: it costs the same and fails the same, so answers do not tell which
 * names exist.
 */
import { createHash, randomBytes } from 'node:crypto';
import pLimit from 'p-limit';
import { RateLimiterMemory, RateLimiterRes } from 'rate-limiter-flexible';
import type { JwtVerifier } from '../src/core/index.js';
import { hashPassword, verifyPassword } from '../src/core/index.js';
import type { AccessControl, Permissions } from '../src/core/index.js';

export interface UserRecord {
  readonly username: string;
  readonly passwordHash: string;
  readonly roles: readonly string[];
}

export interface Principal {
  readonly username: string;
  readonly roles: readonly string[];
  readonly via: 'password' | 'jwt' | 'anonymous' | 'certificate';
  readonly perms: Permissions;
}

export interface AuthFailure {
  readonly failure: string;
  /** Throttled or busy: how long before another try may succeed. */
  readonly retryAfterS?: number;
  /** Refused for load, not for the credentials: too many password checks waiting. */
  readonly busy?: true;
}

export interface ThrottleLimits {
  /** Failed password checks per (address, user) in `perUserWindowS`. */
  readonly perUser: number;
  readonly perUserWindowS: number;
  /** Failed password checks per address in `perAddressWindowS`, whatever the user names. */
  readonly perAddress: number;
  readonly perAddressWindowS: number;
}

export const DEFAULT_THROTTLE: ThrottleLimits = Object.freeze({ perUser: 10, perUserWindowS: 60, perAddress: 100, perAddressWindowS: 600 });

/**
 * Password hashes checked at once (scrypt is memory- and CPU-hard on purpose), and how many may wait: a
 * flood of CONNECTs from many addresses cannot queue minutes of scrypt work; beyond the queue an attempt
 * is refused at once as 'busy', and one whose client left while it waited is dropped without its scrypt.
 */
export const PASSWORD_CHECKS = Object.freeze({ concurrent: 2, queued: 64 });

export interface AuthenticatorOptions {
  /** Looked up on every attempt, so users added at run time count at once. */
  readonly users: () => ReadonlyMap<string, UserRecord>;
  readonly anonymousRole: string | null;
  /** The server's one JWT verifier (src/core/jwt.ts), shared with the HTTP API. */
  readonly verifyJwt: JwtVerifier;
  readonly acl: AccessControl;
  readonly throttle?: ThrottleLimits;
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
  private readonly byUser: RateLimiterMemory;
  private readonly byAddress: RateLimiterMemory;
  private readonly checks = pLimit(PASSWORD_CHECKS.concurrent);
  /** Checked for unknown user names, so they cost a scrypt like known ones. */
  private readonly dummyHash = hashPassword(randomBytes(18).toString('base64'));

  constructor(private readonly opts: AuthenticatorOptions) {
    this.now = opts.now ?? Date.now;
    const t = opts.throttle ?? DEFAULT_THROTTLE;
    this.byUser = new RateLimiterMemory({ points: t.perUser, duration: t.perUserWindowS });
    this.byAddress = new RateLimiterMemory({ points: t.perAddress, duration: t.perAddressWindowS });
  }

  /**
   * `from`: the client's address (throttling is per address and per address and user); `present`: whether
   * the client is still connected (a check queued for one that left is dropped).
   */
  async authenticate(username: string | undefined, password: Buffer | undefined, from = '', present: () => boolean = () => true): Promise<Principal | AuthFailure> {
    const pw = password?.toString('utf8');
    if (!username && !pw) {
      const role = this.opts.anonymousRole;
      if (role === null) return { failure: 'anonymous access is not enabled' };
      return { username: '', roles: [role], via: 'anonymous', perms: this.opts.acl.forRoles([role]) };
    }
    if (pw && looksLikeJwt(pw)) return this.fromJwt(username, pw);
    if (!username || !pw) return { failure: 'username and password required' };
    const user = this.opts.users().get(username);
    const key = user === undefined ? '' : `${username}\0${user.passwordHash}\0${createHash('sha256').update(pw).digest('base64')}`;
    const until = this.verified.get(key);
    if (user !== undefined && until !== undefined && until >= this.now()) {
      return { username, roles: user.roles, via: 'password', perms: this.opts.acl.forRoles(user.roles) };
    }
    const userKey = `${from}\0${username}`;
    const throttled = await this.reserve(userKey, from);
    if (throttled !== null) return throttled;
    const hash = user?.passwordHash ?? (await this.dummyHash);
    if (this.checks.pendingCount >= PASSWORD_CHECKS.queued) {
      // Load, not a wrong password: the reserved failure is given back.
      await Promise.all([this.byUser.reward(userKey, 1), this.byAddress.reward(from, 1)]);
      return { failure: 'busy: too many password checks waiting', retryAfterS: 1, busy: true };
    }
    const ok = await this.checks(() => (present() ? verifyPassword(pw, hash) : Promise.resolve(null)));
    if (ok === null) return { failure: 'client left before its password was checked' };
    if (!ok || user === undefined) return { failure: 'unknown user or bad password' };
    // Given back: only failures count.
    await Promise.all([this.byUser.delete(userKey), this.byAddress.reward(from, 1)]);
    if (this.verified.size >= CACHE_MAX) this.verified.clear();
    this.verified.set(key, this.now() + CACHE_MS);
    return { username, roles: user.roles, via: 'password', perms: this.opts.acl.forRoles(user.roles) };
  }

  /** Takes one failure from both budgets before the check runs; null, or the refusal when one is spent. */
  private async reserve(userKey: string, from: string): Promise<AuthFailure | null> {
    const [u, a] = await Promise.allSettled([this.byUser.consume(userKey), this.byAddress.consume(from)]);
    const spent = [u, a].flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
    if (spent.length === 0) return null;
    for (const e of spent) if (!(e instanceof RateLimiterRes)) throw e;
    const wait = Math.max(...spent.map((e) => (e as RateLimiterRes).msBeforeNext));
    return { failure: 'too many failed logins', retryAfterS: Math.max(1, Math.ceil(wait / 1000)) };
  }

  /**
   * A client certificate the TLS handshake verified against the configured CA stands for the user its
   * subject CN names; that user must exist (topics.yaml, UNS_ADMIN_USER or `uns-bridge user add`), so a
   * certificate cannot invent a user or roles. A CONNECT user name, if any, must be the same.
   */
  fromCertificate(commonName: string, username: string | undefined): Principal | AuthFailure {
    if (username && username !== commonName) return { failure: 'username does not match the client certificate' };
    const user = this.opts.users().get(commonName);
    if (user === undefined) return { failure: 'the client certificate names no known user' };
    return { username: commonName, roles: user.roles, via: 'certificate', perms: this.opts.acl.forRoles(user.roles) };
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
