/**
 * Batches write items into transactions and says when each one is durable. States:
 *   healthy  — batches commit to the database;
 *   degraded — the database is unreachable: batches go to the local spool (fsynced), a probe watches
 *              for the database, and the spool is replayed when it returns.
 * The queue is bounded by the broker's back-pressure (see aboveHighWater / whenBelowLowWater): when it is
 * full, the broker stops acknowledging and stops reading publishers' sockets.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from '../../../src/core/log.js';
import { isDataError, type PgStore } from './pg-store.js';
import { Spool, SpoolFullError } from './spool.js';
import { rowCount, type WriteItem } from './rows.js';

export type WriterState = 'healthy' | 'degraded';
export type Durable = (err?: Error) => void;

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  now(): number;
}

export const realTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
  now: () => Date.now(),
};

export interface StoreWriterOptions {
  readonly batchMaxItems: number;
  readonly batchMaxDelayMs: number;
  readonly maxConcurrentFlushes: number;
  /** Queue length above which the broker applies back-pressure. */
  readonly highWaterItems: number;
  /** Back-pressure is released below this. */
  readonly lowWaterItems: number;
  readonly probeIntervalMs: number;
  /** How to tell the database is back (default: a ping); start-up may also need to finish opening it. */
  readonly probe?: () => Promise<void>;
  readonly log: Logger;
  readonly timers?: Timers;
}

export interface WriterStats {
  state: WriterState;
  queued: number;
  inFlight: number;
  committedItems: number;
  committedRows: number;
  spooledItems: number;
  spoolSegments: number;
  spoolBytes: number;
  replayedSegments: number;
  storeRejected: number;
  lastFlushMs: number;
  lastError: string | null;
}

interface Pending {
  readonly item: WriteItem;
  readonly done: Durable | undefined;
}

export interface StoreWriterEvents {
  state: [WriterState];
  drained: [];
  /** A batch committed to the database: its size and how long it took (ms). */
  flush: [items: number, ms: number];
}

export class StoreWriter extends EventEmitter<StoreWriterEvents> {
  private queue: Pending[] = [];
  private active = 0;
  private timer: unknown = null;
  private probe: unknown = null;
  private replaying = false;
  private closing = false;
  private lowWaterWaiters: Array<() => void> = [];
  private readonly timers: Timers;
  private readonly log: Logger;
  readonly stats: WriterStats = {
    state: 'healthy', queued: 0, inFlight: 0, committedItems: 0, committedRows: 0, spooledItems: 0, spoolSegments: 0,
    spoolBytes: 0, replayedSegments: 0, storeRejected: 0, lastFlushMs: 0, lastError: null,
  };

  constructor(private readonly store: PgStore, private readonly spool: Spool, private readonly opts: StoreWriterOptions) {
    super();
    this.timers = opts.timers ?? realTimers;
    this.log = opts.log;
    this.stats.spoolSegments = spool.list().length;
    this.stats.spoolBytes = spool.bytes;
  }

  get state(): WriterState {
    return this.stats.state;
  }

  get queued(): number {
    return this.queue.length;
  }

  /** Start-up found the database unreachable: begin in the degraded state, probing for it. */
  markUnavailable(err: Error): void {
    this.degrade(err);
  }

  /** Start-up: replay what an earlier run left in the spool. */
  start(): void {
    if (this.stats.state === 'healthy' && this.spool.list().length > 0) void this.replay();
  }

  submit(item: WriteItem, done?: Durable): void {
    this.queue.push({ item, done });
    this.stats.queued = this.queue.length;
    if (this.queue.length >= this.opts.batchMaxItems) this.flush();
    else if (this.timer === null) this.timer = this.timers.setTimeout(() => { this.timer = null; this.flush(); }, this.opts.batchMaxDelayMs);
  }

  aboveHighWater(): boolean {
    return this.queue.length >= this.opts.highWaterItems;
  }

  /** Calls back once the queue is below the low-water mark (at once if it is). */
  whenBelowLowWater(cb: () => void): void {
    if (this.queue.length <= this.opts.lowWaterItems) cb();
    else this.lowWaterWaiters.push(cb);
  }

  /** Flushes everything still queued (to the database or the spool) and stops the probe. */
  async close(): Promise<void> {
    this.closing = true;
    if (this.timer !== null) { this.timers.clearTimeout(this.timer); this.timer = null; }
    while (this.queue.length > 0 || this.active > 0) {
      this.flush();
      await new Promise((r) => setTimeout(r, 5));
    }
    if (this.probe !== null) { this.timers.clearTimeout(this.probe); this.probe = null; }
  }

  private flush(): void {
    if (this.timer !== null) { this.timers.clearTimeout(this.timer); this.timer = null; }
    while (this.active < this.opts.maxConcurrentFlushes && this.queue.length > 0) {
      const take = this.queue.splice(0, this.opts.batchMaxItems);
      this.active++;
      this.stats.inFlight = this.active;
      void this.run(take);
    }
    this.stats.queued = this.queue.length;
  }

