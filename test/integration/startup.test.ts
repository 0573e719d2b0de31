/** Start-up fails early and clearly, and leaves nothing running behind it. */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { testConfig, startTestServer, cleanup } from '../helpers/server.js';
import { UnsError } from '../../src/core/errors.js';

describe('startup - failure', function () {
  this.timeout(60_000);

  it('stops the embedded PostgreSQL it started when a later step fails', async () => {
    // The embedded PostgreSQL has no TimescaleDB, so requiring it fails after the database started.
    const config = testConfig(null, { database: { url: null, timescale: 'on' } });
    let err: unknown;
    try {
      await startTestServer(config);
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(UnsError);
    expect((err as UnsError).code).to.equal('UNS_ERR_STORE_UNAVAILABLE');
    const ps = spawnSync('pgrep', ['-f', join(config.dataDir, 'pg')], { encoding: 'utf8' });
    expect(ps.stdout.trim()).to.equal('');
    cleanup(config);
  });

  it('refuses a topics file that does not exist with UNS_ERR_TOPICS_INVALID before opening anything', async () => {
    const config = testConfig(null, { topicsFile: '/nonexistent/topics.yaml' });
    let err: unknown;
    try {
      await startTestServer(config);
    } catch (e) {
      err = e;
    }
    expect((err as UnsError).code).to.equal('UNS_ERR_TOPICS_INVALID');
    cleanup(config);
  });
});
