/**
 * Sparkplug B (spBv1.0) decoding and host-side session state: alias tables, sequence numbers and bdSeq
 * per edge node. One SparkplugDecoder per server. Never throws on the per-message path: every outcome is a
 * result or a Rejection.
 *
 * We use the protobuf codec generated inside `sparkplug-payload` rather than its `decodePayload`, because
 * that helper converts every metric before we can bound the count, reads UInt32 values >= 2^31 as negative
 * (Long#toInt) and throws on DataSet cells without a value. The wire schema is the same.
 */
import { gunzipSync, inflateSync } from 'node:zlib';
import type { ErrorCode } from '../../src/core/index.js';
import { rejection } from '../../src/core/index.js';
import type { Isa95Path, Point, Quality, Rejection } from '../../src/core/index.js';
import { type U64, type WireMetric, type WirePayload, decodeWire, datatypeName, exact64, qualityOf, ConvertError, seqOf, bdSeqOf, propertyNumber, countTopLevelMetrics } from './sparkplug-wire.js';
import { SparkplugValues } from './sparkplug-values.js';
import { type MetricDef, type Scope, type NodeState, newScope, publicDef, snapshotDef, isRecord, exactFromString, restoreScope, advanceSeq } from './sparkplug-state.js';

// ---------------------------------------------------------------------------------------------- public API

export type SparkplugMessageType =
  | 'NBIRTH'
  | 'NDEATH'
  | 'DBIRTH'
  | 'DDEATH'
  | 'NDATA'
  | 'DDATA'
  | 'NCMD'
  | 'DCMD'
  | 'STATE';

export interface SparkplugDecoderOptions {
  /** Largest payload, before AND after decompression, in bytes. Default 1 MiB. */
  readonly maxBytes?: number;
  /** Most metrics in one payload. Default 10,000. */
  readonly maxMetrics?: number;
  /** Largest single string (UTF-16 units) or bytes value. Default 256 KiB. */
  readonly maxValueBytes?: number;
  /** Deepest Template-in-Template nesting converted. Default 16. */
  readonly maxDepth?: number;
  /** Most edge nodes tracked; an NBIRTH from one more is refused. Default 10,000. */
  readonly maxNodes?: number;
  /** Most devices tracked per edge node; a DBIRTH for one more is refused. Default 10,000. */
  readonly maxDevicesPerNode?: number;
  /** Timestamps further ahead of the receive time than this are refused. Default 10 min. */
  readonly maxFutureMs?: number;
  /** Told of what the host application acts on (rebirth requests, reorder windows). Called synchronously. */
  readonly listener?: SparkplugSessionListener | undefined;
  /** Where metrics go in the namespace (topics.yaml `sparkplug.map`); default spBv1.0/<group>/<node>[/<device>]/<name>. */
  readonly topics?: SparkplugTopicMap | undefined;
}

export interface MappedTopic {
  readonly topic: string;
  /** ISA-95 levels when the topic was mapped into the namespace, else null. */
  readonly path: Isa95Path | null;
}

/** A metric's topic, decided once per BIRTH; mapped topics are held by one metric at a time. */
export interface SparkplugTopicMap {
  topicOf(group: string, edge: string, device: string | undefined, name: string): MappedTopic | ConvertError;
  /** A BIRTH's metrics take their topics for `scope` (group/node[/device]); the reason when one is taken. */
  claim(scope: string, metrics: ReadonlyArray<{ readonly name: string; readonly topic: string }>): string | null;
  release(scope: string): void;
}

/** What the decoder finds that the host application must act on; implementations defer their I/O. */
export interface SparkplugSessionListener {
  /** Without a rebirth the node's data cannot be read: DATA before BIRTH, an unknown alias. */
  rebirthNeeded(group: string, edge: string, reason: string): void;
  /** A sequence gap opened; the missing numbers may still arrive within the Reorder Timeout. */
  gapOpened(group: string, edge: string, expected: number, got: number): void;
  /** An NDEATH whose bdSeq is not the current session's (a late Will): ignored. */
  staleDeath(group: string, edge: string): void;
}

/** 2000-01-01T00:00:00Z: earlier metric timestamps are a wrong unit or an unset clock. */
export const MIN_TIMESTAMP_MS = 946_684_800_000;

export interface SparkplugMetricDefinition {
  readonly name: string;
  /** Sparkplug datatype name ('Int32', 'Double', ...); 'Unknown' when the BIRTH omitted it. */
  readonly datatype: string;
  readonly alias?: number | bigint | undefined;
}

