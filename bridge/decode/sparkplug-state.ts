/**
 * Host-side Sparkplug session state: each edge node's and device's metric definitions from its last birth
 * (alias tables), sequence numbers and bdSeq, and their snapshot form, stored so a restart gets them back.
 */
import type { SparkplugMetricDefinition, SparkplugSnapshotMetric, SparkplugWarning } from './sparkplug.js';
import { ConvertError, datatypeName, seqOf, type WirePayload } from './sparkplug-wire.js';

// ------------------------------------------------------------------------------------------------ state

export interface MetricDef {
  readonly name: string;
  readonly datatype: number;
  readonly alias?: number | bigint | undefined;
}

export interface Scope {
  online: boolean;
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
  /** Last seq seen from this node (0..255). */
  seq: number;
  readonly devices: Map<string, Scope>;
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

export function restoreScope(raw: Record<string, unknown>): Scope | string {
  if (typeof raw['online'] !== 'boolean') return 'online';
  if (!Array.isArray(raw['metrics'])) return 'metrics';
  const defs: MetricDef[] = [];
  for (const m of raw['metrics'] as unknown[]) {
    if (!isRecord(m) || typeof m['name'] !== 'string' || typeof m['datatype'] !== 'number' || !Number.isInteger(m['datatype'])) {
      return 'metric definition';
    }
    const alias = m['alias'];
    if (alias !== undefined && !(typeof alias === 'string' && /^\d{1,20}$/.test(alias))) return 'metric alias';
    defs.push({ name: m['name'], datatype: m['datatype'], alias: alias === undefined ? undefined : exactFromString(alias) });
  }
  const scope = newScope(defs);
  if (scope instanceof ConvertError) return scope.reason;
  scope.online = raw['online'];
  return scope;
}

/** The seq field as 0..255, or -1 when absent or out of range. */
export function advanceSeq(node: NodeState, payload: WirePayload): SparkplugWarning | undefined {
  const seq = seqOf(payload);
  if (seq < 0) {
    // [tck-id-payloads-sequence-num-always-included]
    return { code: 'UNS_ERR_SPARKPLUG_STATE', reason: 'seq missing or not in 0..255' };
  }
  const expected = (node.seq + 1) & 0xff;
  node.seq = seq;
  if (seq !== expected) return { code: 'UNS_ERR_SPARKPLUG_STATE', reason: `sequence gap: expected ${expected}, got ${seq}` };
  return undefined;
}

/** The bdSeq metric's integer value, or undefined. */
