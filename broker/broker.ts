/**
 * The embedded Aedes broker: TCP and WebSocket listeners, authentication, ACLs, limits, and the hand-off
 * of each publish to the ingest function. It knows no sinks. The publish is held in `authorizePublish`
 * (which runs before Aedes writes the PUBACK/PUBREC) until ingest says it may be acknowledged: for QoS > 0
 * that is once the message is durable. Aedes reads the next chunk from a socket only after every packet of
 * the current one is handled, so holding the callback is also what stops reading a publisher's socket when
 * the pipeline is behind (TCP back-pressure).
 */
import { createServer as createTcpServer, type Server as TcpServer, type AddressInfo } from 'node:net';
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls';
import type { TlsFiles } from '../src/core/index.js';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { Aedes, type Client, type AedesPublishPacket, type PublishPacket, type Subscription } from 'aedes';
import { WebSocketServer, createWebSocketStream } from 'ws';
import type { Logger } from '../src/core/index.js';
import type { ErrorCode } from '../src/core/index.js';
import type { InboundRecord } from '../src/core/index.js';
import { REJECTED_PREFIX, deadLetter, type IngestFn } from '../src/core/index.js';
import { checkWrite } from '../src/core/index.js';
import type { TopicLimits } from '../src/core/index.js';
import { filterCovers, validateTopicFilter } from '../src/core/index.js';
import { guardFrames } from './frame-guard.js';
import { expectProxyHeader } from './proxy-header.js';
import { isFailure, type Authenticator, type Principal } from './auth.js';
import type { SessionStore } from './session-store.js';
import type { ClusterBus, ClusterFrame } from './cluster.js';

export interface BrokerLimits {
  readonly maxPacketBytes: number;
  readonly maxTopicBytes: number;
  readonly maxTopicLevels: number;
  readonly connectTimeoutMs: number;
  readonly keepaliveLimitS: number;
  /** Bytes waiting in a subscriber's socket beyond which it counts as not keeping up. */
  readonly slowConsumerBytes: number;
  /**
   * The first this-many QoS > 0 publishes of a connection may be re-sends of messages whose PUBACK was lost
   * (clients re-send them first, some without DUP): the store is asked whether it has them already.
   */
  readonly resendCheckCount?: number;
  /** 'on': the MQTT TCP listener expects a PROXY protocol header (v1/v2) on every connection (behind a load balancer). */
  readonly proxyProtocol?: 'on' | 'off';
}

export interface BrokerOptions {
  readonly limits: BrokerLimits;
  readonly auth: Authenticator;
  readonly ingest: IngestFn;
  readonly log: Logger;
  /** Where persistent sessions live (in memory, lost at a restart, without one). */
  readonly sessions?: SessionStore;
  /** Cluster mode: the other instances of the namespace, over Redis. */
  readonly cluster?: ClusterBus;
  /** Told when an authenticated connection ends, with its serial (see Source.connection). */
  readonly connectionClosed?: (connection: number, at: number) => void;
}

export interface BrokerStats {
  connectsAccepted: number;
  connectsRefused: Partial<Record<ErrorCode, number>>;
  publishesDenied: Partial<Record<ErrorCode, number>>;
  subscribesDenied: number;
  frameViolations: Partial<Record<ErrorCode, number>>;
  publishesRejected: number;
  /** QoS 0 deliveries dropped for subscribers that were not keeping up. */
  forwardsDropped: number;
  slowConsumersClosed: number;
  /** Connections refused for a missing or malformed PROXY protocol header. */
  proxyHeadersRefused: number;
  /** TLS handshakes that failed (no or unverified client certificate, protocol mismatch, plain MQTT on the TLS port). */
  tlsHandshakeFailures: number;
  /** Publishes whose acknowledgement is being held (durability or back-pressure). */
  held: number;
  /** Client publishes let in (authorised), and their payload bytes. */
  messagesIn: number;
  bytesIn: number;
  /** Deliveries to subscribers, and their payload bytes. */
  messagesOut: number;
  bytesOut: number;
}

