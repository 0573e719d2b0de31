import { expect } from 'chai';
import { SerialDrainer, type DrainerTimers } from '../../../../bridge/sinks/webhooks/serial-drainer.js';

/** Timers that fire only when the test says so. */
class ManualTimers implements DrainerTimers {
  readonly pending: Array<{ fn: () => void; ms: number }> = [];
  setTimeout(fn: () => void, ms: number): unknown { const t = { fn, ms }; this.pending.push(t); return t; }
  clearTimeout(h: unknown): void { const i = this.pending.indexOf(h as { fn: () => void; ms: number }); if (i >= 0) this.pending.splice(i, 1); }
  async fire(): Promise<number> {
    const t = this.pending.shift();
    if (!t) return -1;
    t.fn();
    for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
    return t.ms;
  }
}

const sqlError = (code: string): Error => Object.assign(new Error(code), { code });

describe('serial drainer', () => {
  let timers: ManualTimers;
  let written: number[][];
  let failNext: Error[];
  let dropped: number[][];
  let live: boolean;
  let d: SerialDrainer<number>;

  beforeEach(() => {
    timers = new ManualTimers();
    written = []; failNext = []; dropped = []; live = true;
    d = new SerialDrainer<number>({
      chunk: 2, retryMs: 1_000, timers, live: () => live,
      write: async (rows) => { const e = failNext.shift(); if (e) throw e; written.push([...rows]); },
      dropped: (rows) => { dropped.push([...rows]); },
      failed: () => undefined,
    });
  });

  it('writes in chunks, one at a time, in queue order', async () => {
    for (const n of [1, 2, 3, 4, 5]) d.push(n);
    expect(await timers.fire()).to.equal(0);
    expect(written).to.deep.equal([[1, 2], [3, 4], [5]]);
    expect(timers.pending).to.have.length(0);
  });

  it('drops a chunk the database refuses as data and goes on with the rest', async () => {
    for (const n of [1, 2, 3]) d.push(n);
    failNext = [sqlError('22P02')];
    await timers.fire();
    expect(dropped).to.deep.equal([[1, 2]]);
    expect(written).to.deep.equal([[3]]);
  });

  it('keeps a chunk that could not be written at the head and retries it after retryMs', async () => {
    for (const n of [1, 2, 3]) d.push(n);
    failNext = [sqlError('08006')];
    await timers.fire();
    expect(written).to.deep.equal([]);
    expect(d.items).to.deep.equal([1, 2, 3]);
    expect(await timers.fire()).to.equal(1_000);
    expect(written).to.deep.equal([[1, 2], [3]]);
  });

  it('retries nothing once its owner has stopped', async () => {
    d.push(1);
    failNext = [sqlError('08006')];
    live = false;
    await timers.fire();
    expect(timers.pending).to.have.length(0);
    expect(d.items).to.deep.equal([1]);
  });

  it('flushNow writes what is queued without waiting for the timer', async () => {
    d.push(1);
    d.push(2);
    await d.flushNow();
    expect(written).to.deep.equal([[1, 2]]);
    expect(timers.pending).to.have.length(0);
  });
});
