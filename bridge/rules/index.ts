export { RuleEngine, realScheduler, PERSIST_RETRY_MS, type RuleEngineOptions, type RuleEngineStats, type RuleStatePersistence, type StateChange, type StoredRuleState, type Scheduler, type TopicStateView } from './engine.js';
export { RuleService, type RuleInput, type RuleServiceOptions } from './service.js';
export { PgRuleStore } from './store.js';
export { OPERATORS, fileRuleId, isBeyond, isCleared, ruleFromSpec, type Rule, type RuleOperator } from './rule.js';
