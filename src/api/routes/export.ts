/**
 * Bulk export: `GET /api/v1/export.csv` (or `/api/v1/export`) streams every sample of the readable
 * topics under a filter in [from, to) as CSV (RFC 4180) or, with `Accept: application/x-ndjson` or
 * `format=ndjson`, as NDJSON. No row limit: rows come off a server-side cursor a batch at a time and the
 * next batch is fetched only once the socket has taken the last one, so memory stays flat however long
 * the export is. A client that disconnects cancels the query.
 */
import { Router, type Request, type Response } from 'express';
import { ApiError } from '../errors.js';
import { principalOf, requireAuth } from '../auth.js';
import { isoFromMicros, type ExportRow } from '../../../bridge/index.js';
import type { ApiDeps } from '../deps.js';
import { checkFilter, readError, timeRange } from './datapoints.js';

/**
 * Exports running at once. Each holds a database connection for its whole duration, and the pool is
 * shared with ingest: beyond this, 429 with Retry-After.
 */
export const MAX_CONCURRENT_EXPORTS = 2;
/** Rows per FETCH: large enough to amortise round trips, small enough to keep a batch well under 1 MB. */
const BATCH_ROWS = 2_000;
/** An export may cover any range, but not an absurd one (100 years). */
const MAX_EXPORT_SPAN_MS = 100 * 366 * 86_400_000;

type Format = 'csv' | 'ndjson';

/** RFC 4180 §2.6/2.7: quote a field holding a comma, quote, CR or LF; double the quotes inside. */
export function csvField(s: string): string {
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/**
 * A text cell (topic, unit, string value, quality): one starting with =, +, -, @, tab or CR would be run
 * as a formula by a spreadsheet, so it is prefixed with ' (OWASP's CSV injection advice). Numbers and
 * JSON values are not text cells and are left alone: -5 stays a number. (csv-stringify's escape_formulas
 * cannot tell the two apart, so it would turn every negative reading into text.)
 */
export function csvText(s: string): string {
  return csvField(/^[=+\-@\t\r]/.test(s) ? `'${s}` : s);
}

/** 2024-05-01T12:00:00.000Z -> 20240501T120000Z (milliseconds kept when not zero): safe in file names. */
function fileTime(ms: number): string {
  const iso = new Date(ms).toISOString().replace(/[-:]/g, '');
  return iso.endsWith('.000Z') ? `${iso.slice(0, -5)}Z` : iso;
}

function formatOf(req: Request, asked: Format | undefined): Format {
  if (asked) return asked;
  return req.accepts(['text/csv', 'application/x-ndjson']) === 'application/x-ndjson' ? 'ndjson' : 'csv';
}

/** Resolves once the socket can take more, or the response is gone. */
function drained(res: Response): Promise<void> {
  return new Promise((resolve) => {
    if (res.destroyed) { resolve(); return; }
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

export function exportRouter(deps: ApiDeps): Router {
  const r = Router();
  let running = 0;

  const handler = (req: Request, res: Response, next: (e?: unknown) => void): void => {
    const p = principalOf(req);
    const q = req.query as unknown as { filter: string; from?: string; to?: string; format?: Format };
    checkFilter(q.filter, deps);
    const { fromMs, toMs } = timeRange(q, deps.now(), MAX_EXPORT_SPAN_MS);
    const format = formatOf(req, q.format);
    if (running >= MAX_CONCURRENT_EXPORTS) {
      throw new ApiError('UNS_ERR_RATE_LIMITED', `at most ${MAX_CONCURRENT_EXPORTS} exports run at once`, { 'Retry-After': '10' });
    }
    running++;
    const ac = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) ac.abort();
    });

    (async () => {
      const topics = await deps.queries.topics(q.filter, (t) => p.perms.canRead(t));
      // Per-topic text is escaped once, not per row.
      const byId = new Map(topics.map((t) => [t.id, format === 'csv'
        ? { topic: csvText(t.name), unit: csvText(t.unit ?? '') }
        : { topic: JSON.stringify(t.name), unit: t.unit === null ? 'null' : JSON.stringify(t.unit) }]));
      const line = format === 'csv'
        ? (row: ExportRow): string => {
          const t = byId.get(row[0]);
          // row[3]: JSON of a number, boolean, object or array (never a formula); row[2]: a string value.
          const value = row[3] !== null ? csvField(row[3]) : row[2] === null ? '' : csvText(row[2]);
          return `${isoFromMicros(Number(row[1]))},${t?.topic ?? ''},${value},${row[4] === null ? 'good' : csvText(row[4])},${t?.unit ?? ''}\r\n`;
        }
        : (row: ExportRow): string => {
          const t = byId.get(row[0]);
          const value = row[3] ?? (row[2] === null ? 'null' : JSON.stringify(row[2]));
          return `{"time":"${isoFromMicros(Number(row[1]))}","topic":${t?.topic ?? 'null'},"value":${value},"quality":${row[4] === null ? '"good"' : JSON.stringify(row[4])},"unit":${t?.unit ?? 'null'}}\n`;
        };

      const rows = deps.queries.exportSamples(topics.map((t) => t.id), fromMs * 1000, toMs * 1000, { batchRows: BATCH_ROWS, signal: ac.signal });
      try {
        // The first batch comes before the headers, so a query that cannot start still gets a proper error.
        let batch = await rows.next();
        const ext = format === 'csv' ? 'csv' : 'ndjson';
        res.status(200);
        res.setHeader('Content-Type', format === 'csv' ? 'text/csv; charset=utf-8; header=present' : 'application/x-ndjson; charset=utf-8');
        res.setHeader('Content-Disposition', `attachment; filename="uns-export-${fileTime(fromMs)}-${fileTime(toMs)}.${ext}"`);
        res.setHeader('Cache-Control', 'no-store');
        let chunk = format === 'csv' ? 'time,topic,value,quality,unit\r\n' : '';
        while (!batch.done) {
          for (const row of batch.value) chunk += line(row);
          // Back-pressure: the next FETCH waits until the socket has taken this batch.
          if (!res.write(chunk)) await drained(res);
          chunk = '';
          if (ac.signal.aborted || res.destroyed) return;
          batch = await rows.next();
        }
        res.end(chunk);
      } finally {
        // However the loop ended, the cursor's connection goes back (or is closed): a no-op when done.
        await rows.return(undefined);
      }
    })().catch((e: unknown) => {
      if (ac.signal.aborted) return; // the client left: nothing to answer
      // Mid-stream there is no status left to send: the error handler cuts the response short, so the
      // client sees a truncated transfer rather than a file that looks complete.
      if (res.headersSent) deps.log.warn({ err: (e as Error).message }, 'export failed mid-stream');
      next(readError(e));
    }).finally(() => { running--; });
  };

  r.get('/api/v1/export.csv', requireAuth(deps.auth), deps.validator.query('ExportQuery'), handler);
  r.get('/api/v1/export', requireAuth(deps.auth), deps.validator.query('ExportQuery'), handler);
  return r;
}
