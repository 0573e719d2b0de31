/**
 * The read API as a client sees it, over HTTP on loopback: a login, timed history requests, and a CSV
 * export streamed and counted as it arrives (rows are discarded, so the bench holds no more than a chunk).
 */
import { request } from 'node:http';
import { Histogram, type LatencySummary } from './histogram.js';

export async function login(base: string, username: string, password: string): Promise<string> {
  const res = await fetch(`${base}/api/v1/auth/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password }),
  });
  const body = (await res.json()) as { access_token?: string };
  if (res.status !== 200 || typeof body.access_token !== 'string') throw new Error(`login: HTTP ${res.status} ${JSON.stringify(body)}`);
  return body.access_token;
}

/** One bucket of an aggregated history answer. */
export interface Bucket {
  readonly timestamp: string;
  readonly avg?: number | null;
  readonly min?: number | null;
  readonly max?: number | null;
}

export interface HistoryTiming {
  readonly url: string;
  readonly runs: number;
  /** The first (cold) request, not in the summary. */
  readonly warmupMs: number;
  readonly ms: LatencySummary;
  /** Buckets in the last answer, and whether it was complete (no next_cursor). */
  readonly buckets: number;
  readonly complete: boolean;
  readonly bytes: number;
}

/**
 * One warm-up request, then `runs` timed ones, one after another; each is timed to the end of its body.
 * Also returns the last answer's buckets, to compare stores.
 */
export async function timeHistory(base: string, token: string, path: string, runs: number): Promise<{ timing: HistoryTiming; buckets: Bucket[] }> {
  const hist = new Histogram();
  let last: { datapoints?: Bucket[]; next_cursor?: string | null } = {};
  let bytes = 0;
  const once = async (): Promise<number> => {
    const t0 = performance.now();
    const res = await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${token}` } });
    const text = await res.text();
    const ms = performance.now() - t0;
    if (res.status !== 200) throw new Error(`GET ${path}: HTTP ${res.status} ${text.slice(0, 300)}`);
    last = JSON.parse(text) as typeof last;
    bytes = text.length;
    return ms;
  };
  const warmupMs = Math.round((await once()) * 100) / 100;
  for (let i = 0; i < runs; i++) hist.record(await once());
  const timing = {
    url: path, runs, warmupMs, ms: hist.summary(), buckets: last.datapoints?.length ?? 0,
    complete: last.next_cursor === null, bytes,
  };
  return { timing, buckets: last.datapoints ?? [] };
}

/** How two answers differ: buckets only in one of them, and the largest difference of avg, min or max. */
export function compareBuckets(a: readonly Bucket[], b: readonly Bucket[]): { onlyInOne: number; maxDiff: number } {
  const byTime = new Map(b.map((x) => [x.timestamp, x]));
  let onlyInOne = 0;
  let maxDiff = 0;
  for (const x of a) {
    const y = byTime.get(x.timestamp);
    if (!y) { onlyInOne++; continue; }
    byTime.delete(x.timestamp);
    for (const k of ['avg', 'min', 'max'] as const) {
      const u = x[k];
      const v = y[k];
      if (u === v) continue;
      maxDiff = Math.max(maxDiff, u === null || u === undefined || v === null || v === undefined ? Infinity : Math.abs(u - v));
    }
  }
  return { onlyInOne: onlyInOne + byTime.size, maxDiff };
}

export interface ExportTiming {
  readonly url: string;
  readonly status: number;
  /** Data rows (lines after the CSV header). */
  readonly rows: number;
  readonly bytes: number;
  /** Request sent -> response headers (the first batch is fetched before them). */
  readonly ttfbS: number;
  readonly totalS: number;
  readonly rowsPerS: number;
  readonly mbPerS: number;
}

/** Streams the export, counting line ends; `onProgress` is called with the rows so far about every 0.5 s. */
export function streamExport(base: string, token: string, path: string, onProgress: (rows: number) => void = () => undefined): Promise<ExportTiming> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let ttfb = 0;
    let lines = 0;
    let bytes = 0;
    let lastTick = t0;
    const req = request(`${base}${path}`, { headers: { authorization: `Bearer ${token}`, accept: 'text/csv' } }, (res) => {
      ttfb = performance.now() - t0;
      if (res.statusCode !== 200) {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => { body += d; });
        res.on('end', () => reject(new Error(`GET ${path}: HTTP ${res.statusCode} ${body.slice(0, 300)}`)));
        return;
      }
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        for (let k = chunk.indexOf(10); k >= 0; k = chunk.indexOf(10, k + 1)) lines++;
        const now = performance.now();
        if (now - lastTick > 500) { lastTick = now; onProgress(Math.max(0, lines - 1)); }
      });
      res.on('end', () => {
        const totalS = (performance.now() - t0) / 1000;
        const rows = Math.max(0, lines - 1);
        resolve({
          url: path, status: res.statusCode ?? 0, rows, bytes, ttfbS: Math.round(ttfb) / 1000, totalS: Math.round(totalS * 1000) / 1000,
          rowsPerS: Math.round(rows / totalS), mbPerS: Math.round((bytes / 1048576 / totalS) * 10) / 10,
        });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}
