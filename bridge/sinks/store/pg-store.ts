/**
 * The PostgreSQL store: one transaction per batch (samples, topics, last values, retained messages,
 * rejections, spool marker), so a batch is either wholly durable or not at all. SQL is always
 * parameterised; rows travel as binary arrays through unnest() to keep it one round trip per table. The usual
 * batch (samples of known topics only) is one statement, its own transaction: one round trip in all.
 */
import pg from 'pg';
import type { Logger } from '../../../src/core/index.js';
import { migrate } from './migrations.js';
import { setupTimescale, type TimescaleMode, type TimescaleStatus, type TimescalePolicy } from './timescale.js';
import { boolArray, float8Array, int4Array, int8Array, jsonbArray, textArray, timestamptzArray } from './binary-array.js';
import type { SampleRow, TopicMeta, WriteBatch, WriteItem, RetainedRow, RejectionRow, StateRow } from './rows.js';
import { isRowError, describeDbError } from '../../../src/core/index.js';

export interface PgStoreOptions {
  readonly url: string;
  readonly poolSize: number;
  /** Per-statement timeout, so a hung server turns into an error (and the spool) rather than a stall. */
  readonly statementTimeoutMs: number;
  readonly timescale: TimescaleMode;
  readonly timescalePolicy: TimescalePolicy;
  readonly log: Logger;
}

export type WriteOutcome = 'committed' | 'already-applied';

/** Samples of a write that met a stored one of the same topic and time. */
interface SampleTally {
  readonly overwritten: number;
  readonly repeated: number;
}

const NO_TALLY: SampleTally = Object.freeze({ overwritten: 0, repeated: 0 });

/** A batch written item by item: which items the database refused as data (set aside as rejections). */
export interface IsolatedWrite {
  readonly outcome: WriteOutcome;
  readonly refused: ReadonlyArray<{ readonly index: number; readonly item: WriteItem; readonly error: Error }>;
}

export interface WriteOptions {
  /**
   * Skip the samples of items marked `resendCheck` (possible re-sends) whose redelivery key is already stored
   * for their topic within this many ms. Batches with no marked item are written as they are.
   */
  readonly dedupeWindowMs?: number | undefined;
  /**
   * writeIsolated only: the items are earlier store rejections being replayed (their rejection row ids, one
   * per item). An item that commits marks its row replayed in the same transaction (so it is applied once);
   * one still refused keeps its row, with the new reason, rather than gaining a second.
   */
  readonly replayOf?: readonly string[] | undefined;
}

/** Every statement shape the write path runs, on no rows: privileges, tables and read-only mode checked. */
const PROBE_WRITE_SQL = `
  INSERT INTO topics (name, route) SELECT '', '' WHERE false ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name;
  INSERT INTO samples (time, topic_id) SELECT now(), 0 WHERE false
    ON CONFLICT (topic_id, time) DO UPDATE SET v_num = EXCLUDED.v_num;
  INSERT INTO last_values AS l (topic_id, time, received_at) SELECT 0, now(), now() WHERE false
    ON CONFLICT (topic_id) DO UPDATE SET time = EXCLUDED.time WHERE l.time <= EXCLUDED.time;
  INSERT INTO retained (topic, payload, qos) SELECT '', ''::bytea, 0 WHERE false ON CONFLICT (topic) DO UPDATE SET qos = EXCLUDED.qos;
  DELETE FROM retained WHERE false;
  INSERT INTO rejections (time, topic, code, reason) SELECT now(), '', '', '' WHERE false;
  UPDATE last_values SET quality = 'stale' WHERE false;
  INSERT INTO state AS s (key, rev, value) SELECT '', 0, 'null'::jsonb WHERE false
    ON CONFLICT (key) DO UPDATE SET rev = EXCLUDED.rev WHERE s.rev < EXCLUDED.rev;
  INSERT INTO spool_applied (segment) SELECT '' WHERE false ON CONFLICT DO NOTHING;
`;

