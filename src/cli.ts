#!/usr/bin/env node
/**
 * uns-bridge command line: start the server, check a topics.yaml, hash a password.
 */
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { loadConfig, unknownEnvNames } from './core/index.js';
import { UnsError } from './core/index.js';
import { createLogger } from './core/index.js';
import { loadTopics } from './core/index.js';
import { loadPayloadSchemas, assertSchemasExist } from './core/index.js';
import { schemasDir, packageVersion } from './core/index.js';
import { hashPassword } from './core/index.js';
import { startServer } from './main.js';
import { PgStore, startPostgres, replayStoreRejections } from '../bridge/index.js';
import type { Config } from './core/index.js';

/** Opens the configured store (the embedded one: adopting the running server's, or starting it for the call). */
async function withStore<T>(config: Config, fn: (store: PgStore) => Promise<T>): Promise<T> {
  const log = createLogger(config.log.level === 'info' ? 'warn' : config.log.level);
  const pgProcess = config.database.url === null
    ? await startPostgres({ dataDir: join(config.dataDir, 'pg'), log: log.child({ component: 'embedded-postgres' }) }) : null;
  const store = new PgStore({
    url: config.database.url ?? (pgProcess as { url: string }).url, poolSize: 2, statementTimeoutMs: config.database.statementTimeoutMs,
    timescale: config.database.timescale, timescalePolicy: { compressAfterMs: 7 * 86_400_000, dropAfterMs: null }, log,
  });
  try {
    await store.migrate();
    return await fn(store);
  } finally {
    await store.close().catch(() => undefined);
    if (pgProcess && !pgProcess.adopted) await pgProcess.stop();
  }
}

const HELP = `uns-bridge: Unified Namespace server (MQTT broker, validated ingest, PostgreSQL/TimescaleDB store)

Usage:
  uns-bridge start                   run the server (configuration from UNS_* variables, see README)
  uns-bridge check [topics.yaml]     validate a namespace file and its payload schemas, then exit
  uns-bridge hash-password [pw]      print a scrypt hash for topics.yaml users (reads stdin if no argument)
  uns-bridge user add NAME --role ROLE [--role ROLE ...]
                                     create or update a user in the database (password from stdin); a
                                     running server picks it up within seconds, no restart
  uns-bridge rejections replay [--topic PREFIX] [--dry-run]
                                     write again the rows the database refused (UNS_ERR_STORE_REJECTED),
                                     once their cause is fixed; each row is applied once
  uns-bridge --help | --version

Main variables: UNS_MQTT_PORT (1883), UNS_HTTP_PORT (8080), UNS_WS_PATH (/mqtt), UNS_DATA_DIR (./data),
UNS_TOPICS (./topics.yaml), UNS_DATABASE_URL or DATABASE_URL (unset: embedded PostgreSQL under the data dir),
UNS_ADMIN_USER / UNS_ADMIN_PASSWORD, UNS_JWT_SECRET, UNS_CONFIG (JSON or YAML file), UNS_LOG_LEVEL.
`;

function out(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

function failWith(e: unknown): never {
  const msg = e instanceof UnsError ? `${e.code}: ${e.message}` : `error: ${(e as Error).message ?? String(e)}`;
  process.stderr.write(`${msg}\n`);
  process.exit(e instanceof UnsError ? 2 : 1);
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '');
}

