/**
 * The bench's result shapes and its report: the tables printed at the end of `npm run bench` and the notes
 * under them (targets met or not, what the load generator and the server logged).
 */
import type { LoadResult } from './load.js';
import type { WsLoadResult } from './ws-load.js';
import type { MemoryPeaks, RssTrace } from './procs.js';
import type { SeedResult } from './seed-store.js';
import type { ExportTiming, HistoryTiming } from './read-api.js';
import type { ReadId, ScenarioId } from './run.js';

/** Targets the figures are held to (printed as met / NOT met). */
export const TARGETS = { pubackP99Ms: 50, wsP99Ms: 25, historyP99Ms: { 'read-ts': 50, 'read-pg': 250 } as Record<ReadId, number> };

export interface StoreFigures {
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

export interface ScenarioResult {
  readonly id: ScenarioId;
  readonly name: string;
  readonly store: string | null;
  readonly load: LoadResult;
  readonly persisted: StoreFigures | null;
  readonly memory: MemoryPeaks;
  readonly cpu: { readonly serverPct: number; readonly pgPct: number | null };
  readonly serverLog: ServerLog | null;
  /** ws-fanout only. */
  readonly ws?: WsFigures;
  /** soak only: the server's RSS every 30 s (MB), from the start of the measured window. */
  readonly rssEvery30s?: readonly number[];
  /** cluster only: Redis' work for the run, and the second instance. */
  readonly cluster?: { readonly redisCommands: number; readonly redisPublishes: number; readonly redisCpuPct: number; readonly secondRssMb: number };
}

export interface WsFigures extends Omit<WsLoadResult, 'event' | 'receivedPerClient'> {
  /** Per class: the filters used. */
  readonly filters: Readonly<Record<string, readonly string[]>>;
  /** Points the clients should have got over the whole run (acknowledged publishes matching each client's filter). */
  readonly expected: number;
  readonly received: number;
  readonly missing: number;
}

export interface ReadResult {
  readonly id: ReadId;
  readonly name: string;
  readonly store: string;
  readonly seed: SeedResult;
  readonly history: HistoryTiming;
  readonly export: ExportTiming & { readonly from: string; readonly to: string; readonly expectedRows: number };
  /** Server RSS over the export, sampled every 100 ms. */
  readonly exportMemory: ReturnType<RssTrace['finish']>;
  readonly exportCpu: { readonly serverPct: number; readonly pgPct: number | null };
  readonly serverLog: ServerLog | null;
}

export interface ServerLog {
  readonly file: string;
  readonly warnings: number;
  readonly errors: number;
  readonly samples: readonly string[];
  readonly exit: string;
  readonly clean: boolean;
}


// --- report -------------------------------------------------------------------------------------------------

export function fmt(n: number | null | undefined, digits = 1): string {
  if (n === null || n === undefined) return '-';
  return n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(digits);
}

export const isBare = (r: ScenarioResult): boolean => r.id === 'bare-aedes' || r.id === 'bare-aedes-end';

/** Acked msgs/s of bare Aedes: the mean of its runs in this invocation. */
export function bareCeiling(results: readonly ScenarioResult[]): number | null {
  const bare = results.filter(isBare);
  return bare.length === 0 ? null : bare.reduce((n, r) => n + r.load.ackedPerS, 0) / bare.length;
}

export function table(results: readonly ScenarioResult[]): string {
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
  return render(head, rows);
}

/** First column left-aligned, the others right-aligned. */
export function render(head: readonly string[], rows: ReadonlyArray<readonly string[]>): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? '').length)));
  const line = (cells: readonly string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export const int = (n: number): string => Math.round(n).toLocaleString('en-US');
export const p5099 = (l: { p50: number | null; p99: number | null }, digits = 2): string => `${fmt(l.p50, digits)} / ${fmt(l.p99, digits)}`;
export const verdict = (ok: boolean): string => (ok ? 'met' : 'NOT met');

export function wsTable(r: ScenarioResult & { ws: WsFigures }): string {
  const w = r.ws;
  const head = ['WebSocket clients', 'filters', 'delivered pts/s', 'latency p50/p99 ms', 'max ms'];
  const rows = Object.entries(w.byClass).map(([name, c]) => [
    `${name} x ${c.clients}`, (w.filters[name] ?? []).length > 2 ? `${(w.filters[name] ?? []).length} filters like ${(w.filters[name] ?? [])[0] ?? ''}` : (w.filters[name] ?? []).join(' '),
    int(c.perS), p5099(c.latency), fmt(c.latency.max, 1),
  ]);
  rows.push([`all ${w.clients}`, '', int(w.perS), p5099(w.latency), fmt(w.latency.max, 1)]);
  rows.push(['newest point per frame', '', '', p5099(w.newestInFrame), fmt(w.newestInFrame.max, 1)]);
  return render(head, rows);
}

export function wsNotes(w: WsFigures): string[] {
  return [
    `ws-fanout: ${w.clients} clients, ${w.windowS} s window (by send time); ${int(w.frames)} datapoints_batch frames, ${w.pointsPerFrame} points and ${int(w.bytesPerFrame)} bytes per frame on average; connected and subscribed in ${w.connectMs} ms`,
    `  over the run: received ${int(w.received)} of ${int(w.expected)} expected points (acknowledged publishes matching each filter); missing ${int(w.missing)}`,
    `  gap notices: ${w.gapNotices} (dropped ${int(w.gapDroppedPoints)} points in ${int(w.gapDroppedFrames)} frames); closed by the server: ${w.closedEarly.length}${w.closedEarly.length ? ` (${w.closedEarly.slice(0, 3).join('; ')})` : ''}; errors: ${w.errors.length}${w.errors.length ? ` (${w.errors.slice(0, 3).join('; ')})` : ''}`,
    `  ws clients process: ${w.loadCpuPct}% CPU, event-loop lag p99 ${w.loopLagP99Ms} ms`,
  ];
}

export function readTable(reads: readonly ReadResult[]): string {
  const head = ['read scenario', 'rows', 'history 1d @1m p50/p99 ms', 'target', 'export rows', 'rows/s', 'MB/s', 'first byte s', 'srv RSS before/peak/end MB', 'CPU % srv/pg'];
  const rows = reads.map((r) => [
    r.id, int(r.seed.rows), p5099(r.history.ms, 1), `<= ${TARGETS.historyP99Ms[r.id]}: ${verdict((r.history.ms.p99 ?? Infinity) <= TARGETS.historyP99Ms[r.id])}`,
    int(r.export.rows), int(r.export.rowsPerS), fmt(r.export.mbPerS, 1), fmt(r.export.ttfbS, 2),
    `${fmt(r.exportMemory.beforeMb, 0)}/${fmt(r.exportMemory.peakMb, 0)}/${fmt(r.exportMemory.endMb, 0)}`,
    `${fmt(r.exportCpu.serverPct, 0)}/${r.exportCpu.pgPct === null ? '-' : fmt(r.exportCpu.pgPct, 0)}`,
  ]);
  return render(head, rows);
}

export function readNotes(reads: readonly ReadResult[]): string[] {
  return reads.flatMap((r) => {
    const sd = r.seed;
    const h = r.history;
    const e = r.export;
    const m = r.exportMemory;
    return [
      `${r.id}: ${r.store}`,
      `  store: ${int(sd.rows)} rows, ${sd.topics} topics over ${Math.round((sd.toMs - sd.fromMs) / 86_400_000)} days (${sd.hotTopic} at 1 Hz, the rest every 10 s); ` +
        `inserted in ${sd.insertS} s${sd.refreshS !== null ? `, continuous aggregates refreshed in ${sd.refreshS} s` : ''}, VACUUM ANALYZE ${sd.vacuumS} s; ` +
        `samples ${int(sd.samplesMb)} MB${sd.caggMb !== null ? `, aggregates ${int(sd.caggMb)} MB` : ''}`,
      `  history: ${h.runs} runs after one warm-up (${h.warmupMs} ms): p50 ${h.ms.p50} ms, p90 ${h.ms.p90} ms, p99 ${h.ms.p99} ms, max ${h.ms.max} ms; ` +
        `${h.buckets} buckets, ${h.complete ? 'complete' : 'PAGED (next_cursor set)'}, ${int(h.bytes)} bytes`,
      `  export ${e.from} .. ${e.to} (acme/#): ${int(e.rows)} rows (store holds ${int(e.expectedRows)} in the range), ${fmt(e.bytes / 1048576, 0)} MB in ${e.totalS} s; ` +
        `server RSS peak per third of the streaming time ${m.thirdsPeakMb.join(' / ')} MB`,
      ...(r.serverLog ? [`  server: ${r.serverLog.warnings} warnings, ${r.serverLog.errors} errors, ${r.serverLog.exit}${r.serverLog.samples.length ? `; e.g. ${r.serverLog.samples.join(' | ')}` : ''} (${r.serverLog.file})`] : []),
    ];
  });
}

export function notes(results: readonly ScenarioResult[]): string[] {
  const out: string[] = [];
  for (const r of results) {
    const l = r.load;
    const consumers = r.ws ? `no MQTT subscriber (${r.ws.clients} WebSocket clients instead)` : l.sub.subscribers === 0 ? 'no subscriber'
      : `${l.sub.subscribers} subscriber${l.sub.subscribers === 1 ? '' : 's'} got ${l.sub.receivedTotal} of ${l.sub.expectedTotal} deliveries (${int(Math.round(l.sub.receivedInWindow / l.measuredS))}/s in the window)`;
    const bits = [`${r.id}: ${l.publishers} publishers x ${l.window} in flight, ${l.topics} topics, ${l.measuredS} s measured; ` +
      `sent ${l.totalSent}, acked ${l.totalAcked}, unacked at end ${l.unackedAtEnd}; ${consumers}`];
    if (r.store) bits.push(`  store: ${r.store}`);
    if (r.persisted) {
      const p = r.persisted;
      bits.push(`  rows: ${p.windowRows} in the window (${p.windowS} s); ${p.rowsAdded} over the run; ` +
        `acked but not stored: ${p.lost}; stored but not acked: ${p.unackedButStored}; rejections: ${p.rejections}`);
    }
    if (r.id === 'sparkplug') {
      const json = results.find((x) => x.id === 'uns-embedded');
      const perMsg = r.persisted && l.totalAcked > 0 ? Math.round(r.persisted.rowsAdded / l.totalAcked) : null;
      const metricsPerS = r.persisted?.perS ?? null;
      bits.push(`  sparkplug: ${l.ackedPerS} DDATA msg/s acked x ${perMsg ?? '?'} metrics = ${metricsPerS ?? '-'} metrics/s decoded and stored` +
        (json && metricsPerS !== null ? `; ${(metricsPerS / json.load.ackedPerS).toFixed(2)}x uns-embedded's JSON msgs/s (${json.load.ackedPerS}) in this run` : ''));
    }
    if (r.cluster) {
      const c = r.cluster;
      const single = results.find((x) => x.id === 'uns-pg');
      const per = l.totalSent > 0 ? c.redisCommands / l.totalSent : 0;
      bits.push(`  cluster: 2 instances + Redis, publishers on both, the subscriber on the second (every message it gets from the first crossed Redis);` +
        ` Redis ${c.redisCommands} commands (${fmt(per, 3)} per message; ${c.redisPublishes} PUBLISH batches), Redis CPU ${c.redisCpuPct}%; second instance RSS ${c.secondRssMb} MB` +
        (single ? `; 1 instance (uns-pg) in this run: ${single.load.ackedPerS} msg/s, cluster ${fmt(l.ackedPerS / single.load.ackedPerS, 2)}x of it` : ''));
    }
    if (r.rssEvery30s && r.rssEvery30s.length > 0) {
      const t = r.rssEvery30s;
      // From the second sample: the first holds the warm-up's growth to a working set.
      const base = t[Math.min(1, t.length - 1)] as number;
      const end = t[t.length - 1] as number;
      bits.push(`  RSS every 30 s (MB): ${t.join(' ')}; from 30 s to the end ${end >= base ? '+' : ''}${fmt(end - base, 1)} MB (${fmt(((end - base) / base) * 100, 1)}%)`);
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
