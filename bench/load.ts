/**
 * Load generator, run as its own process so it never shares an event loop with the server it measures.
 *
 *   node dist/bench/load.js '<LoadConfig as JSON>'
 *
 * N publishers each keep up to `window` QoS 1 publishes in flight over their own TCP connection, cycling
 * over their own topics (catch-all route: stored as JSON, no deadband, so every acknowledged message is one
 * row). With `rate` > 0 the publishes follow a fixed schedule instead; PUBACK latency is then measured from
 * the scheduled time, so a full window shows up as latency rather than being hidden (coordinated omission).
 * Subscribers (`subscribers`, 1 by default) measure publish -> delivery latency from the timestamp in the
 * payload: the first on `acme/#`, the others in turn on `acme/<site>/#` and `acme/<site>/<area>/#`, so their
 * filters overlap; at the end every subscriber's deliveries are checked against what its filter covers.
 *
 * stdout: one JSON object per line: {"event":"connected"}, {"event":"measure-start","epoch"},
 * {"event":"measure-end","epoch"} (epoch: the payload clock at the window's edges, epoch ms), and last
 * {"event":"result", ...}. Diagnostics go to stderr.
 */
import { performance, monitorEventLoopDelay } from 'node:perf_hooks';
import { LiteClient } from './mqtt-lite.js';
import { Histogram, type LatencySummary } from './histogram.js';
import { ALL_AREAS, SITES, areaOf, filterCoversArea, topicsFor } from './topics.js';
import { EdgeFrames } from './sparkplug-frames.js';

export interface LoadConfig {
  readonly label: string;
  readonly host: string;
  readonly port: number;
  readonly username?: string;
  readonly password?: string;
  readonly publishers: number;
  /** QoS 1 publishes in flight per publisher. */
  readonly window: number;
  readonly topicsPerPublisher: number;
  readonly warmupS: number;
  readonly seconds: number;
  /** Messages per second over all publishers; 0 = as fast as the windows allow. */
  readonly rate: number;
  readonly subscribe: boolean;
  /** How many subscribers when `subscribe` (1). */
  readonly subscribers?: number;
  readonly drainTimeoutS: number;
  /** Cluster runs: publishers go round-robin to these ports (else `port`), the subscriber to `subscriberPort`. */
  readonly publisherPorts?: readonly number[];
  readonly subscriberPort?: number;
  /**
   * The payload's value is its send time (epoch ms, 3 decimals) instead of a sensor-like reading, so a
   * consumer that only sees the value (the WebSocket stream sends the timestamp at ms precision) can
   * measure latency to the microsecond.
   */
  readonly stampValue?: boolean;
  /**
   * Sparkplug B instead of JSON: each publisher is an edge node with this many devices of this many Double
   * metrics; it sends its births, then DDATA (every metric by alias) device after device.
   */
  readonly sparkplug?: { readonly devices: number; readonly metrics: number };
}

export interface LoadResult {
  readonly event: 'result';
  readonly label: string;
  readonly publishers: number;
  readonly topics: number;
  readonly window: number;
  readonly rate: number;
  readonly measuredS: number;
  readonly sent: number;
  readonly acked: number;
  readonly ackedPerS: number;
  readonly puback: LatencySummary;
  readonly sub: LatencySummary & { readonly receivedInWindow: number; readonly receivedTotal: number; readonly subscribers: number; readonly expectedTotal: number };
  readonly totalSent: number;
  readonly totalAcked: number;
  readonly unackedAtEnd: number;
  /** Rate mode: publishes that had to wait for a free window slot, the longest such queue, and any left unsent. */
  readonly deferred: number;
  readonly maxBacklog: number;
  readonly backlogUnsent: number;
  readonly connectionErrors: readonly string[];
  /** Publishes acknowledged over the whole run per `acme/<site>/<area>`: what a filtered consumer should see. */
  readonly ackedByArea: Readonly<Record<string, number>>;
  readonly loadCpuPct: number;
  /** How late the generator's own event loop ran (p99, beyond the 5 ms sampling timer): its latency figures are this precise. */
  readonly loopLagP99Ms: number;
}

