/**
 * Batches write items into transactions and says when each one is durable. It never acknowledges what is
 * not durable (docs/failure-model.md):
 *   healthy  — batches commit to the database. A batch the database refuses as data (a row error) is
 *              written again item by item; the refused items become rejections holding the item.
 *   degraded — the database is unavailable (transient: unreachable, out of disk; or permanent: a privilege
 *              revoked, a table missing). Batches go to the local spool, fsynced before they count as
 *              durable; the database is probed on a timer and the spool replayed when it can take writes.
 *   holding  — degraded and the spool cannot take a batch either (its size limit, a full or failing disk):
 *              nothing is acknowledged; the batch waits in memory and the broker stops reading publishers
 *              (back-pressure). The spool and the database are retried on a timer; every endpoint answers.
 * While healthy, the write path is also probed on a timer, so an outage shows on /ready without traffic.
 */
import { EventEmitter } from 'node:events';
import type { Logger } from '../../../src/core/index.js';
import { classifyDbError, describeDbError, isRowError, isTxConflict, type DbErrorClass } from '../../../src/core/index.js';
import type { IsolatedWrite, PgStore, WriteOptions } from './pg-store.js';
import { SpoolCorruptError, SpoolFullError, type Spool, type SpoolFailure, type SpooledSegment } from './spool.js';
import { materialiseState, rowCount, type WriteBatch, type WriteItem } from './rows.js';

export type WriterState = 'healthy' | 'degraded';

/** What became of a submitted item: durable (stored or spooled), durable as a rejection, or not durable. */
export interface WriteResult {
  /** Not durable: the acknowledgement must not be sent. */
  readonly error?: Error | undefined;
  /** Durable, but the database refused the item as data: it is kept as a rejection (with the item). */
  readonly refused?: { readonly reason: string } | undefined;
}
export type Durable = (result: WriteResult) => void;

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

/** The part of the store the writer uses (PgStore; a fake in unit tests). */
export type WriterStore = Pick<PgStore, 'writeBatch' | 'writeIsolated' | 'probeWrite'>;

export interface StoreWriterOptions {
  readonly batchMaxItems: number;
  readonly batchMaxDelayMs: number;
  readonly maxConcurrentFlushes: number;
  /** Queue length above which the broker applies back-pressure. */
  readonly highWaterItems: number;
  /** Back-pressure is released below this. */
  readonly lowWaterItems: number;
  /** How often an unavailable database (and a spool that could not take a batch) is tried again. */
  readonly probeIntervalMs: number;
  /** How often the write path of a healthy database is probed (0: never). */
  readonly healthIntervalMs?: number;
  /** Replay skips samples whose redelivery key is stored within this window (a re-send stored meanwhile). */
  readonly dupWindowMs?: number;
  /** How to tell the database can take writes again (default: store.probeWrite()). */
  readonly probe?: () => Promise<void>;
  readonly log: Logger;
  readonly timers?: Timers;
}

export interface ReplayProgress {
  readonly total: number;
  done: number;
  readonly startedAt: number;
}

export interface WriterStats {
  state: WriterState;
  /** Why the database is unavailable: the class and the error (SQLSTATE first), since when (epoch ms). */
  outage: { class: Exclude<DbErrorClass, 'row'>; reason: string; since: number } | null;
  /** Set while the spool cannot take a batch: acknowledgements are held. */
  holding: { failure: SpoolFailure; reason: string; since: number } | null;
  queued: number;
  inFlight: number;
  committedItems: number;
  committedRows: number;
  spooledItems: number;
  spoolSegments: number;
  spoolBytes: number;
  replayedSegments: number;
  replay: ReplayProgress | null;
  /** Items the database refused as data, kept as rejections. */
  storeRejected: number;
  /** Spool segments that did not read back whole, moved to corrupt/. */
  corruptSegments: number;
  outages: number;
  holds: number;
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
  /** Spool hold started (true) or ended (false). */
  holding: [boolean];
}

