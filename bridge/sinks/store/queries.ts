/**
 * Read queries over the store. Topic filters become anchored regular expressions with every other
 * character escaped, passed as parameters (never spliced into SQL). Results are further limited to what
 * the caller may read by the `canRead` predicate of its role permissions.
 *
 * Times cross the SQL boundary as integer microseconds since the Unix epoch (timestamptz's own
 * resolution), so cursors and bucket edges are exact; JavaScript Dates would round to milliseconds.
 */
import type pg from 'pg';
import { parseJsonText } from '../../decode/json-exact.js';
import { isTransientDbError } from '../../../src/core/index.js';

export interface Datapoint {
  readonly topic: string;
  /** number | boolean | string | JSON object/array | exact big integer as a JSON number | null. */
  readonly value: unknown;
  /** ISO-8601 source time. */
  readonly timestamp: string;
  readonly quality: Quality;
  readonly unit?: string | null;
}

/** `acme/+/x/#` -> `^acme/[^/]*\/x(/.*)?$`; a leading wildcard never matches `$` topics [MQTT-4.7.2-1]. */
export function filterToRegex(filter: string): string {
  const levels = filter.split('/');
  let out = '^';
  levels.forEach((lvl, i) => {
    const sep = i === 0 ? '' : '/';
    if (lvl === '#') {
      out += i === 0 ? '(?!\\$).*' : '(/.*)?';
      return;
    }
    out += sep;
    if (lvl === '+') out += i === 0 ? '(?!\\$)[^/]*' : '[^/]*';
    else out += lvl.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  });
  return `${out}$`;
}

/**
 * Values travel from SQL as JSON text and are parsed exactly here: pg's own jsonb parsing would round
 * integers beyond 2^53. Serialise them with stringifyJson (src/api/json.ts sendJson), not JSON.stringify.
 */
export function parseValue(text: string | null): unknown {
  if (text === null) return null;
  const r = parseJsonText(text, 1_000);
  return r.ok ? r.value : null;
}

/** The SQL expression of a sample's value, as JSON, from its typed columns. */
export const VALUE_SQL = `COALESCE(v_json, to_jsonb(v_num), to_jsonb(v_bool), to_jsonb(v_text),
  CASE WHEN v_bytes IS NOT NULL THEN jsonb_build_object('base64', encode(v_bytes, 'base64')) END)`;


export type Quality = 'good' | 'uncertain' | 'bad' | 'stale';

/** One stored topic: what the namespace browser shows. */
export interface TopicInfo {
  readonly id: number;
  readonly name: string;
  readonly levels: Record<string, string> | null;
  readonly route: string;
  readonly unit: string | null;
  /** ISO-8601 server time of the first stored sample. */
  readonly firstSeen: string;
  /** The current value, or null when there is none (e.g. only non-stored routes). */
  readonly lastValue: unknown;
  /** ISO-8601 source time of the current value. */
  readonly lastTimestamp: string | null;
  /** ISO-8601 server time the current value was received. */
  readonly lastSeen: string | null;
  readonly quality: Quality | null;
}

export interface RawPoint {
  readonly timestamp: string;
  readonly value: unknown;
  readonly quality: Quality;
}

/**
 * Keyset position after a page of raw samples: the last row's time (µs) and how many rows at exactly
 * that time were already returned. Rows at one instant are ordered by every stored column, so the
 * order is total up to rows that are identical anyway and skipping `skip` of them is exact.
 */
export interface RawCursor {
  readonly us: number;
  readonly skip: number;
}

export const BUCKETS = { '1m': 60_000_000, '5m': 300_000_000, '1h': 3_600_000_000, '1d': 86_400_000_000 } as const;
export type BucketName = keyof typeof BUCKETS;
const BUCKET_INTERVAL: Record<BucketName, string> = { '1m': '1 minute', '5m': '5 minutes', '1h': '1 hour', '1d': '1 day' };

export const AGGREGATES = ['avg', 'min', 'max', 'count', 'first', 'last'] as const;
export type Aggregate = (typeof AGGREGATES)[number];

