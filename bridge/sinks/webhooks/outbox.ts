/**
 * The durable outbox (`webhook_deliveries`, `webhook_attempts`). A delivery row is committed before
 * anything is sent; its id is the `webhook-id` of every attempt, so receivers de-duplicate retries
 * (docs/guarantees.md: "Exactly once in the store ... Webhook retries carry the same webhook-id").
 *
 * Claiming works across instances sharing one database:
 * - due rows are taken `FOR UPDATE SKIP LOCKED`; the endpoints too (`FOR NO KEY UPDATE SKIP LOCKED`) for
 *   the length of one claim statement, so two instances never count an endpoint's in-flight deliveries at
 *   the same time (the per-endpoint concurrency limit holds across instances) and neither waits;
 * - a claimed row becomes `in_flight` with a lease (`locked_until` = now + its timeout + a margin). The
 *   attempt's result is written only if the row is still that attempt (`attempts` fences a late writer).
 *   A crashed worker's lease runs out and the row is claimed again: at-least-once, same webhook-id;
 * - ordered endpoints only ever offer their head (lowest `seq` not yet succeeded or dead), so one delivery
 *   is in flight at a time and the next waits until the head is settled, retries included.
 *
 * Time comes in as arguments; the database clock is not used for scheduling.
 */
import type pg from 'pg';
import type { DeliveryResult } from './http-client.js';
import { recordAttempt, type AttemptClass, type EndpointHealth, type RetryPolicy } from './retry-policy.js';
import type { SecretEntry } from './webhook-store.js';

export interface NewDelivery {
  readonly id: string;
  readonly webhookId: string;
  readonly eventType: string;
  readonly eventIds: readonly string[];
  readonly body: string;
  /** Epoch ms: created and first due. */
  readonly at: number;
}

export interface ClaimedDelivery {
  readonly id: string;
  readonly seq: number;
  readonly webhookId: string;
  readonly webhookName: string;
  readonly eventType: string;
  readonly body: string;
  /** This attempt's number (1-based, counting every attempt since the row was created). */
  readonly attempt: number;
  /** Attempts made before the last replay: the retry schedule is indexed by attempt - attemptBase. */
  readonly attemptBase: number;
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly secrets: readonly SecretEntry[];
  readonly scheduleS: readonly number[];
  readonly timeoutMs: number;
}

/** What an attempt decided about its delivery (from the state machine in retry-policy.ts). */
export type Settlement =
  | { readonly status: 'succeeded' }
  | { readonly status: 'pending'; readonly dueAt: number }
  | { readonly status: 'dead'; readonly reason: string };

export interface AttemptOutcome {
  readonly deliveryId: string;
  readonly webhookId: string;
  readonly attempt: number;
  readonly startedAt: number;
  readonly result: DeliveryResult;
  readonly outcome: AttemptClass;
  readonly settlement: Settlement;
}

/**
 * The outcome kept in the attempt log: the attempt's class, except that a retryable failure which ends
 * its delivery (no retry left) is 'final', so the log does not promise a retry that never comes.
 */
export function loggedOutcome(b: Pick<AttemptOutcome, 'outcome' | 'settlement'>): AttemptClass | 'final' {
  return b.outcome === 'retry' && b.settlement.status === 'dead' ? 'final' : b.outcome;
}

export interface HealthChange {
  readonly webhookId: string;
  readonly webhookName: string;
  readonly health: EndpointHealth;
}

/** Excerpts are stored; PostgreSQL text cannot hold U+0000. */
export const EXCERPT_CHARS = 1024;

function excerpt(r: DeliveryResult): string | null {
  const t = r.kind === 'response' ? r.bodyExcerpt : r.message;
  return t.slice(0, EXCERPT_CHARS).replace(/\0/g, '\uFFFD');
}

