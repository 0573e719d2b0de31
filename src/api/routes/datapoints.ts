/**
 * Datapoints: current values (`/api/v1/datapoints/latest`, WebMACS-compatible) and the history of one
 * topic (`/api/v1/datapoints/history`), raw with keyset paging or aggregated per time bucket. Only topics
 * inside the caller's read permissions are ever answered; values keep integers beyond 2^53 exact.
 *
 * Also home of the small parsers the read routes share (time ranges, database errors).
 */
import { Router } from 'express';
import { ApiError } from '../errors.js';
import { principalOf, requireAuth } from '../auth.js';
import { sendJson } from '../json.js';
import { validateTopicFilter, validateTopicName } from '../../core/index.js';
import { AGGREGATES, type Aggregate, type BucketName, type RawCursor } from '../../../bridge/index.js';
import type { ApiDeps } from '../deps.js';
import { isTransientDbError } from '../../core/index.js';

/** The widest history a single request may cover: a year and a day (leap years, DST). */
export const MAX_HISTORY_SPAN_MS = 366 * 86_400_000;
/** Without from/to: the last hour. */
export const DEFAULT_WINDOW_MS = 3_600_000;

const ISO = /^\d{4}-\d{2}-\d{2}(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?)?$/;

/** ISO-8601 (a date-time without an offset is UTC) or integer epoch milliseconds; null if neither. */
export function parseInstant(text: string): number | null {
  if (/^-?\d{1,16}$/.test(text)) {
    const n = Number(text);
    return Number.isSafeInteger(n) && Math.abs(n) <= 8.64e15 ? n : null;
  }
  if (!ISO.test(text)) return null;
  // Date.parse rolls 2024-02-30 over into March: refuse days the month does not have.
  const [y, m, d] = text.slice(0, 10).split('-').map(Number) as [number, number, number];
  if (m < 1 || m > 12 || d < 1 || d > new Date(Date.UTC(y, m, 0)).getUTCDate()) return null;
  // Normalise to the subset Date.parse reads reliably: 'T', milliseconds at most, offsets as ±hh:mm.
  let s = text.toUpperCase().replace(' ', 'T').replace(/(\.\d{3})\d+/, '$1');
  if (s.length > 10) {
    if (/[+-]\d{2}$/.test(s)) s += ':00';
    else if (/[+-]\d{4}$/.test(s)) s = `${s.slice(0, -2)}:${s.slice(-2)}`;
    else if (!/(?:[Zz]|[+-]\d{2}:\d{2})$/.test(s)) s += 'Z';
  }
  const ms = Date.parse(s);
  return Number.isFinite(ms) ? ms : null;
}

/**
 * [from, to) in epoch ms from optional query values: the default is the hour before `to` (or before
 * now). 400 UNS_ERR_BAD_REQUEST when unparsable, empty or reversed, or wider than `maxSpanMs`.
 */
export function timeRange(q: { from?: string | undefined; to?: string | undefined }, now: number, maxSpanMs: number): { fromMs: number; toMs: number } {
  const parse = (name: string, v: string | undefined): number | null => {
    if (v === undefined) return null;
    const t = parseInstant(v);
    if (t === null) throw new ApiError('UNS_ERR_BAD_REQUEST', `${name}: expected ISO-8601 or epoch milliseconds`);
    return t;
  };
  const from = parse('from', q.from);
  const to = parse('to', q.to);
  const toMs = to ?? (from !== null ? Math.max(now, from + 1) : now);
  const fromMs = from ?? toMs - DEFAULT_WINDOW_MS;
  if (fromMs >= toMs) throw new ApiError('UNS_ERR_BAD_REQUEST', 'from must be before to');
  if (toMs - fromMs > maxSpanMs) {
    throw new ApiError('UNS_ERR_BAD_REQUEST', `the range may span at most ${Math.floor(maxSpanMs / 86_400_000)} days`);
  }
  return { fromMs, toMs };
}

/** A read that failed because the database cannot answer now is a 503 to retry, not a 500. */
export function readError(e: unknown): unknown {
  if (e instanceof ApiError || !isTransientDbError(e)) return e;
  return new ApiError('UNS_ERR_UNAVAILABLE', 'the database cannot answer now; retry', { 'Retry-After': '5' });
}

/** 400 UNS_ERR_FILTER_INVALID for a malformed topic filter. */
export function checkFilter(filter: string, deps: ApiDeps): void {
  const bad = validateTopicFilter(filter, deps.limits.topic);
  if (bad !== null) throw new ApiError('UNS_ERR_FILTER_INVALID', `filter: ${bad}`);
}

