/**
 * The webhooks feature as one object for the composition root and the API: endpoint management (with
 * secrets generated, shown once and rotated), the dispatcher wired to the event bus, the delivery log,
 * replays and statistics. The API layer turns these results into HTTP; nothing here knows express.
 */
import { randomBytes as nodeRandomBytes, randomUUID } from 'node:crypto';
import type pg from 'pg';
import type { Logger } from '../../../src/core/index.js';
import type { Permissions } from '../../../src/core/index.js';
import type { ErrorCode } from '../../../src/core/index.js';
import { eventId, type EventBus, type EventType } from '../../../src/core/index.js';
import type { TopicLimits } from '../../../src/core/index.js';
import { parseAllowlist, type Allowlist } from './ssrf.js';
import { generateSecret } from './signing.js';
import { Dispatcher, type DispatcherSettings, type Injections, type SentAttempt } from './dispatcher.js';
import { Outbox, type HealthChange } from './outbox.js';
import { DeliveryLog } from './delivery-log.js';
import { WebhookStore, type SecretEntry, type WebhookRecord } from './webhook-store.js';
import { normalizeSpec, specToInput, type WebhookInput, type WebhookSpec } from './webhook-config.js';

export interface WebhookSettings extends Omit<DispatcherSettings, 'allowlist'> {
  /** As configured (UNS_WEBHOOK_ALLOWLIST); parsed once here, a bad entry stops start-up. */
  readonly allowlist: string;
  readonly rotationGraceS: number;
}

export interface WebhookServiceOptions extends Injections {
  readonly pool: pg.Pool;
  readonly permissions: (roles: readonly string[]) => Permissions;
  readonly events: EventBus;
  readonly settings: WebhookSettings;
  readonly topicLimits: TopicLimits;
  readonly log: Logger;
  /** Told after a webhook was created, changed or removed here (cluster mode: the other instances reload theirs). */
  readonly changed?: () => void;
}

export type Outcome<T> = { ok: true; value: T } | { ok: false; code: ErrorCode; message: string };

export class WebhookService {
  readonly store: WebhookStore;
  readonly outbox: Outbox;
  readonly deliveries: DeliveryLog;
  readonly dispatcher: Dispatcher;
  readonly allowlist: Allowlist;
  private readonly clock: () => number;
  private readonly randomBytes: (n: number) => Buffer;
  private readonly unsubscribe: () => void;

  constructor(private readonly opts: WebhookServiceOptions) {
    this.allowlist = parseAllowlist(opts.settings.allowlist);
    this.clock = opts.clock ?? Date.now;
    this.randomBytes = opts.randomBytes ?? nodeRandomBytes;
    this.store = new WebhookStore(opts.pool);
    this.outbox = new Outbox(opts.pool);
    this.deliveries = new DeliveryLog(opts.pool);
    this.dispatcher = new Dispatcher({
      store: this.store, outbox: this.outbox, permissions: opts.permissions, log: opts.log,
      settings: { ...opts.settings, allowlist: this.allowlist },
      onHealthChange: (c) => this.announce(c),
      ...(opts.clock ? { clock: opts.clock } : {}), ...(opts.random ? { random: opts.random } : {}),
      ...(opts.randomBytes ? { randomBytes: opts.randomBytes } : {}), ...(opts.timers ? { timers: opts.timers } : {}),
      ...(opts.deliver ? { deliver: opts.deliver } : {}),
    });
    this.unsubscribe = opts.events.on((e) => this.dispatcher.accept(e));
  }

  start(): Promise<void> {
    return this.dispatcher.start();
  }

  async stop(): Promise<void> {
    this.unsubscribe();
    await this.dispatcher.stop();
  }

  /** Cheap check for producers on the hot path: does any active endpoint take this type? */
  wants(type: EventType): boolean {
    return this.dispatcher.wants(type);
  }

  permissions(roles: readonly string[]): Permissions {
    return this.opts.permissions(roles);
  }

  /** An endpoint was disabled: tell subscribers of system.health_changed (other endpoints). */
  private announce(c: HealthChange): void {
    const now = this.clock();
    this.opts.events.emit({
      id: eventId(now), type: 'system.health_changed', occurredAt: now,
      data: {
        component: 'webhook', state: c.health.state, reason: c.health.state === 'disabled' ? c.health.reason : null,
        webhook_id: c.webhookId, webhook_name: c.webhookName,
      },
    });
  }

  private spec(input: WebhookInput, roles: readonly string[], previous?: WebhookRecord): Outcome<WebhookSpec> {
    const r = normalizeSpec(input, {
      allowlist: this.allowlist, perms: this.opts.permissions(roles), topicLimits: this.opts.topicLimits,
      ...(previous ? { previousHeaders: previous.headers } : {}),
    });
    return r.ok ? { ok: true, value: r.spec } : r;
  }

