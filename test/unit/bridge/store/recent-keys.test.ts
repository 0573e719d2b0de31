import { expect } from 'chai';
import { RecentKeys } from '../../../../bridge/sinks/store/recent-keys.js';

/** A deterministic stream of 53-bit keys (xorshift), so a failure is reproducible. */
function keyStream(seed: number): () => number {
  let x = seed >>> 0 || 1;
  const next32 = (): number => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x; };
  return () => (next32() >>> 11) * 0x1_0000_0000 + next32();
}

describe('RecentKeys', () => {
  it('finds what it holds, with its connection, time and durability', () => {
    const r = new RecentKeys(4);
    const a = r.add(2 ** 53 - 1, 7, 1000);
    const b = r.add(0, 8, 2000);
    expect(r.find(2 ** 53 - 1)).to.equal(a);
    expect(r.find(0)).to.equal(b);
    expect(r.find(12345)).to.equal(-1);
    expect([r.connectionOf(a), r.arrivedAt(a), r.isDurable(a)]).to.deep.equal([7, 1000, false]);
    r.markDurable(a);
    expect(r.isDurable(a)).to.equal(true);
    expect(r.isDurable(b)).to.equal(false);
  });

  it('forgets the oldest key when full, and a slot reused is no longer its old generation', () => {
    const r = new RecentKeys(3);
    const s1 = r.add(11, 1, 1);
    const g1 = r.generationOf(s1);
    r.add(22, 1, 2);
    r.add(33, 1, 3);
    r.add(44, 1, 4);
    expect(r.find(11)).to.equal(-1);
    expect([r.find(22), r.find(33), r.find(44)].every((s) => s >= 0)).to.equal(true);
    expect(r.holds(s1, g1)).to.equal(false);
    expect(r.size).to.equal(3);
  });

  it('a key added again is held once, at its newer slot', () => {
    const r = new RecentKeys(8);
    const first = r.add(5, 1, 1);
    const again = r.add(5, 2, 2);
    expect(r.find(5)).to.equal(again);
    expect(again).to.not.equal(first);
    expect(r.connectionOf(r.find(5))).to.equal(2);
    expect(r.size).to.equal(1);
  });

  it('forget frees a key and keeps every other key findable (collisions in one run)', () => {
    const r = new RecentKeys(64);
    const keys = Array.from({ length: 64 }, (_, i) => i * 1_000_003);
    const slots = keys.map((k) => r.add(k, 1, 1));
    for (let i = 0; i < keys.length; i += 3) r.forget(slots[i] as number);
    keys.forEach((k, i) => { expect(r.find(k), `key ${k}`).to.equal(i % 3 === 0 ? -1 : slots[i]); });
    r.forget(slots[0] as number); // twice: no effect
    expect(r.size).to.equal(keys.length - Math.ceil(keys.length / 3));
  });

  it('agrees with a Map model over 200,000 random operations', () => {
    const cap = 1000;
    const r = new RecentKeys(cap);
    const next = keyStream(42);
    const model = new Map<number, number>(); // key -> slot
    const order: number[] = []; // keys in ring order
    const recent: number[] = [];
    for (let op = 0; op < 200_000; op++) {
      const roll = op % 7;
      // Some keys come back (re-sends and reuse), most are new.
      const key = roll === 0 && recent.length > 0 ? (recent[op % recent.length] as number) : next();
      if (roll === 1 && model.size > 0) {
        const victim = recent[(op * 31) % recent.length] as number;
        const slot = model.get(victim);
        if (slot !== undefined) { r.forget(slot); model.delete(victim); }
        continue;
      }
      if (roll === 2) {
        const slot = model.get(key);
        expect(r.find(key)).to.equal(slot ?? -1);
        continue;
      }
      const slot = r.add(key, 1, op);
      for (const [k, s] of model) if (s === slot || k === key) model.delete(k);
      model.set(key, slot);
      order.push(key);
      recent.push(key);
      if (recent.length > 50) recent.shift();
    }
    for (const [k, s] of model) expect(r.find(k)).to.equal(s);
    expect(r.size).to.equal(model.size);
    expect(model.size).to.be.at.most(cap);
  });

  it('refuses a capacity that is not a positive integer', () => {
    expect(() => new RecentKeys(0)).to.throw(RangeError);
    expect(() => new RecentKeys(1.5)).to.throw(RangeError);
  });
});
