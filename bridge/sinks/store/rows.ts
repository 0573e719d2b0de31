/**
 * The store's row model: what the pipeline hands the writer and what the spool keeps on disk. Plain data,
 * so a batch can be spooled as JSON and replayed byte-for-byte.
 */
import type { Isa95Path } from '../../../src/core/index.js';

export interface SampleRow {
  readonly topic: string;
  /** Epoch ms. */
  readonly time: number;
  readonly num: number | null;
  readonly text: string | null;
  readonly bool: boolean | null;
  /** JSON text for objects, arrays and exact big integers (jsonb keeps numbers exactly). */
  readonly json: string | null;
  /** Base64 of raw bytes. */
  readonly bytes: string | null;
  /** null = good. */
  readonly quality: string | null;
  /** Redelivery key (decimal int64) for QoS > 0 MQTT messages; see redelivery-key.ts. */
  readonly src: string | null;
  /** Late data (Sparkplug is_historical): history only, never the latest value. */
  readonly hist?: true | undefined;
}

export interface TopicMeta {
  readonly name: string;
  readonly levels: Isa95Path | null;
  readonly route: string;
  readonly unit: string | null;
}

export interface RetainedRow {
  readonly topic: string;
  /** Base64; empty string deletes the retained message [MQTT-3.3.1-10]. */
  readonly payload: string;
  readonly qos: number;
}

export interface RejectionRow {
  readonly time: number;
  readonly topic: string;
  readonly code: string;
  readonly reason: string;
  readonly clientId: string | null;
  /** Base64 of the first bytes of the payload (capped). */
  readonly payload: string | null;
}

export interface StateRow {
  readonly key: string;
  /** Increases with every write of the key; an older rev never overwrites a newer one. */
  readonly rev: number;
  /**
   * JSON text; as submitted, a function giving it: the snapshot is taken when its batch is written, once
   * per key and batch (a burst of 1,000 Sparkplug births costs a few snapshots, not 1,000). See
   * materialiseState.
   */
  readonly value: string | (() => string);
}

/**
 * A batch about to be written or spooled: per state key, the item with the newest rev gets the snapshot
 * taken now, the others lose their state row (the newer one, in the same transaction or segment,
 * supersedes it). Returns the items to write; plain data, ready for the spool.
 */
export function materialiseState(items: readonly WriteItem[]): WriteItem[] {
  let newest: Map<string, number> | undefined;
  for (let i = 0; i < items.length; i++) {
    const st = (items[i] as WriteItem).state;
    if (st === undefined) continue;
    newest ??= new Map();
    const j = newest.get(st.key);
    if (j === undefined || ((items[j] as WriteItem).state as StateRow).rev < st.rev) newest.set(st.key, i);
  }
  if (newest === undefined) return items as WriteItem[];
  const keep = new Set(newest.values());
  return items.map((item, i) => {
    const st = item.state;
    if (st === undefined) return item;
    if (!keep.has(i)) return { ...item, state: undefined };
    return typeof st.value === 'string' ? item : { ...item, state: { key: st.key, rev: st.rev, value: st.value() } };
  });
}

/** Everything one accepted or rejected message writes. */
export interface WriteItem {
  readonly samples: readonly SampleRow[];
  readonly topics: readonly TopicMeta[];
  readonly retained?: RetainedRow | undefined;
  readonly rejection?: RejectionRow | undefined;
  readonly state?: StateRow | undefined;
  /** A source went away (Sparkplug DEATH): these topics' latest values, if not newer, become quality 'stale'. */
  readonly stale?: { readonly topics: readonly string[] } | undefined;
  /** Arrival time (epoch ms) for last_values.received_at. */
  readonly receivedAt: number;
  /**
   * Its redelivery key was seen before on the same connection without DUP: a new message reusing a freed
   * packet id, never to be taken for a re-send (replay's duplicate check passes it by).
   */
  readonly keyReused?: true | undefined;
  /**
   * A possible re-send whose original was neither remembered nor found in the database: the original may be
   * in a spool segment of an earlier run, so replay checks this one for a stored twin.
   */
  readonly resendCheck?: true | undefined;
}

export interface WriteBatch {
  readonly items: readonly WriteItem[];
  /**
   * A replay: the spool segments the items come from, each applied at most once (its marker row commits with
   * its items), and for each item the index of its segment.
   */
  readonly segments?: readonly string[] | undefined;
  readonly itemSegments?: readonly number[] | undefined;
}

export function rowCount(item: WriteItem): number {
  return item.samples.length + (item.rejection ? 1 : 0) + (item.retained ? 1 : 0);
}
