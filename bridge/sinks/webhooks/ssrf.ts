/**
 * Server-side request forgery guard for outbound webhooks: which IP addresses a delivery may connect to.
 *
 * An address is deliverable when it is globally reachable ('public') or when the operator's allowlist names
 * it (a CIDR or a host name). Everything else is refused: loopback, link-local (169.254.169.254 is the cloud
 * metadata service), RFC 1918 / ULA private ranges, CGNAT, multicast, documentation and reserved space, and
 * IPv6 forms that embed one of those IPv4 addresses (mapped, compatible, NAT64, 6to4, Teredo).
 * Ranges follow the IANA IPv4 and IPv6 Special-Purpose Address Registries (RFC 6890 and its updates).
 *
 * Pure functions over strings; nothing here touches the network. The HTTP client applies them to the address
 * it actually connects to (see http-client.ts), so a DNS answer that changes between checks cannot slip by.
 */
import { isIP, isIPv4, isIPv6 } from 'node:net';
import { UnsError } from '../../../src/core/index.js';

export type AddressClass =
  | 'loopback'
  | 'link-local'
  | 'private'
  | 'multicast'
  | 'cgnat'
  | 'unspecified'
  | 'reserved'
  | 'public';

/** One allow-listed network: `bytes` is 4 long for IPv4, 16 for IPv6; bits past `prefix` are zero. */
export interface Cidr {
  readonly family: 4 | 6;
  readonly bytes: Uint8Array;
  readonly prefix: number;
  readonly text: string;
}

/** Parsed once at start-up and frozen. */
export interface Allowlist {
  readonly cidrs: readonly Cidr[];
  /** Lower-case host names without a trailing dot; a listed name may resolve to any address. */
  readonly hosts: ReadonlySet<string>;
}

export const EMPTY_ALLOWLIST: Allowlist = Object.freeze({ cidrs: Object.freeze([]), hosts: new Set<string>() });

// ---------------------------------------------------------------------------------------------------------
// Parsing

/** Dotted-decimal IPv4 only (what DNS and the WHATWG URL parser produce). */
function parseV4(s: string): Uint8Array | undefined {
  if (!isIPv4(s)) return undefined;
  return Uint8Array.from(s.split('.').map(Number));
}

/** RFC 4291 §2.2 text forms, including `::` and a trailing dotted quad; a zone (`%eth0`) is dropped. */
function parseV6(input: string): Uint8Array | undefined {
  let s = input;
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  if (!isIPv6(s)) return undefined;
  const lastColon = s.lastIndexOf(':');
  const tail = s.slice(lastColon + 1);
  if (tail.includes('.')) {
    const v4 = parseV4(tail);
    if (v4 === undefined) return undefined;
    const hi = ((v4[0] ?? 0) << 8) | (v4[1] ?? 0);
    const lo = ((v4[2] ?? 0) << 8) | (v4[3] ?? 0);
    s = `${s.slice(0, lastColon + 1)}${hi.toString(16)}:${lo.toString(16)}`;
  }
  const halves = s.split('::');
  if (halves.length > 2) return undefined;
  const head = halves[0] ? halves[0].split(':') : [];
  const rest = halves.length === 2 ? (halves[1] ? halves[1].split(':') : []) : undefined;
  const groups: number[] = [];
  for (const g of head) groups.push(parseInt(g, 16));
  if (rest !== undefined) {
    const fill = 8 - head.length - rest.length;
    if (fill < 1) return undefined;
    for (let i = 0; i < fill; i++) groups.push(0);
    for (const g of rest) groups.push(parseInt(g, 16));
  }
  if (groups.length !== 8 || groups.some((g) => !Number.isInteger(g) || g < 0 || g > 0xffff)) return undefined;
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    out[i * 2] = g >> 8;
    out[i * 2 + 1] = g & 0xff;
  });
  return out;
}

/** An IP literal as bytes, or undefined. Brackets around IPv6 (URL host form) are accepted. */
export function parseIp(input: string): { family: 4 | 6; bytes: Uint8Array } | undefined {
  const s = input.startsWith('[') && input.endsWith(']') ? input.slice(1, -1) : input;
  const v4 = parseV4(s);
  if (v4 !== undefined) return { family: 4, bytes: v4 };
  const v6 = parseV6(s);
  if (v6 !== undefined) return { family: 6, bytes: v6 };
  return undefined;
}

