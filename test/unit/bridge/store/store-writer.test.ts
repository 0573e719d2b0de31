import { expect } from 'chai';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { StoreWriter, type Timers, type WriteResult, type WriterStore } from '../../../../bridge/sinks/store/store-writer.js';
import { Spool, realSpoolFs } from '../../../../bridge/sinks/store/spool.js';
import type { IsolatedWrite, WriteOutcome } from '../../../../bridge/sinks/store/pg-store.js';
import type { WriteBatch, WriteItem } from '../../../../bridge/sinks/store/rows.js';
import { silentLogger } from '../../../../src/core/log.js';

const item = (n: number, json: string | null = null): WriteItem => ({
  samples: [{ topic: `acme/a/b/c/m/v${n}`, time: 1_700_000_000_000 + n, num: json === null ? n : null, text: null, bool: null, json, bytes: null, quality: null, src: null }],
  topics: [{ name: `acme/a/b/c/m/v${n}`, levels: null, route: 'r', unit: null }],
  receivedAt: 1_700_000_000_000 + n,
});
const POISON = '"\\ud800"';
const sqlError = (code: string): Error => Object.assign(new Error(`sqlstate ${code}`), { code });

/** A store that keeps rows in memory and fails the way it is told to; poison items fail as row data (22P05). */
class FakeStore implements WriterStore {
  readonly rows: number[] = [];
  readonly rejected: number[] = [];
  readonly applied = new Set<string>();
  failWith: Error | null = null;
  /** Errors thrown by the next writes, one each, before failWith applies. */
  failNext: Error[] = [];
  writes = 0;

  private check(): void {
    const once = this.failNext.shift();
    if (once) throw once;
    if (this.failWith) throw this.failWith;
  }

  /** The items of segments not applied before (all items when the batch is not a replay); marks them applied. */
  private fresh(batch: WriteBatch): readonly WriteItem[] {
    const segs = batch.segments;
    if (segs === undefined) return batch.items;
    const isNew = segs.map((s) => !this.applied.has(s));
    for (const s of segs) this.applied.add(s);
    return batch.items.filter((_, i) => isNew[batch.itemSegments?.[i] ?? 0]);
  }

  async writeBatch(batch: WriteBatch): Promise<WriteOutcome> {
    this.writes++;
    await Promise.resolve();
    this.check();
    if (batch.items.some((i) => i.samples[0]?.json === POISON)) throw sqlError('22P05');
    const items = this.fresh(batch);
    if (items.length === 0 && batch.segments !== undefined) return 'already-applied';
    for (const i of items) this.rows.push(i.samples[0]?.num as number);
    return 'committed';
  }

  async writeIsolated(batch: WriteBatch): Promise<IsolatedWrite> {
    this.writes++;
    await Promise.resolve();
    this.check();
    const items = this.fresh(batch);
    if (items.length === 0 && batch.segments !== undefined) return { outcome: 'already-applied', refused: [] };
    const refused: Array<{ index: number; item: WriteItem; error: Error }> = [];
    items.forEach((i, index) => {
      if (i.samples[0]?.json === POISON) { refused.push({ index, item: i, error: sqlError('22P05') }); this.rejected.push(i.receivedAt); }
      else this.rows.push(i.samples[0]?.num as number);
    });
    return { outcome: 'committed', refused };
  }

  async probeWrite(): Promise<void> {
    await Promise.resolve();
    this.check();
  }
}

/** Timers that run only when the test moves the clock. */
class FakeTimers implements Timers {
  private t = 0;
  private seq = 0;
  private readonly pending = new Map<number, { at: number; fn: () => void }>();
  now(): number { return this.t; }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.seq;
    this.pending.set(id, { at: this.t + ms, fn });
    return id;
  }
  clearTimeout(h: unknown): void { this.pending.delete(h as number); }
  get count(): number { return this.pending.size; }
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      const due = [...this.pending.entries()].filter(([, p]) => p.at <= end).sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      this.pending.delete(due[0]);
      this.t = Math.max(this.t, due[1].at);
      due[1].fn();
      await settle();
    }
    this.t = end;
    await settle();
  }
}

