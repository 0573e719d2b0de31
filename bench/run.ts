/**
 * `npm run bench`: all scenarios in one run, so their ratios are comparable on a shared machine.
 *
 *   1. bare-aedes     Aedes with no auth, hooks or store: the ceiling
 *   2. uns-pg         uns-bridge on a throwaway Debian PostgreSQL cluster (TimescaleDB when installed)
 *   3. uns-embedded   uns-bridge with no database URL: its embedded PostgreSQL
 *   3b. sparkplug     uns-bridge (embedded store) as a Sparkplug host: BENCH_SP_NODES edge nodes (100) x
 *                     BENCH_SP_DEVICES devices (10) x BENCH_SP_METRICS Double metrics (50), births then DDATA by
 *                     alias: metrics/s decoded and stored, and their ratio to uns-embedded's JSON msgs/s
 *   3c. external      external-broker mode: Debian's Mosquitto (started here) takes the load; uns-bridge (embedded
 *                     store) ingests through a shared subscription and acknowledges to Mosquitto after commit:
 *                     persisted msgs/s, and every message Mosquitto acknowledged stored once after the drain
 *   4. uns-pg-rate    uns-bridge + PostgreSQL at a steady BENCH_RATE msgs/s (default 10,000)
 *   4b. soak          uns-bridge (embedded store) at BENCH_RATE for BENCH_SOAK_SECONDS (600): the server's RSS every
 *                     30 s, and its growth from the 30 s mark to the end (not in the default run: ask for it)
 *   5. ws-fanout      as uns-pg-rate (no MQTT subscriber), plus BENCH_WS_CLIENTS WebSocket stream clients
 *                     (ws-load.ts, its own process) on acme/#, acme/<site>/# and acme/<site>/<area>/#:
 *                     delivered datapoints/s, publish -> WebSocket latency, gap notices
 *   6. read-ts        the read API on a seeded ~10M-row store (seed-store.ts) on the TimescaleDB cluster:
 *                     1-day history of a 1 Hz topic in 1-minute buckets (p50/p99 over BENCH_QUERY_RUNS),
 *                     then a CSV export of BENCH_EXPORT_HOURS of every topic (rows/s, server RSS)
 *   7. read-pg        the same on a second, plain PostgreSQL cluster (no TimescaleDB preloaded)
 *   8. outage         uns-bridge on its own PostgreSQL cluster under a paced QoS 1 load of BENCH_OUTAGE_RATE msgs/s
 *                     (faults.ts); PostgreSQL stopped for BENCH_OUTAGE_SECONDS, then started: acked msgs/s and
 *                     PUBACK latency before/during/after, spool peak, drain time to /ready 200, server RSS, and
 *                     every acknowledged message stored exactly once
 *   9. spool-drain    BENCH_SPOOL_SEGMENTS one-message spool segments (written with the server's Spool class) in
 *                     a server started with its database down; the database started: replay segments/s and
 *                     progress, drain time to /ready 200, server RSS, stored exactly once
 *   4c. cluster       two uns-bridge instances in cluster mode on the uns-pg cluster and a throwaway redis-server:
 *                     publishers split over both, the subscriber on the second; Redis commands per message
 *   9b. sessions      BENCH_SESSIONS persistent MQTT sessions (10,000) x BENCH_SESSION_QUEUED queued messages (100)
 *                     written into the session tables of a throwaway cluster: start-to-ready time and RSS against
 *                     a start with none, then BENCH_SESSION_DRAIN (100) of them reconnect and receive their queues
 *  10. bare-aedes-end the reference again: the machine is shared, so the ceiling is bracketed and the
 *                     ratios use the mean of both bare runs
 *
 * Servers and the load generator are separate processes (outage's small sequence load runs in this one, as it
 * must remember every acknowledged message); everything listens on 127.0.0.1 only. Every
 * process started here is ended by PID when the run ends, also on failure. The table goes to stdout, its
 * JSON to a file under the OS temp dir and, as the last line, to stdout; progress goes to stderr.
 *
 * Environment: BENCH_SECONDS (20), BENCH_WARMUP (3), BENCH_PUBLISHERS (200), BENCH_WINDOW (20),
 * BENCH_TOPICS_PER_PUBLISHER (8), BENCH_RATE (10000), BENCH_SCENARIOS (comma list of the ids above),
 * BENCH_SUBSCRIBE (1; 0 = no subscriber on acme/#: Aedes' fan-out to it otherwise bounds every scenario),
 * BENCH_SUBSCRIBERS (1: how many; the first on acme/#, the others on overlapping site and area filters),
 * BENCH_WS_CLIENTS (100), BENCH_STORE_DAYS (7: ~1.47M rows a day), BENCH_QUERY_RUNS (20), BENCH_EXPORT_HOURS (48),
 * BENCH_OUTAGE_RATE (3000), BENCH_OUTAGE_SECONDS (60), BENCH_SPOOL_SEGMENTS (100000), BENCH_DRAIN_TIMEOUT (360: seconds
 * outage and spool-drain wait for /ready 200 once PostgreSQL is back; replay runs at a few hundred segments/s),
 * BENCH_SERVER_NODE_ARGS (node options of the servers measured, bare Aedes included, space-separated: `--cpu-prof --cpu-prof-dir=DIR`
 * writes a profile of each server when it stops).
 */
