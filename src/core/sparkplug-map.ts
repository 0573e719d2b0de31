/**
 * The `sparkplug.map` section of topics.yaml: where Sparkplug metrics live in the ISA-95 namespace.
 *
 *   sparkplug:
 *     map:
 *       - group: plant1                 # exact id, or "+" for any
 *         node: "+"                     # default "+"
 *         device: filler                # exact, "+" for any device; absent: the node's own metrics
 *         path: acme/plant1/packaging/line1/{device}   # {group} {node} {device} are filled in
 *         metrics: { "Motor/Speed": speed }            # optional: metric name -> topic tail
 *
 * A metric matched by the first entry (in file order) is stored and fanned out as `<path>/<tail>`, where the
 * tail is its rename or its name (with '/' folders as levels and +, # and % percent-encoded, as unmapped
 * Sparkplug topics). Unmatched metrics keep `spBv1.0/<group>/<node>[/<device>]/<name>`.
 */
import type { Isa95Path } from './message.js';
import { validateTopicName } from './topic-filter.js';

export interface SparkplugMapEntry {
  readonly group: string;
  readonly node: string;
  /** null: the node's own metrics (no device); '+': any device. */
  readonly device: string | null;
  readonly path: string;
  readonly metrics: ReadonlyMap<string, string>;
}

export interface RawSparkplugMapEntry {
  group: string;
  node?: string;
  device?: string;
  path: string;
  metrics?: Record<string, string>;
}

type PathSeg = string | number;
type AddProblem = (path: readonly PathSeg[], message: string, at?: 'key' | 'value') => void;

const PLACEHOLDER = /\{(group|node|device)\}/g;
const HAS_PLACEHOLDER = /\{(group|node|device)\}/;

export function fillPath(path: string, group: string, node: string, device: string | null): string {
  return path.replace(PLACEHOLDER, (_m, k: string) => (k === 'group' ? group : k === 'node' ? node : (device ?? '')));
}

/**
 * Checks the entries; the explicit renames of fully named entries (no '+', no placeholder) are checked
 * for collisions now: two Sparkplug metrics on one ISA-95 topic is a start-up error naming both. Other
 * collisions can only show when births arrive, and are refused then.
 */
export function buildSparkplugMap(raw: readonly RawSparkplugMapEntry[], add: AddProblem, checkLevels: (topic: string) => { path: Isa95Path } | { reason: string }): SparkplugMapEntry[] {
  const out: SparkplugMapEntry[] = [];
  const owners = new Map<string, string>();
  raw.forEach((r, i) => {
    const at = ['sparkplug', 'map', i] as const;
    const device = r.device ?? null;
    if (device === null && r.path.includes('{device}')) add([...at, 'path'], '{device} is used but the entry maps node metrics (no device)');
    const sample = fillPath(r.path, 'g', 'n', 'd');
    const bad = validateTopicName(sample);
    if (bad !== null || r.path.startsWith('spBv1.0/') || r.path.startsWith('$')) {
      add([...at, 'path'], `not a topic path for the namespace: ${bad ?? 'spBv1.0/ and $ topics are not ISA-95 paths'}`);
    }
    const metrics = new Map(Object.entries(r.metrics ?? {}));
    const fixed = r.group !== '+' && (r.node ?? '+') !== '+' && device !== '+' && !HAS_PLACEHOLDER.test(r.path);
    for (const [name, tail] of metrics) {
      const topic = `${r.path}/${tail}`;
      const why = validateTopicName(fillPath(topic, 'g', 'n', 'd'));
      if (why !== null) { add([...at, 'metrics', name], `not a topic tail: ${why}`); continue; }
      if (!fixed) continue;
      const check = checkLevels(topic);
      if ('reason' in check) add([...at, 'metrics', name], `${topic}: ${check.reason}`);
      const owner = `sparkplug.map[${i}].metrics["${name}"]`;
      const other = owners.get(topic);
      if (other !== undefined) add([...at, 'metrics', name], `${topic} is also the topic of ${other}: two Sparkplug metrics cannot share one topic`);
      else owners.set(topic, owner);
    }
    out.push({ group: r.group, node: r.node ?? '+', device, path: r.path, metrics });
  });
  return out;
}
