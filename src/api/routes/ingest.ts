/**
 * Inbound signed ingest: POST /api/v1/ingest/<source>, where an IT system (ERP, MES, cloud service) pushes
 * JSON that topics.yaml `ingest:` maps onto UNS topics. No bearer token: the HMAC signature is the
 * credential, and the source's role decides which topics it may write.
 *
 * Order of checks, cheapest first: known source (404), peer address in the allowlist (403), body read raw
 * (413), signature over the raw bytes (401 UNS_ERR_SIGNATURE_INVALID), signed timestamp within the
 * tolerance (401 UNS_ERR_TIMESTAMP_SKEW), JSON (400), delivery id already processed (200 {"duplicate": true}),
 * then every mapped value through deps.publish: the same ACL, decoding, schema and durability path as MQTT.
 * 202 once all are durable (or rejected, with their codes); 503 if any could not be made durable (the
 * delivery is not marked seen, so the sender's retry is processed).
 *
 * The router is mounted before express.json: the signature is checked over the bytes as received, never a
 * re-serialised body (Standard Webhooks, "Verifying webhooks").
 *
 * GET /api/v1/ingest/<source>/verify (bearer auth) describes how to sign for the source, never the secret.
 */
import { Router, raw, type Request, type RequestHandler } from 'express';
import { ApiError } from '../errors.js';
import { requireAuth, type ApiPrincipal } from '../auth.js';
import { sendJson } from '../json.js';
import type { ApiDeps } from '../deps.js';
import { checkWrite } from '../../core/index.js';
import { applyMappings, selectAll } from '../../core/index.js';
import type { ErrorCode } from '../../core/index.js';
import type { JsonValue } from '../../core/index.js';
import { parseJsonExact, stringifyJson } from '../../../bridge/index.js';
import { verifyStandard, verifySimple, verifyHexHmac, type VerifyResult } from '../../../bridge/index.js';
import { inAllowlist } from '../../../bridge/index.js';
import type { IngestSource } from '../../../bridge/index.js';

/** Values one request may carry at most. */
export const MAX_VALUES_PER_REQUEST = 10_000;
const MAX_DEPTH = 32;
const MAX_ID_CHARS = 256;

type Outcome =
  | { index: number; mapping: number; topic: string | null; status: 'stored' }
  | { index: number; mapping: number; topic: string | null; status: 'rejected'; code: ErrorCode; reason: string }
  | { index: number; mapping: number; topic: string | null; status: 'not-durable'; reason: string };

declare module 'express-serve-static-core' {
  interface Request {
    ingestSource?: IngestSource;
  }
}

function signatureFailure(r: VerifyResult & { ok: false }): ApiError {
  if (r.reason === 'timestamp-skew') return new ApiError('UNS_ERR_TIMESTAMP_SKEW', 'the signed timestamp is outside the tolerance: replayed or clock skewed');
  return new ApiError('UNS_ERR_SIGNATURE_INVALID', r.reason === 'missing' ? 'signature headers missing' : r.reason === 'malformed' ? 'signature malformed' : 'signature does not match');
}

/** Epoch ms from epoch seconds, epoch ms or an RFC 3339 string; null if unreadable. */
function sentAt(v: JsonValue | undefined): number | null {
  if (typeof v === 'number' && Number.isFinite(v) && v > 0) return v < 1e11 ? v * 1000 : v;
  if (typeof v === 'string' && v.length <= 64) {
    if (/^[0-9]{1,15}$/.test(v)) return sentAt(Number(v));
    const t = Date.parse(v);
    return Number.isNaN(t) ? null : t;
  }
  return null;
}

function one(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? (v.length === 1 ? v[0] : undefined) : v;
}

/** The MQTT payload for a mapped value, in the form its route decodes. */
function payloadFor(deps: ApiDeps, topic: string, m: { value: JsonValue; timestamp?: JsonValue | undefined; quality?: JsonValue | undefined; unit?: JsonValue | undefined }): Buffer | string {
  const route = deps.namespace.matchRoute(topic);
  switch (route?.encoding) {
    case 'sparkplugb':
      return 'Sparkplug B topics cannot be written by inbound ingest';
    case 'number':
    case 'raw':
      return Buffer.from(stringifyJson(m.value), 'utf8');
    case 'string':
      return Buffer.from(typeof m.value === 'string' ? m.value : stringifyJson(m.value), 'utf8');
    default: {
      // JSON routes (and topics no route matches, which the pipeline rejects with its own code): an envelope.
      const env: { [k: string]: JsonValue } = { value: m.value };
      if (m.timestamp !== undefined) env['timestamp'] = m.timestamp;
      if (m.quality !== undefined) env['quality'] = m.quality;
      if (m.unit !== undefined) env['unit'] = m.unit;
      return Buffer.from(stringifyJson(env), 'utf8');
    }
  }
}

