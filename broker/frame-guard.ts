/**
 * Reads only MQTT fixed headers of what a client sends: a packet whose Remaining Length exceeds the limit
 * is refused from its first bytes, before anything is buffered (the parser would otherwise collect the
 * whole packet in memory). A Remaining Length of more than four bytes is a malformed packet [MQTT-2.2.3].
 *
 * It hooks the connection's own `push` (where a net.Socket or a WebSocket stream hands received bytes
 * to its readable side) instead of wrapping the connection in another stream: Aedes keeps talking to the
 * socket itself, so reads, writes (corked by mqtt-packet into one syscall per tick) and TCP back-pressure
 * are exactly as without the guard, at the cost of a few byte comparisons per chunk.
 */
import type { Duplex } from 'node:stream';

export type FrameViolation = 'UNS_ERR_PACKET_TOO_LARGE' | 'UNS_ERR_MALFORMED_PACKET';

export class FrameScanner {
  private bodyLeft = 0;
  private inLength = false;
  private lengthValue = 0;
  private lengthMul = 1;
  private lengthBytes = 0;

  constructor(private readonly maxPacketBytes: number) {}

  /** null when the chunk is fine, else the violation and a detail. */
  scan(chunk: Uint8Array): { code: FrameViolation; detail: string } | null {
    let pos = 0;
    const len = chunk.length;
    while (pos < len) {
      if (this.bodyLeft > 0) {
        const skip = Math.min(this.bodyLeft, len - pos);
        this.bodyLeft -= skip;
        pos += skip;
        continue;
      }
      if (!this.inLength) {
        pos++; // fixed header byte 1: packet type and flags
        this.inLength = true;
        this.lengthValue = 0;
        this.lengthMul = 1;
        this.lengthBytes = 0;
        continue;
      }
      const b = chunk[pos++] as number;
      this.lengthValue += (b & 0x7f) * this.lengthMul;
      this.lengthMul *= 128;
      this.lengthBytes++;
      if (b & 0x80) {
        if (this.lengthBytes >= 4) return { code: 'UNS_ERR_MALFORMED_PACKET', detail: 'Remaining Length longer than 4 bytes' };
        continue;
      }
      this.inLength = false;
      const total = 1 + this.lengthBytes + this.lengthValue;
      if (total > this.maxPacketBytes) {
        return { code: 'UNS_ERR_PACKET_TOO_LARGE', detail: `packet of ${total} bytes exceeds the limit of ${this.maxPacketBytes}` };
      }
      this.bodyLeft = this.lengthValue;
    }
    return null;
  }
}

/** Installs the guard on a connection; on a violation the connection is destroyed and nothing reaches Aedes. */
export function guardFrames(conn: Duplex, maxPacketBytes: number, onViolation: (code: FrameViolation, detail: string) => void): void {
  const scanner = new FrameScanner(maxPacketBytes);
  const push = conn.push.bind(conn);
  let refused = false;
  conn.push = (chunk: unknown, encoding?: BufferEncoding): boolean => {
    if (refused) return false;
    if (chunk !== null && chunk !== undefined) {
      const bytes = typeof chunk === 'string' ? Buffer.from(chunk, encoding) : (chunk as Uint8Array);
      const v = scanner.scan(bytes);
      if (v) {
        refused = true;
        onViolation(v.code, v.detail);
        conn.destroy();
        return false;
      }
    }
    return push(chunk, encoding);
  };
}
