/**
 * The one JWT verifier, for MQTT passwords and HTTP bearer tokens alike: the same keys, algorithms,
 * lifetime rule and role rule whichever door a token comes through.
 *   - Keys: the server's own secret (the tokens /api/v1/auth/login issues, HS256), and an identity
 *     provider's public key when one is configured (with the configured algorithms, pinned).
 *   - `exp` is required, `sub` too; the clock tolerance is small and configured; a token may live at most
 *     `maxLifetimeS` (from its `iat`, or from now when it has none): a stolen token good for ten years is
 *     refused rather than trusted for ten years.
 *   - Roles the namespace does not know are dropped; a token left with no known role is refused.
 */
import jwt, { type Algorithm } from 'jsonwebtoken';

export interface JwtVerifierOptions {
  /** The server's signing secret (HS256). */
  readonly secret: string | null;
  /** An identity provider's key (PEM), verified with `algorithms`. */
  readonly publicKey: string | null;
  /** Algorithms accepted with `publicKey`; without one, with `secret`. */
  readonly algorithms: readonly string[];
  readonly clockToleranceS: number;
  /** Longest lifetime accepted (exp - iat, or exp - now without iat), in seconds. */
  readonly maxLifetimeS: number;
  readonly knownRole: (role: string) => boolean;
  readonly now?: () => number;
}

export interface VerifiedToken {
  readonly sub: string;
  readonly roles: readonly string[];
  /** Epoch ms. */
  readonly expiresAt: number;
}

export type JwtVerdict = VerifiedToken | { readonly failure: string };

export type JwtVerifier = (token: string) => JwtVerdict;

export function createJwtVerifier(opts: JwtVerifierOptions): JwtVerifier {
  const now = opts.now ?? Date.now;
  const keys: Array<{ key: string; algorithms: Algorithm[] }> = [];
  if (opts.publicKey !== null) keys.push({ key: opts.publicKey, algorithms: opts.algorithms as Algorithm[] });
  // The server's own tokens are HS256; without a provider key the configured algorithms apply to the secret too.
  if (opts.secret !== null) keys.push({ key: opts.secret, algorithms: opts.publicKey !== null ? ['HS256'] : [...new Set<Algorithm>(['HS256', ...(opts.algorithms as Algorithm[])])] });
  return (token) => {
    if (keys.length === 0) return { failure: 'token authentication is not configured' };
    let claims: jwt.JwtPayload | undefined;
    let refusal = 'token refused';
    for (const k of keys) {
      try {
        const decoded = jwt.verify(token, k.key, { algorithms: k.algorithms, clockTolerance: opts.clockToleranceS, clockTimestamp: Math.floor(now() / 1000) });
        if (typeof decoded === 'string') return { failure: 'token payload is not an object' };
        claims = decoded;
        break;
      } catch (e) {
        const name = (e as Error).name;
        // An expired or not-yet-valid token was signed with this key: say so, do not try the next one.
        if (name === 'TokenExpiredError') return { failure: 'token expired' };
        if (name === 'NotBeforeError') return { failure: 'token not yet valid' };
        refusal = `token refused: ${(e as Error).message}`;
      }
    }
    if (claims === undefined) return { failure: refusal };
    if (typeof claims.exp !== 'number') return { failure: 'token has no exp' };
    const from = typeof claims.iat === 'number' ? claims.iat : Math.floor(now() / 1000);
    if (claims.exp - from > opts.maxLifetimeS + opts.clockToleranceS) return { failure: `token lifetime exceeds ${opts.maxLifetimeS} s` };
    if (typeof claims.sub !== 'string' || claims.sub === '') return { failure: 'token has no sub' };
    const roles = Array.isArray(claims['roles']) ? (claims['roles'] as unknown[]).filter((r): r is string => typeof r === 'string' && opts.knownRole(r)) : [];
    if (roles.length === 0) return { failure: 'token grants no known role' };
    return { sub: claims.sub, roles, expiresAt: claims.exp * 1000 };
  };
}
