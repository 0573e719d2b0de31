/** What the API needs from the rest of the server; main.ts builds it. Each router takes only this. */
import type { Logger } from '../core/index.js';
import type { Namespace } from '../core/index.js';
import type { IngestOutcome } from '../core/index.js';
import type { ApiAuth, ApiPrincipal } from './auth.js';
import type { RequestValidator } from './openapi.js';
import type { ApiTokenStore } from '../../bridge/index.js';
import type { ReadQueries } from '../../bridge/index.js';
import type { LiveHub } from '../../bridge/index.js';
import type { Metrics } from './metrics.js';
import type { EventBus } from '../core/index.js';
import type { WebhookService } from '../../bridge/index.js';
import type { RuleService } from '../../bridge/index.js';
import type { IngestDedupStore, IngestSource } from '../../bridge/index.js';
import type { SparkplugHost } from '../../bridge/index.js';

export interface ReadinessReport {
  readonly ready: boolean;
  readonly status: 'ready' | 'degraded' | 'starting' | 'stopping';
  readonly checks: Record<string, unknown>;
}

export interface ApiDeps {
  readonly log: Logger;
  readiness(): ReadinessReport;
  readonly auth: ApiAuth;
  readonly tokens: ApiTokenStore;
  readonly validator: RequestValidator;
  readonly openapi: object;
  readonly namespace: Namespace;
  readonly queries: ReadQueries;
  readonly hub: LiveHub;
  readonly metrics: Metrics;
  readonly events: EventBus;
  /** The database pool, for API features that keep their own tables (webhooks, rules). */
  readonly pool: import('pg').Pool;
  /** Outbound webhooks (routes/webhooks.ts); absent when not wired (the routes answer 503). */
  readonly webhooks?: WebhookService;
  /** Threshold rules (routes/rules.ts). */
  readonly rules: RuleService;
  /** The Sparkplug host application: edge node sessions, rebirth requests and commands (routes/sparkplug.ts). */
  readonly sparkplug: SparkplugHost;
  /** Signed inbound ingest sources from topics.yaml, and the delivery ids already processed (routes/ingest.ts). */
  readonly ingest: { readonly sources: ReadonlyMap<string, IngestSource>; readonly dedup: IngestDedupStore };
  /**
   * Writes one message through the same validation, ACL and durability path as MQTT. Resolves when the
   * outcome is known: durable (no rejection), rejected (with its Rejection), or not durable (error).
   */
  publish(topic: string, payload: Buffer, principal: ApiPrincipal, opts: { retain: boolean }): Promise<IngestOutcome>;
  readonly limits: { readonly bodyBytes: number; readonly topic: { readonly maxBytes: number; readonly maxLevels: number } };
  /** Epoch ms; injected so tests can move time. */
  now(): number;
}
