/**
 * Cluster mode (UNS_CLUSTER=redis://…): the instances of one namespace talk over Redis pub/sub.
 *
 * One channel carries batches of frames (one PUBLISH per turn of the event loop, v8-serialised: exact for
 * bigints and bytes):
 *   p         an MQTT publish made on this instance (by a client or by the server), for the broker of
 *             every other instance to deliver to its own subscribers and persistent sessions;
 *   m         a message accepted here, for the WebSocket/SSE streams of every other instance;
 *   hb        this instance is alive, with its MQTT connection count (every second: peers are those heard
 *             from within the last 5 s);
 *   release / released   the hand-over of a persistent session to the instance its client connects to;
 *   webhooks  webhooks were created, changed or removed here: the others reload theirs now.
 *
 * Local delivery never goes through Redis and never waits for it: during a Redis outage each instance
 * keeps accepting, storing, acknowledging and delivering what its own clients publish; frames for the
 * others are dropped and counted (the messages are in the shared store), and /ready says degraded.
 * Redis keeps nothing of ours: no persistence of Redis is needed.
 */
import { EventEmitter } from 'node:events';
import { serialize, deserialize } from 'node:v8';
import { Redis } from 'ioredis';
import type { Logger } from '../src/core/index.js';
import type { UnsMessage } from '../src/core/index.js';

export interface ClusterPacket {
  readonly topic: string;
  readonly payload: Uint8Array;
  readonly qos: 0 | 1 | 2;
  readonly retain: boolean;
  readonly brokerId: string;
  readonly brokerCounter: number;
  readonly properties?: Record<string, unknown> | undefined;
}

export type ClusterFrame =
  | { readonly k: 'p'; readonly packet: ClusterPacket }
  | { readonly k: 'm'; readonly msg: UnsMessage }
  | { readonly k: 'hb'; readonly clients: number }
  | { readonly k: 'webhooks' }
  | { readonly k: 'release'; readonly client: string; readonly to: string }
  | { readonly k: 'released'; readonly client: string; readonly to: string };

export interface ClusterOptions {
  readonly url: string;
  readonly instanceId: string;
  /** Channel name prefix: instances with the same one form a cluster. */
  readonly channel: string;
  readonly log: Logger;
  /** This instance's MQTT connections, told to the others with each heartbeat. */
  readonly clients: () => number;
  readonly heartbeatMs?: number;
  readonly peerTimeoutMs?: number;
}

export interface ClusterPeer { readonly id: string; readonly clients: number; readonly lastSeen: number }

export interface ClusterStats {
  connected: boolean;
  /** When Redis was last lost (null while connected), and why. */
  downSince: number | null;
  lastError: string | null;
  /** Frames sent to and received from the other instances; frames not sent while Redis was away. */
  framesOut: number;
  framesIn: number;
  dropped: number;
  /** Redis PUBLISH commands (one per batch). */
  publishes: number;
}

export class ClusterBus extends EventEmitter {
  readonly stats: ClusterStats = { connected: false, downSince: Date.now(), lastError: 'connecting', framesOut: 0, framesIn: 0, dropped: 0, publishes: 0 };
  readonly channel: string;
  private readonly pub: Redis;
  private readonly sub: Redis;
  private readonly peers = new Map<string, ClusterPeer>();
  private batch: ClusterFrame[] = [];
  private flushQueued = false;
  private readonly heartbeat: NodeJS.Timeout;
  private pubReady = false;
  private subReady = false;
  private closed = false;
  private everUp = false;
  private readonly peerTimeoutMs: number;

  constructor(private readonly opts: ClusterOptions) {
    super();
    this.channel = `${opts.channel}:bus`;
    this.peerTimeoutMs = opts.peerTimeoutMs ?? 5_000;
    const common = {
      // Reconnect for ever, every 0.2 to 2 s; never queue a command while Redis is away (the caller counts it).
      retryStrategy: (n: number) => Math.min(200 * n, 2_000),
      maxRetriesPerRequest: 1,
      connectionName: `uns-bridge:${opts.instanceId}`,
    };
    this.pub = new Redis(opts.url, { ...common, enableOfflineQueue: false });
    this.sub = new Redis(opts.url, { ...common, enableOfflineQueue: true });
    this.pub.on('ready', () => { this.pubReady = true; this.state(); });
    this.sub.on('ready', () => { this.subReady = true; this.state(); });
    for (const [name, c] of [['pub', this.pub], ['sub', this.sub]] as const) {
      c.on('error', (e: Error) => { this.stats.lastError = e.message; });
      c.on('close', () => {
        if (name === 'pub') this.pubReady = false;
        else this.subReady = false;
        this.state();
      });
    }
    this.sub.on('messageBuffer', (_channel: Buffer, message: Buffer) => this.receive(message));
    this.sub.subscribe(this.channel).catch((e: Error) => { this.stats.lastError = e.message; });
    this.heartbeat = setInterval(() => this.send({ k: 'hb', clients: opts.clients() }), opts.heartbeatMs ?? 1_000);
    this.heartbeat.unref();
  }

