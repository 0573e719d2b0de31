import { expect } from 'chai';
import type { IngestOutcome } from '../../../../src/core/ingest.js';
import type { InboundRecord, UnsMessage } from '../../../../src/core/message.js';
import type { RouteSpec } from '../../../../src/core/topics.js';
import { StoreSink } from '../../../../bridge/sinks/store/store-sink.js';
import type { StoreWriter, WriteResult } from '../../../../bridge/sinks/store/store-writer.js';
import type { WriteItem } from '../../../../bridge/sinks/store/rows.js';

/** A writer that keeps what it is given and says "durable" when the test does. */
class FakeWriter {
  readonly items: WriteItem[] = [];
  private readonly pending: Array<(r: WriteResult) => void> = [];
  submit(item: WriteItem, done?: (r: WriteResult) => void): void {
    this.items.push(item);
    if (done) this.pending.push(done);
  }
  aboveHighWater(): boolean { return false; }
  whenBelowLowWater(cb: () => void): void { cb(); }
  settle(r: WriteResult = {}): void {
    for (const d of this.pending.splice(0)) d(r);
  }
}

const ROUTE: RouteSpec = { name: 'r', filter: 'acme/#', encoding: 'number', store: true, isa95: false };
const T0 = 1_700_000_000_000;

function record(over: { connection?: number; dup?: boolean; maybeResend?: boolean; packetId?: number; payload?: string; at?: number; qos?: 0 | 1 } = {}): InboundRecord {
  return {
    topic: 'acme/a/v', payload: Buffer.from(over.payload ?? '5'), receivedAt: over.at ?? T0,
    source: { protocol: 'mqtt', clientId: 'dev', qos: over.qos ?? 1, retain: false, dup: over.dup ?? false, packetId: over.packetId ?? 7,
      connection: over.connection ?? 1, maybeResend: over.maybeResend ?? false },
  };
}
function message(r: InboundRecord, value = Number(r.payload.toString())): UnsMessage {
  return { id: 'm', topic: r.topic, path: null, encoding: 'number', route: 'r', points: [{ topic: r.topic, value, timestamp: r.receivedAt, quality: 'good' }],
    source: r.source, receivedAt: r.receivedAt, store: true };
}

describe('store sink', () => {
  let writer: FakeWriter;
  let sink: StoreSink;
  let answers: IngestOutcome[];
  let durable: number;
  const write = (r: InboundRecord, route: RouteSpec = ROUTE): string =>
    sink.write(message(r), route, undefined, r, (o) => answers.push(o));

  beforeEach(() => {
    writer = new FakeWriter();
    sink = new StoreSink({ writer: writer as unknown as StoreWriter, dupWindowMs: 600_000, resendLagMs: 1_000, stateSnapshot: () => null, onDurable: () => { durable++; } });
    answers = [];
    durable = 0;
  });

  it('answers a QoS 1 publish, and tells the durable sinks, only once the writer says durable', () => {
    expect(write(record())).to.equal('written');
    expect(answers).to.deep.equal([]);
    expect(durable).to.equal(0);
    writer.settle();
    expect(answers).to.deep.equal([{}]);
    expect(durable).to.equal(1);
  });

  it('answers QoS 0 at once, while the durable sinks still wait for the write', () => {
    write(record({ qos: 0 }));
    expect(answers).to.deep.equal([{}]);
    expect(durable).to.equal(0);
    writer.settle();
    expect(durable).to.equal(1);
  });

  it('takes the same key from a later connection, right after the first ended, for a re-send: answered with its original, written once', () => {
    write(record({ connection: 1 }));
    sink.connectionClosed(1, T0 + 10);
    expect(write(record({ connection: 2, at: T0 + 500 }))).to.equal('duplicate');
    expect(writer.items).to.have.length(1);
    expect(answers).to.deep.equal([]); // the original is not durable yet: neither is answered
    writer.settle();
    expect(answers).to.deep.equal([{}, {}]);
    expect(durable).to.equal(1);
    expect(sink.stats.duplicatesDropped).to.equal(1);
  });

  it('takes a DUP copy on the same connection for a re-send [MQTT-3.3.1-1]', () => {
    write(record());
    writer.settle();
    expect(write(record({ dup: true, at: T0 + 100 }))).to.equal('duplicate');
    expect(answers).to.deep.equal([{}, {}]);
    expect(writer.items).to.have.length(1);
  });

  it('writes the same key on the same connection without DUP again (the PUBACK freed the packet id), marked as reused', () => {
    write(record());
    writer.settle();
    expect(write(record({ at: T0 + 100 }))).to.equal('written');
    expect(writer.items).to.have.length(2);
    expect(writer.items[1]?.keyReused).to.equal(true);
    expect(writer.items[0]?.keyReused).to.equal(undefined);
  });

  it('writes the same key from a later connection when the original came long before its connection ended (a rebooted device)', () => {
    write(record({ connection: 1 }));
    writer.settle();
    sink.connectionClosed(1, T0 + 60_000);
    expect(write(record({ connection: 2, at: T0 + 61_000 }))).to.equal('written');
    expect(writer.items).to.have.length(2);
  });

  it('forgets the oldest keys beyond its bound, but never a key remembered again since', () => {
    sink = new StoreSink({ writer: writer as unknown as StoreWriter, dupWindowMs: 600_000, resendLagMs: 1_000, recentKeys: 3, stateSnapshot: () => null, onDurable: () => { durable++; } });
    write(record({ packetId: 1 }));
    write(record({ packetId: 2 }));
    write(record({ packetId: 1, at: T0 + 1 })); // key 1 again (reused id): its newer entry takes a new slot
    write(record({ packetId: 3 })); // the ring wraps: key 1's first slot goes, its newer entry stays
    write(record({ packetId: 4 })); // key 2's slot goes
    writer.settle();
    sink.connectionClosed(1, T0 + 10);
    expect(write(record({ packetId: 1, connection: 2, at: T0 + 20 }))).to.equal('duplicate');
    expect(write(record({ packetId: 2, connection: 2, at: T0 + 20 }))).to.equal('written');
  });

  it('marks a possible re-send it does not remember, for the store to check against what it has', () => {
    write(record({ maybeResend: true }));
    expect(writer.items[0]?.resendCheck).to.equal(true);
  });

  it('answers a row the database refused with UNS_ERR_STORE_REJECTED and keeps it from the durable sinks', () => {
    write(record());
    writer.settle({ refused: { reason: '22P02 invalid input' } });
    expect(answers[0]?.rejection?.code).to.equal('UNS_ERR_STORE_REJECTED');
    expect(durable).to.equal(0);
    expect(sink.stats.storeRejected).to.equal(1);
  });

  it('answers "not durable" and forgets the key, so the client\'s next copy is stored', () => {
    write(record());
    writer.settle({ error: new Error('down') });
    expect(answers[0]?.error?.message).to.equal('down');
    expect(write(record({ connection: 2, at: T0 + 10 }))).to.equal('written');
    expect(writer.items).to.have.length(2);
  });

  it("stores a route's numeric points only when they move by its deadband", () => {
    const route: RouteSpec = { ...ROUTE, deadband: 1 };
    for (const [i, v] of ['10', '10.5', '11.2', '11'].entries()) write(record({ packetId: i + 1, payload: v }), route);
    expect(writer.items.filter((i) => i.samples.length > 0).map((i) => i.samples[0]?.num)).to.deep.equal([10, 11.2]);
    expect(sink.stats.deadbandSkipped).to.equal(2);
  });
});
