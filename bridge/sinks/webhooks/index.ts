/** Outbound webhooks: the public surface of bridge/sinks/webhooks (no deep imports from outside). */
export { WebhookService, type WebhookServiceOptions, type WebhookSettings, type Outcome } from './webhook-service.js';
export { Dispatcher, type DispatcherSettings, type DispatcherStats, type SentAttempt, type Timers } from './dispatcher.js';
export { Outbox, type NewDelivery, type ClaimedDelivery, type AttemptOutcome, type HealthChange, type Settlement } from './outbox.js';
export { DeliveryLog, type DeliveryView, type AttemptView, type DeliveryQuery, type DeliveryFilterStatus, type WebhookStats } from './delivery-log.js';
export { WebhookStore, activeSecrets, type WebhookRecord, type SecretEntry, type WebhookSummary, type DisabledReason } from './webhook-store.js';
export { normalizeSpec, redactHeaders, isSensitiveHeader, REDACTED, DEFAULTS as WEBHOOK_DEFAULTS, type WebhookInput, type WebhookSpec } from './webhook-config.js';
export { EVENT_CATALOG, ENVELOPE_SCHEMA, catalogEntry, isEventType, type CatalogEntry } from './event-catalog.js';
export { compileTemplate, type CompiledTemplate } from './template.js';
export { compileMatcher, normalizeConditions, OPERATORS, type Condition, type Operator } from './matcher.js';
export { signStandard, signSimple, verifyStandard, verifySimple, verifyHexHmac, generateSecret, secretKey, isValidSecret, type VerifyResult } from './signing.js';
export { deliver, checkUrl, checkDestination, type DeliveryResult, type DeliveryRequest } from './http-client.js';
export { parseAllowlist, inAllowlist, type Allowlist } from './ssrf.js';
export { DEFAULT_RETRY_POLICY, DEFAULT_SCHEDULE_S, classify, nextAttempt, transition } from './retry-policy.js';
export { sensorReadingSink } from './reading-sink.js';
