export { IngestDedupStore, DEDUP_RETENTION_MS } from './dedup-store.js';
export { buildIngestSources, MIN_SECRET_CHARS, type IngestSource, type IngestSecretsConfig } from './sources.js';
