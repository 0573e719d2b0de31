/**
 * Latency histogram with log-spaced buckets (2% wide): constant memory however many samples a run takes,
 * percentiles to within 2%. Values are milliseconds; anything below 1 µs lands in the first bucket.
 */
const GROWTH = 1.02;
const LOG_GROWTH = Math.log(GROWTH);
/** 1 µs * 1.02^1400 is about 10^12 µs: far past any latency a run can see. */
const BUCKETS = 1400;

export interface LatencySummary {
  readonly count: number;
  readonly p50: number | null;
  readonly p90: number | null;
  readonly p99: number | null;
  readonly max: number | null;
  readonly mean: number | null;
}

export class Histogram {
  private readonly counts = new Float64Array(BUCKETS);
  private n = 0;
  private sum = 0;
  private maxMs = 0;

  record(ms: number): void {
    const us = ms * 1000;
    const i = us <= 1 ? 0 : Math.min(BUCKETS - 1, 1 + Math.floor(Math.log(us) / LOG_GROWTH));
    this.counts[i] = (this.counts[i] ?? 0) + 1;
    this.n++;
    this.sum += ms;
    if (ms > this.maxMs) this.maxMs = ms;
  }

  get count(): number {
    return this.n;
  }

  /** The upper edge of the bucket holding the q-quantile, in ms (never above the true maximum). */
  quantile(q: number): number | null {
    if (this.n === 0) return null;
    const rank = Math.ceil(q * this.n);
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i] ?? 0;
      if (seen >= rank) return Math.min(this.maxMs, (i === 0 ? 1 : GROWTH ** i) / 1000);
    }
    return this.maxMs;
  }

  summary(): LatencySummary {
    const round = (v: number | null): number | null => (v === null ? null : Math.round(v * 1000) / 1000);
    return {
      count: this.n,
      p50: round(this.quantile(0.5)),
      p90: round(this.quantile(0.9)),
      p99: round(this.quantile(0.99)),
      max: round(this.n === 0 ? null : this.maxMs),
      mean: round(this.n === 0 ? null : this.sum / this.n),
    };
  }
}