  get instanceId(): string {
    return this.opts.instanceId;
  }

  /** The other instances heard from within the peer timeout. */
  livePeers(now = Date.now()): ClusterPeer[] {
    return [...this.peers.values()].filter((p) => now - p.lastSeen <= this.peerTimeoutMs);
  }

  isLive(id: string, now = Date.now()): boolean {
    const p = this.peers.get(id);
    return p !== undefined && now - p.lastSeen <= this.peerTimeoutMs;
  }

  /** Queues a frame for the next batch; false (and counted) while Redis is away. */
  send(frame: ClusterFrame): boolean {
    if (this.closed) return false;
    if (!this.stats.connected) {
      if (frame.k === 'p' || frame.k === 'm') this.stats.dropped++;
      return false;
    }
    this.batch.push(frame);
    if (!this.flushQueued) {
      this.flushQueued = true;
      setImmediate(() => this.flush());
    }
    return true;
  }

  /** Resolves when a frame matching `test` arrives, or with null after `ms`. */
  waitFor(test: (f: ClusterFrame, origin: string) => boolean, ms: number): Promise<ClusterFrame | null> {
    return new Promise((resolve) => {
      const on = (f: ClusterFrame, origin: string): void => {
        if (!test(f, origin)) return;
        clearTimeout(timer);
        this.off('frame', on);
        resolve(f);
      };
      const timer = setTimeout(() => { this.off('frame', on); resolve(null); }, ms);
      this.on('frame', on);
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    clearInterval(this.heartbeat);
    await Promise.all([this.pub.quit().catch(() => this.pub.disconnect()), this.sub.quit().catch(() => this.sub.disconnect())]);
  }

  private flush(): void {
    this.flushQueued = false;
    const frames = this.batch;
    if (frames.length === 0) return;
    this.batch = [];
    let body: Buffer;
    try {
      body = serialize({ o: this.opts.instanceId, f: frames });
    } catch (e) {
      this.stats.dropped += frames.length;
      this.opts.log.warn({ err: (e as Error).message }, 'cluster frames could not be encoded');
      return;
    }
    this.stats.publishes++;
    this.stats.framesOut += frames.length;
    this.pub.publish(this.channel, body).catch((e: Error) => {
      this.stats.dropped += frames.filter((f) => f.k === 'p' || f.k === 'm').length;
      this.stats.lastError = e.message;
    });
  }

  private receive(message: Buffer): void {
    let decoded: { o: string; f: ClusterFrame[] };
    try {
      decoded = deserialize(message) as { o: string; f: ClusterFrame[] };
    } catch (e) {
      this.opts.log.warn({ err: (e as Error).message }, 'cluster frame not understood (another version on the channel?)');
      return;
    }
    const origin = decoded.o;
    if (origin === this.opts.instanceId) return;
    const now = Date.now();
    for (const f of decoded.f) {
      this.stats.framesIn++;
      if (f.k === 'hb') {
        if (!this.isLive(origin, now)) this.opts.log.info({ peer: origin }, 'cluster peer seen');
        this.peers.set(origin, { id: origin, clients: f.clients, lastSeen: now });
        continue;
      }
      const known = this.peers.get(origin);
      if (known !== undefined) this.peers.set(origin, { ...known, lastSeen: now });
      this.emit('frame', f, origin);
    }
  }

  private state(): void {
    const up = this.pubReady && this.subReady;
    if (up === this.stats.connected) return;
    this.stats.connected = up;
    if (up) {
      const downSince = this.everUp && this.stats.downSince !== null ? new Date(this.stats.downSince).toISOString() : undefined;
      this.everUp = true;
      this.opts.log.info({ redis: redact(this.opts.url), ...(downSince !== undefined ? { downSince } : {}) }, 'cluster: connected to Redis');
      this.stats.downSince = null;
      this.stats.lastError = null;
      this.send({ k: 'hb', clients: this.opts.clients() });
    } else if (!this.closed) {
      this.stats.downSince = Date.now();
      this.stats.lastError ??= 'connection closed';
      this.opts.log.warn({ redis: redact(this.opts.url), err: this.stats.lastError }, 'cluster: Redis lost; local delivery goes on, the other instances miss what is published here until it returns');
    }
    this.emit('state', up);
  }
}

/** The Redis URL without its password, for logs and /ready. */
export function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '***';
    return u.toString();
  } catch {
    return 'redis://(unparsable URL)';
  }
}
