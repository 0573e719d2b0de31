/**
 * A threshold rule and its comparison. The condition and the clear condition are one definition so they
 * cannot drift apart:
 *
 *   beyond(v):  v <op> threshold
 *   cleared(v): not (v <op> threshold - hysteresis)   for > and >=
 *               not (v <op> threshold + hysteresis)   for < and <=
 *
 * With hysteresis 0 a value clears exactly when it is no longer beyond. With `>` 80 and hysteresis 5, 81
 * exceeds, 77 does not clear (still above 75), 75 clears.
 */
import { createHash } from 'node:crypto';
import type { RuleOperator, RuleSpec } from '../../src/core/index.js';

export type { RuleOperator };

export const OPERATORS: readonly RuleOperator[] = ['>', '>=', '<', '<='];

/** What a user sets on a rule. */
export interface RuleInput {
  readonly name: string;
  readonly topicFilter: string;
  readonly operator: RuleOperator;
  readonly threshold: number;
  readonly hysteresis: number;
  readonly minDurationMs: number;
  readonly enabled: boolean;
}

export interface Rule extends RuleInput {
  readonly id: string;
  /** 'file': from topics.yaml (read-only through the API); 'api': created through REST. */
  readonly source: 'file' | 'api';
  /** Who created it ('topics.yaml' for file rules). */
  readonly owner: string;
  /** The creator's roles: the rule's filter must stay inside their read permissions. */
  readonly roles: readonly string[];
  readonly description?: string | undefined;
  /** Epoch ms. */
  readonly createdAt: number;
  readonly updatedAt: number;
}

function compare(op: RuleOperator, v: number, limit: number): boolean {
  switch (op) {
    case '>': return v > limit;
    case '>=': return v >= limit;
    case '<': return v < limit;
    case '<=': return v <= limit;
  }
}

/** The value is past the threshold. */
export function isBeyond(rule: Pick<Rule, 'operator' | 'threshold'>, v: number): boolean {
  return compare(rule.operator, v, rule.threshold);
}

/** The value is back past threshold ∓ hysteresis: an exceeded rule clears. */
export function isCleared(rule: Pick<Rule, 'operator' | 'threshold' | 'hysteresis'>, v: number): boolean {
  const up = rule.operator === '>' || rule.operator === '>=';
  return !compare(rule.operator, v, up ? rule.threshold - rule.hysteresis : rule.threshold + rule.hysteresis);
}

/**
 * File rules get an id derived from their name (a UUID-shaped SHA-256 prefix, RFC 9562 version 8), so their
 * state in rule_state is found again after a restart.
 */
export function fileRuleId(name: string): string {
  const h = createHash('sha256').update(`uns-bridge/rules/file/${name}`).digest();
  h[6] = ((h[6] ?? 0) & 0x0f) | 0x80;
  h[8] = ((h[8] ?? 0) & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

export function ruleFromSpec(spec: RuleSpec, loadedAt: number): Rule {
  return {
    id: fileRuleId(spec.name), name: spec.name, topicFilter: spec.filter, operator: spec.operator, threshold: spec.threshold,
    hysteresis: spec.hysteresis, minDurationMs: spec.minDurationMs, enabled: spec.enabled, source: 'file', owner: 'topics.yaml',
    roles: [], description: spec.description, createdAt: loadedAt, updatedAt: loadedAt,
  };
}