/** Lets every promise chain that is ready run to its end (no timers involved). */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
}

describe('store writer', () => {
  let dir: string;
  let store: FakeStore;
  let timers: FakeTimers;
  let spool: Spool;
  let writer: StoreWriter;
  let results: Map<number, WriteResult>;

  const make = (spoolMax = 1 << 20, opts: { healthIntervalMs?: number } = {}): void => {
    spool = new Spool(dir, spoolMax, realSpoolFs);
    writer = new StoreWriter(store, spool, {
      batchMaxItems: 4, batchMaxDelayMs: 5, maxConcurrentFlushes: 2, highWaterItems: 8, lowWaterItems: 4, probeIntervalMs: 100,
      healthIntervalMs: opts.healthIntervalMs ?? 0, log: silentLogger(), timers,
    });
  };
  const submit = (n: number, json: string | null = null): void => writer.submit(item(n, json), (r) => { results.set(n, r); });

  beforeEach(() => {
    dir = fs.mkdtempSync(join(tmpdir(), 'uns-writer-'));
    store = new FakeStore();
    timers = new FakeTimers();
    results = new Map();
  });
  afterEach(async () => {
    await writer.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('answers durable once the batch is committed, not before', async () => {
    make();
    store.failWith = null;
    submit(1); submit(2);
    expect(results.size).to.equal(0);
    await timers.advance(5);
    expect(results.get(1)).to.deep.equal({});
    expect(store.rows).to.deep.equal([1, 2]);
    expect(writer.stats.committedItems).to.equal(2);
  });

  it('runs a batch that lost a deadlock again instead of calling it an outage', async () => {
    make();
    store.failNext = [sqlError('40P01'), sqlError('40001')];
    submit(1); submit(2); submit(3); submit(4);
    await settle();
    expect(store.rows).to.deep.equal([1, 2, 3, 4]);
    expect(writer.state).to.equal('healthy');
    expect(spool.segments).to.equal(0);
    expect(store.writes).to.equal(3);
  });

  it('sets a row the database refuses aside as a rejection and commits the rows beside it', async () => {
    make();
    submit(1); submit(2, POISON); submit(3); submit(4);
    await settle();
    expect(store.rows).to.deep.equal([1, 3, 4]);
    expect(results.get(2)?.refused?.reason).to.match(/^22P05/);
    expect(results.get(1)).to.deep.equal({});
    expect(writer.stats.storeRejected).to.equal(1);
    expect(writer.state).to.equal('healthy');
    expect(spool.segments).to.equal(0);
  });

  it('treats a revoked privilege as an outage: spools (durable), reports it, probes, and replays once writes work again', async () => {
    make();
    store.failWith = sqlError('42501');
    submit(1); submit(2); submit(3); submit(4);
    await settle();
    expect(writer.state).to.equal('degraded');
    expect(writer.stats.outage).to.include({ class: 'permanent' });
    expect(writer.stats.outage?.reason).to.match(/^42501/);
    expect(results.size).to.equal(4);
    for (const r of results.values()) expect(r).to.deep.equal({});
    expect(store.rows).to.deep.equal([]);
    expect(spool.segments).to.equal(1);
    await timers.advance(350); // probes keep failing while the privilege is missing
    expect(writer.state).to.equal('degraded');
    store.failWith = null;
    await timers.advance(100);
    expect(writer.state).to.equal('healthy');
    expect(store.rows).to.deep.equal([1, 2, 3, 4]);
    expect(spool.segments).to.equal(0);
    expect(writer.stats.replay).to.equal(null);
  });

  it('holds acknowledgements when the spool is full, without spinning, and resumes when the database returns', async () => {
    make(1024);
    store.failWith = sqlError('08006');
    for (let i = 1; i <= 12; i++) submit(i);
    await settle();
    const acked = results.size;
    expect(acked).to.be.lessThan(12);
    expect(writer.stats.holding).to.include({ failure: 'limit' });
    expect(writer.aboveHighWater() || writer.queued > 0).to.equal(true);
    const writes = store.writes;
    await settle();
    expect(store.writes).to.equal(writes); // no busy loop: nothing is retried until the timer says so
    for (let i = acked + 1; i <= 12; i++) expect(results.has(i)).to.equal(false);
    await timers.advance(1_000); // still down, still full: still held, retried once per interval
    expect(results.size).to.equal(acked);
    store.failWith = null;
    await timers.advance(200);
    expect(results.size).to.equal(12);
    for (const r of results.values()) expect(r.error).to.equal(undefined);
    expect([...store.rows].sort((a, b) => a - b)).to.deep.equal([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    expect(writer.stats.holding).to.equal(null);
  });

  it('answers "not durable" on close for what neither the database nor the spool could take', async () => {
    make(1024);
    store.failWith = sqlError('08006');
    for (let i = 1; i <= 12; i++) submit(i);
    await settle();
    expect(writer.stats.holding).to.not.equal(null);
    await writer.close();
    expect(results.size).to.equal(12);
    const failed = [...results.values()].filter((r) => r.error !== undefined).length;
    expect(failed).to.be.greaterThan(0);
    expect(spool.segments + failed / 4).to.be.greaterThan(0);
  });

  it('replays a spooled segment holding a poison row: the good rows are stored, the poison row kept as a rejection', async () => {
    make();
    store.failWith = sqlError('08006');
    submit(1); submit(2, POISON); submit(3); submit(4);
    await settle();
    expect(spool.segments).to.equal(1);
    store.failWith = null;
    await timers.advance(100);
    expect(store.rows).to.deep.equal([1, 3, 4]);
    expect(store.rejected).to.have.length(1);
    expect(spool.segments).to.equal(0);
    expect(writer.stats.storeRejected).to.equal(1);
  });

  it('replays a segment at most once (its marker commits with it)', async () => {
    make();
    store.failWith = sqlError('08006');
    submit(1); submit(2); submit(3); submit(4);
    await settle();
    const [name] = spool.list();
    store.applied.add(name as string); // applied by an earlier run that died before removing the file
    store.failWith = null;
    await timers.advance(100);
    expect(store.rows).to.deep.equal([]);
    expect(spool.segments).to.equal(0);
  });

  it('replays several segments in one transaction, skipping those applied before', async () => {
    make();
    store.failWith = sqlError('08006');
    for (let i = 1; i <= 4; i++) {
      submit(i);
      await timers.advance(50); // while spooling a partial batch waits up to 50 ms: one segment each
    }
    expect(spool.segments).to.equal(4);
    const names = spool.list();
    store.applied.add(names[1] as string);
    store.failWith = null;
    const before = store.writes;
    await timers.advance(100);
    expect(store.rows).to.deep.equal([1, 3, 4]);
    expect(store.writes - before).to.equal(1);
    expect(spool.segments).to.equal(0);
    expect(writer.stats.replayedSegments).to.equal(4);
  });

  it('moves a segment that does not read back whole aside and replays the rest', async () => {
    make();
    store.failWith = sqlError('08006');
    submit(1); submit(2); submit(3); submit(4);
    await settle();
    submit(5); submit(6); submit(7); submit(8);
    await settle();
    const [first] = spool.list();
    fs.truncateSync(join(dir, first as string), 10);
    store.failWith = null;
    await timers.advance(100);
    expect(store.rows).to.deep.equal([5, 6, 7, 8]);
    expect(writer.stats.corruptSegments).to.equal(1);
    expect(fs.readdirSync(join(dir, 'corrupt'))).to.deep.equal([first]);
  });

  it('notices a lost database with no traffic, through the periodic write probe', async () => {
    make(1 << 20, { healthIntervalMs: 500 });
    writer.start();
    await timers.advance(1_000);
    expect(writer.state).to.equal('healthy');
    store.failWith = sqlError('57P01');
    await timers.advance(500);
    expect(writer.state).to.equal('degraded');
    expect(writer.stats.outage).to.include({ class: 'transient' });
  });
});
