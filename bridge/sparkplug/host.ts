/**
 * The Sparkplug host application (Sparkplug 3.0, chapter 5): the part of uns-bridge that talks back to
 * edge nodes. Decoding and session state live in the decoder (bridge/decode/sparkplug.ts), which tells this
 * host what to act on through SparkplugSessionListener; the host does the I/O, later, never inside a stage:
 * - STATE: `spBv1.0/STATE/<host id>`, JSON `{"online": true|false, "timestamp": T}`, QoS 1, retained, online
 *   before edge traffic is accepted and offline before a graceful stop, both with one timestamp T per
 *   connection [tck-id-operational-behavior-host-application-connect-birth-payload]
 *   [tck-id-operational-behavior-host-application-death-payload];
 * - rebirth requests (NCMD `Node Control/Rebirth` = true) after a Reorder Timeout that did not close a
 *   sequence gap [tck-id-operational-behavior-host-reordering-rebirth], on DATA before BIRTH and on an
 *   unknown alias; at most one per node per cooldown, each counted;
 * - the view of groups, nodes and devices for the REST API, and the counters for /metrics.
 */
import type { Logger } from '../../src/core/index.js';
import type { SparkplugDecoder, SparkplugSessionListener } from '../decode/sparkplug.js';
import type { Sink } from '../sinks/sink.js';
import { encodeCommand, type CommandMetric } from './commands.js';

export interface HostOptions {
  readonly hostId: string;
  readonly reorderTimeoutMs: number;
  readonly autoRebirth: boolean;
  readonly rebirthCooldownMs: number;
  /** Publishes from the server (not through the ingest path). */
  readonly publish: (topic: string, payload: Buffer, retain: boolean, qos: 0 | 1) => Promise<void>;
  readonly log: Logger;
  readonly now?: () => number;
}

export interface HostStats {
  births: number;
  deaths: number;
  /** Metrics marked stale by deaths. */
  staleMarks: number;
  seqGaps: number;
  gapsClosed: number;
  staleDeaths: number;
  rebirthsRequested: number;
  /** Wanted but not sent: within the node's cooldown, or automatic rebirths switched off. */
  rebirthsSuppressed: number;
  commandsSent: number;
}

export type RebirthOutcome = { readonly sent: true } | { readonly sent: false; readonly reason: 'cooldown' | 'disabled'; readonly retryAfterMs?: number };

export interface NodeView {
  readonly group_id: string;
  readonly edge_node_id: string;
  readonly online: boolean;
  readonly bd_seq: string | null;
  readonly seq: number;
  readonly born_at: string | null;
  readonly died_at: string | null;
  readonly metrics: number;
  readonly awaiting_seq: readonly number[];
  readonly rebirths_requested: number;
  readonly last_rebirth_at: string | null;
  readonly devices: ReadonlyArray<{ readonly device_id: string; readonly online: boolean; readonly born_at: string | null; readonly metrics: number }>;
}

interface NodeBook {
  rebirths: number;
  lastRebirthAt: number | null;
  reorderTimer: NodeJS.Timeout | null;
}

export const REBIRTH_METRIC = 'Node Control/Rebirth';

export class SparkplugHost implements SparkplugSessionListener {
  readonly stats: HostStats = { births: 0, deaths: 0, staleMarks: 0, seqGaps: 0, gapsClosed: 0, staleDeaths: 0, rebirthsRequested: 0, rebirthsSuppressed: 0, commandsSent: 0 };
  private decoder: SparkplugDecoder | null = null;
  private readonly books = new Map<string, NodeBook>();
  private readonly now: () => number;
  /** One STATE timestamp per broker connection; the embedded broker is one connection for the process. */
  private stateTimestamp: number | null = null;
  private closed = false;

  constructor(private readonly opts: HostOptions) {
    this.now = opts.now ?? Date.now;
  }

  get stateTopic(): string {
    return `spBv1.0/STATE/${this.opts.hostId}`;
  }

  /** The decoder whose sessions this host acts on (it is built with this host as its listener). */
  attach(decoder: SparkplugDecoder): void {
    this.decoder = decoder;
  }

  /** The will a host connecting to an external broker registers [tck-id-operational-behavior-host-application-connect-will]. */
  will(): { topic: string; payload: Buffer; qos: 1; retain: true } {
    this.stateTimestamp ??= this.now();
    return { topic: this.stateTopic, payload: statePayload(false, this.stateTimestamp), qos: 1, retain: true };
  }

  /** STATE online: before edge traffic is accepted [tck-id-operational-behavior-host-application-connect-birth]. */
  async online(): Promise<void> {
    this.stateTimestamp ??= this.now();
    await this.opts.publish(this.stateTopic, statePayload(true, this.stateTimestamp), true, 1);
    this.opts.log.info({ topic: this.stateTopic, timestamp: this.stateTimestamp }, 'sparkplug host online');
  }

  /** STATE offline before a graceful stop [tck-id-operational-behavior-host-application-termination]. */
  async offline(): Promise<void> {
    this.closed = true;
    for (const b of this.books.values()) if (b.reorderTimer) clearTimeout(b.reorderTimer);
    if (this.stateTimestamp === null) return;
    await this.opts.publish(this.stateTopic, statePayload(false, this.stateTimestamp), true, 1);
  }