import { mkdtempSync, chmodSync, rmSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import pg from 'pg';
import { TestPostgres, freePort } from '../test/helpers/postgres.js';
import { TestMosquitto } from '../test/helpers/mosquitto.js';
import { TestRedis } from '../test/helpers/redis.js';
import { Redis } from 'ioredis';
import {
  ProcessRegistry, MemorySampler, RssTrace, statusKb, postmasterPid, processTree, cpuSeconds, machineProcessSeconds, treeCpuSeconds,
  type Tracked,
} from './procs.js';
import type { LoadConfig, LoadResult } from './load.js';
import type { WsLoadConfig, WsLoadResult } from './ws-load.js';
import { ALL_AREAS, SITES, filterCoversArea } from './topics.js';
import { seedStore } from './seed-store.js';
import { compareBuckets, login, streamExport, timeHistory, type Bucket, type ExportTiming } from './read-api.js';
import { TARGETS, type StoreFigures, type ScenarioResult, type WsFigures, type ReadResult, type ServerLog, isBare, table, int, verdict, wsTable, wsNotes, readTable, readNotes, notes } from './report.js';
import { sessionsScenario, sessionsReport, sessionsProblems, type SessionsResult } from './sessions.js';
import { destroyFaultClusters, faultProblems, faultReport, outageScenario, spoolDrainScenario, type FaultContext, type FaultResult } from './faults.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const DIST_BENCH = join(ROOT, 'dist', 'bench');
const ADMIN = { username: 'admin', password: 'bench-admin-password' };

const SCENARIOS = ['bare-aedes', 'uns-pg', 'uns-embedded', 'sparkplug', 'external', 'uns-pg-rate', 'soak', 'ws-fanout', 'read-ts', 'read-pg', 'outage', 'spool-drain', 'sessions', 'cluster', 'bare-aedes-end'] as const;
export type ScenarioId = (typeof SCENARIOS)[number];
export type ReadId = 'read-ts' | 'read-pg';

function intEnv(name: string, dflt: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new Error(`${name}=${raw}: must be an integer >= ${min}`);
  return n;
}

const settings = {
  seconds: intEnv('BENCH_SECONDS', 20, 1),
  warmupS: intEnv('BENCH_WARMUP', 3, 0),
  publishers: intEnv('BENCH_PUBLISHERS', 200, 1),
  window: intEnv('BENCH_WINDOW', 20, 1),
  topicsPerPublisher: intEnv('BENCH_TOPICS_PER_PUBLISHER', 8, 1),
  rate: intEnv('BENCH_RATE', 10_000, 1),
  subscribe: intEnv('BENCH_SUBSCRIBE', 1, 0) !== 0,
  subscribers: intEnv('BENCH_SUBSCRIBERS', 1, 1),
  wsClients: intEnv('BENCH_WS_CLIENTS', 100, 1),
  storeDays: intEnv('BENCH_STORE_DAYS', 7, 1),
  queryRuns: intEnv('BENCH_QUERY_RUNS', 20, 1),
  exportHours: intEnv('BENCH_EXPORT_HOURS', 48, 1),
  outageRate: intEnv('BENCH_OUTAGE_RATE', 3_000, 1),
  outageSeconds: intEnv('BENCH_OUTAGE_SECONDS', 60, 1),
  spoolSegments: intEnv('BENCH_SPOOL_SEGMENTS', 100_000, 1),
  drainTimeoutS: intEnv('BENCH_DRAIN_TIMEOUT', 360, 10),
  sessions: intEnv('BENCH_SESSIONS', 10_000, 1),
  sessionQueued: intEnv('BENCH_SESSION_QUEUED', 100, 1),
  sessionDrain: intEnv('BENCH_SESSION_DRAIN', 100, 1),
  spNodes: intEnv('BENCH_SP_NODES', 100, 1),
  spDevices: intEnv('BENCH_SP_DEVICES', 10, 1),
  spMetrics: intEnv('BENCH_SP_METRICS', 50, 1),
  /** Node options of the servers measured (uns-bridge and bare Aedes), e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`. */
  serverNodeArgs: (process.env['BENCH_SERVER_NODE_ARGS'] ?? '').split(' ').filter(Boolean),
  scenarios: new Set<ScenarioId>(
    (process.env['BENCH_SCENARIOS'] ?? SCENARIOS.filter((id) => id !== 'soak').join(',')).split(',').map((s) => s.trim()).filter(Boolean).map((s) => {
      if (!(SCENARIOS as readonly string[]).includes(s)) throw new Error(`BENCH_SCENARIOS: unknown scenario '${s}' (known: ${SCENARIOS.join(', ')})`);
      return s as ScenarioId;
    }),
  ),
};

const progress = (msg: string): void => { process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`); };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const reg = new ProcessRegistry();
/** Set on SIGINT/SIGTERM: no further scenario starts. */
let exiting = false;
const tempDirs: string[] = [];
let testPg: TestPostgres | null = null;
/** The second cluster of read-pg: no TimescaleDB preloaded. */
let plainPg: TestPostgres | null = null;
/**
 * Where the seeded data of the read scenarios ends (a whole minute, fixed at the first of them), so both
 * stores hold the same rows and answer the same queries; and the history answers, to compare them.
 */
let readAnchorMs: number | null = null;
const historyAnswers = new Map<ReadId, Bucket[]>();

function tempDir(prefix: string): string {
  // Short paths: the embedded PostgreSQL's unix socket lives under <dataDir>/pg/run (paths are capped near 107 bytes).
  const d = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(d, 0o755); // the embedded PostgreSQL runs as `nobody` when we are root
  tempDirs.push(d);
  return d;
}

async function withClient<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try { return await fn(c); } finally { await c.end().catch(() => undefined); }
}

async function countRows(c: pg.Client): Promise<{ samples: number; rejections: number; at: number }> {
  const at = performance.now(); // the query's snapshot is taken as it starts
  const r = await c.query<{ s: string; r: string }>('SELECT (SELECT count(*) FROM samples) AS s, (SELECT count(*) FROM rejections) AS r');
  const row = r.rows[0];
  return { samples: Number(row?.s ?? 0), rejections: Number(row?.r ?? 0), at };
}

async function describeStore(url: string, timescale: boolean): Promise<string> {
  return withClient(url, async (c) => {
    const v = (await c.query<{ v: string }>("SELECT current_setting('server_version') AS v")).rows[0]?.v ?? '?';
    const ts = (await c.query<{ v: string }>("SELECT extversion AS v FROM pg_extension WHERE extname = 'timescaledb'")).rows[0]?.v;
    return `PostgreSQL ${v.split(' ')[0]}${timescale && ts ? ` + TimescaleDB ${ts} (samples is a hypertable)` : ' (plain tables, no TimescaleDB)'}`;
  });
}

// --- servers ----------------------------------------------------------------------------------------------

interface UnsServer {
  readonly proc: Tracked;
  readonly mqttPort: number;
  readonly httpPort: number;
  readonly dataDir: string;
  readonly logFile: string;
  readonly timescale: boolean;
}

function logTail(file: string, lines = 8): string {
  try { return readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join('\n'); } catch { return '(no output)'; }
}

/**
 * `opts.dataDir`: a data folder prepared by the caller (e.g. a spool to replay); `opts.untilAnswering`: return
 * as soon as /ready answers at all (a server started with its database down answers 503 until it is back).
 */
async function startUns(name: string, databaseUrl: string | null, extraEnv: Readonly<Record<string, string>> = {},
  opts: { readonly dataDir?: string; readonly untilAnswering?: boolean } = {}): Promise<UnsServer> {
  const dataDir = opts.dataDir ?? tempDir('ub-');
  const logFile = join(tmpdir(), `uns-bench-${name}-${process.pid}.log`);
  const mqttPort = await freePort();
  const httpPort = await freePort();
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('UNS_') && k !== 'DATABASE_URL') env[k] = v;
  Object.assign(env, {
    UNS_MQTT_HOST: '127.0.0.1', UNS_MQTT_PORT: String(mqttPort), UNS_HTTP_HOST: '127.0.0.1', UNS_HTTP_PORT: String(httpPort),
    UNS_DATA_DIR: dataDir, UNS_TOPICS: join(ROOT, 'topics.yaml'), UNS_ADMIN_USER: ADMIN.username, UNS_ADMIN_PASSWORD: ADMIN.password,
    UNS_LOG_LEVEL: 'warn',
  }, extraEnv);
  if (databaseUrl !== null) env['UNS_DATABASE_URL'] = databaseUrl;
  // pino writes to stdout: both streams go to the log file.
  const proc = reg.spawnNode(name, [...settings.serverNodeArgs, join(ROOT, 'dist', 'src', 'cli.js'), 'start'], { env, cwd: ROOT, logTo: logFile, stdoutToLog: true });
  // The embedded PostgreSQL is the server's child; record it so it is ended even if the server is not.
  const adoptPg = setInterval(() => {
    const pid = postmasterPid(join(dataDir, 'pg'));
    if (pid !== null) { reg.adopt(pid, `${name} embedded postgres`, 'SIGINT'); clearInterval(adoptPg); }
  }, 250);
  try {
    const deadline = Date.now() + 90_000;
    for (;;) {
      if (proc.child.exitCode !== null || proc.child.signalCode !== null) {
        throw new Error(`${name} exited during start-up (${proc.child.exitCode ?? proc.child.signalCode}):\n${logTail(logFile)}`);
      }
      if (Date.now() > deadline) throw new Error(`${name} not ready after 90 s:\n${logTail(logFile)}`);
      try {
        const res = await fetch(`http://127.0.0.1:${httpPort}/ready`);
        const body = (await res.json()) as { checks?: { database?: { timescale?: boolean } } };
        if (res.status === 200 || (opts.untilAnswering && res.status === 503)) {
          if (databaseUrl !== null) clearInterval(adoptPg);
          return { proc, mqttPort, httpPort, dataDir, logFile, timescale: body.checks?.database?.timescale === true };
        }
      } catch { /* not listening yet */ }
      await sleep(200);
    }
  } catch (e) {
    clearInterval(adoptPg);
    // A server that fails to start may leave its embedded PostgreSQL behind: end it by its PID.
    await reg.stop(proc.pid, 'SIGTERM', 5_000);
    const pgPid = postmasterPid(join(dataDir, 'pg'));
    if (pgPid !== null) { progress(`${name}: embedded postgres ${pgPid} left behind by the failed start: stopping it`); await reg.stop(pgPid, 'SIGINT'); }
    throw e;
  }
}

