/**
 * /metrics tells what happened: MQTT traffic and refusals, HTTP latency, webhook attempts and dead letters,
 * rule events, the build, and the standard process_* / nodejs_* metrics stock dashboards expect.
 */
import { expect } from 'chai';
import mqtt from 'mqtt';
import { testConfig, startTestServer, connect, publish, cleanup, waitFor, ADMIN } from '../helpers/server.js';
import { startReceiver, type Receiver } from '../helpers/webhook-receiver.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot, packageVersion } from '../../src/core/paths.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';

/** The value of one sample line (`name{labels} value`), or undefined. */
function sample(text: string, name: string, labels = ''): number | undefined {
  const head = `${name}${labels ? `{${labels}}` : ''} `;
  const line = text.split('\n').find((l) => l.startsWith(head));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

describe('metrics - counted in code, exported on /metrics', function () {
  this.timeout(60_000);
  let config: Config;
  let server: RunningServer;
  let receiver: Receiver;
  const scrape = async (): Promise<string> => (await fetch(`http://127.0.0.1:${server.httpPort}/metrics`)).text();

  before(async () => {
    receiver = await startReceiver();
    config = testConfig(null, { webhooks: { allowlist: '127.0.0.1/32', pollIntervalMs: 100 } });
    server = await startTestServer(config);
  });
  after(async () => {
    await server?.stop();
    await receiver?.close();
    if (config) cleanup(config);
  });

  it('exports the standard process and Node.js metrics and uns_build_info', async () => {
    const m = await scrape();
    expect(m).to.match(/^process_cpu_user_seconds_total /m);
    expect(m).to.match(/^process_resident_memory_bytes /m);
    expect(m).to.match(/^nodejs_eventloop_lag_seconds /m);
    expect(sample(m, 'uns_build_info', `version="${packageVersion()}",node="${process.version}"`)).to.equal(1);
  });

  it('counts MQTT messages and bytes in and out, refused connections and denied subscriptions', async () => {
    const before = await scrape();
    const sub = await connect(server.mqttPort, { clientId: 'metrics-sub' });
    await sub.subscribeAsync('acme/plant1/packaging/line1/metrics/#', { qos: 1 });
    const pub = await connect(server.mqttPort, { clientId: 'metrics-pub' });
    const got = new Promise<void>((res) => sub.on('message', () => res()));
    const payload = JSON.stringify({ value: 1.5 });
    await publish(pub, 'acme/plant1/packaging/line1/metrics/level', payload);
    await got;
    const bad = mqtt.connect(`mqtt://127.0.0.1:${server.mqttPort}`, { username: ADMIN.username, password: 'wrong-password', reconnectPeriod: 0 });
    await new Promise<void>((res) => bad.once('error', () => res()));
    bad.end(true);
    const denied = await connect(server.mqttPort, { clientId: 'metrics-denied' });
    await denied.subscribeAsync('$uns-nothing/#', { qos: 0 }).catch(() => undefined);
    for (const c of [sub, pub, denied]) c.end(true);
    const after = await scrape();
    const grew = (name: string, labels = ''): number => (sample(after, name, labels) ?? 0) - (sample(before, name, labels) ?? 0);
    expect(grew('uns_mqtt_messages_received_total')).to.be.at.least(1);
    expect(grew('uns_mqtt_received_bytes_total')).to.be.at.least(payload.length);
    expect(grew('uns_mqtt_messages_sent_total')).to.be.at.least(1);
    expect(grew('uns_mqtt_connections_refused_total', 'code="UNS_ERR_AUTH_FAILED"')).to.equal(1);
    expect(grew('uns_mqtt_subscribes_denied_total')).to.equal(1);
  });

  it('measures HTTP latency per route', async () => {
    await fetch(`http://127.0.0.1:${server.httpPort}/ready`);
    const m = await scrape();
    expect(sample(m, 'uns_http_request_duration_seconds_count', 'route="/ready"')).to.be.at.least(1);
  });

  it('counts webhook attempts and dead letters', async () => {
    const login = await fetch(`http://127.0.0.1:${server.httpPort}/api/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ADMIN) });
    const token = ((await login.json()) as { access_token: string }).access_token;
    receiver.reply = () => ({ status: 500 });
    const created = await fetch(`http://127.0.0.1:${server.httpPort}/api/v1/webhooks`, {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'metrics', url: `${receiver.url}/m`, events: ['sensor.reading'], filters: { topics: ['acme/plant1/packaging/line1/dead/#'] },
        batch: { max_size: 1 }, retry_config: { schedule_s: [0.1] } }),
    });
    expect(created.status).to.equal(201);
    const pub = await connect(server.mqttPort, { clientId: 'metrics-wh' });
    await publish(pub, 'acme/plant1/packaging/line1/dead/level', JSON.stringify({ value: 2 }));
    pub.end(true);
    // One attempt, one retry, then dead.
    const m = await waitFor(async () => { const t = await scrape(); return (sample(t, 'uns_webhook_dead_total') ?? 0) >= 1 ? t : undefined; }, 15_000, 'a dead letter');
    expect(sample(m, 'uns_webhook_attempts_total')).to.be.at.least(2);
    expect(sample(m, 'uns_webhook_failed_total')).to.be.at.least(2);
  });

  it('exports every metric the Grafana dashboard in docker/grafana queries', async () => {
    const dash = JSON.parse(readFileSync(join(packageRoot(), 'docker', 'grafana', 'uns-bridge.json'), 'utf8')) as { panels: Array<{ targets: Array<{ expr?: string }> }> };
    const names = new Set(dash.panels.flatMap((p) => p.targets.flatMap((t) => t.expr?.match(/\b(?:uns|process|nodejs)_[a-z0-9_]+/g) ?? [])));
    expect(names.size).to.be.greaterThan(20);
    const m = await scrape();
    const exported = new Set(m.split('\n').filter((l) => l.startsWith('# TYPE ')).map((l) => l.split(' ')[2] as string));
    // A histogram is queried through its _bucket series.
    const missing = [...names].filter((n) => !exported.has(n) && !exported.has(n.replace(/_bucket$/, '')));
    expect(missing).to.deep.equal([]);
  });
});