interface UnsClient extends Client {
  uns?: Principal;
  /** Serial of this connection, and how many QoS > 0 publishes it has sent. */
  unsConn?: number;
  unsSent?: number;
  unsEmptyId?: boolean;
  /** Highest QoS granted to any of its subscriptions. */
  unsMaxSubQos?: number;
  /** Topics this connection has been let write (its principal and the limits do not change while it lasts). */
  unsWritable?: Set<string>;
}

/** Topics remembered as writable per connection (a device publishes to the same few, over and over). */
const WRITABLE_CACHE = 1024;

type AuthError = Error & { returnCode: number };

function authError(returnCode: 2 | 3 | 4 | 5, message: string): AuthError {
  return Object.assign(new Error(message), { returnCode });
}

/**
 * Refuses a CONNECT. Aedes' close of a clean-session client wipes the inbound QoS 2 state stored under its
 * client id; for a refused CONNECT that id may belong to another, live session, which would then re-deliver
 * a re-sent QoS 2 PUBLISH and leak receive-window slots [MQTT-4.3.3-2]. A refused CONNECT never had a
 * session, so there is nothing of its own to clean.
 */
function refuse(client: UnsClient, cb: (error: AuthError | null, success: boolean | null) => void, returnCode: 2 | 3 | 4 | 5, message: string): void {
  client.clean = false;
  cb(authError(returnCode, message), false);
}

function bump<K extends string>(m: Partial<Record<K, number>>, k: K): void {
  m[k] = (m[k] ?? 0) + 1;
}

export class UnsBroker {
  readonly aedes: Aedes;
  readonly stats: BrokerStats = {
    connectsAccepted: 0, connectsRefused: {}, publishesDenied: {}, subscribesDenied: 0, frameViolations: {}, publishesRejected: 0, forwardsDropped: 0, slowConsumersClosed: 0, proxyHeadersRefused: 0, tlsHandshakeFailures: 0, held: 0,
    messagesIn: 0, bytesIn: 0, messagesOut: 0, bytesOut: 0,
  };
  private tcp: TcpServer | null = null;
  private tls: TlsServer | null = null;
  private connections = 0;
  private closing: Promise<void> | undefined;
  private orphanTimer: NodeJS.Timeout | null = null;
  private readonly topicLimits: TopicLimits;
  private readonly closingSlow = new Set<string>();
  private readonly wss: WebSocketServer;
  private readonly log: Logger;

  private constructor(private readonly opts: BrokerOptions, aedes: Aedes) {
    this.aedes = aedes;
    this.log = opts.log;
    this.topicLimits = { maxBytes: opts.limits.maxTopicBytes, maxLevels: opts.limits.maxTopicLevels };
    // The WebSocket frame limit is a second guard; the frame guard checks MQTT packets inside the stream.
    this.wss = new WebSocketServer({ noServer: true, maxPayload: opts.limits.maxPacketBytes + 8, perMessageDeflate: false });
    aedes.on('clientReady', (client: Client) => {
      const c = client as UnsClient;
      if (!c.clean) opts.sessions?.seen(c.id, c.uns?.username || null);
      this.log.info({ clientId: c.id, username: c.uns?.username ?? null, address: addressOf(c.conn) }, 'client connected');
    });
    aedes.on('clientDisconnect', (client: Client) => {
      const c = client as UnsClient;
      if (c.unsConn !== undefined) opts.connectionClosed?.(c.unsConn, Date.now());
      if (!c.clean && c.uns !== undefined) opts.sessions?.seen(c.id, c.uns.username || null);
      this.log.info({ clientId: c.id, username: c.uns?.username ?? null, address: addressOf(c.conn) }, 'client disconnected');
    });
    aedes.on('clientError', (client: Client, err: Error) => this.log.debug({ clientId: client.id, err: err.message }, 'client error'));
    aedes.on('connectionError', (client: Client, err: Error) => this.log.debug({ clientId: client.id, err: err.message }, 'connection error'));
    if (opts.cluster) this.joinCluster(opts.cluster);
  }

