/**
 * A row the database refuses is kept with its write item; once the cause is fixed, `uns-bridge rejections
 * replay` writes it again, each row once.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { packageRoot } from '../../src/core/paths.js';
import { TestPostgres, query } from '../helpers/postgres.js';
import { connect, publish, testConfig, startTestServer, cleanup, waitFor } from '../helpers/server.js';
import type { RunningServer } from '../../src/main.js';

const CLI = join(packageRoot(), 'dist', 'src', 'cli.js');
const TOPIC = 'acme/plant2/warehouse/line7/replay1/seq';

function replay(url: string, args: string[] = []): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, 'rejections', 'replay', ...args], {
    encoding: 'utf8', timeout: 30_000, env: { PATH: process.env['PATH'] ?? '', UNS_DATABASE_URL: url, UNS_LOG_LEVEL: 'warn' },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('rejections replay - rows the database refused', function () {
  this.timeout(60_000);
  const pgs = new TestPostgres({ timescale: false });
  let server: RunningServer;
  let config: ReturnType<typeof testConfig>;
  let url: string;

  before(async () => {
    await pgs.start();
    url = await pgs.createDatabase('replay');
    config = testConfig(url);
    server = await startTestServer(config);
  });
  after(async () => {
    await server?.stop();
    await pgs.destroy();
    cleanup(config);
  });

  it('keeps a refused row with its item, stores its neighbours, and replays it once after the cause is fixed', async () => {
    // An operator's constraint the pipeline knows nothing of: values above 1000 are refused (23514, a row error).
    await query(url, 'ALTER TABLE samples ADD CONSTRAINT plausible CHECK (v_num IS NULL OR v_num < 1000)');
    const client = await connect(server.mqttPort, { clientId: 'replay-pub' });
    const rejected: string[] = [];
    const sub = await connect(server.mqttPort, { clientId: 'replay-sub' });
    sub.on('message', (_t, p) => rejected.push(p.toString()));
    await new Promise<void>((res, rej) => sub.subscribe('$uns/rejected/#', { qos: 1 }, (e) => (e ? rej(e) : res())));
    try {
      await Promise.all([1, 2, 5000, 3].map((v) => publish(client, TOPIC, JSON.stringify({ value: v }))));
    } finally {
      client.end(true);
    }
    const stored = async (): Promise<number[]> =>
      (await query<{ v: number }>(url, 'SELECT s.v_num AS v FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name = $1 ORDER BY 1', [TOPIC])).map((r) => r.v);
    expect(await stored()).to.deep.equal([1, 2, 3]);
    const rows = await query<{ reason: string; item: Buffer | null; replayed_at: Date | null }>(url,
      "SELECT reason, item, replayed_at FROM rejections WHERE code = 'UNS_ERR_STORE_REJECTED' AND topic = $1", [TOPIC]);
    expect(rows).to.have.length(1);
    expect(rows[0]?.reason).to.match(/^23514 /);
    expect(JSON.parse(rows[0]?.item?.toString('utf8') ?? 'null')).to.have.nested.property('samples[0].num', 5000);
    expect(server.writer.stats.storeRejected).to.equal(1);
    // The publisher's client got its PUBACK; subscribers to the dead-letter path see why.
    await waitFor(() => rejected.length > 0, 10_000, 'the dead-letter message');
    sub.end(true);
    expect(JSON.parse(rejected[0] as string)).to.include({ code: 'UNS_ERR_STORE_REJECTED', topic: TOPIC });

    // Still refused: the row stays, exit code 3.
    const early = replay(url);
    expect(early.status, early.stderr).to.equal(3);
    expect(early.stdout).to.contain('still refused 1');
    expect(await stored()).to.deep.equal([1, 2, 3]);

    await query(url, 'ALTER TABLE samples DROP CONSTRAINT plausible');
    expect(replay(url, ['--dry-run']).stdout).to.contain('1 refused rows would be replayed');
    const done = replay(url);
    expect(done.status, done.stderr).to.equal(0);
    expect(done.stdout).to.contain('replayed 1; still refused 0');
    expect(await stored()).to.deep.equal([1, 2, 3, 5000]);
    // Applied once: a second run finds nothing left.
    const again = replay(url);
    expect(again.stdout).to.contain('replayed 0; still refused 0');
    expect(await stored()).to.deep.equal([1, 2, 3, 5000]);
  });
});
