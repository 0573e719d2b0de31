/**
 * Sparkplug metrics into the ISA-95 namespace, by the `sparkplug.map` table of topics.yaml
 * (src/core/sparkplug-map.ts): the first entry matching a metric's group, node and device gives its topic.
 * Each mapped topic belongs to one metric: a BIRTH whose metric would land on a topic another live
 * metric holds is refused, naming both (two sources writing one topic would interleave in its history).
 */
import type { Isa95Path, SparkplugMapEntry } from '../../src/core/index.js';
import { fillPath } from '../../src/core/index.js';
import { metricTopic, type SparkplugTopicMap, type MappedTopic } from '../decode/sparkplug.js';
import { ConvertError } from '../decode/sparkplug-wire.js';

const NAMESPACE = 'spBv1.0';

export class SparkplugMapper implements SparkplugTopicMap {
  /** topic -> owner (`group/node[/device]:metric`). */
  private readonly owners = new Map<string, string>();
  /** owner scope (`group/node[/device]`) -> the topics it holds. */
  private readonly held = new Map<string, string[]>();

  constructor(
    private readonly entries: readonly SparkplugMapEntry[],
    private readonly checkLevels: (topic: string) => { readonly path: Isa95Path } | { readonly reason: string },
  ) {}

  get mapping(): boolean {
    return this.entries.length > 0;
  }

  topicOf(group: string, edge: string, device: string | undefined, name: string): MappedTopic | ConvertError {
    const e = this.entries.find((x) => (x.group === '+' || x.group === group) && (x.node === '+' || x.node === edge)
      && (device === undefined ? x.device === null : x.device === '+' || x.device === device));
    if (e === undefined) {
      const level = metricTopic(name);
      if (level instanceof ConvertError) return level;
      return { topic: `${NAMESPACE}/${group}/${edge}/${device === undefined ? '' : `${device}/`}${level}`, path: null };
    }
    const tail = e.metrics.get(name) ?? metricTopic(name);
    if (tail instanceof ConvertError) return tail;
    const topic = `${fillPath(e.path, group, edge, device ?? null)}/${tail}`;
    const check = this.checkLevels(topic);
    if ('reason' in check) return new ConvertError('UNS_ERR_ISA95_LEVEL', `metric "${name}" maps to ${topic}: ${check.reason}`);
    return { topic, path: check.path };
  }

  claim(scope: string, all: ReadonlyArray<{ readonly name: string; readonly topic: string }>): string | null {
    if (!this.mapping) return null;
    // Unmapped topics are one per metric by construction ('' is bdSeq, which has none).
    const metrics = all.filter((m) => m.topic !== '' && !m.topic.startsWith(`${NAMESPACE}/`));
    for (const m of metrics) {
      const owner = this.owners.get(m.topic);
      if (owner !== undefined && !owner.startsWith(`${scope}:`)) {
        return `metric "${m.name}" maps to ${m.topic}, which is the topic of ${owner}: two Sparkplug metrics cannot share one topic`;
      }
    }
    this.release(scope);
    const topics: string[] = [];
    for (const m of metrics) {
      this.owners.set(m.topic, `${scope}:${m.name}`);
      topics.push(m.topic);
    }
    this.held.set(scope, topics);
    return null;
  }

  release(scope: string): void {
    for (const t of this.held.get(scope) ?? []) if (this.owners.get(t)?.startsWith(`${scope}:`)) this.owners.delete(t);
    this.held.delete(scope);
  }
}
