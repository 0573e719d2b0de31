/**
 * The HTTP API. For now: liveness and readiness. The app knows nothing of the broker or the store; the
 * composition root passes a function that reports their state.
 */
import express, { type Express, type Request, type Response, type NextFunction } from 'express';
import type { Logger } from '../core/log.js';

export interface ReadinessReport {
  readonly ready: boolean;
  readonly status: 'ready' | 'degraded' | 'starting' | 'stopping';
  readonly checks: Record<string, unknown>;
}

export interface AppOptions {
  readonly readiness: () => ReadinessReport;
  readonly log: Logger;
}

export function createApp(opts: AppOptions): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  // Liveness: the process serves requests. Never depends on the database (a restart would not help).
  app.get('/health', (_req, res) => {
    res.json({ status: 'ok', uptimeS: Math.round(process.uptime()) });
  });

  // Readiness: 200 when every dependency is well, 503 with the reasons when degraded.
  app.get('/ready', (_req, res) => {
    const r = opts.readiness();
    res.status(r.ready ? 200 : 503).json(r);
  });

  app.use((_req, res) => {
    res.status(404).json({ error: { code: 'UNS_ERR_NOT_FOUND', message: 'no such endpoint' } });
  });

  app.use((err: Error, _req: Request, res: Response, _next: NextFunction) => {
    opts.log.error({ err: err.message }, 'unhandled API error');
    res.status(500).json({ error: { code: 'UNS_ERR_INTERNAL', message: 'internal error' } });
  });
  return app;
}
