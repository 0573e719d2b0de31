/**
 * Sparkplug commands from API callers, whatever the door: POST /api/v1/sparkplug/commands (routes/sparkplug.ts)
 * and the `sparkplug_command` message of the WebSocket stream (stream.ts) both go through `send`, so both make
 * the same checks, refuse with the same ApiErrors and write the same audit.
 * - Writing needs the caller's write permission on the command topic (NCMD, or DCMD for a device), checked
 *   before anything that would tell whether the node exists;
 * - the node (and device) must be born and online; each metric must be in its BIRTH and is checked against
 *   the datatype it declared [tck-id-topics-ncmd-payload] [tck-id-topics-dcmd-payload];
 * - every attempt is audited in sparkplug_commands: a command is published only once its 'sent' row is
 *   written (UNS_ERR_UNAVAILABLE otherwise), refusals are recorded best-effort, and a row whose command could
 *   not be published is corrected to 'refused'.
 * The audit helpers and the online check are shared with the rebirth route.
 */
import { ApiError } from './errors.js';
import type { ApiPrincipal } from './auth.js';
import type { ApiDeps } from './deps.js';
import { commandValue, REBIRTH_METRIC, type CommandMetric, type CommandValue, type SparkplugHost } from '../../bridge/index.js';

/** The body of a command (schema SparkplugCommand in schemas/openapi/sparkplug.json). */
export interface SparkplugCommandBody {
  readonly group_id: string;
  readonly edge_node_id: string;
  readonly device_id?: string | undefined;
  readonly metrics: ReadonlyArray<{ readonly name: string; readonly value: CommandValue }>;
}

export interface SparkplugCommandSent {
  readonly topic: string;
  readonly metrics: CommandMetric[];
}

/** One attempt, as the audit keeps it: the metrics as requested (refused) or as encoded (sent). */
export interface AuditEntry {
  readonly username: string;
  readonly group: string;
  readonly edge: string;
  readonly device: string | null;
  readonly metrics: ReadonlyArray<{ readonly name: string; readonly datatype?: string; readonly value: CommandValue }>;
}

export interface CommandAudit {
  /** Writes a row and gives its id; rejects when the database does not take it. */
  insert(a: AuditEntry, result: 'sent' | 'refused', reason: string | null): Promise<string>;
  /** A refusal is recorded if the database takes it; the caller gets the refusal either way. */
  recordRefusal(a: AuditEntry, e: ApiError): Promise<void>;
}

type CommandDeps = Pick<ApiDeps, 'pool' | 'log' | 'sparkplug'>;

/** jsonb refuses U+0000 in strings: the audit keeps a request that held one, with U+FFFD in its place. */
function auditJson(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'string' ? x.replaceAll('\u0000', '\ufffd') : x));
}

export function unavailable(what: string): ApiError {
  return new ApiError('UNS_ERR_UNAVAILABLE', `${what} (database unreachable); retry`, { 'Retry-After': '1' });
}

export function commandAudit(deps: Pick<ApiDeps, 'pool' | 'log'>): CommandAudit {
  const insert = async (a: AuditEntry, result: 'sent' | 'refused', reason: string | null): Promise<string> => {
    const q = await deps.pool.query<{ id: string }>(
      `INSERT INTO sparkplug_commands (username, group_id, edge_node_id, device_id, metrics, result, reason)
       VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7) RETURNING id`,
      [a.username, a.group, a.edge, a.device, auditJson(a.metrics), result, reason]);
    return (q.rows[0] as { id: string }).id;
  };
  return {
    insert,
    async recordRefusal(a, e) {
      await insert(a, 'refused', `${e.code}: ${e.message}`)
        .catch((err: Error) => deps.log.warn({ err: err.message, group: a.group, edge: a.edge, device: a.device }, 'sparkplug command refusal not audited'));
    },
  };
}

export function mayWrite(p: ApiPrincipal, topic: string): void {
  if (!p.perms.canWrite(topic)) throw new ApiError('UNS_ERR_FORBIDDEN', `you may not write ${topic}`);
}

type Scope = NonNullable<ReturnType<SparkplugHost['scope']>>;

