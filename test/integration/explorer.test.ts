/**
 * The Explorer end to end in headless Chromium (Debian's `chromium`, driven by playwright-core; override the
 * binary with UNS_TEST_CHROMIUM) against a running server with real data over MQTT: log in, find a topic
 * by filter, its value changing live after a publish, its history chart and CSV export, a rejected
 * message, the server view, and a role that may not read a subtree not seeing it. No page error and no
 * Content-Security-Policy violation on the way. Screenshots go to test-artifacts/explorer/ (git-ignored).
 */
import { expect } from 'chai';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import type { MqttClient } from 'mqtt';
import { TestPostgres } from '../helpers/postgres.js';
import { startReceiver, type Receiver } from '../helpers/webhook-receiver.js';
import { ADMIN, testConfig, startTestServer, connect, publish, cleanup, hashPassword, waitFor } from '../helpers/server.js';
import { packageRoot } from '../../src/core/paths.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';

const CHROMIUM = process.env['UNS_TEST_CHROMIUM'] ?? '/usr/bin/chromium';
const SHOTS = join(packageRoot(), 'test-artifacts', 'explorer');
const P1 = 'acme/plant1/packaging/line1/filler/temperature';
const P2 = 'acme/plant2/brewing/line2/kettle/temperature';
const VIEWER = { username: 'viewer', password: 'viewer-password-1' };

