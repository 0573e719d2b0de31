/**
 * decode -> validate -> route -> sinks. Takes the broker's InboundRecord and answers through `done` when
 * the broker may acknowledge. Never throws: every failure becomes a Rejection with a code, which is
 * counted, logged at debug, written to the rejections table and republished by the broker on
 * $uns/rejected/<topic>; it never reaches the good data.
 */
import type { ValidateFunction } from 'ajv';
import type { Logger } from '../src/core/log.js';
import type { ErrorCode } from '../src/core/errors.js';
import type { IngestFn, IngestOutcome } from '../src/core/ingest.js';
import { isRejection, rejection, type InboundRecord, type JsonValue, type Point, type Rejection, type UnsMessage } from '../src/core/message.js';
import type { Namespace, RouteSpec } from '../src/core/topics.js';
import { decodeValuePayload } from './decode/envelope.js';
import type { SparkplugDecoder } from './decode/sparkplug.js';
import type { StoreWriter } from './sinks/store/store-writer.js';
import type { PgStore } from './sinks/store/pg-store.js';
import { messageToItem, redeliveryKey, rejectionToItem, retainedDeleteItem } from './sinks/store/to-rows.js';
import type { WriteItem } from './sinks/store/rows.js';

export interface PipelineOptions {
  readonly namespace: Namespace;
  readonly schemas: ReadonlyMap<string, ValidateFunction>;
  readonly sparkplug: SparkplugDecoder;
  readonly writer: StoreWriter;
  readonly store: PgStore;
  readonly limits: { readonly maxBytes: number; readonly maxDepth: number };
  readonly dupWindowMs: number;
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

/** Listeners that see every accepted message (live fan-out hangs here). Must not throw or block. */
export type MessageListener = (msg: UnsMessage) => void;

let seq = 0;
const bootId = Date.now().toString(36);

/** ajv checks `number` with typeof, so exact big integers are shown to it as (approximate) numbers. */
function forValidation(doc: JsonValue): unknown {
  if (typeof doc === 'bigint') return Number(doc);
  if (Array.isArray(doc)) return doc.map(forValidation);
  if (doc !== null && typeof doc === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(doc)) out[k] = forValidation(v);
    return out;
  }
  return doc;
}

function hasBigint(doc: JsonValue): boolean {
  if (typeof doc === 'bigint') return true;
  if (doc !== null && typeof doc === 'object') return Object.values(doc).some(hasBigint);
  return false;
}

export class Pipeline {
  readonly stats: PipelineStats = { accepted: 0, rejected: {}, duplicatesDropped: 0, deadbandSkipped: 0, backpressureHolds: 0, sparkplugWarnings: 0 };
  private readonly listeners: MessageListener[] = [];
  private readonly lastStored = new Map<string, number>();
  /** ISA-95 verdicts per topic: topics recur, the check need not. */
  private readonly levelChecks = new Map<string, ReturnType<Namespace['checkLevels']>>();
  /** Redelivery keys of items queued but not yet durable. */
  private readonly pendingKeys = new Set<string>();
  /** Message id -> state key whose snapshot must be written with that message. */
  private readonly stateChanges = new Map<string, string>();
  /** Revisions grow across restarts too: start from the clock. */
  private stateRev = Date.now() * 1000;
  private readonly log: Logger;

  constructor(private readonly opts: PipelineOptions) {
    this.log = opts.log;
  }

  onMessage(l: MessageListener): void {
    this.listeners.push(l);
  }

  readonly ingest: IngestFn = (record, done) => {
    const result = this.process(record);
    if (result === 'retained-delete') {
      this.submit(record, retainedDeleteItem(record), null, done, {});
      return;
    }
    if (isRejection(result)) {
      this.stats.rejected[result.code] = (this.stats.rejected[result.code] ?? 0) + 1;
      this.log.debug({ topic: record.topic, code: result.code, reason: result.reason }, 'message rejected');
      this.submit(record, rejectionToItem(result, record), null, done, { rejection: result });
      return;
    }
    this.stats.accepted++;
    const stateKey = this.stateChanges.get(result.id);
    if (stateKey !== undefined) this.stateChanges.delete(result.id);
    for (const l of this.listeners) l(result);
    if (!result.store) { this.release(record, done, {}); return; }
    const points = this.applyDeadband(result);
    const msg = points === result.points ? result : { ...result, points };
    const src = redeliveryKey(record);
    let item = messageToItem(msg, record, src);
    if (stateKey !== undefined) {
      item = { ...item, state: { key: stateKey, rev: this.stateRev++, value: JSON.stringify(this.opts.sparkplug.snapshot()) } };
    }
    if (item.samples.length === 0 && !item.retained && !item.state) { this.release(record, done, {}); return; }
    if (record.source.dup && src !== null) { this.submitRedelivery(record, item, src, done); return; }
    this.submit(record, item, src, done, {});
  };