/**
 * Non-canonical IPv4 spellings (`0177.0.0.1`, `0x7f.1`, `127.1`, `2130706433`) are what inet_aton accepts;
 * the WHATWG URL host parser (URL Standard §3.5 "IPv4 parser") normalises them the same way, so we use it
 * rather than a second hand-written parser. Returns the canonical literal, or undefined for a name.
 */
function canonicalLiteral(input: string): string | undefined {
  if (isIP(input) !== 0) return input;
  const bare = input.startsWith('[') && input.endsWith(']') ? input.slice(1, -1) : input;
  if (isIP(bare) !== 0) return bare;
  try {
    const host = new URL(`http://${input.includes(':') && !input.startsWith('[') ? `[${input}]` : input}/`).hostname;
    const unbracketed = host.startsWith('[') ? host.slice(1, -1) : host;
    return isIP(unbracketed) !== 0 ? unbracketed : undefined;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Classification

function inV4(b: Uint8Array, net: readonly [number, number, number, number], prefix: number): boolean {
  return prefixEquals(b, Uint8Array.from(net), prefix);
}

function prefixEquals(a: Uint8Array, b: Uint8Array, prefix: number): boolean {
  const full = prefix >> 3;
  for (let i = 0; i < full; i++) if (a[i] !== b[i]) return false;
  const rem = prefix & 7;
  if (rem === 0) return true;
  const mask = (0xff << (8 - rem)) & 0xff;
  return ((a[full] ?? 0) & mask) === ((b[full] ?? 0) & mask);
}

function classifyV4(b: Uint8Array): AddressClass {
  if (inV4(b, [0, 0, 0, 0], 32)) return 'unspecified';
  if (inV4(b, [0, 0, 0, 0], 8)) return 'reserved'; // "this network", RFC 791 / RFC 6890 §2.2.2
  if (inV4(b, [127, 0, 0, 0], 8)) return 'loopback'; // RFC 1122 §3.2.1.3
  if (inV4(b, [10, 0, 0, 0], 8)) return 'private'; // RFC 1918
  if (inV4(b, [172, 16, 0, 0], 12)) return 'private'; // RFC 1918
  if (inV4(b, [192, 168, 0, 0], 16)) return 'private'; // RFC 1918
  if (inV4(b, [100, 64, 0, 0], 10)) return 'cgnat'; // RFC 6598 shared address space
  if (inV4(b, [169, 254, 0, 0], 16)) return 'link-local'; // RFC 3927 (cloud metadata lives here)
  if (inV4(b, [192, 0, 0, 0], 24)) return 'reserved'; // IETF protocol assignments, RFC 6890
  if (inV4(b, [192, 0, 2, 0], 24)) return 'reserved'; // TEST-NET-1, RFC 5737
  if (inV4(b, [198, 51, 100, 0], 24)) return 'reserved'; // TEST-NET-2, RFC 5737
  if (inV4(b, [203, 0, 113, 0], 24)) return 'reserved'; // TEST-NET-3, RFC 5737
  if (inV4(b, [192, 88, 99, 0], 24)) return 'reserved'; // 6to4 relay anycast, deprecated by RFC 7526
  if (inV4(b, [198, 18, 0, 0], 15)) return 'reserved'; // benchmarking, RFC 2544
  if (inV4(b, [224, 0, 0, 0], 4)) return 'multicast'; // RFC 5771
  if (inV4(b, [255, 255, 255, 255], 32)) return 'reserved'; // limited broadcast, RFC 919
  if (inV4(b, [240, 0, 0, 0], 4)) return 'reserved'; // RFC 1112 §4
  return 'public';
}

const V6 = (text: string): Uint8Array => {
  const b = parseV6(text);
  if (b === undefined) throw new Error(`bad IPv6 constant ${text}`);
  return b;
};
const V6_MAPPED = V6('::ffff:0:0');
const V6_NAT64 = V6('64:ff9b::');
const V6_NAT64_LOCAL = V6('64:ff9b:1::');
const V6_DISCARD = V6('100::');
const V6_TEREDO = V6('2001::');
const V6_BENCH = V6('2001:2::');
const V6_ORCHID = V6('2001:10::');
const V6_ORCHID2 = V6('2001:20::');
const V6_DOC = V6('2001:db8::');
const V6_DOC2 = V6('3fff::');
const V6_6TO4 = V6('2002::');
const V6_SRV6 = V6('5f00::');
const V6_GLOBAL = V6('2000::');
const V6_ULA = V6('fc00::');
const V6_SITE_LOCAL = V6('fec0::');
const V6_LINK_LOCAL = V6('fe80::');
const V6_MULTICAST = V6('ff00::');

/** An embedded IPv4 address only hides a public host when the IPv4 address itself is public. */
function viaEmbedded(v4: Uint8Array, otherwise: AddressClass): AddressClass {
  const c = classifyV4(v4);
  return c === 'public' ? otherwise : c;
}

function classifyV6(b: Uint8Array): AddressClass {
  const zeroHead = b.subarray(0, 12).every((x) => x === 0);
  if (zeroHead) {
    const last = b.subarray(12);
    if (last.every((x) => x === 0)) return 'unspecified'; // ::/128, RFC 4291 §2.5.2
    if (last[0] === 0 && last[1] === 0 && last[2] === 0 && last[3] === 1) return 'loopback'; // ::1, §2.5.3
    // IPv4-compatible ::a.b.c.d, deprecated by RFC 4291 §2.5.5.1: never a legitimate destination.
    return viaEmbedded(last, 'reserved');
  }
  // IPv4-mapped ::ffff:a.b.c.d (RFC 4291 §2.5.5.2) is the IPv4 host itself, in either spelling.
  if (prefixEquals(b, V6_MAPPED, 96)) return classifyV4(b.subarray(12));
  if (prefixEquals(b, V6_NAT64, 96)) return viaEmbedded(b.subarray(12), 'public'); // RFC 6052 §2.1
  if (prefixEquals(b, V6_NAT64_LOCAL, 48)) return 'private'; // local-use NAT64, RFC 8215
  if (prefixEquals(b, V6_DISCARD, 64)) return 'reserved'; // discard-only, RFC 6666
  if (prefixEquals(b, V6_LINK_LOCAL, 10)) return 'link-local'; // RFC 4291 §2.5.6
  if (prefixEquals(b, V6_SITE_LOCAL, 10)) return 'private'; // site-local, deprecated by RFC 3879
  if (prefixEquals(b, V6_ULA, 7)) return 'private'; // unique local, RFC 4193
  if (prefixEquals(b, V6_MULTICAST, 8)) return 'multicast'; // RFC 4291 §2.7
  // Only 2000::/3 is allocated global unicast (RFC 4291 §2.4); the rest is IETF-reserved.
  if (!prefixEquals(b, V6_GLOBAL, 3)) return 'reserved';
  if (prefixEquals(b, V6_DOC, 32)) return 'reserved'; // documentation, RFC 3849
  if (prefixEquals(b, V6_DOC2, 20)) return 'reserved'; // documentation, RFC 9637
  if (prefixEquals(b, V6_BENCH, 48)) return 'reserved'; // benchmarking, RFC 5180
  if (prefixEquals(b, V6_ORCHID, 28) || prefixEquals(b, V6_ORCHID2, 28)) return 'reserved'; // RFC 4843, RFC 7343
  if (prefixEquals(b, V6_SRV6, 16)) return 'reserved'; // SRv6 SIDs, RFC 9602
  if (prefixEquals(b, V6_TEREDO, 32)) {
    // Teredo (RFC 4380 §4): the client's IPv4 address is the last 32 bits, bit-inverted.
    return viaEmbedded(b.subarray(12).map((x) => ~x & 0xff), 'public');
  }
  if (prefixEquals(b, V6_6TO4, 16)) return viaEmbedded(b.subarray(2, 6), 'public'); // 6to4, RFC 3056 §2
  return 'public';
}

/**
 * The class of an IP address. Non-canonical IPv4 spellings are normalised first; anything that is not an
 * IP address at all is 'reserved', so a caller that forgets to resolve a name still refuses it.
 */
export function classifyAddress(ip: string): AddressClass {
  const canonical = canonicalLiteral(ip.trim());
  const parsed = canonical === undefined ? undefined : parseIp(canonical);
  if (parsed === undefined) return 'reserved';
  return parsed.family === 4 ? classifyV4(parsed.bytes) : classifyV6(parsed.bytes);
}

// ---------------------------------------------------------------------------------------------------------
// Allowlist

const HOST_NAME = /^(?=.{1,253}$)(?!-)[a-z0-9_-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9_-]{1,63}(?<!-))*$/;

/** A host name as compared everywhere here: lower case, no trailing dot. */
export function normalizeHostName(host: string): string {
  const h = host.toLowerCase();
  return h.endsWith('.') ? h.slice(0, -1) : h;
}

function parseCidr(entry: string): Cidr | undefined {
  const slash = entry.indexOf('/');
  const addrText = slash >= 0 ? entry.slice(0, slash) : entry;
  const ip = parseIp(addrText);
  if (ip === undefined) return undefined;
  const max = ip.family === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const p = entry.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p)) return undefined;
    prefix = Number(p);
    if (prefix > max) return undefined;
  }
  const bytes = Uint8Array.from(ip.bytes);
  for (let bit = prefix; bit < max; bit++) bytes[bit >> 3] = (bytes[bit >> 3] ?? 0) & ~(0x80 >> (bit & 7));
  return Object.freeze({ family: ip.family, bytes, prefix, text: entry });
}