export interface AggPoint {
  /** ISO-8601 start of the bucket. */
  readonly timestamp: string;
  readonly avg: number;
  readonly min: number;
  readonly max: number;
  readonly count: number;
  readonly first: number;
  readonly last: number;
}

/** Where an aggregate page came from: for logs and tests, not for the API's clients. */
export interface AggPlan {
  /** The continuous aggregate used for buckets before `splitUs`, or null (raw samples throughout). */
  readonly cagg: string | null;
  /** Buckets before this time came from the cagg, the rest from raw samples. */
  readonly splitUs: number;
}

/** Continuous aggregates set up by timescale.ts, coarsest first, with their bucket width. */
const CAGGS: ReadonlyArray<{ view: string; widthUs: number }> = [
  { view: 'samples_1h', widthUs: 3_600_000_000 },
  { view: 'samples_1m', widthUs: 60_000_000 },
];

/** Export rows as they come off the cursor: [topic_id, time µs (text), v_text, other value as JSON text, quality]. */
export type ExportRow = [number, string, string | null, string | null, string | null];

export function isoFromMicros(us: number): string {
  const ms = Math.floor(us / 1000);
  const rest = us - ms * 1000;
  const iso = new Date(ms).toISOString();
  return rest === 0 ? iso : `${iso.slice(0, -1)}${String(rest).padStart(3, '0')}Z`;
}

function floorTo(us: number, width: number): number {
  return Math.floor(us / width) * width;
}

function ceilTo(us: number, width: number): number {
  return Math.ceil(us / width) * width;
}

/** Collects parameters and hands back their placeholders, so SQL built from parts stays parameterised. */
class Params {
  readonly values: unknown[] = [];
  add(v: unknown): string {
    this.values.push(v);
    return `$${this.values.length}`;
  }
  /** A timestamptz from integer µs: exact, unlike to_timestamp(double). */
  time(us: number): string {
    return `(TIMESTAMPTZ 'epoch' + ${this.add(Math.trunc(us))}::int8 * INTERVAL '1 microsecond')`;
  }
}

/** Exact µs since the epoch of a timestamptz column, as int8 text (pg returns int8 as text anyway). */
const us = (col: string): string => `((extract(epoch from ${col}) * 1000000)::int8)::text`;


/** A rejected message as the API shows it. */
export interface RejectionView {
  readonly id: string;
  readonly time: string;
  readonly topic: string;
  readonly code: string;
  readonly reason: string;
  readonly client_id: string | null;
  readonly payload_base64: string | null;
  readonly payload_text: string | null;
  readonly replayed_at: string | null;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function utf8OrNull(b: Buffer | null): string | null {
  if (b === null) return null;
  try { return utf8.decode(b); } catch { return null; }
}

export class ReadQueries {
  /** Whether TimescaleDB is in use (store.timescale.enabled); read per query, as it is set at open(). */
  private readonly timescale: () => boolean;
  /** Whether this TimescaleDB has continuous_aggs_materialization_ranges (2.2x batched refreshes). */
  private rangesTable: boolean | undefined;

  constructor(protected readonly pool: pg.Pool, timescale: () => boolean = () => false) {
    this.timescale = timescale;
  }

  /** Current values of every topic matching the filter that the caller may read. */
  async latest(filter: string, canRead: (topic: string) => boolean, limit = 10_000): Promise<Datapoint[]> {
    const r = await this.pool.query<{ name: string; value: string | null; time: Date; quality: string | null; unit: string | null }>(
      `SELECT t.name, (${VALUE_SQL.replace(/v_/g, 'l.v_')})::text AS value, l.time, l.quality, t.unit
       FROM last_values l JOIN topics t ON t.id = l.topic_id
       WHERE t.name ~ $1 ORDER BY t.name LIMIT $2`,
      [filterToRegex(filter), limit],
    );
    return r.rows.filter((row) => canRead(row.name)).map((row) => ({
      topic: row.name, value: parseValue(row.value), timestamp: row.time.toISOString(),
      quality: (row.quality ?? 'good') as Datapoint['quality'], unit: row.unit,
    }));
  }

