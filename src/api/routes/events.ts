/**
 * GET /api/v1/events/stream: the live datapoint stream as Server-Sent Events, for clients that cannot
 * speak WebSocket. Same credentials (Bearer header or `?token=`), same permission checks, same messages
 * as the WebSocket stream (live-session.ts), one SSE event per message with the message's `type` as the
 * event name: `subscribed`, `snapshot`, `history`, `datapoints_batch`, `gap`, and `error` just before
 * the server ends the stream (credential expired). Heartbeats are SSE comments.
 *
 * Unlike the WebSocket, the filters are fixed by the request, so they are all-or-nothing: a malformed
 * filter is a 400 and a filter outside the role's read permissions a 403, before any event is sent.
 */
import { Router } from 'express';
import type { ApiDeps } from '../deps.js';
import { credentialOf, principalOf, requireAuth } from '../auth.js';
import { ApiError } from '../errors.js';
import { livePolicy } from '../live-policy.js';
import { historyFrom } from '../live-history.js';
import { LiveSession, checkFilters } from '../live-session.js';
import type { LiveTransport } from '../live-outbox.js';

interface EventsQuery {
  filter: string[];
  deadband?: number;
  maxRate?: number;
  history?: number;
}

export function eventsRouter(deps: ApiDeps): Router {
  const r = Router();
  const history = historyFrom(deps.queries);
  const sessionDeps = { hub: deps.hub, queries: deps.queries, metrics: deps.metrics, log: deps.log, now: () => deps.now(), auth: deps.auth, history };

  r.get('/api/v1/events/stream', requireAuth(deps.auth, { allowQueryToken: true }), deps.validator.query('StreamEventsQuery'), (req, res, next) => {
    const principal = principalOf(req);
    const q = req.query as unknown as EventsQuery;
    const { accepted, refused } = checkFilters(q.filter, principal.perms, deps.limits.topic);
    const first = refused.find((x) => x.code === 'UNS_ERR_FILTER_INVALID') ?? refused[0];
    if (first) { next(new ApiError(first.code, first.message, {}, { filter: first.filter })); return; }

    const policy = livePolicy();
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache, no-transform',
      Connection: 'keep-alive',
      // Reverse proxies (nginx) must not hold events back.
      'X-Accel-Buffering': 'no',
    });
    // The reconnection delay a client should use; each reconnect gets a fresh snapshot.
    res.write(`retry: ${policy.sseRetryMs}\n\n`);
    const transport: LiveTransport = {
      name: 'sse',
      buffered: () => res.writableLength,
      // JSON text holds no raw newlines, so one `data:` line carries one message.
      write: (type, json) => { if (!res.writableEnded) res.write(`event: ${type}\ndata: ${json}\n\n`); },
      heartbeat: (ts) => { if (!res.writableEnded) res.write(`: heartbeat ${ts}\n\n`); },
      close: (code, reason) => {
        if (res.writableEnded || res.destroyed) return;
        if (code === 1013) { res.destroy(); return; } // too slow: nothing more can reach it anyway
        if (code === 4401) res.write(`event: error\ndata: ${JSON.stringify({ type: 'error', error: { code: 'UNS_ERR_UNAUTHENTICATED', message: reason } })}\n\n`);
        res.end();
      },
    };
    const session = new LiveSession(sessionDeps, principal, transport, policy, credentialOf(req, true) ?? '');
    deps.metrics.sseClients.inc();
    res.on('close', () => { session.close(); deps.metrics.sseClients.dec(); });
    session.subscribe({
      filters: accepted, deadband: q.deadband, maxRate: q.maxRate,
      history: q.history !== undefined ? { seconds: q.history } : undefined,
    }).catch((e: Error) => {
      deps.log.error({ err: e.message }, 'SSE subscribe failed');
      session.end(1011, 'internal error');
    });
  });
  return r;
}