// Cursors are opaque to clients: base64url of "r1:<µs>:<skip>" (raw pages) or "b1:<µs>" (bucket pages).
function encodeRawCursor(c: RawCursor): string {
  return Buffer.from(`r1:${c.us}:${c.skip}`).toString('base64url');
}

function encodeBucketCursor(us: number): string {
  return Buffer.from(`b1:${us}`).toString('base64url');
}

function decodeCursor(text: string): { kind: 'raw'; cursor: RawCursor } | { kind: 'bucket'; us: number } {
  const s = /^[A-Za-z0-9_-]+$/.test(text) ? Buffer.from(text, 'base64url').toString('latin1') : '';
  const raw = /^r1:(-?\d{1,17}):(\d{1,9})$/.exec(s);
  if (raw) return { kind: 'raw', cursor: { us: Number(raw[1]), skip: Number(raw[2]) } };
  const b = /^b1:(-?\d{1,17})$/.exec(s);
  if (b) return { kind: 'bucket', us: Number(b[1]) };
  throw new ApiError('UNS_ERR_BAD_REQUEST', 'cursor: not a cursor this endpoint returned');
}

interface HistoryQuery {
  topic: string;
  from?: string;
  to?: string;
  limit: number;
  cursor?: string;
  bucket?: BucketName;
  agg?: string;
}

export function datapointsRouter(deps: ApiDeps): Router {
  const r = Router();

  r.get('/api/v1/datapoints/latest', requireAuth(deps.auth), deps.validator.query('LatestQuery'), (req, res, next) => {
    const p = principalOf(req);
    const { filter } = req.query as unknown as { filter: string };
    checkFilter(filter, deps);
    deps.queries.latest(filter, (t) => p.perms.canRead(t))
      .then((datapoints) => sendJson(res, { datapoints }))
      .catch((e: unknown) => next(readError(e)));
  });

  r.get('/api/v1/datapoints/history', requireAuth(deps.auth), deps.validator.query('HistoryQuery'), (req, res, next) => {
    const p = principalOf(req);
    const q = req.query as unknown as HistoryQuery;
    const bad = validateTopicName(q.topic, deps.limits.topic);
    if (bad !== null) throw new ApiError('UNS_ERR_BAD_REQUEST', `topic: ${bad}`);
    if (!p.perms.canRead(q.topic)) throw new ApiError('UNS_ERR_FORBIDDEN', `your roles may not read ${q.topic}`);
    const { fromMs, toMs } = timeRange(q, deps.now(), MAX_HISTORY_SPAN_MS);
    if (q.agg !== undefined && q.bucket === undefined) throw new ApiError('UNS_ERR_BAD_REQUEST', 'agg needs bucket');
    const cursor = q.cursor === undefined ? null : decodeCursor(q.cursor);
    if (cursor !== null && (cursor.kind === 'bucket') !== (q.bucket !== undefined)) {
      throw new ApiError('UNS_ERR_BAD_REQUEST', 'cursor: it belongs to a listing of the other kind (raw vs bucket)');
    }
    const aggs: Aggregate[] = q.agg === undefined ? ['avg'] : [...new Set(q.agg.split(',') as Aggregate[])];
    const head = { topic: q.topic, from: new Date(fromMs).toISOString(), to: new Date(toMs).toISOString() };

    (async () => {
      const topic = await deps.queries.topicId(q.topic);
      if (q.bucket === undefined) {
        const after = cursor?.kind === 'raw' ? cursor.cursor : null;
        const page = topic === null ? { points: [], next: null } : await deps.queries.history(topic.id, fromMs * 1000, toMs * 1000, q.limit, after);
        sendJson(res, {
          ...head, unit: topic?.unit ?? null, datapoints: page.points,
          next_cursor: page.next === null ? null : encodeRawCursor(page.next),
        });
        return;
      }
      const after = cursor?.kind === 'bucket' ? cursor.us : null;
      const page = topic === null
        ? { points: [], next: null }
        : await deps.queries.aggregate(topic.id, fromMs * 1000, toMs * 1000, q.bucket, q.limit, after);
      const keep = AGGREGATES.filter((a) => aggs.includes(a));
      sendJson(res, {
        ...head, unit: topic?.unit ?? null, bucket: q.bucket, agg: keep,
        datapoints: page.points.map((pt) => {
          const out: Record<string, unknown> = { timestamp: pt.timestamp };
          for (const a of keep) out[a] = pt[a];
          return out;
        }),
        next_cursor: page.next === null ? null : encodeBucketCursor(page.next),
      });
    })().catch((e: unknown) => next(readError(e)));
  });

  return r;
}
