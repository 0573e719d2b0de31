/**
 * Threshold rules as a whole: the file rules from topics.yaml, the REST-managed ones from the rules table,
 * the engine that evaluates them and the store that keeps them. The API and main.ts use only this.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from '../../src/core/index.js';
import type { RuleSpec } from '../../src/core/index.js';
import type { UnsEvent } from '../../src/core/index.js';
import { RuleEngine, type Scheduler } from './engine.js';
import type { PgRuleStore } from './store.js';
import { ruleFromSpec, type Rule, type RuleInput } from './rule.js';

export type { RuleInput } from './rule.js';

export interface RuleServiceOptions {
  readonly store: PgRuleStore;
  readonly fileRules: readonly RuleSpec[];
  readonly emit: (e: UnsEvent) => void;
  readonly log: Logger;
  /** Is the rule's filter still inside its creator's read permissions (roles may change in topics.yaml)? */
  readonly permitted?: (rule: Rule) => boolean;
  readonly now?: () => number;
  readonly scheduler?: Scheduler;
}

export class RuleService {
  readonly engine: RuleEngine;
  private readonly now: () => number;
  private loading: Promise<void> | null = null;

  constructor(private readonly opts: RuleServiceOptions) {
    this.now = opts.now ?? Date.now;
    this.engine = new RuleEngine({
      persistence: opts.store, emit: opts.emit, log: opts.log, now: this.now, scheduler: opts.scheduler,
      permitted: (r) => r.source === 'file' || (opts.permitted?.(r) ?? true),
    });
  }

  get ready(): boolean {
    return this.engine.ready;
  }

  /** The pipeline listener (see RuleEngine.onMessage). */
  get onMessage(): RuleEngine['onMessage'] {
    return this.engine.onMessage;
  }

  /** Loads rules and stored states once the database is open; later calls are no-ops, a failed one may be retried. */
  load(): Promise<void> {
    if (this.engine.ready) return Promise.resolve();
    this.loading ??= (async () => {
      const at = this.now();
      const rules = [...this.opts.fileRules.map((s) => ruleFromSpec(s, at)), ...(await this.opts.store.listRules())];
      const states = await this.opts.store.loadStates();
      this.engine.load(rules, states);
      for (const r of rules) {
        if (r.source === 'api' && this.opts.permitted && !this.opts.permitted(r)) {
          this.opts.log.warn({ rule: r.id, name: r.name, filter: r.topicFilter }, 'threshold rule outside its owner\'s read permissions: not evaluated');
        }
      }
      this.opts.log.info({ rules: rules.length, states: states.length }, 'threshold rules loaded');
    })().finally(() => { this.loading = null; });
    return this.loading;
  }

  list(): readonly Rule[] {
    return this.engine.list();
  }

  get(id: string): Rule | undefined {
    return this.engine.get(id);
  }

  async create(input: RuleInput, owner: string, roles: readonly string[]): Promise<Rule> {
    const at = this.now();
    const rule: Rule = { ...input, id: randomUUID(), source: 'api', owner, roles: [...roles], createdAt: at, updatedAt: at };
    await this.opts.store.insertRule(rule);
    this.engine.upsert(rule);
    return rule;
  }

  /** Undefined when there is no such REST-managed rule. */
  async update(id: string, input: RuleInput): Promise<Rule | undefined> {
    const cur = this.engine.get(id);
    if (cur?.source !== 'api') return undefined;
    const rule: Rule = { ...cur, ...input, updatedAt: this.now() };
    if (!(await this.opts.store.updateRule(rule))) return undefined;
    this.engine.upsert(rule);
    return rule;
  }

  async remove(id: string): Promise<boolean> {
    const cur = this.engine.get(id);
    if (cur?.source !== 'api') return false;
    const gone = await this.opts.store.deleteRule(id);
    this.engine.remove(id);
    return gone;
  }

  close(): Promise<void> {
    return this.engine.close();
  }
}