const REPLAY_LOG_MS = 5_000;
const SPOOL_BATCH_DELAY_MS = 50;
/** Segments applied in one replay transaction at most (and at most batchMaxItems items). */
const REPLAY_GROUP_SEGMENTS = 256;
const NOT_DURABLE = new Error('the write could not be made durable: database and spool unavailable');

export class StoreWriter extends EventEmitter<StoreWriterEvents> {
  private queue: Pending[] = [];
  private active = 0;
  private timer: unknown = null;
  private probeTimer: unknown = null;
  private healthTimer: unknown = null;
  private holdTimer: unknown = null;
  private replaying = false;
  private closing = false;
  private lowWaterWaiters: Array<() => void> = [];
  private idleWaiters: Array<() => void> = [];
  private readonly timers: Timers;
  private readonly log: Logger;
  /** Possible re-sends (items marked resendCheck) are written only if no twin is stored. */
  private readonly writeOpts: WriteOptions;
  readonly stats: WriterStats = {
    state: 'healthy', outage: null, holding: null, queued: 0, inFlight: 0, committedItems: 0, committedRows: 0, spooledItems: 0,
    spoolSegments: 0, spoolBytes: 0, replayedSegments: 0, replay: null, storeRejected: 0, corruptSegments: 0, outages: 0, holds: 0,
    lastFlushMs: 0, lastError: null,
  };

  constructor(private readonly store: WriterStore, private readonly spool: Spool, private readonly opts: StoreWriterOptions) {
    super();
    this.timers = opts.timers ?? realTimers;
    this.log = opts.log;
    this.writeOpts = { dedupeWindowMs: opts.dupWindowMs };
    this.syncSpoolStats();
  }

  get state(): WriterState {
    return this.stats.state;
  }

  get queued(): number {
    return this.queue.length;
  }

  /** Start-up found the database unavailable: begin degraded, probing for it. */
  markUnavailable(err: Error): void {
    this.outage(err);
  }

  /** Start-up: replay what an earlier run left in the spool, and start watching the database. */
  start(): void {
    if (this.stats.state === 'healthy' && this.spool.segments > 0) void this.replay();
    this.scheduleHealthCheck();
  }

  submit(item: WriteItem, done?: Durable): void {
    this.queue.push({ item, done });
    this.stats.queued = this.queue.length;
    if (this.queue.length >= this.opts.batchMaxItems) this.flush();
    else if (this.timer === null) this.timer = this.timers.setTimeout(() => { this.timer = null; this.flush(); }, this.batchDelay());
  }

  /**
   * While spooling, batches wait a little longer: every segment costs an fsync now and a transaction at
   * replay, so fewer, larger segments make both the outage and the drain faster.
   */
  private batchDelay(): number {
    return this.stats.state === 'healthy' ? this.opts.batchMaxDelayMs : Math.max(this.opts.batchMaxDelayMs, SPOOL_BATCH_DELAY_MS);
  }

  aboveHighWater(): boolean {
    return this.queue.length >= this.opts.highWaterItems;
  }

  /** Calls back once the queue is below the low-water mark (at once if it is). */
  whenBelowLowWater(cb: () => void): void {
    if (this.queue.length <= this.opts.lowWaterItems) cb();
    else this.lowWaterWaiters.push(cb);
  }

  /**
   * Writes everything still queued (database or spool) and stops the timers. What can be made durable by
   * neither is answered "not durable": those publishers get no acknowledgement and send again later.
   */
  async close(): Promise<void> {
    this.closing = true;
    for (const t of [this.timer, this.probeTimer, this.healthTimer, this.holdTimer]) if (t !== null) this.timers.clearTimeout(t);
    this.timer = this.probeTimer = this.healthTimer = this.holdTimer = null;
    for (;;) {
      const before = this.queue.length;
      this.stats.holding = null;
      this.flush();
      await this.idle();
      if (this.queue.length === 0 || this.queue.length >= before) break;
    }
    const left = this.queue.splice(0);
    for (const p of left) p.done?.({ error: NOT_DURABLE });
    this.stats.queued = 0;
    await this.idle();
  }