type Refused = Array<{ index: number; item: WriteItem; error: Error }>;

export class PgStore {
  readonly pool: pg.Pool;
  private readonly log: Logger;
  private readonly topicIds = new Map<string, number>();
  private timescaleStatus: TimescaleStatus = { enabled: false, reason: 'not set up' };
  /**
   * Committed samples that met a stored one of the same topic and time (see planSamples), and how live batches
   * were written: as one statement (samples of known topics) or as a transaction of several (counted when sent).
   */
  readonly sampleStats = { overwritten: 0, repeated: 0, oneStatementBatches: 0, transactionBatches: 0 };
  private closed = false;

  constructor(private readonly opts: PgStoreOptions) {
    this.log = opts.log;
    this.pool = new pg.Pool({
      connectionString: opts.url,
      max: opts.poolSize,
      connectionTimeoutMillis: 5_000,
      statement_timeout: opts.statementTimeoutMs,
      query_timeout: opts.statementTimeoutMs + 1_000,
      application_name: 'uns-bridge',
    });
    // An idle client losing its server (database restart) must not crash the process.
    // After close(), pool.end() has sent its goodbyes but not waited for the sockets: an embedded PostgreSQL
    // stopped right after may still tell those connections it is shutting down. That is expected.
    this.pool.on('error', (err) => {
      if (this.closed) this.log.debug({ err: err.message }, 'database connection ended during shutdown');
      else this.log.warn({ err: err.message }, 'idle database connection lost');
    });
    // pg guards only idle clients: a checked-out one losing its server emits 'error', which would be an
    // uncaught exception. Every user of this pool (store, webhook outbox, rules, reads) gets the guard here;
    // the failing query rejects too, and that is what each of them acts on.
    this.pool.on('connect', (client) => client.on('error', (err) => this.log.debug({ err: err.message }, 'database connection error')));
  }

  get timescale(): TimescaleStatus {
    return this.timescaleStatus;
  }

  async open(): Promise<void> {
    await migrate(this.pool, this.log);
    this.timescaleStatus = await setupTimescale(this.pool, this.opts.timescale, this.opts.timescalePolicy, this.log);
  }

  /** Schema migrations only, leaving TimescaleDB policies as the server set them (maintenance commands). */
  async migrate(): Promise<void> {
    await migrate(this.pool, this.log);
  }

  async ping(): Promise<void> {
    await this.pool.query('SELECT 1');
  }

  /**
   * Can the write path write? Runs every write statement on no rows in one implicit transaction: a revoked
   * privilege, a missing table or a read-only server fails here as it would on real data, and nothing is
   * written. (A full disk only shows on real writes; the writer learns of it there.)
   */
  async probeWrite(): Promise<void> {
    await this.pool.query(PROBE_WRITE_SQL);
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.pool.end();
  }

  /** One transaction for the whole batch: wholly durable or not at all. */
  async writeBatch(batch: WriteBatch, opts: WriteOptions = {}): Promise<WriteOutcome> {
    if (batch.segments === undefined && this.samplesOnly(batch.items, opts.dedupeWindowMs)) {
      this.sampleStats.oneStatementBatches++;
      this.count(await this.writeSamplesAlone(batch.items));
      return 'committed';
    }
    let tally: SampleTally = NO_TALLY;
    if (batch.segments === undefined) this.sampleStats.transactionBatches++;
    const r = await this.transaction(batch, async (client, fresh, items) => {
      tally = await this.writeItems(client, items, fresh, opts);
      return [];
    });
    if (r.outcome === 'committed') this.count(tally);
    return r.outcome;
  }

  private count(t: SampleTally): void {
    this.sampleStats.overwritten += t.overwritten;
    this.sampleStats.repeated += t.repeated;
  }