interface ClaimRow {
  id: string; seq: string; webhook_id: string; event_type: string; body: string; attempts: number; attempt_base: number;
  url: string; headers: Record<string, string>; secrets: Array<{ secret: string; created_at: number; expires_at: number | null }>;
  retry_config: { schedule_s?: number[]; timeout_ms?: number }; name: string;
}

export class Outbox {
  constructor(private readonly pool: pg.Pool) {}

  /**
   * Commit new deliveries in the given order (`seq` follows it). Rows for an endpoint deleted or disabled
   * meanwhile are dropped by the join (rather than failing the whole batch on the foreign key).
   */
  async insert(rows: readonly NewDelivery[]): Promise<number> {
    if (rows.length === 0) return 0;
    const r = await this.pool.query(
      `INSERT INTO webhook_deliveries (id, webhook_id, event_type, event_ids, body, status, next_attempt_at, created_at)
       SELECT u.id, u.webhook_id, u.event_type, ARRAY(SELECT jsonb_array_elements_text(u.event_ids::jsonb)), u.body, 'pending', u.at, u.at
       FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[]) WITH ORDINALITY
         AS u(id, webhook_id, event_type, event_ids, body, at, n)
       JOIN webhooks w ON w.id = u.webhook_id AND w.is_active
       ORDER BY u.n`,
      [
        rows.map((x) => x.id), rows.map((x) => x.webhookId), rows.map((x) => x.eventType), rows.map((x) => JSON.stringify(x.eventIds)),
        rows.map((x) => x.body), rows.map((x) => new Date(x.at)),
      ],
    );
    return r.rowCount ?? 0;
  }

