/**
 * A synthetic history for the read scenarios, written straight into a store that uns-bridge has already
 * migrated (so `samples` is whatever the server made of it: a hypertable with continuous aggregates, or a
 * plain table). Rows are generated in PostgreSQL with generate_series, in time order as live ingest would
 * write them, by two connections at once, one day per statement.
 *
 * Shape, per second of the span: one sample of the hot topic (1 Hz, route `temperature`) and BG_PER_SECOND
 * samples of the background topics, each of which is sampled every BG_INTERVAL_S seconds (catch-all route).
 * 7 days: 17 rows/s x 604,800 s = 10,281,600 rows over 161 topics. Values are smooth functions of time, so
 * both stores hold exactly the same data and the same queries give the same answers.
 */
import pg from 'pg';
import { topicsFor, levelsOf } from './topics.js';

const BG_INTERVAL_S = 10;
const BG_PER_SECOND = 16;
const BG_TOPICS = BG_INTERVAL_S * BG_PER_SECOND;
const ROWS_PER_SECOND = BG_PER_SECOND + 1;
export const HOT_TOPIC = 'acme/plant1/brewing/line1/kettle/temperature';

export interface SeedResult {
  readonly rows: number;
  readonly topics: number;
  readonly hotTopic: string;
  /** The span [fromMs, toMs): whole days ending at the given end. */
  readonly fromMs: number;
  readonly toMs: number;
  readonly insertS: number;
  /** refresh_continuous_aggregate of samples_1m and samples_1h (TimescaleDB only). */
  readonly refreshS: number | null;
  readonly vacuumS: number;
  /** Heap + indexes (+ TOAST) of samples, chunks included, after VACUUM. */
  readonly samplesMb: number;
  /** The materialised continuous aggregates (TimescaleDB only). */
  readonly caggMb: number | null;
}

async function connect(url: string): Promise<pg.Client> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  return c;
}

const seconds = (t0: number): number => Math.round(performance.now() - t0) / 1000;

/** `toMs`: where the data ends (whole seconds); the same end gives two stores the same rows. */
export async function seedStore(url: string, opts: { days: number; toMs: number; timescale: boolean; progress: (msg: string) => void }): Promise<SeedResult> {
  const toS = Math.floor(opts.toMs / 1000);
  const fromS = toS - opts.days * 86_400;
  const main = await connect(url);
  try {
    const present = await main.query<{ n: string }>('SELECT count(*)::text AS n FROM samples');
    if (Number(present.rows[0]?.n) !== 0) throw new Error('seed: samples is not empty');
    const bg = Array.from({ length: BG_TOPICS / 8 }, (_, i) => topicsFor(i, 8)).flat();
    const names = [...bg, HOT_TOPIC];
    const r = await main.query<{ id: number; name: string }>(
      `INSERT INTO topics (name, levels, route, unit)
       SELECT * FROM unnest($1::text[], $2::jsonb[], $3::text[], $4::text[]) RETURNING id, name`,
      [names, names.map((n) => JSON.stringify(levelsOf(n))), names.map((n) => (n === HOT_TOPIC ? 'temperature' : 'catch-all')),
        names.map((n) => (n === HOT_TOPIC ? '°C' : null))],
    );
    const ids = new Map(r.rows.map((row) => [row.name, row.id]));
    const bgIds = bg.map((n) => ids.get(n) as number);
    const hotId = ids.get(HOT_TOPIC) as number;

    // Row n of a day: second n / 17 of it; slot 16 is the hot topic, slots 0-15 the background topics whose
    // turn it is in this second (topic k is sampled at seconds = k / 16 (mod 10)).
    const sql = `INSERT INTO samples (time, topic_id, v_num)
      SELECT TIMESTAMPTZ 'epoch' + s * INTERVAL '1 second',
        CASE WHEN k = ${BG_PER_SECOND} THEN $2::int ELSE ($3::int[])[(s % ${BG_INTERVAL_S}) * ${BG_PER_SECOND} + k + 1] END,
        CASE WHEN k = ${BG_PER_SECOND} THEN round((70 + 8 * sin(s / 1800.0) + 0.5 * sin(s * 0.37))::numeric, 3)::float8
             ELSE round((20 + 10 * sin(s / 7200.0 + (s % ${BG_INTERVAL_S}) * ${BG_PER_SECOND} + k))::numeric, 3)::float8 END
      FROM (SELECT $1::int8 + n / ${ROWS_PER_SECOND} AS s, n % ${ROWS_PER_SECOND} AS k
            FROM generate_series(0::int8, ${86_400 * ROWS_PER_SECOND - 1}::int8) n) g`;
    const t0 = performance.now();
    const days = Array.from({ length: opts.days }, (_, d) => fromS + d * 86_400);
    let done = 0;
    const worker = async (): Promise<void> => {
      const c = await connect(url);
      try {
        for (let day = days.shift(); day !== undefined; day = days.shift()) {
          await c.query(sql, [day, hotId, bgIds]);
          opts.progress(`seeded day ${++done}/${opts.days} (${seconds(t0)} s)`);
        }
      } finally {
        await c.end().catch(() => undefined);
      }
    };
    await Promise.all([worker(), worker()]);
    const insertS = seconds(t0);

    let refreshS: number | null = null;
    if (opts.timescale) {
      const t1 = performance.now();
      // Both at once: each reads the raw rows on its own connection and core.
      await Promise.all(['samples_1m', 'samples_1h'].map(async (view) => {
        const c = await connect(url);
        try { await c.query(`CALL refresh_continuous_aggregate('${view}', NULL, NULL)`); } finally { await c.end().catch(() => undefined); }
      }));
      refreshS = seconds(t1);
      opts.progress(`continuous aggregates refreshed (${refreshS} s)`);
    }
    // As autovacuum would after a bulk load: statistics for the planner, hint bits and the visibility map.
    const t2 = performance.now();
    await main.query('VACUUM (ANALYZE) samples');
    const vacuumS = seconds(t2);

    const count = await main.query<{ n: string }>('SELECT count(*)::text AS n FROM samples');
    const size = opts.timescale
      ? "SELECT (SELECT hypertable_size('samples')) AS s, (SELECT sum(hypertable_size(format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name)::regclass)) FROM timescaledb_information.continuous_aggregates) AS c"
      : "SELECT pg_total_relation_size('samples') AS s, NULL AS c";
    const sz = (await main.query<{ s: string; c: string | null }>(size)).rows[0];
    const mb = (b: string | null | undefined): number | null => (b === null || b === undefined ? null : Math.round(Number(b) / 1048576));
    return {
      rows: Number(count.rows[0]?.n ?? 0), topics: names.length, hotTopic: HOT_TOPIC, fromMs: fromS * 1000, toMs: toS * 1000,
      insertS, refreshS, vacuumS, samplesMb: mb(sz?.s) ?? 0, caggMb: opts.timescale ? mb(sz?.c) : null,
    };
  } finally {
    await main.end().catch(() => undefined);
  }
}