  /** Creates an endpoint owned by `owner` with `roles`; the secret (given or generated) is returned once. */
  async create(input: WebhookInput, owner: string, roles: readonly string[]): Promise<Outcome<{ record: WebhookRecord; secret: string }>> {
    const spec = this.spec(input, roles);
    if (!spec.ok) return spec;
    const now = this.clock();
    const secret = input.secret ?? generateSecret(this.randomBytes);
    const record = await this.store.create(randomUUID(), spec.value, [{ secret, createdAt: now, expiresAt: null }], owner, roles, now);
    await this.dispatcher.refresh();
    this.opts.changed?.();
    return { ok: true, value: { record, secret } };
  }

  /**
   * PUT (replace: absent fields take their defaults) or PATCH (merge over the current values). A `secret`
   * in either rotates: see rotate().
   */
  async update(current: WebhookRecord, input: Partial<WebhookInput>, mode: 'replace' | 'merge'): Promise<Outcome<{ record: WebhookRecord; secret: string | null }>> {
    let merged: WebhookInput;
    if (mode === 'replace') {
      merged = input as WebhookInput;
    } else {
      const base = specToInput(current);
      const rc = input.retry_config;
      // Seed-style retry fields replace the schedule rather than being outvoted by the stored one.
      const seedStyle = rc !== undefined && rc.schedule_s === undefined && (rc.max_retries !== undefined || rc.retry_delay !== undefined || rc.backoff_multiplier !== undefined);
      merged = {
        ...base, ...input,
        retry_config: seedStyle ? { timeout_ms: base.retry_config?.timeout_ms, ...rc } : { ...base.retry_config, ...rc },
        filters: { ...base.filters, ...input.filters },
        batch: { ...base.batch, ...input.batch },
      } as WebhookInput;
    }
    const spec = this.spec(merged, current.roles, current);
    if (!spec.ok) return spec;
    const now = this.clock();
    let secrets: SecretEntry[] | null = null;
    if (input.secret !== undefined) secrets = this.rotated(current.secrets, input.secret, now, this.opts.settings.rotationGraceS);
    const record = await this.store.update(current.id, spec.value, secrets, now);
    if (record === undefined) return { ok: false, code: 'UNS_ERR_NOT_FOUND', message: 'no such webhook' };
    await this.dispatcher.refresh();
    this.opts.changed?.();
    return { ok: true, value: { record, secret: input.secret ?? null } };
  }

  /** New secret first; the ones still signing get an expiry `graceS` from now (at most), expired ones go. */
  private rotated(old: readonly SecretEntry[], secret: string, now: number, graceS: number): SecretEntry[] {
    const until = now + graceS * 1000;
    const kept = old
      .filter((s) => s.expiresAt === null || s.expiresAt > now)
      .filter((s) => s.secret !== secret)
      .map((s) => ({ ...s, expiresAt: s.expiresAt === null ? until : Math.min(s.expiresAt, until) }))
      .filter((s) => s.expiresAt > now);
    return [{ secret, createdAt: now, expiresAt: null }, ...kept];
  }

  /** Rotation: a new secret (given or generated) signs from now on; the old one still signs for the grace period. */
  async rotate(current: WebhookRecord, secret: string | undefined, graceS: number | undefined): Promise<{ record: WebhookRecord; secret: string }> {
    const now = this.clock();
    const s = secret ?? generateSecret(this.randomBytes);
    const record = await this.store.setSecrets(current.id, this.rotated(current.secrets, s, now, graceS ?? this.opts.settings.rotationGraceS), now);
    await this.dispatcher.refresh();
    this.opts.changed?.();
    return { record: record ?? current, secret: s };
  }

  async remove(id: string): Promise<boolean> {
    const ok = await this.store.remove(id);
    await this.dispatcher.refresh();
    this.opts.changed?.();
    return ok;
  }

  test(rec: WebhookRecord, payload: Readonly<Record<string, unknown>> | undefined): Promise<SentAttempt> {
    return this.dispatcher.sendTest(rec, { message: 'uns-bridge webhook test', ...payload, webhook_id: rec.id });
  }

  async replayOne(webhookId: string, deliveryId: string): Promise<'replayed' | 'not-found' | 'in-flight'> {
    const r = await this.outbox.replayOne(webhookId, deliveryId, this.clock());
    if (r === 'replayed') this.dispatcher.kick();
    return r;
  }

  async replaySince(webhookId: string, since: number, until: number | undefined): Promise<number> {
    const now = this.clock();
    const n = await this.outbox.replaySince(webhookId, since, until ?? now + 1, now);
    if (n > 0) this.dispatcher.kick();
    return n;
  }

  now(): number {
    return this.clock();
  }
}
