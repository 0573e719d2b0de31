/**
 * Host-side Sparkplug session state: each edge node's and device's metric definitions from its last birth
 * (alias tables), sequence numbers and bdSeq, and their snapshot form, stored so a restart gets them back.
 */
import type { Isa95Path } from '../../src/core/index.js';
import type { MappedTopic, SparkplugMetricDefinition, SparkplugSnapshotMetric, SparkplugWarning } from './sparkplug.js';
import { ConvertError, datatypeName, seqOf, type WirePayload } from './sparkplug-wire.js';

// ------------------------------------------------------------------------------------------------ state

export interface MetricDef {
  readonly name: string;
  readonly datatype: number;
  readonly alias?: number | bigint | undefined;
  /** Where its points go (decided once, at BIRTH); '' for bdSeq, which is bookkeeping. */
  readonly topic: string;
  /** ISA-95 levels of a mapped topic, else null. */
  readonly path: Isa95Path | null;
}

export interface Scope {
  online: boolean;
  /** When the current BIRTH arrived (epoch ms; null when restored from a snapshot). */
  bornAt?: number | null;
  /** In BIRTH order, for snapshots. */
  readonly defs: MetricDef[];
  readonly byName: Map<string, MetricDef>;
  readonly byAlias: Map<number | bigint, MetricDef>;
}

export interface NodeState extends Scope {
  readonly group: string;
  readonly edge: string;
  /** bdSeq of the NBIRTH that opened the current session. */
  readonly bdSeq: number | bigint | null;
  /** Highest seq seen from this node (0..255, wrapping). */
  seq: number;
  readonly devices: Map<string, Scope>;
  /** Sequence numbers skipped by a gap and not yet arrived (the host's reorder window). */
  readonly missing: Set<number>;
  bornAt: number | null;
  /** When the last NDEATH arrived (epoch ms), or null. */
  diedAt: number | null;
}

export function newScope(defs: MetricDef[]): Scope | ConvertError {
  const byName = new Map<string, MetricDef>();
  const byAlias = new Map<number | bigint, MetricDef>();
  for (const def of defs) {
    byName.set(def.name, def);
    if (def.alias !== undefined) {
      const other = byAlias.get(def.alias);
      if (other !== undefined && other.name !== def.name) {
        // [tck-id-payloads-alias-uniqueness] an alias names exactly one metric of the edge node.
        return new ConvertError('UNS_ERR_DECODE_SPARKPLUG', `alias ${String(def.alias)} used by "${other.name}" and "${def.name}"`);
      }
      byAlias.set(def.alias, def);
    }
  }
  return { online: true, defs, byName, byAlias };
}

export function publicDef(d: MetricDef): SparkplugMetricDefinition {
  return d.alias === undefined ? { name: d.name, datatype: datatypeName(d.datatype) } : { name: d.name, datatype: datatypeName(d.datatype), alias: d.alias };
}

export function snapshotDef(d: MetricDef): SparkplugSnapshotMetric {
  return d.alias === undefined ? { name: d.name, datatype: d.datatype } : { name: d.name, datatype: d.datatype, alias: String(d.alias) };
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function exactFromString(s: string): number | bigint {
  const b = BigInt(s);
  return b >= -9007199254740991n && b <= 9007199254740991n ? Number(b) : b;
}

/** `topicOf`: a metric's topic now (the map may have changed since the snapshot was taken). */
export function restoreScope(raw: Record<string, unknown>, topicOf: (name: string) => MappedTopic | ConvertError): Scope | string {
  if (typeof raw['online'] !== 'boolean') return 'online';
  if (!Array.isArray(raw['metrics'])) return 'metrics';
  const defs: MetricDef[] = [];
  for (const m of raw['metrics'] as unknown[]) {
    if (!isRecord(m) || typeof m['name'] !== 'string' || typeof m['datatype'] !== 'number' || !Number.isInteger(m['datatype'])) {
      return 'metric definition';
    }
    const alias = m['alias'];
    if (alias !== undefined && !(typeof alias === 'string' && /^\d{1,20}$/.test(alias))) return 'metric alias';
    const t = m['name'] === 'bdSeq' ? { topic: '', path: null } : topicOf(m['name']);
    if (t instanceof ConvertError) return `metric "${m['name']}": ${t.reason}`;
    defs.push({ name: m['name'], datatype: m['datatype'], alias: alias === undefined ? undefined : exactFromString(alias), topic: t.topic, path: t.path });
  }
  const scope = newScope(defs);
  if (scope instanceof ConvertError) return scope.reason;
  scope.online = raw['online'];
  return scope;
}

/** Gaps wider than this are not a few lost or overtaken messages but a new sequence: nothing is awaited. */
const MAX_AWAITED = 64;

export interface SeqResult {
  readonly warning: SparkplugWarning;
  /** A gap opened (the numbers between are now awaited). */
  /** `awaited`: the skipped numbers may still come (a gap wider than MAX_AWAITED is a lost stream). */
  readonly gap?: { readonly expected: number; readonly got: number; readonly awaited: boolean } | undefined;
}

/**
 * One message's seq against the node's [tck-id-payloads-sequence-num-incrementing]: the next number is
 * expected; a later one opens a gap whose numbers are awaited (a message overtaken in flight arrives
 * within the Reorder Timeout [tck-id-operational-behavior-host-reordering-start]); an awaited one closes
 * its part of the gap [tck-id-operational-behavior-host-reordering-success].
 */
export function advanceSeq(node: NodeState, payload: WirePayload): SeqResult | undefined {
  const seq = seqOf(payload);
  if (seq < 0) {
    // [tck-id-payloads-sequence-num-always-included]
    return { warning: { code: 'UNS_ERR_SPARKPLUG_STATE', reason: 'seq missing or not in 0..255' } };
  }
  if (node.missing.delete(seq)) return undefined;
  const expected = (node.seq + 1) & 0xff;
  node.seq = seq;
  if (seq === expected) return undefined;
  const skipped = (seq - expected) & 0xff;
  if (skipped <= MAX_AWAITED) for (let i = 0; i < skipped; i++) node.missing.add((expected + i) & 0xff);
  return { warning: { code: 'UNS_ERR_SPARKPLUG_STATE', reason: `sequence gap: expected ${expected}, got ${seq}` }, gap: { expected, got: seq, awaited: skipped <= MAX_AWAITED } };
}

/** The bdSeq metric's integer value, or undefined. */
