/**
 * Versioned schema migrations, applied at start-up under an advisory lock so several instances sharing
 * one database do not race. Plain PostgreSQL SQL only; TimescaleDB features are layered on by timescale.ts.
 */
import type pg from 'pg';
import type { Logger } from '../../../src/core/index.js';

export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'core tables',
    sql: `
      CREATE TABLE topics (
        id          serial PRIMARY KEY,
        name        text NOT NULL UNIQUE,
        levels      jsonb,
        route       text NOT NULL,
        unit        text,
        first_seen  timestamptz NOT NULL DEFAULT now()
      );
      CREATE TABLE samples (
        time      timestamptz NOT NULL,
        topic_id  integer NOT NULL,
        v_num     double precision,
        v_text    text,
        v_bool    boolean,
        v_json    jsonb,
        v_bytes   bytea,
        quality   text,
        src       bigint
      );
      CREATE INDEX samples_topic_time ON samples (topic_id, time DESC);
      CREATE TABLE last_values (
        topic_id     integer PRIMARY KEY REFERENCES topics (id) ON DELETE CASCADE,
        time         timestamptz NOT NULL,
        received_at  timestamptz NOT NULL,
        v_num        double precision,
        v_text       text,
        v_bool       boolean,
        v_json       jsonb,
        v_bytes      bytea,
        quality      text
      ) WITH (fillfactor = 50);
      CREATE TABLE retained (
        topic       text PRIMARY KEY,
        payload     bytea NOT NULL,
        qos         smallint NOT NULL,
        updated_at  timestamptz NOT NULL DEFAULT now()
      );
      CREATE TABLE rejections (
        time       timestamptz NOT NULL,
        topic      text NOT NULL,
        code       text NOT NULL,
        reason     text NOT NULL,
        client_id  text,
        payload    bytea
      );
      CREATE INDEX rejections_time ON rejections (time DESC);
      CREATE TABLE spool_applied (
        segment     text PRIMARY KEY,
        applied_at  timestamptz NOT NULL DEFAULT now()
      );
      CREATE TABLE users (
        username       text PRIMARY KEY,
        password_hash  text NOT NULL,
        roles          text[] NOT NULL,
        created_at     timestamptz NOT NULL DEFAULT now(),
        updated_at     timestamptz NOT NULL DEFAULT now()
      );
    `,
  },
  {
    version: 2,
    name: 'namespace state',
    sql: `
      -- Small pieces of state that must survive restarts (Sparkplug alias tables, ...). rev orders writes
      -- that may commit out of order.
      CREATE TABLE state (
        key         text PRIMARY KEY,
        rev         bigint NOT NULL,
        value       jsonb NOT NULL,
        updated_at  timestamptz NOT NULL DEFAULT now()
      );
    `,
  },
  {
    version: 3,
    name: 'api tokens',
    sql: `
      -- Machine API tokens. Only a SHA-256 of the secret is kept; the token is shown once at creation.
      CREATE TABLE api_tokens (
        id            text PRIMARY KEY,
        name          text NOT NULL,
        username      text NOT NULL,
        roles         text[] NOT NULL,
        secret_sha256 bytea NOT NULL,
        created_at    timestamptz NOT NULL DEFAULT now(),
        expires_at    timestamptz,
        revoked_at    timestamptz,
        last_used_at  timestamptz
      );
    `,
  },
  {
    version: 4,
    name: 'webhooks, rules, inbound ingest',
    sql: `
      CREATE TABLE webhooks (
        id               uuid PRIMARY KEY,
        name             text NOT NULL,
        description      text,
        url              text NOT NULL,
        events           text[] NOT NULL,
        -- {"topics": [mqtt filters], "conditions": [{"field", "operator", "value"}]}
        filters          jsonb NOT NULL DEFAULT '{}',
        -- custom headers; values of auth-like headers are redacted on read
        headers          jsonb NOT NULL DEFAULT '{}',
        -- [{"secret": "whsec_...", "created_at": ..., "expires_at": null}]: several during rotation
        secrets          jsonb NOT NULL,
        is_active        boolean NOT NULL DEFAULT true,
        disabled_reason  text,
        -- {"schedule_s": [...], "timeout_ms": n}
        retry_config     jsonb NOT NULL DEFAULT '{}',
        template         text,
        -- {"max_size": n, "max_linger_ms": n} for sensor.reading
        batch            jsonb NOT NULL DEFAULT '{}',
        ordered          boolean NOT NULL DEFAULT false,
        max_concurrency  integer NOT NULL DEFAULT 4,
        -- who created it, with the roles whose read permissions its topic filters must stay inside
        owner            text NOT NULL,
        roles            text[] NOT NULL,
        failing_since    timestamptz,
        last_success_at  timestamptz,
        created_at       timestamptz NOT NULL DEFAULT now(),
        updated_at       timestamptz NOT NULL DEFAULT now()
      );
      -- The durable outbox: a row exists before anything is sent; its id is the webhook-id on every attempt.
      CREATE TABLE webhook_deliveries (
        id               text PRIMARY KEY,
        seq              bigserial NOT NULL,
        webhook_id       uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
        event_type       text NOT NULL,
        event_ids        text[] NOT NULL,
        body             text NOT NULL,
        status           text NOT NULL CHECK (status IN ('pending', 'in_flight', 'succeeded', 'dead')),
        attempts         integer NOT NULL DEFAULT 0,
        -- attempts made before the last manual replay: the retry schedule restarts from here
        attempt_base     integer NOT NULL DEFAULT 0,
        -- why a dead delivery stopped: schedule | gone | fail | endpoint-disabled | test
        dead_reason      text,
        next_attempt_at  timestamptz NOT NULL,
        locked_until     timestamptz,
        last_attempt_at  timestamptz,
        created_at       timestamptz NOT NULL DEFAULT now()
      );
      -- per endpoint: pending rows by due time (claims), in-flight rows by lease (concurrency, expired leases)
      CREATE INDEX webhook_deliveries_due ON webhook_deliveries (webhook_id, next_attempt_at) WHERE status = 'pending';
      CREATE INDEX webhook_deliveries_inflight ON webhook_deliveries (webhook_id, locked_until) WHERE status = 'in_flight';
      CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, created_at DESC);
      -- per endpoint, unsettled rows in order: the claim query's scan (ordered mode takes the head)
      CREATE INDEX webhook_deliveries_queue ON webhook_deliveries (webhook_id, seq) WHERE status IN ('pending', 'in_flight');
      CREATE TABLE webhook_attempts (
        delivery_id       text NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
        attempt           integer NOT NULL,
        started_at        timestamptz NOT NULL,
        status_code       integer,
        latency_ms        integer NOT NULL,
        response_excerpt  text,
        error_class       text,
        outcome           text NOT NULL,
        next_retry_at     timestamptz,
        PRIMARY KEY (delivery_id, attempt)
      );
      CREATE INDEX webhook_attempts_started ON webhook_attempts (started_at DESC);
      -- Threshold rules (REST-managed; rules from topics.yaml are loaded at start-up with source 'file').
      CREATE TABLE rules (
        id               uuid PRIMARY KEY,
        name             text NOT NULL,
        topic_filter     text NOT NULL,
        operator         text NOT NULL,
        threshold        double precision NOT NULL,
        hysteresis       double precision NOT NULL DEFAULT 0,
        min_duration_ms  integer NOT NULL DEFAULT 0,
        enabled          boolean NOT NULL DEFAULT true,
        source           text NOT NULL DEFAULT 'api',
        owner            text NOT NULL,
        roles            text[] NOT NULL,
        created_at       timestamptz NOT NULL DEFAULT now(),
        updated_at       timestamptz NOT NULL DEFAULT now()
      );
      -- Per rule and topic: normal / pending / exceeded, so one event is sent per crossing across restarts.
      CREATE TABLE rule_state (
        rule_id   uuid NOT NULL,
        topic     text NOT NULL,
        state     text NOT NULL,
        since     timestamptz NOT NULL,
        value     double precision,
        PRIMARY KEY (rule_id, topic)
      );
      -- Inbound signed ingest: delivery ids seen per source, for de-duplication.
      CREATE TABLE ingest_dedup (
        source       text NOT NULL,
        delivery_id  text NOT NULL,
        received_at  timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (source, delivery_id)
      );
      -- pruning of old delivery ids
      CREATE INDEX ingest_dedup_received ON ingest_dedup (received_at);
    `,
  },
  {
    version: 5,
    name: 'replayable rejections',
    sql: `
      -- A rejection keeps what is needed to replay it once its cause is fixed: the whole payload for a
      -- message the pipeline refused, the write item (JSON, as bytes: it may hold what jsonb refuses) for
      -- rows the database refused. replayed_at marks rows applied by 'uns-bridge rejections replay'.
      ALTER TABLE rejections ADD COLUMN id bigserial PRIMARY KEY;
      ALTER TABLE rejections ADD COLUMN item bytea;
      ALTER TABLE rejections ADD COLUMN replayed_at timestamptz;
      CREATE INDEX rejections_code_time ON rejections (code, time DESC);
    `,
  },
  {
    version: 6,
    name: 'sparkplug command audit',
    sql: `
      -- Every command the REST API was asked to send to a Sparkplug edge node or device (NCMD, DCMD, and
      -- rebirth requests), once the caller was authenticated: who, to which node or device, which metrics,
      -- and whether it was sent or refused (with the reason). A command is sent only after its row is written.
      CREATE TABLE sparkplug_commands (
        id            bigserial PRIMARY KEY,
        at            timestamptz NOT NULL DEFAULT now(),
        username      text NOT NULL,
        group_id      text NOT NULL,
        edge_node_id  text NOT NULL,
        device_id     text,
        metrics       jsonb NOT NULL,
        result        text NOT NULL,
        reason        text
      );
    `,
  },
  {
    version: 7,
    name: 'mqtt sessions',
    sql: `
      -- Persistent MQTT sessions (clean=false) of the embedded broker: when each was last connected (expiry
      -- counts from there), by whom and on which instance (cluster mode: the one that holds it), its
      -- subscriptions, its queue (offline messages and messages in flight, in order of seq) and its QoS 2
      -- receive state. Packet fields are JSON, payloads apart.
      CREATE TABLE mqtt_sessions (
        client_id  text PRIMARY KEY,
        seen_at    timestamptz NOT NULL,
        username   text,
        instance   text
      );
      CREATE INDEX mqtt_sessions_instance ON mqtt_sessions (instance);
      CREATE TABLE mqtt_session_subs (
        client_id  text NOT NULL,
        topic      text NOT NULL,
        qos        smallint NOT NULL,
        options    jsonb NOT NULL DEFAULT '{}',
        PRIMARY KEY (client_id, topic)
      );
      CREATE TABLE mqtt_session_queue (
        client_id  text NOT NULL,
        seq        bigint NOT NULL,
        packet     jsonb NOT NULL,
        payload    bytea,
        PRIMARY KEY (client_id, seq)
      );
      CREATE TABLE mqtt_session_incoming (
        client_id  text NOT NULL,
        message_id integer NOT NULL,
        packet     jsonb NOT NULL,
        payload    bytea,
        PRIMARY KEY (client_id, message_id)
      );
    `,
  },
  {
    version: 8,
    name: 'sample identity',
    sql: `
      -- A sample is identified by its topic and time: the same reading written twice (a gateway replaying
      -- after a network cut) is one row. Duplicates written before are reduced to one row each first (one
      -- of them is kept: typically the same reading twice). No ctid here: TimescaleDB's compressed chunks
      -- do not expose it, while DELETE and INSERT work on them.
      CREATE TEMP TABLE uns_duplicate_samples ON COMMIT DROP AS
        SELECT DISTINCT ON (topic_id, time) s.* FROM samples s
        JOIN (SELECT topic_id, time FROM samples GROUP BY topic_id, time HAVING count(*) > 1) d USING (topic_id, time)
        ORDER BY topic_id, time;
      DELETE FROM samples s USING uns_duplicate_samples d WHERE s.topic_id = d.topic_id AND s.time = d.time;
      INSERT INTO samples SELECT * FROM uns_duplicate_samples;
      DROP INDEX samples_topic_time;
      CREATE UNIQUE INDEX samples_topic_time ON samples (topic_id, time DESC);
    `,
  },
  {
    version: 9,
    name: 'cluster instance leases',
    sql: `
      -- Cluster mode: each instance renews its row every 2 s while it can reach the database. The sessions of
      -- an instance are taken over only once its lease is stale, in the same transaction that removes it, and
      -- an instance renews its lease before it reads its sessions: a fast restart and a take-over cannot both
      -- hold them.
      CREATE TABLE cluster_instances (
        instance  text PRIMARY KEY,
        seen_at   timestamptz NOT NULL
      );
    `,
  },
];

/** Arbitrary constant: the advisory lock that serialises migrations across instances. */
const MIGRATION_LOCK = 0x756e73;

export async function migrate(pool: pg.Pool, log: Logger): Promise<number> {
  const client = await pool.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    await client.query(`CREATE TABLE IF NOT EXISTS uns_migrations (
      version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`);
    // Applied versions, not the highest one: a migration numbered below the latest applied one (released
    // later) still runs.
    const { rows } = await client.query<{ version: number }>('SELECT version FROM uns_migrations');
    const done = new Set(rows.map((r) => r.version));
    let applied = 0;
    // In version order, whatever the order of the list.
    for (const m of [...MIGRATIONS].sort((a, b) => a.version - b.version)) {
      if (done.has(m.version)) continue;
      await client.query('BEGIN');
      try {
        await client.query(m.sql);
        await client.query('INSERT INTO uns_migrations (version, name) VALUES ($1, $2)', [m.version, m.name]);
        await client.query('COMMIT');
      } catch (e) {
        await client.query('ROLLBACK');
        throw e;
      }
      log.info({ version: m.version, migration: m.name }, 'migration applied');
      applied++;
    }
    return applied;
  } finally {
    await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => undefined);
    client.release();
  }
}
