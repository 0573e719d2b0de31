/**
 * The processes the bench starts, and what it reads about them from /proc. Every process started here is
 * recorded by PID and ended by PID (SIGTERM, then SIGKILL after a grace period), also on failure or Ctrl-C.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, readFileSync, readdirSync } from 'node:fs';

/** Clock ticks per second for /proc/<pid>/stat times; 100 on every Linux build we run on. */
const CLK_TCK = 100;

export function readProcFile(path: string): string | null {
  try { return readFileSync(path, 'utf8'); } catch { return null; }
}

/** Alive and not a zombie (an orphan may wait for a reaper that never comes in a container). */
export function pidAlive(pid: number): boolean {
  try { process.kill(pid, 0); } catch (e) { if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false; }
  const stat = readProcFile(`/proc/${pid}/stat`);
  if (stat === null) return false;
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
}

/** The postmaster PID from a PostgreSQL data directory, or null when none is running there. */
export function postmasterPid(dataDir: string): number | null {
  const f = `${dataDir}/postmaster.pid`;
  if (!existsSync(f)) return null;
  const pid = Number((readProcFile(f) ?? '').split('\n')[0]);
  return pid > 0 && pidAlive(pid) ? pid : null;
}

export interface Tracked {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export class ProcessRegistry {
  private readonly tracked = new Map<number, Tracked>();
  /** Processes started on our behalf by something else (a postmaster started by the server or a helper). */
  private readonly adopted = new Map<number, { name: string; signal: NodeJS.Signals }>();
  private closed = false;

  /** From now on nothing new is started (an interrupt is being handled). */
  close(): void {
    this.closed = true;
  }

  /**
   * `logTo`: a file for stderr (and for stdout too with `stdoutToLog`; otherwise stdout is the caller's to
   * read). `stdin`: a pipe the caller writes commands to (otherwise no stdin).
   */
  spawnNode(name: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; logTo?: string; stdoutToLog?: boolean; stdin?: boolean } = {}): Tracked {
    if (this.closed) throw new Error(`not starting ${name}: the bench is stopping`);
    const child = spawn(process.execPath, args, { env: opts.env ?? process.env, cwd: opts.cwd, stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
    if (child.pid === undefined) throw new Error(`could not start ${name}`);
    const file = opts.logTo === undefined ? null : createWriteStream(opts.logTo);
    if (file) {
      child.stderr?.pipe(file, { end: false });
      if (opts.stdoutToLog) child.stdout?.pipe(file, { end: false });
    } else {
      child.stderr?.resume();
    }
    const pid = child.pid;
    // 'close' comes after 'exit' and after the output streams have ended; the log is complete once flushed.
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.once('close', (code, signal) => {
        this.tracked.delete(pid);
        if (file) file.end(() => resolve({ code, signal })); else resolve({ code, signal });
      });
    });
    const t: Tracked = { name, child, pid, exited };
    this.tracked.set(pid, t);
    return t;
  }

  adopt(pid: number, name: string, signal: NodeJS.Signals = 'SIGTERM'): void {
    this.adopted.set(pid, { name, signal });
  }

  /** Signal one process by PID and wait for it to exit; SIGKILL it after `graceMs`. */
  async stop(pid: number, signal: NodeJS.Signals = 'SIGTERM', graceMs = 15_000): Promise<'exited' | 'killed' | 'gone'> {
    const t = this.tracked.get(pid);
    const alive = (): boolean => (t ? t.child.exitCode === null && t.child.signalCode === null : pidAlive(pid));
    if (!alive()) { this.adopted.delete(pid); return 'gone'; }
    try { process.kill(pid, signal); } catch { /* exited meanwhile */ }
    const deadline = Date.now() + graceMs;
    while (alive() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    let outcome: 'exited' | 'killed' = 'exited';
    if (alive()) {
      outcome = 'killed';
      try { process.kill(pid, 'SIGKILL'); } catch { /* exited meanwhile */ }
      while (alive()) await new Promise((r) => setTimeout(r, 50));
    }
    if (t) await t.exited;
    this.adopted.delete(pid);
    return outcome;
  }

  /** Everything still running, most recent first (load generators before servers before databases). */
  async stopAll(): Promise<void> {
    for (const pid of [...this.tracked.keys()].reverse()) await this.stop(pid);
    for (const [pid, a] of [...this.adopted.entries()].reverse()) await this.stop(pid, a.signal);
  }

  /** Forget adopted processes that have ended by themselves (their owner stopped them). */
  pruneAdopted(): void {
    for (const pid of [...this.adopted.keys()]) if (!pidAlive(pid)) this.adopted.delete(pid);
  }

  /** Last resort from a synchronous 'exit' handler. */
  killAllNow(): void {
    this.pruneAdopted();
    for (const pid of [...this.tracked.keys(), ...this.adopted.keys()]) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
    }
  }
}

/** A process and its descendants, from /proc/<pid>/task/<pid>/children. */
export function processTree(root: number): number[] {
  const out: number[] = [];
  const stack = [root];
  while (stack.length > 0) {
    const pid = stack.pop() as number;
    if (!pidAlive(pid)) continue;
    out.push(pid);
    const kids = readProcFile(`/proc/${pid}/task/${pid}/children`);
    if (kids) for (const k of kids.trim().split(/\s+/)) if (k) stack.push(Number(k));
  }
  return out;
}

export function statusKb(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const s = readProcFile(`/proc/${pid}/status`);
  const m = s === null ? null : new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(s);
  return m ? Number(m[1]) : 0;
}

function pssKb(pid: number): number {
  const s = readProcFile(`/proc/${pid}/smaps_rollup`);
  const m = s === null ? null : /^Pss:\s+(\d+) kB/m.exec(s);
  return m ? Number(m[1]) : 0;
}