async function stopUns(s: UnsServer): Promise<ServerLog> {
  const outcome = await reg.stop(s.proc.pid, 'SIGTERM', 20_000);
  const { code, signal } = await s.proc.exited;
  // If the server could not stop its embedded PostgreSQL, do it here (by the PID in its pid file).
  const pgPid = postmasterPid(join(s.dataDir, 'pg'));
  if (pgPid !== null) { progress(`embedded postgres ${pgPid} outlived its server: stopping it`); await reg.stop(pgPid, 'SIGINT'); }
  reg.pruneAdopted();
  const exit = outcome === 'gone' ? `EXITED BY ITSELF before SIGTERM (${code ?? signal})`
    : outcome === 'killed' ? 'did not stop within 20 s: SIGKILL' : `exit code ${code ?? signal} after SIGTERM`;
  return { ...summariseLog(s.logFile), exit, clean: outcome === 'exited' && code === 0 };
}

function summariseLog(file: string): Omit<ServerLog, 'exit' | 'clean'> {
  let warnings = 0;
  let errors = 0;
  const samples: string[] = [];
  let text = '';
  try { text = readFileSync(file, 'utf8'); } catch { /* no log */ }
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    let level = 50;
    let msg = line;
    try {
      const j = JSON.parse(line) as { level?: number; msg?: string; err?: unknown };
      level = j.level ?? 50;
      msg = `${j.msg ?? ''}${j.err !== undefined ? ` (${JSON.stringify(j.err)})` : ''}`;
    } catch { /* not pino: count as an error line */ }
    if (level >= 50) errors++; else if (level >= 40) warnings++;
    if (level >= 40 && samples.length < 6 && !samples.includes(msg)) samples.push(msg.slice(0, 300));
  }
  return { file, warnings, errors, samples };
}

// --- one scenario -------------------------------------------------------------------------------------------

interface ScenarioTarget {
  readonly id: ScenarioId;
  readonly name: string;
  readonly port: number;
  readonly serverPid: number;
  readonly pgRoot: () => number | null;
  readonly dbUrl: string | null;
  readonly store: string | null;
  readonly rate: number;
  readonly auth: boolean;
  /** Overrides of the load generator's configuration (ws-fanout, sparkplug). */
  readonly load?: Partial<LoadConfig>;
  /** Sample rows each acknowledged publish stores (1; a Sparkplug payload one per metric). */
  readonly rowsPerMessage?: number;
  /**
   * The load's acknowledgements come from another broker, before the store has the message (external mode):
   * after the load, wait this long at most for the store to catch up before counting what is missing.
   */
  readonly settleMs?: number;
  /** Every event line of the load generator (measure-start/-end carry the payload clock's epoch), with the server's PID. */
  readonly onEvent?: (ev: { readonly event?: string; readonly epoch?: number }, serverPid: number) => void;
}

interface Snapshot {
  readonly rows: Awaited<ReturnType<typeof countRows>> | null;
  readonly cpu: { readonly server: number; readonly pg: number | null };
  readonly wall: number;
}