  /**
   * Births and deaths once durable: counted, and each certificate offered retained on
   * `$sparkplug/certificates/...` (the store keeps it too, so it is back after a restart).
   */
  sink(): Sink {
    return {
      name: 'sparkplug-host', when: 'durable',
      accept: (m) => {
        const s = m.session;
        if (s === undefined) return;
        if (s.online) this.stats.births++;
        else { this.stats.deaths++; this.stats.staleMarks += m.points.length; }
        const cert = s.certificate;
        if (cert === undefined) return;
        this.opts.publish(cert.topic, Buffer.from(cert.payload.buffer, cert.payload.byteOffset, cert.payload.length), true, 1)
          .catch((e: Error) => this.opts.log.warn({ topic: cert.topic, err: e.message }, 'certificate not published'));
      },
    };
  }

  // ------------------------------------------------------------------------------- SparkplugSessionListener

  rebirthNeeded(group: string, edge: string, reason: string): void {
    this.rebirth(group, edge, reason, false);
  }

  gapOpened(group: string, edge: string): void {
    this.stats.seqGaps++;
    const book = this.book(group, edge);
    if (book.reorderTimer !== null || this.closed) return;
    // [tck-id-operational-behavior-host-reordering-start] the Reorder Timeout starts with the first gap.
    book.reorderTimer = setTimeout(() => {
      book.reorderTimer = null;
      const missing = this.decoder?.missing(group, edge) ?? [];
      if (missing.length === 0) { this.stats.gapsClosed++; return; }
      this.decoder?.forgetMissing(group, edge);
      this.rebirth(group, edge, `sequence numbers ${missing.join(', ')} missing after ${this.opts.reorderTimeoutMs} ms`, false);
    }, this.opts.reorderTimeoutMs);
    book.reorderTimer.unref();
  }

  staleDeath(): void {
    this.stats.staleDeaths++;
  }

  // ------------------------------------------------------------------------------------------- commands

  /**
   * Asks an edge node to send its births again. `manual`: an operator's request (REST), which the automatic
   * switch does not stop; the cooldown applies to both, so no caller can start a rebirth storm.
   */
  rebirth(group: string, edge: string, reason: string, manual: boolean): RebirthOutcome {
    if (!manual && !this.opts.autoRebirth) {
      this.stats.rebirthsSuppressed++;
      return { sent: false, reason: 'disabled' };
    }
    const book = this.book(group, edge);
    const now = this.now();
    if (book.lastRebirthAt !== null && now - book.lastRebirthAt < this.opts.rebirthCooldownMs) {
      this.stats.rebirthsSuppressed++;
      return { sent: false, reason: 'cooldown', retryAfterMs: this.opts.rebirthCooldownMs - (now - book.lastRebirthAt) };
    }
    book.lastRebirthAt = now;
    book.rebirths++;
    this.stats.rebirthsRequested++;
    // [tck-id-operational-behavior-data-commands-rebirth-name] [-datatype] [-value]: Boolean true.
    const payload = encodeCommand([{ name: REBIRTH_METRIC, datatype: 'Boolean', value: true }], now);
    this.opts.log.info({ group, edge, reason, manual }, 'sparkplug rebirth requested');
    this.opts.publish(`spBv1.0/${group}/NCMD/${edge}`, payload, false, 0)
      .catch((e: Error) => this.opts.log.warn({ group, edge, err: e.message }, 'rebirth request not published'));
    return { sent: true };
  }

  /** Writes metrics on a node (NCMD) or a device (DCMD); the caller has checked datatypes and permissions. */
  async command(group: string, edge: string, device: string | null, metrics: readonly CommandMetric[]): Promise<void> {
    const topic = device === null ? `spBv1.0/${group}/NCMD/${edge}` : `spBv1.0/${group}/DCMD/${edge}/${device}`;
    await this.opts.publish(topic, encodeCommand(metrics, this.now()), false, 0);
    this.stats.commandsSent++;
  }

  /** A node's or device's session (see SparkplugDecoder.scope), for commands. */
  scope(group: string, edge: string, device: string | null): ReturnType<SparkplugDecoder['scope']> {
    return this.decoder?.scope(group, edge, device);
  }

  // ------------------------------------------------------------------------------------------------ view

  nodes(): NodeView[] {
    const iso = (t: number | null | undefined): string | null => (t === null || t === undefined ? null : new Date(t).toISOString());
    return (this.decoder?.sessions() ?? []).map((n) => {
      const book = this.books.get(`${n.group}/${n.edge}`);
      return {
        group_id: n.group, edge_node_id: n.edge, online: n.online, bd_seq: n.bdSeq === null ? null : String(n.bdSeq), seq: n.seq,
        born_at: iso(n.bornAt), died_at: iso(n.diedAt), metrics: n.defs.filter((d) => d.name !== 'bdSeq').length,
        awaiting_seq: [...n.missing], rebirths_requested: book?.rebirths ?? 0, last_rebirth_at: iso(book?.lastRebirthAt),
        devices: [...n.devices].map(([id, d]) => ({ device_id: id, online: d.online, born_at: iso(d.bornAt), metrics: d.defs.length })),
      };
    }).sort((a, b) => (a.group_id + a.edge_node_id < b.group_id + b.edge_node_id ? -1 : 1));
  }

  private book(group: string, edge: string): NodeBook {
    const key = `${group}/${edge}`;
    let b = this.books.get(key);
    if (b === undefined) {
      b = { rebirths: 0, lastRebirthAt: null, reorderTimer: null };
      this.books.set(key, b);
    }
    return b;
  }
}

function statePayload(online: boolean, timestamp: number): Buffer {
  return Buffer.from(JSON.stringify({ online, timestamp }));
}
