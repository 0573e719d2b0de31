/**
 * Sparkplug B traffic of one bench edge node: `bench-node-<i>` in group `bench`, with `devices` devices of
 * `metrics` Double metrics each, as gateways send it: NBIRTH (bdSeq and the node's metrics), one DBIRTH per
 * device (names, aliases, datatypes), then DDATA with every metric by alias only.
 *
 * DDATA bodies are encoded once per device (a few value variants); the payload timestamp and seq are
 * appended per message as protobuf fields 1 and 3 (the last occurrence of a scalar field wins), so the
 * generator spends its time sending, not encoding.
 */
import sparkplugPayload from 'sparkplug-payload';
import type { UMetric } from 'sparkplug-payload/lib/sparkplugbpayload.js';

const codec = sparkplugPayload.get('spBv1.0');
const VARIANTS = 4;

function encode(p: Parameters<NonNullable<typeof codec>['encodePayload']>[0]): Buffer {
  if (codec === null) throw new Error('sparkplug-payload lacks spBv1.0');
  return Buffer.from(codec.encodePayload(p));
}

/** Protobuf varint of a non-negative integer below 2^53. */
function varint(n: number): number[] {
  const out: number[] = [];
  let v = n;
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
  return out;
}

export class EdgeFrames {
  readonly node: string;
  /** Births in order: NBIRTH then one DBIRTH per device. */
  readonly births: ReadonlyArray<{ readonly topic: Buffer; readonly payload: Buffer }>;
  private readonly dataTopics: Buffer[];
  private readonly bodies: Buffer[][];
  private seq = 0;
  private nextDevice = 0;
  /** Per device, the last timestamp sent: a device's readings each have their own instant, as real ones do. */
  private readonly lastTs: number[];
  private variant = 0;

  constructor(index: number, devices: number, metrics: number) {
    this.node = `bench-node-${index}`;
    const now = Date.now();
    const names = Array.from({ length: metrics }, (_, m) => `Tag/m${m}`);
    const births: Array<{ topic: Buffer; payload: Buffer }> = [];
    births.push({
      topic: Buffer.from(`spBv1.0/bench/NBIRTH/${this.node}`),
      payload: encode({ timestamp: now, seq: this.seq++, metrics: [
        { name: 'bdSeq', type: 'UInt64', value: 0 },
        ...names.map((name, m): UMetric => ({ name: `Node/${name}`, type: 'Double', value: m })),
      ] }),
    });
    this.dataTopics = [];
    this.bodies = [];
    for (let d = 0; d < devices; d++) {
      const device = `dev${d}`;
      births.push({
        topic: Buffer.from(`spBv1.0/bench/DBIRTH/${this.node}/${device}`),
        payload: encode({ timestamp: now, seq: this.seq++, metrics: names.map((name, m): UMetric => ({ name, alias: m + 1, type: 'Double', value: m })) }),
      });
      this.dataTopics.push(Buffer.from(`spBv1.0/bench/DDATA/${this.node}/${device}`));
      this.bodies.push(Array.from({ length: VARIANTS }, (_, v) => encode({
        metrics: names.map((_n, m): UMetric => ({ alias: m + 1, type: 'Double', value: 20 + ((index + d + m + v) % 50) + v * 0.25 }) as UMetric),
      })));
    }
    this.births = births;
    this.lastTs = new Array<number>(devices).fill(0);
  }

  /** The next DDATA: its topic and payload (device after device, seq 0..255 wrapping, timestamp now or just after the device's last). */
  next(now: number): { topic: Buffer; payload: Buffer } {
    const d = this.nextDevice;
    this.nextDevice = d + 1 === this.dataTopics.length ? 0 : d + 1;
    if (d === 0) this.variant = (this.variant + 1) % VARIANTS;
    const body = (this.bodies[d] as Buffer[])[this.variant] as Buffer;
    const seq = this.seq;
    this.seq = (seq + 1) & 0xff;
    // A window's worth of sends can leave in one millisecond: each DDATA of a device gets a later instant
    // (the store identifies a sample by metric and timestamp; one instant twice would be one reading).
    const ts = Math.max(Math.floor(now), (this.lastTs[d] as number) + 1);
    this.lastTs[d] = ts;
    const tail = [0x08, ...varint(ts), 0x18, ...varint(seq)];
    const out = Buffer.allocUnsafe(body.length + tail.length);
    body.copy(out, 0);
    for (let i = 0; i < tail.length; i++) out[body.length + i] = tail[i] as number;
    return { topic: this.dataTopics[d] as Buffer, payload: out };
  }
}