  private idle(): Promise<void> {
    if (this.active === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  private flush(): void {
    if (this.timer !== null) { this.timers.clearTimeout(this.timer); this.timer = null; }
    // Holding: the spool refused a batch and the database is away. Retried by the hold timer, not here,
    // so a full disk never turns into a busy loop.
    // (A run in the degraded state may complete synchronously and put its batch back: re-check each turn.)
    while (this.stats.holding === null && this.active < this.opts.maxConcurrentFlushes && this.queue.length > 0) {
      const take = this.queue.splice(0, this.opts.batchMaxItems);
      this.active++;
      this.stats.inFlight = this.active;
      void this.run(take);
    }
    this.stats.queued = this.queue.length;
  }

  private async run(batch: Pending[]): Promise<void> {
    const started = this.timers.now();
    // State snapshots are taken now, once per key, before anything of the batch is written or spooled.
    const items = materialiseState(batch.map((p) => p.item));
    for (let i = 0; i < batch.length; i++) if (items[i] !== (batch[i] as Pending).item) batch[i] = { ...(batch[i] as Pending), item: items[i] as WriteItem };
    let durable = false;
    let refused: ReadonlyMap<number, Error> | undefined;
    if (this.stats.state === 'healthy') {
      try {
        const r = await this.commitSettingAside({ items: batch.map((p) => p.item) }, 'database refused a row: kept as a rejection');
        refused = new Map(r.map((x) => [x.index, x.error]));
        durable = true;
      } catch (e) {
        this.outage(e);
      }
      if (durable) {
        this.emit('flush', batch.length, this.timers.now() - started);
        this.stats.committedItems += batch.length - (refused?.size ?? 0);
        this.stats.committedRows += batch.reduce((a, p, i) => a + (refused?.has(i) ? 0 : rowCount(p.item)), 0);
      }
    }
    if (!durable && this.stats.holding === null) {
      try {
        this.spool.append(batch.map((p) => p.item));
        durable = true;
        this.stats.spooledItems += batch.length;
        this.syncSpoolStats();
      } catch (e) {
        this.hold(e as Error);
      }
    }
    // Not durable: back to the head of the queue, acknowledgements held.
    if (!durable) this.queue.unshift(...batch);
    this.stats.lastFlushMs = this.timers.now() - started;
    this.active--;
    this.stats.inFlight = this.active;
    if (durable) {
      for (let i = 0; i < batch.length; i++) {
        const why = refused?.get(i);
        batch[i]?.done?.(why ? { refused: { reason: describeDbError(why).slice(0, 500) } } : {});
      }
      if (this.queue.length > 0 && !this.closing) this.flush();
    }
    this.stats.queued = this.queue.length;
    if (this.queue.length <= this.opts.lowWaterItems && this.lowWaterWaiters.length > 0) {
      const waiters = this.lowWaterWaiters;
      this.lowWaterWaiters = [];
      for (const w of waiters) w();
    }
    if (this.active === 0) {
      const idle = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of idle) w();
      if (this.queue.length === 0) this.emit('drained');
    }
  }

  /**
   * Commits the batch. If the database refuses a row as data, the batch is written again with one savepoint
   * per item: the refused items are kept as rejections (returned), the others commit, so one bad row never
   * costs the rest. A transaction that loses a race (deadlock, serialization) is run again, twice at most.
   * Any other error is thrown: an outage.
   */
  private async commitSettingAside(batch: WriteBatch, refusedLog: string): Promise<IsolatedWrite['refused']> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.store.writeBatch(batch, this.writeOpts);
        return [];
      } catch (e) {
        if (isRowError(e)) break;
        if (attempt >= 2 || !isTxConflict(e)) throw e;
      }
    }
    const r = await this.store.writeIsolated(batch, this.writeOpts);
    this.stats.storeRejected += r.refused.length;
    for (const x of r.refused) this.log.warn({ topic: storeTopic(x.item), err: describeDbError(x.error) }, refusedLog);
    return r.refused;
  }

  /** The spool could not take a batch: hold acknowledgements, try again on a timer. */
  private hold(err: Error): void {
    const failure: SpoolFailure = err instanceof SpoolFullError ? err.failure : 'disk';
    this.stats.lastError = err.message;
    if (this.stats.holding === null) {
      this.stats.holding = { failure, reason: err.message, since: this.timers.now() };
      this.stats.holds++;
      this.log.warn({ err: err.message, failure }, 'spool cannot take more: holding acknowledgements until the database or the spool has room');
      this.emit('holding', true);
    }
    if (this.holdTimer === null && !this.closing) {
      this.holdTimer = this.timers.setTimeout(() => {
        this.holdTimer = null;
        this.release();
      }, this.opts.probeIntervalMs);
    }
  }

  /** Try again: the database (if it is back) or the spool (if it has room now). */
  private release(): void {
    if (this.stats.holding === null) return;
    this.stats.holding = null;
    this.emit('holding', false);
    this.flush();
  }

  /** The database cannot take writes: spool from now on, and probe for it. */
  private outage(err: unknown): void {
    const cls = classifyDbError(err);
    const reason = describeDbError(err);
    this.stats.lastError = reason;
    if (this.stats.state === 'degraded') {
      if (this.stats.outage) this.stats.outage = { ...this.stats.outage, reason, class: cls === 'row' ? 'permanent' : cls };
      return;
    }
    this.stats.state = 'degraded';
    this.stats.outage = { class: cls === 'row' ? 'permanent' : cls, reason, since: this.timers.now() };
    this.stats.outages++;
    if (cls === 'permanent') this.log.error({ err: reason }, 'database refuses writes (needs an operator): spooling to local disk');
    else this.log.warn({ err: reason }, 'database unavailable: spooling to local disk');
    this.emit('state', 'degraded');
    this.scheduleProbe();
  }

  private scheduleProbe(): void {
    if (this.probeTimer !== null || this.closing) return;
    this.probeTimer = this.timers.setTimeout(() => {
      this.probeTimer = null;
      (this.opts.probe ?? (() => this.store.probeWrite()))().then(() => {
        if (this.closing) return;
        const was = this.stats.outage;
        this.stats.state = 'healthy';
        this.stats.outage = null;
        this.log.info({ downMs: was ? this.timers.now() - was.since : 0 }, 'database takes writes again: replaying the spool');
        this.emit('state', 'healthy');
        this.release();
        void this.replay();
      }, (e: unknown) => {
        if (this.stats.outage) this.stats.outage = { ...this.stats.outage, reason: describeDbError(e) };
        this.stats.lastError = describeDbError(e);
        this.scheduleProbe();
      });
    }, this.opts.probeIntervalMs);
  }

  /** While healthy, probe the write path now and then: an outage shows within seconds, with no traffic. */
  private scheduleHealthCheck(): void {
    const every = this.opts.healthIntervalMs ?? 0;
    if (every <= 0 || this.healthTimer !== null || this.closing) return;
    this.healthTimer = this.timers.setTimeout(() => {
      this.healthTimer = null;
      if (this.stats.state !== 'healthy') { this.scheduleHealthCheck(); return; }
      // The next check is scheduled only once this one has answered, so checks never overlap.
      this.store.probeWrite().then(() => undefined, (e: unknown) => { if (!this.closing) this.outage(e); })
        .finally(() => this.scheduleHealthCheck());
    }, every);
  }

  private syncSpoolStats(): void {
    this.stats.spoolSegments = this.spool.segments;
    this.stats.spoolBytes = this.spool.bytes;
  }

  /**
   * Applies the spool oldest first, several segments per transaction (each with its marker: at most once).
   * Poison rows are set aside as rejections like on the live path; a segment that does not read back whole
   * is moved to corrupt/. The folder is listed once per pass, so replay time grows linearly with the spool.
   */
  private async replay(): Promise<void> {
    if (this.replaying) return;
    this.replaying = true;
    try {
      for (;;) {
        const names = this.spool.list();
        if (names.length === 0) break;
        const progress: ReplayProgress = { total: names.length, done: 0, startedAt: this.timers.now() };
        this.stats.replay = progress;
        this.log.info({ segments: names.length, bytes: this.spool.bytes }, 'replaying the spool');
        let lastLog = progress.startedAt;
        let at = 0;
        while (at < names.length) {
          if (this.stats.state !== 'healthy' || this.closing) return;
          const group: SpooledSegment[] = [];
          let items = 0;
          for (; at < names.length && group.length < REPLAY_GROUP_SEGMENTS && items < this.opts.batchMaxItems; at++) {
            const name = names[at] as string;
            const seg = this.readSegment(name);
            if (seg === 'corrupt') { progress.done++; continue; }
            if (seg === null) { this.scheduleReplayRetry(); return; }
            group.push(seg);
            items += seg.items.length;
          }
          if (group.length > 0 && !(await this.replayGroup(group))) return;
          progress.done += group.length;
          this.stats.replayedSegments += group.length;
          this.syncSpoolStats();
          if (this.timers.now() - lastLog >= REPLAY_LOG_MS) {
            lastLog = this.timers.now();
            this.log.info({ done: progress.done, total: progress.total }, 'spool replay progress');
          }
        }
        this.log.info({ segments: progress.done, ms: this.timers.now() - progress.startedAt }, 'spool replayed');
      }
      this.stats.replay = null;
    } finally {
      this.replaying = false;
    }
  }

  /** A segment read back whole; 'corrupt' (moved aside), or null when the disk cannot be read now. */
  private readSegment(name: string): SpooledSegment | 'corrupt' | null {
    try {
      return this.spool.read(name);
    } catch (e) {
      if (e instanceof SpoolCorruptError) {
        this.stats.corruptSegments++;
        this.log.error({ segment: name, err: e.message }, 'spool segment does not read back whole: moved to corrupt/');
        this.spool.quarantine(name);
        return 'corrupt';
      }
      this.log.error({ segment: name, err: (e as Error).message }, 'spool segment could not be read; replay paused');
      return null;
    }
  }

  /** Applies segments in one transaction; false when the database went away (replay stops, the files stay). */
  private async replayGroup(group: readonly SpooledSegment[]): Promise<boolean> {
    const items: WriteItem[] = [];
    const itemSegments: number[] = [];
    group.forEach((seg, i) => {
      // A segment of an earlier run may hold the original of a re-send stored since: all its items get the
      // twin check. In this run's segments only items marked as unresolved re-sends can have a twin (the
      // others met their originals in the pipeline): checking no more keeps replay linear on a busy topic.
      const foreign = !seg.segment.includes(this.spool.instance);
      for (const item of seg.items) {
        items.push(foreign && item.keyReused !== true && item.resendCheck !== true ? { ...item, resendCheck: true } : item);
        itemSegments.push(i);
      }
    });
    const batch: WriteBatch = { items, segments: group.map((g) => g.segment), itemSegments };
    try {
      await this.commitSettingAside(batch, 'database refused a spooled row: kept as a rejection');
    } catch (e) {
      this.outage(e);
      return false;
    }
    for (const seg of group) this.spool.remove(seg.segment);
    return true;
  }

  private scheduleReplayRetry(): void {
    if (this.closing) return;
    this.timers.setTimeout(() => { if (this.stats.state === 'healthy') void this.replay(); }, this.opts.probeIntervalMs);
  }
}

function storeTopic(item: WriteItem | undefined): string | undefined {
  return item?.samples[0]?.topic ?? item?.rejection?.topic ?? item?.retained?.topic;
}
