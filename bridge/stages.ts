/**
 * The ingest stages: route -> ISA-95 levels -> decode -> validate. Each stage reads and fills in the draft
 * of one publish and returns null (go on) or a coded Rejection (stop). The runner allocates nothing per
 * stage, as Aedes runs [authorizePublish, enqueuePublish]. Stages never throw (a decoder's own safety net
 * turns a bug into a rejection) and do no I/O. Adding a stage is one entry in the array `buildStages` returns.
 */
import type { ValidateFunction } from 'ajv';
import type { Logger } from '../src/core/index.js';
import { isRejection, rejection, type InboundRecord, type Isa95Path, type JsonValue, type Point, type Rejection, type SessionChange } from '../src/core/index.js';
import type { Namespace, RouteSpec } from '../src/core/index.js';
import { decodeValuePayload } from './decode/envelope.js';
import type { SparkplugDecoder } from './decode/sparkplug.js';

/** One publish on its way through the stages: the record, then what each stage has found out. */
export interface Draft {
  readonly record: InboundRecord;
  /** Set by route. */
  route: RouteSpec | undefined;
  /** Set by levels (routes with ISA-95 levels). */
  path: Isa95Path | null;
  /** Set by decode. */
  points: readonly Point[];
  /** The decoded JSON document (validate checks it against the route's schema). */
  document: JsonValue | undefined;
  /** A piece of server state this message changed, to be stored with it (Sparkplug alias tables). */
  stateKey: string | undefined;
  /** Set by decode for a Sparkplug BIRTH or DEATH. */
  session: SessionChange | undefined;
}

export type Stage = (d: Draft) => Rejection | null;

export function draftOf(record: InboundRecord): Draft {
  return { record, route: undefined, path: null, points: [], document: undefined, stateKey: undefined, session: undefined };
}

/** Runs the stages in order; the first rejection ends the run. */
export function runStages(stages: readonly Stage[], d: Draft): Rejection | null {
  for (let i = 0; i < stages.length; i++) {
    const r = (stages[i] as Stage)(d);
    if (r !== null) return r;
  }
  return null;
}

export interface StageOptions {
  readonly namespace: Namespace;
  readonly schemas: ReadonlyMap<string, ValidateFunction>;
  readonly sparkplug: SparkplugDecoder;
  readonly limits: { readonly maxBytes: number; readonly maxDepth: number };
  readonly log: Logger;
  /** Counted by the pipeline (a Sparkplug payload that was stored, with a remark). */
  readonly onSparkplugWarning?: () => void;
}

/** The route, matched once per message; every later stage and the sinks use it. */
export function routeStage(namespace: Namespace): Stage {
  return (d) => {
    d.route = namespace.matchRoute(d.record.topic) ?? undefined;
    return d.route ? null : rejection('UNS_ERR_NO_ROUTE', d.record.topic, 'no route in topics.yaml matches this topic');
  };
}

/** The topic's ISA-95 levels against the names and patterns of topics.yaml; verdicts cached per topic. */
export function levelsStage(namespace: Namespace): Stage {
  const cache = new Map<string, ReturnType<Namespace['checkLevels']>>();
  return (d) => {
    if (!d.route?.isa95) return null;
    const topic = d.record.topic;
    let check = cache.get(topic);
    if (check === undefined) {
      check = namespace.checkLevels(topic);
      if (cache.size >= 100_000) cache.clear();
      cache.set(topic, check);
    }
    if ('reason' in check) return rejection('UNS_ERR_ISA95_LEVEL', topic, check.reason);
    d.path = check.path;
    return null;
  };
}

/** Payload -> points: Sparkplug B, or JSON envelopes and plain values. */
export function decodeStage(opts: Pick<StageOptions, 'sparkplug' | 'limits' | 'log' | 'onSparkplugWarning'>): Stage {
  return (d) => {
    const route = d.route as RouteSpec;
    const { topic, payload, receivedAt } = d.record;
    if (route.encoding === 'sparkplugb') {
      const r = opts.sparkplug.decode(topic, payload, receivedAt);
      if (isRejection(r)) return r;
      if (r.kind !== 'metrics') return null;
      d.points = r.points;
      // Births and deaths change the alias tables a restart must get back.
      if (r.birth !== undefined || r.death === true) {
        d.stateKey = 'sparkplug';
        const certificate = r.messageType === 'DDEATH' ? undefined : { topic: `$sparkplug/certificates/${topic}`, payload };
        d.session = { online: r.death !== true, group: r.group, edge: r.edge, device: r.device, certificate };
      }
      if (r.warning) {
        opts.onSparkplugWarning?.();
        opts.log.info({ topic, code: r.warning.code, reason: r.warning.reason }, 'sparkplug warning');
      }
      return null;
    }
    const r = decodeValuePayload(payload, route.encoding, { topic, receivedAt, unit: route.unit, limits: opts.limits });
    if (isRejection(r)) return r;
    d.points = r.points;
    d.document = r.document;
    return null;
  };
}

/** The decoded document against the route's JSON Schema (compiled once at start-up). */
export function validateStage(schemas: ReadonlyMap<string, ValidateFunction>): Stage {
  return (d) => {
    const route = d.route as RouteSpec;
    if (route.schema === undefined || d.document === undefined) return null;
    const validate = schemas.get(route.schema);
    if (!validate) return null;
    const doc = hasBigint(d.document) ? forValidation(d.document) : d.document;
    if (validate(doc)) return null;
    const e = validate.errors?.[0];
    return rejection('UNS_ERR_SCHEMA_VIOLATION', d.record.topic,
      `schema ${route.schema}: ${e ? `${e.instancePath || '/'} ${e.message ?? ''}`.trim() : 'invalid'}`);
  };
}

export function buildStages(opts: StageOptions): Stage[] {
  return [routeStage(opts.namespace), levelsStage(opts.namespace), decodeStage(opts), validateStage(opts.schemas)];
}

/** ajv checks `number` with typeof, so exact big integers are shown to it as (approximate) numbers. */
function forValidation(doc: JsonValue): unknown {
  if (typeof doc === 'bigint') return Number(doc);
  if (Array.isArray(doc)) return doc.map(forValidation);
  if (doc !== null && typeof doc === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(doc)) out[k] = forValidation(v);
    return out;
  }
  return doc;
}

function hasBigint(doc: JsonValue): boolean {
  if (typeof doc === 'bigint') return true;
  if (doc !== null && typeof doc === 'object') return Object.values(doc).some(hasBigint);
  return false;
}
