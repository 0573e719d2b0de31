/**
 * The redelivery keys of the latest QoS > 0 messages, bounded, the oldest forgotten first: what the store sink
 * asks of every QoS > 0 publish (is this a re-send of a message it has seen?).
 *
 * A key is a non-negative integer below 2^53. Entries live in a ring of slots (parallel typed arrays: key,
 * connection, arrival time, durability) and are found through an open-addressing index of slot numbers with
 * linear probing. Nothing is allocated per message: a Map of number keys this size boxed each key, and its
 * lookups, which chased those boxes across a table of 100,000 entries, were a visible share of the hot path.
 */

const EMPTY = -1;
const TWO_32 = 0x1_0000_0000;

export class RecentKeys {
  private readonly keys: Float64Array;
  private readonly conn: Float64Array;
  private readonly at: Float64Array;
  private readonly durableFlag: Uint8Array;
  /** Which remembering a slot holds now: a write's answer for an entry since forgotten finds another number here. */
  private readonly gen: Float64Array;
  /** slot + 1 per position; 0: free. At most half full. */
  private readonly index: Int32Array;
  private readonly mask: number;
  private nextSlot = 0;
  private generation = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`capacity ${capacity}: must be a positive integer`);
    this.keys = new Float64Array(capacity).fill(Number.NaN);
    this.conn = new Float64Array(capacity);
    this.at = new Float64Array(capacity);
    this.durableFlag = new Uint8Array(capacity);
    this.gen = new Float64Array(capacity);
    let size = 16;
    while (size < capacity * 2) size *= 2;
    this.index = new Int32Array(size);
    this.mask = size - 1;
  }

  /** The slot holding `key`, or -1. */
  find(key: number): number {
    for (let i = this.home(key); ; i = (i + 1) & this.mask) {
      const v = this.index[i] as number;
      if (v === 0) return EMPTY;
      if (this.keys[v - 1] === key) return v - 1;
    }
  }

  /**
   * Remembers a key (a key already held is forgotten first: the newer message is the one a re-send would be
   * of). The oldest entry makes room when the ring is full. Returns the slot; its generation is `generationOf`.
   */
  add(key: number, connection: number, at: number): number {
    const held = this.find(key);
    if (held !== EMPTY) this.forget(held);
    const slot = this.nextSlot;
    this.nextSlot = slot + 1 === this.capacity ? 0 : slot + 1;
    if (!Number.isNaN(this.keys[slot] as number)) this.forget(slot);
    this.keys[slot] = key;
    this.conn[slot] = connection;
    this.at[slot] = at;
    this.durableFlag[slot] = 0;
    this.gen[slot] = ++this.generation;
    let i = this.home(key);
    while (this.index[i] !== 0) i = (i + 1) & this.mask;
    this.index[i] = slot + 1;
    return slot;
  }

  connectionOf(slot: number): number {
    return this.conn[slot] as number;
  }

  arrivedAt(slot: number): number {
    return this.at[slot] as number;
  }

  isDurable(slot: number): boolean {
    return this.durableFlag[slot] === 1;
  }

  generationOf(slot: number): number {
    return this.gen[slot] as number;
  }

  /** Does the slot still hold the remembering of this generation? */
  holds(slot: number, generation: number): boolean {
    return this.gen[slot] === generation && !Number.isNaN(this.keys[slot] as number);
  }

  markDurable(slot: number): void {
    this.durableFlag[slot] = 1;
  }

  /** Forgets a slot's key (its position in the index is freed by moving later entries of its run back). */
  forget(slot: number): void {
    const key = this.keys[slot] as number;
    if (Number.isNaN(key)) return;
    let i = this.home(key);
    while (this.index[i] !== slot + 1) i = (i + 1) & this.mask;
    // Backward-shift deletion: an entry further along the run moves into the hole unless its home lies
    // cyclically after the hole (it would then be unreachable from its home).
    for (let j = (i + 1) & this.mask; ; j = (j + 1) & this.mask) {
      const v = this.index[j] as number;
      if (v === 0) break;
      const h = this.home(this.keys[v - 1] as number);
      const between = i <= j ? i < h && h <= j : i < h || h <= j;
      if (!between) {
        this.index[i] = v;
        i = j;
      }
    }
    this.index[i] = 0;
    this.keys[slot] = Number.NaN;
  }

  get size(): number {
    let n = 0;
    for (let i = 0; i < this.index.length; i++) if (this.index[i] !== 0) n++;
    return n;
  }

  private home(key: number): number {
    // Both 32-bit halves, mixed (murmur3's finaliser): keys are hashes already, but the index must not rely on it.
    let h = (key >>> 0) ^ Math.imul(Math.floor(key / TWO_32), 0x9e3779b1);
    h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
    h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
    return (h ^ (h >>> 16)) & this.mask;
  }
}
