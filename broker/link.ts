/**
 * External-broker mode: uns-bridge attached to an existing broker (Mosquitto, EMQX, HiveMQ) as an MQTT 5
 * client, instead of embedding one. Several instances split the load through one shared subscription
 * (`$share/<group>/<filter>`); each message is acknowledged to the broker only once the pipeline says it is
 * durable, so a message whose bridge dies is delivered again (the session is persistent) and never lost.
 *
 * The session is spoken with mqtt-packet (the codec of MQTT.js and Aedes) rather than MQTT.js itself:
 * MQTT.js handles incoming messages one at a time and acknowledges each before it reads the next, which
 * would make ack-after-commit one message per database commit. Here many messages are in flight at once
 * (up to the Receive Maximum this client announces) and each PUBACK goes out when its own message is
 * durable, in whatever order commits finish.
 */
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import mqttPacket, { type IPublishPacket, type Packet } from 'mqtt-packet';
import type { IngestFn, InboundRecord, Logger } from '../src/core/index.js';
import { deadLetter, UnsError } from '../src/core/index.js';

/**
 * User property on every message the server publishes through the link (HTTP publish, Sparkplug STATE and
 * commands, republished metrics): when it comes back through the shared subscription it is not ingested a
 * second time (the door it entered by has already handled it).
 */
export const ORIGIN_PROPERTY = 'uns-bridge-origin';

export interface BrokerLinkOptions {
  /** mqtt://host:port or mqtts://host:port. */
  readonly url: string;
  readonly clientId: string;
  readonly username: string | null;
  readonly password: string | null;
  /** CA bundle for mqtts:// (the system's CAs otherwise). */
  readonly ca: Buffer | null;
  /** Shared subscription group: instances with one group split the messages. */
  readonly group: string;
  /** What to ingest: one shared subscription per filter. */
  readonly filters: readonly string[];
  /** How long the broker keeps this session (its subscriptions and unacknowledged messages) while disconnected. */
  readonly sessionExpiryS: number;
  /** Messages the broker may have in flight to this client before it waits for acknowledgements. */
  readonly receiveMaximum: number;
  readonly keepaliveS: number;
  /** Where refused messages are republished (on that broker), followed by their topic. */
  readonly rejectedPrefix: string;
  /** The first this-many messages after each (re)connect are checked against the store as possible re-deliveries. */
  readonly resendCheckCount: number;
  readonly will?: { readonly topic: string; readonly payload: Buffer; readonly qos: 0 | 1; readonly retain: boolean } | undefined;
  /** Run on every accepted connection before subscribing (the Sparkplug host publishes STATE online here). */
  readonly onConnect?: (() => Promise<void>) | undefined;
  readonly ingest: IngestFn;
  readonly log: Logger;
}

export interface BrokerLinkStats {
  connected: boolean;
  /**
   * The broker granted this connection's shared subscriptions (SUBACK): only from then on does it deliver.
   * A device publishing before that finds no subscriber, so /ready waits for it.
   */
  subscribed: boolean;
  connects: number;
  connectionsLost: number;
  /** Messages received from the broker (ingested), and their payload bytes. */
  messagesIn: number;
  bytesIn: number;
  /** Messages published through the link, and their payload bytes. */
  messagesOut: number;
  bytesOut: number;
  publishesRejected: number;
  /** Messages whose acknowledgement waits for the store. */
  held: number;
  /** Messages not made durable (spool full, disk full): left unacknowledged, so the broker delivers them again. */
  notDurable: number;
  /** Messages this server had published itself, seen again through the subscription and not ingested. */
  ownSkipped: number;
  /** Subscriptions the broker refused (SUBACK reason code 0x80 and above). */
  subscriptionsRefused: number;
  /** Times reading from the broker paused because the Receive Maximum of messages waited for the store. */
  throttled: number;
  lastError: string | null;
}

interface Pending {
  readonly resolve: () => void;
  readonly reject: (e: Error) => void;
}

const MAX_BACKOFF_MS = 10_000;

/** CONNACK reason codes that retrying cannot fix (MQTT 5, 3.2.2.2). */
const FATAL_CONNACK = new Set([0x84, 0x85, 0x86, 0x87, 0x8c, 0x90]);

