/**
 * MQTT sessions kept in PostgreSQL: the Aedes persistence of the embedded broker.
 *
 * The subscriptions of persistent sessions (clean=false), their queues (offline QoS 1/2 messages and
 * outgoing messages in flight, with their packet ids and PUBREL state), and the QoS 2 receive state live in
 * memory, where Aedes reads them on every publish, and are written to PostgreSQL through a journal: each
 * change is an operation; the operations waiting when the previous write ends go in one transaction (group
 * commit), in order, one statement per run of operations of one kind. A change that is undone before it is
 * written (a message queued and acknowledged by its subscriber within one commit) is never written.
 *
 * What waits for the commit: SUBACK and UNSUBACK, a message queued for a session (so the publisher's PUBACK,
 * which Aedes sends after queueing, means the message is in the queue), QoS 2 receive state (PUBREC) and
 * QoS 2 outgoing state. What does not wait: the removal of acknowledged messages, and packet ids of QoS 1
 * messages in flight (after a crash they are sent again, as MQTT allows for QoS 1).
 *
 * When the database cannot be written, changes stay in memory and in the journal, acknowledgements are not
 * held, and the journal is written when the database returns (a crash during the outage loses the session
 * changes made during it; the messages themselves are in the store or its spool).
 *
 * At start-up the sessions are loaded once the store is open (`load()`); until then a CONNECT that asks for
 * a persistent session is refused as "server unavailable" (the broker asks `ready`).
 *
 * Retained messages are kept in memory here, as in Aedes' own persistence: the store keeps them and
 * restores them at start-up. Wills are kept in memory too.
 */
import { createRequire } from 'node:module';
import { Readable } from 'node:stream';
import { EventEmitter } from 'node:events';
import type pg from 'pg';
import type { Logger } from '../src/core/index.js';
import { decodePacket, runGroup, type Op, type OpKind, type QueueEntry, type SessionInfo, type SessionPacket, type SessionSub } from './session-sql.js';

export type { SessionPacket, SessionSub } from './session-sql.js';

const require = createRequire(import.meta.url);

interface ClientRef { readonly id: string; readonly clean?: boolean }
interface TopicSub { readonly clientId: string; readonly topic: string; readonly qos: number; readonly rh?: number; readonly rap?: boolean; readonly nl?: boolean }

interface QlobberSubInstance {
  subscriptionsCount: number;
  add(topic: string, val: TopicSub): void;
  remove(topic: string, val: { clientId: string; topic: string }): void;
  match(topic: string): TopicSub[];
}
type QlobberSubCtor = new (opts: { wildcard_one: string; wildcard_some: string; separator: string }) => QlobberSubInstance;
interface QlobberTrueInstance { add(topic: string): void; test(topic: string): boolean }
type QlobberTrueCtor = new (opts: { wildcard_one: string; wildcard_some: string; separator: string }) => QlobberTrueInstance;
type PacketCtor = new (p: SessionPacket, broker?: unknown) => SessionPacket;

// Aedes' own subscription trie (it also counts subscriptions), and its packet shape.
const QlobberSub = require('qlobber/aedes/qlobber-sub') as QlobberSubCtor;
const { QlobberTrue } = require('qlobber') as { QlobberTrue: QlobberTrueCtor };
const Packet = require('aedes-packet') as PacketCtor;
const TRIE = { wildcard_one: '+', wildcard_some: '#', separator: '/' };
/** Shared answers of the per-publish paths when there is nothing to do (never mutated by their callers). */
const NO_SUBS: Promise<TopicSub[]> = Promise.resolve(Object.freeze([]) as unknown as TopicSub[]);
const DONE: Promise<void> = Promise.resolve();

export interface SessionStoreOptions {
  readonly pool: pg.Pool;
  readonly log: Logger;
  /** Messages kept for one offline session; 0: no limit. */
  readonly queueMax: number;
  /** What a full queue gives up: the new message, or the oldest one not in flight. */
  readonly overflow: 'drop-new' | 'drop-old';
  /** A session not connected for this long is removed; 0: never. */
  readonly expiryMs: number;
  /** Cluster mode: this instance's id (it holds the sessions recorded with it). */
  readonly instanceId?: string | undefined;
  readonly now?: () => number;
}

export interface SessionStoreStats {
  loaded: boolean;
  /** Persistent sessions known, and messages queued for them (in flight included). */
  sessions: number;
  queued: number;
  /** Messages not queued (or pushed out) for a full session queue. */
  dropped: number;
  expired: number;
  /** Changes not yet written to the database, and when writing last failed (null: it works). */
  unsaved: number;
  failingSince: number | null;
  lastError: string | null;
  /** How long reading the sessions took at start-up (ms), once read. */
  loadMs: number | null;
}

/** A timer-free deferred for "the batch this change is in has committed (or the database is down)". */
interface Batch { ops: Op[]; waiters: Array<() => void> }