  /**
   * Up to `limit` due deliveries, now in flight under a lease, within each endpoint's concurrency and order.
   * Committed asynchronously (synchronous_commit off): a claim lost in a crash leaves the row pending, which
   * is claimed again; at-least-once either way, and the fsync is saved on every claim.
   */
  async claim(now: number, limit: number, leaseMarginMs: number, defaultTimeoutMs: number): Promise<ClaimedDelivery[]> {
    const client = await this.pool.connect();
    let rows: ClaimRow[];
    try {
      await client.query('BEGIN; SET LOCAL synchronous_commit TO off');
      rows = (await client.query<ClaimRow>(
        `WITH w AS (
           SELECT id, ordered, max_concurrency, url, headers, secrets, retry_config, name,
             (SELECT count(*) FROM webhook_deliveries x
               WHERE x.webhook_id = webhooks.id AND x.status = 'in_flight' AND x.locked_until > $1)::int AS busy
           FROM webhooks WHERE is_active
           FOR NO KEY UPDATE SKIP LOCKED
         ), pick AS (
           SELECT c.id, w.id AS wid FROM w CROSS JOIN LATERAL (
             (SELECT h.id FROM (
                 SELECT d.id, d.status, d.next_attempt_at, d.locked_until FROM webhook_deliveries d
                 WHERE d.webhook_id = w.id AND d.status IN ('pending', 'in_flight') ORDER BY d.seq LIMIT 1) h
              WHERE w.ordered AND ((h.status = 'pending' AND h.next_attempt_at <= $1) OR (h.status = 'in_flight' AND h.locked_until <= $1)))
             UNION ALL
             (SELECT u.id FROM (
                 (SELECT d.id, d.locked_until AS due FROM webhook_deliveries d
                  WHERE NOT w.ordered AND d.webhook_id = w.id AND d.status = 'in_flight' AND d.locked_until <= $1
                  ORDER BY d.locked_until LIMIT GREATEST(0, w.max_concurrency - w.busy))
                 UNION ALL
                 (SELECT d.id, d.next_attempt_at AS due FROM webhook_deliveries d
                  WHERE NOT w.ordered AND d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= $1
                  ORDER BY d.next_attempt_at LIMIT GREATEST(0, w.max_concurrency - w.busy))
               ) u ORDER BY u.due LIMIT GREATEST(0, w.max_concurrency - w.busy))
           ) c
           LIMIT $2
         ), locked AS (
           -- The rows themselves, skipping any another transaction holds (a replay, an operator's disable),
           -- and due still in their latest committed version.
           SELECT x.id, pick.wid FROM webhook_deliveries x JOIN pick ON pick.id = x.id
           WHERE (x.status = 'pending' AND x.next_attempt_at <= $1) OR (x.status = 'in_flight' AND x.locked_until <= $1)
           FOR UPDATE OF x SKIP LOCKED
         )
         UPDATE webhook_deliveries d
         SET status = 'in_flight', attempts = d.attempts + 1, last_attempt_at = $1,
             locked_until = $1 + make_interval(secs => (COALESCE((w.retry_config->>'timeout_ms')::int, $4) + $3) / 1000.0)
         FROM locked JOIN w ON w.id = locked.wid
         WHERE d.id = locked.id
         RETURNING d.id, d.seq, d.webhook_id, d.event_type, d.body, d.attempts, d.attempt_base, w.url, w.headers, w.secrets, w.retry_config, w.name`,
        [new Date(now), limit, leaseMarginMs, defaultTimeoutMs],
      )).rows;
      await client.query('COMMIT');
    } catch (e) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw e;
    } finally {
      client.release();
    }
    return rows
      .map((r) => ({
        id: r.id, seq: Number(r.seq), webhookId: r.webhook_id, webhookName: r.name, eventType: r.event_type, body: r.body,
        attempt: r.attempts, attemptBase: r.attempt_base, url: r.url, headers: r.headers,
        secrets: r.secrets.map((s) => ({ secret: s.secret, createdAt: s.created_at, expiresAt: s.expires_at })),
        scheduleS: r.retry_config.schedule_s ?? [], timeoutMs: r.retry_config.timeout_ms ?? defaultTimeoutMs,
      }))
      .sort((a, b) => a.seq - b.seq);
  }

  /**
   * Write a batch of attempt results in one transaction: the attempt log, each delivery's new state (only
   * if it is still in flight as that attempt), and each endpoint's health folded with recordAttempt.
   * Endpoints that become disabled (410, or failing for `policy.disableAfterS`) have their queued
   * deliveries marked dead; they are returned so the caller can announce them.
   */
  async settle(batch: readonly AttemptOutcome[], policy: RetryPolicy): Promise<HealthChange[]> {
    if (batch.length === 0) return [];
    const client = await this.pool.connect();
    try {
      // Asynchronous commit: results lost in a crash mean the lease expires and the delivery is sent again
      // with the same webhook-id (at-least-once), and no fsync is paid per batch of results.
      await client.query('BEGIN; SET LOCAL synchronous_commit TO off');
      await client.query(
        // Joined (and key-share locked) with its delivery: a delivery deleted meanwhile (its webhook was
        // deleted) drops its attempt instead of failing the batch on the foreign key.
        `INSERT INTO webhook_attempts (delivery_id, attempt, started_at, status_code, latency_ms, response_excerpt, error_class, outcome, next_retry_at)
         SELECT u.* FROM unnest($1::text[], $2::int[], $3::timestamptz[], $4::int[], $5::int[], $6::text[], $7::text[], $8::text[], $9::timestamptz[])
           AS u(delivery_id, attempt, started_at, status_code, latency_ms, response_excerpt, error_class, outcome, next_retry_at)
         JOIN webhook_deliveries d ON d.id = u.delivery_id
         FOR KEY SHARE OF d
         ON CONFLICT (delivery_id, attempt) DO NOTHING`,
        [
          batch.map((b) => b.deliveryId), batch.map((b) => b.attempt), batch.map((b) => new Date(b.startedAt)),
          batch.map((b) => (b.result.kind === 'response' ? b.result.status : null)), batch.map((b) => Math.round(b.result.latencyMs)),
          batch.map((b) => excerpt(b.result)), batch.map((b) => (b.result.kind === 'error' ? b.result.errorClass : null)),
          batch.map(loggedOutcome), batch.map((b) => (b.settlement.status === 'pending' ? new Date(b.settlement.dueAt) : null)),
        ],
      );
      await client.query(
        `UPDATE webhook_deliveries d
         SET status = u.status, next_attempt_at = COALESCE(u.due, d.next_attempt_at), dead_reason = u.reason, locked_until = NULL
         FROM unnest($1::text[], $2::int[], $3::text[], $4::timestamptz[], $5::text[]) AS u(id, attempt, status, due, reason)
         WHERE d.id = u.id AND d.attempts = u.attempt AND d.status = 'in_flight'`,
        [
          batch.map((b) => b.deliveryId), batch.map((b) => b.attempt), batch.map((b) => b.settlement.status),
          batch.map((b) => (b.settlement.status === 'pending' ? new Date(b.settlement.dueAt) : null)),
          batch.map((b) => (b.settlement.status === 'dead' ? b.settlement.reason : null)),
        ],
      );
      const changes = await this.foldHealth(client, batch, policy);
      await client.query('COMMIT');
      return changes;
    } catch (e) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw e;
    } finally {
      client.release();
    }
  }

  private async foldHealth(client: pg.PoolClient, batch: readonly AttemptOutcome[], policy: RetryPolicy): Promise<HealthChange[]> {
    const ids = [...new Set(batch.map((b) => b.webhookId))].sort();
    if (ids.length === 0) return [];
    // First without locks: most batches leave every endpoint healthy, and locking the endpoint row would
    // keep claims (FOR NO KEY UPDATE SKIP LOCKED) off it while results are written.
    const seen = await this.healthOf(client, ids, batch, policy, false);
    const stable = seen.filter((x) => !x.transition);
    const moving = seen.filter((x) => x.transition).map((x) => x.id);
    // Healthy and still healthy: last_success_at is informational, written at most once a second.
    const fresh = stable.filter((x) => x.after.state === 'healthy' && x.after.lastSuccessAt !== null);
    if (fresh.length > 0) {
      await client.query(
        `UPDATE webhooks w SET last_success_at = u.success
         FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, success)
         WHERE w.id = u.id AND w.is_active AND w.failing_since IS NULL
           AND (w.last_success_at IS NULL OR w.last_success_at < u.success - interval '1 second')`,
        [fresh.map((x) => x.id), fresh.map((x) => new Date(x.after.lastSuccessAt as number))],
      );
    }
    const changes: HealthChange[] = [];
    const off = stable.filter((x) => x.before.state === 'disabled').map((x) => x.id);
    if (moving.length > 0) {
      // State changes: locked, read again and folded again, so two settling instances agree.
      const locked = await this.healthOf(client, moving, batch, policy, true);
      const upd = { id: [] as string[], active: [] as boolean[], reason: [] as Array<string | null>, failing: [] as Array<Date | null>, success: [] as Array<Date | null> };
      for (const x of locked) {
        if (x.before.state === 'disabled') off.push(x.id);
        if (!x.transition) continue;
        const h = x.after;
        upd.id.push(x.id);
        upd.active.push(h.state !== 'disabled');
        upd.reason.push(h.state === 'disabled' ? h.reason : null);
        upd.failing.push(h.state === 'failing' ? new Date(h.failingSince) : h.state === 'disabled' ? x.failingSince : null);
        upd.success.push(h.lastSuccessAt === null ? null : new Date(h.lastSuccessAt));
        if (x.disabledNow) { changes.push({ webhookId: x.id, webhookName: x.name, health: h }); off.push(x.id); }
      }
      if (upd.id.length > 0) {
        await client.query(
          `UPDATE webhooks w SET is_active = u.active, disabled_reason = u.reason, failing_since = u.failing, last_success_at = u.success
           FROM unnest($1::uuid[], $2::boolean[], $3::text[], $4::timestamptz[], $5::timestamptz[]) AS u(id, active, reason, failing, success)
           WHERE w.id = u.id`,
          [upd.id, upd.active, upd.reason, upd.failing, upd.success],
        );
      }
    }
    // Retries just scheduled for an endpoint that is (now) disabled would never be claimed: dead instead.
    if (off.length > 0) await this.killQueued(client, off);
    return changes;
  }

  /** Each endpoint's health before and after folding this batch's outcomes in (recordAttempt). */
  private async healthOf(client: pg.PoolClient, ids: readonly string[], batch: readonly AttemptOutcome[], policy: RetryPolicy, lock: boolean): Promise<Array<{
    id: string; name: string; failingSince: Date | null; before: EndpointHealth; after: EndpointHealth; transition: boolean; disabledNow: boolean;
  }>> {
    // Sorted ids and one statement: row locks are taken in one order, so two settling instances cannot deadlock.
    const { rows } = await client.query<{ id: string; name: string; is_active: boolean; disabled_reason: string | null; failing_since: Date | null; last_success_at: Date | null }>(
      `SELECT id, name, is_active, disabled_reason, failing_since, last_success_at FROM webhooks WHERE id = ANY ($1::uuid[]) ORDER BY id${lock ? ' FOR UPDATE' : ''}`, [ids]);
    return rows.map((r) => {
      const last = r.last_success_at?.getTime() ?? null;
      const before: EndpointHealth = !r.is_active
        ? { state: 'disabled', lastSuccessAt: last, disabledAt: 0, reason: (r.disabled_reason as 'gone' | 'failing' | 'operator' | null) ?? 'operator' }
        : r.failing_since !== null
          ? { state: 'failing', lastSuccessAt: last, failingSince: r.failing_since.getTime() }
          : { state: 'healthy', lastSuccessAt: last };
      let h = before;
      let disabledNow = false;
      for (const b of batch.filter((x) => x.webhookId === r.id).sort((x, y) => x.startedAt - y.startedAt)) {
        const u = recordAttempt(h, b.outcome, b.startedAt + Math.round(b.result.latencyMs), policy);
        if (u.changed && u.health.state === 'disabled') disabledNow = true;
        h = u.health;
      }
      // A change of state (healthy/failing/disabled), or of the failure period's start, must be written.
      const transition = h.state !== before.state
        || (h.state === 'failing' && before.state === 'failing' && h.failingSince !== before.failingSince);
      return { id: r.id, name: r.name, failingSince: r.failing_since, before, after: h, transition, disabledNow };
    });
  }

  private async killQueued(client: pg.PoolClient | pg.Pool, webhookIds: readonly string[]): Promise<void> {
    await client.query(
      `UPDATE webhook_deliveries SET status = 'dead', dead_reason = 'endpoint-disabled', locked_until = NULL
       WHERE webhook_id = ANY ($1::uuid[]) AND status = 'pending'`, [webhookIds]);
  }

  /**
   * Time-driven part of the health policy (checkHealth): endpoints failing for the whole disable period
   * are disabled even when no attempt is due to notice it.
   */
  async disableExpired(now: number, policy: RetryPolicy): Promise<HealthChange[]> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      const { rows } = await client.query<{ id: string; name: string; failing_since: Date; last_success_at: Date | null }>(
        `UPDATE webhooks SET is_active = false, disabled_reason = 'failing'
         WHERE is_active AND failing_since IS NOT NULL AND failing_since <= $1
         RETURNING id, name, failing_since, last_success_at`,
        [new Date(now - policy.disableAfterS * 1000)],
      );
      if (rows.length > 0) await this.killQueued(client, rows.map((r) => r.id));
      await client.query('COMMIT');
      return rows.map((r) => ({
        webhookId: r.id, webhookName: r.name,
        health: { state: 'disabled', lastSuccessAt: r.last_success_at?.getTime() ?? null, disabledAt: now, reason: 'failing' },
      }));
    } catch (e) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw e;
    } finally {
      client.release();
    }
  }

  /**
   * Deliveries in flight to an endpoint disabled meanwhile, whose worker never settled them (it crashed):
   * once the lease has run out they are recovered and, the endpoint being off, dead ('recover' then
   * 'endpoint-disabled' in the state machine). Claims skip disabled endpoints, so without this they would
   * stay in flight for ever, and be sent again if the endpoint were enabled.
   */
  async settleAbandoned(now: number): Promise<number> {
    const r = await this.pool.query(
      `UPDATE webhook_deliveries d SET status = 'dead', dead_reason = 'endpoint-disabled', locked_until = NULL
       FROM webhooks w
       WHERE w.id = d.webhook_id AND NOT w.is_active AND d.status = 'in_flight' AND d.locked_until <= $1`,
      [new Date(now)],
    );
    return r.rowCount ?? 0;
  }

  /** A synchronous test send: the row is created already in flight (attempt 1) by the caller's worker. */
  async insertClaimed(row: NewDelivery, leaseMs: number): Promise<void> {
    await this.pool.query(
      `INSERT INTO webhook_deliveries (id, webhook_id, event_type, event_ids, body, status, attempts, next_attempt_at, locked_until, last_attempt_at, created_at)
       VALUES ($1, $2, $3, $4, $5, 'in_flight', 1, $6, $7, $6, $6)`,
      [row.id, row.webhookId, row.eventType, row.eventIds, row.body, new Date(row.at), new Date(row.at + leaseMs)],
    );
  }

  /**
   * Send one delivery again (any state but in flight): due now, with a fresh retry schedule. Same id, so
   * the receiver can still de-duplicate it.
   */
  async replayOne(webhookId: string, deliveryId: string, now: number): Promise<'replayed' | 'not-found' | 'in-flight'> {
    const { rows } = await this.pool.query<{ status: string }>(
      `WITH cur AS (SELECT id, status FROM webhook_deliveries WHERE id = $1 AND webhook_id = $2 FOR UPDATE)
       UPDATE webhook_deliveries d SET status = CASE WHEN cur.status = 'in_flight' THEN d.status ELSE 'pending' END,
         next_attempt_at = CASE WHEN cur.status = 'in_flight' THEN d.next_attempt_at ELSE $3 END,
         attempt_base = CASE WHEN cur.status = 'in_flight' THEN d.attempt_base ELSE d.attempts END,
         dead_reason = CASE WHEN cur.status = 'in_flight' THEN d.dead_reason ELSE NULL END
       FROM cur WHERE d.id = cur.id
       RETURNING cur.status`,
      [deliveryId, webhookId, new Date(now)],
    );
    const r = rows[0];
    if (!r) return 'not-found';
    return r.status === 'in_flight' ? 'in-flight' : 'replayed';
  }

  /** Every dead delivery, and every one waiting for a retry, created in [since, until): due now. */
  async replaySince(webhookId: string, since: number, until: number, now: number): Promise<number> {
    const r = await this.pool.query(
      `UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = $4, attempt_base = attempts, dead_reason = NULL
       WHERE webhook_id = $1 AND created_at >= $2 AND created_at < $3
         AND (status = 'dead' OR (status = 'pending' AND attempts > attempt_base))`,
      [webhookId, new Date(since), new Date(until), new Date(now)],
    );
    return r.rowCount ?? 0;
  }

  /** Settled deliveries older than the retention (their attempts go with them). */
  async prune(olderThan: number): Promise<number> {
    const r = await this.pool.query(
      `DELETE FROM webhook_deliveries WHERE status IN ('succeeded', 'dead') AND created_at < $1`, [new Date(olderThan)]);
    return r.rowCount ?? 0;
  }
}
