/**
 * One webhook delivery attempt over HTTP(S), guarded against SSRF.
 *
 * - http: and https: only. The URL goes through the WHATWG parser, which normalises numeric host forms
 *   (`2130706433`, `0177.0.0.1`, `0x7f.1`, `127.1` all become `127.0.0.1`), so the guard sees one spelling.
 * - An IP-literal host is checked before any socket exists. A host name is resolved by a `lookup` hook that
 *   Node's socket calls right before connecting: every address in the answer is checked and the answer is
 *   refused if any is blocked, so the address checked is the address connected to and DNS rebinding between
 *   an earlier check and the connection fails.
 * - Redirects are never followed: a 3xx is returned as a response (svix does the same).
 * - One budget (`timeoutMs`) covers DNS, connect, TLS, the response head and the body.
 * - The response body is read up to `maxResponseBytes`, then the socket is destroyed; the status decides.
 * - No connection reuse (`agent: false`): each attempt resolves, checks and connects afresh.
 *
 * Never throws and never rejects: every outcome is a DeliveryResult.
 */
import { request as httpRequest } from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, ClientRequest, RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { lookup as dnsLookup } from 'node:dns/promises';
import type { LookupAddress, LookupOptions } from 'node:dns';
import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import { checkAddress, isHostAllowed, isLocalhostName, EMPTY_ALLOWLIST } from './ssrf.js';
import type { Allowlist, AddressClass } from './ssrf.js';

export interface DeliveryRequest {
  url: string;
  method: 'POST';
  headers: Readonly<Record<string, string>>;
  body: Buffer;
  /** Whole-attempt budget: DNS + connect + TLS + response head + body. */
  timeoutMs: number;
  /** Response bytes read at most; the excerpt is these bytes as UTF-8 text. */
  maxResponseBytes: number;
}

/** Resolve every address of a name (the shape of dns.promises.lookup with `all: true`). */
export type Resolver = (hostname: string) => Promise<readonly LookupAddress[]>;

export interface DeliveryOptions {
  allowlist?: Allowlist;
  /** Injected resolver (tests, custom DNS); default node:dns lookup with `all: true`. */
  lookup?: Resolver;
  /** Monotonic milliseconds for latencyMs; injected in tests. Default performance.now. */
  clock?: () => number;
  /** Extra trust anchors for https endpoints with a private CA (PEM). */
  ca?: string | Buffer | ReadonlyArray<string | Buffer>;
}

export type DeliveryErrorClass =
  | 'timeout'
  | 'dns'
  | 'connect'
  | 'ssrf-blocked'
  | 'tls'
  | 'reset'
  | 'too-large'
  | 'protocol'
  | 'invalid-url'
  | 'invalid-request';

export interface DeliveryResponse {
  kind: 'response';
  status: number;
  headers: IncomingHttpHeaders;
  bodyExcerpt: string;
  /** True when the body was cut at maxResponseBytes or the budget ran out while reading it. */
  truncated: boolean;
  latencyMs: number;
}

export interface DeliveryError {
  kind: 'error';
  errorClass: DeliveryErrorClass;
  message: string;
  latencyMs: number;
  /** For 'ssrf-blocked': the refused address and its class. */
  blocked?: { address: string; class: AddressClass };
}

export type DeliveryResult = DeliveryResponse | DeliveryError;

const defaultResolver: Resolver = (hostname) => dnsLookup(hostname, { all: true });

/** Marks a refusal raised inside the lookup hook, so the request's 'error' maps it to 'ssrf-blocked'. */
class SsrfBlocked extends Error {
  constructor(readonly address: string, readonly addressClass: AddressClass, host: string) {
    super(`${host} resolves to ${address} (${addressClass}), which is not allow-listed`);
    this.name = 'SsrfBlocked';
  }
}

export type DestinationCheck =
  | { ok: true; url: URL; host: string; literal: boolean }
  | { ok: false; errorClass: 'invalid-url' | 'ssrf-blocked'; message: string; blocked?: { address: string; class: AddressClass } };

/**
 * The checks that need no DNS: scheme, parse, IP literals, localhost names. `host` is the URL host without
 * IPv6 brackets.
 */
export function checkUrl(rawUrl: string, allowlist: Allowlist = EMPTY_ALLOWLIST): DestinationCheck {
  let url: URL;
  try {
    url = new URL(rawUrl);
  } catch {
    return { ok: false, errorClass: 'invalid-url', message: 'not a valid absolute URL' };
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    return { ok: false, errorClass: 'invalid-url', message: `scheme ${url.protocol} is not http: or https:` };
  }
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  if (host === '') return { ok: false, errorClass: 'invalid-url', message: 'no host' };
  if (isIP(host) !== 0) {
    const v = checkAddress(host, allowlist);
    if (!v.allowed) {
      return { ok: false, errorClass: 'ssrf-blocked', message: `${host} is ${v.class} and not allow-listed`, blocked: { address: host, class: v.class } };
    }
    return { ok: true, url, host, literal: true };
  }
  if (isLocalhostName(host) && !isHostAllowed(host, allowlist)) {
    return { ok: false, errorClass: 'ssrf-blocked', message: `${host} is loopback (RFC 6761 §6.3) and not allow-listed`, blocked: { address: host, class: 'loopback' } };
  }
  return { ok: true, url, host, literal: false };
}

