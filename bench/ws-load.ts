/**
 * WebSocket stream clients, run as their own process (like load.ts) so parsing the fan-out never shares
 * an event loop with the publishers or the server.
 *
 *   node dist/bench/ws-load.js '<WsLoadConfig as JSON>'
 *
 * Logs in once (POST /api/v1/auth/login), opens one `/ws/datapoints/stream?token=` connection per entry
 * of `filters`, subscribes each to its filter and waits for `subscribed` and `snapshot`. The publishes
 * carry their send time as the value (LoadConfig.stampValue), so each datapoint's latency is the receive
 * time minus its value, on the same clock (performance.timeOrigin + now(), as load.ts stamps it).
 *
 * stdin, one JSON object per line, from the orchestrator: {"cmd":"measure-start","epoch"},
 * {"cmd":"measure-end","epoch"} (the publishers' window), {"cmd":"finish"} (wait until the stream is
 * quiet, close, report). stdout: {"event":"ready"}, then {"event":"result", ...}. Diagnostics: stderr.
 *
 * Points are counted by scanning frames for `"value":` rather than JSON.parse: the server batches a few
 * hundred points per frame and this process reads a few hundred thousand points a second on a machine it
 * shares with the server. Frames that are not datapoints_batch (rare) are parsed properly.
 */
import { performance, monitorEventLoopDelay } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import WebSocket from 'ws';
import { Histogram, type LatencySummary } from './histogram.js';

export interface WsLoadConfig {
  readonly host: string;
  readonly httpPort: number;
  readonly username: string;
  readonly password: string;
  /** One connection per filter; `classes[i]` names the kind of filter i for the report (enterprise, site, area). */
  readonly filters: readonly string[];
  readonly classes: readonly string[];
  /** The stream is quiet when no point arrived for this long (finish). */
  readonly quietMs: number;
  readonly finishTimeoutMs: number;
}

export interface WsClassResult {
  readonly clients: number;
  /** Points whose send time lies in the measured window, per second, over all clients of the class. */
  readonly perS: number;
  readonly latency: LatencySummary;
  /** Points received over the whole run (live batches only, no snapshot). */
  readonly receivedTotal: number;
}

export interface WsLoadResult {
  readonly event: 'result';
  readonly clients: number;
  readonly windowS: number;
  readonly receivedInWindow: number;
  readonly perS: number;
  /** Every point sent in the window: send time -> receipt by the client. */
  readonly latency: LatencySummary;
  /**
   * The newest point of each frame (the one that waited least in the server's batch): what the path costs
   * without the batching delay.
   */
  readonly newestInFrame: LatencySummary;
  readonly byClass: Readonly<Record<string, WsClassResult>>;
  /** Per client, in the order of `filters`: points received over the whole run. */
  readonly receivedPerClient: readonly number[];
  readonly frames: number;
  /** Mean datapoints per datapoints_batch frame, and the mean frame size. */
  readonly pointsPerFrame: number;
  readonly bytesPerFrame: number;
  /** `gap` notices: how many, and the points and frames they say were dropped. */
  readonly gapNotices: number;
  readonly gapDroppedPoints: number;
  readonly gapDroppedFrames: number;
  readonly errors: readonly string[];
  /** Connections closed by the server (or the network) before finish, with code and reason. */
  readonly closedEarly: readonly string[];
  readonly connectMs: number;
  readonly loadCpuPct: number;
  readonly loopLagP99Ms: number;
}

const LOOP_RESOLUTION_MS = 5;
const epochNow = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const emit = (obj: object): void => { process.stdout.write(`${JSON.stringify(obj)}\n`); };

const BATCH_PREFIX = Buffer.from('{"type":"datapoints_batch"');
const VALUE_KEY = Buffer.from('"value":');

async function login(cfg: WsLoadConfig): Promise<string> {
  const res = await fetch(`http://${cfg.host}:${cfg.httpPort}/api/v1/auth/login`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: cfg.username, password: cfg.password }),
  });
  const body = (await res.json()) as { access_token?: string };
  if (res.status !== 200 || typeof body.access_token !== 'string') throw new Error(`login: HTTP ${res.status} ${JSON.stringify(body)}`);
  return body.access_token;
}

