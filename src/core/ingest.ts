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