/**
 * `'10.0.0.0/8,127.0.0.1/32,hooks.local'`: CIDRs (IPv4 or IPv6; a bare address is a /32 or /128) and exact
 * host names, separated by commas or white space. An allow-listed CIDR opens any range, loopback included;
 * an allow-listed name may resolve to any address. Start-up configuration: a bad entry throws
 * UNS_ERR_CONFIG_INVALID.
 */
export function parseAllowlist(spec: string | readonly string[]): Allowlist {
  const entries = (typeof spec === 'string' ? spec.split(/[\s,]+/) : spec.flatMap((s) => s.split(/[\s,]+/)))
    .map((e) => e.trim())
    .filter((e) => e !== '');
  const cidrs: Cidr[] = [];
  const hosts = new Set<string>();
  for (const entry of entries) {
    const cidr = parseCidr(entry);
    if (cidr !== undefined) {
      cidrs.push(cidr);
      continue;
    }
    const host = normalizeHostName(entry);
    if (!entry.includes('/') && HOST_NAME.test(host) && !/^[\d.]+$/.test(host)) {
      hosts.add(host);
      continue;
    }
    throw new UnsError('UNS_ERR_CONFIG_INVALID', `webhook allowlist entry "${entry}": not a CIDR, IP address or host name`);
  }
  return Object.freeze({ cidrs: Object.freeze(cidrs), hosts });
}