async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      out(HELP);
      return;
    case '--version':
    case '-v': {
      out(packageVersion());
      return;
    }
    case 'check': {
      const file = rest[0] ?? loadConfig().topicsFile;
      const ns = loadTopics(file);
      const schemas = loadPayloadSchemas(join(schemasDir(), 'payloads'));
      assertSchemasExist(ns, schemas);
      out(`${file}: ok (${ns.levels.length} levels, ${ns.routes.length} routes, ${ns.roles.size} roles, ${ns.users.size} users)`);
      return;
    }
    case 'hash-password': {
      const pw = rest[0] ?? (await readStdin());
      if (pw.length < 8) throw new UnsError('UNS_ERR_CONFIG_INVALID', 'password must have at least 8 characters');
      out(await hashPassword(pw));
      return;
    }
    case 'user': {
      const usage = 'usage: uns-bridge user add NAME --role ROLE [--role ROLE ...] (password on stdin)';
      const name = rest[1];
      if (rest[0] !== 'add' || name === undefined || name.startsWith('-')) throw new UnsError('UNS_ERR_CONFIG_INVALID', usage);
      const roles = rest.flatMap((a, i) => (a === '--role' && rest[i + 1] !== undefined ? [rest[i + 1] as string] : []));
      if (roles.length === 0) throw new UnsError('UNS_ERR_CONFIG_INVALID', usage);
      const config = loadConfig();
      const ns = loadTopics(config.topicsFile);
      const unknown = roles.filter((r) => !ns.roles.has(r));
      if (unknown.length > 0) throw new UnsError('UNS_ERR_CONFIG_INVALID', `unknown role ${unknown.join(', ')}; ${ns.file} defines ${[...ns.roles.keys()].join(', ')}`);
      if (ns.users.has(name)) throw new UnsError('UNS_ERR_CONFIG_INVALID', `${name} is defined in ${config.topicsFile}; change it there`);
      const pw = await readStdin();
      if (pw.length < 8) throw new UnsError('UNS_ERR_CONFIG_INVALID', 'password must have at least 8 characters');
      const hash = await hashPassword(pw);
      await withStore(config, (store) => store.upsertUser(name, hash, roles));
      out(`user ${name} saved with role${roles.length > 1 ? 's' : ''} ${roles.join(', ')}`);
      return;
    }
    case 'rejections': {
      if (rest[0] !== 'replay') throw new UnsError('UNS_ERR_CONFIG_INVALID', "usage: uns-bridge rejections replay [--topic PREFIX] [--dry-run]");
      const args = rest.slice(1);
      const topicAt = args.indexOf('--topic');
      const topicPrefix = topicAt >= 0 ? args[topicAt + 1] : undefined;
      if (topicAt >= 0 && topicPrefix === undefined) throw new UnsError('UNS_ERR_CONFIG_INVALID', '--topic needs a topic prefix');
      const config = loadConfig();
      const report = await withStore(config, (store) => replayStoreRejections(store, { topicPrefix, dryRun: args.includes('--dry-run') }));
      out(args.includes('--dry-run')
        ? `${report.replayed} refused rows would be replayed`
        : `replayed ${report.replayed}; still refused ${report.stillRefused}${report.reasons.length ? ` (${report.reasons.join('; ')})` : ''}`);
      if (report.stillRefused > 0) process.exitCode = 3;
      return;
    }
    case 'start': {
      const config = loadConfig();
      // Read by V8 at every full collection, so it applies although the heap already exists.
      if (config.memory.heapGrowingPercent > 0) setFlagsFromString(`--heap-growing-percent=${config.memory.heapGrowingPercent}`);
      const log = createLogger(config.log.level);
      for (const w of unknownEnvNames()) log.warn(w);
      const server = await startServer(config, log);
      let stopping = false;
      const stop = (why: string, code = 0): void => {
        if (stopping) return;
        stopping = true;
        log.info({ signal: why }, 'shutting down');
        server.stop().then(() => process.exit(code), (e: Error) => { log.error({ err: e.message }, 'shutdown failed'); process.exit(1); });
      };
      process.on('SIGINT', () => stop('SIGINT'));
      process.on('SIGTERM', () => stop('SIGTERM'));
      // SIGHUP reloads, as Mosquitto users expect (`systemctl reload`): the TLS certificate and key and the
      // database users. topics.yaml is read at start-up only; a changed namespace needs a restart.
      process.on('SIGHUP', () => {
        if (stopping) return;
        server.reload('SIGHUP').catch((e: Error) => log.error({ err: e.message }, 'reload failed'));
      });
      // A bug that escapes every handler: said, then the same orderly stop (the store closes, the embedded
      // PostgreSQL stops), exit code 1.
      const fatal = (e: unknown): void => {
        log.fatal({ err: e instanceof Error ? e.stack ?? e.message : String(e) }, 'unexpected error: stopping');
        stop('fatal', 1);
      };
      process.on('uncaughtException', fatal);
      process.on('unhandledRejection', fatal);
      return;
    }
    default:
      process.stderr.write(`unknown command '${cmd}'\n\n${HELP}`);
      process.exit(64);
  }
}

main(process.argv.slice(2)).catch(failWith);
