/**
 * One publish, whatever door it came through (MQTT, HTTP publish, signed ingest):
 *
 *   stages (route -> ISA-95 levels -> decode -> validate; bridge/stages.ts)
 *     -> rejected: the store sink keeps it (rejections table, with its payload) and the door is answered with
 *        the coded Rejection (the broker republishes it on $uns/rejected/<topic>);
 *     -> accepted: the store sink (deadband, re-sends stored once, durability: it answers the door), then the
 *        other sinks: 'accepted' ones at once, 'durable' ones once stored (bridge/sinks/sink.ts).
 *
 * Never throws: every failure is a Rejection with a code, counted and logged at debug.
 */
import type { ValidateFunction } from 'ajv';
import type { Logger } from '../src/core/index.js';
import type { ErrorCode } from '../src/core/index.js';
import type { IngestFn } from '../src/core/index.js';
import type { RouteSpec } from '../src/core/index.js';
import type { Namespace } from '../src/core/index.js';
import type { UnsMessage } from '../src/core/index.js';
import type { SparkplugDecoder } from './decode/sparkplug.js';
import { buildStages, draftOf, runStages, type Draft, type Stage } from './stages.js';
import type { Sink } from './sinks/sink.js';
import { StoreSink } from './sinks/store/store-sink.js';
import type { StoreWriter } from './sinks/store/store-writer.js';

export interface PipelineOptions {
  readonly namespace: Namespace;
  readonly schemas: ReadonlyMap<string, ValidateFunction>;
  readonly sparkplug: SparkplugDecoder;
  readonly writer: StoreWriter;
  readonly limits: { readonly maxBytes: number; readonly maxDepth: number };
  readonly dupWindowMs: number;
  /** See StoreSinkOptions. */
  readonly resendLagMs?: number;
  /** How many recent redelivery keys are remembered (default 100,000). */
  readonly recentKeys?: number;
  readonly log: Logger;
}

export interface PipelineStats {
  accepted: number;
  rejected: Partial<Record<ErrorCode, number>>;
  duplicatesDropped: number;
  deadbandSkipped: number;
  /** QoS 0 publishes held because the store was behind: their publishers' sockets stop being read. */
  backpressureHolds: number;
  sparkplugWarnings: number;
}

let seq = 0;
const bootId = Date.now().toString(36);

export class Pipeline {
  private readonly counts = { accepted: 0, rejected: {} as Partial<Record<ErrorCode, number>>, sparkplugWarnings: 0 };
  private readonly stages: readonly Stage[];
  private readonly store: StoreSink;
  private readonly onAccepted: Sink[] = [];
  private readonly onDurable: Sink[] = [];
  private readonly log: Logger;

  constructor(opts: PipelineOptions) {
    this.log = opts.log;
    this.stages = buildStages({ ...opts, onSparkplugWarning: () => { this.counts.sparkplugWarnings++; } });
    this.store = new StoreSink({
      writer: opts.writer, dupWindowMs: opts.dupWindowMs, resendLagMs: opts.resendLagMs, recentKeys: opts.recentKeys,
      stateSnapshot: () => opts.sparkplug.snapshot(), onDurable: (msg) => this.fanOut(this.onDurable, msg),
    });
  }

  get stats(): PipelineStats {
    const s = this.store.stats;
    const rejected = { ...this.counts.rejected };
    if (s.storeRejected > 0) rejected.UNS_ERR_STORE_REJECTED = (rejected.UNS_ERR_STORE_REJECTED ?? 0) + s.storeRejected;
    return {
      accepted: this.counts.accepted, rejected, duplicatesDropped: s.duplicatesDropped, deadbandSkipped: s.deadbandSkipped,
      backpressureHolds: s.backpressureHolds, sparkplugWarnings: this.counts.sparkplugWarnings,
    };
  }

  /** Adds a sink (see bridge/sinks/sink.ts for when each kind sees a message). */
  addSink(sink: Sink): void {
    (sink.when === 'accepted' ? this.onAccepted : this.onDurable).push(sink);
  }

  /** The broker lost or closed a connection (re-sends are recognised by it). */
  connectionClosed(connection: number, at: number): void {
    this.store.connectionClosed(connection, at);
  }

  readonly ingest: IngestFn = (record, answer) => {
    if (record.source.retain && record.payload.length === 0) { this.store.deleteRetained(record, answer); return; }
    const draft = draftOf(record);
    const rej = runStages(this.stages, draft);
    if (rej !== null) {
      this.counts.rejected[rej.code] = (this.counts.rejected[rej.code] ?? 0) + 1;
      this.log.debug({ topic: record.topic, code: rej.code, reason: rej.reason }, 'message rejected');
      this.store.reject(record, rej, answer);
      return;
    }
    this.counts.accepted++;
    const msg = message(draft);
    const fate = this.store.write(msg, draft.route as RouteSpec, draft.stateKey, record, answer);
    if (fate === 'written') this.fanOut(this.onAccepted, msg);
  };

  private fanOut(sinks: readonly Sink[], msg: UnsMessage): void {
    for (let i = 0; i < sinks.length; i++) (sinks[i] as Sink).accept(msg);
  }
}

function message(d: Draft): UnsMessage {
  const route = d.route as RouteSpec;
  const r = d.record;
  return {
    id: `${bootId}-${(seq++).toString(36)}`, topic: r.topic, path: d.path, encoding: route.encoding, route: route.name,
    points: d.points, source: r.source, receivedAt: r.receivedAt, store: route.store, session: d.session,
  };
}
