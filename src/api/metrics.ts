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
  /** The Sparkplug host's counters. */
  sparkplug?(): { births: number; deaths: number; staleMarks: number; seqGaps: number; staleDeaths: number; rebirthsRequested: number; rebirthsSuppressed: number; commandsSent: number; nodesOnline: number };
  store?(): { degraded: boolean; holding: boolean; outages: number; holds: number; refused: number; corrupt: number; spoolSegments: number; replayLeft: number };
}

export class Metrics {
  readonly registry = new Registry();
  readonly flushSeconds: Histogram;
  readonly httpRequests: Counter<'route' | 'status'>;
  readonly wsClients: Gauge;
  readonly sseClients: Gauge;
  readonly droppedFrames: Counter<'transport'>;
  readonly deliveredPoints: Counter<'transport'>;

  constructor(src: MetricSources) {
    collectDefaultMetrics({ register: this.registry, prefix: 'uns_process_' });
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
    this.wsClients = new Gauge({ name: 'uns_ws_clients', help: 'Connected datapoint-stream WebSocket clients.', registers: reg });
    this.sseClients = new Gauge({ name: 'uns_sse_clients', help: 'Connected SSE clients.', registers: reg });
    this.droppedFrames = new Counter({ name: 'uns_stream_dropped_frames_total', help: 'Live frames dropped for slow consumers.', labelNames: ['transport'], registers: reg });
    this.deliveredPoints = new Counter({ name: 'uns_stream_delivered_points_total', help: 'Live datapoints sent to stream clients.', labelNames: ['transport'], registers: reg });
  }
}