  private async run(batch: Pending[]): Promise<void> {
    const started = this.timers.now();
    let durable = false;
    if (this.stats.state === 'healthy') {
      try {
        await this.store.writeBatch({ items: batch.map((p) => p.item) });
        durable = true;
        this.emit('flush', batch.length, this.timers.now() - started);
        this.stats.committedItems += batch.length;
        this.stats.committedRows += batch.reduce((a, p) => a + rowCount(p.item), 0);
      } catch (e) {
        if (isDataError(e)) {
          durable = await this.writeOneByOne(batch);
        } else {
          this.degrade(e as Error);
        }
      }
    }
    if (!durable) {
      try {
        this.spool.append(batch.map((p) => p.item));
        durable = true;
        this.stats.spooledItems += batch.length;
        this.stats.spoolSegments++;
        this.stats.spoolBytes = this.spool.bytes;
      } catch (e) {
        // Spool full or the disk failing: keep the batch at the head of the queue and hold the
        // acknowledgements; back-pressure stops publishers until there is room again.
        if (!(e instanceof SpoolFullError)) this.log.error({ err: (e as Error).message }, 'spool write failed');
        this.stats.lastError = (e as Error).message;
        this.queue.unshift(...batch);
      }
    }
    this.stats.lastFlushMs = this.timers.now() - started;
    this.active--;
    this.stats.inFlight = this.active;
    if (durable) for (const p of batch) p.done?.();
    if (this.queue.length > 0) {
      if (durable) this.flush();
      else if (this.timer === null) this.timer = this.timers.setTimeout(() => { this.timer = null; this.flush(); }, 200);
    }
    this.stats.queued = this.queue.length;
    if (this.queue.length <= this.opts.lowWaterItems && this.lowWaterWaiters.length > 0) {
      const waiters = this.lowWaterWaiters;
      this.lowWaterWaiters = [];
      for (const w of waiters) w();
    }
    if (this.queue.length === 0 && this.active === 0) this.emit('drained');
  }

  /** A data error poisons one row, not the batch: write items singly and keep the bad ones as rejections. */
  private async writeOneByOne(batch: Pending[]): Promise<boolean> {
    for (const p of batch) {
      try {
        await this.store.writeBatch({ items: [p.item] });
        this.stats.committedItems++;
      } catch (e) {
        if (!isDataError(e)) { this.degrade(e as Error); return false; }
        this.stats.storeRejected++;
        const first = p.item.samples[0];
        await this.store.writeBatch({ items: [{
          samples: [], topics: [], receivedAt: p.item.receivedAt,
          rejection: { time: p.item.receivedAt, topic: first?.topic ?? p.item.rejection?.topic ?? '', code: 'UNS_ERR_STORE_REJECTED',
            reason: (e as Error).message.slice(0, 500), clientId: null, payload: null },
        }] }).catch((err: Error) => this.log.error({ err: err.message }, 'could not record a store rejection'));
      }
    }
    return true;
  }

  private degrade(err: Error): void {
    this.stats.lastError = err.message;
    if (this.stats.state === 'degraded') return;
    this.stats.state = 'degraded';
    this.log.warn({ err: err.message }, 'database unreachable: spooling to local disk');
    this.emit('state', 'degraded');
    this.scheduleProbe();
  }

  private scheduleProbe(): void {
    if (this.probe !== null || this.closing) return;
    this.probe = this.timers.setTimeout(() => {
      this.probe = null;
      (this.opts.probe ?? (() => this.store.ping()))().then(() => {
        this.stats.state = 'healthy';
        this.log.info('database reachable again: replaying the spool');
        this.emit('state', 'healthy');
        void this.replay();
      }, () => this.scheduleProbe());
    }, this.opts.probeIntervalMs);
  }

  private async replay(): Promise<void> {
    if (this.replaying) return;
    this.replaying = true;
    try {
      for (const name of this.spool.list()) {
        if (this.stats.state !== 'healthy') return;
        let batch;
        try {
          batch = this.spool.read(name);
        } catch (e) {
          this.log.error({ segment: name, err: (e as Error).message }, 'unreadable spool segment left in place');
          continue;
        }
        try {
          await this.store.writeBatch(batch);
        } catch (e) {
          if (isDataError(e)) {
            this.log.error({ segment: name, err: (e as Error).message }, 'spool segment refused by the database; left in place');
            continue;
          }
          this.degrade(e as Error);
          return;
        }
        this.spool.remove(name);
        this.stats.replayedSegments++;
        this.stats.spoolSegments = this.spool.list().length;
        this.stats.spoolBytes = this.spool.bytes;
      }
    } finally {
      this.replaying = false;
    }
  }
}