/** The node's (device null) or device's session for a command to it: NOT_FOUND when never born, BAD_REQUEST when offline. */
export function onlineScope(host: SparkplugHost, group: string, edge: string, device: string | null): Scope {
  const node = host.scope(group, edge, null);
  const scope = device === null ? node : host.scope(group, edge, device);
  if (node === undefined) throw new ApiError('UNS_ERR_NOT_FOUND', `no edge node ${group}/${edge} has been born`);
  if (scope === undefined) throw new ApiError('UNS_ERR_NOT_FOUND', `no device ${device} of edge node ${group}/${edge} has been born`);
  if (!node.online) throw new ApiError('UNS_ERR_BAD_REQUEST', `edge node offline: ${group}/${edge} has died since its BIRTH`);
  if (!scope.online) throw new ApiError('UNS_ERR_BAD_REQUEST', `device offline: ${group}/${edge}/${device} has died since its BIRTH`);
  return scope;
}

export function sparkplugCommands(deps: CommandDeps): { send(principal: ApiPrincipal, body: SparkplugCommandBody): Promise<SparkplugCommandSent> } {
  const host = deps.sparkplug;
  const audit = commandAudit(deps);

  /** Checks a command and gives the metrics as they will be encoded; throws the ApiError that refuses it. */
  const check = (p: ApiPrincipal, b: SparkplugCommandBody, topic: string): CommandMetric[] => {
    mayWrite(p, topic);
    const scope = onlineScope(host, b.group_id, b.edge_node_id, b.device_id ?? null);
    const seen = new Set<string>();
    return b.metrics.map((m) => {
      if (seen.has(m.name)) throw new ApiError('UNS_ERR_BAD_REQUEST', `metric "${m.name}" is given more than once`);
      seen.add(m.name);
      if (m.name === REBIRTH_METRIC) {
        throw new ApiError('UNS_ERR_BAD_REQUEST', `"${REBIRTH_METRIC}" is requested through POST /api/v1/sparkplug/nodes/{group_id}/{edge_node_id}/rebirth`);
      }
      // bdSeq is the session's bookkeeping, set by the edge node itself: not a metric anyone writes.
      const def = m.name === 'bdSeq' && b.device_id === undefined ? undefined : scope.byName.get(m.name);
      if (def === undefined) throw new ApiError('UNS_ERR_SPARKPLUG_METRIC', `metric "${m.name}" is not in the BIRTH of ${topic.split('/').slice(1).join('/')}`);
      const v = commandValue(def.datatype, m.value);
      if ('error' in v) throw new ApiError('UNS_ERR_SPARKPLUG_METRIC', `metric "${m.name}": ${v.error}`);
      return { name: m.name, datatype: v.datatype, value: v.value };
    });
  };

  return {
    async send(p, b) {
      const device = b.device_id ?? null;
      const topic = device === null ? `spBv1.0/${b.group_id}/NCMD/${b.edge_node_id}` : `spBv1.0/${b.group_id}/DCMD/${b.edge_node_id}/${device}`;
      const requested: AuditEntry = { username: p.username, group: b.group_id, edge: b.edge_node_id, device, metrics: b.metrics };
      let metrics: CommandMetric[];
      try {
        metrics = check(p, b, topic);
      } catch (e) {
        if (e instanceof ApiError) await audit.recordRefusal(requested, e);
        throw e;
      }
      // No unaudited commands: the 'sent' row first, the command only once it is written.
      const id = await audit.insert({ ...requested, metrics }, 'sent', null).catch((err: Error) => {
        deps.log.warn({ err: err.message, topic }, 'sparkplug command not audited: not sent');
        throw unavailable('the command could not be audited, so it was not sent');
      });
      try {
        await host.command(b.group_id, b.edge_node_id, device, metrics);
      } catch (err) {
        const reason = `not published: ${(err as Error).message}`;
        await deps.pool.query(`UPDATE sparkplug_commands SET result = 'refused', reason = $2 WHERE id = $1`, [id, reason])
          .catch((e: Error) => deps.log.warn({ err: e.message, id }, 'sparkplug command audit not corrected'));
        throw new ApiError('UNS_ERR_UNAVAILABLE', 'the command could not be published now; retry', { 'Retry-After': '1' });
      }
      return { topic, metrics };
    },
  };
}
