/**
 * `npm run bench`: all scenarios in one run, so their ratios are comparable on a shared machine.
 *
 *   1. bare-aedes     Aedes with no auth, hooks or store: the ceiling
 *   2. uns-pg         uns-bridge on a throwaway Debian PostgreSQL cluster (TimescaleDB when installed)
 *   3. uns-embedded   uns-bridge with no database URL: its embedded PostgreSQL
 *   4. uns-pg-rate    uns-bridge + PostgreSQL at a steady BENCH_RATE msgs/s (default 10,000)
 *   5. bare-aedes-end the reference again: the machine is shared, so the ceiling is bracketed and the
 *                     ratios use the mean of both bare runs
 *
 * Servers and the load generator are separate processes; everything listens on 127.0.0.1 only. Every
 * process started here is ended by PID when the run ends, also on failure. The table goes to stdout, its
 * JSON to a file under the OS temp dir and, as the last line, to stdout; progress goes to stderr.
 *
 * Environment: BENCH_SECONDS (20), BENCH_WARMUP (3), BENCH_PUBLISHERS (200), BENCH_WINDOW (20),
 * BENCH_TOPICS_PER_PUBLISHER (8), BENCH_RATE (10000), BENCH_SCENARIOS (comma list of the ids above),
 * BENCH_SUBSCRIBE (1; 0 = no subscriber on acme/#: Aedes' fan-out to it otherwise bounds every scenario).
 */
import { mkdtempSync, chmodSync, rmSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import pg from 'pg';
import { TestPostgres, freePort } from '../test/helpers/postgres.js';
import { ProcessRegistry, MemorySampler, postmasterPid, processTree, cpuSeconds, type MemoryPeaks, type Tracked } from './procs.js';
import type { LoadConfig, LoadResult } from './load.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const DIST_BENCH = join(ROOT, 'dist', 'bench');
const ADMIN = { username: 'admin', password: 'bench-admin-password' };

const SCENARIOS = ['bare-aedes', 'uns-pg', 'uns-embedded', 'uns-pg-rate', 'bare-aedes-end'] as const;
type ScenarioId = (typeof SCENARIOS)[number];

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
  scenarios: new Set<ScenarioId>(
    (process.env['BENCH_SCENARIOS'] ?? SCENARIOS.join(',')).split(',').map((s) => s.trim()).filter(Boolean).map((s) => {
      if (!(SCENARIOS as readonly string[]).includes(s)) throw new Error(`BENCH_SCENARIOS: unknown scenario '${s}' (known: ${SCENARIOS.join(', ')})`);
      return s as ScenarioId;
    }),
  ),
};

interface StoreFigures {
  /** Rows in `samples` that became visible between the two snapshots around the measured window. */
  readonly windowRows: number;
  readonly windowS: number;
  readonly perS: number;
  /** Over the whole run (warm-up, window, drain): rows added vs publishes acknowledged. */
  readonly rowsAdded: number;
  readonly lost: number;
  readonly unackedButStored: number;
  readonly rejections: number;
}

interface ScenarioResult {
  readonly id: ScenarioId;
  readonly name: string;
  readonly store: string | null;
  readonly load: LoadResult;
  readonly persisted: StoreFigures | null;
  readonly memory: MemoryPeaks;
  readonly cpu: { readonly serverPct: number; readonly pgPct: number | null };
  readonly serverLog: ServerLog | null;
}

interface ServerLog {
  readonly file: string;
  readonly warnings: number;
  readonly errors: number;
  readonly samples: readonly string[];
  readonly exit: string;
  readonly clean: boolean;
}

