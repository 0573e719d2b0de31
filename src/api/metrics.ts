/**
 * Prometheus metrics (prom-client). Counters that other components already keep as plain numbers are
 * read at scrape time, so the hot path pays nothing for them.
 */
import { Registry, Counter, Gauge, Histogram, collectDefaultMetrics } from 'prom-client';

export interface MetricSources {
  /** Messages accepted by the pipeline. */
  accepted(): number;
  /** Rejections by code. */
  rejected(): Readonly<Partial<Record<string, number>>>;
  queueDepth(): number;
  spoolBytes(): number;
  backpressureHolds(): number;
  duplicatesDropped(): number;
  mqttClients(): number;
  committedRows(): number;
  /** The store writer's condition, for the outage and hold gauges and counters. */
  /** The MQTT broker's counters (BrokerStats). */
  broker?(): {
    connectsAccepted: number; connectsRefused: Readonly<Partial<Record<string, number>>>; publishesDenied: Readonly<Partial<Record<string, number>>>;
    subscribesDenied: number; frameViolations: Readonly<Partial<Record<string, number>>>; publishesRejected: number; forwardsDropped: number;
    slowConsumersClosed: number; messagesIn: number; bytesIn: number; messagesOut: number; bytesOut: number; tlsHandshakeFailures: number;
    proxyHeadersRefused: number;
  };
  /** External-broker mode: the link's counters (BrokerLinkStats), null before it started. */
  link?(): { connected: boolean; subscribed: boolean; connects: number; connectionsLost: number; messagesIn: number; bytesIn: number; messagesOut: number; bytesOut: number;
    publishesRejected: number; held: number; notDurable: number; ownSkipped: number; subscriptionsRefused: number; throttled: number } | null;
  /** Cluster mode (ClusterStats, with the number of live peers). */
  cluster?(): { connected: boolean; framesOut: number; framesIn: number; dropped: number; publishes: number; peers: number };
  /** Persistent MQTT sessions (SessionStoreStats), embedded broker only. */
  sessions?(): { loaded: boolean; sessions: number; queued: number; dropped: number; expired: number; unsaved: number; failingSince: number | null };
  /** Committed samples that met a stored one of the same topic and time. */
  samples?(): { overwritten: number; repeated: number; oneStatementBatches: number; transactionBatches: number };
  /** The certificate in service when TLS is on: when it expires (ISO date as OpenSSL prints it). */
  tlsCertificate?(): { validTo: string } | null;
  /** Webhook deliveries (DispatcherStats). */
  webhooks?(): { attempts: number; succeeded: number; failed: number; dead: number; dropped: number; inFlight: number };
  /** Threshold rule events (RuleEngineStats). */
  rules?(): { exceeded: number; cleared: number };
  /** For uns_build_info. */
  readonly version?: string;
  /** The Sparkplug host's counters. */
  sparkplug?(): { births: number; deaths: number; staleMarks: number; seqGaps: number; staleDeaths: number; rebirthsRequested: number; rebirthsSuppressed: number; commandsSent: number; nodesOnline: number };
  store?(): { degraded: boolean; holding: boolean; outages: number; holds: number; refused: number; corrupt: number; spoolSegments: number; replayLeft: number };
}

/** The link's running totals (the counters among its figures). */
type LinkCounter = Exclude<keyof NonNullable<ReturnType<NonNullable<MetricSources['link']>>>, 'connected' | 'subscribed' | 'held'>;

export class Metrics {
  readonly registry = new Registry();
  readonly flushSeconds: Histogram;
  readonly httpRequests: Counter<'route' | 'status'>;
  readonly httpSeconds: Histogram<'route'>;
  readonly wsClients: Gauge;
  readonly sseClients: Gauge;
  readonly droppedFrames: Counter<'transport'>;
  readonly deliveredPoints: Counter<'transport'>;