  /**
   * Publishes made here go to the other instances (and theirs come here, delivered to local subscribers and
   * queued for local persistent sessions, never ingested again: the instance its publisher is connected to
   * stored it). Aedes' own take-over notice goes too, so a client id connecting elsewhere closes its
   * connection here. A remote publish keeps its origin's brokerId, which is how it is not sent back; its
   * counter is this broker's own (Aedes numbers it), so per-client duplicate checks stay monotonic.
   */
  private joinCluster(bus: ClusterBus): void {
    const aedes = this.aedes;
    const takeover = `$SYS/${aedes.id}/new/clients`;
    aedes.on('publish', (packet: AedesPublishPacket) => {
      // What Aedes reports is the packet as published: a client's or the server's carries no brokerId yet.
      if (packet.brokerId !== undefined && packet.brokerId !== aedes.id) return;
      if (packet.topic.startsWith('$SYS/') && packet.topic !== takeover) return;
      bus.send({ k: 'p', packet: {
        topic: packet.topic, payload: packet.payload as Buffer, qos: packet.qos, retain: packet.retain, brokerId: aedes.id,
        brokerCounter: 0, properties: (packet as { properties?: Record<string, unknown> }).properties,
      } });
    });
    bus.on('frame', (f: ClusterFrame) => {
      if (f.k === 'p') {
        const p = f.packet;
        const packet = {
          cmd: 'publish', topic: p.topic, payload: Buffer.from(p.payload.buffer, p.payload.byteOffset, p.payload.byteLength), qos: p.qos, retain: p.retain, dup: false,
          brokerId: p.brokerId, brokerCounter: p.brokerCounter, ...(p.properties !== undefined ? { properties: p.properties } : {}),
        };
        aedes.publish(packet as unknown as PublishPacket, (e?: Error) => { if (e) this.log.warn({ topic: p.topic, err: e.message }, 'publish from another instance not delivered'); });
      } else if (f.k === 'release' && f.to === bus.instanceId) {
        void this.releaseSession(f.client, bus);
      }
    });
    // Sessions held by an instance that is gone are taken over by the live instance with the smallest id,
    // once Redis has been reachable long enough to have heard every live one.
    let upSince: number | null = bus.stats.connected ? Date.now() : null;
    bus.on('state', (up: boolean) => { upSince = up ? Date.now() : null; });
    let busy = false;
    this.orphanTimer = setInterval(() => {
      const sessions = this.opts.sessions;
      if (busy || sessions === undefined || !sessions.ready || upSince === null || Date.now() - upSince < 6_000) return;
      if (bus.livePeers().some((p) => p.id < bus.instanceId)) return;
      busy = true;
      sessions.instancesHolding()
        .then(async (ids) => { for (const id of ids) if (id !== bus.instanceId && !bus.isLive(id)) await sessions.adoptInstance(id); })
        .catch((e: Error) => this.log.debug({ err: e.message }, 'sessions of gone instances not taken over yet'))
        .finally(() => { busy = false; });
    }, 2_000);
    this.orphanTimer.unref();
  }

  /** Another instance takes over a persistent session held here: close its connection, write it, let it go. */
  private async releaseSession(clientId: string, bus: ClusterBus): Promise<void> {
    const sessions = this.opts.sessions;
    if (sessions === undefined) return;
    const local = (this.aedes as unknown as { clients: Record<string, UnsClient | undefined> }).clients[clientId];
    if (local !== undefined) await new Promise<void>((r) => local.close(() => r()));
    try {
      await sessions.release(clientId);
    } catch (e) {
      this.log.warn({ clientId, err: (e as Error).message }, 'session released with changes not written');
    }
    bus.send({ k: 'released', client: clientId, to: '' });
  }