const progress = (msg: string): void => { process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`); };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const reg = new ProcessRegistry();
/** Set on SIGINT/SIGTERM: no further scenario starts. */
let exiting = false;
const tempDirs: string[] = [];
let testPg: TestPostgres | null = null;

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

async function startUns(name: string, databaseUrl: string | null): Promise<UnsServer> {
  const dataDir = tempDir('ub-');
  const logFile = join(tmpdir(), `uns-bench-${name}-${process.pid}.log`);
  const mqttPort = await freePort();
  const httpPort = await freePort();
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('UNS_') && k !== 'DATABASE_URL') env[k] = v;
  Object.assign(env, {
    UNS_MQTT_HOST: '127.0.0.1', UNS_MQTT_PORT: String(mqttPort), UNS_HTTP_HOST: '127.0.0.1', UNS_HTTP_PORT: String(httpPort),
    UNS_DATA_DIR: dataDir, UNS_TOPICS: join(ROOT, 'topics.yaml'), UNS_ADMIN_USER: ADMIN.username, UNS_ADMIN_PASSWORD: ADMIN.password,
    UNS_LOG_LEVEL: 'warn',
  });
  if (databaseUrl !== null) env['UNS_DATABASE_URL'] = databaseUrl;
  // pino writes to stdout: both streams go to the log file.
  const proc = reg.spawnNode(name, [join(ROOT, 'dist', 'src', 'cli.js'), 'start'], { env, cwd: ROOT, logTo: logFile, stdoutToLog: true });
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
        if (res.status === 200) {
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
    warmupS: settings.warmupS, seconds: settings.seconds, rate: t.rate, subscribe: settings.subscribe, drainTimeoutS: 15,
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
      let ev: { event?: string };
      try { ev = JSON.parse(line) as { event?: string }; } catch { return; }
      if (ev.event === 'connected') progress(`${t.id}: ${settings.publishers} publishers + 1 subscriber connected; warm-up ${settings.warmupS} s, then ${settings.seconds} s measured`);
      if (ev.event === 'measure-start') hooks.push(snapshot().then((s) => { snaps.start = s; }));
      if (ev.event === 'measure-end') hooks.push(snapshot().then((s) => { snaps.end = s; }));
      if (ev.event === 'result') result = ev as LoadResult;
    });
    const limitMs = (settings.warmupS + settings.seconds + 60) * 1000;
    const killer = setTimeout(() => { progress(`${t.id}: load generator over its time limit: stopping it`); void reg.stop(proc.pid); }, limitMs);
    const { code, signal } = await proc.exited;
    clearTimeout(killer);
    await Promise.all(hooks);
    if (result === null) throw new Error(`load generator for ${t.id} failed (${code ?? signal}):\n${logTail(loadLog)}`);
    const load: LoadResult = result;
    const memory = sampler.finish();

    let persisted: StoreFigures | null = null;
    if (db && before) {
      const after = await countRows(db);
      const { start: s, end: e } = snaps;
      const windowRows = s?.rows && e?.rows ? e.rows.samples - s.rows.samples : 0;
      const windowS = s?.rows && e?.rows ? (e.rows.at - s.rows.at) / 1000 : load.measuredS;
      const rowsAdded = after.samples - before.samples;
      persisted = {
        windowRows, windowS: Math.round(windowS * 1000) / 1000, perS: Math.round(windowRows / windowS), rowsAdded,
        lost: Math.max(0, load.totalAcked - rowsAdded), unackedButStored: Math.max(0, rowsAdded - load.totalAcked),
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

async function unsScenario(id: ScenarioId, name: string, databaseUrl: string | null, rate: number): Promise<ScenarioResult> {
  progress(`${id}: starting uns-bridge (${databaseUrl === null ? 'embedded PostgreSQL' : 'external PostgreSQL'})`);
  const server = await startUns(id, databaseUrl);
  let serverLog: ServerLog | null = null;
  try {
    const pgDir = join(server.dataDir, 'pg');
    const dbUrl = databaseUrl ?? `postgresql://uns@/postgres?host=${encodeURIComponent(join(pgDir, 'run'))}`;
    const store = await describeStore(dbUrl, server.timescale);
    progress(`${id}: ready (store: ${databaseUrl === null ? 'embedded ' : ''}${store})`);
    const r = await runLoad({
      id, name, port: server.mqttPort, serverPid: server.proc.pid, dbUrl, rate, auth: true,
      store: `${databaseUrl === null ? 'embedded ' : ''}${store}`,
      pgRoot: () => (databaseUrl === null ? postmasterPid(pgDir) : testPg ? postmasterPid(join(testPg.dir, 'data')) : null),
    });
    serverLog = await stopUns(server);
    return { ...r, serverLog };
  } finally {
    if (serverLog === null) await stopUns(server).catch(() => undefined);
  }
}