async function run(cfg: WsLoadConfig): Promise<WsLoadResult> {
  const token = await login(cfg);
  const url = `ws://${cfg.host}:${cfg.httpPort}/ws/datapoints/stream?token=${encodeURIComponent(token)}`;
  const classNames = [...new Set(cfg.classes)];
  const all = new Histogram();
  const newest = new Histogram();
  const byClass = new Map(classNames.map((c) => [c, { hist: new Histogram(), inWindow: 0, total: 0, clients: 0 }]));
  const received = new Array<number>(cfg.filters.length).fill(0);
  const errors: string[] = [];
  const closedEarly: string[] = [];
  const noteError = (e: string): void => { if (errors.length < 50) errors.push(e); };
  let windowStart = Number.POSITIVE_INFINITY;
  let windowEnd = Number.POSITIVE_INFINITY;
  let inWindow = 0;
  let frames = 0;
  let framePoints = 0;
  let frameBytes = 0;
  let gapNotices = 0;
  let gapPoints = 0;
  let gapFrames = 0;
  let lastPointAt = performance.now();
  let finishing = false;

  const onBatch = (i: number, cls: NonNullable<ReturnType<typeof byClass.get>>, buf: Buffer, at: number): void => {
    frames++;
    frameBytes += buf.length;
    let n = 0;
    let best = Number.POSITIVE_INFINITY;
    let k = buf.indexOf(VALUE_KEY, BATCH_PREFIX.length);
    while (k >= 0) {
      const from = k + VALUE_KEY.length;
      let to = from;
      while (to < buf.length && buf[to] !== 44 /* , */ && buf[to] !== 125 /* } */) to++;
      const sent = Number(buf.toString('latin1', from, to));
      n++;
      if (sent >= windowStart && sent < windowEnd) {
        const ms = at - sent;
        all.record(ms);
        cls.hist.record(ms);
        cls.inWindow++;
        inWindow++;
        if (ms < best) best = ms;
      }
      k = buf.indexOf(VALUE_KEY, to);
    }
    if (best !== Number.POSITIVE_INFINITY) newest.record(best);
    framePoints += n;
    cls.total += n;
    received[i] = (received[i] ?? 0) + n;
    lastPointAt = performance.now();
  };

  const onOther = (i: number, text: string, pending: Map<string, () => void>): void => {
    let msg: { type?: string; id?: string; dropped?: number; frames?: number; error?: { code?: string; message?: string } };
    try { msg = JSON.parse(text) as typeof msg; } catch { noteError(`client ${i}: unparsable frame ${text.slice(0, 80)}`); return; }
    switch (msg.type) {
      case 'gap':
        gapNotices++;
        gapPoints += msg.dropped ?? 0;
        gapFrames += msg.frames ?? 0;
        return;
      case 'snapshot':
        if (msg.id !== undefined) pending.get(msg.id)?.();
        return;
      case 'error':
        noteError(`client ${i}: ${msg.error?.code ?? '?'} ${msg.error?.message ?? ''}`);
        return;
      default: // subscribed, heartbeat, history: nothing to count
        return;
    }
  };

  const t0 = performance.now();
  const sockets: WebSocket[] = [];
  const connectOne = (i: number): Promise<void> => new Promise((resolve, reject) => {
    const filter = cfg.filters[i] as string;
    const clsName = cfg.classes[i] ?? 'other';
    const cls = byClass.get(clsName) ?? { hist: new Histogram(), inWindow: 0, total: 0, clients: 0 };
    byClass.set(clsName, cls);
    cls.clients++;
    const ws = new WebSocket(url, { perMessageDeflate: false });
    sockets.push(ws);
    const pending = new Map<string, () => void>();
    let ready = false;
    const timer = setTimeout(() => reject(new Error(`client ${i} (${filter}): no snapshot within 20 s`)), 20_000);
    ws.on('open', () => {
      const id = `s${i}`;
      pending.set(id, () => { ready = true; clearTimeout(timer); resolve(); });
      ws.send(JSON.stringify({ type: 'subscribe', id, filters: [filter] }));
    });
    ws.on('message', (data: WebSocket.RawData, isBinary: boolean) => {
      const at = epochNow();
      const buf = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data);
      if (!isBinary && buf.length > BATCH_PREFIX.length && buf.subarray(0, BATCH_PREFIX.length).equals(BATCH_PREFIX)) onBatch(i, cls, buf, at);
      else onOther(i, buf.toString('utf8'), pending);
    });
    ws.on('unexpected-response', (_req, res) => { clearTimeout(timer); reject(new Error(`client ${i}: HTTP ${res.statusCode} on upgrade`)); });
    ws.on('error', (e) => { if (!ready) { clearTimeout(timer); reject(e); } else noteError(`client ${i}: ${e.message}`); });
    ws.on('close', (code, reason) => {
      if (!finishing) closedEarly.push(`client ${i} (${filter}): ${code} ${reason.toString()}`);
      if (!ready) { clearTimeout(timer); reject(new Error(`client ${i}: closed ${code} before its snapshot`)); }
    });
  });
  for (let i = 0; i < cfg.filters.length; i += 20) {
    await Promise.all(cfg.filters.slice(i, i + 20).map((_, k) => connectOne(i + k)));
  }
  const connectMs = Math.round(performance.now() - t0);
  emit({ event: 'ready', clients: sockets.length, connectMs });

  const loop = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
  let cpu0: NodeJS.CpuUsage | null = null;
  let cpuUsed: NodeJS.CpuUsage | null = null;
  let wall0 = 0;
  let wallMs = 0;
  await new Promise<void>((resolve) => {
    const rl = createInterface({ input: process.stdin });
    rl.on('line', (line) => {
      let c: { cmd?: string; epoch?: number };
      try { c = JSON.parse(line) as typeof c; } catch { return; }
      if (c.cmd === 'measure-start' && typeof c.epoch === 'number') {
        windowStart = c.epoch;
        loop.enable();
        cpu0 = process.cpuUsage();
        wall0 = performance.now();
      } else if (c.cmd === 'measure-end' && typeof c.epoch === 'number') {
        windowEnd = c.epoch;
        loop.disable();
        if (cpu0) { cpuUsed = process.cpuUsage(cpu0); wallMs = performance.now() - wall0; }
      } else if (c.cmd === 'finish') {
        rl.close();
        resolve();
      }
    });
    rl.on('close', () => resolve());
  });

  // Points still in flight (server batches, socket buffers): wait for a quiet stream.
  const until = performance.now() + cfg.finishTimeoutMs;
  while (performance.now() - lastPointAt < cfg.quietMs && performance.now() < until) await sleep(50);
  finishing = true;
  await Promise.all(sockets.map((ws) => new Promise<void>((resolve) => {
    if (ws.readyState === WebSocket.CLOSED) { resolve(); return; }
    const t = setTimeout(() => { ws.terminate(); resolve(); }, 2_000);
    ws.once('close', () => { clearTimeout(t); resolve(); });
    ws.close(1000, 'bench done');
  })));

  const windowS = Number.isFinite(windowEnd) && Number.isFinite(windowStart) ? (windowEnd - windowStart) / 1000 : 0;
  const used = cpuUsed as NodeJS.CpuUsage | null;
  const classes: Record<string, WsClassResult> = {};
  for (const [name, c] of byClass) {
    classes[name] = { clients: c.clients, perS: windowS > 0 ? Math.round(c.inWindow / windowS) : 0, latency: c.hist.summary(), receivedTotal: c.total };
  }
  return {
    event: 'result',
    clients: sockets.length,
    windowS: Math.round(windowS * 1000) / 1000,
    receivedInWindow: inWindow,
    perS: windowS > 0 ? Math.round(inWindow / windowS) : 0,
    latency: all.summary(),
    newestInFrame: newest.summary(),
    byClass: classes,
    receivedPerClient: received,
    frames,
    pointsPerFrame: frames === 0 ? 0 : Math.round((framePoints / frames) * 10) / 10,
    bytesPerFrame: frames === 0 ? 0 : Math.round(frameBytes / frames),
    gapNotices,
    gapDroppedPoints: gapPoints,
    gapDroppedFrames: gapFrames,
    errors,
    closedEarly,
    connectMs,
    loadCpuPct: used && wallMs > 0 ? Math.round(((used.user + used.system) / 1000 / wallMs) * 1000) / 10 : 0,
    loopLagP99Ms: loop.count === 0 ? 0 : Math.max(0, Math.round(loop.percentile(99) / 1e4 - LOOP_RESOLUTION_MS * 100) / 100),
  };
}

const arg = process.argv[2];
if (arg === undefined) {
  process.stderr.write("usage: node dist/bench/ws-load.js '<WsLoadConfig JSON>'\n");
  process.exit(64);
}
run(JSON.parse(arg) as WsLoadConfig).then(
  (r) => { emit(r); process.exit(0); },
  (e: Error) => { process.stderr.write(`ws-load: ${e.stack ?? e.message}\n`); process.exit(1); },
);