const RETRY_MIN_MS = 500;
const RETRY_MAX_MS = 10_000;
const SWEEP_MS = 60_000;
/** Cluster mode: how often an instance renews its lease, and how old one must be before its sessions are taken over. */
const LEASE_RENEW_MS = 2_000;
const LEASE_STALE_MS = 6_000;
/** Queue rows read per query at start-up. */
const LOAD_PAGE = 20_000;

export class SessionStore extends EventEmitter {
  readonly stats: SessionStoreStats = {
    loaded: false, sessions: 0, queued: 0, dropped: 0, expired: 0, unsaved: 0, failingSince: null, lastError: null, loadMs: null,
  };
  private broker: { id: string; counter?: number; clients?: Record<string, unknown> } | null = null;
  private readonly retained = new Map<string, SessionPacket>();
  /** clientId -> (filter -> subscription) */
  private readonly subs = new Map<string, Map<string, SessionSub>>();
  private readonly trie = new QlobberSub(TRIE);
  private readonly outgoing = new Map<string, QueueEntry[]>();
  private readonly incoming = new Map<string, Map<number, SessionPacket>>();
  private readonly wills = new Map<string, SessionPacket>();
  private readonly sessions = new Map<string, SessionInfo>();
  private seq = 0;
  /** Per client: packet ids of the PUBLISHes in its queue when a resuming session read it (sent before). */
  private readonly resending = new Map<string, Set<number>>();
  /** Sessions handed over to another instance (cluster mode): their client's last events here are not recorded. */
  private readonly releasedIds = new Set<string>();
  /** QoS 1 messages queued before their PUBACK, by payload (the Buffer Aedes' publish carries on), until Aedes queues them. */
  private readonly queuedEarly = new WeakMap<Buffer, { topic: string; clients: Set<string>; entries: Array<[string, QueueEntry]> }>();

  // The journal.
  private pending: Batch = { ops: [], waiters: [] };
  private readonly pendingSub = new Map<string, Extract<Op, { k: 'sub_put' }>>();
  private readonly pendingOut = new Map<QueueEntry, Extract<Op, { k: 'out_put' }>>();
  private readonly pendingIn = new Map<string, Extract<Op, { k: 'in_put' }>>();
  private readonly pendingSeen = new Map<string, Extract<Op, { k: 'seen' }>>();
  private writing = false;
  private retryMs = RETRY_MIN_MS;
  private retryTimer: NodeJS.Timeout | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  private leaseTimer: NodeJS.Timeout | null = null;

  private state: 'unloaded' | 'loading' | 'loaded' | 'closed' = 'unloaded';
  private loading: Promise<void> | null = null;
  /** Sessions discarded (clean connects) before loading ended: what the database has of them is not loaded. */
  private readonly discardedEarly = new Set<string>();
  private readonly now: () => number;

  constructor(private readonly opts: SessionStoreOptions) {
    super();
    this.now = opts.now ?? Date.now;
  }

  /** Whether persistent sessions can be served (loaded from the database). */
  get ready(): boolean {
    return this.state === 'loaded';
  }

  /** The user a persistent session belongs to: undefined when there is no such session, null for anonymous. */
  owner(clientId: string): string | null | undefined {
    return this.sessions.get(clientId)?.username;
  }

  /** A persistent session's client connected or disconnected: it is alive now (its expiry counts from here). */
  seen(clientId: string, username: string | null): void {
    const s = this.sessions.get(clientId);
    if (this.releasedIds.has(clientId)) return; // its disconnect, after another instance took it over
    const info = { seenAt: this.now(), username, instance: this.opts.instanceId ?? null };
    if (s === undefined) this.sessions.set(clientId, info);
    else Object.assign(s, info);
    const live = this.pendingSeen.get(clientId);
    if (live !== undefined) { live.s = info; return; }
    const op = { k: 'seen' as const, c: clientId, s: info };
    this.pendingSeen.set(clientId, op);
    this.push(op);
  }

  // ---- Aedes persistence interface ----

  async setup(broker: { id: string; counter?: number; clients?: Record<string, unknown> }): Promise<void> {
    this.broker = broker;
  }

  async storeRetained(pkt: SessionPacket): Promise<void> {
    const packet = { ...pkt };
    if (packet.payload === undefined || packet.payload.length === 0) this.retained.delete(packet.topic as string);
    else this.retained.set(packet.topic as string, packet);
  }

  createRetainedStreamCombi(patterns: string[]): Readable {
    const retained = this.retained;
    return Readable.from((function* () {
      for (const p of patterns) yield* retainedMatching(retained, p);
    })());
  }

  createRetainedStream(pattern: string): Readable {
    return Readable.from(retainedMatching(this.retained, pattern));
  }