export class BrokerLink {
  readonly stats: BrokerLinkStats = {
    connected: false, subscribed: false, connects: 0, connectionsLost: 0, messagesIn: 0, bytesIn: 0, messagesOut: 0, bytesOut: 0, publishesRejected: 0,
    held: 0, notDurable: 0, ownSkipped: 0, subscriptionsRefused: 0, throttled: 0, lastError: null,
  };
  private socket: Socket | null = null;
  /** Serial of the current connection; an ingest that finishes after its connection ended acknowledges nothing. */
  private connection = 0;
  private sinceConnect = 0;
  private nextId = 0;
  /** Packet id of this connection's SUBSCRIBE, whose SUBACK makes it subscribed. */
  private subscribeId = -1;
  private readonly outgoing = new Map<number, Pending>();
  private closing = false;
  private recycling = false;
  private backoffMs = 500;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private pingTimer: NodeJS.Timeout | null = null;
  private awaitingPong = false;
  private lastInboundAt = 0;
  private connectedAt = 0;
  /** Connections in a row that the broker closed within 10 s of accepting them. */
  private quickLosses = 0;
  /** Reading paused because as many messages as the Receive Maximum are waiting for the store. */
  private throttled = false;
  private first: { resolve: () => void; reject: (e: Error) => void } | null = null;
  /** Subscriptions are made once accept() was called (the server is ready to take messages), on every connect. */
  private accepting = false;
  private readonly url: URL;

  constructor(private readonly opts: BrokerLinkOptions) {
    this.url = new URL(opts.url);
    if (this.url.protocol !== 'mqtt:' && this.url.protocol !== 'mqtts:') {
      throw new UnsError('UNS_ERR_CONFIG_INVALID', `UNS_BROKER_URL must be mqtt:// or mqtts://, not ${this.url.protocol}`);
    }
    // Credentials in the URL (mqtt://user:password@host) count when none are configured apart.
    this.username = opts.username ?? (this.url.username !== '' ? decodeURIComponent(this.url.username) : null);
    this.password = opts.password ?? (this.url.password !== '' ? decodeURIComponent(this.url.password) : null);
  }

  private readonly username: string | null;
  private readonly password: string | null;

