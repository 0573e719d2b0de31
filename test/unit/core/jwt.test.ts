import { expect } from 'chai';
import { createHmac, generateKeyPairSync } from 'node:crypto';
import jwt from 'jsonwebtoken';
import { createJwtVerifier, type JwtVerdict } from '../../../src/core/jwt.js';

const SECRET = 'server-secret-that-is-long-enough-0123456789';
const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048, publicKeyEncoding: { type: 'spki', format: 'pem' }, privateKeyEncoding: { type: 'pkcs8', format: 'pem' } });
const NOW = 1_700_000_000_000;
const exp = Math.floor(NOW / 1000) + 600;
const knownRole = (r: string): boolean => r === 'operator' || r === 'admin';
const failure = (v: JwtVerdict): string | undefined => ('failure' in v ? v.failure : undefined);

describe('jwt verifier (one for MQTT and HTTP)', () => {
  const own = createJwtVerifier({ secret: SECRET, publicKey: null, algorithms: ['HS256'], clockToleranceS: 5, maxLifetimeS: 86_400, knownRole, now: () => NOW });
  const withProvider = createJwtVerifier({ secret: SECRET, publicKey, algorithms: ['RS256'], clockToleranceS: 5, maxLifetimeS: 86_400, knownRole, now: () => NOW });

  it("accepts the server's own tokens, keeping only the roles the namespace knows", () => {
    const v = own(jwt.sign({ sub: 'ana', roles: ['operator', 'ghost'], exp }, SECRET, { algorithm: 'HS256' }));
    expect(v).to.deep.equal({ sub: 'ana', roles: ['operator'], expiresAt: exp * 1000 });
  });

  it("accepts a provider's RS256 token and still the server's own login tokens when a public key is configured", () => {
    expect(withProvider(jwt.sign({ sub: 'idp-user', roles: ['admin'], exp }, privateKey, { algorithm: 'RS256' }))).to.include({ sub: 'idp-user' });
    expect(withProvider(jwt.sign({ sub: 'ana', roles: ['operator'], exp }, SECRET, { algorithm: 'HS256' }))).to.include({ sub: 'ana' });
  });

  for (const [what, token, reason] of [
    ['a token granting no known role', () => jwt.sign({ sub: 'x', roles: ['ghost'], exp }, SECRET), /no known role/],
    ['a token without exp', () => jwt.sign({ sub: 'x', roles: ['admin'] }, SECRET), /no exp/],
    ['a token without sub', () => jwt.sign({ roles: ['admin'], exp }, SECRET), /no sub/],
    ['an expired token', () => jwt.sign({ sub: 'x', roles: ['admin'], exp: Math.floor(NOW / 1000) - 60 }, SECRET), /expired/],
    ['a not-yet-valid token', () => jwt.sign({ sub: 'x', roles: ['admin'], exp, nbf: Math.floor(NOW / 1000) + 60 }, SECRET), /not yet valid/],
    ['a token signed with another key', () => jwt.sign({ sub: 'x', roles: ['admin'], exp }, 'another-secret-that-is-long-enough-000'), /refused/],
    ['a token living longer than the maximum (10 years from iat)', () => jwt.sign({ sub: 'x', roles: ['admin'], iat: NOW / 1000, exp: NOW / 1000 + 10 * 365 * 86_400 }, SECRET), /lifetime exceeds 86400 s/],
    ['a token without iat whose exp is beyond the maximum from now', () => jwt.sign({ sub: 'x', roles: ['admin'], exp: NOW / 1000 + 2 * 86_400 }, SECRET, { noTimestamp: true }), /lifetime exceeds/],
    ['an alg=none token', () => jwt.sign({ sub: 'x', roles: ['admin'], exp }, '', { algorithm: 'none' }), /refused/],
  ] as const) {
    it(`refuses ${what}, on both doors alike`, () => {
      expect(failure(own(token()))).to.match(reason);
      expect(failure(withProvider(token()))).to.match(reason);
    });
  }

  it('accepts a token living exactly the maximum', () => {
    expect(own(jwt.sign({ sub: 'x', roles: ['admin'], iat: NOW / 1000, exp: NOW / 1000 + 86_400 }, SECRET))).to.include({ sub: 'x' });
  });

  it('refuses an HS256 token forged with the public key as its secret (algorithm confusion)', () => {
    const b64 = (o: object): string => Buffer.from(JSON.stringify(o)).toString('base64url');
    const unsigned = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: 'x', roles: ['admin'], exp })}`;
    const forged = `${unsigned}.${createHmac('sha256', publicKey).update(unsigned).digest('base64url')}`;
    expect(failure(withProvider(forged))).to.match(/refused/);
  });
});