  async addSubscriptions(client: ClientRef, subs: ReadonlyArray<SessionSub & { topic: string }>): Promise<void> {
    let stored = this.subs.get(client.id);
    if (stored === undefined) {
      stored = new Map();
      this.subs.set(client.id, stored);
    }
    for (const sub of subs) {
      const before = stored.get(sub.topic);
      const record: SessionSub = { qos: sub.qos, rh: sub.rh, rap: sub.rap, nl: sub.nl } as SessionSub;
      if (sub.subscriptionIdentifier !== undefined) record.subscriptionIdentifier = sub.subscriptionIdentifier;
      if (sub.qos > 0) this.trie.add(sub.topic, { clientId: client.id, topic: sub.topic, qos: sub.qos, rh: sub.rh, rap: sub.rap, nl: sub.nl } as TopicSub);
      else if (before !== undefined && before.qos > 0) this.trie.remove(sub.topic, { clientId: client.id, topic: sub.topic });
      stored.set(sub.topic, record);
      this.putSub(client.id, sub.topic, record);
    }
    this.touchSession(client.id);
    await this.durable();
  }

  async removeSubscriptions(client: ClientRef, topics: readonly string[]): Promise<void> {
    const stored = this.subs.get(client.id);
    if (stored !== undefined) {
      for (const topic of topics) {
        const sub = stored.get(topic);
        if (sub === undefined) continue;
        if (sub.qos > 0) this.trie.remove(topic, { clientId: client.id, topic });
        stored.delete(topic);
        this.delSub(client.id, topic);
      }
      if (stored.size === 0) this.subs.delete(client.id);
    }
    await this.durable();
  }

  async subscriptionsByClient(client: ClientRef): Promise<Array<SessionSub & { topic: string }>> {
    const stored = this.subs.get(client.id);
    if (stored === undefined) return [];
    return [...stored].map(([topic, s]) => ({ topic, ...s }));
  }

  async countOffline(): Promise<{ subsCount: number; clientsCount: number }> {
    return { subsCount: this.trie.subscriptionsCount, clientsCount: this.subs.size };
  }

  /** Runs for every QoS > 0 publish: most match no persistent session, and then walk no trie nor make a promise. */
  subscriptionsByTopic(topic: string): Promise<TopicSub[]> {
    if (this.trie.subscriptionsCount === 0) return NO_SUBS;
    return Promise.resolve(this.trie.match(topic));
  }

  async cleanSubscriptions(client: ClientRef): Promise<void> {
    const stored = this.subs.get(client.id);
    if (stored !== undefined) {
      for (const [topic, sub] of stored) if (sub.qos > 0) this.trie.remove(topic, { clientId: client.id, topic });
      this.subs.delete(client.id);
    }
    for (const [key, op] of this.pendingSub) {
      if (op.c === client.id) { op.dead = true; this.pendingSub.delete(key); }
    }
    if (this.state !== 'loaded') this.discardedEarly.add(client.id);
    // A clean session ends the persistent one: nothing of it is kept, its expiry clock included.
    if (this.sessions.delete(client.id) || stored !== undefined || this.state !== 'loaded') {
      this.push({ k: 'subs_clear', c: client.id });
      this.push({ k: 'session_del', c: client.id });
    }
    await this.durable();
  }

  async outgoingEnqueue(sub: { clientId: string }, packet: SessionPacket): Promise<void> {
    this.enqueue(sub.clientId, packet, false);
    await this.durable();
  }

  outgoingEnqueueCombi(subs: ReadonlyArray<{ clientId: string }>, packet: SessionPacket): Promise<void> {
    return subs.length === 0 ? DONE : this.enqueueCombi(subs, packet);
  }

  private async enqueueCombi(subs: ReadonlyArray<{ clientId: string }>, packet: SessionPacket): Promise<void> {
    const pre = packet.payload !== undefined ? this.queuedEarly.get(packet.payload) : undefined;
    if (pre !== undefined && pre.topic === packet.topic) {
      // Queued already, before its PUBACK (queueBeforeAck): those entries take this packet's identity, by
      // which Aedes finds them when it delivers to a connected subscriber.
      this.queuedEarly.delete(packet.payload as Buffer);
      for (const [c, e] of pre.entries) {
        e.packet.brokerId = packet.brokerId as string;
        e.packet.brokerCounter = packet.brokerCounter as number;
        this.putOut(c, e);
      }
      let added = false;
      for (const s of subs) if (!pre.clients.has(s.clientId)) added = this.enqueue(s.clientId, packet, true) !== null || added;
      if (added) await this.durable();
      return;
    }
    for (const s of subs) this.enqueue(s.clientId, packet, true);
    await this.durable();
  }

  /**
   * Aedes writes the PUBACK of a QoS 1 publish before it queues the message for persistent sessions; the
   * broker calls this once the message is stored and before letting Aedes acknowledge it, so that an
   * acknowledged message is also in the queue of every persistent session it matches. Null (nothing to
   * wait for) when no persistent session subscribes to the topic.
   */
  queueBeforeAck(packet: SessionPacket): Promise<void> | null {
    if (this.state !== 'loaded' || packet.qos !== 1 || packet.payload === undefined || this.trie.subscriptionsCount === 0) return null;
    const subs = this.trie.match(packet.topic as string);
    if (subs.length === 0) return null;
    // An identity of its own until Aedes' publish gives it the one it delivers under (outgoingEnqueueCombi).
    const own = new Packet(packet, this.broker);
    const pre = { topic: packet.topic as string, clients: new Set<string>(), entries: [] as Array<[string, QueueEntry]> };
    for (const sub of subs) {
      if (pre.clients.has(sub.clientId)) continue;
      pre.clients.add(sub.clientId);
      const e = this.enqueue(sub.clientId, own, true);
      if (e !== null) pre.entries.push([sub.clientId, e]);
    }
    this.queuedEarly.set(packet.payload, pre);
    return this.durable();
  }