  /**
   * Connects (subscribing waits for accept()). Resolves once the broker accepted the session, or once the first attempt failed
   * for a reason a retry may fix (unreachable: it keeps trying, and /ready says so). Rejects when the broker
   * refuses the credentials or the client id: a configuration error.
   */
  async start(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.first = { resolve, reject };
      this.open();
    });
  }

  /** This instance's client id at the broker (its persistent session). */
  get clientId(): string {
    return this.opts.clientId;
  }

  /** The broker's address without credentials, for logs and /ready. */
  get address(): string {
    return `${this.url.protocol}//${this.url.hostname}:${this.port}`;
  }

  private get port(): number {
    return this.url.port ? Number(this.url.port) : this.url.protocol === 'mqtts:' ? 8883 : 1883;
  }

  private open(): void {
    const conn = ++this.connection;
    this.sinceConnect = 0;
    this.recycling = false;
    this.throttled = false;
    const host = this.url.hostname;
    const socket = this.url.protocol === 'mqtts:'
      // SNI names hosts, not addresses (RFC 6066); the certificate is checked against either.
      ? tlsConnect({ host, port: this.port, ...(isIP(host) === 0 ? { servername: host } : {}), ...(this.opts.ca ? { ca: this.opts.ca } : {}) })
      : netConnect({ host, port: this.port });
    socket.setNoDelay(true);
    this.socket = socket;
    const parser = mqttPacket.parser({ protocolVersion: 5 });
    parser.on('packet', (p: Packet) => this.onPacket(p, conn));
    parser.on('error', (e: Error) => { this.fail(`malformed packet from the broker: ${e.message}`); socket.destroy(); });
    socket.on(this.url.protocol === 'mqtts:' ? 'secureConnect' : 'connect', () => this.sendConnect());
    socket.on('data', (b: Buffer) => parser.parse(b));
    socket.on('error', (e: Error) => this.fail(e.message));
    socket.on('close', () => this.onClose(conn));
  }

  private sendConnect(): void {
    const o = this.opts;
    this.write({
      cmd: 'connect', protocolVersion: 5, clientId: o.clientId, clean: false, keepalive: o.keepaliveS,
      ...(this.username !== null ? { username: this.username } : {}),
      ...(this.password !== null ? { password: Buffer.from(this.password) } : {}),
      ...(o.will ? { will: { topic: o.will.topic, payload: o.will.payload, qos: o.will.qos, retain: o.will.retain } } : {}),
      properties: { sessionExpiryInterval: o.sessionExpiryS, receiveMaximum: o.receiveMaximum },
    });
  }

  private onPacket(p: Packet, conn: number): void {
    if (conn !== this.connection) return;
    this.awaitingPong = false;
    switch (p.cmd) {
      case 'connack': {
        const code = p.reasonCode ?? p.returnCode ?? 0;
        if (code !== 0) {
          const why = `the broker refused the connection (CONNACK reason 0x${code.toString(16)}${p.properties?.reasonString ? `: ${p.properties.reasonString}` : ''})`;
          this.fail(why);
          if (this.first && FATAL_CONNACK.has(code)) {
            this.first.reject(new UnsError('UNS_ERR_CONFIG_INVALID', `${this.address}: ${why}; check UNS_BROKER_USERNAME, UNS_BROKER_PASSWORD and UNS_BROKER_CLIENT_ID`));
            this.first = null;
            this.closing = true;
          }
          this.socket?.destroy();
          return;
        }
        this.stats.connected = true;
        this.stats.connects++;
        this.connectedAt = Date.now();
        this.stats.lastError = null;
        this.opts.log.info({ broker: this.address, clientId: this.opts.clientId, sessionPresent: p.sessionPresent }, 'connected to the broker');
        this.startPing();
        const onConnect = this.opts.onConnect ?? (() => Promise.resolve());
        onConnect().then(() => {
          if (conn === this.connection && this.accepting) this.subscribe();
        }, (e: Error) => { this.fail(`on connect: ${e.message}`); this.socket?.destroy(); });
        this.first?.resolve();
        this.first = null;
        return;
      }
      case 'suback': {
        // MQTT 5: one reason code per filter (the granted QoS, or 0x80 and above for a refusal).
        const refused = (p.granted as unknown[]).map((g, i) => ({ g: typeof g === 'number' ? g : 0x80, f: this.opts.filters[i] })).filter((x) => x.g >= 0x80);
        for (const r of refused) {
          this.stats.subscriptionsRefused++;
          this.fail(`the broker refused the subscription $share/${this.opts.group}/${r.f} (SUBACK 0x${r.g.toString(16)}): check its ACL for ${this.username ?? 'this client'}`);
        }
        if (p.messageId === this.subscribeId && refused.length === 0) this.stats.subscribed = true;
        return;
      }
      case 'publish':
        this.onPublish(p, conn);
        return;
      case 'puback': {
        const pending = this.outgoing.get(p.messageId as number);
        if (!pending) return;
        this.outgoing.delete(p.messageId as number);
        const code = p.reasonCode ?? 0;
        if (code >= 0x80) pending.reject(new Error(`the broker refused the publish (PUBACK 0x${code.toString(16)})`));
        else pending.resolve();
        return;
      }
      case 'disconnect': {
        const code = p.reasonCode ?? 0;
        // 0x8E: another connection took this session over, most likely a second instance given the same client id.
        const hint = code === 0x8e ? `; ${this.sameClientId('uses')}` : '';
        this.fail(`the broker disconnected this client (reason 0x${code.toString(16)}${p.properties?.reasonString ? `: ${p.properties.reasonString}` : ''})${hint}`);
        return;
      }
      default:
        return;
    }
  }

  private onPublish(p: IPublishPacket, conn: number): void {
    this.lastInboundAt = Date.now();
    const payload = typeof p.payload === 'string' ? Buffer.from(p.payload) : p.payload;
    if (p.properties?.userProperties?.[ORIGIN_PROPERTY] !== undefined) {
      this.stats.ownSkipped++;
      if (p.qos > 0) this.ack(p.messageId as number);
      return;
    }
    if (p.qos === 2) {
      // Subscribed at QoS 1, so the broker never sends QoS 2: a broker that does is not followed.
      this.fail('the broker sent a QoS 2 message on a QoS 1 subscription; reconnecting');
      this.socket?.destroy();
      return;
    }
    const record: InboundRecord = {
      topic: p.topic, payload,
      source: {
        protocol: 'mqtt', clientId: this.opts.clientId, packetId: p.messageId, qos: p.qos, retain: p.retain, dup: p.dup, connection: conn,
        maybeResend: p.qos > 0 && (p.dup || ++this.sinceConnect <= this.opts.resendCheckCount),
      },
      receivedAt: Date.now(),
    };
    this.stats.messagesIn++;
    this.stats.bytesIn += payload.length;
    this.stats.held++;
    // The broker should stop at our Receive Maximum, but not every one does under out-of-order
    // acknowledgements (Mosquitto 2.0.11 overruns it by far): at that bound this side stops reading, and
    // TCP holds the broker back until the store has caught up to half of it.
    if (this.stats.held >= this.opts.receiveMaximum && !this.throttled) {
      this.throttled = true;
      this.stats.throttled++;
      this.socket?.pause();
    }
    this.opts.ingest(record, (outcome) => {
      this.stats.held--;
      if (this.throttled && this.stats.held <= this.opts.receiveMaximum / 2) {
        this.throttled = false;
        if (!this.recycling && conn === this.connection) this.socket?.resume();
      }
      if (outcome.error) {
        // Not durable: no PUBACK. The broker delivers it again on the next connection, so this one is recycled.
        this.stats.notDurable++;
        this.recycle(conn, outcome.error.message);
        return;
      }
      if (outcome.rejection) {
        this.stats.publishesRejected++;
        this.publish(this.opts.rejectedPrefix + p.topic, deadLetter(outcome.rejection, record), false, 0)
          .catch((e: Error) => this.opts.log.debug({ err: e.message }, 'dead letter not published'));
      }
      if (p.qos > 0 && conn === this.connection && !this.recycling) this.ack(p.messageId as number);
      if (this.recycling && conn === this.connection && this.stats.held === 0) this.socket?.destroy();
    });
  }

  /** From now on, and on every reconnect, subscribe and ingest. */
  accept(): void {
    if (this.accepting) return;
    this.accepting = true;
    if (this.stats.connected) this.subscribe();
  }

  /** Subscribed on every connect: the broker keeps an existing subscription of the session as it is. */
  private subscribe(): void {
    this.subscribeId = this.allocateId();
    this.write({
      cmd: 'subscribe', messageId: this.subscribeId,
      // rap: the retain flag as published, so an empty retained message is seen as the delete it is.
      subscriptions: this.opts.filters.map((f) => ({ topic: `$share/${this.opts.group}/${f}`, qos: 1 as const, rap: true })),
    });
  }

  private ack(messageId: number): void {
    this.write({ cmd: 'puback', messageId });
  }

  /**
   * A message could not be made durable: stop reading, let what is under way finish (committed ones are not
   * acknowledged either: they come back as re-deliveries and are recognised), then reconnect after a pause.
   */
  private recycle(conn: number, why: string): void {
    if (conn !== this.connection || this.recycling) return;
    this.recycling = true;
    this.opts.log.warn({ err: why }, 'a message could not be made durable: reconnecting to the broker so it is delivered again');
    this.socket?.pause();
    if (this.stats.held === 0) this.socket?.destroy();
  }

  /** Publishes as the server, marked with ORIGIN_PROPERTY. QoS 1 resolves on the broker's PUBACK. */
  publish(topic: string, payload: Buffer, retain: boolean, qos: 0 | 1 = 1): Promise<void> {
    if (!this.stats.connected || this.socket === null) return Promise.reject(new Error(`not connected to the broker ${this.address}`));
    const packet: IPublishPacket = {
      cmd: 'publish', topic, payload, qos, retain, dup: false,
      properties: { userProperties: { [ORIGIN_PROPERTY]: this.opts.clientId } },
    };
    this.stats.messagesOut++;
    this.stats.bytesOut += payload.length;
    if (qos === 0) {
      this.write(packet);
      return Promise.resolve();
    }
    const messageId = this.allocateId();
    return new Promise((resolve, reject) => {
      this.outgoing.set(messageId, { resolve, reject });
      this.write({ ...packet, messageId });
    });
  }

  /** Packet ids 1..65535 not awaiting an acknowledgement. */
  private allocateId(): number {
    for (let i = 0; i < 65_535; i++) {
      this.nextId = (this.nextId % 65_535) + 1;
      if (!this.outgoing.has(this.nextId)) return this.nextId;
    }
    throw new Error('no free packet id: 65,535 publishes await acknowledgement');
  }

  private write(p: Packet): void {
    this.socket?.write(mqttPacket.generate(p, { protocolVersion: 5 }));
  }

  private startPing(): void {
    this.stopPing();
    const every = Math.max(1, this.opts.keepaliveS) * 500;
    this.pingTimer = setInterval(() => {
      // While reading is paused the answer cannot be read; the pause ends as the store catches up.
      if (this.throttled) return;
      if (this.awaitingPong) {
        this.fail(`no answer from the broker within ${this.opts.keepaliveS / 2} s`);
        this.socket?.destroy();
        return;
      }
      this.awaitingPong = true;
      this.write({ cmd: 'pingreq' });
    }, every);
    this.pingTimer.unref();
  }

  private stopPing(): void {
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.pingTimer = null;
    this.awaitingPong = false;
  }

  /** What to do when another connection holds this session: both ways of noticing it say the same. */
  private sameClientId(verb: 'uses' | 'may use'): string {
    return `another connection ${verb} the client id ${this.opts.clientId}: give each instance its own (UNS_BROKER_CLIENT_ID or its own data dir)`;
  }

  private fail(why: string): void {
    this.stats.lastError = why;
    this.opts.log.error({ broker: this.address, err: why }, 'broker link');
  }

  private onClose(conn: number): void {
    if (conn !== this.connection) return;
    this.stopPing();
    if (this.stats.connected) {
      this.stats.connectionsLost++;
      // A session closed again and again soon after it was accepted is most often taken over by another
      // connection with the same client id (some brokers say so with DISCONNECT 0x8E; Mosquitto just closes).
      this.quickLosses = Date.now() - this.connectedAt < 10_000 ? this.quickLosses + 1 : 0;
      // The back-off starts again only after a connection that lasted; one lost at once keeps growing it.
      if (this.quickLosses === 0) this.backoffMs = 500;
      if (this.quickLosses >= 3 && !this.closing) {
        this.fail(`the broker closed this session ${this.quickLosses} times in a row within 10 s of accepting it; ${this.sameClientId('may use')}`);
      } else if (!this.closing && this.stats.lastError === null) {
        this.stats.lastError = 'the connection to the broker closed';
      }
    }
    this.stats.connected = false;
    this.stats.subscribed = false;
    this.socket = null;
    for (const p of this.outgoing.values()) p.reject(new Error('the connection to the broker closed before its acknowledgement'));
    this.outgoing.clear();
    if (this.closing) return;
    // Unreachable at start-up: start anyway (not ready) and keep trying.
    this.first?.resolve();
    this.first = null;
    const wait = this.backoffMs;
    this.backoffMs = Math.min(MAX_BACKOFF_MS, this.backoffMs * 2);
    this.opts.log.warn({ broker: this.address, retryInMs: wait }, 'disconnected from the broker');
    this.reconnectTimer = setTimeout(() => { this.reconnectTimer = null; this.open(); }, wait);
  }

  /**
   * A graceful stop leaves nothing behind in this instance's session: it unsubscribes, acknowledges what is
   * under way as it becomes durable (until nothing has arrived for a moment, `drainMs` at most), then ends
   * the session (DISCONNECT with Session Expiry 0), so the group's other members take every later message.
   * A session left behind would keep receiving its share and hold it until this instance came back
   * [MQTT-4.8.2-5]. The Will is not published (a graceful stop publishes what it must first).
   */
  async close(drainMs = 5_000): Promise<void> {
    this.closing = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    const s = this.socket;
    if (s === null) { this.stopPing(); return; }
    if (this.stats.connected && this.accepting) {
      this.stats.subscribed = false;
      this.write({ cmd: 'unsubscribe', messageId: this.allocateId(), unsubscriptions: this.opts.filters.map((f) => `$share/${this.opts.group}/${f}`) });
      const until = Date.now() + drainMs;
      while (Date.now() < until && this.socket === s && (this.stats.held > 0 || Date.now() - this.lastInboundAt < 250)) {
        await new Promise((r) => setTimeout(r, 25));
      }
    }
    this.stopPing();
    const closed = new Promise<void>((r) => s.once('close', () => r()));
    if (this.stats.connected) this.write({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 0 } });
    s.end();
    const timer = setTimeout(() => s.destroy(), 2_000);
    await closed;
    clearTimeout(timer);
  }
}