/** What a sender needs to know to sign for this source: scheme, headers, tolerance, mappings. Never the secret. */
function describe(src: IngestSource, url: string): Record<string, unknown> {
  const s = src.spec;
  const signature = s.signature === 'standard'
    ? {
      scheme: 'standard', algorithm: 'HMAC-SHA256',
      headers: { id: 'webhook-id', timestamp: 'webhook-timestamp', signature: 'webhook-signature' },
      signed_content: '{webhook-id}.{webhook-timestamp}.{raw body}', format: 'v1,<base64 digest> (several space-separated allowed)',
      key: 'a whsec_ secret is base64-decoded after the prefix; any other secret is used as its UTF-8 bytes',
    }
    : {
      scheme: s.signature, algorithm: 'HMAC-SHA256', header: s.header, signed_content: '{raw body}',
      format: s.signature === 'sha256' ? 'sha256=<hex digest>' : '<hex digest> or sha256=<hex digest>',
      key: s.signature === 'sha256' ? 'a whsec_ secret is base64-decoded after the prefix; any other secret is used as its UTF-8 bytes' : 'the secret as its UTF-8 bytes',
    };
  return {
    status: 'success',
    source: s.name,
    url,
    method: 'POST',
    verification_required: true,
    signature,
    timestamp: s.signature === 'standard' ? { header: 'webhook-timestamp', unit: 'epoch seconds' } : s.timestampField ? { field: s.timestampField.text, unit: 'epoch s or ms, or RFC 3339' } : null,
    tolerance_s: s.signature === 'standard' || s.timestampField ? s.toleranceS : null,
    delivery_id: s.idHeader !== null ? { header: s.idHeader } : s.idField !== null ? { field: s.idField.text } : null,
    replay_protection: [...(s.signature === 'standard' || s.timestampField ? ['timestamp'] : []), ...(s.idHeader !== null || s.idField !== null ? ['delivery-id'] : [])],
    ip_allowlist: s.allow,
    role: s.role,
    secret_configured: true,
    mappings: s.mappingsText,
    ...(s.description !== undefined ? { description: s.description } : {}),
  };
}

