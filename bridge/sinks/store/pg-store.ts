/**
 * The PostgreSQL store: one transaction per batch (samples, topics, last values, retained messages,
 * rejections, spool marker), so a batch is either wholly durable or not at all. SQL is always
 * parameterised; rows travel as arrays through unnest() to keep it one round trip per table.
 */
import pg from 'pg';
import type { Logger } from '../../../src/core/log.js';
import { migrate } from './migrations.js';
import { setupTimescale, type TimescaleMode, type TimescaleStatus, type TimescalePolicy } from './timescale.js';
import { numArray, textArray, boolArray } from './array-literal.js';
import type { SampleRow, TopicMeta, WriteBatch, RetainedRow, StateRow } from './rows.js';

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

/** Errors that say the data is at fault, not the server: retrying the same rows would fail again. */
export function isDataError(e: unknown): boolean {
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' && /^(22|23|42)/.test(code);
}

export class PgStore {
  readonly pool: pg.Pool;
  private readonly log: Logger;
  private readonly topicIds = new Map<string, number>();
  private readonly guarded = new WeakSet<pg.PoolClient>();
  private timescaleStatus: TimescaleStatus = { enabled: false, reason: 'not set up' };

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
    this.pool.on('error', (err) => this.log.warn({ err: err.message }, 'idle database connection lost'));
  }

  get timescale(): TimescaleStatus {
    return this.timescaleStatus;
  }

  async open(): Promise<void> {
    await migrate(this.pool, this.log);
    this.timescaleStatus = await setupTimescale(this.pool, this.opts.timescale, this.opts.timescalePolicy, this.log);
  }

  async ping(): Promise<void> {
    await this.pool.query('SELECT 1');
  }

  async close(): Promise<void> {
    await this.pool.end();
  }

  async writeBatch(batch: WriteBatch): Promise<WriteOutcome> {
    const client = await this.pool.connect();
    // pg only guards idle clients: a checked-out one losing its server emits 'error', which must not
    // become an uncaught exception. The failing query rejects too, and that is what we act on.
    if (!this.guarded.has(client)) {
      this.guarded.add(client);
      client.on('error', (err) => this.log.debug({ err: err.message }, 'database connection error'));
    }
    let fresh: Map<string, number> | undefined;
    try {
      await client.query('BEGIN');
      if (batch.segment !== undefined) {
        const r = await client.query('INSERT INTO spool_applied (segment) VALUES ($1) ON CONFLICT DO NOTHING', [batch.segment]);
        if (r.rowCount === 0) {
          await client.query('ROLLBACK');
          return 'already-applied';
        }
      }
      fresh = await this.resolveTopics(client, batch);
      const ids = (name: string): number => this.topicIds.get(name) ?? fresh?.get(name) ?? 0;
      await this.insertSamples(client, batch, ids);
      await this.upsertRetained(client, batch);
      await this.insertRejections(client, batch);
      await this.upsertState(client, batch);
      await client.query('COMMIT');
    } catch (e) {
      await client.query('ROLLBACK').catch(() => undefined);
      // A broken connection must not go back to the pool.
      client.release(isDataError(e) ? undefined : (e as Error));
      throw e;
    }
    client.release();
    // Only committed ids enter the cache: a rolled-back insert may not have kept its id.
    if (fresh) for (const [k, v] of fresh) this.topicIds.set(k, v);
    return 'committed';
  }

  private async resolveTopics(client: pg.PoolClient, batch: WriteBatch): Promise<Map<string, number> | undefined> {
    let missing: Map<string, TopicMeta> | undefined;
    for (const item of batch.items) {
      for (const t of item.topics) {
        if (!this.topicIds.has(t.name)) (missing ??= new Map()).set(t.name, t);
      }
    }
    if (!missing) return undefined;
    const metas = [...missing.values()];
    // DO UPDATE (a no-op write) so RETURNING yields ids of rows that already existed too.
    const r = await client.query<{ id: number; name: string }>(
      `INSERT INTO topics (name, levels, route, unit)
       SELECT * FROM unnest($1::text[], $2::jsonb[], $3::text[], $4::text[])
       ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id, name`,
      [metas.map((m) => m.name), metas.map((m) => (m.levels ? JSON.stringify(m.levels) : null)),
        metas.map((m) => m.route), metas.map((m) => m.unit)],
    );
    return new Map(r.rows.map((row) => [row.name, row.id]));
  }

  private async insertSamples(client: pg.PoolClient, batch: WriteBatch, ids: (name: string) => number): Promise<void> {
    const n = batch.items.reduce((a, i) => a + i.samples.length, 0);
    if (n === 0) return;
    const time = new Array<number>(n), topic = new Array<number>(n), num = new Array<number | null>(n);
    const text = new Array<string | null>(n), bool = new Array<boolean | null>(n), json = new Array<string | null>(n);
    const bytes = new Array<string | null>(n), quality = new Array<string | null>(n), src = new Array<string | null>(n);
    // Latest row per topic for last_values: ON CONFLICT cannot touch one row twice in a statement.
    const latest = new Map<number, { row: SampleRow; receivedAt: number }>();
    let k = 0;
    for (const item of batch.items) {
      for (const s of item.samples) {
        const id = ids(s.topic);
        time[k] = s.time; topic[k] = id; num[k] = s.num; text[k] = s.text; bool[k] = s.bool;
        json[k] = s.json; bytes[k] = s.bytes; quality[k] = s.quality; src[k] = s.src;
        k++;
        const prev = latest.get(id);
        if (!prev || prev.row.time <= s.time) latest.set(id, { row: s, receivedAt: item.receivedAt });
      }
    }
    await client.query(
      `INSERT INTO samples (time, topic_id, v_num, v_text, v_bool, v_json, v_bytes, quality, src)
       SELECT to_timestamp(t / 1000.0), id, n, tx, b, j, decode(by, 'base64'), q, s
       FROM unnest($1::float8[], $2::int[], $3::float8[], $4::text[], $5::bool[], $6::jsonb[], $7::text[], $8::text[], $9::int8[])
         AS u(t, id, n, tx, b, j, by, q, s)`,
      [numArray(time), numArray(topic), numArray(num), textArray(text), boolArray(bool), textArray(json), textArray(bytes), textArray(quality), numArray(src)],
    );
    const lv = [...latest.entries()];
    // Replayed spool batches may be older than what is stored: never let an older value win.
    await client.query(
      `INSERT INTO last_values AS l (topic_id, time, received_at, v_num, v_text, v_bool, v_json, v_bytes, quality)
       SELECT id, to_timestamp(t / 1000.0), to_timestamp(r / 1000.0), n, tx, b, j, decode(by, 'base64'), q
       FROM unnest($1::int[], $2::float8[], $3::float8[], $4::float8[], $5::text[], $6::bool[], $7::jsonb[], $8::text[], $9::text[])
         AS u(id, t, r, n, tx, b, j, by, q)
       ON CONFLICT (topic_id) DO UPDATE SET time = EXCLUDED.time, received_at = EXCLUDED.received_at,
         v_num = EXCLUDED.v_num, v_text = EXCLUDED.v_text, v_bool = EXCLUDED.v_bool, v_json = EXCLUDED.v_json,
         v_bytes = EXCLUDED.v_bytes, quality = EXCLUDED.quality
       WHERE l.time <= EXCLUDED.time`,
      [numArray(lv.map(([id]) => id)), numArray(lv.map(([, v]) => v.row.time)), numArray(lv.map(([, v]) => v.receivedAt)),
        numArray(lv.map(([, v]) => v.row.num)), textArray(lv.map(([, v]) => v.row.text)), boolArray(lv.map(([, v]) => v.row.bool)),
        textArray(lv.map(([, v]) => v.row.json)), textArray(lv.map(([, v]) => v.row.bytes)), textArray(lv.map(([, v]) => v.row.quality))],
    );
  }

  private async upsertRetained(client: pg.PoolClient, batch: WriteBatch): Promise<void> {
    const last = new Map<string, RetainedRow>();
    for (const item of batch.items) if (item.retained) last.set(item.retained.topic, item.retained);
    if (last.size === 0) return;
    const rows = [...last.values()];
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

  private async insertRejections(client: pg.PoolClient, batch: WriteBatch): Promise<void> {
    const rows = batch.items.flatMap((i) => (i.rejection ? [i.rejection] : []));
    if (rows.length === 0) return;
    await client.query(
      `INSERT INTO rejections (time, topic, code, reason, client_id, payload)
       SELECT to_timestamp(t / 1000.0), tp, c, r, cl, decode(p, 'base64')
       FROM unnest($1::float8[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) AS u(t, tp, c, r, cl, p)`,
      [rows.map((r) => r.time), rows.map((r) => r.topic), rows.map((r) => r.code), rows.map((r) => r.reason),
        rows.map((r) => r.clientId), rows.map((r) => r.payload)],
    );
  }

  private async upsertState(client: pg.PoolClient, batch: WriteBatch): Promise<void> {
    const last = new Map<string, StateRow>();
    for (const item of batch.items) {
      const st = item.state;
      if (st && (last.get(st.key)?.rev ?? -1) < st.rev) last.set(st.key, st);
    }
    if (last.size === 0) return;
    const rows = [...last.values()];
    await client.query(
      `INSERT INTO state AS s (key, rev, value, updated_at)
       SELECT k, r, v, now() FROM unnest($1::text[], $2::int8[], $3::jsonb[]) AS u(k, r, v)
       ON CONFLICT (key) DO UPDATE SET rev = EXCLUDED.rev, value = EXCLUDED.value, updated_at = now()
       WHERE s.rev < EXCLUDED.rev`,
      [rows.map((r) => r.key), rows.map((r) => r.rev), rows.map((r) => r.value)],
    );
  }

  async loadState(key: string): Promise<unknown> {
    const r = await this.pool.query<{ value: unknown }>('SELECT value FROM state WHERE key = $1', [key]);
    return r.rows[0]?.value;
  }

  /**
   * Which of these redelivery keys are already stored for the topic near `time`? A DUP publish whose
   * original was committed (but whose PUBACK was lost, or the server died before sending it) is then
   * acknowledged without a second row.
   */
  async storedKeys(topic: string, time: number, windowMs: number, keys: readonly string[]): Promise<Set<string>> {
    const r = await this.pool.query<{ src: string }>(
      `SELECT s.src::text AS src FROM samples s JOIN topics t ON t.id = s.topic_id
       WHERE t.name = $1 AND s.time BETWEEN to_timestamp($2 / 1000.0) AND to_timestamp($3 / 1000.0)
         AND s.src = ANY($4::int8[])`,
      [topic, time - windowMs, time + windowMs, keys],
    );
    return new Set(r.rows.map((row) => row.src));
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
