/**
 * Where accepted messages go. The store sink comes first and owns the acknowledgement (see
 * bridge/sinks/store/store-sink.ts); every other sink shares this interface and says when it wants a message:
 *
 *   'accepted' — as soon as the stages accepted it (live fan-out to WebSocket/SSE: latency matters; the value
 *                may still be lost with the process if it was not yet durable, as for any live view);
 *   'durable'  — once it is stored (or spooled) for good: threshold rules and webhooks, so an event never
 *                speaks of a value the store does not have. A message the store does not keep (a route
 *                with `store: false`) is durable at once.
 *
 * Every sink sees a message once: a re-sent QoS 1/2 message recognised as its original's twin is
 * acknowledged with the original and reaches no sink again. A sink must not throw or block: it queues or
 * drops by its own bounded policy.
 */
import type { UnsMessage } from '../../src/core/index.js';

export type SinkMoment = 'accepted' | 'durable';

export interface Sink {
  readonly name: string;
  readonly when: SinkMoment;
  accept(msg: UnsMessage): void;
}
