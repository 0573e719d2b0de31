/**
 * The live-stream policy (WebSocket and SSE) as data: batching, the slow-consumer bounds, heartbeats.
 * Every number here bounds memory or time per connection; docs/guarantees.md ("slow WebSocket consumers:
 * bounded buffer per connection, then drop with a notice or close; never stalls others").
 */

export interface LivePolicy {
  /**
   * Frames of live points go out at most once per this interval per connection: a point that arrives when
   * the last frame is at least this old goes out at the end of its event-loop turn (with the others that
   * arrived in it), one that arrives sooner waits for the interval's end. A point waits at most this long.
   */
  readonly batchMs: number;
  /** ...or as soon as it holds this many points / this many bytes of JSON. */
  readonly flushPoints: number;
  readonly flushBytes: number;
  /** Hard caps of the in-memory batch; points beyond are dropped and reported in the next `gap`. */
  readonly maxBatchPoints: number;
  readonly maxBatchBytes: number;
  /** Transport send buffer above which frames are dropped (the consumer is "congested")... */
  readonly highWaterBytes: number;
  /** ...until it falls to this, when a `gap` notice is sent and delivery resumes. */
  readonly lowWaterBytes: number;
  /** Congested for this long: the connection is closed (WebSocket 1013). */
  readonly stallMs: number;
  /** How often a congested connection is re-checked (recovery, stall). */
  readonly checkMs: number;
  /** Application heartbeat (and WebSocket ping, to find dead peers). */
  readonly heartbeatMs: number;
  /** A closing handshake the peer does not finish in this time ends with the socket destroyed. */
  readonly closeGraceMs: number;
  /** Subscriptions (filters) per connection. */
  readonly maxFilters: number;
  /** Bounds of the optional history window sent after the snapshot. */
  readonly maxHistorySeconds: number;
  readonly maxHistoryPoints: number;
  readonly maxHistoryTopics: number;
  /** Per-subscription, per-topic state (deadband, rate) is cleared when it reaches this many topics. */
  readonly maxTopicState: number;
  /** Largest WebSocket message a client may send. */
  readonly maxPayloadBytes: number;
  /** SSE `retry:` hint. */
  readonly sseRetryMs: number;
}

export const DEFAULT_LIVE_POLICY: LivePolicy = Object.freeze({
  // 10 ms: at 100 clients x 10k points/s a 50 ms window alone put publish-to-client p99 near 60 ms.
  batchMs: 10,
  flushPoints: 500,
  flushBytes: 256 * 1024,
  maxBatchPoints: 10_000,
  maxBatchBytes: 4 * 1024 * 1024,
  highWaterBytes: 1024 * 1024,
  lowWaterBytes: 256 * 1024,
  stallMs: 30_000,
  checkMs: 250,
  heartbeatMs: 15_000,
  closeGraceMs: 5_000,
  maxFilters: 100,
  maxHistorySeconds: 86_400,
  maxHistoryPoints: 10_000,
  maxHistoryTopics: 500,
  maxTopicState: 50_000,
  maxPayloadBytes: 64 * 1024,
  sseRetryMs: 3_000,
});

let current: LivePolicy = DEFAULT_LIVE_POLICY;

/** The policy new connections take (read once per connection). */
export function livePolicy(): LivePolicy {
  return current;
}

/**
 * For tests only: shorter heartbeats, smaller buffers. Applies to connections opened afterwards; returns
 * the function that restores the previous policy.
 */
export function overrideLivePolicy(over: Partial<LivePolicy>): () => void {
  const before = current;
  current = Object.freeze({ ...current, ...over });
  return () => { current = before; };
}
