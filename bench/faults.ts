/**
 * The failure scenarios of `npm run bench` (run.ts wires them in; everything on 127.0.0.1, every process
 * ended by PID through the run's ProcessRegistry):
 *
 *   outage       uns-bridge on a fresh database of its own throwaway PostgreSQL cluster; a paced QoS 1 load
 *                from this process (20 publishers, one topic each, `{"value": <sequence number>}`, so every
 *                acknowledged message can be looked for in the store). After the warm-up and BEFORE_S
 *                measured seconds PostgreSQL is stopped for `outageS`, started again, the load kept on for
 *                AFTER_S more, then stopped; once /ready is 200 (spool replayed) the stored rows are checked
 *                against the acknowledged messages: exactly once.
 *   spool-drain  `segments` spool segments of one message each, written with the server's own Spool class
 *                (and its own decode and row code) into the data folder of a server started with its
 *                database down; the database is then started and the replay measured until /ready is 200.
 *
 * The load generator runs in the bench process rather than its own (bench/load.ts cannot report which
 * sequence numbers were acknowledged); at a few thousand msgs/s that costs little, and its event-loop lag is
 * reported with the figures.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import pg from 'pg';
import { TestPostgres } from '../test/helpers/postgres.js';
import { loadTopics } from '../src/core/topics.js';
import { isRejection, type InboundRecord, type UnsMessage } from '../src/core/message.js';
import { decodeValuePayload, type ValueEncoding } from '../bridge/decode/envelope.js';
import { messageToItem, redeliveryKey } from '../bridge/sinks/store/to-rows.js';
import { Spool, realSpoolFs, type SpoolFs } from '../bridge/sinks/store/spool.js';
import { LiteClient } from './mqtt-lite.js';
import { Histogram, type LatencySummary } from './histogram.js';
import { MemorySampler, postmasterPid, readProcFile, type MemoryPeaks, type ProcessRegistry, type Tracked } from './procs.js';
import type { ServerLog } from './report.js';

// --- what run.ts lends us -------------------------------------------------------------------------------------

/** The parts of run.ts's UnsServer used here. */
export interface FaultServer {
  readonly proc: Tracked;
  readonly mqttPort: number;
  readonly httpPort: number;
  readonly dataDir: string;
  readonly logFile: string;
}

export interface FaultContext<S extends FaultServer> {
  readonly reg: ProcessRegistry;
  readonly progress: (msg: string) => void;
  readonly tempDir: (prefix: string) => string;
  readonly startUns: (name: string, databaseUrl: string | null, extraEnv?: Readonly<Record<string, string>>,
    opts?: { readonly dataDir?: string; readonly untilAnswering?: boolean }) => Promise<S>;
  readonly stopUns: (s: S) => Promise<ServerLog>;
  readonly admin: { readonly username: string; readonly password: string };
  /** topics.yaml the servers run with (the spool is built with the same namespace). */
  readonly topicsFile: string;
  /** The longest wait for /ready 200 once the database is back. */
  readonly drainTimeoutS: number;
}

// --- results ----------------------------------------------------------------------------------------------------

/** Stored rows of the scenario's topics against the messages that were acknowledged (or written to the spool). */
export interface ExactlyOnce {
  readonly acknowledged: number;
  readonly stored: number;
  readonly missing: number;
  readonly duplicates: number;
  /** Stored although never acknowledged (a publish in flight when its connection broke): allowed. */
  readonly storedNotAcked: number;
  /** Stored values that were never sent at all. */
  readonly unexpected: number;
  readonly ok: boolean;
}

export interface RssPoint {
  /** Seconds since the server was started. */
  readonly s: number;
  readonly mb: number;
}

export interface OutageResult {
  readonly id: 'outage';
  readonly rate: number;
  readonly publishers: number;
  readonly outageS: number;
  /** Measured length of each phase, seconds (during: PostgreSQL stopped until it accepts connections again). */
  readonly phaseS: Readonly<Record<Measured, number>>;
  /** PUBACKs received per second in each phase. */
  readonly ackedPerS: Readonly<Record<Measured, number>>;
  /** By the scheduled send time's phase; measured from the scheduled time (no coordinated omission). */
  readonly puback: Readonly<Record<Measured, LatencySummary>>;
  readonly sent: number;
  readonly acked: number;
  readonly unackedAtEnd: number;
  readonly backlogUnsent: number;
  readonly deferred: number;
  readonly connectionErrors: readonly string[];
  /** /ready (polled once a second): when the outage showed, the spool's peak, the replay. */
  readonly degradedAfterS: number | null;
  readonly spoolPeak: { readonly segments: number; readonly bytes: number };
  readonly replayTotal: number | null;
  /** PostgreSQL accepting connections again -> /ready 200 (spool empty, no replay); null: not within the limit. */
  readonly drainS: number | null;
  readonly memory: MemoryPeaks;
  readonly rssEvery10s: readonly RssPoint[];
  readonly check: ExactlyOnce;
  readonly rejections: number;
  readonly generatorLoopLagP99Ms: number;
  readonly serverLog: ServerLog | null;
}

