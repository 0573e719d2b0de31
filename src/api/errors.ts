/**
 * One error shape for the whole API: {"error": {"code", "message"}} with the HTTP status the code implies.
 * Handlers throw (or pass to next) an ApiError; anything else is a 500 whose details go to the log only.
 */
import type { Request, Response, NextFunction } from 'express';
import type { ErrorCode } from '../core/index.js';
import type { Logger } from '../core/index.js';

export const STATUS: Partial<Record<ErrorCode, number>> = {
  UNS_ERR_BAD_REQUEST: 400,
  UNS_ERR_FILTER_INVALID: 400,
  UNS_ERR_UNAUTHENTICATED: 401,
  UNS_ERR_SIGNATURE_INVALID: 401,
  UNS_ERR_TIMESTAMP_SKEW: 401,
  UNS_ERR_FORBIDDEN: 403,
  UNS_ERR_NOT_AUTHORIZED: 403,
  UNS_ERR_TOPIC_RESERVED: 403,
  UNS_ERR_TOPIC_INVALID: 400,
  UNS_ERR_NOT_FOUND: 404,
  UNS_ERR_BODY_TOO_LARGE: 413,
  UNS_ERR_RATE_LIMITED: 429,
  UNS_ERR_UNAVAILABLE: 503,
  UNS_ERR_INTERNAL: 500,
};

export class ApiError extends Error {
  readonly status: number;
  constructor(readonly code: ErrorCode, message: string, readonly headers: Record<string, string> = {}, readonly details?: unknown) {
    super(message);
    this.name = 'ApiError';
    this.status = STATUS[code] ?? 400;
  }
}

export function sendError(res: Response, e: ApiError): void {
  for (const [k, v] of Object.entries(e.headers)) res.setHeader(k, v);
  res.status(e.status).json({ error: { code: e.code, message: e.message, ...(e.details !== undefined ? { details: e.details } : {}) } });
}

export function errorHandler(log: Logger) {
  return (err: unknown, _req: Request, res: Response, _next: NextFunction): void => {
    if (res.headersSent) { res.destroy(); return; }
    if (err instanceof ApiError) { sendError(res, err); return; }
    const e = err as { type?: string; status?: number; message?: string };
    // body-parser's own errors carry a type: map them to our codes.
    if (e.type === 'entity.too.large') { sendError(res, new ApiError('UNS_ERR_BODY_TOO_LARGE', 'request body too large')); return; }
    if (e.type === 'entity.parse.failed' || e.type === 'encoding.unsupported' || e.type === 'charset.unsupported') {
      sendError(res, new ApiError('UNS_ERR_BAD_REQUEST', 'request body is not valid JSON'));
      return;
    }
    log.error({ err: e.message }, 'unhandled API error');
    sendError(res, new ApiError('UNS_ERR_INTERNAL', 'internal error'));
  };
}
