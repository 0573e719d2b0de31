/**
 * `GET /api/v1/rejections`: the latest messages refused (the dead-letter path), with code, reason, topic,
 * client and payload: the first thing an integrator looks at when a gateway's data does not show up. Only
 * topics the caller may read; newest first, keyset-paged.
 */
import { Router } from 'express';
import { ApiError } from '../errors.js';
import { principalOf, requireAuth } from '../auth.js';
import { sendJson } from '../json.js';
import type { ApiDeps } from '../deps.js';
import { checkFilter, readError } from './datapoints.js';

interface RejectionsQuery { filter: string; code?: string; limit: number; before?: string }

function encodeBefore(c: { us: number; id: string }): string {
  return Buffer.from(`j1:${c.us}:${c.id}`).toString('base64url');
}

function decodeBefore(text: string): { us: number; id: string } {
  const m = /^j1:(\d{1,20}):(\d{1,20})$/.exec(Buffer.from(text, 'base64url').toString('latin1'));
  if (m === null) throw new ApiError('UNS_ERR_BAD_REQUEST', 'before: not a cursor this listing gave');
  return { us: Number(m[1]), id: m[2] as string };
}

export function rejectionsRouter(deps: ApiDeps): Router {
  const r = Router();
  r.get('/api/v1/rejections', requireAuth(deps.auth), deps.validator.query('RejectionsQuery'), (req, res, next) => {
    const p = principalOf(req);
    const q = req.query as unknown as RejectionsQuery;
    checkFilter(q.filter, deps);
    const before = q.before === undefined ? null : decodeBefore(q.before);
    deps.queries.rejections(q.filter, q.code ?? null, (t) => p.perms.canRead(t), q.limit, before)
      .then((page) => sendJson(res, { rejections: page.rows, next_before: page.next === null ? null : encodeBefore(page.next) }))
      .catch((e: unknown) => next(readError(e)));
  });
  return r;
}
