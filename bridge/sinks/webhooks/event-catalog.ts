/**
 * What a webhook can subscribe to: one entry per event type, with the JSON Schema of its `data`, an example,
 * and the permission it needs. Served as `GET /api/v1/webhooks/events`; the envelope schema describes the
 * body every delivery carries unless the endpoint has a payload template.
 *
 * Permissions (docs/guarantees.md: "every read ... webhooks' topic filters ... checked against the same role
 * permissions"): an event about a topic is delivered only when the owner's roles may read that topic; an
 * event about no topic (a client connecting, the store's health) needs the read filter named in `requires`,
 * as reading the broker's own `$SYS/` tree does on MQTT.
 */
import { EVENT_TYPES, type EventType } from '../../../src/core/index.js';

export interface CatalogEntry {
  readonly name: EventType;
  readonly description: string;
  readonly category: 'sensor' | 'device' | 'system' | 'webhook';
  readonly version: '1.0';
  /** sensor.reading deliveries carry `data.readings[]`, several readings per delivery. */
  readonly batched: boolean;
  /** Topic events are checked per topic; topic-less events need this read filter. null: anyone. */
  readonly requires: 'topic' | { readonly read: string } | null;
  readonly payload_schema: Record<string, unknown>;
  readonly example_payload: Record<string, unknown>;
}

const TS = { type: 'string', format: 'date-time' } as const;

const READING = {
  type: 'object',
  required: ['event_id', 'topic', 'value', 'timestamp', 'quality'],
  properties: {
    event_id: { type: 'string' },
    topic: { type: 'string' },
    value: { description: 'number, string, boolean, JSON object/array; integers beyond 2^53 exact; bytes as {"base64"}' },
    timestamp: TS,
    quality: { enum: ['good', 'uncertain', 'bad', 'stale'] },
    unit: { type: 'string' },
  },
} as const;

/** device.online / device.offline: an MQTT connection (source mqtt) or a Sparkplug session (source sparkplug). */
const DEVICE = {
  type: 'object', required: ['client_id'],
  properties: {
    source: { enum: ['mqtt', 'sparkplug'] }, client_id: { type: 'string' }, username: { type: ['string', 'null'] },
    group_id: { type: 'string' }, edge_node_id: { type: 'string' }, device_id: { type: ['string', 'null'] },
  },
};

const THRESHOLD = {
  type: 'object',
  description: 'Emitted by threshold rules; these fields at least, more may follow.',
  required: ['topic', 'value'],
  additionalProperties: true,
  properties: {
    rule_id: { type: 'string' },
    rule_name: { type: 'string' },
    topic: { type: 'string' },
    value: { type: 'number' },
    threshold: { type: 'number' },
    operator: { type: 'string' },
  },
} as const;

export const EVENT_CATALOG: readonly CatalogEntry[] = Object.freeze([
  {
    name: 'sensor.reading',
    description: 'Every datapoint accepted for storage. High volume: batched per endpoint (batch.max_size, batch.max_linger_ms).',
    category: 'sensor', version: '1.0', batched: true, requires: 'topic',
    payload_schema: { type: 'object', required: ['readings'], properties: { readings: { type: 'array', minItems: 1, items: READING } } },
    example_payload: {
      readings: [
        { event_id: 'evt_m3k2a9x10001ab12', topic: 'acme/plant1/packaging/line1/filler/temperature', value: 21.5, timestamp: '2026-01-15T10:30:00.000Z', quality: 'good', unit: '°C' },
      ],
    },
  },
  {
    name: 'sensor.threshold_exceeded',
    description: 'A threshold rule found a value out of range.',
    category: 'sensor', version: '1.0', batched: false, requires: 'topic',
    payload_schema: THRESHOLD,
    example_payload: { rule_id: '5f0c…', rule_name: 'filler too hot', topic: 'acme/plant1/packaging/line1/filler/temperature', value: 104.2, threshold: 100, operator: 'gt' },
  },
  {
    name: 'sensor.threshold_cleared',
    description: 'A value went back into range after a threshold_exceeded.',
    category: 'sensor', version: '1.0', batched: false, requires: 'topic',
    payload_schema: THRESHOLD,
    example_payload: { rule_id: '5f0c…', rule_name: 'filler too hot', topic: 'acme/plant1/packaging/line1/filler/temperature', value: 97.9, threshold: 100, operator: 'gt' },
  },
  {
    name: 'device.online',
    description: 'An MQTT client finished connecting (source mqtt), or a Sparkplug edge node or device was born (source sparkplug: NBIRTH/DBIRTH).',
    category: 'device', version: '1.0', batched: false, requires: { read: '$SYS/#' },
    payload_schema: DEVICE,
    example_payload: { client_id: 'line1-plc', username: 'line1-plc' },
  },
  {
    name: 'device.offline',
    description: 'An MQTT client disconnected (source mqtt: cleanly, by error, by keepalive timeout or takeover), or a Sparkplug edge node or device died (source sparkplug: NDEATH/DDEATH; its metrics are now stale).',
    category: 'device', version: '1.0', batched: false, requires: { read: '$SYS/#' },
    payload_schema: DEVICE,
    example_payload: { client_id: 'line1-plc', username: 'line1-plc' },
  },
  {
    name: 'system.health_changed',
    description: 'The store became degraded or healthy again, or a webhook endpoint was disabled (410 Gone, or failing for the disable period).',
    category: 'system', version: '1.0', batched: false, requires: { read: '$SYS/#' },
    payload_schema: {
      type: 'object', required: ['component', 'state'],
      properties: {
        component: { enum: ['store', 'webhook'] },
        state: { type: 'string', description: 'store: healthy | degraded; webhook: disabled' },
        reason: { type: ['string', 'null'] },
        webhook_id: { type: 'string' },
        webhook_name: { type: 'string' },
      },
    },
    example_payload: { component: 'store', state: 'degraded', reason: 'connect ECONNREFUSED 127.0.0.1:5432' },
  },
  {
    name: 'webhook.test',
    description: 'Sent by POST /api/v1/webhooks/{id}/test, whatever the endpoint subscribes to.',
    category: 'webhook', version: '1.0', batched: false, requires: null,
    payload_schema: { type: 'object', properties: { message: { type: 'string' }, webhook_id: { type: 'string' } }, additionalProperties: true },
    example_payload: { message: 'uns-bridge webhook test', webhook_id: '0b6c3a52-8f1e-4d8e-9f4e-6f3b2d1c0a99' },
  },
] satisfies CatalogEntry[]);

/** The body of a delivery without a template. */
export const ENVELOPE_SCHEMA = Object.freeze({
  type: 'object',
  required: ['id', 'type', 'timestamp', 'data'],
  properties: {
    id: { type: 'string', description: 'The event id; for a sensor.reading batch, the delivery id (also sent as webhook-id).' },
    type: { enum: [...EVENT_TYPES] },
    timestamp: { ...TS, description: 'When the event happened (a batch: when it was sealed).' },
    topic: { type: 'string', description: 'Present when the event is about one topic.' },
    data: { type: 'object', description: "The event type's payload_schema." },
  },
});

const BY_NAME: ReadonlyMap<string, CatalogEntry> = new Map(EVENT_CATALOG.map((e) => [e.name, e]));

export function catalogEntry(name: string): CatalogEntry | undefined {
  return BY_NAME.get(name);
}

export function isEventType(name: string): name is EventType {
  return BY_NAME.has(name);
}
