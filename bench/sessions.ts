/**
 * The `sessions` scenario of `npm run bench`: how long a server takes to come back with many persistent
 * MQTT sessions, and what they cost in memory.
 *
 * On a fresh database of its own throwaway PostgreSQL cluster, a server is started once (migrations) and
 * stopped; `sessions` persistent sessions (one `acme/#` QoS 1 subscription each) with `queued` messages
 * each are written straight into the session tables. The server is then started and timed to /ready
 * (sessions read), against a start on the same database with the session tables empty; its RSS is read once
 * it is ready. Then `drain` of the sessions reconnect (clean=false) and receive their queues: each must get
 * exactly its messages, in order.
 */
import mqtt from 'mqtt';
import pg from 'pg';
import { TestPostgres } from '../test/helpers/postgres.js';
import { postmasterPid, readProcFile } from './procs.js';
import type { FaultContext, FaultServer } from './faults.js';

export interface SessionsResult {
  readonly sessions: number;
  readonly queuedEach: number;
  /** Start (spawn) to /ready 200, with the session tables empty and full; the server's own reading time. */
  readonly emptyStartS: number;
  readonly fullStartS: number;
  readonly loadS: number | null;
  readonly rssEmptyMb: number;
  readonly rssFullMb: number;
  readonly drained: { readonly sessions: number; readonly messages: number; readonly seconds: number; readonly missing: number; readonly outOfOrder: number };
  readonly stopS: number;
}

function rssMb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readProcFile(`/proc/${pid}/status`) ?? '');
  return m ? Math.round(Number(m[1]) / 102.4) / 10 : 0;
}

async function sql(url: string, text: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try { await c.query(text); } finally { await c.end().catch(() => undefined); }
}

async function loadMs(port: number): Promise<number | null> {
  const r = await fetch(`http://127.0.0.1:${port}/ready`);
  const body = (await r.json()) as { checks?: { sessions?: { loadMs?: number | null } } };
  return body.checks?.sessions?.loadMs ?? null;
}