  /**
   * One transaction, one savepoint per item: an item the database refuses as data (a row error, see
   * classifyDbError) is rolled back alone and recorded as a rejection holding the item, so it can be
   * replayed once its cause is fixed; the other items commit. Any other error aborts the whole batch.
   */
  async writeIsolated(batch: WriteBatch, opts: WriteOptions = {}): Promise<IsolatedWrite> {
    const tally = { overwritten: 0, repeated: 0 };
    const r = await this.transaction(batch, async (client, fresh, items) => {
      const refused: Refused = [];
      for (let i = 0; i < items.length; i++) {
        const item = items[i] as WriteItem;
        const mine = new Map<string, number>();
        await client.query('SAVEPOINT item');
        try {
          const t = await this.writeItems(client, [item], mine, opts, fresh);
          await client.query('RELEASE SAVEPOINT item');
          tally.overwritten += t.overwritten;
          tally.repeated += t.repeated;
          for (const [k, v] of mine) fresh.set(k, v);
        } catch (e) {
          if (!isRowError(e)) throw e;
          await client.query('ROLLBACK TO SAVEPOINT item');
          refused.push({ index: i, item, error: e as Error });
        }
      }
      const replayOf = opts.replayOf;
      if (replayOf !== undefined) {
        const failed = new Set(refused.map((r) => r.index));
        await client.query('UPDATE rejections SET replayed_at = now() WHERE id = ANY($1::int8[])',
          [replayOf.filter((_, i) => !failed.has(i))]);
        for (const r of refused) {
          await client.query('UPDATE rejections SET reason = $2 WHERE id = $1', [replayOf[r.index], describeDbError(r.error).slice(0, 2000)]);
        }
      } else if (refused.length > 0) {
        await this.insertRejectionRows(client, refused.map(({ index, error }) => storeRejection(items[index] as WriteItem, error)),
          refused.map(({ index }) => JSON.stringify(items[index])));
      }
      return refused;
    });
    if (r.outcome === 'committed') this.count(tally);
    return r;
  }

  private async transaction(batch: WriteBatch,
    body: (client: pg.PoolClient, fresh: Map<string, number>, items: readonly WriteItem[]) => Promise<Refused>): Promise<IsolatedWrite> {
    const client = await this.pool.connect();
    const fresh = new Map<string, number>();
    let refused: Refused;
    try {
      await client.query('BEGIN');
      let items = batch.items;
      if (batch.segments !== undefined) {
        // Segments applied before (a crash between commit and unlink) are skipped, with their items.
        const r = await client.query<{ segment: string }>(
          'INSERT INTO spool_applied (segment) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING RETURNING segment', [batch.segments]);
        if (r.rows.length === 0) {
          await client.query('ROLLBACK');
          client.release();
          return { outcome: 'already-applied', refused: [] };
        }
        if (r.rows.length < batch.segments.length) {
          const applied = new Set(r.rows.map((row) => row.segment));
          const of = batch.itemSegments ?? [];
          items = items.filter((_, i) => applied.has(batch.segments?.[of[i] ?? 0] as string));
        }
      }
      refused = await body(client, fresh, items);
      await client.query('COMMIT');
    } catch (e) {
      await client.query('ROLLBACK').catch(() => undefined);
      // A broken connection must not go back to the pool.
      client.release(isRowError(e) ? undefined : (e as Error));
      throw e;
    }
    client.release();
    // Only committed ids enter the cache: a rolled-back insert may not have kept its id.
    for (const [k, v] of fresh) this.topicIds.set(k, v);
    return { outcome: 'committed', refused };
  }

  private async writeItems(client: pg.PoolClient, items: readonly WriteItem[], fresh: Map<string, number>, opts: WriteOptions,
    known?: ReadonlyMap<string, number>): Promise<SampleTally> {
    await this.resolveTopics(client, items, fresh, known);
    const ids = (name: string): number => this.topicIds.get(name) ?? known?.get(name) ?? fresh.get(name) ?? 0;
    const tally = await this.insertSamples(client, items, ids, opts.dedupeWindowMs);
    await this.markStale(client, items);
    await this.upsertRetained(client, items);
    const rejections = items.flatMap((i) => (i.rejection ? [i.rejection] : []));
    if (rejections.length > 0) await this.insertRejectionRows(client, rejections, null);
    await this.upsertState(client, items);
    return tally;
  }

