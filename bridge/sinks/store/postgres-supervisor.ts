/**
 * Keeps the embedded PostgreSQL running: when its postmaster exits without being asked to (kill -9, OOM
 * killer, crash), it is started again on the same data dir, socket folder and port (so the same URL) with
 * back-off until it runs. Meanwhile the StoreWriter spools and probes, and replays once it is back.
 */
import { EventEmitter } from 'node:events';
import { startPostgres, type PostgresProcess, type PostgresProcessOptions, type PostgresExit } from './embedded-postgres.js';
import type { Logger } from '../../../src/core/index.js';

export type EmbeddedDbState = 'running' | 'restarting' | 'stopped';

export type SupervisedPostgresOptions = Omit<PostgresProcessOptions, 'signal'> & {
  /** Delays before each restart attempt; the last one repeats. */
  backoffMs?: readonly number[];
};

/**
 * After a kill -9 of the postmaster its backends can outlive it for a moment and keep the shared memory
 * attached, so the first attempts may fail ("pre-existing shared memory block is still in use").
 */
const DEFAULT_BACKOFF_MS: readonly number[] = [250, 500, 1000, 2000, 5000, 10000, 30000];

function withoutBackoff(opts: SupervisedPostgresOptions): PostgresProcessOptions {
  const { backoffMs: _backoffMs, ...rest } = opts;
  return rest;
}

export class SupervisedPostgres extends EventEmitter<{ state: [EmbeddedDbState] }> {
  private proc: PostgresProcess | null;
  private unsubscribe: (() => void) | null = null;
  private _state: EmbeddedDbState = 'running';
  private _restarts = 0;
  private _lastError: string | null = null;
  private stopping = false;
  private attempt = 0;
  private timer: NodeJS.Timeout | null = null;
  private abort: AbortController | null = null;
  private inflight: Promise<void> | null = null;
  private readonly log: Logger;
  private readonly backoff: readonly number[];
  private readonly restartOpts: PostgresProcessOptions;

  private constructor(proc: PostgresProcess, opts: SupervisedPostgresOptions) {
    super();
    this.proc = proc;
    this.log = opts.log;
    this.backoff = opts.backoffMs && opts.backoffMs.length > 0 ? opts.backoffMs : DEFAULT_BACKOFF_MS;
    // Same run dir on every restart: socketDir() may otherwise pick a fresh temp folder, i.e. a new URL.
    this.restartOpts = { ...withoutBackoff(opts), runDir: proc.runDir };
    this.url = proc.url;
    this.watch(proc);
  }

  /** Starts (or adopts) the server; throws like startPostgres when the first start fails. */
  static async start(opts: SupervisedPostgresOptions): Promise<SupervisedPostgres> {
    return new SupervisedPostgres(await startPostgres(withoutBackoff(opts)), opts);
  }

  /** Stable across restarts. */
  readonly url: string;
  /** The postmaster's PID while running; null while restarting or stopped. */
  get pid(): number | null { return this._state === 'running' ? this.proc?.pid ?? null : null; }
  get state(): EmbeddedDbState { return this._state; }
  /** Successful restarts since start. */
  get restarts(): number { return this._restarts; }
  /** Why the server last went down or last failed to come back; kept after recovery for diagnosis. */
  get lastError(): string | null { return this._lastError; }
  /** True when the server now running was left by an earlier process and adopted. */
  get adopted(): boolean { return this.proc?.adopted ?? false; }

  /** Stops the server and any pending restart; nothing is left running once this resolves. */
  async stop(mode: 'fast' | 'immediate' = 'fast'): Promise<void> {
    this.stopping = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.abort?.abort();
    // An attempt in flight either is cancelled (its half-started server stopped) or stops what it started.
    await this.inflight;
    this.unsubscribe?.();
    this.unsubscribe = null;
    const proc = this.proc;
    this.proc = null;
    if (proc) await proc.stop(mode);
    this.setState('stopped');
  }

  private watch(proc: PostgresProcess): void {
    this.unsubscribe = proc.onExit((exit) => this.exited(proc, exit));
  }

  private exited(proc: PostgresProcess, exit: PostgresExit): void {
    if (this.stopping || exit.requested || proc !== this.proc) return;
    this.unsubscribe = null;
    this.proc = null;
    const how = exit.signal ?? (exit.code !== null ? `code ${exit.code}` : 'process gone');
    this._lastError = `embedded PostgreSQL exited unexpectedly (${how})`;
    this.log.warn({ pgPid: proc.pid, code: exit.code, signal: exit.signal }, 'embedded PostgreSQL exited unexpectedly: restarting it');
    this.attempt = 0;
    this.setState('restarting');
    this.schedule();
  }

  private schedule(): void {
    const delay = this.backoff[Math.min(this.attempt, this.backoff.length - 1)] ?? 1000;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.inflight = this.restart()
        .catch((e: Error) => this.log.error({ err: e.message }, 'embedded PostgreSQL restart aborted'))
        .finally(() => { this.inflight = null; });
    }, delay);
  }

  private async restart(): Promise<void> {
    if (this.stopping) return;
    this.attempt++;
    const abort = new AbortController();
    this.abort = abort;
    let proc: PostgresProcess;
    try {
      proc = await startPostgres({ ...this.restartOpts, signal: abort.signal });
    } catch (e) {
      if (this.stopping) return;
      this._lastError = (e as Error).message;
      const retryInMs = this.backoff[Math.min(this.attempt, this.backoff.length - 1)];
      this.log.warn({ attempt: this.attempt, retryInMs, err: this._lastError }, 'embedded PostgreSQL restart failed');
      this.schedule();
      return;
    } finally {
      this.abort = null;
    }
    if (this.stopping) {
      // Started (or adopted) just as stop() came: stop() is awaiting us, so stop it here.
      await proc.stop();
      return;
    }
    if (proc.url !== this.url) this.log.error({ url: proc.url, expected: this.url }, 'embedded PostgreSQL came back on another URL');
    this.proc = proc;
    this.watch(proc);
    this._restarts++;
    this.log.info({ pgPid: proc.pid, attempts: this.attempt, restarts: this._restarts }, 'embedded PostgreSQL restarted');
    this.setState('running');
  }

  private setState(s: EmbeddedDbState): void {
    if (s === this._state) return;
    this._state = s;
    this.emit('state', s);
  }
}
