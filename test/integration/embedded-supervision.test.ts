/**
 * The embedded PostgreSQL is supervised: kill -9 its postmaster and it is restarted with back-off while the
 * server stays live, reports degraded, acknowledges into the spool, and then stores everything exactly once.
 */
import { expect } from 'chai';
import { mkdtempSync, chmodSync, rmSync, readdirSync, readlinkSync, realpathSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import type { MqttClient } from 'mqtt';
import { query } from '../helpers/postgres.js';
import { connect, publish, testConfig, startTestServer, waitFor, cleanup } from '../helpers/server.js';
import { SupervisedPostgres, startPostgres, type EmbeddedDbState } from '../../bridge/index.js';
import { silentLogger } from '../../src/core/log.js';
import type { RunningServer } from '../../src/main.js';

interface EmbeddedCheck { state: EmbeddedDbState; pid: number | null; restarts: number; lastError: string | null }
interface Ready { status: string; checks: { embedded: EmbeddedCheck | null } }

/** PIDs of processes working in this folder: a postmaster and all its children chdir to the data dir. */
function processesIn(dir: string): number[] {
  const real = realpathSync(dir);
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try { if (readlinkSync(`/proc/${entry}/cwd`) === real) pids.push(Number(entry)); } catch { /* gone or not ours */ }
  }
  return pids;
}

/** PIDs of postmasters of this data dir: their command line (unlike their children's) names it. */
function postmastersIn(dataDir: string): number[] {
  return processesIn(dataDir).filter((pid) => {
    try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes(dataDir); } catch { return false; }
  });
}

/** One publisher keeping `window` QoS 1 messages in flight; records what was acknowledged. */
class Publisher {
  readonly acked = new Set<number>();
  private next = 0;
  private running = true;
  private pending = 0;

  constructor(private readonly client: MqttClient, readonly topic: string, window: number) {
    for (let i = 0; i < window; i++) this.send();
  }

  private send(): void {
    if (!this.running || !this.client.connected) return;
    const n = this.next++;
    this.pending++;
    this.client.publish(this.topic, JSON.stringify({ value: n }), { qos: 1 }, (err) => {
      this.pending--;
      if (!err) this.acked.add(n);
      // Paced: enough to span the outage without flooding a 2-core machine.
      setTimeout(() => this.send(), 5);
    });
  }

  /** Stops sending and waits for the acknowledgements of what is in flight. */
  async stop(): Promise<void> {
    this.running = false;
    await waitFor(() => this.pending === 0, 15_000, 'in-flight publishes to be acknowledged');
  }
}

describe('embedded store - supervision', function () {
  // Generous so a failing waitFor reports its own reason; a passing run takes a few seconds.
  this.timeout(120_000);
  let config: ReturnType<typeof testConfig>;
  let server: RunningServer | undefined;
  let client: MqttClient | undefined;

  before(async () => {
    config = testConfig(null, { store: { probeIntervalMs: 200 } });
    server = await startTestServer(config);
  });
  after(async () => {
    client?.end(true);
    await server?.stop();
    cleanup(config);
  });

  const ready = async (): Promise<{ status: number; body: Ready }> => {
    const r = await fetch(`http://127.0.0.1:${server!.httpPort}/ready`);
    return { status: r.status, body: (await r.json()) as Ready };
  };

  it('restarts a kill -9ed postmaster, stays live and degraded meanwhile, and stores every acknowledged message exactly once', async () => {
    const s = server!;
    client = await connect(s.mqttPort, { clientId: 'supervision-pub' });
    const before = 'acme/plant2/warehouse/line7/sup-before/seq';
    for (let n = 0; n < 50; n++) await publish(client, before, JSON.stringify({ value: n }), { qos: 1 });

    const up = await ready();
    expect(up.status).to.equal(200);
    const first = up.body.checks.embedded;
    expect(first).to.include({ state: 'running', restarts: 0 });
    expect(first?.pid).to.be.a('number');

    const during = new Publisher(client, 'acme/plant2/warehouse/line7/sup-during/seq', 4);
    await waitFor(() => during.acked.size >= 20, 10_000, 'publishing before the kill');
    const ackedAtKill = during.acked.size;
    process.kill(first!.pid!, 'SIGKILL');

    const outage = await waitFor(async () => {
      const r = await ready();
      return r.status === 503 && r.body.checks.embedded?.state === 'restarting' ? r.body : undefined;
    }, 10_000, '/ready to report the embedded database restarting');
    expect(outage.status).to.equal('degraded');
    expect(outage.checks.embedded?.lastError).to.match(/exited unexpectedly/);
    // Liveness never depends on the database.
    expect((await fetch(`http://127.0.0.1:${s.httpPort}/health`)).status).to.equal(200);

    const back = await waitFor(async () => {
      const r = await ready();
      return r.status === 200 ? r.body : undefined;
    }, 30_000, '/ready to recover');
    expect(back.checks.embedded?.state).to.equal('running');
    expect(back.checks.embedded?.restarts).to.be.at.least(1);
    expect(back.checks.embedded?.pid).to.be.a('number').and.not.equal(first!.pid);
    expect((await fetch(`http://127.0.0.1:${s.httpPort}/health`)).status).to.equal(200);

    // Still acknowledging: messages were taken during the outage and after it.
    const ackedAtRecovery = during.acked.size;
    await waitFor(() => during.acked.size >= ackedAtRecovery + 20, 10_000, 'publishing after recovery');
    await during.stop();
    expect(ackedAtRecovery).to.be.greaterThan(ackedAtKill);
    await waitFor(() => s.writer.stats.spoolSegments === 0 && s.writer.queued === 0 && s.writer.stats.inFlight === 0,
      20_000, 'the spool to drain');

    const stored = async (topic: string): Promise<number[]> => (await query<{ v: string }>(s.databaseUrl,
      'SELECT s.v_num AS v FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name = $1', [topic])).map((r) => Number(r.v));
    const expectOnce = (got: number[], acked: Iterable<number>): void => {
      const seen = new Set(got);
      expect(got.length - seen.size, 'messages stored twice').to.equal(0);
      const missing = [...acked].filter((n) => !seen.has(n));
      expect(missing, 'acknowledged messages missing from the store').to.deep.equal([]);
    };
    expectOnce(await stored(before), Array.from({ length: 50 }, (_, n) => n));
    expectOnce(await stored(during.topic), during.acked);
  });

  it('leaves no PostgreSQL process behind once the server stops', async () => {
    const pgDir = join(config.dataDir, 'pg');
    expect(processesIn(pgDir)).to.not.be.empty;
    client?.end(true);
    client = undefined;
    await server!.stop();
    server = undefined;
    await waitFor(() => processesIn(pgDir).length === 0, 10_000, 'PostgreSQL processes to exit');
  });
});