  async outgoingUpdate(client: ClientRef, packet: SessionPacket): Promise<void> {
    const queue = this.outgoing.get(client.id) ?? [];
    for (let i = 0; i < queue.length; i++) {
      const e = queue[i]!;
      const p = e.packet;
      if (p.brokerId === packet.brokerId) {
        if (p.brokerCounter === packet.brokerCounter) {
          p.messageId = packet.messageId;
          this.putOut(client.id, e);
          // QoS 1 packet ids are not waited for: a crash re-sends such a message, which QoS 1 allows.
          if ((p.qos ?? 0) > 1) await this.durable();
          return;
        }
      } else if (p.messageId === packet.messageId) {
        // A PUBREL takes the place of its PUBLISH (QoS 2, after PUBREC).
        e.packet = packet;
        this.putOut(client.id, e);
        await this.durable();
        return;
      }
    }
    throw new Error('no such packet');
  }

  async outgoingClearMessageId(client: ClientRef, packet: { messageId?: number | undefined }): Promise<SessionPacket | undefined> {
    const queue = this.outgoing.get(client.id);
    if (queue === undefined) return undefined;
    for (let i = 0; i < queue.length; i++) {
      const e = queue[i]!;
      if (e.packet.messageId === packet.messageId) {
        queue.splice(i, 1);
        if (queue.length === 0) this.outgoing.delete(client.id);
        this.stats.queued--;
        this.delOut(client.id, e);
        return e.packet;
      }
    }
    return undefined;
  }

  /** The queue, in order. Aedes reads it when a session resumes: what was sent before goes again (see isResend). */
  outgoingStream(client: ClientRef): Readable {
    const queue = this.outgoing.get(client.id) ?? [];
    const sent = new Set<number>();
    for (const e of queue) if (e.packet.cmd === 'publish' && typeof e.packet.messageId === 'number') sent.add(e.packet.messageId);
    if (sent.size > 0) this.resending.set(client.id, sent);
    else this.resending.delete(client.id);
    return Readable.from(queue.map((e) => e.packet));
  }

  /**
   * Whether this PUBLISH to a resuming session was sent to it before (it had its packet id when the queue
   * was read): MQTT marks such a re-delivery with DUP [MQTT-3.3.1-1], which Aedes does not set. Each is
   * answered once.
   */
  isResend(clientId: string, messageId: number | undefined): boolean {
    const sent = this.resending.get(clientId);
    if (sent === undefined || messageId === undefined || !sent.delete(messageId)) return false;
    if (sent.size === 0) this.resending.delete(clientId);
    return true;
  }

  async incomingStorePacket(client: ClientRef, packet: SessionPacket): Promise<void> {
    let store = this.incoming.get(client.id);
    if (store === undefined) {
      store = new Map();
      this.incoming.set(client.id, store);
    }
    const copy = new Packet(packet);
    copy.messageId = packet.messageId;
    const id = packet.messageId as number;
    store.set(id, copy);
    const key = `${client.id}\u0000${id}`;
    const live = this.pendingIn.get(key);
    if (live !== undefined) live.packet = copy;
    else {
      const op = { k: 'in_put' as const, c: client.id, id, packet: copy };
      this.pendingIn.set(key, op);
      this.push(op);
    }
    await this.durable();
  }

  async incomingGetPacket(client: ClientRef, packet: { messageId?: number | undefined }): Promise<SessionPacket> {
    const p = this.incoming.get(client.id)?.get(packet.messageId as number);
    if (p === undefined) throw new Error('no such packet');
    return p;
  }

  async incomingDelPacket(client: ClientRef, packet: { messageId?: number | undefined }): Promise<void> {
    const store = this.incoming.get(client.id);
    const id = packet.messageId as number;
    if (store === undefined || !store.has(id)) throw new Error('no such packet');
    store.delete(id);
    if (store.size === 0) this.incoming.delete(client.id);
    const key = `${client.id}\u0000${id}`;
    const live = this.pendingIn.get(key);
    if (live !== undefined) { live.dead = true; this.pendingIn.delete(key); }
    this.push({ k: 'in_del', c: client.id, id });
  }