/** CPU seconds (user + system) used so far by these processes. */
export function cpuSeconds(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    const s = readProcFile(`/proc/${pid}/stat`);
    if (s === null) continue;
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    ticks += Number(f[11] ?? 0) + Number(f[12] ?? 0); // fields 14 and 15 of stat(5): utime, stime
  }
  return ticks / CLK_TCK;
}

export interface MemoryPeaks {
  /** Largest VmRSS seen every 200 ms, and the kernel's own high-water mark at the end. */
  readonly serverPeakRssMb: number;
  readonly serverHwmMb: number;
  /** Sum of PSS over the PostgreSQL process tree (PSS splits shared buffers fairly), sampled every second. */
  readonly pgPeakPssMb: number | null;
}

export class MemorySampler {
  private timer: NodeJS.Timeout | null = null;
  private peakRssKb = 0;
  private peakPgKb = 0;
  private ticks = 0;

  constructor(private readonly serverPid: number, private readonly pgRoot: () => number | null) {}

  start(): void {
    this.sample();
    this.timer = setInterval(() => this.sample(), 200);
  }

  private sample(): void {
    this.peakRssKb = Math.max(this.peakRssKb, statusKb(this.serverPid, 'VmRSS'));
    if (this.ticks++ % 5 !== 0) return;
    const root = this.pgRoot();
    if (root === null) return;
    let kb = 0;
    for (const pid of processTree(root)) kb += pssKb(pid);
    this.peakPgKb = Math.max(this.peakPgKb, kb);
  }

  /** Call while the server is still running, so its VmHWM can be read. */
  finish(): MemoryPeaks {
    this.sample();
    if (this.timer) clearInterval(this.timer);
    const mb = (kb: number): number => Math.round(kb / 102.4) / 10;
    return {
      serverPeakRssMb: mb(this.peakRssKb),
      serverHwmMb: mb(statusKb(this.serverPid, 'VmHWM')),
      pgPeakPssMb: this.pgRoot() === null && this.peakPgKb === 0 ? null : mb(this.peakPgKb),
    };
  }
}

/** VmRSS of one process every `everyMs`, kept as a trace, to show whether memory stays flat over a task. */
export class RssTrace {
  private timer: NodeJS.Timeout | null = null;
  private readonly samples: Array<{ at: number; kb: number }> = [];

  constructor(private readonly pid: number, private readonly everyMs = 100) {}

  start(): void {
    this.sample();
    this.timer = setInterval(() => this.sample(), this.everyMs);
  }

  private sample(): void {
    const kb = statusKb(this.pid, 'VmRSS');
    if (kb > 0) this.samples.push({ at: performance.now(), kb });
  }

  /** Takes a last sample and stops sampling; idempotent. */
  stop(): void {
    if (this.timer === null) return;
    clearInterval(this.timer);
    this.timer = null;
    this.sample();
  }

  /**
   * In MB: the RSS at the start, the peak, the end, and the peaks of each third of the time after the first
   * `skipMs` (e.g. while the database sorts, before anything is streamed). Memory that stays flat has
   * about the same peak in the second and last third; memory that grows with the work does not.
   */
  finish(skipMs = 0): { beforeMb: number; peakMb: number; endMb: number; thirdsPeakMb: [number, number, number] } {
    this.stop();
    const mb = (kb: number): number => Math.round(kb / 102.4) / 10;
    const s = this.samples;
    const first = s[0];
    const last = s[s.length - 1];
    if (!first || !last) return { beforeMb: 0, peakMb: 0, endMb: 0, thirdsPeakMb: [0, 0, 0] };
    const t0 = Math.min(first.at + skipMs, last.at);
    const span = Math.max(1, last.at - t0);
    const peak = (xs: typeof s): number => xs.reduce((m, x) => Math.max(m, x.kb), 0);
    const third = (k: number): number => mb(peak(s.filter((x) => x.at >= t0 + (span * k) / 3 && x.at <= t0 + (span * (k + 1)) / 3)));
    return { beforeMb: mb(first.kb), peakMb: mb(peak(s)), endMb: mb(last.kb), thirdsPeakMb: [third(0), third(1), third(2)] };
  }
}

/**
 * CPU seconds that processes other than kernel threads have used on the whole machine: user and system
 * time from /proc/stat (interrupt time excluded), less the time of kernel threads (children of kthreadd,
 * such as the writeback workers that flush our own database files).
 */
export function machineProcessSeconds(): number {
  const line = (readProcFile('/proc/stat') ?? '').split('\n')[0] ?? '';
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  let ticks = (f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0); // user nice system (guest time is inside user)
  let pids: string[] = [];
  try { pids = readdirSync('/proc').filter((d) => /^\d+$/.test(d)); } catch { /* no /proc */ }
  for (const pid of pids) {
    const st = readProcFile(`/proc/${pid}/stat`);
    if (st === null) continue;
    const g = st.slice(st.lastIndexOf(')') + 2).split(' ');
    if (pid === '2' || g[1] === '2') ticks -= Number(g[11] ?? 0) + Number(g[12] ?? 0); // ppid 2: a kernel thread
  }
  return ticks / CLK_TCK;
}

/**
 * CPU seconds of a process tree, children that have ended included: a process's cutime/cstime hold the
 * CPU of the children it has reaped, so the sum does not drop when a child exits.
 */
export function treeCpuSeconds(root: number): number {
  let ticks = 0;
  for (const pid of processTree(root)) {
    const s = readProcFile(`/proc/${pid}/stat`);
    if (s === null) continue;
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    ticks += Number(f[11] ?? 0) + Number(f[12] ?? 0) + Number(f[13] ?? 0) + Number(f[14] ?? 0); // utime stime cutime cstime
  }
  return ticks / CLK_TCK;
}
