/**
 * The log tells an operator what happened: MQTT clients connecting and leaving (with their address),
 * an audit line for each change made through the API, and failed webhook attempts at warn.
 */
import { expect } from 'chai';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { testConfig, startServerWithLogger, connect, publish, cleanup, waitFor, ADMIN } from '../helpers/server.js';
import { startReceiver, type Receiver } from '../helpers/webhook-receiver.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';

type Line = Record<string, unknown>;

describe('logs - connects, audit lines, failed webhook attempts', function () {
  this.timeout(60_000);
  let config: Config;
  let server: RunningServer;
  let receiver: Receiver;
  const lines: Line[] = [];
  const find = (pred: (l: Line) => boolean): Line | undefined => lines.find(pred);

  before(async () => {
    receiver = await startReceiver();
    const sink = new Writable({ write(chunk: Buffer, _e, cb) { for (const l of chunk.toString().split('\n')) if (l) lines.push(JSON.parse(l) as Line); cb(); } });
    config = testConfig(null, { webhooks: { allowlist: '127.0.0.1/32', pollIntervalMs: 100 } });
    server = await startServerWithLogger(config, pino({ level: 'info' }, sink));
  });
  after(async () => {
    await server?.stop();
    await receiver?.close();
    if (config) cleanup(config);
  });

  it('logs an MQTT client connecting and disconnecting, with its address, at info', async () => {
    const c = await connect(server.mqttPort, { clientId: 'logged-client' });
    c.end(true);
    const gone = await waitFor(() => find((l) => l['msg'] === 'client disconnected' && l['clientId'] === 'logged-client'), 5_000, 'disconnect line');
    const came = find((l) => l['msg'] === 'client connected' && l['clientId'] === 'logged-client');
    expect(came).to.include({ level: 30, username: ADMIN.username, address: '127.0.0.1' });
    expect(gone).to.include({ level: 30, address: '127.0.0.1' });
  });

  it('writes an audit line for a change through the API (who, what, answer), none for reads', async () => {
    const login = await fetch(`http://127.0.0.1:${server.httpPort}/api/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ADMIN) });
    const token = ((await login.json()) as { access_token: string }).access_token;
    const r = await fetch(`http://127.0.0.1:${server.httpPort}/api/v1/tokens`, {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'grafana' }),
    });
    expect(r.status).to.equal(201);
    const id = ((await r.json()) as { id: string }).id;
    await fetch(`http://127.0.0.1:${server.httpPort}/api/v1/tokens`, { headers: { authorization: `Bearer ${token}` } });
    const del = await fetch(`http://127.0.0.1:${server.httpPort}/api/v1/tokens/${id}`, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } });
    expect(del.status).to.be.oneOf([200, 204]);
    const audit = lines.filter((l) => l['audit'] === true);
    expect(audit.map((l) => `${String(l['method'])} ${String(l['route'])} ${String(l['status'])}`)).to.deep.equal([
      'POST /api/v1/tokens 201', `DELETE /api/v1/tokens/:id ${del.status}`,
    ]);
    expect(audit[1]).to.deep.include({ actor: ADMIN.username, params: { id } });
  });

  it('logs a failed webhook attempt at warn, with what comes next', async () => {
    const login = await fetch(`http://127.0.0.1:${server.httpPort}/api/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ADMIN) });
    const token = ((await login.json()) as { access_token: string }).access_token;
    receiver.reply = () => ({ status: 503 });
    await fetch(`http://127.0.0.1:${server.httpPort}/api/v1/webhooks`, {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'logged', url: `${receiver.url}/x`, events: ['sensor.reading'], filters: { topics: ['acme/plant1/packaging/line1/logged/#'] }, batch: { max_size: 1 } }),
    });
    const c = await connect(server.mqttPort, { clientId: 'logged-pub' });
    await publish(c, 'acme/plant1/packaging/line1/logged/level', JSON.stringify({ value: 3 }));
    c.end(true);
    const warn = await waitFor(() => find((l) => l['msg'] === 'webhook attempt failed'), 10_000, 'warn line');
    expect(warn).to.include({ level: 40, webhook: 'logged', status: 503, attempt: 1 });
    expect(String(warn['next'])).to.match(/^\d{4}-\d\d-\d\dT/);
  });
});