  async cleanIncoming(client: ClientRef): Promise<void> {
    // After loading, memory mirrors the database: a client with nothing in memory has nothing stored.
    if (!this.incoming.delete(client.id) && this.state === 'loaded') return;
    for (const [key, op] of this.pendingIn) {
      if (op.c === client.id) { op.dead = true; this.pendingIn.delete(key); }
    }
    if (this.state !== 'loaded') this.discardedEarly.add(client.id);
    this.push({ k: 'in_clear', c: client.id });
  }

  async putWill(client: ClientRef, packet: SessionPacket): Promise<void> {
    packet.brokerId = this.broker?.id as string;
    packet['clientId'] = client.id;
    this.wills.set(client.id, packet);
  }

  async getWill(client: ClientRef): Promise<SessionPacket | undefined> {
    return this.wills.get(client.id);
  }

  async delWill(client: ClientRef): Promise<SessionPacket | undefined> {
    const will = this.wills.get(client.id);
    this.wills.delete(client.id);
    return will;
  }

  streamWill(brokers: Record<string, unknown> = {}): Readable {
    return Readable.from([...this.wills.values()].filter((w) => brokers[w.brokerId as string] === undefined));
  }

  getClientList(topic: string): Readable {
    return Readable.from([...this.subs].filter(([, m]) => m.has(topic)).map(([c]) => c));
  }

  /** Aedes' name for close(). */
  async destroy(): Promise<void> {
    await this.close();
  }

  // ---- loading, expiry, closing ----

  /** Loads the sessions from the database (its tables must exist: call once the store is open). Idempotent. */
  load(): Promise<void> {
    if (this.state === 'loaded' || this.state === 'closed') return Promise.resolve();
    this.loading ??= this.loadOnce().finally(() => { this.loading = null; });
    return this.loading;
  }

  private async loadOnce(): Promise<void> {
    this.state = 'loading';
    const started = this.now();
    try {
      // What was discarded meanwhile is written first, so the rows read below are the current ones.
      await this.flushNow();
      if (this.stats.failingSince !== null) throw new Error(this.stats.lastError ?? 'database unavailable');
      const skip = (c: string): boolean => this.discardedEarly.has(c);
      // In a cluster each instance holds the sessions last connected to it; the others are taken over
      // when their clients connect here (adopt) or when their instance is gone (adoptInstance).
      const mine = this.opts.instanceId === undefined ? null : this.opts.instanceId;
      if (mine !== null) await this.renewLease();
      await this.readInto(mine === null ? 'true' : 'client_id IN (SELECT client_id FROM mqtt_sessions WHERE instance = $1)', mine === null ? [] : [mine], skip);
      this.discardedEarly.clear();
      this.state = 'loaded';
      this.stats.loaded = true;
      this.stats.loadMs = this.now() - started;
      this.opts.log.info({ sessions: this.sessions.size, queued: this.stats.queued, ms: this.stats.loadMs }, 'MQTT sessions loaded');
      this.sweep();
      if (mine !== null) {
        this.leaseTimer = setInterval(() => { this.renewLease().catch(() => undefined); }, LEASE_RENEW_MS);
        this.leaseTimer.unref();
      }
      if (this.opts.expiryMs > 0) {
        this.sweepTimer = setInterval(() => this.sweep(), Math.min(SWEEP_MS, this.opts.expiryMs));
        this.sweepTimer.unref();
      }
      this.emit('loaded');
    } catch (e) {
      if (this.state === 'loading') this.state = 'unloaded';
      throw e;
    }
  }

