/**
 * GET /ready's report from the parts' own figures: ready only when the database takes writes, the spool is
 * not holding, no replay is under way and (embedded store) PostgreSQL runs; otherwise 503 with the reason.
 */
import type { WriterStats } from '../../bridge/index.js';
import type { ReadinessReport } from './deps.js';

export interface ReadinessParts {
  readonly writer: WriterStats;
  readonly storeOpen: boolean;
  readonly timescale: boolean;
  readonly broker: { readonly clients: number; readonly held: number };
  /** External-broker mode: the link to the plant's broker (null when the broker is embedded). */
  readonly link?: {
    readonly broker: string | null; readonly clientId: string | null; readonly group: string; readonly connected: boolean; readonly subscribed: boolean; readonly lastError: string | null; readonly held: number; readonly connectionsLost: number;
  } | null;
  /** Persistent MQTT sessions (embedded broker): loaded yet, and whether changes are being written. */
  readonly sessions?: { readonly loaded: boolean; readonly count: number; readonly queued: number; readonly unsaved: number; readonly failingSince: number | null; readonly lastError: string | null; readonly loadMs: number | null } | null;
  /** Cluster mode: this instance, Redis, and the other instances heard from. */
  readonly cluster?: {
    readonly instance: string; readonly redis: string; readonly connected: boolean; readonly downSince: number | null; readonly lastError: string | null;
    readonly peers: ReadonlyArray<{ readonly id: string; readonly clients: number; readonly lastSeen: number }>; readonly dropped: number;
  } | null;
  readonly embedded: { readonly state: string; readonly pid: number | null; readonly restarts: number; readonly lastError: string | null } | null;
  readonly stopping: boolean;
  /** Users that can authenticate; a warning when there are none (and no anonymous role): everyone is locked out. */
  readonly users: { readonly count: number; readonly warning: string | null };
}

const iso = (ms: number): string => new Date(ms).toISOString();

export function readinessReport(p: ReadinessParts): ReadinessReport {
  const w = p.writer;
  // Connected is not enough: until the broker grants the subscriptions, what devices publish goes nowhere.
  const linkDown = p.link !== undefined && p.link !== null && !(p.link.connected && p.link.subscribed);
  const clusterDown = p.cluster !== undefined && p.cluster !== null && !p.cluster.connected;
  const degraded = w.state !== 'healthy' || w.holding !== null || w.replay !== null || !p.storeOpen || (p.embedded !== null && p.embedded.state !== 'running') || linkDown || clusterDown;
  return {
    ready: !degraded && !p.stopping,
    status: p.stopping ? 'stopping' : degraded ? 'degraded' : 'ready',
    checks: {
      database: {
        state: w.state, timescale: p.timescale, lastError: degraded ? w.lastError : null,
        outage: w.outage === null ? null : { class: w.outage.class, reason: w.outage.reason, since: iso(w.outage.since) },
      },
      spool: {
        segments: w.spoolSegments, bytes: w.spoolBytes, corrupt: w.corruptSegments,
        holding: w.holding === null ? null : { failure: w.holding.failure, reason: w.holding.reason, since: iso(w.holding.since) },
        replay: w.replay === null ? null : { done: w.replay.done, total: w.replay.total, since: iso(w.replay.startedAt) },
      },
      broker: p.broker,
      ...(p.cluster ? { cluster: {
        instance: p.cluster.instance, redis: p.cluster.redis, connected: p.cluster.connected,
        downSince: p.cluster.downSince === null ? null : iso(p.cluster.downSince), lastError: p.cluster.connected ? null : p.cluster.lastError,
        dropped: p.cluster.dropped, peers: p.cluster.peers.map((x) => ({ id: x.id, clients: x.clients, lastSeen: iso(x.lastSeen) })),
      } } : {}),
      ...(p.sessions ? { sessions: { ...p.sessions, failingSince: p.sessions.failingSince === null ? null : iso(p.sessions.failingSince) } } : {}),
      ...(p.link ? { link: { ...p.link, lastError: p.link.connected && p.link.subscribed ? null : (p.link.lastError ?? 'waiting for the broker to grant the subscriptions') } } : {}),
      backlog: { queued: w.queued, inFlight: w.inFlight, spoolSegments: w.spoolSegments, spoolBytes: w.spoolBytes },
      embedded: p.embedded,
      users: p.users,
    },
  };
}