async function bareScenario(id: 'bare-aedes' | 'bare-aedes-end'): Promise<ScenarioResult> {
  progress(`${id}: starting the reference broker`);
  const proc = reg.spawnNode('bare-aedes', [join(DIST_BENCH, 'bare-aedes.js'), '0']);
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

// --- report -------------------------------------------------------------------------------------------------

function fmt(n: number | null | undefined, digits = 1): string {
  if (n === null || n === undefined) return '-';
  return n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(digits);
}

const isBare = (r: ScenarioResult): boolean => r.id === 'bare-aedes' || r.id === 'bare-aedes-end';

/** Acked msgs/s of bare Aedes: the mean of its runs in this invocation. */
function bareCeiling(results: readonly ScenarioResult[]): number | null {
  const bare = results.filter(isBare);
  return bare.length === 0 ? null : bare.reduce((n, r) => n + r.load.ackedPerS, 0) / bare.length;
}

function table(results: readonly ScenarioResult[]): string {
  const ceiling = bareCeiling(results);
  const head = ['scenario', 'acked msg/s', 'persisted msg/s', 'vs bare', 'PUBACK p50/p99 ms', 'sub p50/p99 ms', 'peak RSS MB', 'PG PSS MB', 'CPU % srv/pg/load'];
  const rows = results.map((r) => [
    r.id + (r.load.rate > 0 ? ` @${r.load.rate.toLocaleString('en-US')}/s` : ''),
    r.load.ackedPerS.toLocaleString('en-US'),
    r.persisted ? r.persisted.perS.toLocaleString('en-US') : '-',
    ceiling !== null && r.load.rate === 0 ? `${((r.load.ackedPerS / ceiling) * 100).toFixed(0)}%` : '-',
    `${fmt(r.load.puback.p50, 2)} / ${fmt(r.load.puback.p99, 2)}`,
    `${fmt(r.load.sub.p50, 2)} / ${fmt(r.load.sub.p99, 2)}`,
    fmt(Math.max(r.memory.serverPeakRssMb, r.memory.serverHwmMb), 0),
    r.memory.pgPeakPssMb === null ? '-' : fmt(r.memory.pgPeakPssMb, 0),
    `${fmt(r.cpu.serverPct, 0)}/${r.cpu.pgPct === null ? '-' : fmt(r.cpu.pgPct, 0)}/${fmt(r.load.loadCpuPct, 0)}`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? '').length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

function notes(results: readonly ScenarioResult[]): string[] {
  const out: string[] = [];
  for (const r of results) {
    const l = r.load;
    const bits = [`${r.id}: ${l.publishers} publishers x ${l.window} in flight, ${l.topics} topics, ${l.measuredS} s measured; ` +
      `sent ${l.totalSent}, acked ${l.totalAcked}, unacked at end ${l.unackedAtEnd}; subscriber got ${l.sub.receivedTotal}`];
    if (r.store) bits.push(`  store: ${r.store}`);
    if (r.persisted) {
      const p = r.persisted;
      bits.push(`  rows: ${p.windowRows} in the window (${p.windowS} s); ${p.rowsAdded} over the run; ` +
        `acked but not stored: ${p.lost}; stored but not acked: ${p.unackedButStored}; rejections: ${p.rejections}`);
    }
    if (l.rate > 0) bits.push(`  rate mode: ${l.deferred} publishes waited for a window slot (longest queue ${l.maxBacklog}); ${l.backlogUnsent} left unsent at the end`);
    bits.push(`  load generator: ${l.loadCpuPct}% CPU, event-loop lag p99 ${l.loopLagP99Ms} ms`);
    if (l.connectionErrors.length > 0) bits.push(`  connection errors (${l.connectionErrors.length}): ${l.connectionErrors.slice(0, 3).join('; ')}`);
    if (r.serverLog) {
      const s = r.serverLog;
      bits.push(`  server: ${s.warnings} warnings, ${s.errors} errors, ${s.exit}${s.samples.length ? `; e.g. ${s.samples.join(' | ')}` : ''} (${s.file})`);
    }
    out.push(...bits);
  }
  return out;
}

// --- main ---------------------------------------------------------------------------------------------------

async function cleanup(): Promise<void> {
  await reg.stopAll();
  if (testPg) {
    await testPg.destroy().catch((e: Error) => progress(`could not stop the test PostgreSQL: ${e.message}`));
    testPg = null;
  }
  for (const d of tempDirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

async function main(): Promise<void> {
  const started = performance.now();
  const results: ScenarioResult[] = [];
  const failures: string[] = [];
  const attempt = async (id: ScenarioId, fn: () => Promise<ScenarioResult>): Promise<void> => {
    if (!settings.scenarios.has(id) || exiting) return;
    try {
      results.push(await fn());
    } catch (e) {
      failures.push(`${id}: ${(e as Error).message}`);
      progress(`${id} FAILED: ${(e as Error).message}`);
    }
  };

  await attempt('bare-aedes', () => bareScenario('bare-aedes'));
  if (!exiting && (settings.scenarios.has('uns-pg') || settings.scenarios.has('uns-pg-rate'))) {
    testPg = new TestPostgres();
    await testPg.start();
    const pgPid = postmasterPid(join(testPg.dir, 'data'));
    if (pgPid !== null) reg.adopt(pgPid, 'test postgres', 'SIGINT');
    progress(`throwaway PostgreSQL cluster on 127.0.0.1:${testPg.port} (${testPg.binDir}; TimescaleDB ${testPg.timescale ? 'preloaded' : 'not installed'})`);
  }
  const pg1 = testPg;
  if (pg1) await attempt('uns-pg', async () => unsScenario('uns-pg', 'uns-bridge + PostgreSQL', await pg1.createDatabase('bench_pg'), 0));
  await attempt('uns-embedded', () => unsScenario('uns-embedded', 'uns-bridge + embedded store', null, 0));
  if (pg1) await attempt('uns-pg-rate', async () => unsScenario('uns-pg-rate', `uns-bridge + PostgreSQL at ${settings.rate}/s`, await pg1.createDatabase('bench_rate'), settings.rate));
  if (testPg) { await testPg.destroy(); testPg = null; reg.pruneAdopted(); }
  await attempt('bare-aedes-end', () => bareScenario('bare-aedes-end'));

  const report = {
    when: new Date().toISOString(),
    machine: { cpus: (await import('node:os')).cpus().length, node: process.version },
    settings: { ...settings, scenarios: [...settings.scenarios] },
    results,
    failures,
    totalS: Math.round(performance.now() - started) / 1000,
  };
  const file = join(tmpdir(), `uns-bench-${Date.now()}.json`);
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);

  const out: string[] = ['', table(results), '', ...notes(results)];
  const problems = results.flatMap((r) => {
    const p: string[] = [];
    if (r.persisted && r.persisted.lost > 0) p.push(`${r.id}: ${r.persisted.lost} acknowledged messages are NOT in the store`);
    if (r.persisted && r.persisted.rejections > 0) p.push(`${r.id}: ${r.persisted.rejections} messages rejected`);
    if (r.load.unackedAtEnd > 0) p.push(`${r.id}: ${r.load.unackedAtEnd} publishes never acknowledged`);
    if (r.load.connectionErrors.length > 0) p.push(`${r.id}: ${r.load.connectionErrors.length} connections dropped`);
    if (r.serverLog && (r.serverLog.errors > 0 || r.serverLog.warnings > 0)) p.push(`${r.id}: server logged ${r.serverLog.errors} errors, ${r.serverLog.warnings} warnings`);
    if (r.serverLog && !r.serverLog.clean) p.push(`${r.id}: server ${r.serverLog.exit}`);
    return p;
  });
  if (results.length > 0) out.push('', problems.length === 0
    ? 'checks: every acknowledged message is in the store; nothing rejected, no dropped connections, no server warnings or errors, clean shutdowns'
    : `PROBLEMS:\n${problems.map((p) => `  ${p}`).join('\n')}`);
  const bare = results.filter(isBare);
  if (bare.length === 2) {
    const [a, b] = bare.map((r) => r.load.ackedPerS) as [number, number];
    out.push('', `bare Aedes before/after: ${a.toLocaleString('en-US')} / ${b.toLocaleString('en-US')} msgs/s (drift ${(((b - a) / a) * 100).toFixed(0)}%: the machine is shared; ratios use the mean)`);
  }
  if (!settings.subscribe) out.push('', 'BENCH_SUBSCRIBE=0: no subscriber, so no sub latencies.');
  const rate = results.find((r) => r.id === 'uns-pg-rate');
  if (rate?.load.puback.p99 != null) {
    out.push('', `rate target: PUBACK p99 ${rate.load.puback.p99} ms at ${rate.load.rate}/s (target <= 50 ms): ${rate.load.puback.p99 <= 50 ? 'met' : 'NOT met'}`);
  }
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
