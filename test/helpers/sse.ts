/** An SSE reader over fetch for tests: parses events as they arrive; each data frame is checked against the OpenAPI schema. */
import { expect } from 'chai';
import { loadOpenApi, RequestValidator } from '../../src/api/openapi.js';

const validator = new RequestValidator(loadOpenApi());

export type Point = { topic: string; value: unknown; timestamp: string; quality: string; unit?: string | null };
export interface SseEvent { event: string; data: Record<string, unknown> }

/** An SSE reader over fetch: parses events as they arrive and lets a test wait for the next one. */
export class SseStream {
  readonly events: SseEvent[] = [];
  readonly comments: string[] = [];
  retry: number | null = null;
  ended = false;
  private cursor = 0;
  private wake: (() => void) | null = null;
  private readonly abort = new AbortController();
  status = 0;
  contentType = '';
  body: Record<string, unknown> | null = null;

  static async open(url: string, token?: string): Promise<SseStream> {
    const s = new SseStream();
    const res = await fetch(url, { headers: token ? { authorization: `Bearer ${token}` } : {}, signal: s.abort.signal });
    s.status = res.status;
    s.contentType = res.headers.get('content-type') ?? '';
    if (res.status !== 200) { s.body = (await res.json()) as Record<string, unknown>; return s; }
    void s.read(res.body as ReadableStream<Uint8Array>);
    return s;
  }

  private async read(body: ReadableStream<Uint8Array>): Promise<void> {
    const dec = new TextDecoder();
    let buf = '';
    try {
      for await (const chunk of body) {
        buf += dec.decode(chunk, { stream: true });
        let i: number;
        while ((i = buf.indexOf('\n\n')) !== -1) {
          this.parse(buf.slice(0, i));
          buf = buf.slice(i + 2);
        }
        this.wake?.();
      }
    } catch { /* aborted */ }
    this.ended = true;
    this.wake?.();
  }

  private parse(block: string): void {
    let event = 'message';
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) this.comments.push(line.slice(1).trim());
      else if (line.startsWith('retry:')) this.retry = Number(line.slice(6).trim());
      else if (line.startsWith('event:')) event = line.slice(6).trim();
      else if (line.startsWith('data:')) data.push(line.slice(5).trim());
    }
    if (data.length === 0) return;
    const parsed = JSON.parse(data.join('\n')) as Record<string, unknown>;
    const bad = validator.validate('StreamServerMessage', parsed);
    if (bad !== null) throw new Error(`SSE data breaks StreamServerMessage: ${bad}`);
    expect(parsed['type']).to.equal(event);
    this.events.push({ event, data: parsed });
  }

  async take(pred: (e: SseEvent) => boolean, timeoutMs = 5_000, what = 'event'): Promise<SseEvent> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      for (let i = this.cursor; i < this.events.length; i++) {
        const e = this.events[i] as SseEvent;
        if (pred(e)) { this.cursor = i + 1; return e; }
      }
      const left = end - Date.now();
      if (left <= 0 || this.ended) throw new Error(`no ${what} (got ${this.events.slice(this.cursor).map((e) => e.event).join(', ') || 'nothing'})`);
      await new Promise<void>((r) => { const t = setTimeout(r, left); this.wake = () => { clearTimeout(t); r(); }; });
      this.wake = null;
    }
  }

  async point(topic: string, value: unknown): Promise<void> {
    await this.take((e) => e.event === 'datapoints_batch' && (e.data['datapoints'] as Point[]).some((p) => p.topic === topic && p.value === value), 5_000, `live ${topic}=${String(value)}`);
  }

  close(): void {
    this.abort.abort();
  }
}
