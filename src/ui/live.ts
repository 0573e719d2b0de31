/**
 * The JSON WebSocket stream for one filter at a time: `subscribed`, a snapshot of last values, then
 * batches of changes; `gap` when the server dropped data for this slow consumer. Reconnects with back-off.
 */

export interface LivePoint { topic: string; value: unknown; timestamp: string | null; quality: string; unit?: string | null }

export interface LiveHandlers {
  points(points: readonly LivePoint[], kind: 'snapshot' | 'datapoints_batch'): void;
  gap(dropped: number): void;
  state(s: 'connecting' | 'live' | 'down'): void;
}

export class LiveStream {
  private ws: WebSocket | null = null;
  private filter: string | null = null;
  private closed = false;
  private retryMs = 500;
  private timer: number | null = null;

  constructor(private readonly token: () => string | null, private readonly on: LiveHandlers) {}

  /** Follows `filter` from now on (null: nothing). */
  follow(filter: string | null): void {
    const before = this.filter;
    this.filter = filter;
    if (this.ws === null || this.ws.readyState !== WebSocket.OPEN) { this.open(); return; }
    if (before !== null) this.ws.send(JSON.stringify({ type: 'unsubscribe', filters: [before] }));
    if (filter !== null) this.ws.send(JSON.stringify({ type: 'subscribe', filters: [filter] }));
    // The page shows a fresh indicator for the new filter: tell it the connection is up.
    this.on.state('live');
  }

  close(): void {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.ws?.close();
  }

  private open(): void {
    if (this.closed || this.ws !== null || this.filter === null) return;
    const token = this.token();
    if (token === null) return;
    this.on.state('connecting');
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const ws = new WebSocket(`${scheme}://${location.host}/ws/datapoints/stream?token=${encodeURIComponent(token)}`);
    this.ws = ws;
    ws.onopen = () => {
      this.retryMs = 500;
      this.on.state('live');
      if (this.filter !== null) ws.send(JSON.stringify({ type: 'subscribe', filters: [this.filter] }));
    };
    ws.onmessage = (ev: MessageEvent<string>) => {
      const m = JSON.parse(ev.data) as { type: string; datapoints?: LivePoint[]; dropped?: number };
      if ((m.type === 'snapshot' || m.type === 'datapoints_batch') && m.datapoints) this.on.points(m.datapoints, m.type);
      else if (m.type === 'gap') this.on.gap(m.dropped ?? 0);
    };
    ws.onclose = () => {
      this.ws = null;
      if (this.closed) return;
      this.on.state('down');
      this.timer = window.setTimeout(() => { this.timer = null; this.open(); }, this.retryMs);
      this.retryMs = Math.min(this.retryMs * 2, 10_000);
    };
  }
}
