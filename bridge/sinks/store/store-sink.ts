/**
 * The store sink: turns an accepted message into a write item and hands it to the writer, and answers the
 * door (MQTT, HTTP) when it may acknowledge: QoS 1/2 once durable, QoS 0 at once unless the writer is behind
 * (then held: back-pressure). It owns the two store-side rules of a message's fate:
 *   - a route's deadband: a numeric point is stored only when it moved at least that far from the last one;
 *   - re-sends are stored once (docs/failure-model.md): a QoS 1/2 message with its original's redelivery key,
 *     coming with DUP or on a later connection soon after the original's connection ended, is acknowledged
 *     with its original and goes nowhere else.
 */
import type { IngestOutcome } from '../../../src/core/index.js';
import { rejection, type InboundRecord, type Point, type Rejection, type UnsMessage } from '../../../src/core/index.js';
import type { RouteSpec } from '../../../src/core/index.js';
import type { StoreWriter, WriteResult } from './store-writer.js';
import { ReceiptClock, TopicMetas, messageToItem, redeliveryKey, rejectionToItem, retainedDeleteItem } from './to-rows.js';
import type { StateRow, WriteItem } from './rows.js';
import { RecentKeys } from './recent-keys.js';

export type Answer = (o: IngestOutcome) => void;

export interface StoreSinkOptions {
  readonly writer: StoreWriter;
  /** How far around a possible re-send's time its original may be, and how long keys are remembered. */
  readonly dupWindowMs: number;
  /** See RESEND_LAG_MS (default). */
  readonly resendLagMs?: number | undefined;
  /** How many recent redelivery keys are remembered (default 100,000). */
  readonly recentKeys?: number | undefined;
  /** The JSON snapshot of a piece of server state (e.g. 'sparkplug'), stored with the message that changed it. */
  readonly stateSnapshot: (key: string) => unknown;
  /** An accepted message is durable (stored or spooled; at once when there is nothing to store). */
  readonly onDurable: (msg: UnsMessage) => void;
}

export interface StoreSinkStats {
  /** Rows the database refused as data (kept as rejections). */
  storeRejected: number;
  duplicatesDropped: number;
  deadbandSkipped: number;
  /** QoS 0 publishes held because the store was behind: their publishers' sockets stop being read. */
  backpressureHolds: number;
}

/** What became of a message handed to the store sink. */
export type Fate = 'written' | 'duplicate';

/**
 * How close to the end of its connection a message must have come for its PUBACK to be possibly lost: a
 * connection that dies silently is noticed within 1.5 keep-alive intervals (60 s is common), or at once when
 * the client reconnects and takes its session over.
 */
const RESEND_LAG_MS = 120_000;

export class StoreSink {
  readonly stats: StoreSinkStats = { storeRejected: 0, duplicatesDropped: 0, deadbandSkipped: 0, backpressureHolds: 0 };
  private readonly lastStored = new Map<string, number>();
  /** Redelivery keys of recent QoS > 0 messages (bounded). */
  private readonly recent: RecentKeys;
  /** Re-sends waiting for their original to become durable, by the original's generation in `recent`. */
  private readonly waiting = new Map<number, Answer[]>();
  /** When recent connections closed (epoch ms), bounded. */
  private readonly closedAt = new Map<number, number>();
  /** Revisions grow across restarts too: start from the clock. */
  private stateRev = Date.now() * 1000;
  private readonly receipt = new ReceiptClock();
  private readonly metas = new TopicMetas();

  constructor(private readonly opts: StoreSinkOptions) {
    this.recent = new RecentKeys(opts.recentKeys ?? 100_000);
  }

  /** The broker lost or closed a connection: its last messages are the ones whose PUBACK may be lost. */
  connectionClosed(connection: number, at: number): void {
    if (this.closedAt.size >= 100_000) this.closedAt.clear();
    this.closedAt.set(connection, at);
  }

  /**
   * An accepted message. onDurable runs once it is stored (or at once when there is nothing to store); the
   * answer tells the door whether it may acknowledge.
   */
  write(msg: UnsMessage, route: RouteSpec, stateKey: string | undefined, record: InboundRecord, answer: Answer): Fate {
    if (!msg.store) { this.opts.onDurable(msg); this.release(answer, {}); return 'written'; }
    const points = this.deadband(msg.points, route);
    const key = redeliveryKey(record);
    let item = messageToItem(points === msg.points ? msg : { ...msg, points }, record, key === null ? null : String(key), this.receipt, this.metas);
    if (stateKey !== undefined) item = { ...item, state: this.stateRow(stateKey) };
    if (item.samples.length === 0 && !item.retained && !item.state && !item.stale) { this.opts.onDurable(msg); this.release(answer, {}); return 'written'; }
    if (key !== null && record.source.connection !== undefined) return this.submitTracked(msg, record, item, key, answer);
    this.submit(record, item, answer, {}, msg);
    return 'written';
  }

  /** A message the stages refused: kept in the rejections table with its payload, then answered. */
  reject(record: InboundRecord, rej: Rejection, answer: Answer): void {
    this.submit(record, rejectionToItem(rej, record), answer, { rejection: rej }, null);
  }

