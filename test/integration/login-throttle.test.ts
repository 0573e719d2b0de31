/**
 * Password guessing is throttled atomically, on HTTP login and MQTT CONNECT with one budget: per (address,
 * user) and per address. Parallel bursts cannot slip past the count, and unknown user names are answered
 * as known ones are.
 */
import { expect } from 'chai';
import mqtt from 'mqtt';
import { testConfig, startTestServer, connect, cleanup, ADMIN } from '../helpers/server.js';
import { DEFAULT_THROTTLE, PASSWORD_CHECKS } from '../../broker/auth.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';

describe('login throttle - one budget for HTTP login and MQTT CONNECT', function () {
  this.timeout(60_000);
  let config: Config;
  let server: RunningServer;
  const login = async (username: string, password: string): Promise<{ status: number; retryAfter: string | null; body: Record<string, unknown> }> => {
    const r = await fetch(`http://127.0.0.1:${server.httpPort}/api/v1/auth/login`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username, password }),
    });
    return { status: r.status, retryAfter: r.headers.get('retry-after'), body: (await r.json()) as Record<string, unknown> };
  };
  /** The CONNACK return code of a CONNECT with these credentials (0 = accepted). */
  const connackCode = (username: string, password: string): Promise<number> => new Promise((res) => {
    const c = mqtt.connect(`mqtt://127.0.0.1:${server.mqttPort}`, { username, password, reconnectPeriod: 0, connectTimeout: 10_000 });
    c.once('connect', () => { c.end(true); res(0); });
    c.once('error', (e) => { c.end(true); res((e as { code?: number }).code ?? -1); });
  });

  beforeEach(async () => {
    config = testConfig(null);
    server = await startTestServer(config);
  });
  afterEach(async () => {
    await server?.stop();
    cleanup(config);
  });

  it(`counts a burst of 30 parallel wrong passwords exactly: ${DEFAULT_THROTTLE.perUser} x 401, the rest 429 with Retry-After`, async () => {
    const answers = await Promise.all(Array.from({ length: 30 }, () => login(ADMIN.username, 'wrong-password')));
    const byStatus: Record<number, number> = {};
    for (const a of answers) byStatus[a.status] = (byStatus[a.status] ?? 0) + 1;
    expect(byStatus).to.deep.equal({ 401: DEFAULT_THROTTLE.perUser, 429: 30 - DEFAULT_THROTTLE.perUser });
    for (const a of answers.filter((x) => x.status === 429)) {
      expect(Number(a.retryAfter)).to.be.within(1, DEFAULT_THROTTLE.perUserWindowS);
      expect((a.body['error'] as { code: string }).code).to.equal('UNS_ERR_RATE_LIMITED');
    }
    // The same budget holds on MQTT: the right password does not get through from this address now.
    expect(await connackCode(ADMIN.username, ADMIN.password)).to.equal(4);
  });

  it('throttles MQTT CONNECT guesses too, and HTTP login then refuses that user from that address', async () => {
    const codes = await Promise.all(Array.from({ length: DEFAULT_THROTTLE.perUser + 5 }, () => connackCode(ADMIN.username, 'wrong-password')));
    expect(codes.every((c) => c === 4)).to.equal(true);
    const r = await login(ADMIN.username, ADMIN.password);
    expect(r.status).to.equal(429);
  });

  it(`queues at most ${PASSWORD_CHECKS.queued} password checks: a CONNECT flood beyond is refused at once as busy (CONNACK 3), then the server answers normally`, async () => {
    const flood = 90;
    const codes = await Promise.all(Array.from({ length: flood }, (_, i) => connackCode(`flood-${i}`, 'wrong-password')));
    const busy = codes.filter((c) => c === 3).length;
    expect(busy, 'refused for load').to.be.at.least(flood - PASSWORD_CHECKS.queued - PASSWORD_CHECKS.concurrent - 5);
    expect(codes.filter((c) => c === 4).length + busy).to.equal(flood);
    expect(await connackCode(ADMIN.username, ADMIN.password)).to.equal(0);
  });

  it('answers an unknown user name exactly as a wrong password for a known one', async () => {
    const known = await login(ADMIN.username, 'wrong-password');
    const unknown = await login('nobody-by-this-name', 'wrong-password');
    expect(unknown.status).to.equal(known.status);
    expect(unknown.body).to.deep.equal(known.body);
  });

  it(`limits one address to ${DEFAULT_THROTTLE.perAddress} failures over all user names`, async () => {
    for (let i = 0; i < DEFAULT_THROTTLE.perAddress; i += 10) {
      const batch = await Promise.all(Array.from({ length: 10 }, (_, k) => login(`guess-${i + k}`, 'wrong-password')));
      expect(batch.every((b) => b.status === 401)).to.equal(true);
    }
    expect((await login('guess-fresh', 'wrong-password')).status).to.equal(429);
    const c = await connect(server.mqttPort, { username: ADMIN.username, password: ADMIN.password }).catch((e: Error) => e);
    expect(c, 'the address is out of budget for everyone').to.be.instanceOf(Error);
  });
});
