/**
 * The `webhooks` table: endpoint configuration, secrets, owner and health. SQL is parameterised throughout.
 * Secrets are kept as [{secret, created_at, expires_at}], newest first; rotation adds one and gives the
 * previous ones an expiry, so receivers holding either verify during the grace period.
 */
import type pg from 'pg';
import type { EventType } from '../../../src/core/index.js';
import type { WebhookSpec } from './webhook-config.js';
import type { Condition } from './matcher.js';

export interface SecretEntry {
  readonly secret: string;
  /** Epoch ms. */
  readonly createdAt: number;
  /** Epoch ms after which it no longer signs; null while current. */
  readonly expiresAt: number | null;
}

export type DisabledReason = 'gone' | 'failing' | 'operator';

export interface WebhookRecord extends WebhookSpec {
  readonly id: string;
  readonly secrets: readonly SecretEntry[];
  readonly disabledReason: DisabledReason | null;
  readonly owner: string;
  readonly roles: readonly string[];
  readonly failingSince: number | null;
  readonly lastSuccessAt: number | null;
  readonly createdAt: number;
  readonly updatedAt: number;
}

export interface WebhookSummary {
  readonly deliveries: number;
  readonly succeeded: number;
  readonly dead: number;
  readonly pending: number;
  readonly lastTriggeredAt: number | null;
}

interface Row {
  id: string; name: string; description: string | null; url: string; events: string[];
  filters: { topics?: string[]; conditions?: Condition[] }; headers: Record<string, string>;
  secrets: Array<{ secret: string; created_at: number; expires_at: number | null }>;
  is_active: boolean; disabled_reason: string | null;
  retry_config: { schedule_s?: number[]; timeout_ms?: number }; template: string | null;
  batch: { max_size?: number; max_linger_ms?: number }; ordered: boolean; max_concurrency: number;
  owner: string; roles: string[]; failing_since: Date | null; last_success_at: Date | null; created_at: Date; updated_at: Date;
}

const COLUMNS = `id, name, description, url, events, filters, headers, secrets, is_active, disabled_reason, retry_config, template,
  batch, ordered, max_concurrency, owner, roles, failing_since, last_success_at, created_at, updated_at`;

export function toRecord(r: Row): WebhookRecord {
  return {
    id: r.id, name: r.name, description: r.description, url: r.url, events: r.events as EventType[],
    topics: r.filters.topics ?? [], conditions: r.filters.conditions ?? [], headers: r.headers,
    secrets: r.secrets.map((s) => ({ secret: s.secret, createdAt: s.created_at, expiresAt: s.expires_at })),
    isActive: r.is_active, disabledReason: r.disabled_reason as DisabledReason | null,
    retry: { scheduleS: r.retry_config.schedule_s ?? [], timeoutMs: r.retry_config.timeout_ms ?? 10_000 },
    template: r.template,
    batch: { maxSize: r.batch.max_size ?? 100, maxLingerMs: r.batch.max_linger_ms ?? 250 },
    ordered: r.ordered, maxConcurrency: r.max_concurrency, owner: r.owner, roles: r.roles,
    failingSince: r.failing_since?.getTime() ?? null, lastSuccessAt: r.last_success_at?.getTime() ?? null,
    createdAt: r.created_at.getTime(), updatedAt: r.updated_at.getTime(),
  };
}

function secretsJson(s: readonly SecretEntry[]): string {
  return JSON.stringify(s.map((x) => ({ secret: x.secret, created_at: x.createdAt, expires_at: x.expiresAt })));
}

function specParams(s: WebhookSpec): unknown[] {
  return [
    s.name, s.description, s.url, s.events, JSON.stringify({ topics: s.topics, conditions: s.conditions }), JSON.stringify(s.headers),
    s.isActive, JSON.stringify({ schedule_s: s.retry.scheduleS, timeout_ms: s.retry.timeoutMs }), s.template,
    JSON.stringify({ max_size: s.batch.maxSize, max_linger_ms: s.batch.maxLingerMs }), s.ordered, s.maxConcurrency,
  ];
}

/** Secrets that still sign at `now`, newest first. */
export function activeSecrets(secrets: readonly SecretEntry[], now: number): string[] {
  return secrets.filter((s) => s.expiresAt === null || s.expiresAt > now).map((s) => s.secret);
}

export interface ListQuery {
  /** null: every owner (admins). */
  readonly owner: string | null;
  readonly status?: 'active' | 'inactive' | 'disabled' | undefined;
  readonly event?: string | undefined;
  readonly limit: number;
  readonly offset: number;
}

export class WebhookStore {
  constructor(private readonly pool: pg.Pool) {}

  async create(id: string, spec: WebhookSpec, secrets: readonly SecretEntry[], owner: string, roles: readonly string[], now: number): Promise<WebhookRecord> {
    const { rows } = await this.pool.query<Row>(
      `INSERT INTO webhooks (id, name, description, url, events, filters, headers, is_active, retry_config, template, batch, ordered,
         max_concurrency, secrets, owner, roles, disabled_reason, created_at, updated_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, CASE WHEN $8 THEN NULL ELSE 'operator' END, $17, $17)
       RETURNING ${COLUMNS}`,
      [id, ...specParams(spec), secretsJson(secrets), owner, roles, new Date(now)],
    );
    return toRecord(rows[0] as Row);
  }

