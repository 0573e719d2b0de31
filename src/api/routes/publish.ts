/**
 * POST /api/v1/publish: a write into the namespace through the same path as MQTT (ACL, decode, schema,
 * ISA-95 levels, durability). 202 only once the message is durable; a rejected payload answers 422-style
 * with its reason code in a 400, an ACL miss 403, a store that cannot take it now 503.
 */
import { Router, raw } from 'express';
import { ApiError } from '../errors.js';
import { principalOf, requireAuth } from '../auth.js';
import { checkWrite } from '../../core/index.js';
import { sendJson } from '../json.js';
import type { ApiDeps } from '../deps.js';

export function publishRouter(deps: ApiDeps): Router {
  const r = Router();
  r.post('/api/v1/publish', requireAuth(deps.auth), deps.validator.query('PublishQuery'),
    raw({ type: () => true, limit: deps.limits.bodyBytes }), (req, res, next) => {
      const p = principalOf(req);
      const q = req.query as unknown as { topic: string; retain?: boolean };
      const topic = q.topic;
      // The same check, and the same codes, as an MQTT publish.
      const refused = checkWrite(topic, p.perms, deps.limits.topic, `user ${p.username}`);
      if (refused !== null) { next(new ApiError(refused.code, refused.reason)); return; }
      const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
      deps.publish(topic, body, p, { retain: q.retain === true }).then((out) => {
        if (out.error) throw new ApiError('UNS_ERR_UNAVAILABLE', 'not durable: retry', { 'Retry-After': '1' });
        if (out.rejection) {
          throw new ApiError('UNS_ERR_BAD_REQUEST', out.rejection.reason, {}, { code: out.rejection.code, topic });
        }
        sendJson(res, { status: 'stored', topic }, 202);
      }).catch(next);
    });
  return r;
}