describe('embedded store - supervisor', function () {
  this.timeout(60_000);
  let dir: string;
  let sup: SupervisedPostgres | undefined;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'uns-sup-'));
    chmodSync(dir, 0o755); // the server runs as another user when tests run as root
  });
  afterEach(async () => {
    await sup?.stop('immediate');
    sup = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  it('stop() during a pending restart cancels it and leaves no postgres process running', async () => {
    const dataDir = join(dir, 'pg');
    const backoffMs = [1_500];
    sup = await SupervisedPostgres.start({ dataDir, log: silentLogger(), backoffMs });
    const states: EmbeddedDbState[] = [];
    sup.on('state', (st) => states.push(st));
    const pid = sup.pid;
    expect(pid).to.be.a('number');
    process.kill(pid!, 'SIGKILL');
    await waitFor(() => sup!.state === 'restarting', 10_000, 'the supervisor to notice the exit');
    expect(sup.pid).to.equal(null);

    await sup.stop();
    expect(sup.state).to.equal('stopped');
    expect(states).to.deep.equal(['restarting', 'stopped']);
    // The killed postmaster's backends exit by themselves once they notice it is gone.
    await waitFor(() => processesIn(dataDir).length === 0, 10_000, 'the killed server\'s processes to exit');
    // Negative check over the back-off window: a restart that was not cancelled would start a server here.
    await new Promise((r) => setTimeout(r, backoffMs[0]! + 500));
    expect(processesIn(dataDir)).to.deep.equal([]);
    expect(sup.restarts).to.equal(0);
  });

  it('notices the death of an adopted server (no child process to watch) and restarts it', async () => {
    const dataDir = join(dir, 'pg');
    const earlier = await startPostgres({ dataDir, log: silentLogger() });
    try {
      sup = await SupervisedPostgres.start({ dataDir, log: silentLogger(), backoffMs: [250] });
      expect(sup.adopted).to.equal(true);
      expect(sup.pid).to.equal(earlier.pid);
      process.kill(earlier.pid, 'SIGKILL');
      await waitFor(() => sup!.state === 'running' && sup!.restarts === 1, 30_000, 'the adopted server to be restarted');
      expect(sup.adopted).to.equal(false);
      expect(sup.url).to.equal(earlier.url);
      expect(postmastersIn(dataDir)).to.deep.equal([sup.pid]);
    } finally {
      await earlier.stop();
    }
  });

  it('stop() while a restart attempt is starting the server stops that server too', async () => {
    const dataDir = join(dir, 'pg');
    sup = await SupervisedPostgres.start({ dataDir, log: silentLogger(), backoffMs: [0] });
    const killed = sup.pid!;
    process.kill(killed, 'SIGKILL');
    // Catch the new postmaster while it is still starting (polled tightly: start-up takes a few hundred ms).
    const deadline = Date.now() + 20_000;
    let caughtStarting = false;
    while (Date.now() < deadline) {
      if (sup.restarts > 0) break;
      if (sup.state === 'restarting' && postmastersIn(dataDir).some((p) => p !== killed)) { caughtStarting = true; break; }
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(caughtStarting, 'a restart attempt in flight').to.equal(true);
    await sup.stop();
    expect(sup.state).to.equal('stopped');
    expect(sup.restarts).to.equal(0);
    await waitFor(() => processesIn(dataDir).length === 0, 15_000, 'every PostgreSQL process to exit');
  });
});
