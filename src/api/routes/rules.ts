/**
 * Threshold rules: /api/v1/rules. A rule's topic filter must lie inside the creator's read permissions
 * (403 otherwise); a caller sees the rules whose filter it could subscribe to (admins see all) and changes
 * only its own (admins any). Rules from topics.yaml are listed with source "file" and are read-only here.
 */
import { Router, type Request, type RequestHandler } from 'express';
import { ApiError } from '../errors.js';
import { principalOf, requireAuth, isAdmin, type ApiPrincipal } from '../auth.js';
import { validateTopicFilter } from '../../core/index.js';
import { sendJson } from '../json.js';
import type { ApiDeps } from '../deps.js';
import type { Rule, RuleInput } from '../../../bridge/index.js';

/** REST-managed rules per server at most: every message is matched against all of them. */
export const MAX_API_RULES = 1000;

interface RuleBody {
  name?: string; topic_filter?: string; operator?: RuleInput['operator']; threshold?: number; hysteresis?: number;
  min_duration_ms?: number; enabled?: boolean;
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function ruleJson(r: Rule): Record<string, unknown> {
  return {
    id: r.id, name: r.name, topic_filter: r.topicFilter, operator: r.operator, threshold: r.threshold, hysteresis: r.hysteresis,
    min_duration_ms: r.minDurationMs, enabled: r.enabled, source: r.source, owner: r.owner,
    ...(r.description !== undefined ? { description: r.description } : {}),
    created_at: iso(r.createdAt), updated_at: iso(r.updatedAt),
  };
}

/** A store failure is the database being unreachable, not a bug: the client may retry. */
function storeFailure(e: unknown): never {
  if (e instanceof ApiError) throw e;
  throw new ApiError('UNS_ERR_UNAVAILABLE', 'the rule could not be saved now (database unreachable); retry', { 'Retry-After': '1' });
}

export function rulesRouter(deps: ApiDeps): Router {
  const r = Router();
  const auth = requireAuth(deps.auth);

  const ready: RequestHandler = (_req, _res, next) => {
    next(deps.rules.ready ? undefined : new ApiError('UNS_ERR_UNAVAILABLE', 'threshold rules are not loaded yet (database unreachable); retry', { 'Retry-After': '1' }));
  };
  const visible = (p: ApiPrincipal, rule: Rule): boolean => isAdmin(p) || p.perms.canSubscribe(rule.topicFilter);
  /** The rule, if the caller may see it; 404 otherwise (a rule outside your permissions does not exist for you). */
  const find = (req: Request): Rule => {
    const rule = deps.rules.get(String(req.params['id']));
    if (!rule || !visible(principalOf(req), rule)) throw new ApiError('UNS_ERR_NOT_FOUND', 'no such rule');
    return rule;
  };
  const mayChange = (p: ApiPrincipal, rule: Rule): void => {
    if (rule.source === 'file') throw new ApiError('UNS_ERR_FORBIDDEN', 'this rule is defined in topics.yaml; change it there');
    if (!isAdmin(p) && rule.owner !== p.username) throw new ApiError('UNS_ERR_FORBIDDEN', 'only the owner of a rule (or an admin) may change it');
  };
  const checkFilter = (p: ApiPrincipal, filter: string): void => {
    const bad = validateTopicFilter(filter, deps.limits.topic);
    if (bad !== null) throw new ApiError('UNS_ERR_FILTER_INVALID', `topic_filter: ${bad}`);
    if (!p.perms.canSubscribe(filter)) throw new ApiError('UNS_ERR_FORBIDDEN', `topic_filter ${filter} is outside your read permissions`);
  };

  r.get('/api/v1/rules', auth, ready, (req, res) => {
    const p = principalOf(req);
    sendJson(res, { rules: deps.rules.list().filter((x) => visible(p, x)).map(ruleJson) });
  });

  r.post('/api/v1/rules', auth, ready, deps.validator.body('RuleCreate'), (req, res, next) => {
    Promise.resolve().then(async () => {
      const p = principalOf(req);
      const b = req.body as Required<Pick<RuleBody, 'name' | 'topic_filter' | 'operator' | 'threshold'>> & RuleBody;
      checkFilter(p, b.topic_filter);
      if (deps.rules.list().filter((x) => x.source === 'api').length >= MAX_API_RULES) {
        throw new ApiError('UNS_ERR_BAD_REQUEST', `at most ${MAX_API_RULES} rules may be created through the API`);
      }
      const rule = await deps.rules.create({
        name: b.name, topicFilter: b.topic_filter, operator: b.operator, threshold: b.threshold, hysteresis: b.hysteresis ?? 0,
        minDurationMs: b.min_duration_ms ?? 0, enabled: b.enabled ?? true,
      }, p.username, p.roles).catch(storeFailure);
      sendJson(res, ruleJson(rule), 201);
    }).catch(next);
  });

  r.get('/api/v1/rules/:id', auth, ready, (req, res, next) => {
    try {
      const p = principalOf(req);
      const rule = find(req);
      const states = deps.rules.engine.statesOf(rule.id).filter((s) => p.perms.canRead(s.topic))
        .map((s) => ({ topic: s.topic, state: s.state, since: iso(s.since), value: Number.isFinite(s.value) ? s.value : null }));
      sendJson(res, { ...ruleJson(rule), states });
    } catch (e) { next(e); }
  });

  r.patch('/api/v1/rules/:id', auth, ready, deps.validator.body('RuleUpdate'), (req, res, next) => {
    Promise.resolve().then(async () => {
      const p = principalOf(req);
      const cur = find(req);
      mayChange(p, cur);
      const b = req.body as RuleBody;
      if (b.topic_filter !== undefined) checkFilter(p, b.topic_filter);
      const rule = await deps.rules.update(cur.id, {
        name: b.name ?? cur.name, topicFilter: b.topic_filter ?? cur.topicFilter, operator: b.operator ?? cur.operator,
        threshold: b.threshold ?? cur.threshold, hysteresis: b.hysteresis ?? cur.hysteresis,
        minDurationMs: b.min_duration_ms ?? cur.minDurationMs, enabled: b.enabled ?? cur.enabled,
      }).catch(storeFailure);
      if (!rule) throw new ApiError('UNS_ERR_NOT_FOUND', 'no such rule');
      sendJson(res, ruleJson(rule));
    }).catch(next);
  });

  r.delete('/api/v1/rules/:id', auth, ready, (req, res, next) => {
    Promise.resolve().then(async () => {
      const cur = find(req);
      mayChange(principalOf(req), cur);
      if (!(await deps.rules.remove(cur.id).catch(storeFailure))) throw new ApiError('UNS_ERR_NOT_FOUND', 'no such rule');
      res.status(204).end();
    }).catch(next);
  });

  return r;
}
