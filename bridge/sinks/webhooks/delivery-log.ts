/**
 * Read side of the outbox: the per-endpoint delivery log, one delivery with its attempts, and statistics
 * (success rate, latency, events by type, a time series, an error breakdown). Parameterised SQL only.
 */
import type pg from 'pg';

/** `failed`: waiting for a retry after at least one failed attempt. */
export type DeliveryFilterStatus = 'pending' | 'in_flight' | 'succeeded' | 'dead' | 'failed';

export interface DeliveryQuery {
  readonly webhookId: string;
  readonly status?: DeliveryFilterStatus | undefined;
  readonly eventType?: string | undefined;
  readonly since?: number | undefined;
  readonly until?: number | undefined;
  readonly limit: number;
  readonly offset: number;
}

export interface AttemptView {
  readonly attempt: number;
  readonly startedAt: number;
  readonly statusCode: number | null;
  readonly latencyMs: number;
  readonly responseExcerpt: string | null;
  readonly errorClass: string | null;
  readonly outcome: string;
  readonly nextRetryAt: number | null;
}

export interface DeliveryView {
  readonly id: string;
  readonly seq: number;
  readonly eventType: string;
  readonly eventIds: readonly string[];
  readonly status: 'pending' | 'in_flight' | 'succeeded' | 'dead';
  readonly attempts: number;
  readonly deadReason: string | null;
  readonly nextAttemptAt: number | null;
  readonly createdAt: number;
  readonly lastAttemptAt: number | null;
  readonly last: AttemptView | null;
}

export interface StatsQuery {
  readonly webhookId: string;
  readonly since: number;
  readonly until: number;
  readonly groupBy: 'hour' | 'day';
}

export interface WebhookStats {
  readonly summary: {
    totalDeliveries: number; succeeded: number; dead: number; pending: number; successRate: number | null;
    totalAttempts: number; failedAttempts: number; totalRetries: number; avgLatencyMs: number | null;
  };
  readonly eventsByType: Array<{ event: string; count: number; succeeded: number; dead: number; successRate: number | null }>;
  readonly timeSeries: Array<{ bucket: number; attempts: number; succeeded: number; failed: number; avgLatencyMs: number | null }>;
  readonly errorBreakdown: Array<{ errorType: string; count: number; percentage: number }>;
}

interface DeliveryRow {
  id: string; seq: string; event_type: string; event_ids: string[]; status: DeliveryView['status']; attempts: number; dead_reason: string | null;
  next_attempt_at: Date; created_at: Date; last_attempt_at: Date | null;
  a_attempt: number | null; a_started: Date | null; a_code: number | null; a_latency: number | null; a_excerpt: string | null;
  a_error: string | null; a_outcome: string | null; a_next: Date | null;
}

interface AttemptRow {
  attempt: number; started_at: Date; status_code: number | null; latency_ms: number; response_excerpt: string | null;
  error_class: string | null; outcome: string; next_retry_at: Date | null;
}

function attemptView(r: AttemptRow): AttemptView {
  return {
    attempt: r.attempt, startedAt: r.started_at.getTime(), statusCode: r.status_code, latencyMs: r.latency_ms, responseExcerpt: r.response_excerpt,
    errorClass: r.error_class, outcome: r.outcome, nextRetryAt: r.next_retry_at?.getTime() ?? null,
  };
}

function deliveryView(r: DeliveryRow): DeliveryView {
  return {
    id: r.id, seq: Number(r.seq), eventType: r.event_type, eventIds: r.event_ids, status: r.status, attempts: r.attempts, deadReason: r.dead_reason,
    nextAttemptAt: r.status === 'pending' ? r.next_attempt_at.getTime() : null, createdAt: r.created_at.getTime(),
    lastAttemptAt: r.last_attempt_at?.getTime() ?? null,
    last: r.a_attempt === null || r.a_started === null ? null : attemptView({
      attempt: r.a_attempt, started_at: r.a_started, status_code: r.a_code, latency_ms: r.a_latency ?? 0, response_excerpt: r.a_excerpt,
      error_class: r.a_error, outcome: r.a_outcome ?? '', next_retry_at: r.a_next,
    }),
  };
}

const DELIVERY_SELECT = `SELECT d.id, d.seq, d.event_type, d.event_ids, d.status, d.attempts, d.dead_reason, d.next_attempt_at, d.created_at, d.last_attempt_at,
    a.attempt AS a_attempt, a.started_at AS a_started, a.status_code AS a_code, a.latency_ms AS a_latency, a.response_excerpt AS a_excerpt,
    a.error_class AS a_error, a.outcome AS a_outcome, a.next_retry_at AS a_next
  FROM webhook_deliveries d
  LEFT JOIN LATERAL (SELECT * FROM webhook_attempts x WHERE x.delivery_id = d.id ORDER BY x.attempt DESC LIMIT 1) a ON true`;

function pct(part: number, whole: number): number | null {
  return whole === 0 ? null : Math.round((part / whole) * 1000) / 10;
}

export class DeliveryLog {
  constructor(private readonly pool: pg.Pool) {}