export interface SparkplugBirth {
  /** NBIRTH only: the session's bdSeq [tck-id-payloads-nbirth-bdseq]. */
  readonly bdSeq?: number | bigint | undefined;
  readonly metrics: readonly SparkplugMetricDefinition[];
}

/** A state problem that does not cost the data (today: sequence gaps and missing seq). */
export interface SparkplugWarning {
  readonly code: ErrorCode;
  readonly reason: string;
}

export interface SparkplugMetricsResult {
  readonly kind: 'metrics';
  readonly messageType: SparkplugMessageType;
  readonly group: string;
  readonly edge: string;
  readonly device?: string | undefined;
  readonly seq?: number | undefined;
  /** One point per metric, topic `spBv1.0/<group>/<edge>[/<device>]/<metric name>`. */
  readonly points: Point[];
  readonly birth?: SparkplugBirth | undefined;
  /** NDEATH/DDEATH: the node (and its devices) or the device is now offline; `points` are its metrics, stale. */
  readonly death?: true | undefined;
  readonly warning?: SparkplugWarning | undefined;
}

/** NCMD/DCMD (host-to-node commands) and STATE (host presence): not ingested as data. */
export interface SparkplugControlResult {
  readonly kind: 'control';
  readonly messageType: SparkplugMessageType;
}

export type SparkplugDecodeResult = SparkplugMetricsResult | SparkplugControlResult | Rejection;

/** JSON-serialisable decoder state; 64-bit numbers are decimal strings. */
export interface SparkplugSnapshot {
  readonly version: 1;
  readonly nodes: readonly SparkplugSnapshotNode[];
}

export interface SparkplugSnapshotMetric {
  readonly name: string;
  /** Sparkplug datatype code (0 = unknown). */
  readonly datatype: number;
  readonly alias?: string | undefined;
}

export interface SparkplugSnapshotScope {
  readonly online: boolean;
  readonly metrics: readonly SparkplugSnapshotMetric[];
}

export interface SparkplugSnapshotNode extends SparkplugSnapshotScope {
  readonly group: string;
  readonly edge: string;
  readonly bdSeq: string | null;
  readonly seq: number;
  readonly devices: readonly (SparkplugSnapshotScope & { readonly id: string })[];
}

export type SparkplugRestoreResult = { readonly ok: true } | { readonly ok: false; readonly code: ErrorCode; readonly reason: string };

// ---------------------------------------------------------------------------------------------- decoder

const NAMESPACE = 'spBv1.0';
const COMPRESSED_UUID = 'SPBV1.0_COMPRESSED';

const NODE_TYPES = new Set<string>(['NBIRTH', 'NDEATH', 'NDATA', 'NCMD']);
const DEVICE_TYPES = new Set<string>(['DBIRTH', 'DDEATH', 'DDATA', 'DCMD']);

export class SparkplugDecoder {
  private readonly maxBytes: number;
  private readonly maxMetrics: number;
  private readonly values: SparkplugValues;
  private readonly maxNodes: number;
  private readonly maxDevicesPerNode: number;
  private readonly maxFutureMs: number;
  private readonly listener: SparkplugSessionListener | undefined;
  private readonly topics: SparkplugTopicMap | undefined;
  /** Keyed `<group>/<edge>`: neither id can hold '/', being a topic level each. */
  private readonly nodes = new Map<string, NodeState>();

  constructor(options: SparkplugDecoderOptions = {}) {
    this.maxBytes = options.maxBytes ?? 1024 * 1024;
    this.maxMetrics = options.maxMetrics ?? 10_000;
    this.values = new SparkplugValues(options.maxValueBytes ?? 256 * 1024, options.maxDepth ?? 16);
    this.maxNodes = options.maxNodes ?? 10_000;
    this.maxDevicesPerNode = options.maxDevicesPerNode ?? 10_000;
    this.maxFutureMs = options.maxFutureMs ?? 600_000;
    this.listener = options.listener;
    this.topics = options.topics;
  }

  private topicOf(group: string, edge: string, device: string | undefined, name: string): MappedTopic | ConvertError {
    if (this.topics !== undefined) return this.topics.topicOf(group, edge, device, name);
    const level = metricTopic(name);
    if (level instanceof ConvertError) return level;
    return { topic: `${NAMESPACE}/${group}/${edge}/${device === undefined ? '' : `${device}/`}${level}`, path: null };
  }

  /** Sequence numbers still missing after a gap on this node (empty when none or unknown). */
  missing(group: string, edge: string): readonly number[] {
    return [...(this.nodes.get(`${group}/${edge}`)?.missing ?? [])];
  }

