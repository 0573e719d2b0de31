/**
 * The Sparkplug host application over REST: /api/v1/sparkplug.
 * - GET nodes: the edge nodes and devices the host knows, for callers who may read their group;
 * - POST nodes/{group}/{edge}/rebirth: an operator's rebirth request (NCMD `Node Control/Rebirth` = true),
 *   under the host's per-node cooldown (429 with Retry-After);
 * - POST commands: metric writes to a node (NCMD) or device (DCMD), each metric checked against the datatype
 *   its BIRTH declared [tck-id-topics-ncmd-payload] [tck-id-topics-dcmd-payload] (sparkplug-commands.ts, which
 *   the WebSocket stream's `sparkplug_command` message uses too);
 * - GET commands: the audit of command attempts (admins).
 * Writing needs the caller's write permission on the command topic. Every attempt made after authentication
 * is audited in sparkplug_commands; a command is published only once its 'sent' row is written (503
 * otherwise), refusals are recorded best-effort.
 */
import { Router, type RequestHandler } from 'express';
import { ApiError } from '../errors.js';
import { principalOf, requireAuth, isAdmin } from '../auth.js';
import { sendJson } from '../json.js';
import type { ApiDeps } from '../deps.js';
import { commandAudit, mayWrite, onlineScope, sparkplugCommands, unavailable, type AuditEntry, type SparkplugCommandBody } from '../sparkplug-commands.js';
import { REBIRTH_METRIC } from '../../../bridge/index.js';

interface AuditRow {
  id: string; at: Date; username: string; group_id: string; edge_node_id: string; device_id: string | null;
  metrics: unknown; result: string; reason: string | null;
}

/** A Sparkplug id is one topic level: not empty, no '/', '+' or '#', and no U+0000 (PostgreSQL text refuses it). */
function badId(id: string): boolean {
  return id.length === 0 || /[/+#]/.test(id) || id.includes('\u0000');
}

export function sparkplugRouter(deps: ApiDeps): Router {
  const r = Router();
  const auth = requireAuth(deps.auth);
  const host = deps.sparkplug;
  const audit = commandAudit(deps);
  const commands = sparkplugCommands(deps);

  const adminOnly: RequestHandler = (req, _res, next) => {
    next(isAdmin(principalOf(req)) ? undefined : new ApiError('UNS_ERR_FORBIDDEN', 'the command audit is for admins only'));
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
      const entry: AuditEntry = { username: p.username, group, edge, device: null, metrics: [{ name: REBIRTH_METRIC, datatype: 'Boolean', value: true }] };
      try {
        mayWrite(p, `spBv1.0/${group}/NCMD/${edge}`);
        onlineScope(host, group, edge, null);
        const outcome = host.rebirth(group, edge, `requested by ${p.username}`, true);
        if (!outcome.sent) {
          if (outcome.reason === 'cooldown') {
            const s = Math.max(1, Math.ceil((outcome.retryAfterMs ?? 1000) / 1000));
            throw new ApiError('UNS_ERR_RATE_LIMITED', `a rebirth of ${group}/${edge} was requested less than the cooldown ago; retry in ${s} s`, { 'Retry-After': String(s) });
          }
          throw new ApiError('UNS_ERR_UNAVAILABLE', `the rebirth request was not sent (${outcome.reason})`);
        }
      } catch (e) {
        if (e instanceof ApiError) await audit.recordRefusal(entry, e);
        throw e;
      }
      // The request is out already (the host sends it, under its cooldown): the row is best-effort here.
      await audit.insert(entry, 'sent', null)
        .catch((err: Error) => deps.log.warn({ err: err.message, group, edge }, 'sparkplug rebirth request not audited'));
      sendJson(res, { sent: true }, 202);
    }).catch(next);
  });

  r.post('/api/v1/sparkplug/commands', auth, deps.validator.body('SparkplugCommand'), (req, res, next) => {
    commands.send(principalOf(req), req.body as SparkplugCommandBody)
      .then(({ topic, metrics }) => sendJson(res, { sent: true, topic, metrics }, 202))
      .catch(next);
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