/**
 * Registration-time check (e.g. when an endpoint is created): the URL checks plus one resolution. A pass
 * here is advice only; deliver() checks again at connect time, which is what counts.
 */
export async function checkDestination(
  rawUrl: string,
  opts: { allowlist?: Allowlist; lookup?: Resolver } = {},
): Promise<DestinationCheck | { ok: false; errorClass: 'dns'; message: string }> {
  const allowlist = opts.allowlist ?? EMPTY_ALLOWLIST;
  const pre = checkUrl(rawUrl, allowlist);
  if (!pre.ok || pre.literal || isHostAllowed(pre.host, allowlist)) return pre;
  let addrs: readonly LookupAddress[];
  try {
    addrs = await (opts.lookup ?? defaultResolver)(pre.host);
  } catch (err) {
    return { ok: false, errorClass: 'dns', message: errText(err) };
  }
  if (addrs.length === 0) return { ok: false, errorClass: 'dns', message: `${pre.host}: no addresses` };
  for (const a of addrs) {
    const v = checkAddress(a.address, allowlist);
    if (!v.allowed) {
      return { ok: false, errorClass: 'ssrf-blocked', message: new SsrfBlocked(a.address, v.class, pre.host).message, blocked: { address: a.address, class: v.class } };
    }
  }
  return pre;
}

/**
 * The connect-time lookup handed to http.request. Resolves all addresses, refuses the whole answer if any
 * is blocked (a mixed answer is the shape of a rebinding attack), and otherwise answers in the form Node
 * asked for (`all: true` under autoSelectFamily, else one address).
 */
function guardedLookup(resolve: Resolver, allowlist: Allowlist, onBlocked: (e: SsrfBlocked) => void): NonNullable<RequestOptions['lookup']> {
  return ((hostname: string, options: LookupOptions, callback: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void) => {
    resolve(hostname).then(
      (answer) => {
        const family = options.family === 4 || options.family === 6 ? options.family : 0;
        const addrs = answer.filter((a) => family === 0 || a.family === family);
        if (addrs.length === 0) {
          const e: NodeJS.ErrnoException = new Error(`getaddrinfo ENOTFOUND ${hostname}`);
          e.code = 'ENOTFOUND';
          callback(e, '', undefined);
          return;
        }
        if (!isHostAllowed(hostname, allowlist)) {
          for (const a of addrs) {
            const v = checkAddress(a.address, allowlist);
            if (!v.allowed) {
              const blocked = new SsrfBlocked(a.address, v.class, hostname);
              onBlocked(blocked);
              callback(blocked, '', undefined);
              return;
            }
          }
        }
        const first = addrs[0];
        if (options.all === true) callback(null, addrs.map((a) => ({ address: a.address, family: a.family })));
        else if (first !== undefined) callback(null, first.address, first.family);
      },
      (err: unknown) => {
        const e: NodeJS.ErrnoException = err instanceof Error ? err : new Error(String(err));
        e.code ??= 'ENOTFOUND';
        callback(e, '', undefined);
      },
    );
  }) as NonNullable<RequestOptions['lookup']>;
}

const DNS_CODES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_FAIL', 'EAI_NONAME', 'EAI_NODATA', 'ENODATA', 'ESERVFAIL', 'ENONAME', 'EREFUSED', 'ETIMEOUT']);
const CONNECT_CODES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'ETIMEDOUT', 'ENETDOWN', 'EHOSTDOWN', 'EACCES', 'EPERM']);
const RESET_CODES = new Set(['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE']);
const TLS_CODE = /^(ERR_TLS_|ERR_SSL_|EPROTO$|CERT_|UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED_CERT$|SELF_SIGNED_CERT_IN_CHAIN$|HOSTNAME_MISMATCH$|ERR_OSSL_)/;

function errText(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return code !== undefined && !err.message.includes(code) ? `${code}: ${err.message}` : err.message;
  }
  return String(err);
}

/** Map a socket / parser / TLS error to a class; the first inner error of an AggregateError decides. */
function classifyError(err: unknown): DeliveryErrorClass {
  const e = err instanceof AggregateError && err.errors.length > 0 ? (err.errors[0] as unknown) : err;
  const code = (e as NodeJS.ErrnoException | undefined)?.code ?? (err as NodeJS.ErrnoException | undefined)?.code ?? '';
  if (DNS_CODES.has(code)) return 'dns';
  if (TLS_CODE.test(code)) return 'tls';
  if (CONNECT_CODES.has(code)) return 'connect';
  if (RESET_CODES.has(code)) return 'reset';
  if (code === 'HPE_HEADER_OVERFLOW') return 'too-large';
  if (code.startsWith('HPE_')) return 'protocol';
  if (e instanceof Error && /socket hang up/i.test(e.message)) return 'reset';
  if (e instanceof Error && (/SSL|TLS|certificate/i.test(e.message) || 'library' in e)) return 'tls';
  return 'connect';
}

