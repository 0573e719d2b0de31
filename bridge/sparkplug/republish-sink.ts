/**
 * Sparkplug metrics mapped into the ISA-95 namespace, republished as plain JSON on their ISA-95 topic once
 * durable, so an MQTT subscriber to `acme/#` sees them as it sees any JSON device:
 *   {"value": 21.5, "timestamp": 1733300000000, "quality": "good"}
 * A death's stale marks go out too (value null, quality "stale"); is_historical points do not (late data,
 * not the present). Exact integers beyond 2^53 stay exact; bytes are base64.
 */
import { Buffer } from 'node:buffer';
import type { JsonValue, Point } from '../../src/core/index.js';
import { stringifyJson } from '../decode/json-exact.js';
import type { Sink } from '../sinks/sink.js';

export function normalisedJson(p: Point): Buffer {
  const v = p.value instanceof Uint8Array ? Buffer.from(p.value).toString('base64') : (p.value as JsonValue);
  return Buffer.from(`{"value":${stringifyJson(v)},"timestamp":${p.timestamp},"quality":"${p.quality}"}`);
}

export function republishSink(publish: (topic: string, payload: Buffer) => Promise<void>, onError: (topic: string, e: Error) => void): Sink {
  return {
    name: 'sparkplug-republish', when: 'durable',
    accept(m) {
      if (m.encoding !== 'sparkplugb') return;
      for (const p of m.points) {
        if (p.path === undefined || p.historical) continue;
        publish(p.topic, normalisedJson(p)).catch((e: Error) => onError(p.topic, e));
      }
    },
  };
}
