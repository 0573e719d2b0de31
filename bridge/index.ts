export { Pipeline, type PipelineOptions, type PipelineStats } from './pipeline.js';
export { buildStages, runStages, draftOf, routeStage, levelsStage, decodeStage, validateStage, type Draft, type Stage, type StageOptions } from './stages.js';
export type { Sink, SinkMoment } from './sinks/sink.js';
export { StoreSink, type StoreSinkOptions, type StoreSinkStats, type Fate } from './sinks/store/store-sink.js';
export { SparkplugDecoder } from './decode/sparkplug.js';
export { decodeValuePayload } from './decode/envelope.js';
export { parseJsonExact, stringifyJson } from './decode/json-exact.js';
export { PgStore, type PgStoreOptions } from './sinks/store/pg-store.js';
export { Spool } from './sinks/store/spool.js';
export { StoreWriter, type WriterState, type WriterStats } from './sinks/store/store-writer.js';
export { startPostgres, embeddedBinDir, type PostgresProcess, type PostgresProcessOptions, type PostgresExit } from './sinks/store/embedded-postgres.js';
export { SupervisedPostgres, type SupervisedPostgresOptions, type EmbeddedDbState } from './sinks/store/postgres-supervisor.js';
export { MIGRATIONS } from './sinks/store/migrations.js';
export { replayStoreRejections, type ReplayReport, type ReplayOptions } from './sinks/store/rejection-replay.js';
export { ReadQueries, AGGREGATES, isoFromMicros, type Aggregate, type BucketName, type RawCursor, type TopicInfo, type ExportRow } from './sinks/store/queries.js';
export { ApiTokenStore, type ApiTokenInfo } from './sinks/store/api-tokens.js';
export { LiveHub } from './sinks/live/hub.js';
export { liveSink } from './sinks/live/live-sink.js';
export { rulesSink } from './rules/rules-sink.js';
export { sessionEventsSink } from './sinks/session-sink.js';
export { SparkplugHost, REBIRTH_METRIC, type HostOptions, type HostStats, type NodeView, type RebirthOutcome } from './sparkplug/host.js';
export { commandValue, encodeCommand, type CommandMetric, type CommandValue } from './sparkplug/commands.js';
export { SparkplugMapper } from './sparkplug/mapper.js';
export { republishSink, normalisedJson } from './sparkplug/republish-sink.js';
export {
  WebhookService, sensorReadingSink, EVENT_CATALOG, ENVELOPE_SCHEMA, catalogEntry, redactHeaders, isValidSecret,
  verifyStandard, verifySimple, verifyHexHmac, inAllowlist,
  type WebhookRecord, type WebhookSummary, type WebhookInput, type DeliveryView, type AttemptView, type DeliveryFilterStatus, type Outcome,
  type VerifyResult,
} from './sinks/webhooks/index.js';
export { RuleService, PgRuleStore, type Rule, type RuleInput } from './rules/index.js';
export { buildIngestSources, IngestDedupStore, type IngestSource } from './ingest/index.js';