  static async create(opts: BrokerOptions): Promise<UnsBroker> {
    const holder: { broker?: UnsBroker } = {};
    const aedes = await Aedes.createBroker({
      ...(opts.sessions ? { persistence: opts.sessions as never } : {}),
      // No mqemitter queue: with a concurrency limit, one slow subscriber holds every message behind it
      // (head-of-line blocking for all subscribers), and when it disconnects the queued deliveries complete
      // synchronously and recurse until the stack overflows (mqemitter 7 `released` -> `_do`). Slow
      // subscribers are bounded per connection instead (authorizeForward below).
      concurrency: 0,
      // Backstop for a socket that still waits for 'drain' (e.g. a huge retained burst): close it after 10 s.
      drainTimeout: 10_000,
      authorizeForward: (client, packet) => holder.broker!.authorizeForward(client as UnsClient, packet),
      connectTimeout: opts.limits.connectTimeoutMs,
      keepaliveLimit: opts.limits.keepaliveLimitS,
      maxTopicLevels: Math.min(100, opts.limits.maxTopicLevels),
      preConnect: (client, packet, cb) => {
        // [MQTT-3.1.3-8]: a zero-byte ClientId with CleanSession=0 gets CONNACK 0x02. Aedes invents an id
        // before authenticate runs, so remember that it was empty.
        (client as UnsClient).unsEmptyId = packet.clientId === '';
        cb(null, true);
      },
      authenticate: (client, username, password, cb) => holder.broker!.authenticate(client as UnsClient, username, password, cb),
      authorizePublish: (client, packet, cb) => holder.broker!.authorizePublish(client as UnsClient | null, packet, cb),
      authorizeSubscribe: (client, sub, cb) => holder.broker!.authorizeSubscribe(client as UnsClient, sub, cb),
    });
    const broker = new UnsBroker(opts, aedes);
    holder.broker = broker;
    return broker;
  }

  private authenticate(client: UnsClient, username: string | undefined, password: Buffer | undefined,
    cb: (error: AuthError | null, success: boolean | null) => void): void {
    if (client.unsEmptyId && !client.clean) {
      bump(this.stats.connectsRefused, 'UNS_ERR_CLIENT_ID_REJECTED');
      refuse(client, cb, 2, 'empty client id requires a clean session [MQTT-3.1.3-8]');
      return;
    }
    const from = addressOf(client.conn) ?? '';
    const conn = client.conn as { destroyed?: boolean };
    const certName = verifiedCertificateName(client.conn);
    const attempt = certName !== null
      ? Promise.resolve(this.opts.auth.fromCertificate(certName, username))
      : this.opts.auth.authenticate(username, password, from, () => conn.destroyed !== true);
    attempt.then((r) => {
      if (isFailure(r)) {
        bump(this.stats.connectsRefused, 'UNS_ERR_AUTH_FAILED');
        this.log.info({ clientId: client.id, username, address: from, reason: r.failure }, 'connection refused');
        refuse(client, cb, r.busy ? 3 : 4, r.failure); // 3: server unavailable [MQTT-3.2.2.3]
        return;
      }
      // A client id held by another principal is not taken over: that would let any user kick any device.
      const existing = (this.aedes as unknown as { clients: Record<string, UnsClient | undefined> }).clients[client.id];
      if (existing && existing !== client && existing.uns && existing.uns.username !== r.username) {
        bump(this.stats.connectsRefused, 'UNS_ERR_CLIENT_ID_REJECTED');
        this.log.warn({ clientId: client.id, username: r.username, holder: existing.uns.username }, 'client id takeover refused');
        refuse(client, cb, 2, 'client id in use by another principal');
        return;
      }
      const sessions = this.opts.sessions;
      const admit = (): void => {
        if (sessions !== undefined) {
          // A stored session is its user's: another user may neither resume it nor wipe it with a clean one.
          const owner = sessions.owner(client.id);
          if (typeof owner === 'string' && owner !== (r.username || null)) {
            bump(this.stats.connectsRefused, 'UNS_ERR_CLIENT_ID_REJECTED');
            this.log.warn({ clientId: client.id, username: r.username, holder: owner }, 'client id of another user\'s session refused');
            refuse(client, cb, 2, 'client id holds another principal\'s session');
            return;
          }
        }
        client.uns = r;
        client.unsConn = ++this.connections;
        client.unsSent = 0;
        this.stats.connectsAccepted++;
        cb(null, true);
      };
      // Persistent sessions are read from the database at start-up; until then one cannot be resumed.
      if (sessions !== undefined && !client.clean && !sessions.ready) {
        bump(this.stats.connectsRefused, 'UNS_ERR_UNAVAILABLE');
        this.log.info({ clientId: client.id, username: r.username }, 'persistent session refused: sessions not loaded yet (database unavailable)');
        refuse(client, cb, 3, 'sessions not loaded yet');
        return;
      }
      const cluster = this.opts.cluster;
      if (sessions === undefined || cluster === undefined || sessions.holds(client.id)) { admit(); return; }
      takeOver(client.id, client.clean, sessions, cluster, this.log).then((why) => {
        if (why === null) { admit(); return; }
        bump(this.stats.connectsRefused, 'UNS_ERR_UNAVAILABLE');
        this.log.info({ clientId: client.id, username: r.username, reason: why }, 'connection refused: its session cannot be taken over now');
        refuse(client, cb, 3, why);
      });
    }, (e: Error) => {
      this.log.error({ err: e.message }, 'authentication failed unexpectedly');
      refuse(client, cb, 5, 'authentication unavailable');
    });
  }

