/**
 * A deliberately small MQTT 3.1.1 client for the load generator: CONNECT, QoS 1 PUBLISH, SUBSCRIBE,
 * PINGREQ, DISCONNECT, and the packets that answer them. It is real MQTT over TCP, but a few hundred of
 * these cost far less CPU than MQTT.js clients, so on a small machine the generator is not what we measure.
 * No reconnects, no session state, no QoS 2: a broken connection is reported and stays broken.
 */
import { connect as netConnect, type Socket } from 'node:net';

export interface LiteClientOptions {
  readonly host: string;
  readonly port: number;
  readonly clientId: string;
  readonly username?: string | undefined;
  readonly password?: string | undefined;
  /** Seconds; 0 turns keep-alive off [MQTT-3.1.2-24]. */
  readonly keepaliveS?: number;
  readonly connectTimeoutMs?: number;
}

export interface LiteClientHandlers {
  onPuback?(packetId: number): void;
  onPublish?(topic: string, payload: Buffer): void;
  onClose?(error: Error | null): void;
}

/** Bytes needed for MQTT's variable-length "remaining length" [MQTT-2.2.3]. */
function varintBytes(n: number): number {
  return n < 128 ? 1 : n < 16_384 ? 2 : n < 2_097_152 ? 3 : 4;
}

function writeVarint(buf: Buffer, off: number, n: number): number {
  let v = n;
  do {
    let byte = v % 128;
    v = Math.floor(v / 128);
    if (v > 0) byte |= 128;
    buf[off++] = byte;
  } while (v > 0);
  return off;
}

function utf8Field(s: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  const out = Buffer.allocUnsafe(2 + b.length);
  out.writeUInt16BE(b.length, 0);
  b.copy(out, 2);
  return out;
}

function packet(header: number, body: Buffer): Buffer {
  const out = Buffer.allocUnsafe(1 + varintBytes(body.length) + body.length);
  out[0] = header;
  body.copy(out, writeVarint(out, 1, body.length));
  return out;
}

function encodeConnect(o: LiteClientOptions): Buffer {
  let flags = 0x02; // clean session
  const parts = [utf8Field('MQTT'), Buffer.from([4, 0, 0, 0]), utf8Field(o.clientId)];
  if (o.username !== undefined) { flags |= 0x80; parts.push(utf8Field(o.username)); }
  if (o.password !== undefined) { flags |= 0x40; parts.push(utf8Field(o.password)); }
  const vh = parts[1] as Buffer;
  vh[1] = flags;
  vh.writeUInt16BE(o.keepaliveS ?? 0, 2);
  return packet(0x10, Buffer.concat(parts));
}

const PINGREQ = Buffer.from([0xc0, 0x00]);
const DISCONNECT = Buffer.from([0xe0, 0x00]);

export class LiteClient {
  private socket: Socket | null = null;
  private pending: Buffer | null = null;
  private corked = false;
  private closed = false;
  private onConnack: ((rc: number) => void) | null = null;
  private onSuback: ((codes: number[]) => void) | null = null;
  private pingTimer: NodeJS.Timeout | null = null;
  private nextSubId = 1;

  constructor(private readonly opts: LiteClientOptions, private readonly handlers: LiteClientHandlers = {}) {}

  get isOpen(): boolean {
    return this.socket !== null && !this.closed;
  }

