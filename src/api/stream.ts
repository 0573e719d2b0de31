/**
 * The live datapoint stream over WebSocket: `ws://host/ws/datapoints/stream?token=<jwt | api token>`
 * (or `Authorization: Bearer`). Protocol in schemas/openapi/stream.json; per-connection behaviour in
 * live-session.ts.
 *
 * Authentication happens before the upgrade completes: a missing or refused credential gets a plain
 * HTTP 401 with the usual JSON error body and the socket is closed, so no WebSocket is ever open
 * unauthenticated. A credential that expires while connected closes the socket with 4401 "token expired".
 * Client messages over maxPayload close the connection with 1009 (ws does this); malformed or invalid
 * messages get an error message and the connection stays.
 *
 * A `sparkplug_command` message is the stream's door to POST /api/v1/sparkplug/commands: the same checks,
 * refusals and audit (sparkplug-commands.ts), under the connection's principal; the reply is a
 * `sparkplug_command_result`, or an `error` with the code and message the REST call would have answered.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, WebSocket, type RawData } from 'ws';
import type { ApiDeps } from './deps.js';
import { credentialOf, type ApiPrincipal } from './auth.js';
import { ApiError, STATUS } from './errors.js';
import type { ErrorCode } from '../core/index.js';
import { toJson } from './json.js';
import { livePolicy, type LivePolicy } from './live-policy.js';
import { historyFrom } from './live-history.js';
import { LiveSession, checkFilters, type SubscribeRequest } from './live-session.js';
import type { LiveTransport } from './live-outbox.js';
import { sparkplugCommands, type SparkplugCommandBody } from './sparkplug-commands.js';

export interface StreamServer {
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  close(): void;
}

type ClientMessage =
  | ({ type: 'subscribe' } & SubscribeRequest)
  | { type: 'unsubscribe'; id?: string; filters: string[] }
  | { type: 'ping'; id?: string }
  | ({ type: 'sparkplug_command'; id?: string } & SparkplugCommandBody);

const REASONS: Record<number, string> = { 401: 'Unauthorized', 503: 'Service Unavailable', 500: 'Internal Server Error' };

/** Refuses an upgrade with a plain HTTP response (RFC 6455 §4.2.2: any non-101 status refuses it). */
function refuse(socket: Duplex, code: ErrorCode, message: string, headers: Record<string, string> = {}): void {
  if (socket.destroyed) return;
  const status = STATUS[code] ?? 400;
  const body = toJson({ error: { code, message } });
  const head = [
    `HTTP/1.1 ${status} ${REASONS[status] ?? 'Error'}`, 'Connection: close', 'Content-Type: application/json',
    `Content-Length: ${Buffer.byteLength(body)}`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
  ];
  socket.once('finish', () => socket.destroy());
  socket.end(`${head.join('\r\n')}\r\n\r\n${body}`);
}