export interface SpoolDrainResult {
  readonly id: 'spool-drain';
  readonly segments: number;
  readonly messages: number;
  readonly topics: number;
  readonly spoolBytes: number;
  readonly generateS: number;
  /** Server start (database down) until /ready answered, and the segments it reported then. */
  readonly serverStartS: number;
  readonly segmentsSeenAtStart: number;
  /** PostgreSQL accepting connections -> the replay's start as /ready reports it (probe + store open). */
  readonly replayStartS: number | null;
  /** The replay's start -> /ready 200. */
  readonly replayS: number | null;
  /** PostgreSQL accepting connections -> /ready 200; null: not within the limit. */
  readonly drainS: number | null;
  readonly segmentsPerS: number | null;
  /** /ready replay progress, every 10 s (s: since PostgreSQL was started). */
  readonly progress: ReadonlyArray<{ readonly s: number; readonly done: number; readonly total: number; readonly segments: number }>;
  readonly memory: MemoryPeaks;
  readonly rssEvery10s: readonly RssPoint[];
  readonly check: ExactlyOnce;
  readonly spoolApplied: number;
  readonly corrupt: number;
  readonly rejections: number;
  readonly serverLog: ServerLog | null;
}

export type FaultResult = OutageResult | SpoolDrainResult;

// --- helpers ----------------------------------------------------------------------------------------------------

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const round = (n: number, digits = 1): number => Math.round(n * 10 ** digits) / 10 ** digits;

/** Clusters started here, so run.ts can destroy them on Ctrl-C too. */
const clusters = new Set<TestPostgres>();

export async function destroyFaultClusters(): Promise<void> {
  for (const c of [...clusters]) {
    clusters.delete(c);
    await c.destroy();
  }
}

/** What the cluster helpers need of a context. */
type Procs = Pick<FaultContext<FaultServer>, 'reg' | 'progress'>;

function adoptPostmaster(ctx: Procs, c: TestPostgres, name: string): void {
  const pid = postmasterPid(join(c.dir, 'data'));
  if (pid !== null) ctx.reg.adopt(pid, `${name} postgres`, 'SIGINT');
}

async function startCluster(ctx: Procs, name: string): Promise<TestPostgres> {
  const c = new TestPostgres({ timescale: true });
  clusters.add(c);
  await c.start();
  adoptPostmaster(ctx, c, name);
  ctx.progress(`${name}: own PostgreSQL cluster on 127.0.0.1:${c.port} (${c.binDir}; TimescaleDB ${c.timescale ? 'preloaded' : 'not installed'})`);
  return c;
}

async function dropCluster(ctx: Procs, c: TestPostgres): Promise<void> {
  clusters.delete(c);
  await c.destroy().catch((e: Error) => ctx.progress(`could not stop a test PostgreSQL: ${e.message}`));
  ctx.reg.pruneAdopted();
}

function rssMb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readProcFile(`/proc/${pid}/status`) ?? '');
  return m ? Math.round(Number(m[1]) / 102.4) / 10 : 0;
}

interface ReadyObs {
  /** Epoch ms. */
  readonly at: number;
  readonly code: number;
  readonly state: string | null;
  readonly segments: number;
  readonly bytes: number;
  readonly corrupt: number;
  readonly replay: { readonly done: number; readonly total: number; readonly since: number } | null;
}

interface ReadyBody {
  checks?: {
    database?: { state?: string };
    spool?: { segments?: number; bytes?: number; corrupt?: number; replay?: { done: number; total: number; since: string } | null };
  };
}

