/**
 * Replays rows the database refused (code UNS_ERR_STORE_REJECTED) once their cause is fixed: each kept write
 * item is written again, item by item. A row that commits is marked replayed in the same transaction, so a
 * replay run, interrupted or repeated, applies each row once; a row still refused stays, with the new reason.
 */
import type { PgStore } from './pg-store.js';
import type { WriteItem } from './rows.js';

export interface ReplayReport {
  /** Rows whose item is now stored. */
  replayed: number;
  /** Rows the database still refuses, with the first few reasons. */
  stillRefused: number;
  reasons: string[];
}

export interface ReplayOptions {
  /** Only rejections whose topic starts with this. */
  readonly topicPrefix?: string | undefined;
  /** Count what would be replayed, write nothing. */
  readonly dryRun?: boolean | undefined;
  readonly chunk?: number | undefined;
}

export async function replayStoreRejections(store: PgStore, opts: ReplayOptions = {}): Promise<ReplayReport> {
  const report: ReplayReport = { replayed: 0, stillRefused: 0, reasons: [] };
  const prefix = opts.topicPrefix ?? '';
  const chunk = opts.chunk ?? 500;
  let after = '0';
  for (;;) {
    const r = await store.pool.query<{ id: string; item: Buffer }>(
      `SELECT id::text AS id, item FROM rejections
       WHERE code = 'UNS_ERR_STORE_REJECTED' AND item IS NOT NULL AND replayed_at IS NULL AND id > $1::int8
         AND left(topic, length($2)) = $2
       ORDER BY id LIMIT $3`, [after, prefix, chunk]);
    if (r.rows.length === 0) break;
    after = (r.rows[r.rows.length - 1] as { id: string }).id;
    if (opts.dryRun) { report.replayed += r.rows.length; continue; }
    const items = r.rows.map((row) => JSON.parse(row.item.toString('utf8')) as WriteItem);
    const out = await store.writeIsolated({ items }, { replayOf: r.rows.map((row) => row.id) });
    report.replayed += items.length - out.refused.length;
    report.stillRefused += out.refused.length;
    for (const x of out.refused) if (report.reasons.length < 5) report.reasons.push(x.error.message);
  }
  return report;
}
