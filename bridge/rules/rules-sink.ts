/** Threshold rules as a sink: judged once a message is durable, so an event never speaks of an unstored value. */
import type { UnsMessage } from '../../src/core/index.js';
import type { Sink } from '../sinks/sink.js';

/**
 * Rules judge current values: a DEATH's stale marks carry no value, and Sparkplug is_historical points are
 * late data, not the present (they would cross thresholds that were crossed long ago).
 */
export function rulesSink(onMessage: (m: UnsMessage) => void): Sink {
  return {
    name: 'rules', when: 'durable',
    accept(m) {
      if (m.session?.online === false) return;
      if (!m.points.some((p) => p.historical)) { onMessage(m); return; }
      const points = m.points.filter((p) => !p.historical);
      if (points.length > 0) onMessage({ ...m, points });
    },
  };
}