type Phase = 'setup' | 'warmup' | 'measure' | 'drain';

function emit(obj: object): void {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

/** The event-loop monitor's timer period; what it records is that period plus any lag. */
const LOOP_RESOLUTION_MS = 5;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** Epoch milliseconds with sub-millisecond resolution; the same clock stamps payloads and reads them back. */
const epochNow = (): number => performance.timeOrigin + performance.now();

async function run(cfg: LoadConfig): Promise<LoadResult> {
  let phase: Phase = 'setup';
  const pubHist = new Histogram();
  const subHist = new Histogram();
  const errors: string[] = [];
  let totalSent = 0;
  let totalAcked = 0;
  let windowSent = 0;
  let windowAcked = 0;
  let subTotal = 0;
  let subInWindow = 0;
  let deferred = 0;
  let maxBacklog = 0;
  let measureStartEpoch = Number.POSITIVE_INFINITY;
  const producing = (): boolean => phase === 'warmup' || phase === 'measure';
  const noteError = (what: string): void => { if (errors.length < 50) errors.push(what); };

  class Publisher {
    readonly client: LiteClient;
    readonly topics: Buffer[];
    readonly values: number[];
    /** Start time (performance.now) per packet id; the window is far smaller than 65535, so ids never collide. */
    readonly sentAt = new Float64Array(65_536);
    readonly backlog: number[] = [];
    backlogHead = 0;
    inflight = 0;
    nextId = 1;
    nextTopic = 0;
    acked = 0;
    readonly frames: EdgeFrames | null;

    constructor(readonly index: number) {
      this.frames = cfg.sparkplug ? new EdgeFrames(index, cfg.sparkplug.devices, cfg.sparkplug.metrics) : null;
      this.topics = topicsFor(index, cfg.topicsPerPublisher).map((t) => Buffer.from(t, 'utf8'));
      this.values = this.topics.map((_, j) => 20 + ((index * 7 + j * 13) % 60));
      this.client = new LiteClient(
        { host: cfg.host, port: cfg.publisherPorts?.[index % cfg.publisherPorts.length] ?? cfg.port, clientId: `bench-pub-${index}`, username: cfg.username, password: cfg.password, keepaliveS: 60 },
        { onPuback: (id) => this.onPuback(id), onClose: (e) => noteError(`publisher ${index} connection closed${e ? `: ${e.message}` : ''}`) },
      );
    }

    send(startedAt: number): void {
      if (this.frames !== null) {
        const f = this.frames.next(epochNow());
        this.sendRaw(f.topic, f.payload, startedAt);
        return;
      }
      const j = this.nextTopic;
      this.nextTopic = j + 1 === this.topics.length ? 0 : j + 1;
      let value: string;
      if (cfg.stampValue) {
        // The scheduled time, as for the PUBACK latency: a publish that waited for a window slot shows that
        // wait downstream too.
        value = (performance.timeOrigin + startedAt).toFixed(3);
      } else {
        const v = (this.values[j] as number) + (Math.random() - 0.5) * 0.5;
        this.values[j] = v;
        value = v.toFixed(2);
      }
      const payload = `{"value": ${value}, "timestamp": ${epochNow().toFixed(3)}, "quality": "good"}`;
      this.sendRaw(this.topics[j] as Buffer, payload, startedAt);
    }

    sendRaw(topic: Buffer, payload: string | Buffer, startedAt: number): void {
      const id = this.nextId;
      this.nextId = id === 65_535 ? 1 : id + 1;
      this.sentAt[id] = startedAt;
      this.inflight++;
      totalSent++;
      if (phase === 'measure') windowSent++;
      this.client.publishQos1(topic, id, payload);
    }

    /** Rate mode: a publish is due at `scheduledAt`; send it now if the window has room, else queue it. */
    offer(scheduledAt: number): void {
      if (this.inflight < cfg.window) { this.send(scheduledAt); return; }
      this.backlog.push(scheduledAt);
      deferred++;
      const depth = this.backlog.length - this.backlogHead;
      if (depth > maxBacklog) maxBacklog = depth;
    }

    onPuback(id: number): void {
      const now = performance.now();
      this.inflight--;
      this.acked++;
      totalAcked++;
      if (phase === 'measure') {
        windowAcked++;
        pubHist.record(now - (this.sentAt[id] ?? now));
      }
      if (!producing()) return;
      if (cfg.rate <= 0) { this.send(now); return; }
      if (this.backlogHead < this.backlog.length) {
        const scheduledAt = this.backlog[this.backlogHead++] as number;
        if (this.backlogHead > 1024 && this.backlogHead * 2 > this.backlog.length) {
          this.backlog.splice(0, this.backlogHead);
          this.backlogHead = 0;
        }
        this.send(scheduledAt);
      }
    }

    get backlogDepth(): number {
      return this.backlog.length - this.backlogHead;
    }
  }

  const TS_KEY = Buffer.from('"timestamp": ');
  const onDelivery = (_topic: string, payload: Buffer): void => {
    subTotal++;
    const k = payload.indexOf(TS_KEY);
    if (k < 0) return;
    const from = k + TS_KEY.length;
    let to = from;
    while (to < payload.length && payload[to] !== 44 /* , */ && payload[to] !== 125 /* } */) to++;
    const sentEpoch = Number(payload.toString('latin1', from, to));
    if (phase === 'measure' && sentEpoch >= measureStartEpoch) {
      subInWindow++;
      subHist.record(epochNow() - sentEpoch);
    }
  };

  const subCount = cfg.subscribe ? (cfg.subscribers ?? 1) : 0;
  const subscribers = Array.from({ length: subCount }, (_, i) => {
    const filter = subscriberFilter(i);
    const sub = {
      filter, received: 0,
      client: new LiteClient(
        { host: cfg.host, port: cfg.subscriberPort ?? cfg.port, clientId: `bench-sub-${i}`, username: cfg.username, password: cfg.password, keepaliveS: 60 },
        { onPublish: (topic, payload) => { sub.received++; onDelivery(topic, payload); }, onClose: (e) => noteError(`subscriber ${i} connection closed${e ? `: ${e.message}` : ''}`) },
      ),
    };
    return sub;
  });
  const pubs = Array.from({ length: cfg.publishers }, (_, i) => new Publisher(i));

  // Subscribers first, then publishers, each in waves (inWaves).
  const subscribeOne = async (sub: (typeof subscribers)[number]): Promise<void> => {
    await sub.client.connect();
    const granted = await sub.client.subscribe(sub.filter, 0);
    if (granted[0] !== 0) throw new Error(`subscription to ${sub.filter} refused (SUBACK ${granted.join(',')})`);
  };
  await inWaves(subscribers, subscribeOne);
  await inWaves(pubs, (p) => p.client.connect());
  emit({ event: 'connected', publishers: pubs.length, topics: pubs.length * cfg.topicsPerPublisher });
  // Sparkplug: every node's births, acknowledged (stored), before any DATA.
  for (const p of pubs) for (const b of p.frames?.births ?? []) p.sendRaw(b.topic, b.payload, performance.now());
  const birthsBy = performance.now() + 60_000;
  while (pubs.some((p) => p.inflight > 0 && p.client.isOpen) && performance.now() < birthsBy) await sleep(20);

  const loop = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
  phase = 'warmup';
  let ticker: NodeJS.Timeout | null = null;
  if (cfg.rate > 0) {
    const t0 = performance.now();
    let scheduled = 0;
    let rr = 0;
    ticker = setInterval(() => {
      if (!producing()) return;
      const due = Math.floor(((performance.now() - t0) * cfg.rate) / 1000);
      while (scheduled < due) {
        (pubs[rr] as Publisher).offer(t0 + (scheduled * 1000) / cfg.rate);
        rr = rr + 1 === pubs.length ? 0 : rr + 1;
        scheduled++;
      }
    }, 1);
  } else {
    for (const p of pubs) for (let k = 0; k < cfg.window; k++) p.send(performance.now());
  }

  await sleep(cfg.warmupS * 1000);
  phase = 'measure';
  measureStartEpoch = epochNow();
  loop.enable();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  emit({ event: 'measure-start', epoch: measureStartEpoch });
  await sleep(cfg.seconds * 1000);
  phase = 'drain';
  const measureEndEpoch = epochNow();
  const measuredMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  loop.disable();
  if (ticker) clearInterval(ticker);
  emit({ event: 'measure-end', acked: windowAcked, epoch: measureEndEpoch });

  // Drain: nothing new is sent; wait for what is in flight to be acknowledged and delivered.
  const backlogUnsent = pubs.reduce((n, p) => n + p.backlogDepth, 0);
  const drainUntil = performance.now() + cfg.drainTimeoutS * 1000;
  while (pubs.some((p) => p.inflight > 0 && p.client.isOpen) && performance.now() < drainUntil) await sleep(20);
  const ackedByArea: Record<string, number> = {};
  for (const p of pubs) ackedByArea[areaOf(p.index)] = (ackedByArea[areaOf(p.index)] ?? 0) + p.acked;
  // Every acknowledged message, once per subscriber whose filter covers its area.
  const subExpected = subscribers.reduce((n, sub) => n + Object.entries(ackedByArea).reduce((m, [area, c]) => m + (filterCoversArea(sub.filter, area) ? c : 0), 0), 0);
  if (subscribers.length > 0) {
    let last = -1;
    const quietUntil = performance.now() + 5_000;
    while (subTotal !== last && subTotal < subExpected && performance.now() < quietUntil) { last = subTotal; await sleep(300); }
  }
  const unackedAtEnd = pubs.reduce((n, p) => n + p.inflight, 0);
  await Promise.all([...pubs.map((p) => p.client.end()), ...subscribers.map((sub) => sub.client.end())]);

  return {
    event: 'result',
    label: cfg.label,
    publishers: pubs.length,
    topics: pubs.length * (cfg.sparkplug ? cfg.sparkplug.devices * cfg.sparkplug.metrics : cfg.topicsPerPublisher),
    window: cfg.window,
    rate: cfg.rate,
    measuredS: Math.round(measuredMs) / 1000,
    sent: windowSent,
    acked: windowAcked,
    ackedPerS: Math.round((windowAcked * 1000) / measuredMs),
    puback: pubHist.summary(),
    sub: { ...subHist.summary(), receivedInWindow: subInWindow, receivedTotal: subTotal, subscribers: subscribers.length, expectedTotal: subExpected },
    totalSent,
    totalAcked,
    unackedAtEnd,
    deferred,
    maxBacklog,
    backlogUnsent,
    connectionErrors: errors,
    ackedByArea,
    loadCpuPct: Math.round(((cpu.user + cpu.system) / 1000 / measuredMs) * 1000) / 10,
    loopLagP99Ms: Math.max(0, Math.round(loop.percentile(99) / 1e4 - LOOP_RESOLUTION_MS * 100) / 100),
  };
}

/** Connects clients: the first alone (a password check may be cached after it), then the rest a few dozen at a time. */
async function inWaves<T>(items: readonly T[], connect: (item: T) => Promise<void>): Promise<void> {
  if (items[0] !== undefined) await connect(items[0]);
  for (let i = 1; i < items.length; i += 50) await Promise.all(items.slice(i, i + 50).map(connect));
}

/** Subscriber i's filter: `acme/#` first, then sites and areas in turn (overlapping filters). */
function subscriberFilter(i: number): string {
  if (i === 0) return 'acme/#';
  const shapes = [...SITES.map((site) => `acme/${site}/#`), ...ALL_AREAS.map((area) => `${area}/#`)];
  return shapes[(i - 1) % shapes.length] as string;
}

const arg = process.argv[2];
if (arg === undefined) {
  process.stderr.write("usage: node dist/bench/load.js '<LoadConfig JSON>'\n");
  process.exit(64);
}
run(JSON.parse(arg) as LoadConfig).then(
  (r) => { emit(r); process.exit(0); },
  (e: Error) => { process.stderr.write(`load: ${e.stack ?? e.message}\n`); process.exit(1); },
);