  private deny(client: UnsClient | null, code: ErrorCode, topic: string, detail: string, cb: (e?: Error | null) => void): void {
    bump(this.stats.publishesDenied, code);
    this.log.info({ clientId: client?.id, topic: topic.slice(0, 200), code, detail }, 'publish refused; closing connection');
    // MQTT 3.1.1 has no negative PUBACK: the connection is closed (Aedes does so on an error here).
    cb(Object.assign(new Error(`${code}: ${detail}`), { code }));
  }

  private authorizePublish(client: UnsClient | null, packet: PublishPacket, cb: (e?: Error | null) => void): void {
    const topic = packet.topic;
    if (client === null) { cb(null); return; } // the broker's own publishes ($SYS)
    const principal = client.uns;
    if (!principal) { this.deny(client, 'UNS_ERR_NOT_AUTHORIZED', topic, 'not authenticated', cb); return; }
    const writable = (client.unsWritable ??= new Set());
    if (!writable.has(topic)) {
      const refused = checkWrite(topic, principal.perms, this.topicLimits, principal.username || 'this client');
      if (refused !== null) { this.deny(client, refused.code, topic, refused.reason, cb); return; }
      if (writable.size >= WRITABLE_CACHE) writable.clear();
      writable.add(topic);
    }

    const record: InboundRecord = {
      topic,
      payload: packet.payload as Buffer,
      source: {
        protocol: 'mqtt', clientId: client.id, username: principal.username || undefined, packetId: packet.messageId,
        qos: packet.qos, retain: packet.retain, dup: packet.dup, connection: client.unsConn,
        maybeResend: packet.qos > 0 && (packet.dup || (client.unsSent = (client.unsSent ?? 0) + 1) <= (this.opts.limits.resendCheckCount ?? 64)),
      },
      receivedAt: Date.now(),
    };
    this.stats.held++;
    this.stats.messagesIn++;
    this.stats.bytesIn += record.payload.length;
    this.opts.ingest(record, (outcome) => {
      this.stats.held--;
      if (outcome.error) { cb(outcome.error); return; }
      const rej = outcome.rejection;
      if (rej) {
        // Acknowledged (it was received and recorded) but not delivered as data: it goes to the dead-letter topic.
        this.stats.publishesRejected++;
        packet.payload = deadLetter(rej, record);
        packet.topic = REJECTED_PREFIX + topic;
        packet.retain = false;
      }
      // QoS 1: in the queues of the persistent sessions it matches before Aedes writes the PUBACK.
      const queued = packet.qos === 1 ? this.opts.sessions?.queueBeforeAck(packet as never) : null;
      if (queued) queued.then(() => cb(null), () => cb(null));
      else cb(null);
    });
  }

