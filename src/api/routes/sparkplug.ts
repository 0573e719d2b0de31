/**
 * The Sparkplug host application over REST: /api/v1/sparkplug.
 * - GET nodes: the edge nodes and devices the host knows, for callers who may read their group;
 * - POST nodes/{group}/{edge}/rebirth: an operator's rebirth request (NCMD `Node Control/Rebirth` = true),
 *   under the host's per-node cooldown (429 with Retry-After);
 * - POST commands: metric writes to a node (NCMD) or device (DCMD), each metric checked against the datatype
 *   its BIRTH declared [tck-id-topics-ncmd-payload] [tck-id-topics-dcmd-payload];
 * - GET commands: the audit of command attempts (admins).
 * Writing needs the caller's write permission on the command topic. Every attempt made after authentication
 * is audited in sparkplug_commands; a command is published only once its 'sent' row is written (503
 * otherwise), refusals are recorded best-effort.
 */
import { Router, type RequestHandler } from 'express';
import { ApiError } from '../errors.js';
import { principalOf, requireAuth, isAdmin, type ApiPrincipal } from '../auth.js';
import { sendJson } from '../json.js';
import type { ApiDeps } from '../deps.js';
import { commandValue, REBIRTH_METRIC, type CommandMetric, type CommandValue } from '../../../bridge/index.js';

interface CommandBody {
  group_id: string;
  edge_node_id: string;
  device_id?: string;
  metrics: Array<{ name: string; value: CommandValue }>;
}

interface AuditEntry {
  readonly username: string;
  readonly group: string;
  readonly edge: string;
  readonly device: string | null;
  readonly metrics: ReadonlyArray<{ readonly name: string; readonly datatype?: string; readonly value: CommandValue }>;
}

interface AuditRow {
  id: string; at: Date; username: string; group_id: string; edge_node_id: string; device_id: string | null;
  metrics: unknown; result: string; reason: string | null;
}

/** A Sparkplug id is one topic level: not empty, no '/', '+' or '#', and no U+0000 (PostgreSQL text refuses it). */
function badId(id: string): boolean {
  return id.length === 0 || /[/+#]/.test(id) || id.includes('\u0000');
}

/** jsonb refuses U+0000 in strings: the audit keeps a request that held one, with U+FFFD in its place. */
function auditJson(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'string' ? x.replaceAll('\u0000', '\ufffd') : x));
}

function unavailable(what: string): ApiError {
  return new ApiError('UNS_ERR_UNAVAILABLE', `${what} (database unreachable); retry`, { 'Retry-After': '1' });
}

