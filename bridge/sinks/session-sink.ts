/**
 * Sparkplug sessions as events: a durable BIRTH is `device.online`, a durable DEATH `device.offline`, for
 * webhooks and rules alike (MQTT connects and disconnects are told by the broker's part, with source 'mqtt').
 */
import { eventId, type UnsEvent } from '../../src/core/index.js';
import type { Sink } from './sink.js';

export function sessionEventsSink(emit: (e: UnsEvent) => void): Sink {
  return {
    name: 'sessions', when: 'durable',
    accept(m) {
      const s = m.session;
      if (s === undefined) return;
      emit({
        id: eventId(m.receivedAt), type: s.online ? 'device.online' : 'device.offline', occurredAt: m.receivedAt,
        data: { source: 'sparkplug', client_id: m.source.clientId, group_id: s.group, edge_node_id: s.edge, device_id: s.device ?? null },
      });
    },
  };
}