  /**
   * Rejected messages, newest first, whose topic matches the filter (and code, when given) and the caller
   * may read: up to `limit`, from before the keyset position `before` (the last one's time in microseconds
   * and id). Pages through the table until it has `limit` readable ones or 20 pages were read.
   */
  async rejections(filter: string, code: string | null, canRead: (topic: string) => boolean, limit: number,
    before: { us: number; id: string } | null): Promise<{ rows: RejectionView[]; next: { us: number; id: string } | null }> {
    const out: RejectionView[] = [];
    let cursor = before;
    for (let page = 0; page < 20 && out.length < limit; page++) {
      const r = await this.pool.query<{ id: string; us: string; time: Date; topic: string; code: string; reason: string; client_id: string | null; payload: Buffer | null; replayed_at: Date | null }>(
        `SELECT id::text AS id, (extract(epoch FROM time) * 1000000)::bigint::text AS us, time, topic, code, reason, client_id, payload, replayed_at
         FROM rejections
         WHERE topic ~ $1 AND ($2::text IS NULL OR code = $2)
           AND ($3::timestamptz IS NULL OR (time, id) < ($3::timestamptz, $4::bigint))
         ORDER BY time DESC, id DESC LIMIT $5`,
        [filterToRegex(filter), code, cursor === null ? null : isoFromMicros(cursor.us), cursor === null ? null : cursor.id, limit],
      );
      for (const row of r.rows) {
        cursor = { us: Number(row.us), id: row.id };
        if (!canRead(row.topic)) continue;
        out.push({
          id: row.id, time: row.time.toISOString(), topic: row.topic, code: row.code, reason: row.reason, client_id: row.client_id,
          payload_base64: row.payload === null ? null : row.payload.toString('base64'), payload_text: utf8OrNull(row.payload),
          replayed_at: row.replayed_at === null ? null : row.replayed_at.toISOString(),
        });
        if (out.length === limit) return { rows: out, next: cursor };
      }
      if (r.rows.length < limit) return { rows: out, next: null };
    }
    return { rows: out, next: cursor };
  }

  /** Stored topics matching the filter that the caller may read: names, ids and units only. */
  async topics(filter: string, canRead: (topic: string) => boolean): Promise<Array<{ id: number; name: string; unit: string | null }>> {
    const r = await this.pool.query<{ id: number; name: string; unit: string | null }>(
      'SELECT id, name, unit FROM topics WHERE name ~ $1', [filterToRegex(filter)]);
    return r.rows.filter((row) => canRead(row.name));
  }

  /** Metadata and current value of the given topics (by id), in no particular order. */
  async topicInfo(ids: readonly number[]): Promise<TopicInfo[]> {
    if (ids.length === 0) return [];
    return this.info('t.id = ANY($1::int[])', [ids]);
  }

  /** One topic by exact name, or null. The caller checks canRead. */
  async topicByName(name: string): Promise<TopicInfo | null> {
    return (await this.info('t.name = $1', [name]))[0] ?? null;
  }

  private async info(where: string, params: unknown[]): Promise<TopicInfo[]> {
    const r = await this.pool.query<{
      id: number; name: string; levels: Record<string, string> | null; route: string; unit: string | null;
      first_us: string; value: string | null; time_us: string | null; seen_us: string | null; quality: string | null;
    }>(
      `SELECT t.id, t.name, t.levels, t.route, t.unit, ${us('t.first_seen')} AS first_us,
              (${VALUE_SQL.replace(/v_/g, 'l.v_')})::text AS value, ${us('l.time')} AS time_us,
              ${us('l.received_at')} AS seen_us, l.quality
       FROM topics t LEFT JOIN last_values l ON l.topic_id = t.id WHERE ${where}`, params);
    return r.rows.map((row) => ({
      id: row.id, name: row.name, levels: row.levels, route: row.route, unit: row.unit,
      firstSeen: isoFromMicros(Number(row.first_us)),
      lastValue: parseValue(row.value),
      lastTimestamp: row.time_us === null ? null : isoFromMicros(Number(row.time_us)),
      lastSeen: row.seen_us === null ? null : isoFromMicros(Number(row.seen_us)),
      quality: row.time_us === null ? null : ((row.quality ?? 'good') as Quality),
    }));
  }

