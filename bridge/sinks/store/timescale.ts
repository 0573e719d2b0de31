/**
 * TimescaleDB layer, applied at every start when the extension can be loaded: hypertable, compression
 * segmented by topic, 1 min / 1 h continuous aggregates of numeric values, and a drop_chunks retention
 * policy. Without the extension the plain PostgreSQL schema serves the same queries (documented fallback).
 * Every step is idempotent.
 */
import type pg from 'pg';
import { UnsError } from '../../../src/core/index.js';
import type { Logger } from '../../../src/core/index.js';

export type TimescaleMode = 'auto' | 'on' | 'off';

export interface TimescaleStatus {
  readonly enabled: boolean;
  readonly version?: string | undefined;
  /** Why it is off, when it is. */
  readonly reason?: string | undefined;
}

export interface TimescalePolicy {
  /** Compress chunks older than this (ms). */
  readonly compressAfterMs: number;
  /** drop_chunks after this (ms), or null to keep raw data (per-route deletes still run). */
  readonly dropAfterMs: number | null;
}

const CAGGS: ReadonlyArray<{ view: string; bucket: string; start: string; end: string; every: string }> = [
  { view: 'samples_1m', bucket: '1 minute', start: '2 hours', end: '1 minute', every: '1 minute' },
  { view: 'samples_1h', bucket: '1 hour', start: '3 days', end: '1 hour', every: '30 minutes' },
];

function interval(ms: number): string {
  return `${Math.max(1, Math.round(ms / 1000))} seconds`;
}

export async function setupTimescale(pool: pg.Pool, mode: TimescaleMode, policy: TimescalePolicy, log: Logger): Promise<TimescaleStatus> {
  if (mode === 'off') return { enabled: false, reason: 'disabled by configuration' };
  const off = (reason: string): TimescaleStatus => {
    if (mode === 'on') throw new UnsError('UNS_ERR_STORE_UNAVAILABLE', `TimescaleDB required but ${reason}`);
    log.info({ reason }, 'TimescaleDB not in use: plain PostgreSQL tables');
    return { enabled: false, reason };
  };
  const avail = await pool.query<{ v: string }>("SELECT default_version AS v FROM pg_available_extensions WHERE name = 'timescaledb'");
  if (avail.rowCount === 0) return off('the timescaledb extension is not installed on the server');
  try {
    await pool.query('CREATE EXTENSION IF NOT EXISTS timescaledb');
  } catch (e) {
    return off(`the extension could not be loaded (${(e as Error).message}); add timescaledb to shared_preload_libraries`);
  }
  const ver = await pool.query<{ v: string }>("SELECT extversion AS v FROM pg_extension WHERE extname = 'timescaledb'");
  const version = ver.rows[0]?.v;

  const ht = await pool.query("SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = 'samples'");
  if (ht.rowCount === 0) {
    await pool.query("SELECT create_hypertable('samples', 'time', chunk_time_interval => interval '1 day', migrate_data => true)");
    await pool.query(`ALTER TABLE samples SET (timescaledb.compress, timescaledb.compress_segmentby = 'topic_id',
      timescaledb.compress_orderby = 'time DESC')`);
    log.info('samples is now a hypertable with compression segmented by topic');
  }
  await pool.query(`SELECT add_compression_policy('samples', interval '${interval(policy.compressAfterMs)}', if_not_exists => true)`);

  for (const c of CAGGS) {
    await pool.query(`CREATE MATERIALIZED VIEW IF NOT EXISTS ${c.view} WITH (timescaledb.continuous) AS
      SELECT time_bucket(interval '${c.bucket}', time) AS bucket, topic_id,
             avg(v_num) AS avg, min(v_num) AS min, max(v_num) AS max, count(v_num) AS count,
             first(v_num, time) AS first, last(v_num, time) AS last
      FROM samples WHERE v_num IS NOT NULL GROUP BY 1, 2 WITH NO DATA`);
    await pool.query(`SELECT add_continuous_aggregate_policy('${c.view}', start_offset => interval '${c.start}',
      end_offset => interval '${c.end}', schedule_interval => interval '${c.every}', if_not_exists => true)`);
  }

  // The policy is replaced when topics.yaml changes the longest retention.
  await pool.query("SELECT remove_retention_policy('samples', if_exists => true)");
  if (policy.dropAfterMs !== null) {
    await pool.query(`SELECT add_retention_policy('samples', drop_after => interval '${interval(policy.dropAfterMs)}')`);
  }
  log.info({ version }, 'TimescaleDB in use');
  return { enabled: true, version };
}
