/**
 * The HTTP API: one express app, one router per resource, one error handler. It knows nothing of the
 * broker or the store beyond ApiDeps, which the composition root builds.
 */
import express, { type Express } from 'express';
import { ApiError, errorHandler } from './errors.js';
import type { ApiDeps } from './deps.js';
import { authRouter } from './routes/auth.js';
import { namespaceRouter } from './routes/namespace.js';
import { datapointsRouter } from './routes/datapoints.js';
import { exportRouter } from './routes/export.js';
import { publishRouter } from './routes/publish.js';
import { eventsRouter } from './routes/events.js';
import { webhooksRouter } from './routes/webhooks.js';
import { rulesRouter } from './routes/rules.js';
import { sparkplugRouter } from './routes/sparkplug.js';
import { ingestRouter } from './routes/ingest.js';
import { rejectionsRouter } from './routes/rejections.js';
import { sendJson } from './json.js';
import { join } from 'node:path';
import { packageRoot } from '../core/index.js';

/**
 * The Explorer's page may load only what this server serves (no CDN, no inline script), talk only to it
 * (HTTP and the WebSocket stream), and not be framed.
 */
const UI_CSP = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/** Routes not audited line by line: data writes, at message rates. */
const AUDIT_SKIP = new Set(['/api/v1/publish', '/api/v1/ingest/:source']);

export function createApp(deps: ApiDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('query parser', 'simple');

  app.use((req, res, next) => {
    const started = performance.now();
    res.on('finish', () => {
      const route = (req.route as { path?: string } | undefined)?.path ?? 'unmatched';
      deps.metrics.httpRequests.inc({ route, status: String(res.statusCode) });
      deps.metrics.httpSeconds.observe({ route }, (performance.now() - started) / 1000);
      // Audit: every change made through the API (tokens, webhooks, rules, replays, Sparkplug commands), who
      // made it and what it answered. Data writes (publish, ingest) and logins are logged where they happen.
      if (req.method !== 'GET' && req.method !== 'HEAD' && req.principal && !AUDIT_SKIP.has(route)) {
        deps.log.info({ audit: true, actor: req.principal.username, via: req.principal.via, method: req.method, route, params: req.params, status: res.statusCode }, 'api change');
      }
    });
    next();
  });

  // Liveness: the process serves requests. Never depends on the database (a restart would not help).
  app.get('/health', (_req, res) => {
    res.json({ status: 'ok', uptimeS: Math.round(process.uptime()) });
  });

  // Readiness: 200 when every dependency is well, 503 with the reasons when degraded.
  app.get('/ready', (_req, res) => {
    const r = deps.readiness();
    res.status(r.ready ? 200 : 503).json(r);
  });

  app.get('/metrics', (_req, res, next) => {
    deps.metrics.registry.metrics().then((text) => {
      res.type(deps.metrics.registry.contentType).send(text);
    }, next);
  });

  app.get('/api/v1/openapi.json', (_req, res) => sendJson(res, deps.openapi));

  // Publish takes the raw body (the payload exactly as sent): mounted before the JSON parser.
  app.use(publishRouter(deps));
  // Signed ingest verifies its HMAC over the raw bytes: also before the JSON parser.
  app.use(ingestRouter(deps));
  app.use(express.json({ limit: deps.limits.bodyBytes, type: ['application/json', 'application/*+json'] }));
  app.use(authRouter(deps));
  app.use(namespaceRouter(deps));
  app.use(datapointsRouter(deps));
  app.use(exportRouter(deps));
  app.use(rejectionsRouter(deps));
  app.use(eventsRouter(deps));
  app.use(webhooksRouter(deps));
  app.use(rulesRouter(deps));
  app.use(sparkplugRouter(deps));

  // The Explorer (built into dist/ui by `npm run build`): static files; its data comes from the API above.
  app.get('/', (_req, res) => res.redirect(302, '/ui/'));
  app.use('/ui', (_req, res, next) => {
    res.setHeader('Content-Security-Policy', UI_CSP);
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Referrer-Policy', 'no-referrer');
    next();
  }, express.static(join(packageRoot(), 'dist', 'ui'), { index: 'index.html', redirect: true }));

  app.use((_req, _res, next) => next(new ApiError('UNS_ERR_NOT_FOUND', 'no such endpoint')));
  app.use(errorHandler(deps.log));
  return app;
}
