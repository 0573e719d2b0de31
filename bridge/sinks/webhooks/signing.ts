/**
 * Webhook signatures, outbound and inbound.
 *
 * Standard Webhooks (https://www.standardwebhooks.com, spec "Signature scheme"): the signed content is
 * `${webhook-id}.${webhook-timestamp}.${body}`, HMAC-SHA256 with the endpoint secret, sent as
 * `webhook-signature: v1,<base64>`; several space-separated signatures while a secret is rotated.
 * Secrets are `whsec_<base64>` and the HMAC key is the base64-decoded part (spec "Symmetric signatures").
 *
 * The simpler `X-Webhook-Signature: sha256=<hex>` header (the form IT systems commonly check) is HMAC-SHA256
 * of the raw body alone, with the same key derivation.
 *
 * Verification is constant-time (crypto.timingSafeEqual over equal-length digests) and returns a typed
 * result; nothing here throws for a bad signature.
 */
import { createHmac, randomBytes as nodeRandomBytes, timingSafeEqual } from 'node:crypto';

export const SECRET_PREFIX = 'whsec_';

/** Standard Webhooks recommends tolerating 5 minutes of clock skew ("Verifying webhooks"). */
export const DEFAULT_TOLERANCE_S = 300;

// A type alias (not an interface) so it is assignable to plain header records.
export type StandardHeaders = {
  'webhook-id': string;
  'webhook-timestamp': string;
  'webhook-signature': string;
};

export type VerifyFailure = 'missing' | 'malformed' | 'mismatch' | 'timestamp-skew';
export type VerifyResult = { ok: true } | { ok: false; reason: VerifyFailure };

/** Header bags as Node (IncomingHttpHeaders) or a plain object give them. */
export type HeaderBag = Readonly<Record<string, string | readonly string[] | undefined>>;

/**
 * The HMAC key for a configured secret: `whsec_<base64>` -> the decoded bytes; any other string -> its
 * UTF-8 bytes, unchanged (for receivers that configured a plain shared secret).
 */
export function secretKey(secret: string): Buffer {
  return secret.startsWith(SECRET_PREFIX) ? Buffer.from(secret.slice(SECRET_PREFIX.length), 'base64') : Buffer.from(secret, 'utf8');
}

/**
 * Is this a usable `whsec_` secret? Standard Webhooks asks for keys of 24 to 64 bytes; a plain string must
 * not be empty. For start-up / registration validation; signing does not re-check.
 */
export function isValidSecret(secret: string): boolean {
  if (!secret.startsWith(SECRET_PREFIX)) return secret.length > 0;
  const b64 = secret.slice(SECRET_PREFIX.length);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64) || b64.length % 4 !== 0) return false;
  const n = Buffer.from(b64, 'base64').length;
  return n >= 24 && n <= 64;
}

/** `whsec_` + base64 of `bytes` random bytes (24..64, default 32). Randomness is injected. */
export function generateSecret(random: (n: number) => Buffer = nodeRandomBytes, bytes = 32): string {
  const n = Math.min(64, Math.max(24, Math.trunc(bytes)));
  return SECRET_PREFIX + random(n).toString('base64');
}

function toBuffer(body: string | Buffer): Buffer {
  return typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
}

function standardDigest(key: Buffer, id: string, timestampS: string, body: Buffer): Buffer {
  // Signed content: id "." timestamp "." raw body bytes (spec "Signature scheme"); the body is never
  // re-serialised, so the bytes signed are the bytes sent.
  return createHmac('sha256', key).update(`${id}.${timestampS}.`, 'utf8').update(body).digest();
}

/**
 * The three Standard Webhooks headers. One `v1,<base64>` per secret, space-separated, so receivers holding
 * either the old or the new secret verify during rotation. Retries reuse the same `id` (receivers
 * de-duplicate on it) but get a fresh timestamp.
 */
export function signStandard(secrets: readonly string[], id: string, timestampS: number, body: string | Buffer): StandardHeaders {
  const ts = String(Math.floor(timestampS));
  const raw = toBuffer(body);
  const signature = secrets.map((s) => `v1,${standardDigest(secretKey(s), id, ts, raw).toString('base64')}`).join(' ');
  return { 'webhook-id': id, 'webhook-timestamp': ts, 'webhook-signature': signature };
}

/** `sha256=<lower-case hex HMAC-SHA256(secretKey(secret), raw body)>` for `X-Webhook-Signature`. */
export function signSimple(secret: string, body: string | Buffer): string {
  return `sha256=${createHmac('sha256', secretKey(secret)).update(toBuffer(body)).digest('hex')}`;
}

