/**
 * Writes a queue to the database in chunks, one statement at a time (so rows keep queue order), and retries
 * after a delay when the database is away. The outbox insert queue and the attempt-result queue of the
 * dispatcher are both one of these.
 */
import { isRowError } from '../../../src/core/index.js';

export interface DrainerTimers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export interface SerialDrainerOptions<T> {
  readonly chunk: number;
  readonly retryMs: number;
  readonly timers: DrainerTimers;
  /** Writes one chunk; a throw either drops it (a row error: it would fail again) or retries it later. */
  write(rows: T[]): Promise<void>;
  /** A chunk the database refused as data, dropped (the caller counts and logs). */
  dropped(rows: T[], e: unknown): void;
  /** A chunk that could not be written now: it is back at the head of the queue (the caller logs). */
  failed(rows: T[], e: unknown): void;
  /** False once the owner stops: nothing is retried after that. */
  live(): boolean;
}

export class SerialDrainer<T> {
  /** What waits to be written, oldest first. The owner may trim it (bounded queues). */
  readonly items: T[] = [];
  private busy = false;
  private timer: unknown = null;
  private idleWaiters: Array<() => void> = [];

  constructor(private readonly opts: SerialDrainerOptions<T>) {}

  push(item: T): void {
    this.items.push(item);
    this.schedule(0);
  }

  schedule(delay: number): void {
    if (this.timer !== null || this.busy) return;
    this.timer = this.opts.timers.setTimeout(() => {
      this.timer = null;
      void this.drain();
    }, delay);
  }

  /** Writes everything queued now (used by stop(), after waiting for a drain under way). */
  async flushNow(): Promise<void> {
    await this.idle();
    if (this.timer !== null) { this.opts.timers.clearTimeout(this.timer); this.timer = null; }
    await this.drain();
  }

  private idle(): Promise<void> {
    return this.busy ? new Promise((r) => this.idleWaiters.push(r)) : Promise.resolve();
  }

  private async drain(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    let failed = false;
    try {
      while (this.items.length > 0) {
        const rows = this.items.splice(0, this.opts.chunk);
        try {
          await this.opts.write(rows);
        } catch (e) {
          if (isRowError(e)) { this.opts.dropped(rows, e); continue; }
          this.items.unshift(...rows);
          this.opts.failed(rows, e);
          failed = true;
          break;
        }
      }
    } finally {
      this.busy = false;
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
    if (failed) { if (this.opts.live()) this.schedule(this.opts.retryMs); }
    else if (this.items.length > 0) this.schedule(0);
  }
}
