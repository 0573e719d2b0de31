/**
 * Delivery ids seen per inbound ingest source (table ingest_dedup), so a redelivered request is answered
 * `{"duplicate": true}` and stored once. An id is recorded only after its values are durable: a crash in
 * between means the sender's retry is stored again (at least once) rather than lost. Ids are kept
 * `retentionMs` (7 days), far beyond the 5-minute timestamp tolerance, and pruned at most hourly.
 */
import type pg from 'pg';

export const DEDUP_RETENTION_MS = 7 * 86_400_000;
const PRUNE_EVERY_MS = 3_600_000;

export class IngestDedupStore {
  private lastPrune = 0;

  constructor(private readonly pool: pg.Pool, private readonly now: () => number = Date.now, private readonly retentionMs = DEDUP_RETENTION_MS) {}

  async seen(source: string, deliveryId: string): Promise<boolean> {
    const r = await this.pool.query('SELECT 1 FROM ingest_dedup WHERE source = $1 AND delivery_id = $2', [source, deliveryId]);
    return (r.rowCount ?? 0) > 0;
  }

  async record(source: string, deliveryId: string): Promise<void> {
    await this.pool.query(
      'INSERT INTO ingest_dedup (source, delivery_id, received_at) VALUES ($1, $2, $3) ON CONFLICT (source, delivery_id) DO NOTHING',
      [source, deliveryId, new Date(this.now())],
    );
    const now = this.now();
    if (now - this.lastPrune >= PRUNE_EVERY_MS) {
      this.lastPrune = now;
      await this.pool.query('DELETE FROM ingest_dedup WHERE received_at < $1', [new Date(now - this.retentionMs)]).catch(() => undefined);
    }
  }
}