/** One delivery attempt. Resolves with a DeliveryResult; never rejects. */
export function deliver(req: DeliveryRequest, opts: DeliveryOptions = {}): Promise<DeliveryResult> {
  const clock = opts.clock ?? (() => performance.now());
  const started = clock();
  const elapsed = (): number => Math.max(0, clock() - started);
  const allowlist = opts.allowlist ?? EMPTY_ALLOWLIST;

  const pre = checkUrl(req.url, allowlist);
  if (!pre.ok) {
    return Promise.resolve({ kind: 'error', errorClass: pre.errorClass, message: pre.message, latencyMs: elapsed(), ...(pre.blocked ? { blocked: pre.blocked } : {}) });
  }
  if (req.method !== 'POST') {
    return Promise.resolve({ kind: 'error', errorClass: 'invalid-request', message: `method ${String(req.method)} is not POST`, latencyMs: elapsed() });
  }

  return new Promise<DeliveryResult>((resolvePromise) => {
    let settled = false;
    let timedOut = false;
    let blocked: SsrfBlocked | undefined;
    let response: IncomingMessage | undefined;
    const chunks: Buffer[] = [];
    let received = 0;
    let truncated = false;
    let creq: ClientRequest | undefined;

    const settle = (r: DeliveryResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolvePromise(r);
    };
    const finishResponse = (): void => {
      if (response === undefined) return;
      settle({
        kind: 'response',
        status: response.statusCode ?? 0,
        headers: response.headers,
        bodyExcerpt: Buffer.concat(chunks).toString('utf8'),
        truncated,
        latencyMs: elapsed(),
      });
    };
    const fail = (err: unknown): void => {
      if (settled) return;
      // An error after the status line arrived (cut body, reset mid-body): the status still decides.
      if (response !== undefined) {
        truncated = true;
        finishResponse();
        return;
      }
      if (timedOut) {
        settle({ kind: 'error', errorClass: 'timeout', message: `no response within ${req.timeoutMs} ms`, latencyMs: elapsed() });
      } else if (blocked !== undefined || err instanceof SsrfBlocked) {
        const b = blocked ?? (err as SsrfBlocked);
        settle({ kind: 'error', errorClass: 'ssrf-blocked', message: b.message, latencyMs: elapsed(), blocked: { address: b.address, class: b.addressClass } });
      } else {
        settle({ kind: 'error', errorClass: classifyError(err), message: errText(err), latencyMs: elapsed() });
      }
    };

    const timer = setTimeout(() => {
      timedOut = true;
      if (response !== undefined) truncated = true;
      creq?.destroy(new Error('webhook attempt timed out'));
      fail(new Error('timeout'));
    }, Math.max(1, req.timeoutMs));

    try {
      const isHttps = pre.url.protocol === 'https:';
      const headers: Record<string, string> = { ...req.headers };
      if (!Object.keys(headers).some((k) => k.toLowerCase() === 'content-length')) headers['content-length'] = String(req.body.length);
      const options: RequestOptions & { ca?: DeliveryOptions['ca']; servername?: string } = {
        protocol: pre.url.protocol,
        hostname: pre.host,
        port: pre.url.port === '' ? (isHttps ? 443 : 80) : Number(pre.url.port),
        path: `${pre.url.pathname}${pre.url.search}`,
        method: 'POST',
        headers,
        agent: false,
        lookup: guardedLookup(opts.lookup ?? defaultResolver, allowlist, (b) => {
          blocked = b;
        }),
        ...(pre.url.username !== '' ? { auth: `${decodeURIComponent(pre.url.username)}:${decodeURIComponent(pre.url.password)}` } : {}),
        ...(isHttps && opts.ca !== undefined ? { ca: opts.ca } : {}),
      };
      creq = (isHttps ? httpsRequest : httpRequest)(options as RequestOptions);
      creq.on('error', fail);
      creq.on('response', (res) => {
        response = res;
        const limit = Math.max(0, req.maxResponseBytes);
        res.on('data', (chunk: Buffer) => {
          if (settled) return;
          const room = limit - received;
          if (chunk.length > room) {
            // Bounded read: keep what fits, then drop the connection instead of draining it.
            if (room > 0) chunks.push(chunk.subarray(0, room));
            received = limit;
            truncated = true;
            finishResponse();
            res.destroy();
            creq?.destroy();
            return;
          }
          chunks.push(chunk);
          received += chunk.length;
        });
        res.on('end', finishResponse);
        res.on('error', fail);
        res.on('close', () => {
          if (!res.complete) truncated = true;
          finishResponse();
        });
      });
      creq.end(req.body);
    } catch (err) {
      // Synchronous throws from http.request: invalid header names/values, bad port, etc.
      creq?.destroy();
      settle({ kind: 'error', errorClass: 'invalid-request', message: errText(err), latencyMs: elapsed() });
    }
  });
}
