/** Login and API token management. */
import { Router, type Request } from 'express';
import { ApiError } from '../errors.js';
import { principalOf, requireAuth, isAdmin } from '../auth.js';
import type { ApiDeps } from '../deps.js';
import type { ApiTokenInfo } from '../../../bridge/index.js';

function tokenJson(t: ApiTokenInfo): Record<string, unknown> {
  return {
    id: t.id, name: t.name, username: t.username, roles: t.roles, created_at: t.createdAt,
    expires_at: t.expiresAt, revoked_at: t.revokedAt, last_used_at: t.lastUsedAt,
  };
}

export function authRouter(deps: ApiDeps): Router {
  const r = Router();
  // Failed logins are throttled per address and user and per address, the same budget as MQTT CONNECT
  // (broker/auth.ts): a password guessed on one door is not guessed on the other.
  r.post('/api/v1/auth/login', deps.validator.body('LoginRequest'), (req: Request, res, next) => {
    const { username, password } = req.body as { username: string; password: string };
    const from = req.socket.remoteAddress ?? '';
    deps.auth.login(username, password, from, () => !req.socket.destroyed).then((out) => {
      if ('failure' in out) {
        deps.log.info({ username, address: from, reason: out.failure }, 'login refused');
        if (out.busy) throw new ApiError('UNS_ERR_UNAVAILABLE', 'too many logins being checked; retry', { 'Retry-After': String(out.retryAfterS ?? 1) });
        if (out.retryAfterS !== undefined) throw new ApiError('UNS_ERR_RATE_LIMITED', 'too many failed logins', { 'Retry-After': String(out.retryAfterS) });
        throw new ApiError('UNS_ERR_UNAUTHENTICATED', 'bad username or password');
      }
      res.json({ access_token: out.token, token_type: 'Bearer', expires_in: out.expiresIn });
    }).catch(next);
  });

  r.get('/api/v1/auth/me', requireAuth(deps.auth), (req, res) => {
    const p = principalOf(req);
    const roles = [...p.roles];
    const read = roles.flatMap((x) => deps.namespace.roles.get(x)?.read ?? []);
    const write = roles.flatMap((x) => deps.namespace.roles.get(x)?.write ?? []);
    res.json({ username: p.username, roles, read, write, via: p.via, expires_at: p.expiresAt === null ? null : new Date(p.expiresAt).toISOString() });
  });

  r.get('/api/v1/tokens', requireAuth(deps.auth), (req, res, next) => {
    const p = principalOf(req);
    deps.tokens.list(isAdmin(p) ? null : p.username).then((list) => res.json({ tokens: list.map(tokenJson) }), next);
  });

  r.post('/api/v1/tokens', requireAuth(deps.auth), deps.validator.body('TokenCreate'), (req, res, next) => {
    const p = principalOf(req);
    const body = req.body as { name: string; roles?: string[]; expires_in?: number | null };
    const roles = body.roles ?? [...p.roles];
    // A token never carries more than its creator has.
    const extra = roles.filter((x) => !p.roles.includes(x));
    if (extra.length > 0) { next(new ApiError('UNS_ERR_FORBIDDEN', `roles beyond your own: ${extra.join(', ')}`)); return; }
    const unknown = roles.filter((x) => !deps.namespace.roles.has(x));
    if (unknown.length > 0) { next(new ApiError('UNS_ERR_BAD_REQUEST', `unknown roles: ${unknown.join(', ')}`)); return; }
    const ttl = body.expires_in === undefined || body.expires_in === null ? null : body.expires_in * 1000;
    deps.tokens.create(body.name, p.username, roles, ttl)
      .then((t) => res.status(201).json({ ...tokenJson(t.info), token: t.token }), next);
  });

  r.delete('/api/v1/tokens/:id', requireAuth(deps.auth), (req, res, next) => {
    const p = principalOf(req);
    const id = String(req.params['id']);
    deps.tokens.get(id).then(async (t) => {
      if (!t || (!isAdmin(p) && t.username !== p.username)) throw new ApiError('UNS_ERR_NOT_FOUND', 'no such token');
      await deps.tokens.revoke(id);
      res.status(204).end();
    }).catch(next);
  });

  return r;
}