function inCidr(family: 4 | 6, bytes: Uint8Array, c: Cidr): boolean {
  return c.family === family && prefixEquals(bytes, c.bytes, c.prefix);
}

/** True when the address lies in an allow-listed CIDR (an IPv4-mapped IPv6 address also matches IPv4 CIDRs). */
export function inAllowlist(ip: string, allowlist: Allowlist): boolean {
  const canonical = canonicalLiteral(ip.trim());
  const parsed = canonical === undefined ? undefined : parseIp(canonical);
  if (parsed === undefined) return false;
  const mapped = parsed.family === 6 && prefixEquals(parsed.bytes, V6_MAPPED, 96) ? parsed.bytes.subarray(12) : undefined;
  return allowlist.cidrs.some((c) => inCidr(parsed.family, parsed.bytes, c) || (mapped !== undefined && inCidr(4, mapped, c)));
}

export type AddressVerdict = { allowed: true; class: AddressClass } | { allowed: false; class: AddressClass };

/** May a delivery connect to this address? Public, or inside an allow-listed CIDR. */
export function checkAddress(ip: string, allowlist: Allowlist): AddressVerdict {
  const cls = classifyAddress(ip);
  return { allowed: cls === 'public' || inAllowlist(ip, allowlist), class: cls };
}

/** Is this host name allow-listed by name? */
export function isHostAllowed(host: string, allowlist: Allowlist): boolean {
  return allowlist.hosts.has(normalizeHostName(host));
}

/** `localhost` and `*.localhost` are loopback by definition (RFC 6761 §6.3), whatever a resolver says. */
export function isLocalhostName(host: string): boolean {
  const h = normalizeHostName(host);
  return h === 'localhost' || h.endsWith('.localhost');
}
