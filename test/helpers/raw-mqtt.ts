/**
 * A bare MQTT 3.1.1 client over a raw TCP socket, for sending what a real client library would refuse to:
 * malformed frames, oversized headers, ill-formed topic bytes, QoS 2 floods. Well-formed packets are built
 * with mqtt-packet's `generate`; the rest by hand. Replies are parsed and queued per packet type.
 */
import { connect as netConnect, type Socket } from 'node:net';
import mqttPacket, { type Packet, type IConnackPacket } from 'mqtt-packet';

export type { Packet };

/** Remaining Length as the variable byte integer of [MQTT-2.2.3]. */
export function remainingLength(n: number): Buffer {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return Buffer.from(out);
}

/** A PUBLISH whose topic is given as raw bytes, so it may be anything, including ill-formed UTF-8. */
export function publishBytes(topic: Buffer | string, payload: Buffer | string, opts: { qos?: 0 | 1 | 2; messageId?: number; dup?: boolean } = {}): Buffer {
  const qos = opts.qos ?? 1;
  const t = typeof topic === 'string' ? Buffer.from(topic, 'utf8') : topic;
  const p = typeof payload === 'string' ? Buffer.from(payload, 'utf8') : payload;
  const len = Buffer.alloc(2);
  len.writeUInt16BE(t.length);
  const id = Buffer.alloc(qos > 0 ? 2 : 0);
  if (qos > 0) id.writeUInt16BE(opts.messageId ?? 1);
  const body = Buffer.concat([len, t, id, p]);
  const first = 0x30 | (opts.dup ? 0x08 : 0) | (qos << 1);
  return Buffer.concat([Buffer.from([first]), remainingLength(body.length), body]);
}

/** An MQTT 3.1.1 CONNECT, built by hand: mqtt-packet refuses to generate some of the ones tests need. */
export function connectBytes(opts: ConnectOptions = {}): Buffer {
  const str = (v: string): Buffer => {
    const b = Buffer.from(v, 'utf8');
    const len = Buffer.alloc(2);
    len.writeUInt16BE(b.length);
    return Buffer.concat([len, b]);
  };
  let flags = opts.clean ?? true ? 0x02 : 0x00;
  if (opts.username !== undefined) flags |= 0x80;
  if (opts.password !== undefined) flags |= 0x40;
  const keepalive = Buffer.alloc(2);
  keepalive.writeUInt16BE(opts.keepalive ?? 0);
  const body = Buffer.concat([
    str('MQTT'), Buffer.from([4, flags]), keepalive, str(opts.clientId ?? ''),
    ...(opts.username !== undefined ? [str(opts.username)] : []),
    ...(opts.password !== undefined ? [str(opts.password)] : []),
  ]);
  return Buffer.concat([Buffer.from([0x10]), remainingLength(body.length), body]);
}

export interface ConnectOptions {
  clientId?: string;
  clean?: boolean;
  username?: string;
  password?: string;
  keepalive?: number;
}

export class RawClient {
  /** Every packet received, in order. */
  readonly received: Packet[] = [];
  /** Resolves with the time (ms since the socket opened) at which the connection closed. */
  readonly closed: Promise<number>;
  isClosed = false;
  private readonly openedAt = Date.now();
  private readonly waiters: Array<{ cmd: string; res: (p: Packet) => void }> = [];
  private readonly unclaimed: Packet[] = [];

  private constructor(readonly socket: Socket) {
    const parser = mqttPacket.parser({ protocolVersion: 4 });
    parser.on('packet', (p: Packet) => {
      this.received.push(p);
      const i = this.waiters.findIndex((w) => w.cmd === p.cmd);
      if (i >= 0) this.waiters.splice(i, 1)[0]!.res(p);
      else this.unclaimed.push(p);
    });
    parser.on('error', () => socket.destroy());
    socket.on('data', (b: Buffer) => parser.parse(b));
    socket.on('error', () => undefined);
    this.closed = new Promise((res) => socket.once('close', () => { this.isClosed = true; res(Date.now() - this.openedAt); }));
  }

  static open(port: number, host = '127.0.0.1'): Promise<RawClient> {
    return new Promise((res, rej) => {
      const s = netConnect({ port, host, noDelay: true });
      s.once('connect', () => { s.off('error', rej); res(new RawClient(s)); });
      s.once('error', rej);
    });
  }

  /** Opens a socket, sends CONNECT and waits for the CONNACK (or the close that replaces it). */
  static async connect(port: number, opts: ConnectOptions = {}): Promise<{ client: RawClient; returnCode: number | null }> {
    const client = await RawClient.open(port);
    client.write(connectBytes(opts));
    const connack = await client.next('connack', 3_000);
    return { client, returnCode: connack ? ((connack as IConnackPacket).returnCode ?? null) : null };
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  send(packet: Packet): void {
    this.socket.write(mqttPacket.generate(packet));
  }

  /** The next packet of this type (one already received counts), or null on close or timeout. */
  next(cmd: Packet['cmd'], timeoutMs = 2_000): Promise<Packet | null> {
    const i = this.unclaimed.findIndex((p) => p.cmd === cmd);
    if (i >= 0) return Promise.resolve(this.unclaimed.splice(i, 1)[0]!);
    return new Promise((res) => {
      const w = { cmd, res: (p: Packet | null) => { clearTimeout(timer); res(p); } };
      const timer = setTimeout(() => { this.drop(w); res(null); }, timeoutMs);
      this.waiters.push(w);
      void this.closed.then(() => { this.drop(w); w.res(null); });
    });
  }

  count(cmd: Packet['cmd']): number {
    return this.received.filter((p) => p.cmd === cmd).length;
  }

  /** True if the server closes the connection within `ms`. */
  async closesWithin(ms: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((res) => { timer = setTimeout(() => res(false), ms); });
    const r = await Promise.race([this.closed.then(() => true as const), timeout]);
    clearTimeout(timer);
    return r;
  }

  destroy(): void {
    this.socket.destroy();
  }

  private drop(w: { cmd: string }): void {
    const i = this.waiters.indexOf(w as (typeof this.waiters)[number]);
    if (i >= 0) this.waiters.splice(i, 1);
  }
}