  /**
   * Runs per delivery per subscriber. A subscriber whose socket has more than slowConsumerBytes waiting
   * is not keeping up: QoS 0 messages to it are dropped (and counted); a QoS > 0 delivery closes it, so it
   * resumes from its session on reconnect instead of growing the server's memory.
   */
  private authorizeForward(client: UnsClient, sent: AedesPublishPacket): AedesPublishPacket | null {
    // A role's deny rules: a granted subscription may still overlap a denied area (src/core/acl.ts).
    const perms = client.uns?.perms;
    if (perms?.hasReadDenies && !perms.canRead(sent.topic)) return null;
    // A resumed session's message sent before the restart or reconnect: this is the packet Aedes writes.
    if (sent.messageId !== undefined && this.opts.sessions?.isResend(client.id, sent.messageId)) sent.dup = true;
    const packet = sent.retain && sent.qos > 0 ? retainedAtGrantedQos(client, sent) : sent;
    const waiting = (client.conn as { writableLength?: number }).writableLength ?? 0;
    // Decide before writing: a write past the socket's high-water mark would make Aedes wait for 'drain',
    // and the publisher whose message it is would wait with it.
    const size = (packet.payload as Buffer).length + packet.topic.length + 8;
    if (waiting + size <= this.opts.limits.slowConsumerBytes) {
      this.stats.messagesOut++;
      this.stats.bytesOut += (packet.payload as Buffer).length;
      return packet;
    }
    // The delivery is QoS 0 when the publish or every subscription of this client is QoS 0 (Aedes
    // downgrades after this hook, so the client's highest granted QoS stands in for the subscription's).
    if (packet.qos === 0 || (client.unsMaxSubQos ?? 0) === 0) {
      this.stats.forwardsDropped++;
      return null;
    }
    if (!this.closingSlow.has(client.id)) {
      this.closingSlow.add(client.id);
      this.stats.slowConsumersClosed++;
      this.log.warn({ clientId: client.id, waiting }, 'closing a subscriber that is not keeping up');
      setImmediate(() => { client.close(); this.closingSlow.delete(client.id); });
    }
    return null;
  }

  private authorizeSubscribe(client: UnsClient, sub: Subscription, cb: (e: Error | null, s?: Subscription | null) => void): void {
    const bad = validateTopicFilter(sub.topic, { maxBytes: this.opts.limits.maxTopicBytes, maxLevels: this.opts.limits.maxTopicLevels });
    if (bad !== null || !client.uns?.perms.canSubscribe(sub.topic)) {
      this.stats.subscribesDenied++;
      this.log.info({ clientId: client.id, filter: sub.topic.slice(0, 200), reason: bad ?? 'not permitted' }, 'subscription refused');
      cb(null, null); // SUBACK 0x80 for this filter [MQTT-3.9.3]
      return;
    }
    client.unsMaxSubQos = Math.max(client.unsMaxSubQos ?? 0, sub.qos);
    cb(null, sub);
  }

  /** Hand a raw connection (TCP socket or WebSocket stream) to Aedes, with the frame guard installed. */
  private accept(conn: Duplex, req?: IncomingMessage, proxied = false): void {
    guardFrames(conn, this.opts.limits.maxPacketBytes, (code, detail) => {
      bump(this.stats.frameViolations, code);
      this.log.info({ code, detail, remote: addressOf(conn) }, 'connection closed by frame guard');
    });
    if (proxied) {
      // Outside the frame guard: the header is taken off before the guard sees the first MQTT byte.
      expectProxyHeader(conn, (address) => { (conn as ProxiedConn).unsAddress = address; }, (why) => {
        this.stats.proxyHeadersRefused++;
        this.log.warn({ remote: (conn as { remoteAddress?: string }).remoteAddress ?? null, reason: why }, 'connection refused: PROXY protocol');
      });
    }
    // Let a subscriber's socket hold up to slowConsumerBytes (plus one packet) before a write reports
    // back-pressure; authorizeForward keeps it below that. Only the writable side: the readable side keeps
    // its small default, which is what makes TCP back-pressure on publishers prompt.
    const ws = (conn as unknown as { _writableState?: { highWaterMark: number } })._writableState;
    if (ws) ws.highWaterMark = Math.max(ws.highWaterMark, this.opts.limits.slowConsumerBytes + this.opts.limits.maxPacketBytes + 1024);
    this.aedes.handle(conn, req);
  }

