/**
 * Events for IT systems (webhooks, later other sinks). Producers: the pipeline (sensor.reading), threshold
 * rules, the broker's connects and disconnects (device.online/offline), store health
 * (system.health_changed), the webhook test endpoint. Listeners must not block or throw.
 */
export const EVENT_TYPES = [
  'sensor.reading',
  'sensor.threshold_exceeded',
  'sensor.threshold_cleared',
  'device.online',
  'device.offline',
  'system.health_changed',
  'webhook.test',
] as const;

export type EventType = (typeof EVENT_TYPES)[number];

export interface UnsEvent {
  /** Unique, e.g. evt_<time>_<random>. */
  readonly id: string;
  readonly type: EventType;
  /** Epoch ms. */
  readonly occurredAt: number;
  /** The topic the event is about, when it is about one (used by topic filters and ACLs). */
  readonly topic?: string | undefined;
  readonly data: Readonly<Record<string, unknown>>;
}

export type EventListener = (e: UnsEvent) => void;

export class EventBus {
  private readonly listeners: EventListener[] = [];

  on(l: EventListener): () => void {
    this.listeners.push(l);
    return () => {
      const i = this.listeners.indexOf(l);
      if (i >= 0) this.listeners.splice(i, 1);
    };
  }

  emit(e: UnsEvent): void {
    for (const l of this.listeners) {
      try {
        l(e);
      } catch {
        // A failing listener must not break the producer or the others.
      }
    }
  }
}

let counter = 0;
export function eventId(now: number): string {
  counter = (counter + 1) % 1_000_000;
  return `evt_${now.toString(36)}${counter.toString(36).padStart(4, '0')}${Math.floor(Math.random() * 36 ** 4).toString(36).padStart(4, '0')}`;
}
