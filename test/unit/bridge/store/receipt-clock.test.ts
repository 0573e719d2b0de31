import { expect } from 'chai';
import { ReceiptClock } from '../../../../bridge/sinks/store/to-rows.js';

describe('ReceiptClock - samples timed at receipt never share an identity', () => {
  it('keeps a source time as it is, however often it comes', () => {
    const c = new ReceiptClock();
    expect([c.time('a', 500, 1000), c.time('a', 500, 1000), c.time('a', 500, 1001)]).to.deep.equal([500, 500, 500]);
  });

  it('steps a topic by whole microseconds within one receive millisecond, other topics untouched', () => {
    const c = new ReceiptClock();
    const a = Array.from({ length: 1500 }, () => c.time('a', 1_796_000_000_000, 1_796_000_000_000));
    expect(c.time('b', 1_796_000_000_000, 1_796_000_000_000)).to.equal(1_796_000_000_000);
    const us = a.map((t) => Math.round(t * 1000));
    // Exactly one microsecond apart, even past the millisecond (no drift from repeated additions).
    expect(us.every((u, i) => u === 1_796_000_000_000_000 + i)).to.equal(true);
    // The next millisecond starts after the last step taken, so it cannot meet it.
    const next = c.time('a', 1_796_000_000_001, 1_796_000_000_001);
    expect(Math.round(next * 1000)).to.equal(1_796_000_000_001_500);
  });

  it('forgets topics once the receive time has passed every time handed out', () => {
    const c = new ReceiptClock();
    c.time('a', 1000, 1000);
    c.time('a', 1000, 1000);
    expect(c.time('a', 1002, 1002)).to.equal(1002);
    expect(c.time('b', 1002, 1002)).to.equal(1002);
  });
});