  /**
   * Reads the sessions of the clients `where` selects (a condition on client_id) into memory, in one
   * snapshot; the queue in pages (it may hold millions of messages).
   */
  private async readInto(where: string, params: readonly unknown[], skip: (c: string) => boolean): Promise<void> {
    await inTransaction(this.opts.pool, 'BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY', async (db) => {
      const sessions = await db.query<{ client_id: string; seen_at: Date; username: string | null; instance: string | null }>(
        `SELECT client_id, seen_at, username, instance FROM mqtt_sessions WHERE ${where}`, [...params]);
      for (const r of sessions.rows) {
        if (!skip(r.client_id) && !this.sessions.has(r.client_id)) this.sessions.set(r.client_id, { seenAt: r.seen_at.getTime(), username: r.username, instance: r.instance });
      }
      const subs = await db.query<{ client_id: string; topic: string; qos: number; options: Omit<SessionSub, 'qos'> }>(
        `SELECT client_id, topic, qos, options FROM mqtt_session_subs WHERE ${where}`, [...params]);
      for (const r of subs.rows) {
        if (skip(r.client_id)) continue;
        let m = this.subs.get(r.client_id);
        if (m === undefined) { m = new Map(); this.subs.set(r.client_id, m); }
        const sub: SessionSub = { qos: r.qos, ...r.options };
        m.set(r.topic, sub);
        if (sub.qos > 0) this.trie.add(r.topic, { clientId: r.client_id, topic: r.topic, qos: sub.qos, rh: sub.rh, rap: sub.rap, nl: sub.nl } as TopicSub);
        this.touchLoaded(r.client_id);
      }
      const n = params.length;
      let after: [string, string] | null = null;
      for (;;) {
        const page: pg.QueryResult<{ client_id: string; seq_text: string; packet: string; payload: Buffer | null }> = await db.query(
          `SELECT client_id, seq::text AS seq_text, packet::text AS packet, payload FROM mqtt_session_queue
           WHERE (${where}) ${after === null ? '' : `AND (client_id, seq) > ($${n + 2}, $${n + 3}::bigint)`}
           ORDER BY client_id, seq LIMIT $${n + 1}`,
          after === null ? [...params, LOAD_PAGE] : [...params, LOAD_PAGE, after[0], after[1]]);
        for (const r of page.rows) {
          // A queue row is identified by (client, seq), and in a cluster another instance may have numbered
          // it: new entries here continue after every seq read for the clients held here.
          const seq = Number(r.seq_text);
          if (seq > this.seq) this.seq = seq;
          if (skip(r.client_id)) continue;
          let q = this.outgoing.get(r.client_id);
          if (q === undefined) { q = []; this.outgoing.set(r.client_id, q); }
          q.push({ seq, packet: decodePacket(r.packet, r.payload), stored: true });
          this.stats.queued++;
          this.touchLoaded(r.client_id);
        }
        if (page.rows.length < LOAD_PAGE) break;
        const last = page.rows[page.rows.length - 1]!;
        after = [last.client_id, last.seq_text];
      }
      const incoming = await db.query<{ client_id: string; message_id: number; packet: string; payload: Buffer | null }>(
        `SELECT client_id, message_id, packet::text AS packet, payload FROM mqtt_session_incoming WHERE ${where}`, [...params]);
      for (const r of incoming.rows) {
        if (skip(r.client_id)) continue;
        let m = this.incoming.get(r.client_id);
        if (m === undefined) { m = new Map(); this.incoming.set(r.client_id, m); }
        m.set(r.message_id, decodePacket(r.packet, r.payload));
      }
    });
  }

  // ---- cluster mode: sessions move with their clients ----

  /** Whether this instance holds the client's session in memory. */
  holds(clientId: string): boolean {
    return this.sessions.has(clientId);
  }

  /** The instance the database says holds a session (null: none recorded), or undefined when there is no session. */
  async ownerInstance(clientId: string): Promise<string | null | undefined> {
    const r = await this.opts.pool.query<{ instance: string | null }>('SELECT instance FROM mqtt_sessions WHERE client_id = $1', [clientId]);
    return r.rows.length === 0 ? undefined : r.rows[0]!.instance;
  }

  /**
   * Lets go of a session another instance takes over: its changes written, then forgotten here (what is
   * published here for it from now on reaches it through the instance that holds it).
   */
  async release(clientId: string): Promise<void> {
    this.forget(clientId);
    this.releasedIds.add(clientId);
    await this.flushNow();
  }

  /** Takes over a session from the database (its client connected here). */
  async adopt(clientId: string): Promise<void> {
    this.releasedIds.delete(clientId);
    if (this.sessions.has(clientId)) return;
    await this.readInto('client_id = $1', [clientId], () => false);
    this.seen(clientId, this.sessions.get(clientId)?.username ?? null);
  }

  /** Takes over every session of an instance that is gone (so messages keep being queued for them). */
  async adoptInstance(instance: string): Promise<number> {
    const me = this.opts.instanceId;
    if (me === undefined || this.state !== 'loaded') return 0;
    // Only if its lease is stale (or it never had one), in one transaction with removing it: an instance
    // that renewed its lease (it is back, or was only unreachable over Redis) keeps its sessions.
    const ids = await inTransaction(this.opts.pool, 'BEGIN', async (db) => {
      const lease = await db.query<{ fresh: boolean }>(
        `SELECT seen_at > now() - make_interval(secs => $2) AS fresh FROM cluster_instances WHERE instance = $1 FOR UPDATE`, [instance, LEASE_STALE_MS / 1000]);
      if (lease.rows[0]?.fresh === true) return [];
      await db.query('DELETE FROM cluster_instances WHERE instance = $1', [instance]);
      const moved = await db.query<{ client_id: string }>('UPDATE mqtt_sessions SET instance = $1 WHERE instance = $2 RETURNING client_id', [me, instance]);
      return moved.rows.map((r) => r.client_id);
    });
    if (ids.length === 0) return 0;
    for (const id of ids) this.releasedIds.delete(id);
    const held = new Set(ids.filter((id) => this.sessions.has(id)));
    await this.readInto('client_id = ANY($1::text[])', [ids], (c) => held.has(c));
    for (const id of ids) { const s = this.sessions.get(id); if (s !== undefined) s.instance = me; }
    this.opts.log.info({ instance, sessions: ids.length }, 'took over the persistent sessions of an instance that is gone');
    return ids.length;
  }

  /** Cluster mode: this instance is alive, as far as the database can tell (see migration 9). */
  private async renewLease(): Promise<void> {
    await this.opts.pool.query(
      'INSERT INTO cluster_instances (instance, seen_at) VALUES ($1, now()) ON CONFLICT (instance) DO UPDATE SET seen_at = now()', [this.opts.instanceId]);
  }