  async get(id: string): Promise<WebhookRecord | undefined> {
    const { rows } = await this.pool.query<Row>(`SELECT ${COLUMNS} FROM webhooks WHERE id = $1`, [id]);
    return rows[0] ? toRecord(rows[0]) : undefined;
  }

  async list(q: ListQuery): Promise<{ items: WebhookRecord[]; total: number }> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (q.owner !== null) { params.push(q.owner); where.push(`owner = $${params.length}`); }
    if (q.status === 'active') where.push('is_active');
    if (q.status === 'inactive') where.push('NOT is_active');
    if (q.status === 'disabled') where.push(`NOT is_active AND disabled_reason IN ('gone', 'failing')`);
    if (q.event !== undefined) { params.push(q.event); where.push(`$${params.length} = ANY (events)`); }
    const w = where.length > 0 ? `WHERE ${where.join(' AND ')}` : '';
    const total = await this.pool.query<{ n: string }>(`SELECT count(*) AS n FROM webhooks ${w}`, params);
    params.push(q.limit, q.offset);
    const { rows } = await this.pool.query<Row>(
      `SELECT ${COLUMNS} FROM webhooks ${w} ORDER BY created_at DESC, id LIMIT $${params.length - 1} OFFSET $${params.length}`, params);
    return { items: rows.map(toRecord), total: Number(total.rows[0]?.n ?? 0) };
  }

  /** Every endpoint that may receive events (the dispatcher's registry). */
  async listActive(): Promise<WebhookRecord[]> {
    const { rows } = await this.pool.query<Row>(`SELECT ${COLUMNS} FROM webhooks WHERE is_active`);
    return rows.map(toRecord);
  }

  /**
   * Replace the configuration. Turning an endpoint on clears its failure period and disabled reason
   * (enableEndpoint); turning it off records 'operator' and marks its queued deliveries dead.
   */
  async update(id: string, spec: WebhookSpec, secrets: readonly SecretEntry[] | null, now: number): Promise<WebhookRecord | undefined> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      const { rows } = await client.query<Row>(
        `UPDATE webhooks SET name = $2, description = $3, url = $4, events = $5, filters = $6, headers = $7,
           retry_config = $9, template = $10, batch = $11, ordered = $12, max_concurrency = $13,
           secrets = COALESCE($14::jsonb, secrets),
           disabled_reason = CASE WHEN $8 THEN NULL WHEN is_active THEN 'operator' ELSE disabled_reason END,
           failing_since = CASE WHEN $8 AND NOT is_active THEN NULL ELSE failing_since END,
           is_active = $8, updated_at = $15
         WHERE id = $1 RETURNING ${COLUMNS}`,
        [id, ...specParams(spec), secrets === null ? null : secretsJson(secrets), new Date(now)],
      );
      const row = rows[0];
      if (row && !row.is_active) {
        await client.query(
          `UPDATE webhook_deliveries SET status = 'dead', dead_reason = 'endpoint-disabled' WHERE webhook_id = $1 AND status = 'pending'`, [id]);
      }
      await client.query('COMMIT');
      return row ? toRecord(row) : undefined;
    } catch (e) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw e;
    } finally {
      client.release();
    }
  }

  async setSecrets(id: string, secrets: readonly SecretEntry[], now: number): Promise<WebhookRecord | undefined> {
    const { rows } = await this.pool.query<Row>(
      `UPDATE webhooks SET secrets = $2, updated_at = $3 WHERE id = $1 RETURNING ${COLUMNS}`, [id, secretsJson(secrets), new Date(now)]);
    return rows[0] ? toRecord(rows[0]) : undefined;
  }

  async remove(id: string): Promise<boolean> {
    const r = await this.pool.query('DELETE FROM webhooks WHERE id = $1', [id]);
    return (r.rowCount ?? 0) > 0;
  }

  /** Delivery counts per endpoint, for lists and details. */
  async summaries(ids: readonly string[]): Promise<Map<string, WebhookSummary>> {
    const out = new Map<string, WebhookSummary>();
    if (ids.length === 0) return out;
    const { rows } = await this.pool.query<{ webhook_id: string; n: string; ok: string; dead: string; pending: string; last: Date | null }>(
      `SELECT webhook_id, count(*) AS n, count(*) FILTER (WHERE status = 'succeeded') AS ok, count(*) FILTER (WHERE status = 'dead') AS dead,
         count(*) FILTER (WHERE status IN ('pending', 'in_flight')) AS pending, max(last_attempt_at) AS last
       FROM webhook_deliveries WHERE webhook_id = ANY ($1::uuid[]) GROUP BY webhook_id`, [ids]);
    for (const r of rows) {
      out.set(r.webhook_id, { deliveries: Number(r.n), succeeded: Number(r.ok), dead: Number(r.dead), pending: Number(r.pending), lastTriggeredAt: r.last?.getTime() ?? null });
    }
    return out;
  }
}
