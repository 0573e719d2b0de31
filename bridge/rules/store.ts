/**
 * The rules and rule_state tables (migration 4). REST-managed rules live in `rules`; rules from topics.yaml
 * are not stored there (the file is their source) but their states are, under their name-derived ids.
 * SQL is parameterised; batches of state changes are one transaction.
 */
import type pg from 'pg';
import type { RuleStatePersistence, StateChange, StoredRuleState } from './engine.js';
import type { Rule, RuleOperator } from './rule.js';

interface RuleRow {
  id: string; name: string; topic_filter: string; operator: string; threshold: number; hysteresis: number;
  min_duration_ms: number; enabled: boolean; source: string; owner: string; roles: string[];
  created_at: Date; updated_at: Date;
}

function fromRow(r: RuleRow): Rule {
  return {
    id: r.id, name: r.name, topicFilter: r.topic_filter, operator: r.operator as RuleOperator, threshold: r.threshold,
    hysteresis: r.hysteresis, minDurationMs: r.min_duration_ms, enabled: r.enabled, source: 'api', owner: r.owner, roles: r.roles,
    createdAt: r.created_at.getTime(), updatedAt: r.updated_at.getTime(),
  };
}

export class PgRuleStore implements RuleStatePersistence {
  constructor(private readonly pool: pg.Pool) {}

  async listRules(): Promise<Rule[]> {
    const r = await this.pool.query<RuleRow>(`SELECT * FROM rules WHERE source = 'api' ORDER BY created_at, id`);
    return r.rows.map(fromRow);
  }

  async insertRule(rule: Rule): Promise<void> {
    await this.pool.query(
      `INSERT INTO rules (id, name, topic_filter, operator, threshold, hysteresis, min_duration_ms, enabled, source, owner, roles, created_at, updated_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'api', $9, $10, $11, $11)`,
      [rule.id, rule.name, rule.topicFilter, rule.operator, rule.threshold, rule.hysteresis, rule.minDurationMs, rule.enabled,
        rule.owner, rule.roles, new Date(rule.createdAt)],
    );
  }

  async updateRule(rule: Rule): Promise<boolean> {
    const r = await this.pool.query(
      `UPDATE rules SET name = $2, topic_filter = $3, operator = $4, threshold = $5, hysteresis = $6, min_duration_ms = $7,
         enabled = $8, updated_at = $9 WHERE id = $1 AND source = 'api'`,
      [rule.id, rule.name, rule.topicFilter, rule.operator, rule.threshold, rule.hysteresis, rule.minDurationMs, rule.enabled,
        new Date(rule.updatedAt)],
    );
    return (r.rowCount ?? 0) > 0;
  }

  /** Deletes the rule; its states go through the engine's queue (RuleEngine.remove). */
  async deleteRule(id: string): Promise<boolean> {
    const r = await this.pool.query(`DELETE FROM rules WHERE id = $1 AND source = 'api'`, [id]);
    return (r.rowCount ?? 0) > 0;
  }

  async loadStates(): Promise<StoredRuleState[]> {
    const r = await this.pool.query<{ rule_id: string; topic: string; state: string; since: Date; value: number | null }>(
      `SELECT rule_id, topic, state, since, value FROM rule_state WHERE state IN ('pending', 'exceeded')`,
    );
    return r.rows.map((x) => ({ ruleId: x.rule_id, topic: x.topic, state: x.state as 'pending' | 'exceeded', since: x.since.getTime(), value: x.value }));
  }

  async saveStates(resets: readonly string[], changes: readonly StateChange[]): Promise<void> {
    const gone = changes.filter((c) => c.state === 'normal');
    const kept = changes.filter((c) => c.state !== 'normal');
    const client = await this.pool.connect();
    let broken = false;
    try {
      await client.query('BEGIN');
      if (resets.length > 0) await client.query('DELETE FROM rule_state WHERE rule_id = ANY($1::uuid[])', [resets]);
      if (gone.length > 0) {
        await client.query(
          `DELETE FROM rule_state s USING unnest($1::uuid[], $2::text[]) AS d(rule_id, topic)
           WHERE s.rule_id = d.rule_id AND s.topic = d.topic`,
          [gone.map((c) => c.ruleId), gone.map((c) => c.topic)],
        );
      }
      if (kept.length > 0) {
        await client.query(
          `INSERT INTO rule_state (rule_id, topic, state, since, value)
           SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::float8[])
           ON CONFLICT (rule_id, topic) DO UPDATE SET state = EXCLUDED.state, since = EXCLUDED.since, value = EXCLUDED.value`,
          [kept.map((c) => c.ruleId), kept.map((c) => c.topic), kept.map((c) => c.state), kept.map((c) => new Date(c.since)), kept.map((c) => c.value)],
        );
      }
      await client.query('COMMIT');
    } catch (e) {
      broken = true;
      await client.query('ROLLBACK').catch(() => undefined);
      throw e;
    } finally {
      // A connection that failed mid-transaction must not go back to the pool.
      client.release(broken ? true : undefined);
    }
  }
}
