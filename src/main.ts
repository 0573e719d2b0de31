/**
 * Composition root: the only file that wires broker, bridge and API together.
 */
import { createServer, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import type { Config, IngestFn } from './core/index.js';
import { filterCovers } from './core/index.js';
import { createLogger, type Logger } from './core/index.js';
import { loadTopics, type Namespace } from './core/index.js';
import { loadPayloadSchemas, assertSchemasExist } from './core/index.js';
import { schemasDir, packageVersion } from './core/index.js';
import { hashPassword } from './core/index.js';
import { parseDuration } from './core/index.js';
import { UnsError } from './core/index.js';
import { UnsBroker, BrokerLink, SessionStore, ClusterBus, redactRedisUrl, type ClusterFrame, Authenticator, AccessControl, type UserRecord } from '../broker/index.js';
import { Pipeline, SparkplugDecoder, PgStore, Spool, StoreWriter, SupervisedPostgres, liveSink, rulesSink, sessionEventsSink, SparkplugHost, SparkplugMapper, republishSink } from '../bridge/index.js';
import { createApp, ApiAuth, RequestValidator, loadOpenApi, Metrics, createStreamServer, httpPublisher, readinessReport, type ReadinessReport, type ApiDeps } from './api/index.js';
import { ApiTokenStore } from '../bridge/index.js';
import { ReadQueries } from '../bridge/index.js';
import { LiveHub } from '../bridge/index.js';
import { jwtSecret, instanceId } from './core/index.js';
import { createJwtVerifier } from './core/index.js';
import { lockDataDir } from './core/index.js';
import { TlsFiles } from './core/index.js';
import { EventBus } from './core/index.js';
import { eventId } from './core/index.js';
import { WebhookService, sensorReadingSink } from '../bridge/index.js';
import { RuleService, PgRuleStore } from '../bridge/index.js';
import { buildIngestSources, IngestDedupStore } from '../bridge/index.js';

export interface RunningServer {
  readonly config: Config;
  /** The plain MQTT port, or the MQTT over TLS port when plain MQTT is off; 0 in external-broker mode. */
  readonly mqttPort: number;
  /** MQTT over TLS, when a certificate is configured. */
  readonly mqttsPort: number | null;
  readonly httpPort: number;
  /** Whether the HTTP port speaks HTTPS (and WSS). */
  readonly https: boolean;
  readonly databaseUrl: string;
  /** The embedded broker; null in external-broker mode (UNS_BROKER_URL), where `link` is set instead. */
  readonly broker: UnsBroker | null;
  readonly link: BrokerLink | null;
  readonly pipeline: Pipeline;
  readonly writer: StoreWriter;
  readonly store: PgStore;
  readonly namespace: Namespace;
  readonly hub: LiveHub;
  readonly metrics: Metrics;
  readonly events: EventBus;
  readonly webhooks: WebhookService;
  readonly rules: RuleService;
  readonly sparkplug: SparkplugHost;
  readiness(): ReadinessReport;
  /**
   * SIGHUP: the TLS files and the database users are read again (a renewed certificate is also picked up
   * by itself when its file changes). topics.yaml is not: a changed namespace needs a restart.
   */
  reload(reason: string): Promise<{ tls: boolean; topics: 'unchanged' | 'changed' | 'invalid' }>;
  stop(): Promise<void>;
}

/**
 * External-broker mode: the link, with the Sparkplug host's STATE as its Will and STATE online published on
 * every connection before subscribing. It ingests the route filters of topics.yaml (those no other one
 * covers: overlapping shared subscriptions would each deliver a copy) unless UNS_BROKER_FILTERS says otherwise.
 */
function linkFor(config: Config, namespace: Namespace, ingest: IngestFn, host: SparkplugHost, log: Logger): BrokerLink {
  const c = config.link;
  const wanted = c.filters.trim() !== '' ? c.filters.split(',').map((f) => f.trim()).filter((f) => f !== '') : namespace.routes.map((r) => r.filter);
  const filters = [...new Set(wanted)].filter((f, i, all) => !all.some((g, j) => j !== i && filterCovers(g, f) && (!filterCovers(f, g) || j < i)));
  const clientId = c.clientId ?? instanceId(config.dataDir, hostname());
  return new BrokerLink({
    url: c.url as string, clientId, username: c.username, password: c.password, ca: c.caPath === null ? null : readFileSync(c.caPath),
    group: c.group, filters, sessionExpiryS: c.sessionExpiryS, receiveMaximum: c.receiveMaximum, keepaliveS: c.keepaliveS,
    rejectedPrefix: c.rejectedPrefix, resendCheckCount: config.mqtt.resendCheckCount, will: host.will(), onConnect: () => host.online(),
    ingest, log,
  });
}

/** SHA-256 of a file's bytes, or '' when it cannot be read. */
function fileDigest(file: string): string {
  try {
    return createHash('sha256').update(readFileSync(file)).digest('hex');
  } catch {
    return '';
  }
}

export async function startServer(config: Config, log: Logger = createLogger(config.log.level)): Promise<RunningServer> {
  // The shutdown stack: each part that start-up opens pushes its closing here. A failed start-up and stop()
  // both close in reverse, so shutdown is start-up reversed: ingress (MQTT, HTTP) first, the store last.
  const undo: Array<() => Promise<unknown>> = [];
  try {
    return await start(config, log, undo);
  } catch (e) {
    for (const u of undo.reverse()) await u().catch(() => undefined);
    throw e;
  }
}

async function start(config: Config, log: Logger, undo: Array<() => Promise<unknown>>): Promise<RunningServer> {
  // One server per data dir, before anything in it is touched (its embedded database above all).
  const lock = lockDataDir(config.dataDir);
  undo.push(async () => lock.release());
  // Certificates first too: a wrong path or a key that does not match its certificate stops start-up here.
  const tls = config.tls.certPath !== null && config.tls.keyPath !== null
    ? new TlsFiles({ certPath: config.tls.certPath, keyPath: config.tls.keyPath, caPath: config.tls.caPath }, log.child({ component: 'tls' }))
    : null;
  if (tls !== null) {
    tls.watch(config.tls.watchIntervalMs);
    undo.push(async () => tls.close());
  }
  // Start-up throws early and clearly; nothing below runs with a bad namespace.
  const namespace = loadTopics(config.topicsFile);
  const topicsDigest = fileDigest(config.topicsFile);
  const schemas = loadPayloadSchemas(join(schemasDir(), 'payloads'));
  assertSchemasExist(namespace, schemas);
  // Signed inbound ingest: secrets resolved now, so a missing one stops start-up rather than the first request.
  const ingestSources = buildIngestSources(namespace, config.ingest, log.child({ component: 'ingest' }));
  if (config.auth.adminUser !== null && !namespace.roles.has('admin')) {
    throw new UnsError('UNS_ERR_CONFIG_INVALID', `UNS_ADMIN_USER is set but ${namespace.file} defines no 'admin' role`);
  }

  let pgProcess: SupervisedPostgres | null = null;
  let databaseUrl = config.database.url;
  if (databaseUrl === null) {
    // Supervised: restarted with back-off if its postmaster dies; the writer spools meanwhile.
    pgProcess = await SupervisedPostgres.start({ dataDir: join(config.dataDir, 'pg'), log: log.child({ component: 'embedded-postgres' }) });
    databaseUrl = pgProcess.url;
    const proc = pgProcess;
    undo.push(() => proc.stop());
  }

  const retentions = namespace.routes.filter((r) => r.store && r.retentionMs !== undefined);
  const storedRoutes = namespace.routes.filter((r) => r.store);
  const dropAfterMs = storedRoutes.length > 0 && storedRoutes.every((r) => r.retentionMs !== undefined)
    ? Math.max(...storedRoutes.map((r) => r.retentionMs as number)) : null;
  const store = new PgStore({
    url: databaseUrl, poolSize: config.database.poolSize, statementTimeoutMs: config.database.statementTimeoutMs,
    timescale: config.database.timescale, log: log.child({ component: 'store' }),
    timescalePolicy: { compressAfterMs: parseDuration(config.database.compressAfter) ?? 7 * 86_400_000, dropAfterMs },
  });

  undo.push(() => store.close());
  const users = new Map<string, UserRecord>();
  for (const u of namespace.users.values()) users.set(u.username, u);
  const adminHash = config.auth.adminUser !== null && config.auth.adminPassword !== null ? await hashPassword(config.auth.adminPassword) : null;
  if (adminHash !== null && config.auth.adminUser !== null) users.set(config.auth.adminUser, { username: config.auth.adminUser, passwordHash: adminHash, roles: ['admin'] });

  // Users from the database (`uns-bridge user add`), beside those of topics.yaml, which win on a clash.
  const reloadUsers = async (): Promise<void> => {
    const stored = await store.loadUsers();
    for (const [name] of users) if (!namespace.users.has(name) && !stored.some((u) => u.username === name)) users.delete(name);
    for (const u of stored) if (!namespace.users.has(u.username)) users.set(u.username, u);
  };
  // The database may be down at start-up: the server still starts (degraded, spooling) and opens the
  // store when it returns, rather than crash-looping.
  let storeOpen = false;
  const openStore = async (): Promise<void> => {
    if (storeOpen) return;
    await store.open();
    if (adminHash !== null && config.auth.adminUser !== null) await store.upsertUser(config.auth.adminUser, adminHash, ['admin']);
    await reloadUsers();
    storeOpen = true;
  };

  const spool = new Spool(join(config.dataDir, 'spool'), config.store.spoolMaxBytes);
  const writer = new StoreWriter(store, spool, {
    ...config.store, log: log.child({ component: 'writer' }),
    probe: async () => { await openStore(); await store.probeWrite(); },
  });
  undo.push(() => writer.close());
  // The Sparkplug host: told by the decoder what to act on, publishing through the broker built below.
  const host = new SparkplugHost({
    ...config.sparkplug, log: log.child({ component: 'sparkplug' }),
    publish: (topic, payload, retain, qos) => publishOut(topic, payload, retain, qos),
  });
  const sparkplug = new SparkplugDecoder({
    maxBytes: config.payload.maxBytes, maxFutureMs: config.sparkplug.maxFutureMs, listener: host,
    topics: new SparkplugMapper(namespace.sparkplugMap, (t) => namespace.checkLevels(t)),
  });
  host.attach(sparkplug);
  const pipeline = new Pipeline({
    namespace, schemas, sparkplug, writer, limits: config.payload, dupWindowMs: config.store.dupWindowMs, resendLagMs: config.store.resendLagMs,
    log: log.child({ component: 'pipeline' }),
  });
  const acl = new AccessControl(namespace.roles);
  // MQTT passwords-as-JWT and the API share one key: tokens from /api/v1/auth/login work on MQTT too.
  const secret = config.auth.jwtSecret ?? jwtSecret(config.dataDir);
  // One JWT verifier for MQTT and HTTP: tokens from /api/v1/auth/login work on MQTT too, also with an
  // identity provider's public key configured.
  const verifyJwt = createJwtVerifier({
    secret, publicKey: config.auth.jwtPublicKey, algorithms: config.auth.jwtAlgorithms, clockToleranceS: config.auth.jwtClockToleranceS,
    maxLifetimeS: config.auth.jwtMaxLifetimeS,
    knownRole: (r) => acl.hasRole(r),
  });
  const auth = new Authenticator({ users: () => users, anonymousRole: namespace.anonymousRole, acl, verifyJwt });
  // External-broker mode: no broker here; the link to the plant's broker is made once everything that
  // handles messages is in place (below, where the embedded broker would start listening).
  // Cluster mode: the other instances of this namespace, over Redis; this one named as in external-broker mode.
  const me = instanceId(config.dataDir, hostname());
  let clientsHere = (): number => 0;
  const cluster = config.cluster.url === null ? null : new ClusterBus({
    url: config.cluster.url, instanceId: me, channel: config.cluster.channel, log: log.child({ component: 'cluster' }), clients: () => clientsHere(),
  });
  if (cluster !== null) undo.push(() => cluster.close());
  // Persistent MQTT sessions live in the store's database, read once it is open (below).
  const sessions = config.link.url !== null ? null : new SessionStore({
    pool: store.pool, log: log.child({ component: 'sessions' }), queueMax: config.mqtt.sessionQueueMax,
    overflow: config.mqtt.sessionQueueOverflow, expiryMs: config.mqtt.sessionExpiryS * 1_000,
    ...(cluster !== null ? { instanceId: me } : {}),
  });
  const broker = config.link.url !== null ? null : await UnsBroker.create({
    limits: config.mqtt, auth, ingest: pipeline.ingest, log: log.child({ component: 'broker' }),
    ...(sessions !== null ? { sessions } : {}), ...(cluster !== null ? { cluster } : {}),
    connectionClosed: (conn, at) => pipeline.connectionClosed(conn, at),
  });
  if (broker !== null) clientsHere = () => broker.connectedClients;
  let link: BrokerLink | null = null;
  // What the server publishes (HTTP publish, Sparkplug STATE and commands, republished metrics).
  const publishOut = (topic: string, payload: Buffer, retain: boolean, qos: 0 | 1 = 1): Promise<void> => {
    if (broker !== null) return broker.publishFromServer(topic, payload, retain, qos);
    if (link !== null) return link.publish(topic, payload, retain, qos);
    return Promise.reject(new Error('not connected to the broker yet'));
  };
  // Closed here on a failed start-up; on stop() at its place as ingress (pushed again once it listens).
  if (broker !== null) undo.push(() => broker.close());

  let retainedRestored = false;
  const restoreRetained = async (): Promise<void> => {
    // With an external broker, retained messages are that broker's.
    if (retainedRestored || broker === null) return;
    await broker.restoreRetained(await store.loadRetained());
    retainedRestored = true;
  };
  const loadSessions = (): Promise<void> => sessions?.load() ?? Promise.resolve();
  try {
    await openStore();
    await restoreRetained();
    await loadSessions();
    const snapshot = await store.loadState('sparkplug');
    if (snapshot !== undefined) {
      const r = sparkplug.restore(snapshot);
      if (!r.ok) log.warn({ code: r.code, reason: r.reason }, 'stored Sparkplug state not restored');
    }
  } catch (e) {
    if (e instanceof UnsError) throw e;
    log.error({ err: (e as Error).message }, 'database unreachable at start-up: starting degraded, spooling to disk');
    writer.markUnavailable(e as Error);
  }
  writer.on('state', (s) => {
    if (s !== 'healthy') return;
    restoreRetained().catch((e: Error) => log.warn({ err: e.message }, 'could not restore retained messages'));
    loadSessions().catch((e: Error) => log.warn({ err: e.message }, 'could not load MQTT sessions'));
  });
  writer.start();

  // A user added with the CLI while the server runs is known within seconds, without a restart.
  const usersTimer = setInterval(() => {
    if (storeOpen) reloadUsers().catch((e: Error) => log.debug({ err: e.message }, 'users not reloaded'));
  }, 5_000);
  usersTimer.unref();
  undo.push(async () => clearInterval(usersTimer));
  const nobody = (): string | null => (users.size === 0 && namespace.anonymousRole === null
    ? 'no users: nobody can log in or connect with credentials; set UNS_ADMIN_USER and UNS_ADMIN_PASSWORD, or run `uns-bridge user add NAME --role admin`'
    : null);
  const warning = nobody();
  if (warning !== null) log.error(warning);

  let stopping = false;
  const readiness = (): ReadinessReport => readinessReport({
    users: { count: users.size, warning: nobody() },
    writer: writer.stats, storeOpen, timescale: store.timescale.enabled, stopping,
    broker: broker !== null ? { clients: broker.connectedClients, held: broker.stats.held } : { clients: 0, held: link?.stats.held ?? 0 },
    link: config.link.url === null ? null : {
      broker: link?.address ?? null, clientId: link?.clientId ?? null, group: config.link.group, connected: link?.stats.connected ?? false, subscribed: link?.stats.subscribed ?? false, lastError: link?.stats.lastError ?? 'not started',
      held: link?.stats.held ?? 0, connectionsLost: link?.stats.connectionsLost ?? 0,
    },
    sessions: sessions === null ? null : (() => {
      const st = sessions.snapshot();
      return { loaded: st.loaded, count: st.sessions, queued: st.queued, unsaved: st.unsaved, failingSince: st.failingSince, lastError: st.lastError, loadMs: st.loadMs };
    })(),
    embedded: pgProcess ? { state: pgProcess.state, pid: pgProcess.pid, restarts: pgProcess.restarts, lastError: pgProcess.lastError } : null,
    cluster: cluster === null ? null : {
      instance: me, redis: redactRedisUrl(config.cluster.url ?? ''), connected: cluster.stats.connected, downSince: cluster.stats.downSince,
      lastError: cluster.stats.lastError, peers: cluster.livePeers(), dropped: cluster.stats.dropped,
    },
  });

  // Events for webhooks and rules: producers emit here, consumers subscribe (wired below).
  const events = new EventBus();
  const hub = new LiveHub();
  pipeline.addSink(liveSink(hub));
  if (cluster !== null) {
    // The streams of every instance show every accepted message, wherever it came in.
    pipeline.addSink({ name: 'cluster', when: 'accepted', accept: (m) => { cluster.send({ k: 'm', msg: m }); } });
    cluster.on('frame', (f: ClusterFrame) => { if (f.k === 'm') hub.publish(f.msg); });
  }
  // Threshold rules: judged in memory on every durable message; state is written before events go out.
  // Loaded once the database is open (not before: a crossing is never judged without its stored state).
  const rules = new RuleService({
    store: new PgRuleStore(store.pool), fileRules: namespace.rules, emit: (e) => events.emit(e), log: log.child({ component: 'rules' }),
    permitted: (r) => acl.forRoles(r.roles).canSubscribe(r.topicFilter),
  });
  undo.push(() => rules.close());
  pipeline.addSink(rulesSink(rules.onMessage));
  const loadRules = (): void => {
    if (storeOpen) rules.load().catch((e: Error) => log.warn({ err: e.message }, 'threshold rules not loaded yet'));
  };
  loadRules();
  writer.on('state', (s) => { if (s === 'healthy') loadRules(); });
  // Outbound webhooks: an event matched to an endpoint becomes an outbox row before anything is sent.
  const webhooks = new WebhookService({
    pool: store.pool, permissions: (roles) => acl.forRoles(roles), events, settings: config.webhooks,
    topicLimits: { maxBytes: config.mqtt.maxTopicBytes, maxLevels: config.mqtt.maxTopicLevels }, log: log.child({ component: 'webhooks' }),
    ...(cluster !== null ? { changed: () => { cluster.send({ k: 'webhooks' }); } } : {}),
  });
  // A webhook made through another instance is known here at once (not only at the next refresh).
  cluster?.on('frame', (f: ClusterFrame) => {
    if (f.k === 'webhooks') webhooks.dispatcher.refresh().catch((e: Error) => log.debug({ err: e.message }, 'webhooks not reloaded'));
  });
  pipeline.addSink(sensorReadingSink((t) => webhooks.wants(t), (e) => events.emit(e)));
  pipeline.addSink(sessionEventsSink((e) => events.emit(e)));
  pipeline.addSink(host.sink());
  // Sparkplug metrics mapped into the ISA-95 namespace reach plain MQTT subscribers as JSON on their topic.
  pipeline.addSink(republishSink((topic, payload) => publishOut(topic, payload, false, 1),
    (topic, e) => log.warn({ topic, err: e.message }, 'mapped Sparkplug metric not republished')));
  const clientEvent = (type: 'device.online' | 'device.offline') => (c: { id: string }): void => {
    const now = Date.now();
    events.emit({ id: eventId(now), type, occurredAt: now, data: { source: 'mqtt', client_id: c.id, username: (c as { uns?: { username?: string } }).uns?.username ?? null } });
  };
  // Client connections are seen by the embedded broker only (an external broker has its own events).
  broker?.aedes.on('clientReady', clientEvent('device.online'));
  broker?.aedes.on('clientDisconnect', clientEvent('device.offline'));
  writer.on('state', (s) => {
    const now = Date.now();
    events.emit({ id: eventId(now), type: 'system.health_changed', occurredAt: now, data: { component: 'store', state: s, reason: s === 'degraded' ? writer.stats.lastError : null } });
  });
  await webhooks.start();
  undo.push(() => webhooks.stop());
  const metrics = new Metrics({
    accepted: () => pipeline.stats.accepted, rejected: () => pipeline.stats.rejected, queueDepth: () => writer.queued,
    spoolBytes: () => writer.stats.spoolBytes, backpressureHolds: () => pipeline.stats.backpressureHolds,
    duplicatesDropped: () => pipeline.stats.duplicatesDropped, mqttClients: () => broker?.connectedClients ?? 0,
    committedRows: () => writer.stats.committedRows,
    sparkplug: () => ({ ...host.stats, nodesOnline: sparkplug.sessions().filter((n) => n.online).length }),
    ...(broker !== null ? { broker: () => broker.stats } : {}), ...(sessions !== null ? { sessions: () => sessions.snapshot() } : {}),
    ...(cluster !== null ? { cluster: () => ({ ...cluster.stats, peers: cluster.livePeers().length }) } : {}), link: () => link?.stats ?? null, tlsCertificate: () => tls?.summary ?? null, samples: () => store.sampleStats, webhooks: () => webhooks.dispatcher.stats, rules: () => rules.engine.stats, version: packageVersion(),
    store: () => {
      const w = writer.stats;
      return { degraded: w.state !== 'healthy', holding: w.holding !== null, outages: w.outages, holds: w.holds, refused: w.storeRejected,
        corrupt: w.corruptSegments, spoolSegments: w.spoolSegments, replayLeft: w.replay === null ? 0 : w.replay.total - w.replay.done };
    },
  });
  writer.on('flush', (_n, ms) => metrics.flushSeconds.observe(ms / 1000));
  const tokens = new ApiTokenStore(store.pool);
  const openapi = loadOpenApi();
  const apiAuth = new ApiAuth({
    acl, tokens, secret, algorithm: 'HS256', ttlS: 3600, verifyJwt,
    checkPassword: async (username, password, from, present) => {
      // Login takes passwords only: a JWT here would let a token renew itself forever.
      if (password.startsWith('eyJ')) return { failure: 'password required' };
      const r = await auth.authenticate(username, Buffer.from(password), from, present);
      return 'failure' in r ? r : { username: r.username, roles: r.roles };
    },
  });
  const publish = httpPublisher({
    ingest: pipeline.ingest, deliver: (topic, payload, retain) => publishOut(topic, payload, retain),
    holding: () => writer.stats.holding?.reason ?? null,
  });
  const deps: ApiDeps = {
    log: log.child({ component: 'api' }), readiness, auth: apiAuth, tokens, validator: new RequestValidator(openapi), openapi,
    namespace, queries: new ReadQueries(store.pool, () => store.timescale.enabled), hub, metrics, events, pool: store.pool, rules,
    ingest: { sources: ingestSources, dedup: new IngestDedupStore(store.pool) }, publish, now: () => Date.now(),
    webhooks, sparkplug: host,
    limits: { bodyBytes: 1_048_576, topic: { maxBytes: config.mqtt.maxTopicBytes, maxLevels: config.mqtt.maxTopicLevels } },
  };
  const stream = createStreamServer(deps);
  undo.push(async () => stream.close());
  const app = createApp(deps);
  const https = tls !== null && config.tls.http === 'auto';
  const http: HttpServer = https ? createHttpsServer({ ...tls.options, minVersion: 'TLSv1.2' }, app) : createServer(app);
  if (https) tls.onChange((options) => (http as HttpsServer).setSecureContext({ ...options, minVersion: 'TLSv1.2' }));
  undo.push(() => new Promise((r) => { http.closeAllConnections(); http.close(r); }));
  http.on('upgrade', (req, socket, head) => {
    const path = (req.url ?? '').split('?')[0];
    if (path === config.mqtt.wsPath && broker !== null) broker.handleUpgrade(req, socket, head);
    else if (path === '/ws/datapoints/stream') stream.handleUpgrade(req, socket, head);
    else socket.destroy();
  });
  // STATE online before any edge traffic is accepted; offline first thing on stop (pushed after the broker).
  if (broker !== null) await host.online();
  await new Promise<void>((res, rej) => {
    http.once('error', rej);
    http.listen(config.http.port, config.http.host, () => { http.off('error', rej); res(); });
  });
  let plainAddr: AddressInfo | null = null;
  let tlsAddr: AddressInfo | null = null;
  if (broker !== null) {
    plainAddr = config.tls.mqttPlain === 'on' ? await broker.listenTcp(config.mqtt.port, config.mqtt.host) : null;
    tlsAddr = tls !== null ? await broker.listenTls(config.tls.mqttPort, config.mqtt.host, tls, config.tls.clientCerts) : null;
    undo.push(() => broker.close());
  } else {
    // Known before it connects: STATE online goes out through it on every connection.
    const l = linkFor(config, namespace, pipeline.ingest, host, log.child({ component: 'link' }));
    link = l;
    undo.push(() => l.close());
    await l.start();
    l.accept();
  }
  undo.push(() => host.offline());
  const httpPort = (http.address() as AddressInfo).port;

  const retentionTimer = setInterval(() => {
    if (!storeOpen || writer.state !== 'healthy' || retentions.length === 0) return;
    store.applyRetention(retentions.map((r) => ({ name: r.name, retentionMs: r.retentionMs as number })))
      .then((n) => { if (n > 0) log.info({ deleted: n }, 'retention applied'); }, (e: Error) => log.warn({ err: e.message }, 'retention failed'));
  }, config.store.retentionIntervalMs);
  retentionTimer.unref();
  undo.push(async () => clearInterval(retentionTimer));

  log.info({ mqtt: plainAddr?.port ?? null, mqtts: tlsAddr?.port ?? null, broker: link?.address ?? null, http: httpPort, https, wsPath: config.mqtt.wsPath, embedded: pgProcess !== null, timescale: store.timescale.enabled },
    'uns-bridge started');

  return {
    config, mqttPort: (plainAddr ?? tlsAddr)?.port ?? 0, mqttsPort: tlsAddr?.port ?? null, httpPort, https, databaseUrl, broker, link, pipeline, writer, store, namespace, hub, metrics, events, rules, readiness,
    webhooks, sparkplug: host,
    async reload(reason) {
      const changed = tls?.reload(reason) ?? false;
      if (storeOpen) await reloadUsers().catch((e: Error) => log.warn({ err: e.message }, 'users not reloaded'));
      // topics.yaml is not applied at run time, but an operator who edited it and sent SIGHUP is told so,
      // and whether a restart would start with it.
      let topics: 'unchanged' | 'changed' | 'invalid' = 'unchanged';
      if (fileDigest(config.topicsFile) !== topicsDigest) {
        try {
          loadTopics(config.topicsFile);
          topics = 'changed';
          log.warn({ file: config.topicsFile }, 'topics.yaml changed since start-up and is valid: restart to apply it (it is read at start-up only)');
        } catch (e) {
          topics = 'invalid';
          log.error({ file: config.topicsFile, err: (e as Error).message }, 'topics.yaml changed since start-up and is NOT valid: a restart would fail; the running namespace is unchanged');
        }
      }
      log.info({ reason, tls: changed, topics }, 'reloaded');
      return { tls: changed, topics };
    },
    async stop() {
      if (stopping) return;
      stopping = true;
      for (const close of undo.splice(0).reverse()) {
        await close().catch((e: Error) => log.warn({ err: e.message }, 'shutdown step failed'));
      }
      log.info('uns-bridge stopped');
    },
  };
}