  constructor(src: MetricSources) {
    // Standard names (process_*, nodejs_*), so stock Node.js dashboards work.
    collectDefaultMetrics({ register: this.registry });
    const reg = [this.registry];
    const counterFrom = (name: string, help: string, read: () => number): void => {
      new Counter({ name, help, registers: reg, collect() { this.reset(); this.inc(read()); } });
    };
    const gaugeFrom = (name: string, help: string, read: () => number): void => {
      new Gauge({ name, help, registers: reg, collect() { this.set(read()); } });
    };
    counterFrom('uns_ingest_accepted_total', 'Messages accepted by the pipeline.', src.accepted);
    counterFrom('uns_store_committed_rows_total', 'Rows committed to the store.', src.committedRows);
    counterFrom('uns_ingest_backpressure_holds_total', 'QoS 0 publishes held because the store was behind.', src.backpressureHolds);
    counterFrom('uns_ingest_duplicates_dropped_total', 'Redelivered (DUP) messages already stored.', src.duplicatesDropped);
    new Counter({
      name: 'uns_ingest_rejected_total', help: 'Messages rejected, by reason code.', labelNames: ['code'], registers: reg,
      collect() {
        this.reset();
        for (const [code, n] of Object.entries(src.rejected())) this.inc({ code }, n ?? 0);
      },
    });
    gaugeFrom('uns_store_queue_depth', 'Messages queued for the store.', src.queueDepth);
    gaugeFrom('uns_store_spool_bytes', 'Bytes in the outage spool.', src.spoolBytes);
    gaugeFrom('uns_mqtt_clients', 'Connected MQTT clients.', src.mqttClients);
    const store = src.store;
    if (store) {
      gaugeFrom('uns_store_degraded', '1 while the database cannot take writes (batches go to the spool).', () => (store().degraded ? 1 : 0));
      gaugeFrom('uns_store_holding', '1 while the spool cannot take a batch either (acknowledgements held).', () => (store().holding ? 1 : 0));
      counterFrom('uns_store_outages_total', 'Times the database stopped taking writes.', () => store().outages);
      counterFrom('uns_store_holds_total', 'Times the spool could not take a batch.', () => store().holds);
      counterFrom('uns_store_refused_rows_total', 'Items the database refused as data, kept as rejections.', () => store().refused);
      counterFrom('uns_store_spool_corrupt_segments_total', 'Spool segments that did not read back whole (moved to corrupt/).', () => store().corrupt);
      gaugeFrom('uns_store_spool_segments', 'Segments in the outage spool.', () => store().spoolSegments);
      gaugeFrom('uns_store_replay_remaining_segments', 'Segments left in the replay under way.', () => store().replayLeft);
    }
    const labelled = (name: string, help: string, label: string, read: () => Readonly<Partial<Record<string, number>>>): void => {
      new Counter({
        name, help, labelNames: [label], registers: reg,
        collect() {
          this.reset();
          for (const [k, n] of Object.entries(read())) this.inc({ [label]: k }, n ?? 0);
        },
      });
    };
    const b = src.broker;
    if (b) {
      counterFrom('uns_mqtt_connections_accepted_total', 'MQTT connections authenticated.', () => b().connectsAccepted);
      labelled('uns_mqtt_connections_refused_total', 'MQTT connections refused, by reason code.', 'code', () => b().connectsRefused);
      labelled('uns_mqtt_publishes_denied_total', 'MQTT publishes refused by the ACL or topic checks (connection closed), by code.', 'code', () => b().publishesDenied);
      counterFrom('uns_mqtt_subscribes_denied_total', 'MQTT subscription filters refused (SUBACK 0x80).', () => b().subscribesDenied);
      labelled('uns_mqtt_frame_violations_total', 'MQTT connections closed by the frame guard (oversized or malformed packets), by code.', 'code', () => b().frameViolations);
      counterFrom('uns_mqtt_publishes_rejected_total', 'MQTT publishes acknowledged but refused as data (republished on $uns/rejected/).', () => b().publishesRejected);
      counterFrom('uns_mqtt_forwards_dropped_total', 'QoS 0 deliveries dropped for subscribers not keeping up.', () => b().forwardsDropped);
      counterFrom('uns_mqtt_slow_consumers_closed_total', 'Subscribers closed for not keeping up with QoS > 0 deliveries.', () => b().slowConsumersClosed);
      counterFrom('uns_mqtt_messages_received_total', 'MQTT publishes received from clients (authorised).', () => b().messagesIn);
      counterFrom('uns_mqtt_received_bytes_total', 'Payload bytes of the MQTT publishes received.', () => b().bytesIn);
      counterFrom('uns_mqtt_messages_sent_total', 'MQTT deliveries to subscribers.', () => b().messagesOut);
      counterFrom('uns_mqtt_sent_bytes_total', 'Payload bytes of the MQTT deliveries.', () => b().bytesOut);
      counterFrom('uns_mqtt_proxy_headers_refused_total', 'MQTT connections refused for a missing or malformed PROXY protocol header.', () => b().proxyHeadersRefused);
      counterFrom('uns_mqtt_tls_handshake_failures_total', 'MQTT over TLS handshakes that failed (no or unverified client certificate, plain MQTT on the TLS port).', () => b().tlsHandshakeFailures);
    }
    const cluster = src.cluster;
    if (cluster) {
      gaugeFrom('uns_cluster_redis_up', 'Cluster mode: 1 while connected to Redis.', () => (cluster().connected ? 1 : 0));
      gaugeFrom('uns_cluster_peers', 'Cluster mode: other instances heard from in the last 5 s.', () => cluster().peers);
      counterFrom('uns_cluster_frames_sent_total', 'Cluster mode: publishes, stream messages and control frames sent to the other instances.', () => cluster().framesOut);
      counterFrom('uns_cluster_frames_received_total', 'Cluster mode: frames received from the other instances.', () => cluster().framesIn);
      counterFrom('uns_cluster_frames_dropped_total', 'Cluster mode: publishes and stream messages not sent to the other instances while Redis was away (they are in the store).', () => cluster().dropped);
      counterFrom('uns_cluster_redis_publishes_total', 'Cluster mode: Redis PUBLISH commands (one per batch of frames).', () => cluster().publishes);
    }
    const sessions = src.sessions;
    if (sessions) {
      gaugeFrom('uns_mqtt_sessions', 'Persistent MQTT sessions (clean=false) kept, connected or not.', () => sessions().sessions);
      gaugeFrom('uns_mqtt_session_queued', 'Messages queued for persistent sessions (offline and in flight).', () => sessions().queued);
      counterFrom('uns_mqtt_session_dropped_total', 'Messages a full session queue did not keep (UNS_MQTT_SESSION_QUEUE_MAX; still in history).', () => sessions().dropped);
      counterFrom('uns_mqtt_sessions_expired_total', 'Persistent sessions removed after UNS_MQTT_SESSION_EXPIRY_S without their client.', () => sessions().expired);
      gaugeFrom('uns_mqtt_session_unsaved', 'Session changes not yet written to the database (kept in memory while it cannot be written).', () => sessions().unsaved);
      gaugeFrom('uns_mqtt_sessions_loaded', '1 once persistent sessions are loaded from the database (until then clean=false CONNECTs are refused).', () => (sessions().loaded ? 1 : 0));
    }
    const link = src.link;
    if (link) {
      const l = (k: LinkCounter) => () => link()?.[k] ?? 0;
      gaugeFrom('uns_broker_link_up', 'External-broker mode: 1 while connected to the broker.', () => (link()?.connected ? 1 : 0));
      gaugeFrom('uns_broker_link_subscribed', 'External-broker mode: 1 while the broker has granted the shared subscriptions (it delivers).', () => (link()?.subscribed ? 1 : 0));
      gaugeFrom('uns_broker_link_held', 'External-broker mode: messages whose acknowledgement to the broker waits for the store.', () => link()?.held ?? 0);
      counterFrom('uns_broker_link_connects_total', 'External-broker mode: accepted connections to the broker.', l('connects'));
      counterFrom('uns_broker_link_connections_lost_total', 'External-broker mode: connections to the broker lost.', l('connectionsLost'));
      counterFrom('uns_broker_link_messages_received_total', 'External-broker mode: messages received from the broker.', l('messagesIn'));
      counterFrom('uns_broker_link_received_bytes_total', 'External-broker mode: payload bytes received from the broker.', l('bytesIn'));
      counterFrom('uns_broker_link_messages_sent_total', 'External-broker mode: messages published to the broker.', l('messagesOut'));
      counterFrom('uns_broker_link_sent_bytes_total', 'External-broker mode: payload bytes published to the broker.', l('bytesOut'));
      counterFrom('uns_broker_link_rejected_total', 'External-broker mode: messages refused as data (republished under the rejected prefix).', l('publishesRejected'));
      counterFrom('uns_broker_link_not_durable_total', 'External-broker mode: messages left unacknowledged because they could not be made durable (delivered again).', l('notDurable'));
      counterFrom('uns_broker_link_own_skipped_total', 'External-broker mode: messages this server published itself, not ingested again.', l('ownSkipped'));
      counterFrom('uns_broker_link_subscriptions_refused_total', 'External-broker mode: subscriptions the broker refused.', l('subscriptionsRefused'));
      counterFrom('uns_broker_link_throttled_total', 'External-broker mode: times reading paused with the Receive Maximum of messages waiting for the store.', l('throttled'));
    }
    const samples = src.samples;
    if (samples) {
      counterFrom('uns_store_samples_overwritten_total', 'Samples that replaced a stored one of the same topic and time with a different value (last write wins).', () => samples().overwritten);
      counterFrom('uns_store_samples_repeated_total', 'Samples equal to a stored one of the same topic and time (a reading sent again): nothing changed.', () => samples().repeated);
      labelled('uns_store_batches_total', 'Live batches sent to the store, by how: one statement (samples of known topics) or a transaction (new topics, retained, rejections, state).',
        'path', () => ({ one_statement: samples().oneStatementBatches, transaction: samples().transactionBatches }));
    }
    const cert = src.tlsCertificate;
    if (cert) {
      // Alert on it: a certificate that expires unnoticed locks every TLS client out at once.
      gaugeFrom('uns_tls_certificate_expiry_timestamp_seconds', 'When the TLS certificate in service expires (Unix time).',
        () => { const c = cert(); return c === null ? 0 : Math.floor(Date.parse(c.validTo) / 1000); });
    }
    const w = src.webhooks;
    if (w) {
      counterFrom('uns_webhook_attempts_total', 'Webhook delivery attempts.', () => w().attempts);
      counterFrom('uns_webhook_succeeded_total', 'Webhook attempts answered 2xx.', () => w().succeeded);
      counterFrom('uns_webhook_failed_total', 'Webhook attempts that failed (retried or not).', () => w().failed);
      counterFrom('uns_webhook_dead_total', 'Webhook deliveries that ended dead (dead letters).', () => w().dead);
      counterFrom('uns_webhook_dropped_total', 'Webhook deliveries dropped before the outbox (queue full while the database was away).', () => w().dropped);
      gaugeFrom('uns_webhook_in_flight', 'Webhook attempts under way.', () => w().inFlight);
    }
    const ru = src.rules;
    if (ru) {
      labelled('uns_rule_events_total', 'Threshold rule events, by type.', 'type', () => ({ threshold_exceeded: ru().exceeded, threshold_cleared: ru().cleared }));
    }
    if (src.version !== undefined) {
      const info = new Gauge({ name: 'uns_build_info', help: 'uns-bridge version and Node.js version (value 1).', labelNames: ['version', 'node'], registers: reg });
      info.set({ version: src.version, node: process.version }, 1);
    }
    const sp = src.sparkplug;
    if (sp) {
      counterFrom('uns_sparkplug_births_total', 'Sparkplug NBIRTH and DBIRTH messages stored.', () => sp().births);
      counterFrom('uns_sparkplug_deaths_total', 'Sparkplug NDEATH and DDEATH messages stored.', () => sp().deaths);
      counterFrom('uns_sparkplug_stale_marks_total', 'Metrics marked stale by a death.', () => sp().staleMarks);
      counterFrom('uns_sparkplug_seq_gaps_total', 'Sequence gaps seen (each opens a Reorder Timeout).', () => sp().seqGaps);
      counterFrom('uns_sparkplug_stale_deaths_total', 'NDEATHs ignored: their bdSeq was not the current session\'s.', () => sp().staleDeaths);
      counterFrom('uns_sparkplug_rebirth_requests_total', 'NCMD Node Control/Rebirth requests sent.', () => sp().rebirthsRequested);
      counterFrom('uns_sparkplug_rebirth_suppressed_total', 'Rebirths wanted but not sent (cooldown, or automatic rebirths off).', () => sp().rebirthsSuppressed);
      counterFrom('uns_sparkplug_commands_total', 'NCMD/DCMD metric writes sent through the API.', () => sp().commandsSent);
      gaugeFrom('uns_sparkplug_nodes_online', 'Edge nodes with a live session.', () => sp().nodesOnline);
    }
    this.flushSeconds = new Histogram({
      name: 'uns_store_flush_seconds', help: 'Time to commit one batch.', registers: reg,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    });
    this.httpRequests = new Counter({ name: 'uns_http_requests_total', help: 'HTTP requests by route and status.', labelNames: ['route', 'status'], registers: reg });
    this.httpSeconds = new Histogram({
      name: 'uns_http_request_duration_seconds', help: 'HTTP request latency, by route (streams and exports: until the response ends).', labelNames: ['route'], registers: reg,
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
    });
    this.wsClients = new Gauge({ name: 'uns_ws_clients', help: 'Connected datapoint-stream WebSocket clients.', registers: reg });
    this.sseClients = new Gauge({ name: 'uns_sse_clients', help: 'Connected SSE clients.', registers: reg });
    this.droppedFrames = new Counter({ name: 'uns_stream_dropped_frames_total', help: 'Live frames dropped for slow consumers.', labelNames: ['transport'], registers: reg });
    this.deliveredPoints = new Counter({ name: 'uns_stream_delivered_points_total', help: 'Live datapoints sent to stream clients.', labelNames: ['transport'], registers: reg });
  }
}