async function runLoad(t: ScenarioTarget): Promise<Omit<ScenarioResult, 'serverLog'>> {
  const cfg: LoadConfig = {
    label: t.id, host: '127.0.0.1', port: t.port,
    ...(t.auth ? { username: ADMIN.username, password: ADMIN.password } : {}),
    publishers: settings.publishers, window: settings.window, topicsPerPublisher: settings.topicsPerPublisher,
    warmupS: settings.warmupS, seconds: settings.seconds, rate: t.rate, subscribe: settings.subscribe, subscribers: settings.subscribers, drainTimeoutS: 15,
    ...t.load,
  };
  const sampler = new MemorySampler(t.serverPid, t.pgRoot);
  sampler.start();
  const db = t.dbUrl === null ? null : new pg.Client({ connectionString: t.dbUrl });
  await db?.connect();
  try {
    const before = db ? await countRows(db) : null;
    const snaps: { start?: Snapshot; end?: Snapshot } = {};
    const hooks: Promise<void>[] = [];
    const snapshot = async (): Promise<Snapshot> => {
      const root = t.pgRoot();
      const cpu = { server: cpuSeconds([t.serverPid]), pg: root === null ? null : cpuSeconds(processTree(root)) };
      const wall = performance.now();
      return { rows: db ? await countRows(db) : null, cpu, wall };
    };

    const loadLog = join(tmpdir(), `uns-bench-load-${t.id}-${process.pid}.log`);
    const proc = reg.spawnNode(`load ${t.id}`, [join(DIST_BENCH, 'load.js'), JSON.stringify(cfg)], { logTo: loadLog });
    let result: LoadResult | null = null;
    const lines = createInterface({ input: proc.child.stdout! });
    lines.on('line', (line) => {
      let ev: { event?: string; epoch?: number };
      try { ev = JSON.parse(line) as { event?: string; epoch?: number }; } catch { return; }
      t.onEvent?.(ev, t.serverPid);
      if (ev.event === 'connected') progress(`${t.id}: ${cfg.publishers} publishers${cfg.subscribe ? ` + ${cfg.subscribers ?? 1} subscriber(s)` : ''} connected; warm-up ${cfg.warmupS} s, then ${cfg.seconds} s measured`);
      if (ev.event === 'measure-start') hooks.push(snapshot().then((s) => { snaps.start = s; }));
      if (ev.event === 'measure-end') hooks.push(snapshot().then((s) => { snaps.end = s; }));
      if (ev.event === 'result') result = ev as LoadResult;
    });
    const limitMs = (settings.warmupS + (t.load?.seconds ?? settings.seconds) + 60) * 1000;
    const killer = setTimeout(() => { progress(`${t.id}: load generator over its time limit: stopping it`); void reg.stop(proc.pid); }, limitMs);
    const { code, signal } = await proc.exited;
    clearTimeout(killer);
    await Promise.all(hooks);
    if (result === null) throw new Error(`load generator for ${t.id} failed (${code ?? signal}):\n${logTail(loadLog)}`);
    const load: LoadResult = result;
    const memory = sampler.finish();

    let persisted: StoreFigures | null = null;
    if (db && before) {
      const want = before.samples + load.totalAcked * (t.rowsPerMessage ?? 1);
      const settleUntil = Date.now() + (t.settleMs ?? 0);
      while (Date.now() < settleUntil && (await countRows(db)).samples < want) await sleep(200);
      const after = await countRows(db);
      const { start: s, end: e } = snaps;
      const windowRows = s?.rows && e?.rows ? e.rows.samples - s.rows.samples : 0;
      const windowS = s?.rows && e?.rows ? (e.rows.at - s.rows.at) / 1000 : load.measuredS;
      const rowsAdded = after.samples - before.samples;
      const ackedRows = load.totalAcked * (t.rowsPerMessage ?? 1);
      persisted = {
        windowRows, windowS: Math.round(windowS * 1000) / 1000, perS: Math.round(windowRows / windowS), rowsAdded,
        lost: Math.max(0, ackedRows - rowsAdded), unackedButStored: Math.max(0, rowsAdded - ackedRows),
        rejections: after.rejections - before.rejections,
      };
    }
    const { start: s, end: e } = snaps;
    const wallS = s && e ? (e.wall - s.wall) / 1000 : load.measuredS;
    const cpu = {
      serverPct: s && e ? Math.round(((e.cpu.server - s.cpu.server) / wallS) * 1000) / 10 : 0,
      pgPct: s && e && s.cpu.pg !== null && e.cpu.pg !== null ? Math.round(((e.cpu.pg - s.cpu.pg) / wallS) * 1000) / 10 : null,
    };
    return { id: t.id, name: t.name, store: t.store, load, persisted, memory, cpu };
  } finally {
    sampler.finish();
    await db?.end().catch(() => undefined);
  }
}

/**
 * uns-bridge as a server process under the load generator. `extra.env`: more of its environment; `extra.port`:
 * where the load goes instead of its MQTT port (external mode: the broker it is attached to).
 */
async function unsScenario(id: ScenarioId, name: string, databaseUrl: string | null, rate: number,
  extra: Pick<ScenarioTarget, 'load' | 'rowsPerMessage' | 'settleMs' | 'onEvent'> & { readonly env?: Readonly<Record<string, string>>; readonly port?: number } = {}): Promise<ScenarioResult> {
  progress(`${id}: starting uns-bridge (${databaseUrl === null ? 'embedded PostgreSQL' : 'external PostgreSQL'})`);
  const { env, port, ...target } = extra;
  const server = await startUns(id, databaseUrl, env);
  let serverLog: ServerLog | null = null;
  try {
    const pgDir = join(server.dataDir, 'pg');
    const dbUrl = databaseUrl ?? `postgresql://uns@/postgres?host=${encodeURIComponent(join(pgDir, 'run'))}`;
    const store = await describeStore(dbUrl, server.timescale);
    progress(`${id}: ready (store: ${databaseUrl === null ? 'embedded ' : ''}${store})`);
    const r = await runLoad({
      id, name, port: port ?? server.mqttPort, serverPid: server.proc.pid, dbUrl, rate, auth: port === undefined, ...target,
      store: `${databaseUrl === null ? 'embedded ' : ''}${store}${port === undefined ? '' : ', via the broker it is attached to'}`,
      pgRoot: () => (databaseUrl === null ? postmasterPid(pgDir) : testPg ? postmasterPid(join(testPg.dir, 'data')) : null),
    });
    serverLog = await stopUns(server);
    return { ...r, serverLog };
  } finally {
    if (serverLog === null) await stopUns(server).catch(() => undefined);
  }
}

/** A long paced run on the embedded store, the server's RSS read every 30 s. */
async function soakScenario(): Promise<ScenarioResult> {
  const seconds = Number(process.env['BENCH_SOAK_SECONDS'] ?? 600);
  const trace: number[] = [];
  let timer: NodeJS.Timeout | null = null;
  let t0 = 0;
  const read = (pid: number): void => {
    const mb = Math.round(statusKb(pid, 'VmRSS') / 1024);
    if (trace.length === 0) t0 = performance.now();
    trace.push(mb);
    progress(`soak: ${Math.round((performance.now() - t0) / 1000)} s, server RSS ${mb} MB`);
  };
  try {
    const r = await unsScenario('soak', `uns-bridge + embedded store at ${settings.rate}/s for ${seconds} s`, null, settings.rate, {
      load: { seconds },
      onEvent: (ev, pid) => {
        if (ev.event === 'measure-start') { read(pid); timer = setInterval(() => read(pid), 30_000); }
        if (ev.event === 'measure-end' && timer) { clearInterval(timer); timer = null; read(pid); }
      },
    });
    return { ...r, rssEvery30s: trace };
  } finally {
    if (timer) clearInterval(timer);
  }
}

/**
 * Cluster mode: two instances on one database and a throwaway redis-server; publishers split over both,
 * the subscriber on the second. Redis' commands and CPU over the run say what the cluster costs.
 */
