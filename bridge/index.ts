export { Pipeline, type PipelineOptions, type PipelineStats, type MessageListener } from './pipeline.js';
export { SparkplugDecoder } from './decode/sparkplug.js';
export { decodeValuePayload } from './decode/envelope.js';
export { parseJsonExact, stringifyJson } from './decode/json-exact.js';
export { PgStore, type PgStoreOptions } from './sinks/store/pg-store.js';
export { Spool } from './sinks/store/spool.js';
export { StoreWriter, type WriterState, type WriterStats } from './sinks/store/store-writer.js';
export { startPostgres, embeddedBinDir, type PostgresProcess } from './sinks/store/embedded-postgres.js';
export { MIGRATIONS } from './sinks/store/migrations.js';