async function readReady(port: number): Promise<ReadyObs | null> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/ready`, { signal: AbortSignal.timeout(3_000) });
    const body = (await res.json()) as ReadyBody;
    const sp = body.checks?.spool;
    return {
      at: Date.now(), code: res.status, state: body.checks?.database?.state ?? null, segments: sp?.segments ?? 0, bytes: sp?.bytes ?? 0,
      corrupt: sp?.corrupt ?? 0, replay: sp?.replay ? { done: sp.replay.done, total: sp.replay.total, since: Date.parse(sp.replay.since) } : null,
    };
  } catch {
    return null;
  }
}

const drained = (o: ReadyObs): boolean => o.code === 200 && o.segments === 0 && o.replay === null;

/**
 * Polls /ready once a second (every 250 ms while `fast`, to time the end of a drain), keeps the spool's peak
 * and the server's RSS every 10 s, and hands each observation to `tick`.
 */
class ReadyPoller {
  readonly seen: ReadyObs[] = [];
  readonly rss: RssPoint[] = [];
  peakSegments = 0;
  peakBytes = 0;
  fast = false;
  private stopped = false;
  private loop: Promise<void> | null = null;
  private readonly startedAt = Date.now();

  constructor(private readonly port: number, private readonly pid: number, private readonly tick: (o: ReadyObs, rssMb: number | null) => void) {}

  start(): void {
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }

  private async run(): Promise<void> {
    let nextRss = this.startedAt;
    while (!this.stopped) {
      const t = Date.now();
      const o = await readReady(this.port);
      let mb: number | null = null;
      if (Date.now() >= nextRss) {
        nextRss += 10_000;
        mb = rssMb(this.pid);
        this.rss.push({ s: Math.round((Date.now() - this.startedAt) / 1000), mb });
      }
      if (o) {
        this.seen.push(o);
        this.peakSegments = Math.max(this.peakSegments, o.segments);
        this.peakBytes = Math.max(this.peakBytes, o.bytes);
        this.tick(o, mb);
      }
      const wait = (this.fast ? 250 : 1_000) - (Date.now() - t);
      if (wait > 0) await sleep(wait);
    }
  }

  /** The first observation at or after `after` (epoch ms) that satisfies `pred`, or null after `timeoutMs`. */
  async waitFor(pred: (o: ReadyObs) => boolean, after: number, timeoutMs: number): Promise<ReadyObs | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.seen.find((o) => o.at >= after && pred(o));
      if (hit) return hit;
      if (Date.now() > deadline || this.stopped) return null;
      await sleep(100);
    }
  }
}

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try { return await fn(c); } finally { await c.end().catch(() => undefined); }
}

/**
 * Compares the stored values of each topic (`v_num`, the message's sequence number) with what was sent and
 * acknowledged: `sent[t]` messages 0..sent-1 went out on topic t, `acked[t]` lists those acknowledged.
 */
async function checkStore(url: string, sent: ReadonlyMap<string, number>, acked: ReadonlyMap<string, Iterable<number>>): Promise<ExactlyOnce & { rejections: number; spoolApplied: number }> {
  return withClient(url, async (c) => {
    const names = [...sent.keys()];
    const rows = (await c.query<[string, number | null]>({
      text: 'SELECT t.name, s.v_num FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name = ANY($1::text[])',
      values: [names], rowMode: 'array',
    })).rows;
    const counts = new Map<string, Uint32Array>();
    for (const [name, n] of sent) counts.set(name, new Uint32Array(n));
    let unexpected = 0;
    for (const [name, v] of rows) {
      const arr = counts.get(name);
      if (arr && v !== null && Number.isInteger(v) && v >= 0 && v < arr.length) arr[v] = (arr[v] ?? 0) + 1;
      else unexpected++;
    }
    let acknowledged = 0;
    let missing = 0;
    let duplicates = 0;
    let storedNotAcked = 0;
    for (const [name, arr] of counts) {
      const ack = new Uint8Array(arr.length);
      for (const seq of acked.get(name) ?? []) { if (ack[seq] === 0) { ack[seq] = 1; acknowledged++; } }
      for (let i = 0; i < arr.length; i++) {
        const n = arr[i] ?? 0;
        if (n > 1) duplicates += n - 1;
        if (ack[i] === 1 && n === 0) missing++;
        if (ack[i] === 0 && n > 0) storedNotAcked++;
      }
    }
    const extra = (await c.query<{ r: string; a: string }>('SELECT (SELECT count(*) FROM rejections) AS r, (SELECT count(*) FROM spool_applied) AS a')).rows[0];
    return {
      acknowledged, stored: rows.length, missing, duplicates, storedNotAcked, unexpected,
      ok: missing === 0 && duplicates === 0 && unexpected === 0, rejections: Number(extra?.r ?? 0), spoolApplied: Number(extra?.a ?? 0),
    };
  });
}

// --- the sequence load ---------------------------------------------------------------------------------------------

const PHASES = ['before', 'during', 'after'] as const;
type Measured = (typeof PHASES)[number];
type Phase = 'warmup' | Measured | 'stopped';

/** Publishers of the outage scenario; one topic each. */
const OUTAGE_PUBLISHERS = 20;
/** QoS 1 publishes in flight per publisher at most; beyond, scheduled publishes queue (and count as latency). */
const WINDOW = 10_000;
const BEFORE_S = 10;
const AFTER_S = 10;

const outageTopic = (i: number): string => `acme/plant2/warehouse/line7/o${i}/seq`;
const drainTopic = (i: number): string => `acme/plant2/warehouse/line7/d${i}/seq`;

class SequencePublisher {
  readonly client: LiteClient;
  readonly topicBuf: Buffer;
  /** Sequence number per packet id in flight (-1: free), and its scheduled time (performance.now). */
  readonly slotSeq = new Int32Array(65_536).fill(-1);
  readonly slotAt = new Float64Array(65_536);
  readonly acked: number[] = [];
  readonly backlog: number[] = [];
  backlogHead = 0;
  nextId = 1;
  inflight = 0;
  sent = 0;

  constructor(readonly topic: string, private readonly load: SequenceLoad, opts: { host: string; port: number; clientId: string; username: string; password: string }) {
    this.topicBuf = Buffer.from(topic, 'utf8');
    this.client = new LiteClient({ ...opts, keepaliveS: 60 }, {
      onPuback: (id) => this.onPuback(id),
      onClose: (e) => load.noteError(`${opts.clientId} connection closed${e ? `: ${e.message}` : ''}`),
    });
  }

  offer(scheduledAt: number): void {
    if (this.inflight < WINDOW) { this.send(scheduledAt); return; }
    this.backlog.push(scheduledAt);
    this.load.deferred++;
  }

  private send(scheduledAt: number): void {
    let id = this.nextId;
    while (this.slotSeq[id] !== -1) id = id === 65_535 ? 1 : id + 1;
    this.nextId = id === 65_535 ? 1 : id + 1;
    const seq = this.sent++;
    this.slotSeq[id] = seq;
    this.slotAt[id] = scheduledAt;
    this.inflight++;
    this.client.publishQos1(this.topicBuf, id, `{"value": ${seq}}`);
  }

  private onPuback(id: number): void {
    const seq = this.slotSeq[id] ?? -1;
    if (seq < 0) { this.load.unexpectedAcks++; return; }
    this.slotSeq[id] = -1;
    this.inflight--;
    this.acked.push(seq);
    this.load.onAck(this.slotAt[id] ?? 0);
    if (this.load.producing && this.backlogHead < this.backlog.length) {
      const at = this.backlog[this.backlogHead++] as number;
      if (this.backlogHead > 1024 && this.backlogHead * 2 > this.backlog.length) { this.backlog.splice(0, this.backlogHead); this.backlogHead = 0; }
      this.send(at);
    }
  }
}

/** A paced QoS 1 load that remembers every acknowledged sequence number, with per-phase rates and latencies. */
class SequenceLoad {
  readonly pubs: SequencePublisher[];
  readonly errors: string[] = [];
  readonly hist: Record<Measured, Histogram> = { before: new Histogram(), during: new Histogram(), after: new Histogram() };
  readonly acks: Record<Phase, number> = { warmup: 0, before: 0, during: 0, after: 0, stopped: 0 };
  /** performance.now() at which each phase began. */
  readonly phaseStart: Partial<Record<Phase, number>> = {};
  deferred = 0;
  unexpectedAcks = 0;
  private phase: Phase = 'warmup';
  private ticker: NodeJS.Timeout | null = null;
  private readonly loop = monitorEventLoopDelay({ resolution: 5 });

  constructor(readonly rate: number, topics: readonly string[], conn: { host: string; port: number; username: string; password: string }) {
    this.pubs = topics.map((t, i) => new SequencePublisher(t, this, { ...conn, clientId: `bench-outage-${i}` }));
  }

  get producing(): boolean {
    return this.phase !== 'stopped';
  }

  noteError(what: string): void {
    if (this.errors.length < 50) this.errors.push(what);
  }

  async connect(): Promise<void> {
    for (const p of this.pubs) await p.client.connect();
  }

  start(): void {
    const t0 = performance.now();
    this.phaseStart.warmup = t0;
    this.loop.enable();
    let scheduled = 0;
    let rr = 0;
    this.ticker = setInterval(() => {
      const due = Math.floor(((performance.now() - t0) * this.rate) / 1000);
      while (scheduled < due) {
        (this.pubs[rr] as SequencePublisher).offer(t0 + (scheduled * 1000) / this.rate);
        rr = rr + 1 === this.pubs.length ? 0 : rr + 1;
        scheduled++;
      }
    }, 1);
  }

  setPhase(p: Phase): void {
    this.phase = p;
    this.phaseStart[p] = performance.now();
    if (p === 'stopped') {
      if (this.ticker) clearInterval(this.ticker);
      this.ticker = null;
      this.loop.disable();
    }
  }

  /** Which measured phase a scheduled time falls in (null: warm-up or after the load stopped). */
  private phaseAt(t: number): Measured | null {
    let found: Measured | null = null;
    for (const p of PHASES) {
      const s = this.phaseStart[p];
      if (s !== undefined && t >= s) found = p;
    }
    const end = this.phaseStart.stopped;
    return end !== undefined && t >= end ? null : found;
  }

  onAck(scheduledAt: number): void {
    this.acks[this.phase]++;
    const p = this.phaseAt(scheduledAt);
    if (p !== null) this.hist[p].record(performance.now() - scheduledAt);
  }

  get sent(): number { return this.pubs.reduce((n, p) => n + p.sent, 0); }
  get acked(): number { return this.pubs.reduce((n, p) => n + p.acked.length, 0); }
  get inflight(): number { return this.pubs.reduce((n, p) => n + p.inflight, 0); }
  get backlog(): number { return this.pubs.reduce((n, p) => n + p.backlog.length - p.backlogHead, 0); }

  /** After setPhase('stopped'): wait for what is in flight to be acknowledged (or its connection to break). */
  async drain(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.pubs.some((p) => p.inflight > 0 && p.client.isOpen) && Date.now() < deadline) await sleep(20);
  }

  loopLagP99Ms(): number {
    return Math.max(0, Math.round(this.loop.percentile(99) / 1e4 - 500) / 100);
  }

  async end(): Promise<void> {
    if (this.ticker) clearInterval(this.ticker);
    this.ticker = null;
    this.loop.disable();
    await Promise.all(this.pubs.map((p) => p.client.end()));
  }
}

// --- outage -------------------------------------------------------------------------------------------------------

export async function outageScenario<S extends FaultServer>(ctx: FaultContext<S>, o: { rate: number; outageS: number; warmupS: number }): Promise<OutageResult> {
  const id = 'outage';
  const say = (m: string): void => ctx.progress(`${id}: ${m}`);
  const cluster = await startCluster(ctx, id);
  let server: S | null = null;
  let serverLog: ServerLog | null = null;
  let load: SequenceLoad | null = null;
  let poller: ReadyPoller | null = null;
  let sampler: MemorySampler | null = null;
  try {
    const url = await cluster.createDatabase('bench_outage');
    say('starting uns-bridge (external PostgreSQL)');
    server = await ctx.startUns(id, url);
    const srv = server;
    sampler = new MemorySampler(srv.proc.pid, () => postmasterPid(join(cluster.dir, 'data')));
    sampler.start();
    const topics = Array.from({ length: OUTAGE_PUBLISHERS }, (_, i) => outageTopic(i));
    const ld = new SequenceLoad(o.rate, topics, { host: '127.0.0.1', port: srv.mqttPort, username: ctx.admin.username, password: ctx.admin.password });
    load = ld;
    await ld.connect();
    let lastSay = Date.now();
    poller = new ReadyPoller(srv.httpPort, srv.proc.pid, (r, mb) => {
      if (mb === null && Date.now() - lastSay < 10_000) return;
      lastSay = Date.now();
      say(`/ready ${r.code} (${r.state ?? '?'}), spool ${r.segments.toLocaleString('en-US')} segments / ${(r.bytes / 1048576).toFixed(1)} MB` +
        `${r.replay ? `, replay ${r.replay.done.toLocaleString('en-US')}/${r.replay.total.toLocaleString('en-US')}` : ''}; ` +
        `acked ${ld.acked.toLocaleString('en-US')} of ${ld.sent.toLocaleString('en-US')} sent; server RSS ${mb ?? rssMb(srv.proc.pid)} MB`);
    });
    poller.start();
    say(`${OUTAGE_PUBLISHERS} publishers at ${o.rate.toLocaleString('en-US')} msgs/s: warm-up ${o.warmupS} s, ${BEFORE_S} s before, ` +
      `${o.outageS} s outage, ${AFTER_S} s after`);
    ld.start();
    await sleep(o.warmupS * 1000);
    ld.setPhase('before');
    await sleep(BEFORE_S * 1000);

    ld.setPhase('during');
    const downAt = Date.now();
    say('stopping PostgreSQL (fast shutdown)');
    await cluster.stop('fast');
    ctx.reg.pruneAdopted();
    await sleep(Math.max(0, o.outageS * 1000 - (Date.now() - downAt)));
    say('starting PostgreSQL again');
    await cluster.start();
    adoptPostmaster(ctx, cluster, id);
    const backAt = Date.now();
    ld.setPhase('after');
    poller.fast = true;
    await sleep(AFTER_S * 1000);
    ld.setPhase('stopped');
    const backlogUnsent = ld.backlog;
    await ld.drain(30_000);
    const unackedAtEnd = ld.inflight;
    say(`load stopped: sent ${ld.sent.toLocaleString('en-US')}, acked ${ld.acked.toLocaleString('en-US')}, in flight ${unackedAtEnd}; waiting for /ready 200`);
    const done = await poller.waitFor(drained, backAt, ctx.drainTimeoutS * 1000);
    await ld.end();
    await poller.stop();
    if (done === null) say(`NOT drained ${ctx.drainTimeoutS} s after PostgreSQL came back`);
    const degraded = poller.seen.find((r) => r.at >= downAt && r.state !== 'healthy');
    const replayTotal = poller.seen.reduce<number | null>((m, r) => (r.replay ? Math.max(m ?? 0, r.replay.total) : m), null);

    const sent = new Map(ld.pubs.map((p) => [p.topic, p.sent]));
    const acked = new Map(ld.pubs.map((p) => [p.topic, p.acked]));
    const c = await checkStore(url, sent, acked);
    const memory = sampler.finish();
    serverLog = await ctx.stopUns(srv);
    server = null;

    const st = ld.phaseStart;
    const phaseS: Record<Measured, number> = {
      before: ((st.during ?? 0) - (st.before ?? 0)) / 1000,
      during: ((st.after ?? 0) - (st.during ?? 0)) / 1000,
      after: ((st.stopped ?? 0) - (st.after ?? 0)) / 1000,
    };
    const { rejections, spoolApplied: _a, ...check } = c;
    const result: OutageResult = {
      id, rate: o.rate, publishers: OUTAGE_PUBLISHERS, outageS: o.outageS,
      phaseS: { before: round(phaseS.before, 2), during: round(phaseS.during, 2), after: round(phaseS.after, 2) },
      ackedPerS: {
        before: Math.round(ld.acks.before / phaseS.before), during: Math.round(ld.acks.during / phaseS.during), after: Math.round(ld.acks.after / phaseS.after),
      },
      puback: { before: ld.hist.before.summary(), during: ld.hist.during.summary(), after: ld.hist.after.summary() },
      sent: ld.sent, acked: ld.acked, unackedAtEnd, backlogUnsent, deferred: ld.deferred, connectionErrors: ld.errors,
      degradedAfterS: degraded ? round((degraded.at - downAt) / 1000) : null,
      spoolPeak: { segments: poller.peakSegments, bytes: poller.peakBytes }, replayTotal,
      drainS: done ? round((done.at - backAt) / 1000, 2) : null,
      memory, rssEvery10s: poller.rss, check, rejections, generatorLoopLagP99Ms: ld.loopLagP99Ms(), serverLog,
    };
    say(checkLine(check));
    return result;
  } finally {
    sampler?.finish();
    await poller?.stop();
    await load?.end().catch(() => undefined);
    if (server !== null) await ctx.stopUns(server).catch(() => undefined);
    await dropCluster(ctx, cluster);
  }
}

// --- spool drain -----------------------------------------------------------------------------------------------------

/** Topics of the spool-drain scenario; the messages take them in turn. */
const DRAIN_TOPICS = 20;

/**
 * Writes `segments` spool segments of one message each with the server's own Spool, decode and row code, as
 * the writer spools them during an outage (batchMaxItems 1). The messages' receive times are spread at
 * `rate` msgs/s ending now, as if spooled during an outage that just ended. fsync is skipped per segment
 * (the bytes are the same) and the file system synced once at the end.
 */
function writeSpool(dir: string, segments: number, rate: number, topicsFile: string, username: string): { sent: Map<string, number>; bytes: number } {
  const ns = loadTopics(topicsFile);
  const noFsync: SpoolFs = { ...realSpoolFs, fsyncSync: () => undefined };
  const spool = new Spool(dir, Number.MAX_SAFE_INTEGER, noFsync);
  const sent = new Map<string, number>();
  const t0 = Date.now() - (segments * 1000) / rate;
  for (let k = 0; k < segments; k++) {
    const topic = drainTopic(k % DRAIN_TOPICS);
    const seq = Math.floor(k / DRAIN_TOPICS);
    sent.set(topic, seq + 1);
    const receivedAt = Math.round(t0 + (k * 1000) / rate);
    const route = ns.matchRoute(topic);
    if (!route || route.encoding === 'sparkplugb') throw new Error(`${topic}: no value route in ${topicsFile}`);
    const levels = ns.checkLevels(topic);
    if ('reason' in levels) throw new Error(`${topic}: ${levels.reason}`);
    const record: InboundRecord = {
      topic, payload: Buffer.from(`{"value": ${seq}}`), receivedAt,
      source: { protocol: 'mqtt', clientId: `bench-spool-${k % DRAIN_TOPICS}`, username, packetId: (seq % 65_535) + 1, qos: 1, retain: false, dup: false, connection: 1 },
    };
    const decoded = decodeValuePayload(record.payload, route.encoding as ValueEncoding, { topic, receivedAt, unit: route.unit, limits: { maxBytes: 262_144, maxDepth: 32 } });
    if (isRejection(decoded)) throw new Error(`${topic}: ${decoded.reason}`);
    const msg: UnsMessage = {
      id: `bench-${k}`, topic, path: levels.path, encoding: route.encoding, route: route.name, points: decoded.points,
      source: record.source, receivedAt, store: route.store,
    };
    const key = redeliveryKey(record);
    spool.append([messageToItem(msg, record, key === null ? null : String(key))]);
  }
  try { execFileSync('sync', ['-f', dir], { stdio: 'ignore', timeout: 120_000 }); } catch { /* best effort: the data is in the page cache either way */ }
  return { sent, bytes: spool.bytes };
}

export async function spoolDrainScenario<S extends FaultServer>(ctx: FaultContext<S>, o: { segments: number; rate: number }): Promise<SpoolDrainResult> {
  const id = 'spool-drain';
  const say = (m: string): void => ctx.progress(`${id}: ${m}`);
  const cluster = await startCluster(ctx, id);
  let server: S | null = null;
  let serverLog: ServerLog | null = null;
  let poller: ReadyPoller | null = null;
  let sampler: MemorySampler | null = null;
  try {
    // The database exists (empty, not migrated: the server does that when it first reaches it), then goes away.
    const url = await cluster.createDatabase('bench_drain');
    await cluster.stop('fast');
    ctx.reg.pruneAdopted();

    const dataDir = ctx.tempDir('ub-');
    const spoolDir = join(dataDir, 'spool');
    say(`writing ${o.segments.toLocaleString('en-US')} spool segments (1 message each, ${DRAIN_TOPICS} topics) with the server's Spool`);
    const g0 = performance.now();
    const { sent, bytes } = writeSpool(spoolDir, o.segments, o.rate, ctx.topicsFile, ctx.admin.username);
    const generateS = round((performance.now() - g0) / 1000, 2);
    const onDisk = readdirSync(spoolDir).filter((n) => n.endsWith('.seg')).length;
    if (onDisk !== o.segments) throw new Error(`${onDisk} segments on disk, ${o.segments} written`);
    say(`${onDisk.toLocaleString('en-US')} segments, ${(bytes / 1048576).toFixed(1)} MB in ${generateS} s; starting uns-bridge with its database down`);

    const s0 = performance.now();
    server = await ctx.startUns(id, url, {}, { dataDir, untilAnswering: true });
    const srv = server;
    const serverStartS = round((performance.now() - s0) / 1000, 2);
    const first = await readReady(srv.httpPort);
    if (first === null || first.code !== 503) throw new Error(`/ready answered ${first?.code ?? 'nothing'} with the database down (503 expected)`);
    say(`server answering after ${serverStartS} s: /ready ${first.code}, ${first.state}, ${first.segments.toLocaleString('en-US')} segments`);

    sampler = new MemorySampler(srv.proc.pid, () => postmasterPid(join(cluster.dir, 'data')));
    sampler.start();
    const progress: Array<{ s: number; done: number; total: number; segments: number }> = [];
    let backAt = 0;
    let nextNote = 0;
    poller = new ReadyPoller(srv.httpPort, srv.proc.pid, (r) => {
      if (backAt === 0 || r.at < nextNote) return;
      nextNote += 10_000;
      const p = { s: Math.round((r.at - backAt) / 1000), done: r.replay?.done ?? 0, total: r.replay?.total ?? 0, segments: r.segments };
      progress.push(p);
      say(`+${p.s} s: /ready ${r.code}, replay ${r.replay ? `${p.done.toLocaleString('en-US')}/${p.total.toLocaleString('en-US')}` : '-'}, ` +
        `${r.segments.toLocaleString('en-US')} segments left; server RSS ${rssMb(srv.proc.pid)} MB`);
    });
    poller.start();
    say('starting PostgreSQL');
    await cluster.start();
    adoptPostmaster(ctx, cluster, id);
    backAt = Date.now();
    nextNote = backAt;
    poller.fast = true;
    const done = await poller.waitFor(drained, backAt, ctx.drainTimeoutS * 1000);
    await poller.stop();
    if (done === null) say(`NOT drained within ${ctx.drainTimeoutS} s`);
    const last = poller.seen[poller.seen.length - 1];
    if (done) progress.push({ s: round((done.at - backAt) / 1000), done: o.segments, total: o.segments, segments: done.segments });
    const replaySince = poller.seen.find((r) => r.replay !== null)?.replay?.since ?? null;

    const c = await checkStore(url, sent, new Map([...sent].map(([t, n]) => [t, Array.from({ length: n }, (_, i) => i)])));
    const memory = sampler.finish();
    serverLog = await ctx.stopUns(srv);
    server = null;
    const drainS = done ? round((done.at - backAt) / 1000, 2) : null;
    const { rejections, spoolApplied, ...check } = c;
    const result: SpoolDrainResult = {
      id, segments: o.segments, messages: o.segments, topics: DRAIN_TOPICS, spoolBytes: bytes, generateS, serverStartS,
      segmentsSeenAtStart: first.segments,
      replayStartS: replaySince === null ? null : round((replaySince - backAt) / 1000, 2),
      replayS: replaySince === null || done === null ? null : round((done.at - replaySince) / 1000, 2),
      drainS, segmentsPerS: drainS ? Math.round(o.segments / drainS) : null, progress,
      memory, rssEvery10s: poller.rss, check, spoolApplied, corrupt: last?.corrupt ?? 0, rejections, serverLog,
    };
    say(checkLine(check));
    return result;
  } finally {
    sampler?.finish();
    await poller?.stop();
    if (server !== null) await ctx.stopUns(server).catch(() => undefined);
    await dropCluster(ctx, cluster);
  }
}

