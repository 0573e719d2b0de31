/**
 * The embedded PostgreSQL when the server is root (systemd) in a folder its PostgreSQL user (nobody) cannot
 * traverse: the cluster is kept under /var/lib/uns-bridge/clusters and found again through pg-location, the
 * binaries are run from a copy in /var/cache/uns-bridge, and what cannot work is refused by name.
 */
import { expect } from 'chai';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, rmdirSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { tmpdir } from 'node:os';
import type { MqttClient } from 'mqtt';
import { query } from '../helpers/postgres.js';
import { connect, publish, testConfig, startTestServer, waitFor } from '../helpers/server.js';
import { startPostgres, embeddedBinDir, type PostgresProcess } from '../../bridge/index.js';
import { accessProblem, RELOCATED_CLUSTERS_ROOT, BINARY_CACHE_ROOTS } from '../../bridge/sinks/store/embedded-postgres.js';
import { silentLogger } from '../../src/core/log.js';
import type { RunningServer } from '../../src/main.js';

const isRoot = process.getuid?.() === 0;

interface Embedded { state: string; pid: number | null; restarts: number }
const VAR_LIB = dirname(RELOCATED_CLUSTERS_ROOT);

function nobody(): { name: string; uid: number; gid: number } {
  const parts = readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('nobody:'))?.split(':');
  if (!parts) throw new Error('no user nobody');
  return { name: 'nobody', uid: Number(parts[2]), gid: Number(parts[3]) };
}

async function storedValues(url: string, topic: string): Promise<number[]> {
  const rows = await query<{ v: string }>(url,
    'SELECT s.v_num AS v FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name = $1 ORDER BY s.v_num', [topic]);
  return rows.map((r) => Number(r.v));
}

/** Removes a folder this run created under /var/lib or /var/cache, by exact path, and its parents if this run created them and they are empty. */
function removeCreated(paths: Iterable<string>, parents: readonly string[]): void {
  for (const p of paths) rmSync(p, { recursive: true, force: true });
  for (const p of parents) { try { rmdirSync(p); } catch { /* not empty: not only ours */ } }
}

describe('embedded store - access check for the PostgreSQL user', () => {
  const someone = { name: 'someone', uid: 54_321, gid: 54_321 };
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'uns-reach-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('names the folder that stops the user, with its mode and owner', () => {
    mkdirSync(join(dir, 'inner'), { mode: 0o755 });
    const problem = accessProblem(join(dir, 'inner', 'pg'), someone, 1);
    expect(problem?.path).to.equal(dir);
    expect(problem?.detail).to.match(/mode 0700/).and.match(/someone \(uid 54321\) cannot pass through it/);
  });

  it('lets through a folder open to others, and refuses an executable it cannot execute', () => {
    chmodSync(dir, 0o755);
    expect(accessProblem(join(dir, 'inner'), someone, 1)).to.equal(null);
    writeFileSync(join(dir, 'inner', 'postgres'), '', { mode: 0o700 });
    chmodSync(join(dir, 'inner', 'postgres'), 0o700);
    expect(accessProblem(join(dir, 'inner', 'postgres'), someone, 5)?.detail).to.match(/cannot read and execute it/);
    chmodSync(dir, 0o700);
  });
});

