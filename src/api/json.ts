/** JSON responses that keep integers beyond 2^53 exact (express's res.json would throw on bigint). */
import type { Response } from 'express';
import { stringifyJson } from '../../bridge/index.js';
import type { JsonValue } from '../core/index.js';

export function toJson(body: unknown): string {
  return stringifyJson(body as JsonValue);
}

export function sendJson(res: Response, body: unknown, status = 200): void {
  res.status(status).type('application/json').send(toJson(body));
}