// --- report -------------------------------------------------------------------------------------------------------

const int = (n: number): string => Math.round(n).toLocaleString('en-US');
const ms = (n: number | null): string => (n === null ? '-' : n >= 100 ? int(n) : n.toFixed(2));
const p5099 = (l: LatencySummary): string => `${ms(l.p50)} / ${ms(l.p99)}`;
const mb = (bytes: number): string => (bytes / 1048576).toFixed(1);

function checkLine(c: ExactlyOnce): string {
  return `${c.ok ? 'OK' : 'FAIL'}: acknowledged ${int(c.acknowledged)}, stored ${int(c.stored)}, missing ${int(c.missing)}, duplicates ${int(c.duplicates)}` +
    `${c.storedNotAcked > 0 ? ` (stored but never acknowledged: ${int(c.storedNotAcked)})` : ''}${c.unexpected > 0 ? `, values never sent: ${int(c.unexpected)}` : ''}`;
}

function twoColumns(title: string, rows: ReadonlyArray<readonly [string, string]>): string {
  const w = Math.max(title.length, ...rows.map(([k]) => k.length));
  return [title, '-'.repeat(w), ...rows.map(([k, v]) => `${k.padEnd(w)}  ${v}`)].join('\n');
}

const rssSeries = (pts: readonly RssPoint[]): string => pts.map((p) => `${p.s}s ${p.mb.toFixed(0)}`).join(', ');