  async listenTcp(port: number, host: string): Promise<AddressInfo> {
    // Nagle's algorithm holds small PUBACKs back for tens of ms; MQTT wants them out at once.
    const server = createTcpServer({ noDelay: true }, (socket) => this.accept(socket, undefined, this.opts.limits.proxyProtocol === 'on'));
    this.tcp = server;
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen(port, host, () => { server.off('error', rej); res(); });
    });
    return server.address() as AddressInfo;
  }

  /**
   * MQTT over TLS. `clientCerts`: 'optional' asks for a certificate and lets a verified one stand for a
   * user (others fall back to user name and password); 'required' refuses the handshake without a verified
   * one. The TLS files' changes are applied to new connections; open ones keep their session.
   */
  async listenTls(port: number, host: string, files: TlsFiles, clientCerts: 'off' | 'optional' | 'required'): Promise<AddressInfo> {
    const server = createTlsServer({
      ...files.options,
      minVersion: 'TLSv1.2',
      requestCert: clientCerts !== 'off',
      rejectUnauthorized: clientCerts === 'required',
      // A handshake that never completes holds a socket like a CONNECT that never comes.
      handshakeTimeout: this.opts.limits.connectTimeoutMs,
    }, (socket) => {
      socket.setNoDelay(true);
      this.accept(socket);
    });
    server.on('tlsClientError', (err: Error, socket: TLSSocket) => {
      this.stats.tlsHandshakeFailures++;
      this.log.info({ address: socket.remoteAddress ?? null, err: err.message }, 'TLS handshake failed');
    });
    files.onChange((options) => server.setSecureContext({ ...options, minVersion: 'TLSv1.2' }));
    this.tls = server;
    await new Promise<void>((res, rej) => {
      server.once('error', rej);
      server.listen(port, host, () => { server.off('error', rej); res(); });
    });
    return server.address() as AddressInfo;
  }

  /** MQTT over WebSocket: call from the HTTP server's 'upgrade' for the configured path. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    (socket as { setNoDelay?: (v: boolean) => void }).setNoDelay?.(true);
    this.wss.handleUpgrade(req, socket, head, (ws) => {
      const stream = createWebSocketStream(ws);
      stream.on('error', () => undefined);
      this.accept(stream, req);
    });
  }

  /**
   * Deliver a message that entered through another door (HTTP publish) to MQTT subscribers, as the
   * server. It has already been authorised and stored; retain is honoured.
   */
  publishFromServer(topic: string, payload: Buffer, retain: boolean, qos: 0 | 1 = 1): Promise<void> {
    return new Promise((res, rej) => {
      this.aedes.publish({ cmd: 'publish', topic, payload, qos, retain, dup: false } as PublishPacket, (e?: Error) => (e ? rej(e) : res()));
    });
  }

  /** Put retained messages kept by the store back into the broker (start-up). */
  async restoreRetained(rows: ReadonlyArray<{ topic: string; payload: Buffer; qos: number }>): Promise<void> {
    const persistence = (this.aedes as unknown as { persistence: { storeRetained(p: AedesPublishPacket): Promise<void> } }).persistence;
    for (const r of rows) {
      await persistence.storeRetained({
        cmd: 'publish', topic: r.topic, payload: r.payload, qos: r.qos as 0 | 1 | 2, retain: true, dup: false, brokerId: this.aedes.id, brokerCounter: 0,
      } as AedesPublishPacket);
    }
  }

  get connectedClients(): number {
    return this.aedes.connectedClients;
  }

  /** Idempotent: the composition root may close it from more than one place of its shutdown stack. */
  close(): Promise<void> {
    this.closing ??= this.closeOnce();
    return this.closing;
  }

  private async closeOnce(): Promise<void> {
    // Stop accepting first; server.close() only completes once Aedes has closed the open connections.
    if (this.orphanTimer !== null) clearInterval(this.orphanTimer);
    const tcpClosed = Promise.all([this.tcp, this.tls].map((srv) => (srv ? new Promise<void>((r) => srv.close(() => r())) : undefined)));
    for (const ws of this.wss.clients) ws.terminate();
    this.wss.close();
    await new Promise<void>((r) => this.aedes.close(() => r()));
    await tcpClosed;
    await this.opts.sessions?.close();
  }
}