  /** The id and unit of a stored topic, or null. */
  async topicId(name: string): Promise<{ id: number; unit: string | null } | null> {
    const r = await this.pool.query<{ id: number; unit: string | null }>('SELECT id, unit FROM topics WHERE name = $1', [name]);
    return r.rows[0] ?? null;
  }

  /**
   * Raw samples of one topic in [fromUs, toUs), oldest first, `limit` per page. `after` continues from a
   * previous page's cursor; `next` is null on the last page.
   */
  async history(topicId: number, fromUs: number, toUs: number, limit: number, after: RawCursor | null): Promise<{ points: RawPoint[]; next: RawCursor | null }> {
    // A cursor from before `from` (the client moved the range) restarts at `from`.
    const resume = after !== null && after.us >= fromUs;
    const startUs = resume ? after.us : fromUs;
    const skip = resume ? after.skip : 0;
    const p = new Params();
    const r = await this.pool.query<{ us: string; value: string | null; quality: string | null }>({
      text: `SELECT ${us('time')} AS us, (${VALUE_SQL})::text AS value, quality FROM samples
             WHERE topic_id = ${p.add(topicId)} AND time >= ${p.time(startUs)} AND time < ${p.time(toUs)}
             ORDER BY time, src NULLS FIRST, v_num, v_text, v_bool, v_json, v_bytes, quality
             OFFSET ${p.add(skip)} LIMIT ${p.add(limit + 1)}`,
      values: p.values,
    });
    const more = r.rows.length > limit;
    const rows = more ? r.rows.slice(0, limit) : r.rows;
    const points = rows.map((row) => ({
      timestamp: isoFromMicros(Number(row.us)), value: parseValue(row.value), quality: (row.quality ?? 'good') as Quality,
    }));
    if (!more) return { points, next: null };
    const lastUs = (rows[rows.length - 1] as { us: string }).us;
    let same = 0;
    for (let i = rows.length - 1; i >= 0 && (rows[i] as { us: string }).us === lastUs; i--) same++;
    // The whole page sat at the cursor's instant: the rows skipped before it count too.
    const nextSkip = same === rows.length && Number(lastUs) === startUs ? skip + same : same;
    return { points, next: { us: Number(lastUs), skip: nextSkip } };
  }