  async list(q: DeliveryQuery): Promise<{ items: DeliveryView[]; total: number }> {
    const params: unknown[] = [q.webhookId];
    const where = ['d.webhook_id = $1'];
    if (q.status === 'failed') where.push(`d.status = 'pending' AND d.attempts > d.attempt_base`);
    else if (q.status !== undefined) { params.push(q.status); where.push(`d.status = $${params.length}`); }
    if (q.eventType !== undefined) { params.push(q.eventType); where.push(`d.event_type = $${params.length}`); }
    if (q.since !== undefined) { params.push(new Date(q.since)); where.push(`d.created_at >= $${params.length}`); }
    if (q.until !== undefined) { params.push(new Date(q.until)); where.push(`d.created_at < $${params.length}`); }
    const w = where.join(' AND ');
    const total = await this.pool.query<{ n: string }>(`SELECT count(*) AS n FROM webhook_deliveries d WHERE ${w}`, params);
    params.push(q.limit, q.offset);
    const { rows } = await this.pool.query<DeliveryRow>(
      `${DELIVERY_SELECT} WHERE ${w} ORDER BY d.created_at DESC, d.seq DESC LIMIT $${params.length - 1} OFFSET $${params.length}`, params);
    return { items: rows.map(deliveryView), total: Number(total.rows[0]?.n ?? 0) };
  }

  async get(webhookId: string, deliveryId: string): Promise<{ delivery: DeliveryView; body: string; attempts: AttemptView[] } | undefined> {
    const { rows } = await this.pool.query<DeliveryRow & { body: string }>(
      `${DELIVERY_SELECT.replace('SELECT d.id,', 'SELECT d.body, d.id,')} WHERE d.webhook_id = $1 AND d.id = $2`, [webhookId, deliveryId]);
    const r = rows[0];
    if (!r) return undefined;
    const a = await this.pool.query<AttemptRow>(
      `SELECT attempt, started_at, status_code, latency_ms, response_excerpt, error_class, outcome, next_retry_at
       FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt`, [deliveryId]);
    return { delivery: deliveryView(r), body: r.body, attempts: a.rows.map(attemptView) };
  }

  async stats(q: StatsQuery): Promise<WebhookStats> {
    const p = [q.webhookId, new Date(q.since), new Date(q.until)];
    const [byType, attempts, series, errors] = await Promise.all([
      this.pool.query<{ event_type: string; n: string; ok: string; dead: string; pending: string }>(
        `SELECT event_type, count(*) AS n, count(*) FILTER (WHERE status = 'succeeded') AS ok, count(*) FILTER (WHERE status = 'dead') AS dead,
           count(*) FILTER (WHERE status IN ('pending', 'in_flight')) AS pending
         FROM webhook_deliveries WHERE webhook_id = $1 AND created_at >= $2 AND created_at < $3
         GROUP BY event_type ORDER BY count(*) DESC, event_type`, p),
      this.pool.query<{ n: string; failed: string; retries: string; avg: number | null }>(
        `SELECT count(*) AS n, count(*) FILTER (WHERE a.outcome <> 'success') AS failed, count(*) FILTER (WHERE a.attempt > 1) AS retries,
           avg(a.latency_ms)::float8 AS avg
         FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
         WHERE d.webhook_id = $1 AND a.started_at >= $2 AND a.started_at < $3`, p),
      this.pool.query<{ bucket: Date; n: string; ok: string; failed: string; avg: number | null }>(
        `SELECT date_trunc($4, a.started_at, 'UTC') AS bucket, count(*) AS n, count(*) FILTER (WHERE a.outcome = 'success') AS ok,
           count(*) FILTER (WHERE a.outcome <> 'success') AS failed, avg(a.latency_ms)::float8 AS avg
         FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
         WHERE d.webhook_id = $1 AND a.started_at >= $2 AND a.started_at < $3
         GROUP BY 1 ORDER BY 1`, [...p, q.groupBy]),
      this.pool.query<{ kind: string; n: string }>(
        `SELECT COALESCE(a.error_class, 'http_' || a.status_code::text, 'unknown') AS kind, count(*) AS n
         FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
         WHERE d.webhook_id = $1 AND a.started_at >= $2 AND a.started_at < $3 AND a.outcome <> 'success'
         GROUP BY 1 ORDER BY count(*) DESC, 1`, p),
    ]);
    let total = 0, ok = 0, dead = 0, pending = 0;
    const eventsByType = byType.rows.map((r) => {
      const n = Number(r.n), s = Number(r.ok), d = Number(r.dead);
      total += n; ok += s; dead += d; pending += Number(r.pending);
      return { event: r.event_type, count: n, succeeded: s, dead: d, successRate: pct(s, s + d) };
    });
    const a = attempts.rows[0];
    const failedAttempts = Number(a?.failed ?? 0);
    return {
      summary: {
        totalDeliveries: total, succeeded: ok, dead, pending, successRate: pct(ok, ok + dead),
        totalAttempts: Number(a?.n ?? 0), failedAttempts, totalRetries: Number(a?.retries ?? 0),
        avgLatencyMs: a?.avg === null || a?.avg === undefined ? null : Math.round(a.avg * 10) / 10,
      },
      eventsByType,
      timeSeries: series.rows.map((r) => ({
        bucket: r.bucket.getTime(), attempts: Number(r.n), succeeded: Number(r.ok), failed: Number(r.failed),
        avgLatencyMs: r.avg === null ? null : Math.round(r.avg * 10) / 10,
      })),
      errorBreakdown: errors.rows.map((r) => ({ errorType: r.kind, count: Number(r.n), percentage: pct(Number(r.n), failedAttempts) ?? 0 })),
    };
  }
}