  /** A zero-length retained publish deletes the retained message [MQTT-3.3.1-10]. */
  deleteRetained(record: InboundRecord, answer: Answer): void {
    this.submit(record, retainedDeleteItem(record), answer, {}, null);
  }

  private stateRow(key: string): StateRow {
    // Taken when the batch is written (materialiseState), not per message.
    return { key, rev: this.stateRev++, value: () => JSON.stringify(this.opts.stateSnapshot(key)) };
  }

  private deadband(points: readonly Point[], route: RouteSpec): readonly Point[] {
    const band = route.deadband;
    if (band === undefined || band <= 0) return points;
    const kept = points.filter((p) => {
      if (typeof p.value !== 'number') return true;
      const last = this.lastStored.get(p.topic);
      if (last !== undefined && Math.abs(p.value - last) < band) { this.stats.deadbandSkipped++; return false; }
      this.lastStored.set(p.topic, p.value);
      return true;
    });
    return kept.length === points.length ? points : kept;
  }

  /** `msg`: the accepted message the item holds (told to onDurable), or null (a rejection, a retained delete). */
  private submit(record: InboundRecord, item: WriteItem, answer: Answer, planned: IngestOutcome, msg: UnsMessage | null): void {
    if (record.source.qos > 0) {
      this.opts.writer.submit(item, (r) => {
        const out = this.outcome(record, r, planned);
        answer(out);
        if (msg !== null && !r.error && !r.refused) this.opts.onDurable(msg);
      });
      return;
    }
    if (msg === null) this.opts.writer.submit(item);
    else this.opts.writer.submit(item, (r) => { if (!r.error && !r.refused) this.opts.onDurable(msg); });
    this.release(answer, planned);
  }

  /** The writer's answer as the door's answer: not durable, refused by the database (a rejection), or as planned. */
  private outcome(record: InboundRecord, r: WriteResult, planned: IngestOutcome): IngestOutcome {
    if (r.error) return { error: r.error };
    if (r.refused) {
      this.stats.storeRejected++;
      return { rejection: rejection('UNS_ERR_STORE_REJECTED', record.topic, `the database refused the row: ${r.refused.reason}`) };
    }
    return planned;
  }

  /** QoS 0, or nothing to store: acknowledge now, unless the store is behind (then hold: back-pressure). */
  private release(answer: Answer, outcome: IngestOutcome): void {
    if (!this.opts.writer.aboveHighWater()) { answer(outcome); return; }
    this.stats.backpressureHolds++;
    this.opts.writer.whenBelowLowWater(() => answer(outcome));
  }

  /**
   * A QoS > 0 MQTT message with its redelivery key. A re-send comes with DUP (a first attempt never carries it
   * [MQTT-3.3.1-1]; some clients retry on the connection they have), or on a later connection when its
   * original came near the end of its own (a PUBACK can only have been lost there). Without either, the same
   * key is a new message: on the same connection its packet id was freed by the PUBACK; a device that restarts
   * its packet ids may send the same first message after every boot.
   */
  private submitTracked(msg: UnsMessage, record: InboundRecord, original: WriteItem, key: number, answer: Answer): Fate {
    let item = original;
    const slot = this.recent.find(key);
    if (slot >= 0) {
      const lag = this.opts.resendLagMs ?? RESEND_LAG_MS;
      const prevAt = this.recent.arrivedAt(slot);
      const prevConnection = this.recent.connectionOf(slot);
      const resent = record.receivedAt - prevAt <= this.opts.dupWindowMs && (record.source.dup ||
        (prevConnection !== record.source.connection && (this.closedAt.get(prevConnection) ?? record.receivedAt) - prevAt <= lag));
      if (resent) {
        this.stats.duplicatesDropped++;
        if (this.recent.isDurable(slot)) {
          answer({});
        } else {
          const gen = this.recent.generationOf(slot);
          const waiters = this.waiting.get(gen);
          if (waiters) waiters.push(answer);
          else this.waiting.set(gen, [answer]);
        }
        return 'duplicate';
      }
      // Seen before, but not a re-send: a new message reusing the key (replay must not take it for a twin).
      item = { ...item, keyReused: true };
    } else if (record.source.maybeResend) {
      // Not remembered, but possibly a re-send (DUP, or early in a connection, after a restart of ours): the
      // store's insert skips it if its key is already stored near its time, and so does replay if it is spooled.
      item = { ...item, resendCheck: true };
    }
    this.remember(msg, key, record, item, answer);
    return 'written';
  }

  private remember(msg: UnsMessage, key: number, record: InboundRecord, item: WriteItem, answer: Answer): void {
    const slot = this.recent.add(key, record.source.connection as number, record.receivedAt);
    const gen = this.recent.generationOf(slot);
    this.opts.writer.submit(item, (r) => {
      const out = this.outcome(record, r, {});
      if (this.recent.holds(slot, gen)) {
        // Not durable: the client sends again; that copy must not be taken for a duplicate.
        if (r.error) this.recent.forget(slot);
        else this.recent.markDurable(slot);
      }
      answer(out);
      const waiters = this.waiting.get(gen);
      if (waiters) {
        this.waiting.delete(gen);
        for (const w of waiters) w(r.error ? out : {});
      }
      if (!r.error && !r.refused) this.opts.onDurable(msg);
    });
  }
}
