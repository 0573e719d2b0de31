/**
 * Webhook retry state survives restarts (docs/guarantees.md: "The namespace's state survives restarts ... webhook
 * retry state"), a crashed or stopped attempt's lease expires and the delivery is sent again with the same
 * webhook-id, and two instances sharing one database share the outbox without sending a delivery twice
 * or exceeding an endpoint's concurrency.
 */
import { expect } from 'chai';
import { testConfig, startTestServer, cleanup, connect, publish, waitFor, ADMIN } from '../helpers/server.js';
import { startReceiver, type Receiver, type Received } from '../helpers/webhook-receiver.js';
import { query } from '../helpers/postgres.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';

type Body = Record<string, unknown>;
const T = 'acme/plant2/brewing/line3';
/** Time as input only: a receiver that answers slowly on purpose. */
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const valuesOf = (r: Received): unknown[] => ((((r.json as Body | null)?.['data'] as Body | undefined)?.['readings'] as Body[] | undefined) ?? []).map((x) => x['value']);
const FAST = { allowlist: '127.0.0.1/32', pollIntervalMs: 100, leaseMarginMs: 500, refreshIntervalMs: 200, stopGraceMs: 300 };

async function login(server: RunningServer): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${server.httpPort}/api/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ADMIN) });
  return ((await r.json()) as Body)['access_token'] as string;
}

