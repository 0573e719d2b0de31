/**
 * Live fan-out: every accepted message's points go to the subscribers whose topic filter matches.
 * Matching uses one compiled matcher over all subscription filters (rebuilt when subscriptions change,
 * cached per topic), so a message costs one lookup, not one per subscriber. Listeners must not block:
 * the WebSocket and SSE layers buffer and batch on their side.
 */
import type { Point, UnsMessage } from '../../../src/core/index.js';
import { TopicMatcher } from '../../../src/core/index.js';

export type LiveListener = (point: Point, msg: UnsMessage) => void;

interface Sub {
  readonly filter: string;
  readonly listener: LiveListener;
}

export class LiveHub {
  private readonly subs = new Map<number, Sub>();
  private nextId = 1;
  private matcher: TopicMatcher<number> | null = null;
  delivered = 0;

  get size(): number {
    return this.subs.size;
  }

  /** Returns the function that ends the subscription. */
  subscribe(filter: string, listener: LiveListener): () => void {
    const id = this.nextId++;
    this.subs.set(id, { filter, listener });
    this.matcher = null;
    return () => {
      if (this.subs.delete(id)) this.matcher = null;
    };
  }

  publish(msg: UnsMessage): void {
    if (this.subs.size === 0) return;
    const m = (this.matcher ??= new TopicMatcher([...this.subs].map(([id, s]) => [s.filter, id] as const), { cacheSize: 50_000 }));
    for (const p of msg.points) {
      if (p.historical) continue; // late data for history: not a current value
      for (const id of m.matchAll(p.topic)) {
        const s = this.subs.get(id);
        if (!s) continue;
        this.delivered++;
        try {
          s.listener(p, msg);
        } catch {
          // A listener that throws must not break ingestion or other subscribers.
        }
      }
    }
  }
}
