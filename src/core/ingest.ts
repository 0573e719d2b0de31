/**
 * The hand-off between the broker and the bridge. The broker knows nothing of sinks: main.ts gives it
 * the bridge's ingest function, which calls `done` when the broker may acknowledge the publish
 * (QoS > 0: once durable; QoS 0: at once unless the pipeline is behind).
 */
import type { InboundRecord, Rejection } from './message.js';

export interface IngestOutcome {
  /** Set when the message was refused: the broker republishes it to $uns/rejected/<topic>. */
  readonly rejection?: Rejection | undefined;
  /** Set when it could not be made durable: the broker must not acknowledge (the client will resend). */
  readonly error?: Error | undefined;
}

export type IngestFn = (record: InboundRecord, done: (outcome: IngestOutcome) => void) => void;

/** Topic prefix of the dead-letter path. Clients may subscribe to it (with permission), never publish. */
export const REJECTED_PREFIX = '$uns/rejected/';

/**
 * The dead-letter message published on REJECTED_PREFIX + topic for a refused publish, whatever door it came
 * through: the code and reason, who sent it, when, and the first KiB of its payload.
 */
export function deadLetter(rej: Rejection, record: InboundRecord): Buffer {
  const payload = Buffer.from(record.payload.buffer, record.payload.byteOffset, record.payload.byteLength);
  return Buffer.from(JSON.stringify({
    code: rej.code, reason: rej.reason, topic: record.topic, clientId: record.source.clientId,
    receivedAt: new Date(record.receivedAt).toISOString(), payloadBase64: payload.subarray(0, 1024).toString('base64'), payloadBytes: payload.length,
  }));
}