describe('embedded store - run as root in a folder nobody cannot traverse (needs root: only a root server runs PostgreSQL as nobody)', function () {
  this.timeout(120_000);
  const clusters = new Set<string>();
  const caches = new Set<string>();
  const parents: string[] = [];
  const privateDirs: string[] = [];
  let server: RunningServer | undefined;
  let client: MqttClient | undefined;
  const procs: PostgresProcess[] = [];

  const privateDir = (): string => {
    const d = mkdtempSync(join(tmpdir(), 'uns-root-'));
    chmodSync(d, 0o700);
    privateDirs.push(d);
    return d;
  };

  before(function () {
    if (!isRoot) this.skip();
    // Only what this run creates is removed afterwards.
    if (!existsSync(VAR_LIB)) parents.push(RELOCATED_CLUSTERS_ROOT, VAR_LIB);
    for (const root of BINARY_CACHE_ROOTS) if (!existsSync(root)) parents.push(root);
  });
  after(async () => {
    client?.end(true);
    await server?.stop().catch(() => undefined);
    for (const p of procs) await p.stop().catch(() => undefined);
    for (const d of privateDirs) rmSync(d, { recursive: true, force: true });
    removeCreated([...clusters, ...caches], parents);
  });

  let dataDir: string;
  let cluster: string;
  const topic = 'acme/plant2/warehouse/line7/rootdir/seq';

  it('keeps the cluster where nobody can reach it, records it in pg-location, and stores what is published', async () => {
    const priv = privateDir();
    dataDir = join(priv, 'data');
    mkdirSync(dataDir);
    const config = testConfig(null, {}, dataDir);
    server = await startTestServer(config);
    cluster = readFileSync(join(dataDir, 'pg-location'), 'utf8').trim();
    clusters.add(dirname(cluster));
    expect(cluster).to.match(new RegExp(`^${RELOCATED_CLUSTERS_ROOT}/[0-9a-f]{16}/pg$`));
    expect(existsSync(join(cluster, 'PG_VERSION')), 'cluster initialised there').to.equal(true);
    expect(statSync(cluster).uid).to.equal(nobody().uid);
    expect(statSync(cluster).mode & 0o777).to.equal(0o700);
    expect(existsSync(join(dataDir, 'pg', 'PG_VERSION')), 'no cluster in the data dir').to.equal(false);
    expect(statSync(priv).mode & 0o777, 'the private folder keeps its mode').to.equal(0o700);

    client = await connect(server.mqttPort, { clientId: 'root-dir-pub' });
    for (let n = 0; n < 5; n++) await publish(client, topic, JSON.stringify({ value: n }), { qos: 1 });
    const url = server.databaseUrl;
    expect(await waitFor(async () => { const v = await storedValues(url, topic); return v.length === 5 ? v : undefined; },
      10_000, 'the messages to be stored')).to.deep.equal([0, 1, 2, 3, 4]);
    client.end(true);
    client = undefined;
    await server.stop();
    server = undefined;
  });

  it('finds the same cluster again on the next start, with its data, and restarts a killed postmaster there', async function () {
    if (!cluster) this.skip();
    const config = testConfig(null, {}, dataDir);
    server = await startTestServer(config);
    expect(readFileSync(join(dataDir, 'pg-location'), 'utf8').trim()).to.equal(cluster);
    expect(server.databaseUrl).to.include(encodeURIComponent(join(cluster, 'run')));
    client = await connect(server.mqttPort, { clientId: 'root-dir-pub2' });
    await publish(client, topic, JSON.stringify({ value: 5 }), { qos: 1 });
    const url = server.databaseUrl;
    expect(await waitFor(async () => { const v = await storedValues(url, topic); return v.length === 6 ? v : undefined; },
      10_000, 'the earlier and the new message')).to.deep.equal([0, 1, 2, 3, 4, 5]);

    // The supervisor restarts a killed postmaster in the same relocated cluster, on the same URL.
    const http = `http://127.0.0.1:${server.httpPort}/ready`;
    const embedded = async (): Promise<{ status: number; e: Embedded | null }> => {
      const r = await fetch(http);
      return { status: r.status, e: ((await r.json()) as { checks: { embedded: Embedded | null } }).checks.embedded };
    };
    const killed = (await embedded()).e?.pid;
    expect(killed).to.be.a('number');
    process.kill(killed!, 'SIGKILL');
    const back = await waitFor(async () => { const r = await embedded(); return r.status === 200 && r.e?.restarts === 1 ? r.e : undefined; },
      30_000, 'the killed postmaster to be restarted');
    expect(back.pid).to.not.equal(killed);
    expect(await storedValues(url, topic)).to.have.length(6);
    client.end(true);
    client = undefined;
    await server.stop();
    server = undefined;
  });

  it('lets the CLI\'s startPostgres(<data dir>/pg) find that cluster, and adopt it while it runs', async function () {
    if (!cluster) this.skip();
    const first = await startPostgres({ dataDir: join(dataDir, 'pg'), log: silentLogger() });
    procs.push(first);
    expect(first.dataDir).to.equal(cluster);
    expect(first.adopted).to.equal(false);
    expect(await storedValues(first.url, topic)).to.have.length(6);
    const second = await startPostgres({ dataDir: join(dataDir, 'pg'), log: silentLogger() });
    expect(second.adopted).to.equal(true);
    expect(second.pid).to.equal(first.pid);
    await first.stop();
  });

  it('refuses a cluster already in a folder nobody cannot reach, saying where, who and how to fix it', async () => {
    const priv = privateDir();
    const pgDir = join(priv, 'data', 'pg');
    mkdirSync(pgDir, { recursive: true });
    chmodSync(join(priv, 'data'), 0o755);
    writeFileSync(join(pgDir, 'PG_VERSION'), '17\n');
    const err = await startPostgres({ dataDir: pgDir, log: silentLogger() }).then(() => null, (e: Error) => e);
    expect(err?.message).to.include(`cannot reach ${pgDir}`).and.include(`${priv} (mode 0700`)
      .and.include("'nobody'").and.include('UNS_DATA_DIR').and.include('UNS_DATABASE_URL');
    expect(existsSync(join(priv, 'data', 'pg-location'))).to.equal(false);
  });

  it('blames the binaries, not the data dir, when nobody cannot run them and they cannot be copied', async () => {
    const priv = privateDir();
    const bin = join(priv, 'pg', 'bin');
    mkdirSync(bin, { recursive: true });
    for (const exe of ['postgres', 'initdb']) writeFileSync(join(bin, exe), '#!/bin/sh\n', { mode: 0o755 });
    const open = mkdtempSync(join(tmpdir(), 'uns-root-open-'));
    privateDirs.push(open);
    chmodSync(open, 0o755);
    const err = await startPostgres({ binDir: bin, dataDir: join(open, 'pg'), log: silentLogger() }).then(() => null, (e: Error) => e);
    expect(err?.message).to.include(`user 'nobody' cannot use the PostgreSQL binaries in ${join(priv, 'pg')}: ${priv} (mode 0700`)
      .and.include('UNS_DATABASE_URL');
    expect(err?.message).to.not.match(/initdb/);
  });

  it('runs binaries nobody cannot reach from a root-owned copy in the binary cache, made once and reused', async () => {
    const priv = privateDir();
    const native = dirname(embeddedBinDir());
    cpSync(native, join(priv, 'native'), { recursive: true, verbatimSymlinks: true, filter: (src) => !src.endsWith('.a') });
    const binDir = join(priv, 'native', 'bin');
    const open = mkdtempSync(join(tmpdir(), 'uns-root-open-'));
    privateDirs.push(open);
    chmodSync(open, 0o755);
    const dataDir2 = join(open, 'pg');

    const first = await startPostgres({ binDir, dataDir: dataDir2, log: silentLogger() });
    procs.push(first);
    const used = first.binDir ?? '';
    const cache = dirname(used);
    caches.add(cache);
    expect(BINARY_CACHE_ROOTS.some((r) => dirname(cache) === r), `${used} in a cache root`).to.equal(true);
    expect(cache).to.match(/\/pg-custom-[0-9a-f]{12}$/);
    expect(statSync(cache).uid).to.equal(0);
    expect(statSync(cache).mode & 0o777).to.equal(0o755);
    expect(first.dataDir, 'the data dir stays where it was').to.equal(dataDir2);
    expect((await query<{ n: number }>(first.url, 'SELECT 1 AS n'))[0]?.n).to.equal(1);
    const marker = statSync(join(cache, '.uns-bridge-complete')).mtimeMs;
    await first.stop();

    const second = await startPostgres({ binDir, dataDir: dataDir2, log: silentLogger() });
    procs.push(second);
    expect(second.binDir).to.equal(used);
    expect(statSync(join(cache, '.uns-bridge-complete')).mtimeMs, 'copy reused, not made again').to.equal(marker);
    expect(statSync(priv).mode & 0o777, 'the private folder keeps its mode').to.equal(0o700);
    await second.stop();
  });
});