/**
 * A retained message sent on SUBSCRIBE goes at the lower of its own QoS and the QoS granted to the
 * subscriptions matching it (the highest of them when several overlap) [MQTT-3.8.4-6] [MQTT-3.3.5-1].
 * Aedes downgrades only when a subscription's filter is the topic itself, so a QoS 0 wildcard subscriber
 * would get a QoS 1 retained message at QoS 1. Live deliveries are already at their subscription's QoS.
 */
function retainedAtGrantedQos(client: UnsClient, packet: AedesPublishPacket): AedesPublishPacket {
  const subs = (client as unknown as { subscriptions?: Record<string, { qos?: number }> }).subscriptions ?? {};
  let granted = -1;
  for (const [filter, s] of Object.entries(subs)) {
    if ((s.qos ?? 0) > granted && filterCovers(filter, packet.topic)) granted = s.qos ?? 0;
  }
  if (granted < 0 || granted >= packet.qos) return packet;
  return { ...packet, qos: granted as 0 | 1 | 2 };
}

/**
 * The subject CN of a client certificate the TLS handshake verified against the configured CA, or null
 * (not TLS, no certificate, or one that did not verify, which 'optional' lets through to password login).
 */
function verifiedCertificateName(conn: unknown): string | null {
  const tls = conn as Partial<TLSSocket>;
  if (tls.encrypted !== true || tls.authorized !== true || typeof tls.getPeerCertificate !== 'function') return null;
  const cn = tls.getPeerCertificate().subject?.CN;
  const name = Array.isArray(cn) ? cn[0] : cn;
  return typeof name === 'string' && name !== '' ? name : null;
}

type ProxiedConn = Duplex & { unsAddress?: string; remoteAddress?: string };

/** The client's address: from the PROXY protocol header when there was one, else the socket's peer. */
function addressOf(conn: unknown): string | null {
  const c = conn as ProxiedConn;
  return c.unsAddress ?? c.remoteAddress ?? null;
}

/**
 * Cluster mode: before a client is admitted, the instance holding its persistent session (the database says
 * which) lets go of it, so exactly one instance holds it; a persistent CONNECT then reads it here. Null when
 * the client may proceed, else why not (CONNACK 3: retry): the holder is alive but cannot be asked (Redis
 * away), or does not answer, or the database cannot be read for a persistent session. An instance no longer
 * heard from holds nothing: what it wrote is in the database.
 */
async function takeOver(clientId: string, clean: boolean, sessions: SessionStore, bus: ClusterBus, log: Logger): Promise<string | null> {
  let holder: string | null | undefined;
  try {
    holder = await sessions.ownerInstance(clientId);
  } catch (e) {
    // A clean session needs nothing from the database; a persistent one does.
    return clean ? null : `sessions cannot be read: ${(e as Error).message}`;
  }
  if (holder !== undefined && holder !== null && holder !== bus.instanceId && bus.isLive(holder)) {
    if (!bus.stats.connected) return 'the instance holding the session cannot be reached (Redis unavailable)';
    const answered = bus.waitFor((f, origin) => f.k === 'released' && f.client === clientId && origin === holder, 5_000);
    bus.send({ k: 'release', client: clientId, to: holder });
    if ((await answered) === null) return `the instance holding the session (${holder}) did not let go of it`;
    log.info({ clientId, from: holder }, 'persistent session taken over from another instance');
  }
  if (holder === undefined) return null;
  // Read here even for a clean session, which then discards it (Aedes' clean-session path, in the database too).
  try {
    await sessions.adopt(clientId);
  } catch (e) {
    return `session cannot be read: ${(e as Error).message}`;
  }
  return null;
}
