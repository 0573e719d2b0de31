/**
 * The slow-consumer policy of one live connection, as an explicit state machine:
 *
 *   flowing --(send buffer > highWater)--> congested --(buffer <= lowWater: send `gap`)--> flowing
 *                                          congested --(for stallMs)--> stalled (connection closed, 1013)
 *
 * While congested every frame is dropped and counted, never queued, so a connection holds at most
 * highWater + one frame in memory and a reader that stops never slows ingestion or other clients.
 * The next frame after any drop is preceded by `{"type":"gap","dropped":<datapoints>,"frames":<frames>}`.
 */
import type { LivePolicy } from './live-policy.js';

export type StreamTransportName = 'ws' | 'sse';

/** What a live connection needs from its transport (WebSocket or SSE response). */
export interface LiveTransport {
  readonly name: StreamTransportName;
  /** Bytes accepted for sending but not yet handed to the kernel. */
  buffered(): number;
  /** Writes one message; `type` is its `type` field (the SSE event name), `json` the serialised message. */
  write(type: string, json: string): void;
  /** Heartbeat: a JSON heartbeat (WebSocket, plus a ping that finds dead peers) or an SSE comment. */
  heartbeat(ts: number): void;
  /** Ends the connection: 4401 credential expired, 1013 too slow, 1001 server going away. */
  close(code: number, reason: string): void;
}

export type OutboxState =
  | { readonly kind: 'flowing' }
  | { readonly kind: 'congested'; readonly since: number }
  | { readonly kind: 'stalled' };

export interface OutboxHooks {
  now(): number;
  delivered(points: number): void;
  droppedFrames(frames: number): void;
  /** Congested for longer than the policy allows. */
  stalled(): void;
}

export class Outbox {
  private st: OutboxState = { kind: 'flowing' };
  private droppedPoints = 0;
  private droppedFrameCount = 0;
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly t: LiveTransport, private readonly policy: LivePolicy, private readonly hooks: OutboxHooks) {}

  get state(): OutboxState {
    return this.st;
  }

  /**
   * May a frame be written now? Moves between the states; on the way back to flowing (or after points
   * were dropped from a full batch) writes the gap notice first.
   */
  admit(): boolean {
    const st = this.st;
    if (st.kind === 'stalled') return false;
    const buffered = this.t.buffered();
    if (st.kind === 'congested') {
      if (buffered > this.policy.lowWaterBytes) {
        if (this.hooks.now() - st.since >= this.policy.stallMs) this.stall();
        return false;
      }
      this.st = { kind: 'flowing' };
      this.stopTimer();
    } else if (buffered > this.policy.highWaterBytes) {
      this.st = { kind: 'congested', since: this.hooks.now() };
      this.timer = setInterval(() => this.admit(), this.policy.checkMs);
      return false;
    }
    if (this.droppedPoints > 0 || this.droppedFrameCount > 0) {
      this.t.write('gap', `{"type":"gap","dropped":${this.droppedPoints},"frames":${this.droppedFrameCount}}`);
      this.droppedPoints = 0;
      this.droppedFrameCount = 0;
    }
    return true;
  }

  /** Writes a frame that admit() let through. */
  write(type: string, json: string, points = 0): void {
    this.t.write(type, json);
    if (points > 0) this.hooks.delivered(points);
  }

  /** Writes the frame if admitted, else counts it dropped. */
  offer(type: string, json: string, points = 0): boolean {
    if (this.admit()) { this.write(type, json, points); return true; }
    this.drop(points, 1);
    return false;
  }

  /** Counts what was not sent; reported in the next gap notice. */
  drop(points: number, frames: number): void {
    this.droppedPoints += points;
    this.droppedFrameCount += frames;
    if (frames > 0) this.hooks.droppedFrames(frames);
  }

  close(): void {
    this.stopTimer();
  }

  private stall(): void {
    this.st = { kind: 'stalled' };
    this.stopTimer();
    this.hooks.stalled();
  }

  private stopTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}