async function clusterScenario(databaseUrl: string): Promise<ScenarioResult> {
  const redis = new TestRedis();
  await redis.start();
  const r = new Redis(redis.url);
  try {
    const env = { UNS_CLUSTER: redis.url };
    const a = await startUns('cluster-a', databaseUrl, env);
    const b = await startUns('cluster-b', databaseUrl, env).catch(async (e: Error) => { await stopUns(a); throw e; });
    const logs: ServerLog[] = [];
    try {
      const peers = async (port: number): Promise<number> => ((await (await fetch(`http://127.0.0.1:${port}/ready`)).json()) as { checks: { cluster?: { peers: unknown[] } } }).checks.cluster?.peers.length ?? 0;
      const until = Date.now() + 15_000;
      while ((await peers(a.httpPort)) < 1 || (await peers(b.httpPort)) < 1) {
        if (Date.now() > until) throw new Error('the two instances did not hear each other within 15 s');
        await sleep(200);
      }
      const stat = async (): Promise<{ commands: number; publishes: number; cpu: number }> => {
        const info = await r.info('all');
        const num = (k: string): number => Number(new RegExp(`^${k}:([0-9.]+)`, 'm').exec(info)?.[1] ?? 0);
        const pubs = /^cmdstat_publish:calls=(\d+)/m.exec(info);
        return { commands: num('total_commands_processed'), publishes: pubs ? Number(pubs[1]) : 0, cpu: num('used_cpu_sys') + num('used_cpu_user') };
      };
      const before = await stat();
      const t0 = performance.now();
      const res = await runLoad({
        id: 'cluster', name: 'uns-bridge x2 + Redis (cluster mode)', port: a.mqttPort, serverPid: a.proc.pid, dbUrl: databaseUrl, rate: 0, auth: true,
        load: { publisherPorts: [a.mqttPort, b.mqttPort], subscriberPort: b.mqttPort },
        store: `${await describeStore(databaseUrl, a.timescale)}, shared by both instances`,
        pgRoot: () => (testPg ? postmasterPid(join(testPg.dir, 'data')) : null),
      });
      const after = await stat();
      const wallS = (performance.now() - t0) / 1000;
      const secondRssMb = Math.round(statusKb(b.proc.pid, 'VmRSS') / 102.4) / 10;
      logs.push(await stopUns(b), await stopUns(a));
      const serverLog = logs.every((l) => l.clean) ? logs[1]! : logs.find((l) => !l.clean)!;
      return {
        ...res, serverLog,
        cluster: {
          redisCommands: after.commands - before.commands, redisPublishes: after.publishes - before.publishes,
          redisCpuPct: Math.round(((after.cpu - before.cpu) / wallS) * 1000) / 10, secondRssMb,
        },
      };
    } finally {
      if (logs.length === 0) { await stopUns(b).catch(() => undefined); await stopUns(a).catch(() => undefined); }
    }
  } finally {
    r.disconnect();
    await redis.destroy();
  }
}

/** External-broker mode: the load goes to Mosquitto; uns-bridge (embedded store) ingests from it. */
async function externalScenario(): Promise<ScenarioResult> {
  const mosq = new TestMosquitto();
  await mosq.start();
  progress(`external: Mosquitto on ${mosq.url}`);
  try {
    return await unsScenario('external', 'uns-bridge attached to Mosquitto', null, 0, {
      env: { UNS_BROKER_URL: mosq.url }, port: mosq.port, settleMs: 120_000,
    });
  } finally {
    await mosq.destroy();
  }
}

async function bareScenario(id: 'bare-aedes' | 'bare-aedes-end'): Promise<ScenarioResult> {
  progress(`${id}: starting the reference broker`);
  const proc = reg.spawnNode('bare-aedes', [...settings.serverNodeArgs, join(DIST_BENCH, 'bare-aedes.js'), '0']);
  try {
    const port = await new Promise<number>((res, rej) => {
      const rl = createInterface({ input: proc.child.stdout! });
      rl.once('line', (l) => { try { res((JSON.parse(l) as { port: number }).port); } catch (e) { rej(e as Error); } });
      void proc.exited.then(({ code }) => rej(new Error(`bare-aedes exited (${code}) before listening`)));
    });
    const r = await runLoad({
      id, name: 'bare Aedes (no auth, no store)', port, serverPid: proc.pid, pgRoot: () => null,
      dbUrl: null, store: null, rate: 0, auth: false,
    });
    return { ...r, serverLog: null };
  } finally {
    await reg.stop(proc.pid);
  }
}

/** The WebSocket clients' filters: 10% the whole enterprise, 20% one site, the rest one area. */
function wsFilters(n: number): { filters: string[]; classes: string[] } {
  const enterprise = Math.max(1, Math.round(n * 0.1));
  const site = Math.round(n * 0.2);
  const filters: string[] = [];
  const classes: string[] = [];
  for (let i = 0; i < n; i++) {
    if (i < enterprise) { filters.push('acme/#'); classes.push('enterprise'); }
    else if (i < enterprise + site) { filters.push(`acme/${SITES[i % SITES.length] as string}/#`); classes.push('site'); }
    else { filters.push(`${ALL_AREAS[i % ALL_AREAS.length] as string}/#`); classes.push('area'); }
  }
  return { filters, classes };
}