/** Reconnects one session and waits for `expected` messages (values 1..expected in order). */
function drainOne(port: number, clientId: string, admin: { username: string; password: string }, expected: number): Promise<{ got: number; outOfOrder: number }> {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { clientId, clean: false, ...admin, reconnectPeriod: 0, connectTimeout: 30_000 });
    let got = 0;
    let outOfOrder = 0;
    const timer = setTimeout(() => { c.end(true); resolve({ got, outOfOrder }); }, 60_000);
    c.on('message', (_t, payload) => {
      got++;
      if ((JSON.parse(payload.toString()) as { value: number }).value !== got) outOfOrder++;
      if (got === expected) { clearTimeout(timer); c.end(false, {}, () => resolve({ got, outOfOrder })); }
    });
    c.once('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

export async function sessionsScenario<S extends FaultServer>(ctx: FaultContext<S>, o: { sessions: number; queued: number; drain: number }): Promise<SessionsResult> {
  const cluster = new TestPostgres({ timescale: false });
  await cluster.start();
  const pgPid = postmasterPid(`${cluster.dir}/data`);
  if (pgPid !== null) ctx.reg.adopt(pgPid, 'sessions postgres', 'SIGINT');
  try {
    const url = await cluster.createDatabase('bench_sessions');
    const dataDir = ctx.tempDir('ub-ses-');
    const timedStart = async (name: string): Promise<{ s: S; seconds: number }> => {
      const t0 = performance.now();
      const s = await ctx.startUns(name, url, {}, { dataDir });
      return { s, seconds: (performance.now() - t0) / 1000 };
    };

    const empty = await timedStart('sessions-empty');
    const rssEmptyMb = rssMb(empty.s.proc.pid);
    await ctx.stopUns(empty.s);

    ctx.progress(`sessions: writing ${o.sessions} sessions x ${o.queued} queued messages into the session tables`);
    const n = o.sessions;
    const m = o.queued;
    await sql(url, `
      INSERT INTO mqtt_sessions SELECT 'bench-' || g, now(), '${ctx.admin.username}' FROM generate_series(1, ${n}) g;
      INSERT INTO mqtt_session_subs SELECT 'bench-' || g, 'acme/#', 1, '{}' FROM generate_series(1, ${n}) g;
      INSERT INTO mqtt_session_queue
        SELECT 'bench-' || g, (g - 1) * ${m} + k,
          jsonb_build_object('cmd', 'publish', 'topic', 'acme/plant1/area1/line' || (g % 10) || '/cell1/temperature', 'qos', 1,
            'retain', false, 'dup', false, 'brokerId', 'bench', 'brokerCounter', (g - 1) * ${m} + k),
          convert_to('{"value":' || k || '}', 'UTF8')
        FROM generate_series(1, ${n}) g, generate_series(1, ${m}) k;
      ANALYZE;
    `);

    ctx.progress('sessions: starting with them');
    const full = await timedStart('sessions-full');
    const rssFullMb = rssMb(full.s.proc.pid);
    const load = await loadMs(full.s.httpPort);

    ctx.progress(`sessions: ${o.drain} of them reconnect and receive their queues`);
    const t0 = performance.now();
    const ids = Array.from({ length: Math.min(o.drain, n) }, (_, i) => `bench-${i + 1}`);
    // The first alone (its password check is then cached), the rest 20 at a time: a burst of logins from one
    // address is what the login throttle is there to refuse.
    const outcomes = [await drainOne(full.s.mqttPort, ids[0]!, ctx.admin, m)];
    for (let i = 1; i < ids.length; i += 20) {
      outcomes.push(...await Promise.all(ids.slice(i, i + 20).map((id) => drainOne(full.s.mqttPort, id, ctx.admin, m))));
    }
    const seconds = (performance.now() - t0) / 1000;
    const got = outcomes.reduce((a, x) => a + x.got, 0);

    const s0 = performance.now();
    await ctx.stopUns(full.s);
    const stopS = (performance.now() - s0) / 1000;
    return {
      sessions: n, queuedEach: m, emptyStartS: empty.seconds, fullStartS: full.seconds, loadS: load === null ? null : load / 1000,
      rssEmptyMb, rssFullMb,
      drained: { sessions: ids.length, messages: got, seconds, missing: ids.length * m - got, outOfOrder: outcomes.reduce((a, x) => a + x.outOfOrder, 0) },
      stopS,
    };
  } finally {
    await cluster.destroy().catch((e: Error) => ctx.progress(`could not stop the sessions PostgreSQL: ${e.message}`));
    ctx.reg.pruneAdopted();
  }
}

export function sessionsReport(r: SessionsResult): string[] {
  const f1 = (x: number): string => x.toFixed(1);
  return [
    '',
    `Persistent sessions: ${r.sessions.toLocaleString('en-US')} sessions x ${r.queuedEach} queued messages (${(r.sessions * r.queuedEach).toLocaleString('en-US')} in all)`,
    `  start to ready: ${f1(r.fullStartS)} s (sessions read in ${r.loadS === null ? '?' : f1(r.loadS)} s); with no sessions: ${f1(r.emptyStartS)} s`,
    `  server RSS when ready: ${f1(r.rssFullMb)} MB (no sessions: ${f1(r.rssEmptyMb)} MB)`,
    `  ${r.drained.sessions} sessions reconnected and received ${r.drained.messages.toLocaleString('en-US')} queued messages in ${f1(r.drained.seconds)} s`
      + ` (${Math.round(r.drained.messages / Math.max(r.drained.seconds, 0.001)).toLocaleString('en-US')} msgs/s); missing ${r.drained.missing}, out of order ${r.drained.outOfOrder}`,
    `  graceful stop: ${f1(r.stopS)} s`,
  ];
}

export function sessionsProblems(r: SessionsResult): string[] {
  const p: string[] = [];
  if (r.drained.missing > 0) p.push(`sessions: ${r.drained.missing} queued messages not delivered after the restart`);
  if (r.drained.outOfOrder > 0) p.push(`sessions: ${r.drained.outOfOrder} queued messages delivered out of order`);
  return p;
}
