/**
 * The optional history window of a live subscription: stored samples of the subscribed filters from
 * `seconds` ago until now, oldest first, through the store's read queries (topics by filter, then raw
 * history per topic, each limited by the caller's canRead). Bounded in topics and in points; `truncated`
 * says when the window held more than was sent.
 */
import type { ReadQueries } from '../../bridge/index.js';

export interface HistoryPoint {
  readonly topic: string;
  readonly value: unknown;
  readonly timestamp: string;
  readonly quality: string;
}

export interface HistoryWindow {
  readonly points: HistoryPoint[];
  readonly truncated: boolean;
}

export interface HistoryLimits {
  readonly maxTopics: number;
  readonly maxPoints: number;
}

export type HistoryFn = (filters: readonly string[], fromMs: number, toMs: number, canRead: (topic: string) => boolean, limits: HistoryLimits) => Promise<HistoryWindow>;

export function historyFrom(queries: ReadQueries): HistoryFn {
  return async (filters, fromMs, toMs, canRead, limits) => {
    const topics = new Map<number, string>();
    for (const f of filters) {
      for (const t of await queries.topics(f, canRead)) topics.set(t.id, t.name);
    }
    let truncated = topics.size > limits.maxTopics;
    const ids = [...topics].sort((a, b) => (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0)).slice(0, limits.maxTopics);
    const all: Array<HistoryPoint & { key: string }> = [];
    for (const [id, topic] of ids) {
      const page = await queries.history(id, fromMs * 1000, toMs * 1000, limits.maxPoints, null);
      if (page.next !== null) truncated = true;
      // ISO timestamps (ms or µs precision) sort as text once the 'Z' is gone and the digits padded;
      // the sort is stable, so equal times keep topic order.
      for (const p of page.points) all.push({ topic, value: p.value, timestamp: p.timestamp, quality: p.quality, key: p.timestamp.replace('Z', '').padEnd(26, '0') });
    }
    all.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    if (all.length > limits.maxPoints) truncated = true;
    return { points: all.slice(0, limits.maxPoints).map(({ key: _k, ...p }) => p), truncated };
  };
}