export function createStreamServer(deps: ApiDeps): StreamServer {
  const history = historyFrom(deps.queries);
  const commands = sparkplugCommands(deps);
  const sessionDeps = { ...pick(deps), history };
  const wss = new WebSocketServer({ noServer: true, maxPayload: livePolicy().maxPayloadBytes, perMessageDeflate: false, clientTracking: true });
  const graceTimers = new Set<NodeJS.Timeout>();
  let closed = false;
  const log = deps.log.child({ component: 'ws-stream' });

  function closeSocket(ws: WebSocket, code: number, reason: string, policy: LivePolicy): void {
    if (ws.readyState === WebSocket.CLOSED) return;
    ws.close(code, reason);
    // A peer that is not reading never answers the closing handshake: do not wait ws's 30 s for it.
    const t = setTimeout(() => { graceTimers.delete(t); ws.terminate(); }, policy.closeGraceMs);
    t.unref();
    graceTimers.add(t);
  }

  function attach(ws: WebSocket, principal: ApiPrincipal, credential: string): void {
    const policy = livePolicy();
    let alive = true;
    ws.on('pong', () => { alive = true; });
    const transport: LiveTransport = {
      name: 'ws',
      buffered: () => ws.bufferedAmount,
      write: (_type, json) => { if (ws.readyState === WebSocket.OPEN) ws.send(json); },
      heartbeat: (ts) => {
        if (ws.readyState !== WebSocket.OPEN) return;
        // No pong since the last ping: the peer is gone (RFC 6455 §5.5.2-3).
        if (!alive) { ws.terminate(); return; }
        alive = false;
        ws.send(`{"type":"heartbeat","ts":${ts}}`);
        ws.ping();
      },
      close: (code, reason) => closeSocket(ws, code, reason, policy),
    };
    const session = new LiveSession(sessionDeps, principal, transport, policy, credential);
    deps.metrics.wsClients.inc();
    ws.on('close', () => { session.close(); deps.metrics.wsClients.dec(); });
    ws.on('error', (e) => log.debug({ err: e.message }, 'stream socket error'));

    // Messages are handled one after another (a subscribe waits for its snapshot query), and the socket
    // is paused meanwhile, so a client cannot queue unbounded work.
    let chain: Promise<void> = Promise.resolve();
    let inFlight = 0;
    ws.on('message', (data: RawData, isBinary: boolean) => {
      inFlight++;
      if (inFlight === 1) ws.pause();
      // Replies keep the order of the messages, errors included.
      chain = chain.then(() => {
        const msg = parse(data, isBinary, session);
        return msg === null ? undefined : handle(session, msg);
      }).catch((e: Error) => {
        log.error({ err: e.message }, 'stream message failed');
        session.error('UNS_ERR_INTERNAL', 'internal error');
      }).finally(() => {
        inFlight--;
        if (inFlight === 0) ws.resume();
      });
    });
  }

  function parse(data: RawData, isBinary: boolean, session: LiveSession): ClientMessage | null {
    if (isBinary) { session.error('UNS_ERR_BAD_REQUEST', 'messages are JSON text frames'); return null; }
    let msg: unknown;
    try {
      msg = JSON.parse(rawText(data));
    } catch {
      session.error('UNS_ERR_BAD_REQUEST', 'message is not valid JSON');
      return null;
    }
    const bad = deps.validator.validate('StreamClientMessage', msg);
    if (bad !== null) {
      const m = msg as { type?: unknown; id?: unknown };
      // The specific schema names the broken field; the union only says "no variant matched".
      const specific = typeof m?.type === 'string' && m.type in VARIANTS ? deps.validator.validate(VARIANTS[m.type] as string, msg) : null;
      session.error('UNS_ERR_BAD_REQUEST', specific ?? bad, { id: typeof m?.id === 'string' ? m.id : undefined });
      return null;
    }
    return msg as ClientMessage;
  }

  async function handle(session: LiveSession, msg: ClientMessage): Promise<void> {
    switch (msg.type) {
      case 'subscribe': {
        const { accepted, refused } = checkFilters(msg.filters, session.principal.perms, deps.limits.topic);
        for (const r of refused) session.error(r.code, r.message, { id: msg.id, details: { filter: r.filter } });
        if (accepted.length > 0) await session.subscribe({ ...msg, filters: accepted });
        return;
      }
      case 'unsubscribe':
        session.unsubscribe(msg.filters, msg.id);
        return;
      case 'ping':
        session.send({ type: 'pong', ...(msg.id !== undefined ? { id: msg.id } : {}), ts: deps.now() });
        return;
      case 'sparkplug_command': {
        const { type: _type, id, ...body } = msg;
        if (!(await session.credentialValid())) return;
        try {
          const sent = await commands.send(session.principal, body);
          session.send({ type: 'sparkplug_command_result', ...(id !== undefined ? { id } : {}), sent: true, topic: sent.topic, metrics: sent.metrics });
        } catch (e) {
          if (!(e instanceof ApiError)) throw e;
          session.error(e.code, e.message, { id, details: e.details });
        }
        return;
      }
    }
  }

  return {
    handleUpgrade(req, socket, head) {
      const swallow = (): void => undefined;
      socket.on('error', swallow);
      if (closed) { refuse(socket, 'UNS_ERR_UNAVAILABLE', 'server shutting down'); return; }
      const credential = credentialOf(req, true);
      if (credential === null) {
        refuse(socket, 'UNS_ERR_UNAUTHENTICATED', 'missing token: pass ?token= or Authorization: Bearer', { 'WWW-Authenticate': 'Bearer' });
        return;
      }
      deps.auth.verify(credential).then((r) => {
        if (socket.destroyed) return;
        if ('failure' in r) {
          refuse(socket, 'UNS_ERR_UNAUTHENTICATED', r.failure, { 'WWW-Authenticate': 'Bearer error="invalid_token"' });
          return;
        }
        if (closed) { refuse(socket, 'UNS_ERR_UNAVAILABLE', 'server shutting down'); return; }
        socket.off('error', swallow);
        wss.handleUpgrade(req, socket, head, (ws) => attach(ws, r, credential));
      }, (e: Error) => {
        log.error({ err: e.message }, 'stream authentication failed');
        refuse(socket, 'UNS_ERR_INTERNAL', 'internal error');
      });
    },
    close() {
      if (closed) return;
      closed = true;
      const policy = livePolicy();
      for (const ws of wss.clients) closeSocket(ws, 1001, 'server shutting down', { ...policy, closeGraceMs: Math.min(policy.closeGraceMs, 1000) });
      wss.close();
    },
  };
}

const VARIANTS: Record<string, string> = {
  subscribe: 'StreamSubscribe', unsubscribe: 'StreamUnsubscribe', ping: 'StreamPing', sparkplug_command: 'StreamSparkplugCommand',
};

function rawText(data: RawData): string {
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  if (data instanceof ArrayBuffer) return Buffer.from(data).toString('utf8');
  return data.toString('utf8');
}

function pick(deps: ApiDeps): Pick<ApiDeps, 'hub' | 'queries' | 'metrics' | 'log' | 'now' | 'auth'> {
  return { hub: deps.hub, queries: deps.queries, metrics: deps.metrics, log: deps.log, now: () => deps.now(), auth: deps.auth };
}