function header(headers: HeaderBag, name: string): string | readonly string[] | undefined {
  const direct = headers[name];
  if (direct !== undefined) return direct;
  for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() === name) return v;
  return undefined;
}

/** One header value; a repeated header is malformed rather than guessed at. */
function single(v: string | readonly string[] | undefined): string | undefined | null {
  if (v === undefined) return undefined;
  if (typeof v === 'string') return v;
  return v.length === 1 ? (v[0] ?? null) : null;
}

function equalDigest(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * Verify an inbound Standard Webhooks request against any of `secrets`. The signature is checked first, so
 * 'timestamp-skew' means an authentic but stale (replayed or clock-skewed) message. De-duplicating on
 * `webhook-id` within the tolerance window is the caller's job.
 */
export function verifyStandard(
  secrets: readonly string[],
  headers: HeaderBag,
  rawBody: string | Buffer,
  nowS: number,
  toleranceS: number = DEFAULT_TOLERANCE_S,
): VerifyResult {
  const id = single(header(headers, 'webhook-id'));
  const ts = single(header(headers, 'webhook-timestamp'));
  const sig = single(header(headers, 'webhook-signature'));
  if (id === undefined || ts === undefined || sig === undefined || id === '' || ts === '' || sig === '') return { ok: false, reason: 'missing' };
  if (id === null || ts === null || sig === null) return { ok: false, reason: 'malformed' };
  // Integer Unix seconds (spec "Webhook headers").
  if (!/^\d{1,15}$/.test(ts)) return { ok: false, reason: 'malformed' };
  const offered: Buffer[] = [];
  for (const token of sig.trim().split(/\s+/)) {
    const comma = token.indexOf(',');
    if (comma < 0) continue;
    // Only symmetric v1 signatures; v1a (ed25519) and unknown versions are skipped, as the spec directs.
    if (token.slice(0, comma) !== 'v1') continue;
    const b64 = token.slice(comma + 1);
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) continue;
    offered.push(Buffer.from(b64, 'base64'));
  }
  if (offered.length === 0) return { ok: false, reason: 'malformed' };
  const body = toBuffer(rawBody);
  let match = false;
  for (const secret of secrets) {
    const expected = standardDigest(secretKey(secret), id, ts, body);
    for (const o of offered) if (equalDigest(expected, o)) match = true;
  }
  if (!match) return { ok: false, reason: 'mismatch' };
  if (Math.abs(nowS - Number(ts)) > toleranceS) return { ok: false, reason: 'timestamp-skew' };
  return { ok: true };
}

const SIMPLE = /^sha256=([0-9a-fA-F]{64})$/;
const HEX_OR_SIMPLE = /^(?:sha256=)?([0-9a-fA-F]{64})$/;

function verifyHex(keys: readonly Buffer[], value: string | readonly string[] | undefined, rawBody: string | Buffer, form: RegExp): VerifyResult {
  const v = single(value);
  if (v === undefined || (v !== null && v.trim() === '')) return { ok: false, reason: 'missing' };
  const m = v === null ? null : form.exec(v.trim());
  const hex = m?.[1];
  if (hex === undefined) return { ok: false, reason: 'malformed' };
  const offered = Buffer.from(hex, 'hex');
  const body = toBuffer(rawBody);
  let match = false;
  for (const key of keys) if (equalDigest(createHmac('sha256', key).update(body).digest(), offered)) match = true;
  return match ? { ok: true } : { ok: false, reason: 'mismatch' };
}

/** Verify `X-Webhook-Signature: sha256=<hex>` as produced by signSimple, against any of `secrets`. */
export function verifySimple(secrets: readonly string[], headerValue: string | readonly string[] | undefined, rawBody: string | Buffer): VerifyResult {
  return verifyHex(secrets.map(secretKey), headerValue, rawBody, SIMPLE);
}

/**
 * Verify a foreign sender's hex HMAC-SHA256 of the raw body (`sha256=<hex>` or bare hex). The key is the
 * secret exactly as configured (its UTF-8 bytes, no `whsec_` decoding), as such senders compute
 * `hmac(secret, body)`; pass a Buffer for a binary key.
 */
export function verifyHexHmac(secret: string | Buffer, headerValue: string | readonly string[] | undefined, rawBody: string | Buffer): VerifyResult {
  return verifyHex([typeof secret === 'string' ? Buffer.from(secret, 'utf8') : secret], headerValue, rawBody, HEX_OR_SIMPLE);
}
