/**
 * The HTTP door into the namespace (POST /api/v1/publish and signed ingest): a write becomes an
 * InboundRecord and meets the same pipeline as an MQTT publish; once it is durable it is delivered to MQTT
 * subscribers as the server, or, refused, to the dead-letter topic, as the broker does for MQTT.
 */
import { REJECTED_PREFIX, deadLetter, type IngestFn, type IngestOutcome, type InboundRecord } from '../core/index.js';
import type { ApiDeps } from './deps.js';

export interface HttpDoorOptions {
  readonly ingest: IngestFn;
  /** Publishes to MQTT subscribers as the server (retain honoured). */
  readonly deliver: (topic: string, payload: Buffer, retain: boolean) => Promise<void>;
  /** Why nothing can be made durable right now (the spool is holding), or null. */
  readonly holding: () => string | null;
  readonly now?: () => number;
}

export function httpPublisher(opts: HttpDoorOptions): ApiDeps['publish'] {
  const now = opts.now ?? Date.now;
  let seq = 0;
  return (topic, payload, principal, o) => new Promise<IngestOutcome>((resolve) => {
    // An HTTP caller cannot be back-pressured like a socket: while the spool holds, refuse at once (503,
    // retry) rather than keep the request open until the database returns.
    const holding = opts.holding();
    if (holding !== null) { resolve({ error: new Error(`not durable now: ${holding}`) }); return; }
    const record: InboundRecord = {
      topic, payload,
      source: { protocol: 'http', clientId: `http:${principal.username}`, username: principal.username, packetId: (seq++ % 65535) + 1, qos: 1, retain: o.retain, dup: false },
      receivedAt: now(),
    };
    opts.ingest(record, (out) => {
      if (out.error) { resolve(out); return; }
      const delivered = out.rejection
        ? opts.deliver(REJECTED_PREFIX + topic, deadLetter(out.rejection, record), false)
        : opts.deliver(topic, payload, o.retain);
      delivered.then(() => resolve(out), () => resolve(out));
    });
  });
}