  /**
   * Numeric aggregates of one topic per bucket, oldest first. The range is widened to whole buckets
   * (from rounded down, to rounded up, buckets aligned to the Unix epoch in UTC); empty buckets are
   * left out. `afterUs` (a previous page's last bucket) continues a listing.
   *
   * With TimescaleDB, buckets come from the coarsest continuous aggregate whose width divides the
   * bucket, re-bucketed (avg = sum(avg*count)/sum(count), min of mins, max of maxes, sum of counts,
   * first/last by bucket time), but only before the first point that the aggregate may not reflect: its
   * watermark (real-time aggregation is off, so nothing newer is materialised) or the oldest pending
   * invalidation (late or backfilled samples, deletes, a refresh in progress). Later buckets are
   * computed from raw samples with time_bucket, so answers never depend on refresh timing. Plain
   * PostgreSQL computes everything with date_bin.
   */
  async aggregate(topicId: number, fromUs: number, toUs: number, bucket: BucketName, limit: number, afterUs: number | null): Promise<{ points: AggPoint[]; next: number | null; plan: AggPlan }> {
    const width = BUCKETS[bucket];
    let from = floorTo(fromUs, width);
    const to = ceilTo(toUs, width);
    if (afterUs !== null) from = Math.max(from, afterUs + width);
    const ts = this.timescale();
    const plan = from < to && ts ? await this.caggPlan(bucket, from, to) : { cagg: null, splitUs: from };
    if (from >= to) return { points: [], next: null, plan };

    const p = new Params();
    const topic = p.add(topicId);
    const iv = p.add(BUCKET_INTERVAL[bucket]);
    const parts: string[] = [];
    if (plan.cagg !== null && plan.splitUs > from) {
      // plan.cagg is one of the constant view names in CAGGS, never input.
      parts.push(`SELECT time_bucket(${iv}::interval, bucket) AS b, sum(avg * count::float8) / sum(count)::float8 AS avg,
          min(min) AS min, max(max) AS max, sum(count)::int8 AS count, first(first, bucket) AS first, last(last, bucket) AS last
        FROM ${plan.cagg} WHERE topic_id = ${topic} AND bucket >= ${p.time(from)} AND bucket < ${p.time(plan.splitUs)} GROUP BY 1`);
    }
    const rawFrom = Math.max(from, plan.splitUs);
    if (rawFrom < to) {
      const b = ts ? `time_bucket(${iv}::interval, time)` : `date_bin(${iv}::interval, time, TIMESTAMPTZ 'epoch')`;
      // Plain PostgreSQL has no first()/last(): the least/greatest [time, value] pair carries the value,
      // in constant memory per bucket.
      const first = ts ? 'first(v_num, time)' : '(min(ARRAY[extract(epoch from time)::float8, v_num]))[2]';
      const last = ts ? 'last(v_num, time)' : '(max(ARRAY[extract(epoch from time)::float8, v_num]))[2]';
      parts.push(`SELECT ${b} AS b, avg(v_num) AS avg, min(v_num) AS min, max(v_num) AS max, count(*)::int8 AS count,
          ${first} AS first, ${last} AS last
        FROM samples WHERE topic_id = ${topic} AND v_num IS NOT NULL AND time >= ${p.time(rawFrom)} AND time < ${p.time(to)} GROUP BY 1`);
    }
    const r = await this.pool.query<{ b: string; avg: number; min: number; max: number; count: string; first: number; last: number }>({
      text: `SELECT ${us('b')} AS b, avg, min, max, count::text AS count, first, last
             FROM (${parts.join(' UNION ALL ')}) u ORDER BY u.b LIMIT ${p.add(limit + 1)}`,
      values: p.values,
    });
    const more = r.rows.length > limit;
    const rows = more ? r.rows.slice(0, limit) : r.rows;
    const points = rows.map((row) => ({
      timestamp: isoFromMicros(Number(row.b)), avg: row.avg, min: row.min, max: row.max, count: Number(row.count), first: row.first, last: row.last,
    }));
    const lastRow = rows[rows.length - 1];
    return { points, next: more && lastRow ? Number(lastRow.b) : null, plan };
  }

  /** Which continuous aggregate serves [from, to) up to where: see aggregate(). */
  private async caggPlan(bucket: BucketName, from: number, to: number): Promise<AggPlan> {
    const width = BUCKETS[bucket];
    const cagg = CAGGS.find((c) => width % c.widthUs === 0);
    if (!cagg) return { cagg: null, splitUs: from };
    try {
      if (this.rangesTable === undefined) {
        const t = await this.pool.query<{ ok: boolean }>(
          "SELECT to_regclass('_timescaledb_catalog.continuous_aggs_materialization_ranges') IS NOT NULL AS ok");
        this.rangesTable = t.rows[0]?.ok === true;
      }
      const p = new Params();
      const view = p.add(cagg.view);
      const lo = p.add(from);
      const hi = p.add(to);
      const ranges = this.rangesTable
        ? `UNION ALL SELECT lowest_modified_value, greatest_modified_value FROM _timescaledb_catalog.continuous_aggs_materialization_ranges
             WHERE materialization_id = ca.mat_hypertable_id`
        : '';
      // Internal TimescaleDB time is µs since the Unix epoch for timestamptz, as are our bounds.
      const r = await this.pool.query<{ wm: string | null; dirty: string | null }>({
        text: `SELECT _timescaledb_functions.cagg_watermark(ca.mat_hypertable_id)::text AS wm,
            (SELECT min(i.lo) FROM (
               SELECT lowest_modified_value AS lo, greatest_modified_value AS hi
                 FROM _timescaledb_catalog.continuous_aggs_hypertable_invalidation_log WHERE hypertable_id = ca.raw_hypertable_id
               UNION ALL SELECT lowest_modified_value, greatest_modified_value
                 FROM _timescaledb_catalog.continuous_aggs_materialization_invalidation_log WHERE materialization_id = ca.mat_hypertable_id
               ${ranges}
             ) i WHERE i.hi >= ${lo}::int8 AND i.lo < ${hi}::int8)::text AS dirty
          FROM _timescaledb_catalog.continuous_agg ca
          WHERE ca.user_view_name = ${view} AND ca.user_view_schema = ANY (current_schemas(false))`,
        values: p.values,
      });
      const row = r.rows[0];
      if (!row || row.wm === null) return { cagg: null, splitUs: from };
      const clean = Math.min(Number(row.wm), row.dirty === null ? Infinity : Number(row.dirty));
      const split = Math.min(to, Math.max(from, floorTo(clean, width)));
      return { cagg: split > from ? cagg.view : null, splitUs: split };
    } catch (e) {
      if (isTransientDbError(e)) throw e;
      // The catalog is TimescaleDB-internal: if it ever moves, raw samples still give the right answer.
      return { cagg: null, splitUs: from };
    }
  }

