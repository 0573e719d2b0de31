/** The sensor.reading event source: every point of a stored message, once durable, built only when an endpoint takes it. */
import { eventId, type UnsEvent } from '../../../src/core/index.js';
import type { Sink } from '../sink.js';

export function sensorReadingSink(wants: (type: 'sensor.reading') => boolean, emit: (e: UnsEvent) => void): Sink {
  return {
    name: 'webhooks', when: 'durable',
    accept(m) {
      // A DEATH's stale marks are not readings: it is told as device.offline (sessionEventsSink).
      if (!m.store || m.session?.online === false || !wants('sensor.reading')) return;
      for (const p of m.points) {
        emit({ id: eventId(m.receivedAt), type: 'sensor.reading', occurredAt: m.receivedAt, topic: p.topic,
          data: { value: p.value, timestamp: p.timestamp, quality: p.quality, unit: p.unit } });
      }
    },
  };
}
