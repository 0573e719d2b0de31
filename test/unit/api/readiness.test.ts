import { expect } from 'chai';
import type { WriterStats } from '../../../bridge/index.js';
import { readinessReport, type ReadinessParts } from '../../../src/api/readiness.js';

const healthy: WriterStats = {
  state: 'healthy', outage: null, holding: null, queued: 0, inFlight: 0, committedItems: 0, committedRows: 0, spooledItems: 0,
  spoolSegments: 0, spoolBytes: 0, replayedSegments: 0, replay: null, storeRejected: 0, corruptSegments: 0, outages: 0, holds: 0,
  lastFlushMs: 0, lastError: null,
};
const parts = (over: Partial<ReadinessParts> = {}, writer: Partial<WriterStats> = {}): ReadinessParts => ({
  writer: { ...healthy, ...writer }, storeOpen: true, timescale: false, broker: { clients: 0, held: 0 }, embedded: null, stopping: false, users: { count: 1, warning: null }, ...over,
});

describe('readiness report', () => {
  it('is ready when the database takes writes and nothing is held or replayed', () => {
    expect(readinessReport(parts())).to.include({ ready: true, status: 'ready' });
  });

  for (const [what, p] of [
    ['the database is away (with the reason)', parts({}, { state: 'degraded', outage: { class: 'permanent', reason: '42501 permission denied', since: 0 } })],
    ['the spool is holding', parts({}, { state: 'degraded', holding: { failure: 'disk', reason: 'ENOSPC', since: 0 } })],
    ['a replay is under way', parts({}, { replay: { total: 10, done: 3, startedAt: 0 } })],
    ['the store has not opened yet', parts({ storeOpen: false })],
    ['the embedded PostgreSQL is restarting', parts({ embedded: { state: 'restarting', pid: null, restarts: 1, lastError: 'SIGKILL' } })],
  ] as const) {
    it(`is degraded while ${what}`, () => {
      const r = readinessReport(p);
      expect(r).to.include({ ready: false, status: 'degraded' });
    });
  }

  it('names the outage class and reason, the hold and the replay progress', () => {
    const r = readinessReport(parts({}, {
      state: 'degraded', outage: { class: 'permanent', reason: '42501 permission denied', since: 0 },
      holding: { failure: 'limit', reason: 'spool full', since: 0 }, replay: { total: 10, done: 3, startedAt: 0 },
    }));
    const c = r.checks as { database: { outage: { class: string; reason: string } }; spool: { holding: { failure: string }; replay: { done: number; total: number } } };
    expect(c.database.outage).to.include({ class: 'permanent', reason: '42501 permission denied' });
    expect(c.spool.holding.failure).to.equal('limit');
    expect(c.spool.replay).to.include({ done: 3, total: 10 });
  });

  const link = { broker: 'mqtt://127.0.0.1:1883', clientId: 'b-1', group: 'uns-bridge', connected: true, subscribed: true, lastError: null, held: 0, connectionsLost: 0 };
  it('is ready in external-broker mode only once the broker granted the subscription', () => {
    expect(readinessReport(parts({ link })).ready).to.equal(true);
    const waiting = readinessReport(parts({ link: { ...link, subscribed: false } }));
    expect(waiting).to.include({ ready: false, status: 'degraded' });
    expect((waiting.checks['link'] as { lastError: string }).lastError).to.equal('waiting for the broker to grant the subscriptions');
    const refused = readinessReport(parts({ link: { ...link, subscribed: false, lastError: 'the broker refused the subscription $share/uns-bridge/acme/#' } }));
    expect((refused.checks['link'] as { lastError: string }).lastError).to.match(/refused the subscription/);
    const down = readinessReport(parts({ link: { ...link, connected: false, subscribed: false, lastError: 'ECONNREFUSED' } }));
    expect(down.ready).to.equal(false);
    expect((down.checks['link'] as { lastError: string }).lastError).to.equal('ECONNREFUSED');
  });

  it('says stopping while the server shuts down', () => {
    expect(readinessReport(parts({ stopping: true }))).to.include({ ready: false, status: 'stopping' });
  });

  it('says when no one can authenticate, without calling the server unready', () => {
    const r = readinessReport(parts({ users: { count: 0, warning: 'no users: nobody can log in' } }));
    expect(r.ready).to.equal(true);
    expect(r.checks['users']).to.deep.equal({ count: 0, warning: 'no users: nobody can log in' });
  });
});