  /** The instances the database says hold sessions. */
  async instancesHolding(): Promise<string[]> {
    const r = await this.opts.pool.query<{ instance: string }>('SELECT DISTINCT instance FROM mqtt_sessions WHERE instance IS NOT NULL');
    return r.rows.map((x) => x.instance);
  }

  /** Removes a session from memory only (its rows stay). */
  private forget(c: string): void {
    const subs = this.subs.get(c);
    if (subs !== undefined) for (const [topic, sub] of subs) if (sub.qos > 0) this.trie.remove(topic, { clientId: c, topic });
    this.subs.delete(c);
    this.stats.queued -= this.outgoing.get(c)?.length ?? 0;
    this.outgoing.delete(c);
    this.incoming.delete(c);
    this.resending.delete(c);
    this.sessions.delete(c);
  }

  /** Removes the sessions whose client has not been connected for the expiry. */
  sweep(): void {
    if (this.opts.expiryMs <= 0 || this.state !== 'loaded') return;
    const cutoff = this.now() - this.opts.expiryMs;
    const clients = this.broker?.clients ?? {};
    for (const [c, s] of this.sessions) {
      if (s.seenAt >= cutoff || clients[c] !== undefined) continue;
      for (const e of this.outgoing.get(c) ?? []) { const op = this.pendingOut.get(e); if (op !== undefined) { op.dead = true; this.pendingOut.delete(e); } }
      this.forget(c);
      this.stats.expired++;
      this.push({ k: 'session_del', c });
      this.opts.log.info({ clientId: c, lastSeen: new Date(s.seenAt).toISOString() }, 'MQTT session expired');
    }
  }