async function createHook(server: RunningServer, token: string, body: Body): Promise<Body> {
  const r = await fetch(`http://127.0.0.1:${server.httpPort}/api/v1/webhooks`, {
    method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  const out = (await r.json()) as Body;
  expect(r.status, JSON.stringify(out)).to.equal(201);
  return out;
}

async function publishAll(server: RunningServer, topic: string, values: number[]): Promise<void> {
  const c = await connect(server.mqttPort);
  for (const v of values) await publish(c, topic, JSON.stringify({ value: v }));
  c.end(true);
}

describe('webhooks - restarts and several instances', function () {
  this.timeout(40_000);
  let receiver: Receiver;
  const configs: Config[] = [];
  const servers: RunningServer[] = [];

  before(async () => {
    receiver = await startReceiver();
  });
  after(async () => {
    for (const s of servers.reverse()) await s.stop().catch(() => undefined);
    await receiver?.close();
    for (const c of configs) cleanup(c);
  });

  it('a restart during a retry backlog loses nothing: every delivery arrives afterwards with its webhook-id', async () => {
    const config = testConfig(null, { webhooks: FAST });
    configs.push(config);
    let server = await startTestServer(config);
    servers.push(server);
    const token = await login(server);
    let up = false;
    receiver.reply = (r) => (r.path.startsWith('/backlog') && !up ? { status: 500 } : { status: 200 });
    const a = await createHook(server, token, { name: 'backlog', url: `${receiver.url}/backlog`, events: ['sensor.reading'], filters: { topics: [`${T}/kettle/#`] },
      batch: { max_size: 1 }, retry_config: { schedule_s: [0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3] } });
    // A batch still lingering at shutdown is sealed and made durable by the graceful stop.
    const b = await createHook(server, token, { name: 'lingering', url: `${receiver.url}/backlog-linger`, events: ['sensor.reading'], filters: { topics: [`${T}/kettle/#`] },
      batch: { max_size: 100, max_linger_ms: 60_000 } });
    receiver.secrets = [a['secret'] as string, b['secret'] as string];
    await publishAll(server, `${T}/kettle/temperature`, [61, 62, 63, 64]);
    await waitFor(() => new Set(receiver.on('/backlog').map((r) => r.id)).size === 4, 10_000, 'first failed attempts');
    const idsBefore = new Set(receiver.on('/backlog').map((r) => r.id));
    expect(receiver.on('/backlog-linger')).to.have.length(0);

    await server.stop();
    servers.pop();
    up = true;
    const failedSoFar = receiver.on('/backlog').length;
    server = await startTestServer(config);
    servers.push(server);

    await waitFor(() => receiver.on('/backlog').length > failedSoFar + 3 && receiver.on('/backlog-linger').length === 1 ? true : undefined, 15_000, 'deliveries after restart');
    const after = receiver.on('/backlog').slice(failedSoFar);
    expect(new Set(after.map((r) => r.id)), 'the same webhook-ids as before the restart').to.deep.equal(idsBefore);
    expect(after.flatMap(valuesOf).sort()).to.deep.equal([61, 62, 63, 64]);
    expect(after.every((r) => r.standardOk)).to.equal(true);
    const linger = receiver.on('/backlog-linger')[0] as Received;
    expect(valuesOf(linger)).to.deep.equal([61, 62, 63, 64]);
    expect(linger.standardOk).to.equal(true);
    await server.stop();
    servers.pop();
  });

  it('an attempt cut off by a stop is sent again after its lease expires, with the same webhook-id', async () => {
    const config = testConfig(null, { webhooks: FAST });
    configs.push(config);
    let server = await startTestServer(config);
    servers.push(server);
    const token = await login(server);
    let hang = true;
    receiver.reply = (r) => (r.path === '/lease' && hang ? 'hang' : { status: 200 });
    const h = await createHook(server, token, { name: 'lease', url: `${receiver.url}/lease`, events: ['sensor.reading'], filters: { topics: [`${T}/fermenter/#`] },
      batch: { max_size: 1 }, retry_config: { schedule_s: [60], timeout_ms: 1500 } });
    receiver.secrets = [h['secret'] as string];
    await publishAll(server, `${T}/fermenter/temperature`, [12.5]);
    await waitFor(() => receiver.on('/lease').length === 1, 10_000, 'first attempt');
    const id = receiver.on('/lease')[0]?.id;
    // Stop while the attempt hangs: the grace period passes, the row stays in flight under its lease.
    await server.stop();
    servers.pop();
    hang = false;
    server = await startTestServer(config);
    servers.push(server);
    const again = await waitFor(() => receiver.on('/lease').find((r) => r.n !== receiver.on('/lease')[0]?.n), 10_000, 'attempt after lease expiry');
    expect(again.id).to.equal(id);
    expect(again.standardOk).to.equal(true);
    expect(valuesOf(again)).to.deep.equal([12.5]);
    await server.stop();
    servers.pop();
  });

  it('two instances on one database share the outbox: no delivery sent twice, the concurrency limit holds across them', async () => {
    const cfgA = testConfig(null, { webhooks: FAST });
    configs.push(cfgA);
    const a = await startTestServer(cfgA);
    servers.push(a);
    const cfgB = testConfig(a.databaseUrl, { webhooks: { ...FAST, pollIntervalMs: 20, stopGraceMs: 1000 } });
    configs.push(cfgB);
    const b = await startTestServer(cfgB);
    servers.push(b);
    const token = await login(a);
    receiver.reply = async (r) => {
      if (r.path === '/shared') await sleep(60); // time as input: slow answers keep deliveries in flight across B's stop
      return { status: 200 };
    };
    const h = await createHook(a, token, { name: 'shared', url: `${receiver.url}/shared`, events: ['sensor.reading'], filters: { topics: [`${T}/boiler/#`] },
      batch: { max_size: 1 }, max_concurrency: 2, retry_config: { timeout_ms: 1000 } });
    receiver.secrets = [h['secret'] as string];
    // B learns of the endpoint from the database (created through A).
    await waitFor(() => b.webhooks.wants('sensor.reading'), 5_000, 'B to load the endpoint');
    const values = Array.from({ length: 12 }, (_, i) => 100 + i);
    await publishAll(b, `${T}/boiler/pressure`, values);
    // B made them durable and has started delivering; it stops now and A (polling) finishes the work.
    await waitFor(() => b.webhooks.dispatcher.stats.attempts > 0, 10_000, 'B to start delivering');
    await b.stop();
    servers.splice(servers.indexOf(b), 1);
    await waitFor(() => receiver.on('/shared').length >= 12, 15_000, 'twelve deliveries');
    // Every delivery settled as succeeded: none is left to be sent again.
    const settled = async (): Promise<number> => Number((await query<{ n: string }>(a.databaseUrl,
      `SELECT count(*) AS n FROM webhook_deliveries WHERE webhook_id = $1 AND status = 'succeeded'`, [h['id'] as string]))[0]?.n ?? 0);
    await waitFor(async () => (await settled()) === 12, 15_000, 'twelve succeeded deliveries');
    const got = receiver.on('/shared');
    expect(got).to.have.length(12);
    expect(new Set(got.map((r) => r.id)).size, 'no webhook-id twice').to.equal(12);
    expect(got.flatMap(valuesOf).sort()).to.deep.equal(values);
    expect(receiver.maxConcurrent.get('/shared')).to.be.at.most(2);
    expect(b.webhooks.dispatcher.stats.attempts, 'B delivered some').to.be.greaterThan(0);
    expect(a.webhooks.dispatcher.stats.attempts, 'A delivered the rest').to.be.greaterThan(0);
  });
});
