/** Live fan-out as a sink: every accepted message goes to the hub's WebSocket/SSE subscribers at once. */
import type { Sink } from '../sink.js';
import type { LiveHub } from './hub.js';

export function liveSink(hub: LiveHub): Sink {
  return { name: 'live', when: 'accepted', accept: (m) => hub.publish(m) };
}