export function sparkplugRouter(deps: ApiDeps): Router {
  const r = Router();
  const auth = requireAuth(deps.auth);
  const host = deps.sparkplug;

  const adminOnly: RequestHandler = (req, _res, next) => {
    next(isAdmin(principalOf(req)) ? undefined : new ApiError('UNS_ERR_FORBIDDEN', 'the command audit is for admins only'));
  };

  const insertAudit = async (a: AuditEntry, result: 'sent' | 'refused', reason: string | null): Promise<string> => {
    const q = await deps.pool.query<{ id: string }>(
      `INSERT INTO sparkplug_commands (username, group_id, edge_node_id, device_id, metrics, result, reason)
       VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7) RETURNING id`,
      [a.username, a.group, a.edge, a.device, auditJson(a.metrics), result, reason]);
    return (q.rows[0] as { id: string }).id;
  };
  /** A refusal is recorded if the database takes it; the caller gets the refusal either way. */
  const recordRefusal = async (a: AuditEntry, e: ApiError): Promise<void> => {
    await insertAudit(a, 'refused', `${e.code}: ${e.message}`)
      .catch((err: Error) => deps.log.warn({ err: err.message, group: a.group, edge: a.edge, device: a.device }, 'sparkplug command refusal not audited'));
  };

  /** The node's (device null) or device's session for a command to it: 404 when never born, 400 when offline. */
  const onlineScope = (group: string, edge: string, device: string | null): NonNullable<ReturnType<typeof host.scope>> => {
    const node = host.scope(group, edge, null);
    const scope = device === null ? node : host.scope(group, edge, device);
    if (node === undefined) throw new ApiError('UNS_ERR_NOT_FOUND', `no edge node ${group}/${edge} has been born`);
    if (scope === undefined) throw new ApiError('UNS_ERR_NOT_FOUND', `no device ${device} of edge node ${group}/${edge} has been born`);
    if (!node.online) throw new ApiError('UNS_ERR_BAD_REQUEST', `edge node offline: ${group}/${edge} has died since its BIRTH`);
    if (!scope.online) throw new ApiError('UNS_ERR_BAD_REQUEST', `device offline: ${group}/${edge}/${device} has died since its BIRTH`);
    return scope;
  };
  const mayWrite = (p: ApiPrincipal, topic: string): void => {
    if (!p.perms.canWrite(topic)) throw new ApiError('UNS_ERR_FORBIDDEN', `you may not write ${topic}`);
  };

  /** Checks a command and gives the metrics as they will be encoded; throws the ApiError that refuses it. */
  const checkCommand = (p: ApiPrincipal, b: CommandBody, topic: string): CommandMetric[] => {
    mayWrite(p, topic);
    const scope = onlineScope(b.group_id, b.edge_node_id, b.device_id ?? null);
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

  r.get('/api/v1/sparkplug/nodes', auth, (req, res) => {
    const p = principalOf(req);
    sendJson(res, { nodes: host.nodes().filter((n) => isAdmin(p) || p.perms.canSubscribe(`spBv1.0/${n.group_id}/#`)) });
  });

  r.post('/api/v1/sparkplug/nodes/:group_id/:edge_node_id/rebirth', auth, (req, res, next) => {
    Promise.resolve().then(async () => {
      const p = principalOf(req);
      const group = String(req.params['group_id']);
      const edge = String(req.params['edge_node_id']);
      if (badId(group) || badId(edge)) throw new ApiError('UNS_ERR_BAD_REQUEST', 'group_id and edge_node_id are Sparkplug ids: not empty, without /, + or #');
      const audit: AuditEntry = { username: p.username, group, edge, device: null, metrics: [{ name: REBIRTH_METRIC, datatype: 'Boolean', value: true }] };
      try {
        mayWrite(p, `spBv1.0/${group}/NCMD/${edge}`);
        onlineScope(group, edge, null);
        const outcome = host.rebirth(group, edge, `requested by ${p.username}`, true);
        if (!outcome.sent) {
          if (outcome.reason === 'cooldown') {
            const s = Math.max(1, Math.ceil((outcome.retryAfterMs ?? 1000) / 1000));
            throw new ApiError('UNS_ERR_RATE_LIMITED', `a rebirth of ${group}/${edge} was requested less than the cooldown ago; retry in ${s} s`, { 'Retry-After': String(s) });
          }
          throw new ApiError('UNS_ERR_UNAVAILABLE', `the rebirth request was not sent (${outcome.reason})`);
        }
      } catch (e) {
        if (e instanceof ApiError) await recordRefusal(audit, e);
        throw e;
      }
      // The request is out already (the host sends it, under its cooldown): the row is best-effort here.
      await insertAudit(audit, 'sent', null)
        .catch((err: Error) => deps.log.warn({ err: err.message, group, edge }, 'sparkplug rebirth request not audited'));
      sendJson(res, { sent: true }, 202);
    }).catch(next);
  });

  r.post('/api/v1/sparkplug/commands', auth, deps.validator.body('SparkplugCommand'), (req, res, next) => {
    Promise.resolve().then(async () => {
      const p = principalOf(req);
      const b = req.body as CommandBody;
      const device = b.device_id ?? null;
      const topic = device === null ? `spBv1.0/${b.group_id}/NCMD/${b.edge_node_id}` : `spBv1.0/${b.group_id}/DCMD/${b.edge_node_id}/${device}`;
      const requested: AuditEntry = { username: p.username, group: b.group_id, edge: b.edge_node_id, device, metrics: b.metrics };
      let metrics: CommandMetric[];
      try {
        metrics = checkCommand(p, b, topic);
      } catch (e) {
        if (e instanceof ApiError) await recordRefusal(requested, e);
        throw e;
      }
      // No unaudited commands: the 'sent' row first, the command only once it is written.
      const audit = { ...requested, metrics };
      const id = await insertAudit(audit, 'sent', null).catch((err: Error) => {
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
      sendJson(res, { sent: true, topic, metrics }, 202);
    }).catch(next);
  });

  r.get('/api/v1/sparkplug/commands', auth, adminOnly, deps.validator.query('SparkplugCommandsQuery'), (req, res, next) => {
    Promise.resolve().then(async () => {
      const q = req.query as unknown as { limit: number };
      const rows = await deps.pool.query<AuditRow>(
        `SELECT id, at, username, group_id, edge_node_id, device_id, metrics, result, reason
         FROM sparkplug_commands ORDER BY id DESC LIMIT $1`, [q.limit])
        .catch(() => { throw unavailable('the command audit could not be read now'); });
      sendJson(res, {
        commands: rows.rows.map((x) => ({
          id: String(x.id), at: x.at.toISOString(), username: x.username, group_id: x.group_id, edge_node_id: x.edge_node_id,
          device_id: x.device_id, metrics: x.metrics, result: x.result, reason: x.reason,
        })),
      });
    }).catch(next);
  });

  return r;
}
