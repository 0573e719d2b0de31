/** State snapshots go with the batch that writes them: one per key and batch, taken when it is written. */
import { expect } from 'chai';
import { materialiseState, type WriteItem } from '../../../../bridge/sinks/store/rows.js';

describe('materialiseState', () => {
  const item = (state?: { key: string; rev: number; value: string | (() => string) }): WriteItem =>
    ({ samples: [], topics: [], receivedAt: 0, ...(state ? { state } : {}) });

  it('takes each key\'s snapshot once, for its newest rev, and drops the older rows of the batch', () => {
    let taken = 0;
    const snap = (v: string) => () => { taken++; return v; };
    const out = materialiseState([
      item({ key: 'sparkplug', rev: 1, value: snap('one') }), item(), item({ key: 'sparkplug', rev: 3, value: snap('three') }),
      item({ key: 'other', rev: 2, value: 'fixed' }), item({ key: 'sparkplug', rev: 2, value: snap('two') }),
    ]);
    expect(out.map((i) => i.state ?? null)).to.deep.equal([
      null, null, { key: 'sparkplug', rev: 3, value: 'three' }, { key: 'other', rev: 2, value: 'fixed' }, null,
    ]);
    expect(taken, 'one snapshot for three births').to.equal(1);
    expect(out.every((i) => typeof i.state?.value !== 'function'), 'plain data, ready for the spool').to.equal(true);
  });

  it('leaves a batch without state untouched (the same array)', () => {
    const items = [item(), item()];
    expect(materialiseState(items)).to.equal(items);
  });
});