describe('Explorer page (headless Chromium)', function () {
  this.timeout(120_000);
  const pgs = new TestPostgres({ timescale: false });
  let config: Config;
  let server: RunningServer;
  let browser: Browser;
  let mqtt: MqttClient;
  let base = '';
  let receiver: Receiver;
  let failing = true;
  /** What the receiver answered on /mes, in order. */
  const answered: number[] = [];
  const problems: string[] = [];

  const open = async (): Promise<Page> => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
    return page;
  };
  const login = async (page: Page, who: { username: string; password: string }): Promise<void> => {
    await page.goto(`${base}/`);
    await page.fill('#username', who.username);
    await page.fill('#password', who.password);
    await page.click('form.login button[type=submit]');
    await page.waitForSelector('#tree .row');
  };
  const shot = async (page: Page, name: string): Promise<void> => { await page.screenshot({ path: join(SHOTS, `${name}.png`) }); };

  before(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: install Debian's chromium (see .ci/run) or set UNS_TEST_CHROMIUM`);
    mkdirSync(SHOTS, { recursive: true });
    await pgs.start();
    const url = await pgs.createDatabase('explorer');
    // A role that reads plant 1 only, for a user that logs in with a password.
    const base0 = testConfig(url);
    const topicsFile = join(base0.dataDir, 'topics.yaml');
    writeFileSync(topicsFile, readFileSync(join(packageRoot(), 'topics.yaml'), 'utf8').replace(/^roles:\n/m,
      'roles:\n  plant1-viewer:\n    description: Plant 1 only.\n    read: ["acme/plant1/#"]\n    write: []\n'));
    config = testConfig(url, { topicsFile, webhooks: { allowlist: '127.0.0.1/32', pollIntervalMs: 100, refreshIntervalMs: 200, stopGraceMs: 200 } }, base0.dataDir);
    receiver = await startReceiver();
    receiver.reply = (r) => {
      const status = failing ? 500 : 200;
      if (r.path === '/mes') answered.push(status);
      return { status, body: failing ? 'down for maintenance' : 'ok' };
    };
    server = await startTestServer(config);
    await server.store.upsertUser(VIEWER.username, await hashPassword(VIEWER.password), ['plant1-viewer']);
    await server.reload('test users');
    base = `http://127.0.0.1:${server.httpPort}`;
    mqtt = await connect(server.mqttPort, { clientId: 'explorer-plc' });
    await publish(mqtt, P1, '{"value": 21.5, "unit": "degC"}');
    await publish(mqtt, P2, '{"value": 80}');
    await publish(mqtt, P2, '{"value": "boiling"}'); // refused: a string where the schema wants a number
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
  });
  after(async () => {
    await receiver?.close();
    await browser?.close();
    mqtt?.end(true);
    await server?.stop();
    if (config) cleanup(config);
    await pgs.destroy();
  });
  afterEach(() => {
    const p = problems.splice(0);
    expect(p, 'page errors, console errors or CSP violations').to.deep.equal([]);
  });

  it('logs in, finds a topic by filter, shows its value changing live, charts it and exports the range as CSV', async () => {
    const page = await open();
    const root = await page.goto(`${base}/`);
    expect(root?.headers()['content-security-policy']).to.include("default-src 'self'");
    await login(page, ADMIN);
    await page.fill('#filter', 'acme/plant1/#');
    await page.click('form.filter button[type=submit]');
    await page.waitForFunction(() => document.querySelector('#tree-count')?.textContent === '1 topic');
    await page.click(`#tree .row[data-path="${P1}"]`);
    await page.waitForSelector('#detail-title');
    expect(await page.textContent('#detail-title')).to.equal(P1);
    expect(await page.textContent('#last-value')).to.include('21.5');
    await page.waitForFunction(() => document.querySelector('#live-state')?.textContent === 'live');
    await page.waitForSelector(`#live-rows tr[data-topic="${P1}"]`);
    await publish(mqtt, P1, '{"value": 22.75, "unit": "degC"}');
    await page.waitForFunction((t) => document.querySelector(`#live-rows tr[data-topic="${t}"] .value`)?.textContent?.includes('22.75') === true, P1);
    await page.waitForFunction(() => document.querySelector('#last-value')?.textContent?.includes('22.75') === true);
    await page.waitForSelector('#sparkline svg');
    await page.waitForSelector('#chart canvas');
    await page.waitForFunction(() => /samples/.test(document.querySelector('#chart-info')?.textContent ?? ''));
    await shot(page, 'namespace');
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export-csv')]);
    const csv = readFileSync(await download.path(), 'utf8');
    expect(csv.split(/\r?\n/)[0]).to.equal('time,topic,value,quality,unit');
    expect(csv).to.include(`${P1},22.75`);
    await page.close();
  });

  it('draws a tree of 10,000 topics a window at a time', async () => {
    // 10,000 topics in one area: 100 lines x 100 cells (QoS 0, each line closed by a QoS 1 publish).
    for (let l = 0; l < 100; l++) {
      for (let c = 0; c < 100; c++) mqtt.publish(`acme/plant2/warehouse/line${l}/c${c}/temperature`, '{"value": 1}', { qos: 0 });
      await publish(mqtt, `acme/plant2/warehouse/line${l}/c0/temperature`, '{"value": 2}');
    }
    const page = await open();
    await login(page, ADMIN);
    await page.fill('#filter', 'acme/plant2/warehouse/#');
    const t0 = Date.now();
    await page.click('form.filter button[type=submit]');
    await page.waitForFunction(() => document.querySelector('#tree-count')?.textContent === '10000 topics', undefined, { timeout: 30_000 });
    await page.waitForSelector('#tree .row');
    const loadMs = Date.now() - t0;
    // Every line and cell is open (two levels): 10,100 rows in the list, a few dozen in the page.
    const drawn = await page.locator('#tree .row').count();
    expect(drawn, 'rows in the page').to.be.below(80);
    await page.evaluate(() => { const t = document.querySelector('#tree') as HTMLElement; t.scrollTop = t.scrollHeight; t.dispatchEvent(new Event('scroll')); });
    await page.waitForSelector('#tree .row[data-path="acme/plant2/warehouse/line99/c99"]');
    expect(await page.locator('#tree .row').count()).to.be.below(80);
    console.log(`      (10,000 topics: tree loaded and drawn in ${loadMs} ms)`);
    await page.close();
  });

  it('walks the tree with the keyboard', async () => {
    const page = await open();
    await login(page, ADMIN);
    await page.focus('#tree');
    await page.keyboard.press('ArrowDown');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#detail-title');
    const selected = await page.getAttribute('#tree .row[aria-selected="true"]', 'data-path');
    expect(await page.textContent('#detail-title')).to.equal(selected);
    await page.close();
  });

  it('lists rejected messages with their code, and shows the server state', async () => {
    const page = await open();
    await login(page, ADMIN);
    await page.goto(`${base}/ui/#/rejections`);
    await page.waitForSelector('#rej-rows tr');
    const row = await page.textContent('#rej-rows tr');
    expect(row).to.include(P2);
    expect(row).to.match(/UNS_ERR_/);
    expect(row).to.include('boiling');
    await shot(page, 'rejections');
    await page.goto(`${base}/ui/#/server`);
    await page.waitForFunction(() => document.querySelector('#server-cards')?.textContent?.includes('ready') === true);
    await shot(page, 'server');
    await page.close();
  });

  it('follows webhook deliveries and replays a dead one; lists rules; shows Sparkplug nodes', async () => {
    const token = await (await fetch(`${base}/api/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ADMIN) })).json() as { access_token: string };
    const call = (path: string, body: unknown): Promise<Response> => fetch(`${base}${path}`, {
      method: 'POST', headers: { authorization: `Bearer ${token.access_token}`, 'content-type': 'application/json' }, body: JSON.stringify(body),
    });
    // No retries: the first failure makes the delivery dead.
    const made = await call('/api/v1/webhooks', { name: 'mes-line1', url: `${receiver.url}/mes`, events: ['sensor.reading'],
      filters: { topics: [P1] }, retry_config: { schedule_s: [] }, batch: { max_size: 1, max_linger_ms: 0 } });
    expect(made.status).to.equal(201);
    receiver.secrets.push(((await made.json()) as { secret: string }).secret);
    expect((await call('/api/v1/rules', { name: 'filler too hot', topic_filter: P1, operator: '>', threshold: 90 })).status).to.equal(201);
    expect((await call('/api/v1/rules', { name: 'filler warm', topic_filter: P1, operator: '>', threshold: 10 })).status).to.equal(201);
    await publish(mqtt, P1, '{"value": 23.5, "unit": "degC"}');

    const page = await open();
    await login(page, ADMIN);
    await page.goto(`${base}/ui/#/webhooks`);
    await page.click('#wh-rows tr button.link');
    await page.waitForSelector('#wh-deliveries');
    // Dead once the receiver's 500 came back.
    await page.waitForFunction(async () => {
      const b = [...document.querySelectorAll<HTMLButtonElement>('.toolbar button')].find((x) => x.textContent === 'Dead');
      b?.click();
      await new Promise((r) => setTimeout(r, 200));
      return document.querySelector('#wh-deliveries tr[data-status="dead"]') !== null;
    }, undefined, { timeout: 20_000, polling: 500 });
    await page.waitForSelector('#wh-stats .card');
    await page.click('#wh-deliveries tr[data-status="dead"] td button.link');
    await page.waitForFunction(() => document.querySelector('#wh-body')?.textContent?.includes('23.5') === true);
    await shot(page, 'webhooks');
    failing = false;
    await page.click('#wh-deliveries tr[data-status="dead"] button.replay');
    await page.waitForFunction(() => document.querySelector('#wh-detail [role=status]')?.textContent?.startsWith('replayed') === true);
    await waitFor(() => answered.includes(200), 15_000, 'the replayed delivery');
    expect(answered, 'the failed attempt, then the replay').to.deep.equal([500, 200]);
    expect(receiver.on('/mes').every((r) => r.standardOk), 'every request signed').to.equal(true);

    await page.goto(`${base}/ui/#/rules`);
    await page.waitForSelector('#rule-rows tr');
    expect(await page.textContent('#rule-rows')).to.include('filler too hot');
    await page.click('#rule-rows button.link >> text=filler warm');
    await page.waitForSelector('#rule-state-rows tr');
    expect(await page.textContent('#rule-state-rows')).to.include(P1).and.include('exceeded');
    await page.goto(`${base}/ui/#/sparkplug`);
    await page.waitForFunction(() => /edge node/.test(document.querySelector('.page [role=status]')?.textContent ?? ''));
    await page.close();
  });

  it('fits a tablet (768 x 1024) without sideways scrolling', async () => {
    const page = await browser.newPage({ viewport: { width: 768, height: 1024 } });
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    await login(page, ADMIN);
    await page.fill('#filter', 'acme/plant1/#');
    await page.click('form.filter button[type=submit]');
    await page.waitForFunction(() => document.querySelector('#tree-count')?.textContent === '1 topic');
    await page.click(`#tree .row[data-path="${P1}"]`);
    await page.waitForSelector('#chart canvas');
    // A second node on the same connection: its indicator says live too.
    await page.click('#tree .row[data-path="acme/plant1/packaging"]'); // selects it and folds it
    await page.waitForFunction(() => document.querySelector('#live-state')?.textContent === 'live');
    await page.click('#tree .row[data-path="acme/plant1/packaging"]'); // unfolds it
    await page.click(`#tree .row[data-path="${P1}"]`);
    await page.waitForSelector('#chart canvas');
    expect(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), 'no horizontal overflow').to.equal(true);
    await shot(page, 'tablet');
    await page.close();
  });

  it('shows a role only what it may read: no plant 2 in its tree or its rejections', async () => {
    const page = await open();
    await login(page, VIEWER);
    await page.waitForFunction(() => /topic/.test(document.querySelector('#tree-count')?.textContent ?? ''));
    expect(await page.textContent('#tree-count')).to.equal('1 topic');
    expect(await page.locator('#tree .row[data-path^="acme/plant2"]').count()).to.equal(0);
    await page.goto(`${base}/ui/#/rejections`);
    await page.waitForFunction(() => document.querySelector('.page [role=status]')?.textContent !== 'loading…');
    expect(await page.locator('#rej-rows tr').count()).to.equal(0);
    await page.close();
  });
});