export function ingestRouter(deps: ApiDeps): Router {
  const r = Router();
  /** Deliveries being processed, so a concurrent retry of the same id waits and is then seen as a duplicate. */
  const inflight = new Map<string, Promise<unknown>>();

  r.get('/api/v1/ingest/:source/verify', requireAuth(deps.auth), (req, res, next) => {
    const src = deps.ingest.sources.get(String(req.params['source']));
    if (!src) { next(new ApiError('UNS_ERR_NOT_FOUND', 'no such ingest source')); return; }
    const host = req.headers.host ?? 'localhost';
    sendJson(res, describe(src, `${req.protocol}://${host}/api/v1/ingest/${src.spec.name}`));
  });

  // Before the body is read: unknown sources and refused addresses cost nothing.
  const gate: RequestHandler = (req, _res, next) => {
    const src = deps.ingest.sources.get(String(req.params['source']));
    if (!src) { next(new ApiError('UNS_ERR_NOT_FOUND', 'no such ingest source')); return; }
    // The socket's peer: a proxy in front must be allow-listed itself (no X-Forwarded-For trust).
    if (src.allowlist !== null && !inAllowlist(req.socket.remoteAddress ?? '', src.allowlist)) {
      next(new ApiError('UNS_ERR_FORBIDDEN', 'this address may not send to this source'));
      return;
    }
    req.ingestSource = src;
    next();
  };

  r.post('/api/v1/ingest/:source', gate, raw({ type: () => true, limit: deps.limits.bodyBytes }), (req, res, next) => {
    handle(req).then((out) => sendJson(res, out.body, out.status), next);
  });

  async function handle(req: Request): Promise<{ status: number; body: unknown }> {
    const src = req.ingestSource as IngestSource;
    const spec = src.spec;
    const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const now = deps.now();

    const verified = spec.signature === 'standard'
      ? verifyStandard([src.secret], req.headers, body, Math.floor(now / 1000), spec.toleranceS)
      : spec.signature === 'sha256'
        ? verifySimple([src.secret], req.headers[spec.header], body)
        : verifyHexHmac(src.secret, req.headers[spec.header], body);
    if (!verified.ok) throw signatureFailure(verified);

    const parsed = parseJsonExact(body, { maxBytes: deps.limits.bodyBytes, maxDepth: MAX_DEPTH });
    if (!parsed.ok) throw new ApiError('UNS_ERR_BAD_REQUEST', `body: ${parsed.reason}`, {}, { code: parsed.code });
    const doc = parsed.value;

    if (spec.timestampField !== null) {
      // Covered by the signature, as the body is: a replay cannot move it.
      const t = sentAt(selectAll(spec.timestampField, doc, doc)[0]);
      if (t === null) throw new ApiError('UNS_ERR_TIMESTAMP_SKEW', `timestamp field ${spec.timestampField.text} is missing or unreadable`);
      if (Math.abs(now - t) > spec.toleranceS * 1000) throw new ApiError('UNS_ERR_TIMESTAMP_SKEW', 'the signed timestamp is outside the tolerance: replayed or clock skewed');
    }

    let deliveryId: string | null = null;
    if (spec.idHeader !== null) deliveryId = one(req.headers[spec.idHeader]) ?? null;
    else if (spec.idField !== null) {
      const v = selectAll(spec.idField, doc, doc)[0];
      if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'bigint') throw new ApiError('UNS_ERR_BAD_REQUEST', `delivery id field ${spec.idField.text} is missing`);
      deliveryId = String(v);
    }
    if (deliveryId !== null && (deliveryId === '' || deliveryId.length > MAX_ID_CHARS)) throw new ApiError('UNS_ERR_BAD_REQUEST', `delivery id must be 1 to ${MAX_ID_CHARS} characters`);

    if (deliveryId === null) return process(src, doc, null);
    const key = `${spec.name}\u0000${deliveryId}`;
    for (let waiting = inflight.get(key); waiting !== undefined; waiting = inflight.get(key)) await waiting.catch(() => undefined);
    const run = (async () => {
      const seen = await deps.ingest.dedup.seen(spec.name, deliveryId).catch(() => {
        throw new ApiError('UNS_ERR_UNAVAILABLE', 'delivery ids cannot be checked now (database unreachable): retry', { 'Retry-After': '1' });
      });
      if (seen) return { status: 200, body: { status: 'duplicate', duplicate: true, source: spec.name, delivery_id: deliveryId } };
      return process(src, doc, deliveryId);
    })();
    inflight.set(key, run);
    try {
      return await run;
    } finally {
      inflight.delete(key);
    }
  }

  async function process(src: IngestSource, doc: JsonValue, deliveryId: string | null): Promise<{ status: number; body: unknown }> {
    const spec = src.spec;
    const mapped = applyMappings(doc, spec.mappings, MAX_VALUES_PER_REQUEST);
    if ('tooMany' in mapped) throw new ApiError('UNS_ERR_BAD_REQUEST', `the body maps to more than ${MAX_VALUES_PER_REQUEST} values`);
    const principal: ApiPrincipal = { username: `ingest:${spec.name}`, roles: [spec.role], perms: src.perms, via: 'ingest', expiresAt: null };

    const outcomes = await Promise.all(mapped.map(async (m, index): Promise<Outcome> => {
      const base = { index, mapping: m.mapping, topic: m.topic };
      if (!m.ok) return { ...base, status: 'rejected', code: m.code, reason: m.reason };
      const topic = m.topic;
      const refused = checkWrite(topic, src.perms, deps.limits.topic, `role ${spec.role}`);
      if (refused !== null) return { ...base, status: 'rejected', code: refused.code, reason: refused.reason };
      const payload = payloadFor(deps, topic, m);
      if (typeof payload === 'string') return { ...base, status: 'rejected', code: 'UNS_ERR_INGEST_MAPPING', reason: payload };
      const out = await deps.publish(topic, payload, principal, { retain: false });
      if (out.error) return { ...base, status: 'not-durable', reason: 'not durable: retry' };
      if (out.rejection) return { ...base, status: 'rejected', code: out.rejection.code, reason: out.rejection.reason };
      return { ...base, status: 'stored' };
    }));

    const stored = outcomes.filter((o) => o.status === 'stored').length;
    const rejected = outcomes.filter((o) => o.status === 'rejected').length;
    if (outcomes.some((o) => o.status === 'not-durable')) {
      // Not marked seen: the sender retries; values already durable may then be stored a second time.
      throw new ApiError('UNS_ERR_UNAVAILABLE', 'some values could not be made durable: retry the delivery', { 'Retry-After': '1' }, { results: outcomes });
    }
    if (deliveryId !== null) {
      await deps.ingest.dedup.record(spec.name, deliveryId).catch((e: Error) => {
        deps.log.warn({ source: spec.name, err: e.message }, 'ingest delivery id not recorded: a redelivery would be stored again');
      });
    }
    return { status: 202, body: { status: 'accepted', source: spec.name, delivery_id: deliveryId, stored, rejected, results: outcomes } };
  }

  return r;
}