function serverNote(l: ServerLog | null): string[] {
  return l ? [`  server: ${l.warnings} warnings, ${l.errors} errors, ${l.exit}${l.samples.length ? `; e.g. ${l.samples.join(' | ')}` : ''} (${l.file})`] : [];
}

/** The fault scenarios' tables and notes, printed after the other tables. */
export function faultReport(results: readonly FaultResult[]): string[] {
  const out: string[] = [];
  for (const r of results) {
    out.push('');
    if (r.id === 'outage') {
      out.push(twoColumns(`outage: PostgreSQL stopped for ${r.outageS} s under load`, [
        ['offered rate', `${int(r.rate)} msgs/s (${r.publishers} publishers, QoS 1, one topic each)`],
        ['acked msgs/s before / during / after', `${int(r.ackedPerS.before)} / ${int(r.ackedPerS.during)} / ${int(r.ackedPerS.after)}` +
          `  (phases ${r.phaseS.before} / ${r.phaseS.during} / ${r.phaseS.after} s)`],
        ['PUBACK p50 / p99 ms during the outage', p5099(r.puback.during)],
        ['PUBACK p50 / p99 ms before / after', `${p5099(r.puback.before)}  |  ${p5099(r.puback.after)}`],
        ['PUBACK max ms during the outage', ms(r.puback.during.max)],
        ['degraded on /ready after', r.degradedAfterS === null ? 'never seen' : `${r.degradedAfterS} s`],
        ['spool peak', `${int(r.spoolPeak.segments)} segments, ${mb(r.spoolPeak.bytes)} MB${r.replayTotal !== null ? ` (replay of ${int(r.replayTotal)} segments)` : ''}`],
        ['drain (PostgreSQL back -> /ready 200)', r.drainS === null ? 'NOT DRAINED' : `${r.drainS} s`],
        ['server peak RSS', `${Math.max(r.memory.serverPeakRssMb, r.memory.serverHwmMb).toFixed(0)} MB`],
        ['check', checkLine(r.check)],
      ]));
      out.push(`outage: sent ${int(r.sent)}, acked ${int(r.acked)}, unacked at end ${int(r.unackedAtEnd)}, left unsent ${int(r.backlogUnsent)}, ` +
        `waited for a window slot ${int(r.deferred)}; rejections ${int(r.rejections)}; connections dropped ${r.connectionErrors.length}` +
        `${r.connectionErrors.length ? ` (${r.connectionErrors.slice(0, 3).join('; ')})` : ''}; generator (in the bench process) loop lag p99 ${r.generatorLoopLagP99Ms} ms`);
      out.push(`  server RSS MB every 10 s: ${rssSeries(r.rssEvery10s)}`);
      out.push(...serverNote(r.serverLog));
    } else {
      const rate = (a: { s: number; done: number }, b: { s: number; done: number }): string => (b.s > a.s ? int((b.done - a.done) / (b.s - a.s)) : '-');
      out.push(twoColumns(`spool-drain: replay of ${int(r.segments)} spool segments`, [
        ['spool', `${int(r.segments)} segments (1 message each, ${r.topics} topics), ${mb(r.spoolBytes)} MB; written in ${r.generateS} s`],
        ['server start, database down', `${r.serverStartS} s; /ready 503 with ${int(r.segmentsSeenAtStart)} segments`],
        ['PostgreSQL back -> replay start', r.replayStartS === null ? '-' : `${r.replayStartS} s`],
        ['replay', r.replayS === null ? '-' : `${r.replayS} s`],
        ['drain (PostgreSQL back -> /ready 200)', r.drainS === null ? 'NOT DRAINED' : `${r.drainS} s, ${int(r.segmentsPerS ?? 0)} segments/s`],
        ['server peak RSS', `${Math.max(r.memory.serverPeakRssMb, r.memory.serverHwmMb).toFixed(0)} MB`],
        ['check', `${checkLine(r.check)}; spool_applied ${int(r.spoolApplied)}; corrupt ${r.corrupt}`],
      ]));
      out.push(`spool-drain: replay done/total every 10 s (segments/s in the interval): ${r.progress.map((p, i) => {
        const prev = i > 0 ? r.progress[i - 1] : undefined;
        return `${p.s}s ${int(p.done)}/${int(p.total)}${prev ? ` (${rate(prev, p)}/s)` : ''}`;
      }).join(', ')}`);
      out.push(`  server RSS MB every 10 s: ${rssSeries(r.rssEvery10s)}`);
      out.push(...serverNote(r.serverLog));
    }
  }
  return out;
}

/** What makes a fault scenario fail: lost or doubled messages, no drain, dropped connections, an unclean stop. */
export function faultProblems(results: readonly FaultResult[]): string[] {
  return results.flatMap((r) => {
    const p: string[] = [];
    if (!r.check.ok) p.push(`${r.id}: exactly-once check ${checkLine(r.check)}`);
    if (r.drainS === null) p.push(`${r.id}: the spool was not drained (/ready not 200) within the time limit`);
    if (r.rejections > 0) p.push(`${r.id}: ${r.rejections} messages rejected`);
    if (r.id === 'outage') {
      if (r.unackedAtEnd > 0) p.push(`${r.id}: ${r.unackedAtEnd} publishes never acknowledged`);
      if (r.connectionErrors.length > 0) p.push(`${r.id}: ${r.connectionErrors.length} connections dropped`);
    } else if (r.check.acknowledged !== r.messages) {
      p.push(`${r.id}: ${r.check.acknowledged} messages checked, ${r.messages} written`);
    }
    if (r.serverLog && !r.serverLog.clean) p.push(`${r.id}: server ${r.serverLog.exit}`);
    return p;
  });
}
