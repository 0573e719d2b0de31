/**
 * PROXY protocol (v1 and v2, as HAProxy, nginx and cloud TCP load balancers send it) on the MQTT listener:
 * behind a load balancer every connection would otherwise come from the balancer's address, and logs, the
 * login throttle and audit lines would all name it. The header is read from the first bytes, before any
 * MQTT, and parsed by aedes-protocol-decoder; the bytes after it go on to the frame guard and Aedes as if
 * the header had never been there. With the option on, a connection without a header is refused: only the
 * balancer may connect, or anyone could claim any address.
 *
 * Like the frame guard, it hooks the connection's own `push` instead of wrapping the socket.
 */
import type { Duplex } from 'node:stream';
import { protocolDecoder } from 'aedes-protocol-decoder';

const V1 = Buffer.from('PROXY ', 'latin1');
const V2 = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');
/** A v1 header is at most 107 bytes; a v2 one 16 bytes plus its length field. */
const V1_MAX = 107;

/** Whether what has arrived so far agrees with `signature` (all of it, or as much as there is). */
function startsLike(b: Buffer, signature: Buffer): boolean {
  const n = Math.min(b.length, signature.length);
  return b.subarray(0, n).equals(signature.subarray(0, n));
}

/** The header's length once it is complete, 0 while more bytes are needed, -1 when there is none. */
function headerLength(b: Buffer): number {
  if (startsLike(b, V1)) {
    if (b.length < V1.length) return 0;
    const end = b.indexOf('\r\n', 0, 'latin1');
    if (end >= 0) return end + 2;
    return b.length >= V1_MAX ? -1 : 0;
  }
  if (startsLike(b, V2)) {
    if (b.length < 16) return 0;
    const total = 16 + b.readUInt16BE(14);
    return b.length >= total ? total : 0;
  }
  return -1;
}

/**
 * Expects a PROXY header on `conn`; calls `onAddress` with the client's address from it, or `onRefused`
 * (and destroys the connection) when the first bytes are not a valid header.
 */
export function expectProxyHeader(conn: Duplex, onAddress: (address: string, port: number | null) => void, onRefused: (why: string) => void): void {
  const push = conn.push.bind(conn);
  let pending: Buffer | null = Buffer.alloc(0);
  conn.push = (chunk: unknown, encoding?: BufferEncoding): boolean => {
    if (pending === null || chunk === null || chunk === undefined) return push(chunk, encoding);
    const bytes = typeof chunk === 'string' ? Buffer.from(chunk, encoding) : Buffer.from(chunk as Uint8Array);
    const b: Buffer = Buffer.concat([pending, bytes]);
    const len = headerLength(b);
    if (len === 0) { pending = b; return true; }
    pending = null;
    const details = len > 0 ? protocolDecoder(conn, b) : null;
    if (details === null || details.isProxy === 0 || !details.ipAddress) {
      onRefused(len < 0 ? 'no PROXY protocol header (connections must come through the load balancer)' : 'malformed PROXY protocol header');
      conn.destroy();
      return false;
    }
    onAddress(details.ipAddress, details.port ?? null);
    const rest = b.subarray(len);
    return rest.length > 0 ? push(rest) : true;
  };
}
