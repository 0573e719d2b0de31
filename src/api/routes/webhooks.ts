/**
 * Outbound webhooks: `/api/v1/webhooks` (CRUD, secret rotation, test send), the event catalog, the delivery
 * log with replays, and statistics. Any authenticated principal manages its own webhooks; admins see and
 * manage all. A webhook's topic filters must lie inside its owner's read permissions (403 otherwise), and
 * deliveries are checked against them again per event (bridge/sinks/webhooks/matcher.ts).
 * Secrets are returned only by create and rotation; auth-like custom header values are always redacted.
 */
import { Router, type Request, type RequestHandler } from 'express';
import type { ApiDeps } from '../deps.js';
import { ApiError } from '../errors.js';
import { isAdmin, principalOf, requireAuth, type ApiPrincipal } from '../auth.js';
import { sendJson } from '../json.js';
import {
  EVENT_CATALOG, ENVELOPE_SCHEMA, catalogEntry, redactHeaders, isValidSecret,
  type WebhookService, type WebhookRecord, type WebhookSummary, type WebhookInput, type DeliveryView, type AttemptView,
  type DeliveryFilterStatus, type Outcome,
} from '../../../bridge/index.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const DELIVERY_ID = /^msg_[0-9a-z]{1,40}$/;
const WEEK_MS = 7 * 86_400_000;

const iso = (ms: number | null | undefined): string | null => (ms === null || ms === undefined ? null : new Date(ms).toISOString());

function webhookJson(rec: WebhookRecord, now: number, summary?: WebhookSummary): Record<string, unknown> {
  const active = rec.secrets.filter((s) => s.expiresAt === null || s.expiresAt > now);
  const previous = active.filter((s) => s.expiresAt !== null).map((s) => s.expiresAt as number);
  const out: Record<string, unknown> = {
    id: rec.id, name: rec.name, description: rec.description, url: rec.url, events: rec.events,
    headers: redactHeaders(rec.headers), is_active: rec.isActive, disabled_reason: rec.disabledReason,
    retry_config: { schedule_s: rec.retry.scheduleS, timeout_ms: rec.retry.timeoutMs },
    filters: { topics: rec.topics, conditions: rec.conditions },
    payload_template: rec.template,
    batch: { max_size: rec.batch.maxSize, max_linger_ms: rec.batch.maxLingerMs },
    ordered: rec.ordered, max_concurrency: rec.maxConcurrency, owner: rec.owner,
    health: {
      state: !rec.isActive ? 'disabled' : rec.failingSince !== null ? 'failing' : 'healthy',
      failing_since: iso(rec.failingSince), last_success_at: iso(rec.lastSuccessAt),
    },
    secrets: { active: active.length, previous_expires_at: previous.length > 0 ? iso(Math.max(...previous)) : null },
    created_at: iso(rec.createdAt), updated_at: iso(rec.updatedAt),
  };
  const s = summary ?? { deliveries: 0, succeeded: 0, dead: 0, pending: 0, lastTriggeredAt: null };
  out['success_count'] = s.succeeded;
  out['failure_count'] = s.dead;
  out['pending_count'] = s.pending;
  out['success_rate'] = s.succeeded + s.dead === 0 ? null : Math.round((s.succeeded / (s.succeeded + s.dead)) * 1000) / 10;
  out['last_triggered'] = iso(s.lastTriggeredAt);
  return out;
}

function attemptJson(a: AttemptView): Record<string, unknown> {
  return {
    attempt: a.attempt, started_at: iso(a.startedAt), response_code: a.statusCode, latency_ms: a.latencyMs,
    response_excerpt: a.responseExcerpt, error_class: a.errorClass, outcome: a.outcome, next_retry_at: iso(a.nextRetryAt),
  };
}

function deliveryJson(d: DeliveryView): Record<string, unknown> {
  return {
    id: d.id, event_type: d.eventType, event_ids: d.eventIds, status: d.status, attempts: d.attempts, dead_reason: d.deadReason,
    next_attempt_at: iso(d.nextAttemptAt), created_at: iso(d.createdAt), last_attempt_at: iso(d.lastAttemptAt),
    response_code: d.last?.statusCode ?? null, latency_ms: d.last?.latencyMs ?? null, response_excerpt: d.last?.responseExcerpt ?? null,
    error_class: d.last?.errorClass ?? null,
  };
}