/** Waits for a child's `{"event":<name>}` line; rejects if it exits first or takes longer than `ms`. */
function waitEvent<T>(proc: Tracked, lines: ReturnType<typeof createInterface>, name: string, ms: number, log: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${proc.name}: no '${name}' within ${ms / 1000} s:\n${logTail(log)}`)), ms);
    lines.on('line', (line) => {
      let ev: { event?: string };
      try { ev = JSON.parse(line) as { event?: string }; } catch { return; }
      if (ev.event === name) { clearTimeout(timer); resolve(ev as T); }
    });
    void proc.exited.then(({ code, signal }) => { clearTimeout(timer); reject(new Error(`${proc.name} exited (${code ?? signal}) before '${name}':\n${logTail(log)}`)); });
  });
}

async function wsScenario(databaseUrl: string): Promise<ScenarioResult> {
  const id = 'ws-fanout';
  progress(`${id}: starting uns-bridge (external PostgreSQL)`);
  const server = await startUns(id, databaseUrl);
  let serverLog: ServerLog | null = null;
  let wsProc: Tracked | null = null;
  try {
    const store = await describeStore(databaseUrl, server.timescale);
    const plan = wsFilters(settings.wsClients);
    const cfg: WsLoadConfig = {
      host: '127.0.0.1', httpPort: server.httpPort, username: ADMIN.username, password: ADMIN.password,
      filters: plan.filters, classes: plan.classes, quietMs: 1_000, finishTimeoutMs: 15_000,
    };
    const wsLog = join(tmpdir(), `uns-bench-ws-load-${process.pid}.log`);
    const proc = reg.spawnNode('ws-load', [join(DIST_BENCH, 'ws-load.js'), JSON.stringify(cfg)], { logTo: wsLog, stdin: true });
    wsProc = proc;
    proc.child.stdin?.on('error', () => undefined); // it may exit before reading everything: not our failure
    const lines = createInterface({ input: proc.child.stdout! });
    const resultP = waitEvent<WsLoadResult>(proc, lines, 'result', (settings.warmupS + settings.seconds + 120) * 1000, wsLog);
    resultP.catch(() => undefined); // awaited below; an early exit is reported by the 'ready' wait first
    const ready = await waitEvent<{ connectMs: number }>(proc, lines, 'ready', 60_000, wsLog);
    progress(`${id}: ${settings.wsClients} WebSocket clients subscribed in ${ready.connectMs} ms; MQTT load at ${settings.rate}/s`);
    const tell = (cmd: object): void => { proc.child.stdin?.write(`${JSON.stringify(cmd)}\n`); };
    const r = await runLoad({
      id, name: `uns-bridge + PostgreSQL at ${settings.rate}/s, ${settings.wsClients} WebSocket clients`, port: server.mqttPort,
      serverPid: server.proc.pid, dbUrl: databaseUrl, rate: settings.rate, auth: true, store,
      pgRoot: () => (testPg ? postmasterPid(join(testPg.dir, 'data')) : null),
      // The WebSocket clients are the consumers here; an MQTT subscriber would only add Aedes' fan-out.
      load: { subscribe: false, stampValue: true },
      onEvent: (ev) => { if ((ev.event === 'measure-start' || ev.event === 'measure-end') && ev.epoch !== undefined) tell({ cmd: ev.event, epoch: ev.epoch }); },
    });
    tell({ cmd: 'finish' });
    const ws = await resultP;
    await proc.exited;
    let expected = 0;
    plan.filters.forEach((f) => { for (const a of ALL_AREAS) if (filterCoversArea(f, a)) expected += r.load.ackedByArea[a] ?? 0; });
    const received = ws.receivedPerClient.reduce((n, x) => n + x, 0);
    const filters: Record<string, string[]> = {};
    for (const [i, f] of plan.filters.entries()) {
      const list = (filters[plan.classes[i] as string] ??= []);
      if (!list.includes(f)) list.push(f);
    }
    const { event: _e, receivedPerClient: _r, ...rest } = ws;
    serverLog = await stopUns(server);
    return { ...r, serverLog, ws: { ...rest, filters, expected, received, missing: Math.max(0, expected - received) } };
  } finally {
    if (wsProc) await reg.stop(wsProc.pid);
    if (serverLog === null) await stopUns(server).catch(() => undefined);
  }
}

async function readScenario(id: ReadId, cluster: TestPostgres, url: string): Promise<ReadResult> {
  const ts = id === 'read-ts';
  if (ts && !cluster.timescale) throw new Error('TimescaleDB is not installed for this PostgreSQL: no read-ts');
  progress(`${id}: starting uns-bridge (${ts ? 'TimescaleDB required' : 'TimescaleDB off'}) to migrate the store`);
  const server = await startUns(id, url, { UNS_TIMESCALE: ts ? 'on' : 'off' });
  let serverLog: ServerLog | null = null;
  try {
    const store = await describeStore(url, server.timescale);
    progress(`${id}: seeding ${settings.storeDays} days (store: ${store})`);
    readAnchorMs ??= Math.floor(Date.now() / 60_000) * 60_000;
    const seed = await seedStore(url, { days: settings.storeDays, toMs: readAnchorMs, timescale: ts, progress: (m) => progress(`${id}: ${m}`) });
    progress(`${id}: ${seed.rows.toLocaleString('en-US')} rows in ${seed.insertS} s; samples ${seed.samplesMb} MB`);
    const base = `http://127.0.0.1:${server.httpPort}`;
    const token = await login(base, ADMIN.username, ADMIN.password);

    // The last day of the data: "from=now-1d&to=now" just after the data was written. 1440 buckets.
    const path = `/api/v1/datapoints/history?topic=${encodeURIComponent(seed.hotTopic)}&from=${new Date(seed.toMs - 86_400_000).toISOString()}` +
      `&to=${new Date(seed.toMs).toISOString()}&bucket=1m&agg=avg,min,max&limit=2000`;
    const { timing: history, buckets } = await timeHistory(base, token, path, settings.queryRuns);
    historyAnswers.set(id, buckets);
    progress(`${id}: history p50 ${history.ms.p50} ms, p99 ${history.ms.p99} ms (${history.buckets} buckets)`);

    const to = seed.toMs;
    const from = to - settings.exportHours * 3_600_000;
    const expectedRows = await withClient(url, async (c) => Number((await c.query<{ n: string }>(
      'SELECT count(*)::text AS n FROM samples WHERE time >= to_timestamp($1::float8 / 1000) AND time < to_timestamp($2::float8 / 1000)', [from, to])).rows[0]?.n ?? 0));
    const exportPath = `/api/v1/export.csv?filter=${encodeURIComponent('acme/#')}&from=${new Date(from).toISOString()}&to=${new Date(to).toISOString()}`;
    const pgRoot = postmasterPid(join(cluster.dir, 'data'));
    const cpu0 = { server: cpuSeconds([server.proc.pid]), pg: pgRoot === null ? null : treeCpuSeconds(pgRoot), at: performance.now() };
    const trace = new RssTrace(server.proc.pid, 100);
    trace.start();
    let lastNote = performance.now();
    let exp: ExportTiming;
    try {
      exp = await streamExport(base, token, exportPath, (rows) => {
        if (performance.now() - lastNote > 5_000) { lastNote = performance.now(); progress(`${id}: export ${rows.toLocaleString('en-US')} rows so far`); }
      });
    } finally {
      trace.stop();
    }
    const mem = trace.finish(exp.ttfbS * 1000);
    const wallS = (performance.now() - cpu0.at) / 1000;
    const pct = (a: number, b: number): number => Math.round(((b - a) / wallS) * 1000) / 10;
    const exportCpu = {
      serverPct: pct(cpu0.server, cpuSeconds([server.proc.pid])),
      pgPct: cpu0.pg === null || pgRoot === null ? null : pct(cpu0.pg, treeCpuSeconds(pgRoot)),
    };
    progress(`${id}: export ${exp.rows.toLocaleString('en-US')} rows in ${exp.totalS} s (${exp.rowsPerS.toLocaleString('en-US')} rows/s), server RSS ${mem.beforeMb} -> peak ${mem.peakMb} MB`);
    serverLog = await stopUns(server);
    return {
      id, name: ts ? 'read API, PostgreSQL + TimescaleDB' : 'read API, plain PostgreSQL', store, seed, history,
      export: { ...exp, from: new Date(from).toISOString(), to: new Date(to).toISOString(), expectedRows }, exportMemory: mem, exportCpu, serverLog,
    };
  } finally {
    if (serverLog === null) await stopUns(server).catch(() => undefined);
  }
}

// --- main ---------------------------------------------------------------------------------------------------

