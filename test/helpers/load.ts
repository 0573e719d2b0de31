/** A QoS 1 load that records what the server acknowledged, and the check that all of it was stored once. */
import { expect } from 'chai';
import type { MqttClient } from 'mqtt';
import { query } from './postgres.js';
import { connect } from './server.js';

/** Publishers that keep `window` QoS 1 messages in flight and record what was acknowledged. */
export class Load {
  readonly acked = new Map<string, Set<number>>();
  private readonly clients: MqttClient[] = [];
  private running = true;

  constructor(private readonly port: number, private readonly publishers: number, private readonly window: number, private readonly prefix: string) {}

  topic(i: number): string {
    return `acme/plant2/warehouse/line7/${this.prefix}${i}/seq`;
  }

  async start(): Promise<void> {
    for (let i = 0; i < this.publishers; i++) {
      const topic = this.topic(i);
      const set = new Set<number>();
      this.acked.set(topic, set);
      const c = await connect(this.port, { clientId: `${this.prefix}-${i}`, reconnectPeriod: 0 });
      this.clients.push(c);
      let next = 0;
      const send = (): void => {
        if (!this.running || !c.connected) return;
        const n = next++;
        c.publish(topic, JSON.stringify({ value: n }), { qos: 1 }, (err) => {
          if (!err) set.add(n);
          send();
        });
      };
      for (let w = 0; w < this.window; w++) send();
    }
  }

  stop(): void {
    this.running = false;
    for (const c of this.clients) c.end(true);
  }

  get total(): number {
    let n = 0;
    for (const s of this.acked.values()) n += s.size;
    return n;
  }
}

export async function storedValues(url: string, prefix: string): Promise<Map<string, number[]>> {
  const rows = await query<{ name: string; v: string }>(url,
    `SELECT t.name, s.v_num AS v FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name LIKE $1`,
    [`acme/plant2/warehouse/line7/${prefix}%`]);
  const m = new Map<string, number[]>();
  for (const r of rows) {
    const list = m.get(r.name) ?? [];
    list.push(Number(r.v));
    m.set(r.name, list);
  }
  return m;
}

export function expectAllAckedStoredOnce(load: Load, stored: Map<string, number[]>): void {
  let missing = 0;
  let dupes = 0;
  for (const [topic, acked] of load.acked) {
    const got = stored.get(topic) ?? [];
    const seen = new Set(got);
    dupes += got.length - seen.size;
    for (const n of acked) if (!seen.has(n)) missing++;
  }
  expect(missing, 'acknowledged messages missing from the store').to.equal(0);
  expect(dupes, 'messages stored twice').to.equal(0);
}