  connect(): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error(`${this.opts.clientId}: no CONNACK within ${this.opts.connectTimeoutMs ?? 10_000} ms`)),
        this.opts.connectTimeoutMs ?? 10_000);
      let settled = false;
      const fail = (e: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.socket?.destroy();
        reject(e);
      };
      const socket = netConnect({ host: this.opts.host, port: this.opts.port, noDelay: true });
      this.socket = socket;
      socket.on('data', (chunk: Buffer) => this.onData(chunk));
      socket.on('error', (e) => { if (!settled) fail(e); else this.closeWith(e); });
      socket.on('close', () => { if (!settled) fail(new Error(`${this.opts.clientId}: connection closed before CONNACK`)); else this.closeWith(null); });
      socket.once('connect', () => socket.write(encodeConnect(this.opts)));
      this.onConnack = (rc) => {
        if (settled) return;
        if (rc !== 0) { fail(new Error(`${this.opts.clientId}: CONNACK return code ${rc}`)); return; }
        settled = true;
        clearTimeout(timer);
        const ka = this.opts.keepaliveS ?? 0;
        if (ka > 0) {
          this.pingTimer = setInterval(() => this.socket?.write(PINGREQ), (ka * 1000) / 2);
          this.pingTimer.unref();
        }
        resolve();
      };
    });
  }

  subscribe(filter: string, qos: 0 | 1): Promise<number[]> {
    const id = this.nextSubId++;
    const idBuf = Buffer.allocUnsafe(2);
    idBuf.writeUInt16BE(id, 0);
    const body = Buffer.concat([idBuf, utf8Field(filter), Buffer.from([qos])]);
    return new Promise((resolve) => {
      this.onSuback = resolve;
      this.socket?.write(packet(0x82, body)); // [MQTT-3.8.1-1]: SUBSCRIBE flags are 0010
    });
  }

  /**
   * One QoS 1 PUBLISH, encoded straight into one buffer. `payload` must be ASCII (written as latin1).
   * Writes made in one turn of the event loop leave in one TCP segment where they fit.
   */
  /** A string payload is written as latin1 (the bench's JSON is ASCII); a Buffer as is. */
  publishQos1(topic: Buffer, packetId: number, payload: string | Buffer): void {
    const socket = this.socket;
    if (socket === null || this.closed) return;
    const remaining = 2 + topic.length + 2 + payload.length;
    const buf = Buffer.allocUnsafe(1 + varintBytes(remaining) + remaining);
    buf[0] = 0x32;
    let off = writeVarint(buf, 1, remaining);
    buf.writeUInt16BE(topic.length, off);
    off += 2;
    off += topic.copy(buf, off);
    buf.writeUInt16BE(packetId, off);
    off += 2;
    if (typeof payload === 'string') buf.write(payload, off, 'latin1');
    else payload.copy(buf, off);
    if (!this.corked) {
      this.corked = true;
      socket.cork();
      process.nextTick(() => { this.corked = false; socket.uncork(); });
    }
    socket.write(buf);
  }

  /** DISCONNECT, then wait for the server to close (at most `timeoutMs`). */
  end(timeoutMs = 2_000): Promise<void> {
    const socket = this.socket;
    if (socket === null || this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const t = setTimeout(() => { socket.destroy(); resolve(); }, timeoutMs);
      socket.once('close', () => { clearTimeout(t); resolve(); });
      this.closed = true; // an expected close: not reported as an error
      socket.end(DISCONNECT);
    });
  }

  destroy(): void {
    this.closed = true;
    this.socket?.destroy();
  }

  private closeWith(error: Error | null): void {
    if (this.pingTimer) clearInterval(this.pingTimer);
    if (this.closed) return;
    this.closed = true;
    this.handlers.onClose?.(error);
  }

  private onData(chunk: Buffer): void {
    const buf = this.pending === null ? chunk : Buffer.concat([this.pending, chunk]);
    let off = 0;
    for (;;) {
      if (buf.length - off < 2) break;
      let len = 0;
      let mul = 1;
      let i = off + 1;
      let complete = false;
      for (let k = 0; k < 4 && i < buf.length; k++) {
        const b = buf[i++] ?? 0;
        len += (b & 127) * mul;
        mul *= 128;
        if ((b & 128) === 0) { complete = true; break; }
      }
      if (!complete || buf.length - i < len) break;
      this.handle(buf[off] ?? 0, buf, i, len);
      off = i + len;
    }
    this.pending = off < buf.length ? buf.subarray(off) : null;
  }

  private handle(header: number, buf: Buffer, start: number, len: number): void {
    switch (header >> 4) {
      case 2: // CONNACK
        this.onConnack?.(buf[start + 1] ?? 255);
        return;
      case 4: // PUBACK
        this.handlers.onPuback?.(buf.readUInt16BE(start));
        return;
      case 3: { // PUBLISH
        const qos = (header >> 1) & 3;
        const topicLen = buf.readUInt16BE(start);
        const topic = buf.toString('utf8', start + 2, start + 2 + topicLen);
        let p = start + 2 + topicLen;
        if (qos > 0) {
          const id = buf.readUInt16BE(p);
          p += 2;
          this.socket?.write(Buffer.from([0x40, 0x02, id >> 8, id & 0xff])); // PUBACK [MQTT-4.3.2-2]
        }
        this.handlers.onPublish?.(topic, buf.subarray(p, start + len));
        return;
      }
      case 9: // SUBACK
        this.onSuback?.([...buf.subarray(start + 2, start + len)]);
        this.onSuback = null;
        return;
      default: // PINGRESP and anything else a 3.1.1 server may send us: nothing to do
        return;
    }
  }
}