async function cleanup(): Promise<void> {
  await reg.stopAll();
  await destroyFaultClusters().catch((e: Error) => progress(`could not stop a test PostgreSQL: ${e.message}`));
  for (const c of [testPg, plainPg]) await c?.destroy().catch((e: Error) => progress(`could not stop a test PostgreSQL: ${e.message}`));
  testPg = null;
  plainPg = null;
  for (const d of tempDirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

async function main(): Promise<void> {
  const started = performance.now();
  const results: ScenarioResult[] = [];
  const reads: ReadResult[] = [];
  const faults: FaultResult[] = [];
  const failures: string[] = [];
  /** CPU used on this machine by processes the bench did not start, per scenario (% of one core). */
  const otherCpu: Partial<Record<ScenarioId, number>> = {};
  const attempt = async <T>(id: ScenarioId, into: T[], fn: () => Promise<T>): Promise<void> => {
    if (!settings.scenarios.has(id) || exiting) return;
    const before = { busy: machineProcessSeconds(), ours: treeCpuSeconds(process.pid), at: performance.now() };
    try {
      into.push(await fn());
    } catch (e) {
      failures.push(`${id}: ${(e as Error).message}`);
      progress(`${id} FAILED: ${(e as Error).message}`);
    }
    const wallS = (performance.now() - before.at) / 1000;
    const other = (machineProcessSeconds() - before.busy) - (treeCpuSeconds(process.pid) - before.ours);
    otherCpu[id] = Math.max(0, Math.round((other / wallS) * 100));
  };
  const startCluster = async (timescale: boolean): Promise<TestPostgres> => {
    const c = new TestPostgres({ timescale });
    await c.start();
    const pgPid = postmasterPid(join(c.dir, 'data'));
    if (pgPid !== null) reg.adopt(pgPid, `test postgres${timescale ? '' : ' (plain)'}`, 'SIGINT');
    progress(`throwaway PostgreSQL cluster on 127.0.0.1:${c.port} (${c.binDir}; TimescaleDB ${c.timescale ? 'preloaded' : timescale ? 'not installed' : 'not loaded'})`);
    return c;
  };

  await attempt('bare-aedes', results, () => bareScenario('bare-aedes'));
  if (!exiting && (['uns-pg', 'cluster', 'uns-pg-rate', 'ws-fanout', 'read-ts'] as const).some((id) => settings.scenarios.has(id))) {
    testPg = await startCluster(true);
  }
  const pg1 = testPg;
  /**
   * A fresh database per scenario, dropped afterwards: the cluster is shared, and TimescaleDB's background
   * jobs (continuous aggregate refreshes every minute) of earlier scenarios' data would run during later ones.
   */
  const inDatabase = async <T>(cluster: TestPostgres, name: string, fn: (url: string) => Promise<T>): Promise<T> => {
    const url = await cluster.createDatabase(name);
    try {
      return await fn(url);
    } finally {
      await withClient(cluster.url, (c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).catch((e: Error) => progress(`could not drop ${name}: ${e.message}`));
    }
  };
  if (pg1) await attempt('uns-pg', results, () => inDatabase(pg1, 'bench_pg', (url) => unsScenario('uns-pg', 'uns-bridge + PostgreSQL', url, 0)));
  await attempt('uns-embedded', results, () => unsScenario('uns-embedded', 'uns-bridge + embedded store', null, 0));
  await attempt('sparkplug', results, () => unsScenario('sparkplug', 'uns-bridge as Sparkplug host + embedded store', null, 0, {
    load: { publishers: settings.spNodes, subscribe: false, sparkplug: { devices: settings.spDevices, metrics: settings.spMetrics } },
    rowsPerMessage: settings.spMetrics,
  }));
  await attempt('external', results, () => externalScenario());
  await attempt('soak', results, () => soakScenario());
  if (pg1) await attempt('cluster', results, () => inDatabase(pg1, 'bench_cluster', (url) => clusterScenario(url)));
  if (pg1) await attempt('uns-pg-rate', results, () => inDatabase(pg1, 'bench_rate', (url) => unsScenario('uns-pg-rate', `uns-bridge + PostgreSQL at ${settings.rate}/s`, url, settings.rate)));
  if (pg1) await attempt('ws-fanout', results, () => inDatabase(pg1, 'bench_ws', (url) => wsScenario(url)));
  if (pg1) await attempt('read-ts', reads, () => inDatabase(pg1, 'bench_read', (url) => readScenario('read-ts', pg1, url)));
  if (testPg) { await testPg.destroy(); testPg = null; reg.pruneAdopted(); }
  if (!exiting && settings.scenarios.has('read-pg')) {
    const pg2 = await startCluster(false);
    plainPg = pg2;
    await attempt('read-pg', reads, () => inDatabase(pg2, 'bench_read', (url) => readScenario('read-pg', pg2, url)));
    await pg2.destroy();
    plainPg = null;
    reg.pruneAdopted();
  }
  const faultCtx: FaultContext<UnsServer> = {
    reg, progress, tempDir, startUns, stopUns, admin: ADMIN, topicsFile: join(ROOT, 'topics.yaml'), drainTimeoutS: settings.drainTimeoutS,
  };
  await attempt('outage', faults, () => outageScenario(faultCtx, { rate: settings.outageRate, outageS: settings.outageSeconds, warmupS: settings.warmupS }));
  await attempt('spool-drain', faults, () => spoolDrainScenario(faultCtx, { segments: settings.spoolSegments, rate: settings.outageRate }));
  const sessions: SessionsResult[] = [];
  await attempt('sessions', sessions, () => sessionsScenario(faultCtx, { sessions: settings.sessions, queued: settings.sessionQueued, drain: settings.sessionDrain }));
  for (const r of sessions) failures.push(...sessionsProblems(r));
  await attempt('bare-aedes-end', results, () => bareScenario('bare-aedes-end'));
  // A fault scenario that lost or doubled messages (or did not drain) has failed, loudly.
  failures.push(...faultProblems(faults));

  const report = {
    when: new Date().toISOString(),
    machine: { cpus: (await import('node:os')).cpus().length, node: process.version },
    settings: { ...settings, scenarios: [...settings.scenarios] },
    targets: TARGETS,
    otherCpuPct: otherCpu,
    results,
    reads,
    faults,
    sessions,
    failures,
    totalS: Math.round(performance.now() - started) / 1000,
  };
  const file = join(tmpdir(), `uns-bench-${Date.now()}.json`);
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);

  const out: string[] = [];
  if (results.length > 0) out.push('', table(results), '', ...notes(results));
  const fan = results.find((r): r is ScenarioResult & { ws: WsFigures } => r.ws !== undefined);
  if (fan) out.push('', wsTable(fan), '', ...wsNotes(fan.ws));
  if (reads.length > 0) out.push('', readTable(reads), '', ...readNotes(reads));
  if (faults.length > 0) out.push(...faultReport(faults));
  for (const r of sessions) out.push(...sessionsReport(r));
  const problems = results.flatMap((r) => {
    const p: string[] = [];
    if (r.persisted && r.persisted.lost > 0) p.push(`${r.id}: ${r.persisted.lost} acknowledged messages are NOT in the store`);
    if (r.persisted && r.persisted.rejections > 0) p.push(`${r.id}: ${r.persisted.rejections} messages rejected`);
    if (r.load.unackedAtEnd > 0) p.push(`${r.id}: ${r.load.unackedAtEnd} publishes never acknowledged`);
    const sub = r.load.sub;
    if (sub.subscribers > 0 && sub.receivedTotal !== sub.expectedTotal) {
      p.push(`${r.id}: subscribers got ${sub.receivedTotal} of ${sub.expectedTotal} deliveries (QoS 0: a subscriber that falls behind loses messages)`);
    }
    if (r.load.connectionErrors.length > 0) p.push(`${r.id}: ${r.load.connectionErrors.length} connections dropped`);
    if (r.serverLog && (r.serverLog.errors > 0 || r.serverLog.warnings > 0)) p.push(`${r.id}: server logged ${r.serverLog.errors} errors, ${r.serverLog.warnings} warnings`);
    if (r.serverLog && !r.serverLog.clean) p.push(`${r.id}: server ${r.serverLog.exit}`);
    if (r.ws) {
      if (r.ws.missing > 0) p.push(`${r.id}: WebSocket clients missed ${r.ws.missing} of ${r.ws.expected} points`);
      if (r.ws.gapNotices > 0) p.push(`${r.id}: ${r.ws.gapNotices} gap notices (${r.ws.gapDroppedPoints} points dropped by the server)`);
      if (r.ws.closedEarly.length > 0) p.push(`${r.id}: ${r.ws.closedEarly.length} WebSocket connections closed by the server`);
      if (r.ws.errors.length > 0) p.push(`${r.id}: ${r.ws.errors.length} WebSocket errors, e.g. ${r.ws.errors[0] ?? ''}`);
    }
    return p;
  }).concat(reads.flatMap((r) => {
    const p: string[] = [];
    if (r.export.rows !== r.export.expectedRows) p.push(`${r.id}: export gave ${r.export.rows} rows, the store holds ${r.export.expectedRows} in the range`);
    if (!r.history.complete || r.history.buckets !== 1440) p.push(`${r.id}: history answered ${r.history.buckets} buckets${r.history.complete ? '' : ' and a next_cursor'} (expected 1440, complete)`);
    // Flat memory: the last third of the export may not need more than the second (slack for GC timing).
    // Judged on exports that stream for a while: in the first seconds the heap is still finding its size.
    const [, mid, end] = r.exportMemory.thirdsPeakMb;
    if (r.export.totalS - r.export.ttfbS >= 5 && end > mid + 16) p.push(`${r.id}: server RSS grew during the export (peak per third ${r.exportMemory.thirdsPeakMb.join(' / ')} MB)`);
    if (r.serverLog && (r.serverLog.errors > 0 || r.serverLog.warnings > 0)) p.push(`${r.id}: server logged ${r.serverLog.errors} errors, ${r.serverLog.warnings} warnings`);
    if (r.serverLog && !r.serverLog.clean) p.push(`${r.id}: server ${r.serverLog.exit}`);
    return p;
  })).concat(faultProblems(faults));
  const tsAnswer = historyAnswers.get('read-ts');
  const pgAnswer = historyAnswers.get('read-pg');
  let sameAnswer: string | null = null;
  if (tsAnswer && pgAnswer) {
    const d = compareBuckets(tsAnswer, pgAnswer);
    // Re-bucketed continuous aggregates (sum(avg*count)/sum(count)) may differ from avg() in the last bits.
    if (d.onlyInOne > 0 || d.maxDiff > 1e-9) problems.push(`read-ts and read-pg answer the history differently: ${d.onlyInOne} buckets in only one, max |difference| ${d.maxDiff}`);
    else sameAnswer = `TimescaleDB and plain PostgreSQL give the same ${tsAnswer.length} history buckets (max |difference| ${d.maxDiff.toExponential(1)})`;
  }
  if (results.length + reads.length + faults.length > 0) out.push('', problems.length === 0
    ? `checks: ${[
      ...(results.length ? ['every acknowledged message is in the store; nothing rejected, no dropped connections'] : []),
      ...(fan ? ['every WebSocket client got every point, no gaps'] : []),
      ...(reads.length ? ['history complete, exports complete, server memory flat during exports'] : []),
      ...(faults.length ? [`${faults.map((f) => f.id).join(' and ')}: every acknowledged message stored exactly once, spool drained`] : []),
      results.length + reads.length > 0 ? 'no server warnings or errors, clean shutdowns' : 'clean shutdowns',
    ].join('; ')}`
    : `PROBLEMS:\n${problems.map((p) => `  ${p}`).join('\n')}`);
  const bare = results.filter(isBare);
  if (bare.length === 2) {
    const [a, b] = bare.map((r) => r.load.ackedPerS) as [number, number];
    out.push('', `bare Aedes before/after: ${a.toLocaleString('en-US')} / ${b.toLocaleString('en-US')} msgs/s (drift ${(((b - a) / a) * 100).toFixed(0)}%: the machine is shared; ratios use the mean)`);
  }
  if (sameAnswer) out.push('', sameAnswer);
  const others = Object.entries(otherCpu);
  if (others.length > 0) {
    const busy = others.filter(([, pct]) => (pct ?? 0) >= 15);
    out.push('', `other processes on the machine, CPU % of one core per scenario: ${others.map(([id, pct]) => `${id} ${pct}`).join(', ')}` +
      (busy.length > 0 ? `\n  WARNING: ${busy.map(([id]) => id).join(', ')} shared the machine with other work: their figures are disturbed` : ''));
  }
  if (!settings.subscribe) out.push('', 'BENCH_SUBSCRIBE=0: no subscriber, so no sub latencies.');
  const rate = results.find((r) => r.id === 'uns-pg-rate');
  const targets: string[] = [];
  if (rate?.load.puback.p99 != null) {
    targets.push(`PUBACK p99 ${rate.load.puback.p99} ms at ${rate.load.rate}/s (target <= ${TARGETS.pubackP99Ms} ms): ${verdict(rate.load.puback.p99 <= TARGETS.pubackP99Ms)}`);
  }
  if (fan?.ws.latency.p99 != null) {
    targets.push(`publish -> WebSocket p99 ${fan.ws.latency.p99} ms, ${fan.ws.clients} clients, ${int(fan.ws.perS)} points/s (target <= ${TARGETS.wsP99Ms} ms): ${verdict(fan.ws.latency.p99 <= TARGETS.wsP99Ms)}`);
  }
  for (const r of reads) {
    const t = TARGETS.historyP99Ms[r.id];
    targets.push(`${r.id}: history p99 ${r.history.ms.p99} ms (target <= ${t} ms): ${verdict((r.history.ms.p99 ?? Infinity) <= t)}`);
  }
  if (targets.length > 0) out.push('', 'targets:', ...targets.map((t) => `  ${t}`));
  if (failures.length > 0) out.push('', 'FAILED scenarios:', ...failures.map((f) => `  ${f}`));
  out.push('', `JSON: ${file}`, JSON.stringify(report));
  process.stdout.write(`${out.join('\n')}\n`);
  if (failures.length > 0) process.exitCode = 1;
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (exiting) return;
    exiting = true;
    reg.close();
    progress(`${sig}: stopping everything the bench started`);
    cleanup().finally(() => process.exit(130));
  });
}
process.on('exit', () => reg.killAllNow());

main()
  .catch((e: Error) => { process.stderr.write(`bench failed: ${e.stack ?? e.message}\n`); process.exitCode = 1; })
  .finally(() => cleanup().catch((e: Error) => progress(`cleanup: ${e.message}`)));