/** Headers as sent, for the test result: signatures shown (they are not secrets), auth-like custom values redacted. */
function sentHeaders(h: Readonly<Record<string, string>>): Record<string, string> {
  const out = redactHeaders(h);
  for (const k of ['webhook-signature', 'x-webhook-signature']) if (h[k] !== undefined) out[k] = h[k];
  return out;
}

/** Bodies that may be left out entirely (no Content-Type, no bytes) validate as {}. */
const optionalBody: RequestHandler = (req, _res, next) => {
  if (req.body === undefined) req.body = {};
  next();
};

function parseBody(text: string): unknown {
  try { return JSON.parse(text); } catch { return text; }
}

function time(v: unknown, what: string): number | undefined {
  if (v === undefined || v === '') return undefined;
  const t = typeof v === 'string' ? Date.parse(v) : NaN;
  if (Number.isNaN(t)) throw new ApiError('UNS_ERR_BAD_REQUEST', `${what}: not an ISO-8601 date-time`);
  return t;
}

function unwrap<T>(o: Outcome<T>): T {
  if (!o.ok) throw new ApiError(o.code, o.message);
  return o.value;
}

export function webhooksRouter(deps: ApiDeps): Router {
  const r = Router();
  const auth = requireAuth(deps.auth);
  const service = (): WebhookService => {
    if (deps.webhooks === undefined) throw new ApiError('UNS_ERR_UNAVAILABLE', 'webhooks are not running');
    return deps.webhooks;
  };

  /** The webhook named in the path, if this principal may see it; 404 otherwise (existence is not leaked). */
  async function owned(req: Request, p: ApiPrincipal): Promise<WebhookRecord> {
    const id = String(req.params['id']);
    const rec = UUID.test(id) ? await service().store.get(id) : undefined;
    if (rec === undefined || (!isAdmin(p) && rec.owner !== p.username)) throw new ApiError('UNS_ERR_NOT_FOUND', 'no such webhook');
    return rec;
  }

  // The catalog first, so 'events' is not taken for an id.
  r.get('/api/v1/webhooks/events', auth, (_req, res) => {
    const categories = [...new Set(EVENT_CATALOG.map((e) => e.category))].map((name) => ({ name, event_count: EVENT_CATALOG.filter((e) => e.category === name).length }));
    sendJson(res, { events: EVENT_CATALOG, envelope_schema: ENVELOPE_SCHEMA, categories });
  });

  r.get('/api/v1/webhooks/events/:name', auth, (req, res, next) => {
    const e = catalogEntry(String(req.params['name']));
    if (e === undefined) { next(new ApiError('UNS_ERR_NOT_FOUND', 'no such event type')); return; }
    const example = e.batched
      ? { id: 'msg_0m3k2a9x1a1b2c3d4e5f6a7b8c9d0', type: e.name, timestamp: '2026-01-15T10:30:00.250Z', data: e.example_payload }
      : { id: 'evt_m3k2a9x10001ab12', type: e.name, timestamp: '2026-01-15T10:30:00.000Z', ...(e.requires === 'topic' ? { topic: e.example_payload['topic'] } : {}), data: e.example_payload };
    sendJson(res, { ...e, example_delivery: example });
  });

  r.get('/api/v1/webhooks', auth, deps.validator.query('WebhookListQuery'), (req, res, next) => {
    const p = principalOf(req);
    const q = req.query as unknown as { status?: 'active' | 'inactive' | 'disabled'; event?: string; limit: number; offset: number };
    const s = service();
    (async () => {
      const { items, total } = await s.store.list({ owner: isAdmin(p) ? null : p.username, status: q.status, event: q.event, limit: q.limit, offset: q.offset });
      const sums = await s.store.summaries(items.map((w) => w.id));
      const now = s.now();
      sendJson(res, { webhooks: items.map((w) => webhookJson(w, now, sums.get(w.id))), total, limit: q.limit, offset: q.offset });
    })().catch(next);
  });

  r.post('/api/v1/webhooks', auth, deps.validator.body('WebhookCreate'), (req, res, next) => {
    const p = principalOf(req);
    const s = service();
    s.create(req.body as WebhookInput, p.username, p.roles).then((o) => {
      const { record, secret } = unwrap(o);
      sendJson(res, { ...webhookJson(record, s.now()), secret }, 201);
    }).catch(next);
  });

  r.get('/api/v1/webhooks/:id', auth, (req, res, next) => {
    const p = principalOf(req);
    const s = service();
    owned(req, p).then(async (rec) => {
      const sums = await s.store.summaries([rec.id]);
      sendJson(res, webhookJson(rec, s.now(), sums.get(rec.id)));
    }).catch(next);
  });

  const update = (mode: 'replace' | 'merge', schema: string) =>
    [auth, deps.validator.body(schema), (req: Request, res: import('express').Response, next: import('express').NextFunction) => {
      const p = principalOf(req);
      const s = service();
      owned(req, p).then(async (rec) => {
        const { record, secret } = unwrap(await s.update(rec, req.body as Partial<WebhookInput>, mode));
        const sums = await s.store.summaries([record.id]);
        sendJson(res, { ...webhookJson(record, s.now(), sums.get(record.id)), ...(secret !== null ? { secret } : {}) });
      }).catch(next);
    }] as const;
  r.put('/api/v1/webhooks/:id', ...update('replace', 'WebhookCreate'));
  r.patch('/api/v1/webhooks/:id', ...update('merge', 'WebhookPatch'));

  r.delete('/api/v1/webhooks/:id', auth, (req, res, next) => {
    const p = principalOf(req);
    owned(req, p).then(async (rec) => {
      await service().remove(rec.id);
      res.status(204).end();
    }).catch(next);
  });

  r.post('/api/v1/webhooks/:id/rotate-secret', auth, optionalBody, deps.validator.body('WebhookRotate'), (req, res, next) => {
    const p = principalOf(req);
    const body = (req.body ?? {}) as { secret?: string; grace_s?: number };
    const s = service();
    owned(req, p).then(async (rec) => {
      if (body.secret !== undefined && !isValidSecret(body.secret)) {
        throw new ApiError('UNS_ERR_BAD_REQUEST', 'secret: use whsec_ followed by base64 of 24 to 64 random bytes');
      }
      const out = await s.rotate(rec, body.secret, body.grace_s);
      sendJson(res, { ...webhookJson(out.record, s.now()), secret: out.secret });
    }).catch(next);
  });

  r.post('/api/v1/webhooks/:id/test', auth, optionalBody, deps.validator.body('WebhookTest'), (req, res, next) => {
    const p = principalOf(req);
    const s = service();
    const payload = (req.body as { payload?: Record<string, unknown> } | undefined)?.payload;
    owned(req, p).then(async (rec) => {
      const t = await s.test(rec, payload);
      const ok = t.result.kind === 'response' && t.result.status >= 200 && t.result.status <= 299;
      sendJson(res, {
        delivery_id: t.deliveryId,
        status: ok ? 'success' : 'failed',
        response_code: t.result.kind === 'response' ? t.result.status : null,
        response_time_ms: Math.round(t.result.latencyMs),
        response_body: t.result.kind === 'response' ? t.result.bodyExcerpt.slice(0, 1024) : null,
        error_class: t.result.kind === 'error' ? t.result.errorClass : null,
        error_message: t.result.kind === 'error' ? t.result.message : null,
        // Signatures are not secrets; custom auth-like headers are redacted as everywhere else.
        headers_sent: sentHeaders(t.headers),
        body_sent: parseBody(t.body),
        timestamp: iso(s.now()),
      });
    }).catch(next);
  });

  r.get('/api/v1/webhooks/:id/deliveries', auth, deps.validator.query('WebhookDeliveryQuery'), (req, res, next) => {
    const p = principalOf(req);
    const q = req.query as unknown as { status?: DeliveryFilterStatus; event?: string; since?: string; until?: string; limit: number; offset: number };
    owned(req, p).then(async (rec) => {
      const { items, total } = await service().deliveries.list({
        webhookId: rec.id, status: q.status, eventType: q.event, since: time(q.since, 'since'), until: time(q.until, 'until'), limit: q.limit, offset: q.offset,
      });
      sendJson(res, { deliveries: items.map(deliveryJson), total, limit: q.limit, offset: q.offset });
    }).catch(next);
  });

  r.get('/api/v1/webhooks/:id/deliveries/:delivery_id', auth, (req, res, next) => {
    const p = principalOf(req);
    const did = String(req.params['delivery_id']);
    owned(req, p).then(async (rec) => {
      const d = DELIVERY_ID.test(did) ? await service().deliveries.get(rec.id, did) : undefined;
      if (d === undefined) throw new ApiError('UNS_ERR_NOT_FOUND', 'no such delivery');
      sendJson(res, { delivery: deliveryJson(d.delivery), payload: parseBody(d.body), attempts: d.attempts.map(attemptJson) });
    }).catch(next);
  });

  r.post('/api/v1/webhooks/:id/deliveries/:delivery_id/replay', auth, (req, res, next) => {
    const p = principalOf(req);
    const did = String(req.params['delivery_id']);
    owned(req, p).then(async (rec) => {
      const out = DELIVERY_ID.test(did) ? await service().replayOne(rec.id, did) : 'not-found';
      if (out === 'not-found') throw new ApiError('UNS_ERR_NOT_FOUND', 'no such delivery');
      if (out === 'in-flight') throw new ApiError('UNS_ERR_BAD_REQUEST', 'the delivery is being attempted right now');
      sendJson(res, { replayed: 1, delivery_id: did, is_active: rec.isActive }, 202);
    }).catch(next);
  });

  r.post('/api/v1/webhooks/:id/replay', auth, deps.validator.body('WebhookReplayRequest'), (req, res, next) => {
    const p = principalOf(req);
    const body = req.body as { since: string; until?: string };
    owned(req, p).then(async (rec) => {
      const since = time(body.since, 'since') as number;
      const n = await service().replaySince(rec.id, since, time(body.until, 'until'));
      sendJson(res, { replayed: n, is_active: rec.isActive }, 202);
    }).catch(next);
  });

  r.get('/api/v1/webhooks/:id/stats', auth, deps.validator.query('WebhookStatsQuery'), (req, res, next) => {
    const p = principalOf(req);
    const q = req.query as unknown as { since?: string; until?: string; group_by: 'hour' | 'day' };
    const s = service();
    owned(req, p).then(async (rec) => {
      const until = time(q.until, 'until') ?? s.now();
      const since = time(q.since, 'since') ?? until - WEEK_MS;
      const st = await s.deliveries.stats({ webhookId: rec.id, since, until, groupBy: q.group_by });
      sendJson(res, {
        webhook_id: rec.id,
        period: { since: iso(since), until: iso(until), group_by: q.group_by },
        summary: {
          total_deliveries: st.summary.totalDeliveries, succeeded: st.summary.succeeded, dead: st.summary.dead, pending: st.summary.pending,
          success_rate: st.summary.successRate, total_attempts: st.summary.totalAttempts, failed_attempts: st.summary.failedAttempts,
          total_retries: st.summary.totalRetries, avg_latency_ms: st.summary.avgLatencyMs,
        },
        events_by_type: st.eventsByType.map((e) => ({ event: e.event, count: e.count, succeeded: e.succeeded, dead: e.dead, success_rate: e.successRate })),
        time_series: st.timeSeries.map((t) => ({ bucket: iso(t.bucket), attempts: t.attempts, succeeded: t.succeeded, failed: t.failed, avg_latency_ms: t.avgLatencyMs })),
        error_breakdown: st.errorBreakdown.map((e) => ({ error_type: e.errorType, count: e.count, percentage: e.percentage })),
      });
    }).catch(next);
  });

  return r;
}