  /** Writes what is left in the journal (within `timeoutMs`), then stops. */
  async close(timeoutMs = 5_000): Promise<void> {
    if (this.state === 'closed') return;
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    if (this.leaseTimer) clearInterval(this.leaseTimer);
    if (this.retryTimer) { clearTimeout(this.retryTimer); this.retryTimer = null; }
    if (this.state === 'loaded' || this.state === 'loading') {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        this.flushNow(),
        new Promise<void>((r) => { timer = setTimeout(r, timeoutMs); timer.unref(); }),
      ]);
      clearTimeout(timer);
      if (this.pending.ops.length > 0) this.opts.log.warn({ unsaved: this.unsavedCount() }, 'MQTT session changes not written at stop');
    }
    this.state = 'closed';
  }

  /** Current figures (sessions counted now). */
  snapshot(): SessionStoreStats {
    this.stats.sessions = this.sessions.size;
    this.stats.unsaved = this.unsavedCount();
    return { ...this.stats };
  }

  // ---- memory helpers ----

  private enqueue(clientId: string, packet: SessionPacket, offline: boolean): QueueEntry | null {
    let queue = this.outgoing.get(clientId);
    if (queue === undefined) { queue = []; this.outgoing.set(clientId, queue); }
    const max = this.opts.queueMax;
    if (offline && max > 0 && queue.length >= max) {
      this.stats.dropped++;
      if (this.opts.overflow === 'drop-new') return null;
      const oldest = queue.findIndex((e) => e.packet.messageId === undefined || e.packet.messageId === null);
      if (oldest < 0) return null;
      const [gone] = queue.splice(oldest, 1);
      this.stats.queued--;
      this.delOut(clientId, gone!);
    }
    const e: QueueEntry = { seq: ++this.seq, packet: new Packet(packet) };
    queue.push(e);
    this.stats.queued++;
    this.putOut(clientId, e);
    return e;
  }

  private touchSession(clientId: string): void {
    if (!this.sessions.has(clientId)) {
      const client = this.broker?.clients?.[clientId] as { uns?: { username?: string | null } } | undefined;
      this.seen(clientId, client?.uns?.username ?? null);
    }
  }

  /** Rows of a client with no session row (written before sessions were tracked): its clock starts now. */
  private touchLoaded(clientId: string): void {
    if (!this.sessions.has(clientId)) this.sessions.set(clientId, { seenAt: this.now(), username: null, instance: this.opts.instanceId ?? null });
  }

  // ---- the journal ----

  private putSub(c: string, topic: string, sub: SessionSub): void {
    const key = `${c}\u0000${topic}`;
    const live = this.pendingSub.get(key);
    if (live !== undefined) { live.sub = sub; return; }
    const op = { k: 'sub_put' as const, c, topic, sub };
    this.pendingSub.set(key, op);
    this.push(op);
  }

  private delSub(c: string, topic: string): void {
    const key = `${c}\u0000${topic}`;
    const live = this.pendingSub.get(key);
    if (live !== undefined) { live.dead = true; this.pendingSub.delete(key); }
    this.push({ k: 'sub_del', c, topic });
  }

  private putOut(c: string, e: QueueEntry): void {
    if (this.pendingOut.has(e)) return; // written from the entry itself, as it is when the batch goes
    const op = { k: 'out_put' as const, c, e };
    this.pendingOut.set(e, op);
    this.push(op);
  }

  private delOut(c: string, e: QueueEntry): void {
    const live = this.pendingOut.get(e);
    if (live !== undefined) { live.dead = true; this.pendingOut.delete(e); }
    // Queued and gone before any batch took it: nothing to write at all.
    if (e.stored === true) this.push({ k: 'out_del', c, seq: e.seq });
  }

  private push(op: Op): void {
    this.pending.ops.push(op);
    this.kick();
  }

  private unsavedCount(): number {
    let n = 0;
    for (const op of this.pending.ops) if (!('dead' in op && op.dead === true)) n++;
    return n;
  }

  /** Resolves once what was changed so far is written, or at once while the database cannot be written. */
  private durable(): Promise<void> {
    if (this.state !== 'loaded' && this.state !== 'loading') return Promise.resolve();
    if (this.stats.failingSince !== null || this.pending.ops.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.pending.waiters.push(resolve));
  }

  private kick(): void {
    if (this.writing || this.retryTimer !== null) return;
    if (this.state !== 'loaded' && this.state !== 'loading') return;
    if (this.pending.ops.length === 0) return;
    this.writing = true;
    // Let the changes of this turn of the event loop join the batch.
    setImmediate(() => { this.writeBatch().catch(() => undefined); });
  }

  /** Writes everything pending now (used by load and close). */
  private async flushNow(): Promise<void> {
    for (;;) {
      while (this.writing) await new Promise((r) => setImmediate(r));
      if (this.pending.ops.length === 0 || this.stats.failingSince !== null) return;
      if (this.retryTimer !== null) { clearTimeout(this.retryTimer); this.retryTimer = null; }
      this.writing = true;
      await this.writeBatch();
    }
  }

  private async writeBatch(): Promise<void> {
    const batch = this.pending;
    this.pending = { ops: [], waiters: [] };
    this.pendingSub.clear();
    this.pendingOut.clear();
    this.pendingIn.clear();
    this.pendingSeen.clear();
    const ops = batch.ops.filter((op) => !('dead' in op && op.dead === true));
    for (const op of ops) if (op.k === 'out_put') op.e.stored = true;
    try {
      if (ops.length > 0) await this.apply(ops);
      if (this.stats.failingSince !== null) {
        this.opts.log.info({ since: new Date(this.stats.failingSince).toISOString() }, 'MQTT session changes written again');
      }
      this.stats.failingSince = null;
      this.stats.lastError = null;
      this.retryMs = RETRY_MIN_MS;
      for (const w of batch.waiters) w();
      this.writing = false;
      this.kick();
    } catch (e) {
      const err = e as Error;
      if (this.stats.failingSince === null) {
        this.stats.failingSince = this.now();
        this.opts.log.warn({ err: err.message }, 'MQTT session changes cannot be written: kept in memory, written when the database returns');
      }
      this.stats.lastError = err.message;
      // The batch goes back in front of what came since, in order; nobody waits for it meanwhile.
      this.pending = { ops: [...ops, ...this.pending.ops], waiters: [] };
      for (const w of batch.waiters) w();
      for (const w of this.pending.waiters) w();
      this.writing = false;
      if (this.state === 'closed') return;
      this.retryTimer = setTimeout(() => {
        this.retryTimer = null;
        if (this.pending.ops.length > 0) { this.writing = true; this.writeBatch().catch(() => undefined); }
      }, this.retryMs);
      this.retryTimer.unref();
      this.retryMs = Math.min(RETRY_MAX_MS, this.retryMs * 2);
    }
  }

  private async apply(ops: readonly Op[]): Promise<void> {
    await inTransaction(this.opts.pool, 'BEGIN', async (db) => {
      let i = 0;
      while (i < ops.length) {
        const kind: OpKind = ops[i]!.k;
        let j = i;
        while (j < ops.length && ops[j]!.k === kind) j++;
        await runGroup(db, kind, ops.slice(i, j));
        i = j;
      }
    });
  }
}

/**
 * Runs `work` in one transaction on one pooled connection: committed when it returns, rolled back when it
 * throws (the connection is then dropped rather than reused, whatever state it is in).
 */
async function inTransaction<T>(pool: pg.Pool, begin: string, work: (db: pg.PoolClient) => Promise<T>): Promise<T> {
  const db = await pool.connect();
  try {
    await db.query(begin);
    const out = await work(db);
    await db.query('COMMIT');
    db.release();
    return out;
  } catch (e) {
    await db.query('ROLLBACK').catch(() => undefined);
    db.release(true);
    throw e;
  }
}

function* retainedMatching(retained: Map<string, SessionPacket>, pattern: string): Generator<SessionPacket> {
  const q = new QlobberTrue(TRIE);
  q.add(pattern);
  for (const [topic, packet] of retained) if (q.test(topic)) yield packet;
}
