/**
 * Sits between a client's socket and Aedes and reads only MQTT fixed headers: a packet whose Remaining
 * Length exceeds the limit is refused from its first bytes, before anything is buffered (the parser would
 * otherwise collect the whole packet in memory). A Remaining Length of more than four bytes is a malformed
 * packet [MQTT-2.2.3]. Data passes through untouched, and back-pressure is kept: when Aedes stops reading,
 * the socket is paused.
 */
import { Duplex } from 'node:stream';

export type FrameViolation = 'UNS_ERR_PACKET_TOO_LARGE' | 'UNS_ERR_MALFORMED_PACKET';

export class FrameGuard extends Duplex {
  private bodyLeft = 0;
  private inLength = false;
  private lengthValue = 0;
  private lengthMul = 1;
  private lengthBytes = 0;

  constructor(
    private readonly socket: Duplex,
    private readonly maxPacketBytes: number,
    private readonly onViolation: (code: FrameViolation, detail: string) => void,
  ) {
    super({ allowHalfOpen: false });
    socket.on('data', (chunk: Buffer) => {
      if (!this.inspect(chunk)) return;
      if (!this.push(chunk)) socket.pause();
    });
    socket.on('end', () => this.push(null));
    socket.on('error', (e) => this.destroy(e));
    socket.on('close', () => { if (!this.destroyed) this.destroy(); });
  }

  /** Aedes (and logging) read these from the connection. */
  get remoteAddress(): string | undefined {
    return (this.socket as { remoteAddress?: string }).remoteAddress;
  }

  get remotePort(): number | undefined {
    return (this.socket as { remotePort?: number }).remotePort;
  }

  private inspect(chunk: Buffer): boolean {
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
        if (this.lengthBytes >= 4) return this.violate('UNS_ERR_MALFORMED_PACKET', 'Remaining Length longer than 4 bytes');
        continue;
      }
      this.inLength = false;
      const total = 1 + this.lengthBytes + this.lengthValue;
      if (total > this.maxPacketBytes) {
        return this.violate('UNS_ERR_PACKET_TOO_LARGE', `packet of ${total} bytes exceeds the limit of ${this.maxPacketBytes}`);
      }
      this.bodyLeft = this.lengthValue;
    }
    return true;
  }

  private violate(code: FrameViolation, detail: string): false {
    this.onViolation(code, detail);
    this.socket.destroy();
    this.destroy();
    return false;
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.socket.write(chunk)) cb();
    else this.socket.once('drain', () => cb());
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.socket.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.socket.destroy();
    cb(err);
  }
}
