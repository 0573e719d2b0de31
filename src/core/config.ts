/**
 * The only reader of process.env. Configuration is defaults -> optional file (UNS_CONFIG) -> environment,
 * validated against schemas/config.schema.json, then deeply frozen. A bad value stops start-up with the
 * key, the value and the reason.
 */
import { readFileSync } from 'node:fs';
import { closest, distance } from 'fastest-levenshtein';
import { join, resolve } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { parse as parseYaml } from 'yaml';
import { UnsError } from './errors.js';
import { packageRoot } from './paths.js';

export interface Config {
  readonly dataDir: string;
  readonly topicsFile: string;
  readonly mqtt: {
    readonly host: string; readonly port: number; readonly wsPath: string; readonly maxPacketBytes: number;
    readonly maxTopicBytes: number; readonly maxTopicLevels: number; readonly connectTimeoutMs: number; readonly keepaliveLimitS: number;
    readonly slowConsumerBytes: number; readonly resendCheckCount: number;
    /** 'on': every MQTT TCP connection starts with a PROXY protocol header (behind HAProxy or another TCP load balancer). */
    readonly proxyProtocol: 'on' | 'off';
    /** Persistent sessions: messages kept per absent client (0: no limit), what a full queue drops, expiry (0: never). */
    readonly sessionQueueMax: number; readonly sessionQueueOverflow: 'drop-new' | 'drop-old'; readonly sessionExpiryS: number;
  };
  readonly http: { readonly host: string; readonly port: number };
  /**
   * TLS for MQTT (its own port, 8883) and for the HTTP port (HTTPS, and WSS for MQTT over WebSocket and the
   * streams). On when a certificate and key are configured; the files are re-read when they change.
   */
  readonly tls: {
    readonly certPath: string | null; readonly keyPath: string | null;
    /** CA bundle that client certificates must chain to (needed for clientCerts other than 'off'). */
    readonly caPath: string | null;
    readonly mqttPort: number;
    /** Plain MQTT on mqtt.port beside MQTT over TLS ('off': TLS only). */
    readonly mqttPlain: 'on' | 'off';
    /** HTTPS on the HTTP port ('auto': when a certificate is configured; 'off' e.g. behind a TLS proxy). */
    readonly http: 'auto' | 'off';
    /** MQTT over TLS: 'optional' lets a verified certificate stand for the user its subject CN names. */
    readonly clientCerts: 'off' | 'optional' | 'required';
    /** How often the certificate files are checked for a change (ms). */
    readonly watchIntervalMs: number;
  };
  /**
   * External-broker mode: with a URL, no broker is embedded; the server attaches to that broker as an MQTT 5
   * client and ingests through a shared subscription, acknowledging each message once it is durable.
   */
  readonly link: {
    readonly url: string | null; readonly username: string | null; readonly password: string | null; readonly caPath: string | null;
    /** The persistent session's client id; null: derived from the host name and the data dir (stable, one per instance). */
    readonly clientId: string | null;
    readonly group: string;
    /** Comma-separated topic filters to ingest; '' = the route filters of topics.yaml. */
    readonly filters: string;
    readonly sessionExpiryS: number; readonly receiveMaximum: number; readonly keepaliveS: number;
    readonly rejectedPrefix: string;
  };
  /** Cluster mode: several instances of one namespace, over Redis (null url: one instance). */
  readonly cluster: { readonly url: string | null; readonly channel: string };
  readonly database: {
    readonly url: string | null; readonly poolSize: number; readonly statementTimeoutMs: number;
    readonly timescale: 'auto' | 'on' | 'off'; readonly compressAfter: string;
  };
  readonly store: {
    readonly batchMaxItems: number; readonly batchMaxDelayMs: number; readonly maxConcurrentFlushes: number;
    readonly highWaterItems: number; readonly lowWaterItems: number; readonly spoolMaxBytes: number;
    readonly probeIntervalMs: number; readonly healthIntervalMs: number; readonly dupWindowMs: number; readonly resendLagMs: number; readonly retentionIntervalMs: number;
  };
  readonly payload: { readonly maxBytes: number; readonly maxDepth: number };
  readonly auth: {
    readonly adminUser: string | null; readonly adminPassword: string | null; readonly jwtSecret: string | null;
    readonly jwtPublicKey: string | null; readonly jwtAlgorithms: readonly string[]; readonly jwtClockToleranceS: number;
    /** Longest JWT lifetime accepted (UNS_JWT_MAX_LIFETIME_S). */
    readonly jwtMaxLifetimeS: number;
  };
  readonly log: { readonly level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent' };
  /**
   * Heap growth between full collections (percent; 0: V8's own heuristics). 200 keeps the server's RSS under
   * 300 MB at its saturated rate on the bench machine, where V8 alone let it reach ~330-355 MB; 100 keeps it near
   * 240 MB for ~5% of peak throughput and a longer latency tail (more full collections).
   */
  readonly memory: { readonly heapGrowingPercent: number };
  readonly webhooks: {
    /** CIDRs and host names deliveries may reach although private/loopback (UNS_WEBHOOK_ALLOWLIST). */
    readonly allowlist: string;
    /** Delivery attempts in flight at once in this instance (UNS_WEBHOOK_WORKERS). */
    readonly workers: number;
    /** How often the outbox is polled for due deliveries when nothing woke the workers (UNS_WEBHOOK_POLL_MS). */
    readonly pollIntervalMs: number;
    /** Deliveries claimed per query at most (UNS_WEBHOOK_CLAIM_BATCH). */
    readonly claimBatch: number;
    /** A claimed delivery's lease is its timeout plus this; a crashed worker's rows are retried after it. */
    readonly leaseMarginMs: number;
    /** An endpoint failing with no success for this long is disabled (UNS_WEBHOOK_DISABLE_AFTER_S). */
    readonly disableAfterS: number;
    /** After a secret rotation the old secret keeps signing for this long. */
    readonly rotationGraceS: number;
    /** Outbox rows waiting in memory for the database at most; beyond, the oldest are dropped (counted). */
    readonly maxQueued: number;
    /** On shutdown, how long attempts under way may finish before their leases are left to expire. */
    readonly stopGraceMs: number;
    /** How often each instance re-reads the endpoint list (changes made through another instance). */
    readonly refreshIntervalMs: number;
    /** Settled deliveries (succeeded or dead) and their attempts are kept this long. */
    readonly retentionS: number;
    /** Response bytes read per attempt; the delivery log keeps the first 1 KiB as the excerpt. */
    readonly maxResponseBytes: number;
  };
  readonly sparkplug: {
    /** The Sparkplug host id: STATE is published on spBv1.0/STATE/<hostId> (UNS_SPARKPLUG_HOST_ID). */
    readonly hostId: string;
    /** After a sequence gap, how long missing messages may still arrive before a rebirth is requested. */
    readonly reorderTimeoutMs: number;
    /** Ask edge nodes to rebirth (NCMD Node Control/Rebirth) on a gap, DATA before BIRTH or an unknown alias. */
    readonly autoRebirth: boolean;
    /** At most one rebirth request per edge node in this period. */
    readonly rebirthCooldownMs: number;
    /** Metric timestamps further ahead of the server clock than this are refused. */
    readonly maxFutureMs: number;
  };
  readonly ingest: {
    /** UNS_INGEST_SECRET_* variables, named by topics.yaml `ingest[].secretEnv`. Never logged or echoed. */
    readonly secrets: Readonly<Record<string, string>>;
    /** Accept `ingest[].secret` literals in topics.yaml (development only; warned at start-up). */
    readonly allowLiteralSecrets: boolean;
  };
}

export const DEFAULTS: Config = {
  dataDir: './data',
  topicsFile: './topics.yaml',
  mqtt: { host: '0.0.0.0', port: 1883, wsPath: '/mqtt', maxPacketBytes: 1_048_576, maxTopicBytes: 1024, maxTopicLevels: 32,
    connectTimeoutMs: 5_000, keepaliveLimitS: 0, slowConsumerBytes: 8_388_608, resendCheckCount: 64, proxyProtocol: 'off',
    sessionQueueMax: 1_000, sessionQueueOverflow: 'drop-new', sessionExpiryS: 7 * 86_400 },
  http: { host: '0.0.0.0', port: 8080 },
  tls: { certPath: null, keyPath: null, caPath: null, mqttPort: 8883, mqttPlain: 'on', http: 'auto', clientCerts: 'off', watchIntervalMs: 5_000 },
  link: {
    url: null, username: null, password: null, caPath: null, clientId: null, group: 'uns-bridge', filters: '',
    sessionExpiryS: 7 * 86_400, receiveMaximum: 5_000, keepaliveS: 30, rejectedPrefix: '$uns/rejected/',
  },
  cluster: { url: null, channel: 'uns-bridge' },
  database: { url: null, poolSize: 6, statementTimeoutMs: 10_000, timescale: 'auto', compressAfter: '7d' },
  store: { batchMaxItems: 2_000, batchMaxDelayMs: 4, maxConcurrentFlushes: 2, highWaterItems: 20_000, lowWaterItems: 10_000,
    spoolMaxBytes: 1_073_741_824, probeIntervalMs: 1_000, healthIntervalMs: 2_000, dupWindowMs: 600_000, resendLagMs: 120_000, retentionIntervalMs: 3_600_000 },
  payload: { maxBytes: 262_144, maxDepth: 32 },
  auth: { adminUser: null, adminPassword: null, jwtSecret: null, jwtPublicKey: null, jwtAlgorithms: ['HS256'], jwtClockToleranceS: 5, jwtMaxLifetimeS: 86_400 },
  log: { level: 'info' },
  memory: { heapGrowingPercent: 200 },
  webhooks: {
    allowlist: '', workers: 32, pollIntervalMs: 1_000, claimBatch: 100, leaseMarginMs: 30_000, disableAfterS: 5 * 86_400,
    rotationGraceS: 86_400, maxQueued: 100_000, stopGraceMs: 2_000, refreshIntervalMs: 5_000, retentionS: 30 * 86_400,
    maxResponseBytes: 4_096,
  },
  sparkplug: { hostId: 'uns-bridge', reorderTimeoutMs: 2_000, autoRebirth: true, rebirthCooldownMs: 10_000, maxFutureMs: 600_000 },
  ingest: { secrets: {}, allowLiteralSecrets: false },
};

type Kind = 'string' | 'int' | 'nullable-string';

/** Environment variables and the config keys they set. */
export const ENV_KEYS: ReadonlyArray<readonly [env: string, path: string, kind: Kind]> = [
  ['UNS_DATA_DIR', 'dataDir', 'string'],
  ['UNS_TOPICS', 'topicsFile', 'string'],
  ['UNS_MQTT_HOST', 'mqtt.host', 'string'],
  ['UNS_MQTT_PORT', 'mqtt.port', 'int'],
  ['UNS_WS_PATH', 'mqtt.wsPath', 'string'],
  ['UNS_MQTT_MAX_PACKET_BYTES', 'mqtt.maxPacketBytes', 'int'],
  ['UNS_MQTT_PROXY_PROTOCOL', 'mqtt.proxyProtocol', 'string'],
  ['UNS_MQTT_SESSION_QUEUE_MAX', 'mqtt.sessionQueueMax', 'int'],
  ['UNS_MQTT_SESSION_QUEUE_OVERFLOW', 'mqtt.sessionQueueOverflow', 'string'],
  ['UNS_MQTT_SESSION_EXPIRY_S', 'mqtt.sessionExpiryS', 'int'],
  ['UNS_HTTP_HOST', 'http.host', 'string'],
  ['UNS_HTTP_PORT', 'http.port', 'int'],
  ['UNS_TLS_CERT_PATH', 'tls.certPath', 'nullable-string'],
  ['UNS_TLS_KEY_PATH', 'tls.keyPath', 'nullable-string'],
  ['UNS_TLS_CA_PATH', 'tls.caPath', 'nullable-string'],
  ['UNS_MQTTS_PORT', 'tls.mqttPort', 'int'],
  ['UNS_MQTT_PLAIN', 'tls.mqttPlain', 'string'],
  ['UNS_HTTP_TLS', 'tls.http', 'string'],
  ['UNS_TLS_CLIENT_CERTS', 'tls.clientCerts', 'string'],
  ['UNS_BROKER_URL', 'link.url', 'nullable-string'],
  ['UNS_BROKER_USERNAME', 'link.username', 'nullable-string'],
  ['UNS_BROKER_PASSWORD', 'link.password', 'nullable-string'],
  ['UNS_BROKER_CA_PATH', 'link.caPath', 'nullable-string'],
  ['UNS_BROKER_CLIENT_ID', 'link.clientId', 'nullable-string'],
  ['UNS_BROKER_GROUP', 'link.group', 'string'],
  ['UNS_BROKER_FILTERS', 'link.filters', 'string'],
  ['UNS_CLUSTER', 'cluster.url', 'nullable-string'],
  ['UNS_CLUSTER_CHANNEL', 'cluster.channel', 'string'],
  ['DATABASE_URL', 'database.url', 'nullable-string'],
  ['UNS_DATABASE_URL', 'database.url', 'nullable-string'],
  ['UNS_TIMESCALE', 'database.timescale', 'string'],
  ['UNS_ADMIN_USER', 'auth.adminUser', 'nullable-string'],
  ['UNS_ADMIN_PASSWORD', 'auth.adminPassword', 'nullable-string'],
  ['UNS_JWT_SECRET', 'auth.jwtSecret', 'nullable-string'],
  ['UNS_JWT_PUBLIC_KEY', 'auth.jwtPublicKey', 'nullable-string'],
  ['UNS_JWT_MAX_LIFETIME_S', 'auth.jwtMaxLifetimeS', 'int'],
  ['UNS_LOG_LEVEL', 'log.level', 'string'],
  ['UNS_HEAP_GROWING_PERCENT', 'memory.heapGrowingPercent', 'int'],
  ['UNS_WEBHOOK_ALLOWLIST', 'webhooks.allowlist', 'string'],
  ['UNS_WEBHOOK_WORKERS', 'webhooks.workers', 'int'],
  ['UNS_WEBHOOK_POLL_MS', 'webhooks.pollIntervalMs', 'int'],
  ['UNS_WEBHOOK_CLAIM_BATCH', 'webhooks.claimBatch', 'int'],
  ['UNS_WEBHOOK_DISABLE_AFTER_S', 'webhooks.disableAfterS', 'int'],
  ['UNS_SPARKPLUG_HOST_ID', 'sparkplug.hostId', 'string'],
];

/** UNS_* names read elsewhere than ENV_KEYS (UNS_INGEST_SECRET_* too, by prefix). */
const OTHER_ENV = ['UNS_CONFIG'];

/**
 * UNS_* variables this server does not read: most often a misspelling (UNS_MQTT_PROT), which would
 * otherwise be ignored without a word. Each with the closest known name when one is near.
 */
export function unknownEnvNames(env: NodeJS.ProcessEnv = process.env): string[] {
  const known = [...ENV_KEYS.map(([name]) => name), ...OTHER_ENV];
  const out: string[] = [];
  for (const name of Object.keys(env).sort()) {
    if (!name.startsWith('UNS_') || known.includes(name) || known.includes(name.replace(/_FILE$/, '')) || name.startsWith('UNS_INGEST_SECRET_') || name.startsWith('UNS_TEST_')) continue;
    const near = closest(name, known);
    out.push(distance(name, near) <= 3 ? `${name} is not a uns-bridge variable (did you mean ${near}?)` : `${name} is not a uns-bridge variable`);
  }
  return out;
}

/** Keys whose values are never echoed in an error. */
const SECRET_PATHS = new Set(['auth.adminPassword', 'auth.jwtSecret', 'database.url', 'link.password', 'link.url']);

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function merge(base: Obj, over: Obj): Obj {
  const out: Obj = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = isObj(v) && isObj(base[k]) ? merge(base[k] as Obj, v) : v;
  return out;
}

function setPath(obj: Obj, path: string, value: unknown): void {
  const keys = path.split('.');
  let cur = obj;
  for (const k of keys.slice(0, -1)) {
    if (!isObj(cur[k])) cur[k] = {};
    cur = cur[k] as Obj;
  }
  cur[keys[keys.length - 1] as string] = value;
}

function deepFreeze<T>(o: T): T {
  if (isObj(o) || Array.isArray(o)) {
    for (const v of Object.values(o as object)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

function fail(key: string, value: unknown, reason: string, path = key): never {
  const secret = SECRET_PATHS.has(path) || path.startsWith('ingest.secrets') || ENV_KEYS.some(([env, p]) => env === key && SECRET_PATHS.has(p));
  const shown = secret ? '<hidden>' : JSON.stringify(value);
  throw new UnsError('UNS_ERR_CONFIG_INVALID', `${key}=${shown}: ${reason}`);
}

const validate = new Ajv2020({ allErrors: false, strict: true })
  .compile(JSON.parse(readFileSync(join(packageRoot(), 'schemas', 'config.schema.json'), 'utf8')) as object);

export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Obj = {}): Config {
  let cfg = structuredClone(DEFAULTS) as unknown as Obj;
  const origin = new Map<string, string>();

  const file = env['UNS_CONFIG'];
  if (file) {
    let parsed: unknown;
    try {
      const text = readFileSync(file, 'utf8');
      parsed = file.endsWith('.json') ? JSON.parse(text) : parseYaml(text);
    } catch (e) {
      fail('UNS_CONFIG', file, `cannot read config file: ${(e as Error).message}`);
    }
    if (!isObj(parsed)) fail('UNS_CONFIG', file, 'config file must hold an object');
    cfg = merge(cfg, parsed);
  }

  for (const [name, path, kind] of ENV_KEYS) {
    let raw = env[name];
    // Docker/Kubernetes secrets: NAME_FILE names a file holding the value (trailing newline dropped).
    const file = env[`${name}_FILE`];
    if ((raw === undefined || raw === '') && file) {
      try {
        raw = readFileSync(file, 'utf8').replace(/\r?\n$/, '');
      } catch (e) {
        fail(`${name}_FILE`, file, `cannot read: ${(e as Error).message}`);
      }
    }
    if (raw === undefined || raw === '') continue;
    origin.set(path, name);
    if (kind === 'int') {
      if (!/^-?\d+$/.test(raw.trim())) fail(name, raw, 'must be an integer');
      setPath(cfg, path, Number(raw.trim()));
    } else {
      setPath(cfg, path, raw);
    }
  }
  // Inbound ingest secrets: only UNS_INGEST_SECRET_* names, so topics.yaml cannot point at any other secret.
  const ingestSecrets: Obj = {};
  for (const [name, value] of Object.entries(env)) if (/^UNS_INGEST_SECRET_[A-Z0-9_]{1,64}$/.test(name) && value) ingestSecrets[name] = value;
  setPath(cfg, 'ingest.secrets', ingestSecrets);
  cfg = merge(cfg, overrides);

  if (!validate(cfg)) {
    const err = validate.errors?.[0];
    const path = (err?.instancePath ?? '').split('/').filter(Boolean).join('.');
    let value: unknown = cfg;
    for (const k of path.split('.').filter(Boolean)) value = isObj(value) ? value[k] : undefined;
    const key = origin.get(path) ?? (path || '(root)');
    const extra = err?.keyword === 'additionalProperties' ? ` '${String(err.params['additionalProperty'])}'` : '';
    fail(key, value, `${err?.message ?? 'invalid'}${extra}`, path);
  }
  const c = cfg as unknown as Config;
  if (c.store.lowWaterItems >= c.store.highWaterItems) fail('store.lowWaterItems', c.store.lowWaterItems, 'must be below store.highWaterItems');
  if ((c.auth.adminUser === null) !== (c.auth.adminPassword === null)) {
    fail(c.auth.adminUser === null ? 'UNS_ADMIN_USER' : 'UNS_ADMIN_PASSWORD', null, 'UNS_ADMIN_USER and UNS_ADMIN_PASSWORD go together');
  }
  const t = c.tls;
  if ((t.certPath === null) !== (t.keyPath === null)) {
    fail(t.certPath === null ? 'UNS_TLS_CERT_PATH' : 'UNS_TLS_KEY_PATH', null, 'UNS_TLS_CERT_PATH and UNS_TLS_KEY_PATH go together');
  }
  if (t.certPath === null && t.mqttPlain === 'off') fail('UNS_MQTT_PLAIN', 'off', 'needs UNS_TLS_CERT_PATH and UNS_TLS_KEY_PATH (no MQTT listener would be left)');
  if (t.clientCerts !== 'off' && (t.certPath === null || t.caPath === null)) {
    fail('UNS_TLS_CLIENT_CERTS', t.clientCerts, 'needs UNS_TLS_CERT_PATH, UNS_TLS_KEY_PATH and UNS_TLS_CA_PATH (the CA client certificates must chain to)');
  }
  if (c.cluster.url !== null && c.link.url !== null) {
    fail('UNS_CLUSTER', c.cluster.url.replace(/\/\/[^@/]*@/, '//***@'), 'not with UNS_BROKER_URL: with an external broker, instances share the load through its shared subscriptions');
  }
  return deepFreeze({ ...c, dataDir: resolve(c.dataDir), topicsFile: resolve(c.topicsFile) });
}