  private async resolveTopics(client: pg.PoolClient, items: readonly WriteItem[], fresh: Map<string, number>,
    known?: ReadonlyMap<string, number>): Promise<void> {
    let missing: Map<string, TopicMeta> | undefined;
    for (const item of items) {
      for (const t of item.topics) {
        if (!this.topicIds.has(t.name) && !known?.has(t.name)) (missing ??= new Map()).set(t.name, t);
      }
    }
    if (!missing) return;
    // Rows are locked in one order (by key) in every transaction, so a replay and live batches upserting
    // the same topics wait for each other instead of deadlocking.
    const metas = [...missing.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    // DO UPDATE (a no-op write) so RETURNING yields ids of rows that already existed too.
    const r = await client.query<{ id: number; name: string }>(
      `INSERT INTO topics (name, levels, route, unit)
       SELECT * FROM unnest($1::text[], $2::jsonb[], $3::text[], $4::text[])
       ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id, name`,
      [metas.map((m) => m.name), metas.map((m) => (m.levels ? JSON.stringify(m.levels) : null)),
        metas.map((m) => m.route), metas.map((m) => m.unit)],
    );
    for (const row of r.rows) fresh.set(row.name, row.id);
  }

  /** The samples of a batch and their topics' latest values, inside the batch's transaction (see planSamples). */
  private async insertSamples(client: pg.PoolClient, items: readonly WriteItem[], ids: (name: string) => number, dedupeWindowMs?: number): Promise<SampleTally> {
    const plan = planSamples(items, ids, dedupeWindowMs);
    if (plan.samples === null) return plan;
    // xmax is not 0 on a row this statement updated rather than inserted; rows left alone are not returned.
    const r = await client.query<{ written: number; replaced: number }>(
      `WITH w AS (${plan.samples.sql}) ${TALLY_SQL}`, plan.samples.params);
    const tally = tallied(plan, r.rows[0]);
    if (plan.lastValues !== null) await client.query(lastValuesSql(1), plan.lastValues);
    return tally;
  }

  /**
   * The usual batch: samples of known topics and nothing else. Its samples and latest values go in one
   * statement, a transaction of its own: one round trip (a prepared statement) instead of four, so a busy
   * event loop delays each batch once rather than at every step.
   */
  private samplesOnly(items: readonly WriteItem[], dedupeWindowMs: number | undefined): boolean {
    for (let i = 0; i < items.length; i++) {
      const item = items[i] as WriteItem;
      if (item.retained !== undefined || item.rejection !== undefined || item.state !== undefined || item.stale !== undefined) return false;
      if (dedupeWindowMs !== undefined && twinCheck(item)) return false;
      for (let j = 0; j < item.topics.length; j++) if (!this.topicIds.has((item.topics[j] as TopicMeta).name)) return false;
    }
    return true;
  }

  private async writeSamplesAlone(items: readonly WriteItem[]): Promise<SampleTally> {
    const plan = planSamples(items, (name) => this.topicIds.get(name) ?? 0, undefined);
    if (plan.samples === null) return plan;
    const lv = plan.lastValues;
    const r = await this.pool.query<{ written: number; replaced: number }>({
      name: lv === null ? 'uns_samples' : 'uns_samples_latest',
      text: `WITH w AS (${plan.samples.sql})${lv === null ? '' : `, lv AS (${lastValuesSql(plan.samples.params.length + 1)})`} ${TALLY_SQL}`,
      values: lv === null ? plan.samples.params : [...plan.samples.params, ...lv],
    });
    return tallied(plan, r.rows[0]);
  }

  /**
   * Sparkplug DEATHs: the latest values of the metrics they end become 'stale', unless a value arrived after
   * the death (a BIRTH replayed in the same batch). Rows locked in key order, as every other writer does.
   */
  private async markStale(client: pg.PoolClient, items: readonly WriteItem[]): Promise<void> {
    for (const item of items) {
      if (!item.stale || item.stale.topics.length === 0) continue;
      await client.query(
        `WITH l0 AS (SELECT l.topic_id FROM last_values l JOIN topics t ON t.id = l.topic_id
                     WHERE t.name = ANY ($1::text[]) ORDER BY l.topic_id FOR UPDATE OF l)
         UPDATE last_values l SET quality = 'stale' FROM l0
         WHERE l.topic_id = l0.topic_id AND l.received_at <= to_timestamp($2 / 1000.0)`,
        [item.stale.topics, item.receivedAt],
      );
    }
  }

  private async upsertRetained(client: pg.PoolClient, items: readonly WriteItem[]): Promise<void> {
    const last = new Map<string, RetainedRow>();
    for (const item of items) if (item.retained) last.set(item.retained.topic, item.retained);
    if (last.size === 0) return;
    const rows = [...last.values()].sort((a, b) => (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : 0));
    const keep = rows.filter((r) => r.payload !== '');
    const drop = rows.filter((r) => r.payload === '').map((r) => r.topic);
    if (drop.length) await client.query('DELETE FROM retained WHERE topic = ANY($1::text[])', [drop]);
    if (keep.length) {
      await client.query(
        `INSERT INTO retained (topic, payload, qos, updated_at)
         SELECT t, decode(p, 'base64'), q, now() FROM unnest($1::text[], $2::text[], $3::int2[]) AS u(t, p, q)
         ON CONFLICT (topic) DO UPDATE SET payload = EXCLUDED.payload, qos = EXCLUDED.qos, updated_at = now()`,
        [keep.map((r) => r.topic), keep.map((r) => r.payload), keep.map((r) => r.qos)],
      );
    }
  }

  /** `items`: for store rejections, the JSON of each refused write item (bytes: jsonb may refuse it). */
  private async insertRejectionRows(client: pg.PoolClient, rows: readonly RejectionRow[], items: readonly string[] | null): Promise<void> {
    await client.query(
      `INSERT INTO rejections (time, topic, code, reason, client_id, payload, item)
       SELECT to_timestamp(t / 1000.0), tp, c, r, cl, decode(p, 'base64'), convert_to(it, 'UTF8')
       FROM unnest($1::float8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) AS u(t, tp, c, r, cl, p, it)`,
      [rows.map((r) => r.time), rows.map((r) => r.topic), rows.map((r) => r.code), rows.map((r) => r.reason),
        rows.map((r) => r.clientId), rows.map((r) => r.payload), items ?? rows.map(() => null)],
    );
  }

  private async upsertState(client: pg.PoolClient, items: readonly WriteItem[]): Promise<void> {
    const last = new Map<string, StateRow>();
    for (const item of items) {
      const st = item.state;
      if (st && (last.get(st.key)?.rev ?? -1) < st.rev) last.set(st.key, st);
    }
    if (last.size === 0) return;
    const rows = [...last.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    await client.query(
      `INSERT INTO state AS s (key, rev, value, updated_at)
       SELECT k, r, v, now() FROM unnest($1::text[], $2::int8[], $3::jsonb[]) AS u(k, r, v)
       ON CONFLICT (key) DO UPDATE SET rev = EXCLUDED.rev, value = EXCLUDED.value, updated_at = now()
       WHERE s.rev < EXCLUDED.rev`,
      // Materialised by the writer; a caller writing directly gets the snapshot taken here.
      [rows.map((r) => r.key), rows.map((r) => r.rev), rows.map((r) => (typeof r.value === 'string' ? r.value : r.value()))],
    );
  }

  async loadState(key: string): Promise<unknown> {
    const r = await this.pool.query<{ value: unknown }>('SELECT value FROM state WHERE key = $1', [key]);
    return r.rows[0]?.value;
  }

  async loadRetained(): Promise<Array<{ topic: string; payload: Buffer; qos: number }>> {
    const r = await this.pool.query<{ topic: string; payload: Buffer; qos: number }>('SELECT topic, payload, qos FROM retained');
    return r.rows;
  }

  /** Per-route retention by DELETE (TimescaleDB also drops whole chunks past the longest retention). */
  async applyRetention(routes: ReadonlyArray<{ name: string; retentionMs: number }>): Promise<number> {
    let deleted = 0;
    for (const r of routes) {
      const res = await this.pool.query(
        `DELETE FROM samples WHERE topic_id IN (SELECT id FROM topics WHERE route = $1) AND time < now() - make_interval(secs => $2)`,
        [r.name, r.retentionMs / 1000],
      );
      deleted += res.rowCount ?? 0;
    }
    return deleted;
  }

  async upsertUser(username: string, passwordHash: string, roles: readonly string[]): Promise<void> {
    await this.pool.query(
      `INSERT INTO users (username, password_hash, roles) VALUES ($1, $2, $3)
       ON CONFLICT (username) DO UPDATE SET password_hash = EXCLUDED.password_hash, roles = EXCLUDED.roles, updated_at = now()`,
      [username, passwordHash, roles],
    );
  }

  async loadUsers(): Promise<Array<{ username: string; passwordHash: string; roles: string[] }>> {
    const r = await this.pool.query<{ username: string; password_hash: string; roles: string[] }>(
      'SELECT username, password_hash, roles FROM users');
    return r.rows.map((u) => ({ username: u.username, passwordHash: u.password_hash, roles: u.roles }));
  }
}

/** The rejection row for an item the database refused; the item itself is kept beside it, for replay. */
export function storeRejection(item: WriteItem, error: Error): RejectionRow {
  const topic = item.samples[0]?.topic ?? item.rejection?.topic ?? item.retained?.topic ?? item.state?.key ?? '';
  return {
    time: item.receivedAt, topic, code: 'UNS_ERR_STORE_REJECTED', reason: describeDbError(error).slice(0, 2000),
    clientId: item.rejection?.clientId ?? null, payload: null,
  };
}

/** A possible re-send (not one known to reuse a freed packet id): its samples are checked for a stored twin. */
/** Counts what the samples statement (CTE `w`) wrote: every row it inserted or changed. */
const TALLY_SQL = "SELECT count(*)::int AS written, (count(*) FILTER (WHERE xmax::text <> '0'))::int AS replaced FROM w";

/** The latest values of a batch, its parameters from $base on (replayed batches may be older than what is stored: never let an older value win). */
function lastValuesSql(base: number): string {
  const p = (i: number): string => `$${base + i}`;
  return `INSERT INTO last_values AS l (topic_id, time, received_at, v_num, v_text, v_bool, v_json, v_bytes, quality)
       SELECT id, t, r, n, tx, b, j, decode(by, 'base64'), q
       FROM unnest(${p(0)}::int4[], ${p(1)}::timestamptz[], ${p(2)}::timestamptz[], ${p(3)}::float8[], ${p(4)}::text[], ${p(5)}::bool[], ${p(6)}::jsonb[], ${p(7)}::text[], ${p(8)}::text[])
         AS u(id, t, r, n, tx, b, j, by, q)
       ON CONFLICT (topic_id) DO UPDATE SET time = EXCLUDED.time, received_at = EXCLUDED.received_at,
         v_num = EXCLUDED.v_num, v_text = EXCLUDED.v_text, v_bool = EXCLUDED.v_bool, v_json = EXCLUDED.v_json,
         v_bytes = EXCLUDED.v_bytes, quality = EXCLUDED.quality
       WHERE l.time <= EXCLUDED.time`;
}

/** A batch's samples as one statement's parameters, its latest values per topic, and what it already knows of repeats. */
interface SamplePlan extends SampleTally {
  /** The INSERT (… RETURNING xmax) and its parameters; null when no sample is left to write. */
  readonly samples: { readonly sql: string; readonly params: Array<Buffer | string> } | null;
  readonly lastValues: Buffer[] | null;
  /** Rows sent. */
  readonly k: number;
}

/** Of the k rows sent: inserted, replacing a different stored value, or equal to the stored one (not returned). */
function tallied(plan: SamplePlan, row: { written: number; replaced: number } | undefined): SampleTally {
  const r = row ?? { written: plan.k, replaced: 0 };
  return { overwritten: plan.overwritten + r.replaced, repeated: plan.repeated + plan.k - r.written };
}

/**
 * A sample is identified by (topic, time) (a unique index): the same reading written again is one row. A
 * different value at the same instant replaces the stored one (last write wins) and is counted as
 * overwritten; an identical one changes nothing and is counted as repeated. Within a batch the later of
 * two samples with one identity wins the same way (one statement cannot touch a row twice).
 */
function planSamples(items: readonly WriteItem[], ids: (name: string) => number, dedupeWindowMs?: number): SamplePlan {
  const n = items.reduce((a, i) => a + i.samples.length, 0);
  if (n === 0) return { ...NO_TALLY, samples: null, lastValues: null, k: 0 };
  // Typed where no element is NULL: unboxed numbers, read back without allocating.
  const time = new Float64Array(n), topic = new Int32Array(n), num = new Array<number | null>(n);
  const text = new Array<string | null>(n), bool = new Array<boolean | null>(n), json = new Array<string | null>(n);
  const bytes = new Array<string | null>(n), quality = new Array<string | null>(n), src = new Array<string | null>(n);
  // The twin check runs only where an item asks for it; every other batch takes the plain statement.
  const check = dedupeWindowMs !== undefined && items.some(twinCheck) ? new Array<boolean>(n) : null;
  // Latest row per topic for last_values: ON CONFLICT cannot touch one row twice in a statement.
  const latest = new Map<number, { row: SampleRow; receivedAt: number }>();
  // Keys met earlier in this statement (its NOT EXISTS below cannot see rows the statement itself inserts).
  const seen = check === null ? null : new Map<string, number>();
  // Identities met earlier in this batch, with their slot (built only once a batch has two samples of a topic).
  let slots: Map<number, Map<number, number>> | null = null;
  const firstSlot = new Map<number, number>();
  let overwritten = 0;
  let repeated = 0;
  let k = 0;
  for (const item of items) {
    for (const s of item.samples) {
      const ck = check !== null && s.src !== null && twinCheck(item);
      if (seen !== null && s.src !== null) {
        const key = `${s.topic}\u0000${s.src}`;
        const t = seen.get(key);
        if (ck && t !== undefined && Math.abs(t - s.time) <= (dedupeWindowMs as number)) continue; // a re-sent twin
        seen.set(key, s.time);
      }
      const id = ids(s.topic);
      // Whole microseconds, the store's resolution, computed once here: the identity this batch checks is
      // exactly the one the unique index sees.
      const us = Math.round(s.time * 1000);
      let at = k;
      const first = firstSlot.get(id);
      if (first === undefined) {
        firstSlot.set(id, k);
      } else {
        slots ??= new Map();
        let byTime = slots.get(id);
        if (byTime === undefined) {
          byTime = new Map([[time[first] as number, first]]);
          slots.set(id, byTime);
        }
        const twin = byTime.get(us);
        if (twin !== undefined) {
          at = twin;
          if (num[at] === s.num && text[at] === s.text && bool[at] === s.bool && json[at] === s.json && bytes[at] === s.bytes && quality[at] === s.quality) repeated++;
          else overwritten++;
        } else {
          byTime.set(us, k);
        }
      }
      time[at] = us; topic[at] = id; num[at] = s.num; text[at] = s.text; bool[at] = s.bool;
      json[at] = s.json; bytes[at] = s.bytes; quality[at] = s.quality; src[at] = s.src;
      if (check !== null) check[at] = ck;
      if (at === k) k++;
      const prev = latest.get(id);
      if (!s.hist && (!prev || prev.row.time <= s.time)) latest.set(id, { row: s, receivedAt: item.receivedAt });
    }
  }
  if (k === 0) return { overwritten, repeated, samples: null, lastValues: null, k: 0 };
  if (k < n) for (const a of [num, text, bool, json, bytes, quality, src, check]) if (a !== null) a.length = k;
  const params: Array<Buffer | string> = [timestamptzArray(time.subarray(0, k)), int4Array(topic.subarray(0, k)), float8Array(num), textArray(text), boolArray(bool),
    jsonbArray(json), textArray(bytes), textArray(quality), int8Array(src)];
  // Replay only: a sample whose redelivery key is already stored near its time is a re-sent message's twin
  // (ck: the sample has a key, and its message was not known to reuse a freed packet id).
  let extra = '';
  let cols = '';
  let dedupe = '';
  if (check !== null) {
    params.push(String(dedupeWindowMs), boolArray(check));
    extra = ', $11::bool[]';
    cols = ', ck';
    dedupe = `WHERE NOT u.ck OR NOT EXISTS (SELECT 1 FROM samples y WHERE y.topic_id = u.id
       AND y.time BETWEEN u.t - $10 * interval '1 millisecond' AND u.t + $10 * interval '1 millisecond' AND y.src = u.s)`;
  }
  const sql = `INSERT INTO samples AS x (time, topic_id, v_num, v_text, v_bool, v_json, v_bytes, quality, src)
       SELECT t, id, n, tx, b, j, decode(by, 'base64'), q, s
       FROM unnest($1::timestamptz[], $2::int4[], $3::float8[], $4::text[], $5::bool[], $6::jsonb[], $7::text[], $8::text[], $9::int8[]${extra})
         AS u(t, id, n, tx, b, j, by, q, s${cols}) ${dedupe}
       ON CONFLICT (topic_id, time) DO UPDATE SET v_num = EXCLUDED.v_num, v_text = EXCLUDED.v_text, v_bool = EXCLUDED.v_bool,
         v_json = EXCLUDED.v_json, v_bytes = EXCLUDED.v_bytes, quality = EXCLUDED.quality, src = EXCLUDED.src
       WHERE (x.v_num, x.v_text, x.v_bool, x.v_json, x.v_bytes, x.quality)
         IS DISTINCT FROM (EXCLUDED.v_num, EXCLUDED.v_text, EXCLUDED.v_bool, EXCLUDED.v_json, EXCLUDED.v_bytes, EXCLUDED.quality)
       RETURNING xmax`;
  const lv = [...latest.entries()].sort((a, b) => a[0] - b[0]);
  const lastValues = lv.length === 0 ? null : [int4Array(lv.map(([id]) => id)), timestamptzArray(lv.map(([, v]) => Math.round(v.row.time * 1000))),
      timestamptzArray(lv.map(([, v]) => Math.round(v.receivedAt * 1000))), float8Array(lv.map(([, v]) => v.row.num)),
      textArray(lv.map(([, v]) => v.row.text)), boolArray(lv.map(([, v]) => v.row.bool)), jsonbArray(lv.map(([, v]) => v.row.json)),
      textArray(lv.map(([, v]) => v.row.bytes)), textArray(lv.map(([, v]) => v.row.quality))];
  return { overwritten, repeated, samples: { sql, params }, lastValues, k };
}

function twinCheck(item: WriteItem): boolean {
  return item.resendCheck === true && item.keyReused !== true;
}