  /** Pure part: decode, check levels, validate. */
  private process(record: InboundRecord): UnsMessage | Rejection | 'retained-delete' {
    const { topic } = record;
    if (record.source.retain && record.payload.length === 0) return 'retained-delete';
    const route = this.opts.namespace.matchRoute(topic);
    if (!route) return rejection('UNS_ERR_NO_ROUTE', topic, 'no route in topics.yaml matches this topic');
    let path = null;
    if (route.isa95) {
      let check = this.levelChecks.get(topic);
      if (check === undefined) {
        check = this.opts.namespace.checkLevels(topic);
        if (this.levelChecks.size >= 100_000) this.levelChecks.clear();
        this.levelChecks.set(topic, check);
      }
      if ('reason' in check) return rejection('UNS_ERR_ISA95_LEVEL', topic, check.reason);
      path = check.path;
    }
    let points: readonly Point[];
    let document: JsonValue | undefined;
    let sparkplugChanged = false;
    if (route.encoding === 'sparkplugb') {
      const r = this.opts.sparkplug.decode(topic, record.payload, record.receivedAt);
      if (isRejection(r)) return r;
      if (r.kind !== 'metrics') points = [];
      else {
        points = r.points;
        // Births and deaths change the alias tables a restart must get back.
        sparkplugChanged = r.birth !== undefined || r.death === true;
        if (r.warning) {
          this.stats.sparkplugWarnings++;
          this.log.info({ topic, code: r.warning.code, reason: r.warning.reason }, 'sparkplug warning');
        }
      }
    } else {
      const r = decodeValuePayload(record.payload, route.encoding, {
        topic, receivedAt: record.receivedAt, unit: route.unit, limits: this.opts.limits,
      });
      if (isRejection(r)) return r;
      points = r.points;
      document = r.document;
    }
    if (route.schema !== undefined && document !== undefined) {
      const validate = this.opts.schemas.get(route.schema);
      const doc = hasBigint(document) ? forValidation(document) : document;
      if (validate && !validate(doc)) {
        const e = validate.errors?.[0];
        return rejection('UNS_ERR_SCHEMA_VIOLATION', topic,
          `schema ${route.schema}: ${e ? `${e.instancePath || '/'} ${e.message ?? ''}`.trim() : 'invalid'}`);
      }
    }
    const msg = this.message(record, route, path, points);
    if (sparkplugChanged) this.stateChanges.set(msg.id, 'sparkplug');
    return msg;
  }

  private message(record: InboundRecord, route: RouteSpec, path: UnsMessage['path'], points: readonly Point[]): UnsMessage {
    return {
      id: `${bootId}-${(seq++).toString(36)}`, topic: record.topic, path, encoding: route.encoding, route: route.name,
      points, source: record.source, receivedAt: record.receivedAt, store: route.store,
    };
  }

  /** A route's deadband: a numeric point is stored only when it moved at least that far from the last stored one. */
  private applyDeadband(msg: UnsMessage): readonly Point[] {
    const route = this.opts.namespace.matchRoute(msg.topic);
    const band = route?.deadband;
    if (band === undefined || band <= 0) return msg.points;
    const kept = msg.points.filter((p) => {
      if (typeof p.value !== 'number') return true;
      const last = this.lastStored.get(p.topic);
      if (last !== undefined && Math.abs(p.value - last) < band) { this.stats.deadbandSkipped++; return false; }
      this.lastStored.set(p.topic, p.value);
      return true;
    });
    return kept.length === msg.points.length ? msg.points : kept;
  }

  private submit(record: InboundRecord, item: WriteItem, src: string | null, done: (o: IngestOutcome) => void, outcome: IngestOutcome): void {
    if (record.source.qos > 0) {
      if (src !== null) this.pendingKeys.add(src);
      this.opts.writer.submit(item, (err) => {
        if (src !== null) this.pendingKeys.delete(src);
        done(err ? { error: err } : outcome);
      });
      return;
    }
    this.opts.writer.submit(item);
    this.release(record, done, outcome);
  }

  /** QoS 0, or nothing to store: acknowledge now, unless the store is behind (then hold: back-pressure). */
  private release(_record: InboundRecord, done: (o: IngestOutcome) => void, outcome: IngestOutcome): void {
    if (!this.opts.writer.aboveHighWater()) { done(outcome); return; }
    this.stats.backpressureHolds++;
    this.opts.writer.whenBelowLowWater(() => done(outcome));
  }

  /** A DUP publish: store it only if its original is neither queued nor already in the store. */
  private submitRedelivery(record: InboundRecord, item: WriteItem, src: string, done: (o: IngestOutcome) => void): void {
    const drop = (): void => { this.stats.duplicatesDropped++; done({}); };
    if (this.pendingKeys.has(src)) {
      // The original is on its way to the store: acknowledge when it is durable.
      this.opts.writer.submit({ samples: [], topics: [], receivedAt: record.receivedAt }, () => drop());
      return;
    }
    const first = item.samples[0];
    if (!first) { this.submit(record, item, src, done, {}); return; }
    this.opts.store.storedKeys(first.topic, first.time, this.opts.dupWindowMs, [src]).then((found) => {
      if (found.has(src)) drop();
      else this.submit(record, item, src, done, {});
    }, () => this.submit(record, item, src, done, {})); // cannot tell: at-least-once beats loss
  }
}