  /**
   * Every sample of the given topics in [fromUs, toUs), ordered by time then topic, in batches of
   * `batchRows`, through a server-side cursor on one dedicated connection: memory stays constant however
   * many rows there are, and the caller pulls the next batch only when it has room (back-pressure).
   * Aborting the signal cancels the running statement; the connection is then discarded rather than
   * reused, so a late cancel cannot hit someone else's query.
   */
  async *exportSamples(ids: readonly number[], fromUs: number, toUs: number, opts: { batchRows?: number; signal?: AbortSignal } = {}): AsyncGenerator<ExportRow[]> {
    if (ids.length === 0) return;
    const batch = Math.max(1, Math.trunc(opts.batchRows ?? 5_000));
    const client = await this.pool.connect();
    const pid = (client as unknown as { processID: number | null }).processID;
    let discard: Error | undefined;
    const onAbort = (): void => {
      discard = new Error('export aborted');
      if (pid !== null) this.pool.query('SELECT pg_cancel_backend($1)', [pid]).catch(() => undefined);
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    let open = false;
    try {
      if (opts.signal?.aborted) return;
      await client.query('BEGIN READ ONLY');
      open = true;
      // An export may legitimately run for many minutes; the client's disconnect is what stops it.
      await client.query('SET LOCAL statement_timeout = 0');
      const p = new Params();
      await client.query({
        text: `DECLARE uns_export NO SCROLL CURSOR FOR
          SELECT topic_id, ${us('time')} AS us, v_text,
            (COALESCE(v_json, to_jsonb(v_num), to_jsonb(v_bool),
              CASE WHEN v_bytes IS NOT NULL THEN jsonb_build_object('base64', encode(v_bytes, 'base64')) END))::text AS json,
            quality
          FROM samples WHERE topic_id = ANY (${p.add(ids)}::int[]) AND time >= ${p.time(fromUs)} AND time < ${p.time(toUs)}
          ORDER BY time, topic_id`,
        values: p.values,
      });
      for (;;) {
        // The first FETCH may sort the whole range (plain PostgreSQL has no time index): no read timeout.
        const r = await client.query<ExportRow>({ text: `FETCH ${batch} FROM uns_export`, rowMode: 'array', query_timeout: 2_147_483_647 } as pg.QueryConfig);
        if (r.rows.length === 0 || opts.signal?.aborted) break;
        yield r.rows;
        if (r.rows.length < batch) break;
      }
      await client.query('COMMIT');
      open = false;
    } catch (e) {
      discard ??= isTransientDbError(e) ? (e as Error) : undefined;
      throw e;
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
      if (open && discard === undefined) {
        try {
          await client.query('ROLLBACK');
          open = false;
        } catch (e) {
          discard = e as Error;
        }
      }
      // A connection left mid-transaction or possibly hit by a cancel is closed, not pooled.
      client.release(discard ?? (open ? new Error('export connection left in a transaction') : undefined));
    }
  }
}