  /** Gives up waiting for the missing numbers (the host has asked for a rebirth). */
  forgetMissing(group: string, edge: string): void {
    this.nodes.get(`${group}/${edge}`)?.missing.clear();
  }

  /**
   * A node's (device null) or device's session: whether it is online and each metric's BIRTH definition by
   * name, for commands. Undefined when never born.
   */
  scope(group: string, edge: string, device: string | null): { readonly online: boolean; readonly byName: ReadonlyMap<string, MetricDef> } | undefined {
    const node = this.nodes.get(`${group}/${edge}`);
    if (node === undefined || device === null) return node;
    const d = node.devices.get(device);
    return d === undefined ? undefined : { online: node.online && d.online, byName: d.byName };
  }

  /** Every edge node known, for the host's view. */
  sessions(): readonly NodeState[] {
    return [...this.nodes.values()];
  }

  decode(topic: string, bytes: Uint8Array, receivedAt: number): SparkplugDecodeResult {
    try {
      return this.decodeUnsafe(topic, bytes, receivedAt);
    } catch (err) {
      // Safety net only: the paths above return rejections. A bug must cost one message, not the broker.
      return rejection('UNS_ERR_DECODE_SPARKPLUG', topic, `decoder failure: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  private decodeUnsafe(topic: string, bytes: Uint8Array, receivedAt: number): SparkplugDecodeResult {
    // Topic: spBv1.0/<group_id>/<message_type>/<edge_node_id>[/<device_id>], or spBv1.0/STATE/<host_id>.
    const parts = topic.split('/');
    if (parts[0] !== NAMESPACE) return rejection('UNS_ERR_DECODE_SPARKPLUG', topic, `topic is not in the ${NAMESPACE} namespace`);
    if (parts[1] === 'STATE' && parts.length === 3) return { kind: 'control', messageType: 'STATE' };
    const group = parts[1];
    const type = parts[2];
    const edge = parts[3];
    const device = parts[4];
    if (group === undefined || type === undefined || edge === undefined || group === '' || edge === '' || device === '') {
      return rejection('UNS_ERR_DECODE_SPARKPLUG', topic, 'topic lacks group, message type or edge node id');
    }
    if (parts.length === 4 ? !NODE_TYPES.has(type) : parts.length !== 5 || !DEVICE_TYPES.has(type)) {
      return rejection('UNS_ERR_DECODE_SPARKPLUG', topic, `"${type}" is not a Sparkplug message type for a ${parts.length}-level topic`);
    }
    const messageType = type as SparkplugMessageType;
    // Commands travel host -> edge node; they are not process data.
    if (messageType === 'NCMD' || messageType === 'DCMD') return { kind: 'control', messageType };

    if (bytes.length > this.maxBytes) {
      return rejection('UNS_ERR_PAYLOAD_TOO_LARGE', topic, `payload is ${bytes.length} bytes; the limit is ${this.maxBytes}`);
    }
    if (bytes.length === 0 && messageType !== 'DDEATH') {
      return rejection('UNS_ERR_DECODE_SPARKPLUG', topic, `empty ${messageType} payload`);
    }
    const payload = this.unwrap(bytes, topic);
    if (!('metrics' in payload)) return payload;

    const nodeKey = `${group}/${edge}`;
    switch (messageType) {
      case 'NBIRTH':
        return this.nbirth(topic, nodeKey, group, edge, payload, receivedAt);
      case 'NDEATH':
        return this.ndeath(topic, nodeKey, group, edge, payload, receivedAt);
      case 'DBIRTH':
        return this.dbirth(topic, nodeKey, group, edge, device as string, payload, receivedAt);
      case 'DDEATH':
        return this.ddeath(topic, nodeKey, group, edge, device as string, payload, receivedAt);
      case 'NDATA':
      case 'DDATA':
        return this.data(topic, messageType, nodeKey, group, edge, device, payload, receivedAt);
      default:
        return { kind: 'control', messageType };
    }
  }

  // ---------------------------------------------------------------------------------------- payload bytes

  /** Bounded protobuf decode, with one level of Sparkplug compression undone. */
  private unwrap(bytes: Uint8Array, topic: string): WirePayload | Rejection {
    const outer = this.decodeBounded(bytes, topic);
    if (!('metrics' in outer) || outer.uuid !== COMPRESSED_UUID) return outer;

    // Compressed payload: body holds a whole Payload, metric "algorithm" says DEFLATE or GZIP; Tahu's
    // reference implementation assumes DEFLATE when the metric is absent.
    let algorithm = 'DEFLATE';
    for (const m of outer.metrics) {
      if (m.name === 'algorithm' && typeof m.stringValue === 'string') algorithm = m.stringValue.toUpperCase();
    }
    const body = outer.body;
    if (body === undefined || body.length === 0) return rejection('UNS_ERR_DECODE_SPARKPLUG', topic, 'compressed payload has no body');
    let inner: Uint8Array;
    try {
      // maxOutputLength stops inflation at the limit, so a zip bomb costs at most maxBytes of memory.
      const opts = { maxOutputLength: this.maxBytes };
      if (algorithm === 'DEFLATE') inner = inflateSync(body, opts);
      else if (algorithm === 'GZIP') inner = gunzipSync(body, opts);
      else return rejection('UNS_ERR_DECODE_SPARKPLUG', topic, `unknown compression algorithm "${algorithm}"`);
    } catch (err) {
      if ((err as { code?: unknown }).code === 'ERR_BUFFER_TOO_LARGE') {
        return rejection('UNS_ERR_PAYLOAD_TOO_LARGE', topic, `decompressed payload exceeds ${this.maxBytes} bytes`);
      }
      return rejection('UNS_ERR_DECODE_SPARKPLUG', topic, `cannot decompress ${algorithm} body: ${err instanceof Error ? err.message : String(err)}`);
    }
    const payload = this.decodeBounded(inner, topic);
    if ('metrics' in payload && payload.uuid === COMPRESSED_UUID) {
      return rejection('UNS_ERR_DECODE_SPARKPLUG', topic, 'nested compression is not accepted');
    }
    return payload;
  }

  private decodeBounded(bytes: Uint8Array, topic: string): WirePayload | Rejection {
    // Count metrics from the wire before protobufjs allocates one object per metric.
    const count = countTopLevelMetrics(bytes, this.maxMetrics);
    if (count > this.maxMetrics) {
      return rejection('UNS_ERR_PAYLOAD_TOO_LARGE', topic, `more than ${this.maxMetrics} metrics in one payload`);
    }
    try {
      return decodeWire(bytes);
    } catch (err) {
      return rejection('UNS_ERR_DECODE_SPARKPLUG', topic, `invalid Sparkplug B protobuf: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  // ----------------------------------------------------------------------------------------- message types

  private nbirth(topic: string, nodeKey: string, group: string, edge: string, payload: WirePayload, receivedAt: number): SparkplugDecodeResult {
    // [tck-id-payloads-nbirth-seq] every NBIRTH carries a seq; it (re)starts the node's sequence.
    if (!Object.hasOwn(payload, 'seq')) return rejection('UNS_ERR_DECODE_SPARKPLUG', topic, 'NBIRTH without seq');
    const seq = seqOf(payload);
    if (seq < 0) return rejection('UNS_ERR_DECODE_SPARKPLUG', topic, 'NBIRTH seq is not in 0..255');
    // [tck-id-payloads-nbirth-bdseq] every NBIRTH carries a bdSeq metric; NDEATH is matched against it.
    const bdSeq = bdSeqOf(payload);
    if (bdSeq === undefined) return rejection('UNS_ERR_DECODE_SPARKPLUG', topic, 'NBIRTH without an integer bdSeq metric');
    const existing = this.nodes.get(nodeKey);
    if (existing === undefined && this.nodes.size >= this.maxNodes) {
      return rejection('UNS_ERR_SPARKPLUG_STATE', topic, `more than ${this.maxNodes} edge nodes tracked`);
    }
    const built = this.pointsFromBirth(group, edge, undefined, payload, receivedAt);
    if (built instanceof ConvertError) return rejection(built.code, topic, built.reason);
    const scope = newScope(built.defs);
    if (scope instanceof ConvertError) return rejection(scope.code, topic, scope.reason);
    if (existing !== undefined) for (const d of existing.devices.keys()) this.topics?.release(`${nodeKey}/${d}`);
    const taken = this.topics?.claim(nodeKey, built.defs) ?? null;
    if (taken !== null) return rejection('UNS_ERR_SPARKPLUG_METRIC', topic, taken);
    // A new NBIRTH starts a new session: the node's and all its devices' aliases are forgotten.
    this.nodes.set(nodeKey, { ...scope, group, edge, bdSeq, seq, devices: new Map(), missing: new Set(), bornAt: receivedAt, diedAt: null });
    return {
      kind: 'metrics',
      messageType: 'NBIRTH',
      group,
      edge,
      seq,
      points: built.points,
      birth: { bdSeq, metrics: built.defs.map(publicDef) },
    };
  }

  private dbirth(
    topic: string,
    nodeKey: string,
    group: string,
    edge: string,
    device: string,
    payload: WirePayload,
    receivedAt: number,
  ): SparkplugDecodeResult {
    const node = this.nodes.get(nodeKey);
    // [tck-id-payloads-dbirth-order] a device is born within a live edge-node session.
    if (node === undefined || !node.online) return this.needsRebirth(group, edge, rejection('UNS_ERR_SPARKPLUG_STATE', topic, 'DBIRTH before NBIRTH'));
    const warning = this.seq(node, payload);
    if (!node.devices.has(device) && node.devices.size >= this.maxDevicesPerNode) {
      return rejection('UNS_ERR_SPARKPLUG_STATE', topic, `more than ${this.maxDevicesPerNode} devices on edge node ${edge}`);
    }
    const built = this.pointsFromBirth(group, edge, device, payload, receivedAt);
    if (built instanceof ConvertError) return rejection(built.code, topic, built.reason);
    const scope = newScope(built.defs);
    if (scope instanceof ConvertError) return rejection(scope.code, topic, scope.reason);
    const taken = this.topics?.claim(`${nodeKey}/${device}`, built.defs) ?? null;
    if (taken !== null) return rejection('UNS_ERR_SPARKPLUG_METRIC', topic, taken);
    scope.bornAt = receivedAt;
    node.devices.set(device, scope);
    return {
      kind: 'metrics',
      messageType: 'DBIRTH',
      group,
      edge,
      device,
      seq: node.seq,
      points: built.points,
      birth: { metrics: built.defs.map(publicDef) },
      warning,
    };
  }

  private data(
    topic: string,
    messageType: 'NDATA' | 'DDATA',
    nodeKey: string,
    group: string,
    edge: string,
    device: string | undefined,
    payload: WirePayload,
    receivedAt: number,
  ): SparkplugDecodeResult {
    const node = this.nodes.get(nodeKey);
    // [tck-id-principles-birth-certificates-order] without the BIRTH there are no aliases or datatypes.
    if (node === undefined || !node.online) {
      return this.needsRebirth(group, edge, rejection('UNS_ERR_SPARKPLUG_STATE', topic, `${messageType} before NBIRTH`));
    }
    let scope: Scope | undefined = node;
    if (device !== undefined) {
      scope = node.devices.get(device);
      if (scope === undefined || !scope.online) return this.needsRebirth(group, edge, rejection('UNS_ERR_SPARKPLUG_STATE', topic, 'DDATA before DBIRTH'));
    }
    // seq advances even if the metrics are refused below: the node did spend that number.
    const warning = this.seq(node, payload);
    const payloadTime = this.payloadTime(payload, receivedAt);
    if (payloadTime instanceof ConvertError) return rejection(payloadTime.code, topic, payloadTime.reason);
    const points: Point[] = [];
    for (const m of payload.metrics) {
      let def: MetricDef | undefined;
      let name: string;
      // Some encoders write name "" beside an alias; an empty name identifies nothing, so the alias rules.
      if (Object.hasOwn(m, 'name') && m.name !== '') {
        name = m.name as string;
        def = scope.byName.get(name);
        // [tck-id-topics-nbirth-metric-reqs] [tck-id-topics-dbirth-metric-reqs] the BIRTH holds every metric the
        // node or device will ever report in this session; one it did not declare has no datatype to check.
        if (def === undefined) return rejection('UNS_ERR_SPARKPLUG_METRIC', topic, `metric "${name}" is not in the BIRTH`);
      } else if (Object.hasOwn(m, 'alias')) {
        const alias = exact64(m.alias as U64, false);
        def = scope.byAlias.get(alias);
        if (def === undefined) return this.needsRebirth(group, edge, rejection('UNS_ERR_SPARKPLUG_STATE', topic, `unknown alias ${String(alias)}`));
        name = def.name;
      } else {
        // [tck-id-payloads-name-requirement] a metric is identified by name or, after BIRTH, by alias.
        return rejection('UNS_ERR_DECODE_SPARKPLUG', topic, 'metric has neither name nor alias');
      }
      // [tck-id-payloads-metric-datatype-value] a metric keeps the datatype its BIRTH gave it.
      if (Object.hasOwn(m, 'datatype') && m.datatype !== 0 && def.datatype !== 0 && m.datatype !== def.datatype) {
        return rejection('UNS_ERR_SPARKPLUG_METRIC', topic,
          `metric "${name}" is ${datatypeName(m.datatype as number)} here but ${datatypeName(def.datatype)} in its BIRTH`);
      }
      const datatype = def.datatype !== 0 ? def.datatype : (m.datatype ?? 0);
      const point = this.point(def, m, datatype, payloadTime, receivedAt);
      if (point instanceof ConvertError) return rejection(point.code, topic, point.reason);
      points.push(point);
    }
    return { kind: 'metrics', messageType, group, edge, device, seq: node.seq, points, warning };
  }

  private ndeath(topic: string, nodeKey: string, group: string, edge: string, payload: WirePayload, receivedAt: number): SparkplugDecodeResult {
    const node = this.nodes.get(nodeKey);
    if (node === undefined) return rejection('UNS_ERR_SPARKPLUG_STATE', topic, 'NDEATH for an edge node never born');
    // [tck-id-payloads-ndeath-bdseq] NDEATH carries the bdSeq of the session it ends. A different one is
    // the Will of an older session delivered late: honouring it would mark a live node offline.
    const bdSeq = bdSeqOf(payload);
    if (bdSeq === undefined) return rejection('UNS_ERR_SPARKPLUG_STATE', topic, 'NDEATH without an integer bdSeq metric');
    if (bdSeq !== node.bdSeq) {
      this.listener?.staleDeath(group, edge);
      return rejection('UNS_ERR_SPARKPLUG_STATE', topic, `stale NDEATH: bdSeq ${String(bdSeq)}, current session ${String(node.bdSeq)}`);
    }
    // [tck-id-operational-behavior-edge-node-termination-host-action-ndeath-node-offline] and -devices-offline:
    // the node and every device offline; -node-tags-stale and -devices-tags-stale: all their metrics stale,
    // at the host's receive time.
    const points: Point[] = [];
    if (node.online) stalePoints(points, node, receivedAt);
    node.online = false;
    node.diedAt = receivedAt;
    node.missing.clear();
    for (const d of node.devices.values()) {
      if (d.online) stalePoints(points, d, receivedAt);
      d.online = false;
    }
    // [tck-id-payloads-ndeath-seq] NDEATH has no seq, so the node's sequence is left alone.
    return { kind: 'metrics', messageType: 'NDEATH', group, edge, points, death: true };
  }

  private ddeath(topic: string, nodeKey: string, group: string, edge: string, device: string, payload: WirePayload, receivedAt: number): SparkplugDecodeResult {
    const node = this.nodes.get(nodeKey);
    if (node === undefined || !node.online) return rejection('UNS_ERR_SPARKPLUG_STATE', topic, 'DDEATH before NBIRTH');
    const scope = node.devices.get(device);
    if (scope === undefined) return rejection('UNS_ERR_SPARKPLUG_STATE', topic, 'DDEATH for a device never born');
    const warning = this.seq(node, payload);
    // [tck-id-operational-behavior-edge-node-termination-host-action-ddeath-devices-offline] and
    // -ddeath-devices-tags-stale: the device offline and its metrics stale, at the host's receive time.
    const points: Point[] = [];
    if (scope.online) stalePoints(points, scope, receivedAt);
    scope.online = false;
    return { kind: 'metrics', messageType: 'DDEATH', group, edge, device, seq: node.seq, points, death: true, warning };
  }

  /** The seq check, telling the listener when a gap opens. */
  private seq(node: NodeState, payload: WirePayload): SparkplugWarning | undefined {
    const r = advanceSeq(node, payload);
    const gap = r?.gap;
    if (gap !== undefined) {
      if (gap.awaited) this.listener?.gapOpened(node.group, node.edge, gap.expected, gap.got);
      else this.listener?.rebirthNeeded(node.group, node.edge, `sequence gap: expected ${gap.expected}, got ${gap.got}`);
    }
    return r?.warning;
  }

  private needsRebirth(group: string, edge: string, r: Rejection): Rejection {
    this.listener?.rebirthNeeded(group, edge, r.reason);
    return r;
  }

  // ----------------------------------------------------------------------------------------------- metrics

  private pointsFromBirth(
    group: string,
    edge: string,
    device: string | undefined,
    payload: WirePayload,
    receivedAt: number,
  ): { defs: MetricDef[]; points: Point[] } | ConvertError {
    const payloadTime = this.payloadTime(payload, receivedAt);
    if (payloadTime instanceof ConvertError) return payloadTime;
    const defs: MetricDef[] = [];
    const points: Point[] = [];
    for (const m of payload.metrics) {
      // [tck-id-payloads-alias-birth-requirement] BIRTH metrics carry the name (and the alias, if used).
      if (!Object.hasOwn(m, 'name')) return new ConvertError('UNS_ERR_DECODE_SPARKPLUG', 'BIRTH metric without a name');
      const name = m.name as string;
      const datatype = m.datatype ?? 0;
      const alias = Object.hasOwn(m, 'alias') ? exact64(m.alias as U64, false) : undefined;
      // bdSeq is session bookkeeping, not process data.
      if (name === 'bdSeq') { defs.push({ name, datatype, alias, topic: '', path: null }); continue; }
      const at = this.topicOf(group, edge, device, name);
      if (at instanceof ConvertError) return at;
      const def: MetricDef = { name, datatype, alias, topic: at.topic, path: at.path };
      defs.push(def);
      const point = this.point(def, m, datatype, payloadTime, receivedAt);
      if (point instanceof ConvertError) return point;
      points.push(point);
    }
    return { defs, points };
  }

  private payloadTime(payload: WirePayload, receivedAt: number): number | ConvertError {
    if (!Object.hasOwn(payload, 'timestamp')) return receivedAt;
    return this.timestamp(payload.timestamp as U64, receivedAt, 'payload');
  }

  /** A timestamp within [2000-01-01, receive time + maxFutureMs], as on the JSON path. */
  private timestamp(raw: U64, receivedAt: number, what: string): number | ConvertError {
    const t = exact64(raw, false);
    if (typeof t !== 'number' || t < MIN_TIMESTAMP_MS) {
      return new ConvertError('UNS_ERR_TIMESTAMP_RANGE', `${what} timestamp ${String(t)} is before 2000-01-01 (epoch milliseconds expected)`);
    }
    if (t > receivedAt + this.maxFutureMs) {
      return new ConvertError('UNS_ERR_TIMESTAMP_RANGE', `${what} timestamp ${new Date(t).toISOString()} is more than ${this.maxFutureMs} ms ahead of the server clock`);
    }
    return t;
  }

  private point(def: MetricDef, m: WireMetric, datatype: number, payloadTime: number, receivedAt: number): Point | ConvertError {
    const name = def.name;
    let timestamp = payloadTime;
    if (Object.hasOwn(m, 'timestamp')) {
      const t = this.timestamp(m.timestamp as U64, receivedAt, `metric "${name}"`);
      if (t instanceof ConvertError) return t;
      timestamp = t;
    }
    const value = m.isNull === true ? null : this.values.metricValue(m, datatype, 0, false);
    if (value instanceof ConvertError) return value;
    let quality: Quality = value === null ? 'bad' : 'good';
    if (m.properties != null) {
      const q = propertyNumber(m.properties, 'Quality');
      if (q !== undefined) quality = qualityOf(q);
    }
    // is_historical: late data for history, not the current value; is_transient: current, not for history.
    const topic = def.topic;
    if (def.path !== null) {
      if (m.isHistorical === true) return { topic, value, timestamp, quality, historical: true, path: def.path };
      if (m.isTransient === true) return { topic, value, timestamp, quality, transient: true, path: def.path };
      return { topic, value, timestamp, quality, path: def.path };
    }
    if (m.isHistorical === true) return { topic, value, timestamp, quality, historical: true };
    if (m.isTransient === true) return { topic, value, timestamp, quality, transient: true };
    return { topic, value, timestamp, quality };
  }

  // --------------------------------------------------------------------------------------------- snapshot

  /** The decoder state as plain JSON (64-bit numbers as decimal strings), for persistence. */
  snapshot(): SparkplugSnapshot {
    const nodes: SparkplugSnapshotNode[] = [];
    for (const n of this.nodes.values()) {
      const devices: (SparkplugSnapshotScope & { id: string })[] = [];
      for (const [id, d] of n.devices) devices.push({ id, online: d.online, metrics: d.defs.map(snapshotDef) });
      nodes.push({
        group: n.group,
        edge: n.edge,
        online: n.online,
        bdSeq: n.bdSeq === null ? null : String(n.bdSeq),
        seq: n.seq,
        metrics: n.defs.map(snapshotDef),
        devices,
      });
    }
    return { version: 1, nodes };
  }

  /** Replaces the state with a snapshot. All or nothing: on a malformed snapshot the state is unchanged. */
  restore(snapshot: unknown): SparkplugRestoreResult {
    const fail = (reason: string): SparkplugRestoreResult => ({ ok: false, code: 'UNS_ERR_SPARKPLUG_STATE', reason: `bad snapshot: ${reason}` });
    if (!isRecord(snapshot) || snapshot['version'] !== 1 || !Array.isArray(snapshot['nodes'])) return fail('expected { version: 1, nodes: [] }');
    const nodes = new Map<string, NodeState>();
    for (const raw of snapshot['nodes'] as unknown[]) {
      if (!isRecord(raw)) return fail('node is not an object');
      const { group, edge, online, bdSeq, seq, devices } = raw;
      if (typeof group !== 'string' || typeof edge !== 'string' || group === '' || edge === '') return fail('node group/edge');
      if (typeof online !== 'boolean') return fail(`node ${group}/${edge}: online`);
      if (!(bdSeq === null || (typeof bdSeq === 'string' && /^-?\d{1,20}$/.test(bdSeq)))) return fail(`node ${group}/${edge}: bdSeq`);
      if (typeof seq !== 'number' || !Number.isInteger(seq) || seq < 0 || seq > 255) return fail(`node ${group}/${edge}: seq`);
      if (!Array.isArray(devices)) return fail(`node ${group}/${edge}: devices`);
      const scope = restoreScope(raw, (name) => this.topicOf(group, edge, undefined, name));
      if (typeof scope === 'string') return fail(`node ${group}/${edge}: ${scope}`);
      const deviceMap = new Map<string, Scope>();
      for (const d of devices as unknown[]) {
        if (!isRecord(d) || typeof d['id'] !== 'string' || d['id'] === '') return fail(`node ${group}/${edge}: device id`);
        const ds = restoreScope(d, (name) => this.topicOf(group, edge, d['id'] as string, name));
        if (typeof ds === 'string') return fail(`device ${group}/${edge}/${d['id']}: ${ds}`);
        deviceMap.set(d['id'], ds);
      }
      nodes.set(`${group}/${edge}`, {
        ...scope,
        group,
        edge,
        bdSeq: bdSeq === null ? null : exactFromString(bdSeq),
        seq,
        devices: deviceMap,
        missing: new Set(),
        bornAt: null,
        diedAt: null,
      });
    }
    for (const k of this.nodes.keys()) {
      this.topics?.release(k);
      for (const d of this.nodes.get(k)?.devices.keys() ?? []) this.topics?.release(`${k}/${d}`);
    }
    this.nodes.clear();
    for (const [k, v] of nodes) {
      this.nodes.set(k, v);
      this.topics?.claim(k, v.defs);
      for (const [id, d] of v.devices) this.topics?.claim(`${k}/${id}`, d.defs);
    }
    return { ok: true };
  }
}

// ------------------------------------------------------------------------------------------------ helpers

/**
 * A metric name as topic levels. Sparkplug names use '/' for folders, which become levels. '+' and '#' would
 * make a stored topic a wildcard filter, so they are percent-encoded ('%' too, so the mapping is one to
 * one): "Tank+Level#2" -> "Tank%2BLevel%232". A name with U+0000 or an empty level ("a//b", "/a", "a/")
 * cannot be a topic and is refused.
 */
export function metricTopic(name: string): string | ConvertError {
  if (name === '' || name.includes('\u0000')) return new ConvertError('UNS_ERR_SPARKPLUG_METRIC', 'metric name is empty or holds U+0000');
  if (name.startsWith('/') || name.endsWith('/') || name.includes('//')) {
    return new ConvertError('UNS_ERR_SPARKPLUG_METRIC', `metric name "${name}" has an empty topic level`);
  }
  return /[%+#]/.test(name) ? name.replace(/[%+#]/g, (c) => (c === '%' ? '%25' : c === '+' ? '%2B' : '%23')) : name;
}

/** One stale point per metric of a scope (bdSeq is bookkeeping, not a metric of the process). */
function stalePoints(out: Point[], scope: Scope, at: number): void {
  for (const d of scope.defs) {
    if (d.topic === '') continue;
    out.push(d.path === null ? { topic: d.topic, value: null, timestamp: at, quality: 'stale' } : { topic: d.topic, value: null, timestamp: at, quality: 'stale', path: d.path });
  }
}


/**
 * Counts field-2 (metrics) entries at the top level of a Payload by walking the wire format, stopping
 * once past `limit`. Cheap: it reads tags and lengths and skips bodies. Malformed input returns what was
 * counted so far; the protobuf decoder then reports the error itself.
 */
