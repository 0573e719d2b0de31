/**
 * Signed inbound ingest over real HTTP. The client signs with its own node:crypto code (not the server's
 * signing module), so a mistake in one is not mirrored in the other.
 */
import { expect } from 'chai';
import { createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { query } from '../helpers/postgres.js';
import { testConfig, startTestServer, cleanup, roleToken } from '../helpers/server.js';
import { packageRoot } from '../../src/core/paths.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';

type Json = Record<string, unknown>;

const ERP_SECRET = `whsec_${randomBytes(32).toString('base64')}`;
const THERMO_SECRET = 'thermo-literal-secret-0123456789';
const LEGACY_SECRET = 'legacy-literal-secret-0123456789';

const SOURCES = [
  {
    name: 'erp', secretEnv: 'UNS_INGEST_SECRET_ERP', signature: 'standard', role: 'erp-writer', allow: ['127.0.0.0/8', '::1'],
    mappings: [{ match: 'readings[*]', topic: 'acme/{{site}}/{{area}}/line1/{{machine}}/temperature', value: 'temperature', timestamp: 'ts' }],
  },
  {
    name: 'thermo', secret: THERMO_SECRET, signature: 'sha256', idHeader: 'X-Delivery-Id', timestampField: 'sent_at', role: 'plc',
    mappings: [{ match: 'probes[*]', topic: 'acme/plant2/brewing/line2/{{probe_id}}/temperature', value: 'temperature', unit: 'unit', timestamp: '$.sent_at' }],
  },
  {
    name: 'legacy', secret: LEGACY_SECRET, signature: 'hex', allow: ['10.99.0.0/16'], role: 'plc',
    mappings: [{ topic: 'acme/plant1/utilities/line1/{{$.cell}}/count', value: 'count' }],
  },
];

function signStandard(secret: string, id: string, tsS: number, body: string): Record<string, string> {
  const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
  const sig = createHmac('sha256', key).update(`${id}.${tsS}.${body}`).digest('base64');
  return { 'webhook-id': id, 'webhook-timestamp': String(tsS), 'webhook-signature': `v1,${sig}` };
}

function hexHmac(key: string, body: string): string {
  return createHmac('sha256', Buffer.from(key, 'utf8')).update(body).digest('hex');
}

describe('ingest - signed inbound HTTP', function () {
  this.timeout(60_000);
  let dir: string;
  let config: Config;
  let server: RunningServer;
  let base: string;
  let seq = 0;

  async function post(source: string, body: string, headers: Record<string, string>): Promise<{ status: number; body: Json }> {
    const res = await fetch(`${base}/api/v1/ingest/${source}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as Json) : {} };
  }
  const code = (b: Json): unknown => (b['error'] as { code?: string } | undefined)?.code;
  const nowS = (): number => Math.floor(Date.now() / 1000);
  const values = async (topic: string): Promise<unknown[]> =>
    (await query(server.databaseUrl, 'SELECT s.v_num FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name = $1 ORDER BY s.time', [topic])).map((r) => r['v_num']);
  const erpBody = (readings: Json[]): string => JSON.stringify({ batch: seq++, readings });
  const reading = (machine: string, temperature: unknown, over: Json = {}): Json =>
    ({ site: 'plant1', area: 'packaging', machine, temperature, ts: new Date().toISOString(), ...over });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'uns-ingest-'));
    const doc = parseYaml(readFileSync(join(packageRoot(), 'topics.yaml'), 'utf8')) as Json;
    (doc['roles'] as Json)['erp-writer'] = { write: ['acme/plant1/#'] };
    doc['ingest'] = SOURCES;
    const topicsFile = join(dir, 'topics.yaml');
    writeFileSync(topicsFile, stringifyYaml(doc));
    config = testConfig(null, { topicsFile, ingest: { secrets: { UNS_INGEST_SECRET_ERP: ERP_SECRET }, allowLiteralSecrets: true } });
    server = await startTestServer(config);
    base = `http://127.0.0.1:${server.httpPort}`;
  });
  after(async () => {
    await server?.stop();
    cleanup(config);
    rmSync(dir, { recursive: true, force: true });
  });

  it('stores values of a good Standard Webhooks delivery under the mapped topics, 202 once durable', async () => {
    const body = erpBody([reading('filler', 21.5), reading('capper', 22.25)]);
    const r = await post('erp', body, signStandard(ERP_SECRET, 'msg_good_1', nowS(), body));
    expect(r.status).to.equal(202);
    expect(r.body).to.include({ status: 'accepted', source: 'erp', delivery_id: 'msg_good_1', stored: 2, rejected: 0 });
    expect((r.body['results'] as Json[]).map((x) => [x['topic'], x['status']])).to.deep.equal([
      ['acme/plant1/packaging/line1/filler/temperature', 'stored'], ['acme/plant1/packaging/line1/capper/temperature', 'stored'],
    ]);
    expect(await values('acme/plant1/packaging/line1/filler/temperature')).to.deep.equal([21.5]);
    expect(await values('acme/plant1/packaging/line1/capper/temperature')).to.deep.equal([22.25]);
  });

  it('accepts the sha256= scheme with a signed body timestamp', async () => {
    const body = JSON.stringify({ sent_at: Date.now(), probes: [{ probe_id: 'fermenter', temperature: 12.5, unit: '°C' }] });
    const r = await post('thermo', body, { 'x-webhook-signature': `sha256=${hexHmac(THERMO_SECRET, body)}`, 'x-delivery-id': 'th-1' });
    expect([r.status, r.body['stored']]).to.deep.equal([202, 1]);
    expect(await values('acme/plant2/brewing/line2/fermenter/temperature')).to.deep.equal([12.5]);
  });

  it('refuses a bad or missing signature with 401 UNS_ERR_SIGNATURE_INVALID, storing nothing', async () => {
    const body = erpBody([reading('labeler', 30)]);
    const wrong = signStandard(`whsec_${randomBytes(32).toString('base64')}`, 'msg_bad', nowS(), body);
    let r = await post('erp', body, wrong);
    expect([r.status, code(r.body)]).to.deep.equal([401, 'UNS_ERR_SIGNATURE_INVALID']);
    r = await post('erp', body, {});
    expect([r.status, code(r.body)]).to.deep.equal([401, 'UNS_ERR_SIGNATURE_INVALID']);
    const thermo = JSON.stringify({ sent_at: Date.now(), probes: [{ probe_id: 'kettle', temperature: 99 }] });
    r = await post('thermo', thermo, { 'x-webhook-signature': `sha256=${hexHmac('not-the-secret', thermo)}` });
    expect([r.status, code(r.body)]).to.deep.equal([401, 'UNS_ERR_SIGNATURE_INVALID']);
    expect(await values('acme/plant1/packaging/line1/labeler/temperature')).to.deep.equal([]);
    expect(await values('acme/plant2/brewing/line2/kettle/temperature')).to.deep.equal([]);
  });

  it('refuses a replayed or skewed timestamp (beyond ±5 min) with 401 UNS_ERR_TIMESTAMP_SKEW', async () => {
    const body = erpBody([reading('palletizer', 5)]);
    let r = await post('erp', body, signStandard(ERP_SECRET, 'msg_old', nowS() - 400, body));
    expect([r.status, code(r.body)]).to.deep.equal([401, 'UNS_ERR_TIMESTAMP_SKEW']);
    r = await post('erp', body, signStandard(ERP_SECRET, 'msg_future', nowS() + 400, body));
    expect([r.status, code(r.body)]).to.deep.equal([401, 'UNS_ERR_TIMESTAMP_SKEW']);
    // the signed body's own timestamp, for the sha256 scheme
    const old = JSON.stringify({ sent_at: new Date(Date.now() - 600_000).toISOString(), probes: [{ probe_id: 'mash', temperature: 60 }] });
    r = await post('thermo', old, { 'x-webhook-signature': `sha256=${hexHmac(THERMO_SECRET, old)}` });
    expect([r.status, code(r.body)]).to.deep.equal([401, 'UNS_ERR_TIMESTAMP_SKEW']);
    expect(await values('acme/plant1/packaging/line1/palletizer/temperature')).to.deep.equal([]);
  });

  it('refuses a re-serialised body: same JSON, different bytes', async () => {
    const compact = erpBody([reading('washer', 40)]);
    const pretty = JSON.stringify(JSON.parse(compact), null, 2);
    const r = await post('erp', pretty, signStandard(ERP_SECRET, 'msg_pretty', nowS(), compact));
    expect([r.status, code(r.body)]).to.deep.equal([401, 'UNS_ERR_SIGNATURE_INVALID']);
    const thermo = JSON.stringify({ sent_at: Date.now(), probes: [{ probe_id: 'wort', temperature: 1 }] });
    const spaced = thermo.replace(/,/g, ', ');
    const r2 = await post('thermo', spaced, { 'x-webhook-signature': `sha256=${hexHmac(THERMO_SECRET, thermo)}` });
    expect([r2.status, code(r2.body)]).to.deep.equal([401, 'UNS_ERR_SIGNATURE_INVALID']);
    expect(await values('acme/plant1/packaging/line1/washer/temperature')).to.deep.equal([]);
  });

  it('stores a redelivered id once and answers it with {"duplicate": true}', async () => {
    const body = erpBody([reading('mixer', 7)]);
    const first = await post('erp', body, signStandard(ERP_SECRET, 'msg_dup', nowS(), body));
    expect(first.status).to.equal(202);
    // a retry carries the same id and a fresh timestamp (Standard Webhooks)
    const again = await post('erp', body, signStandard(ERP_SECRET, 'msg_dup', nowS(), body));
    expect(again.status).to.equal(200);
    expect(again.body).to.include({ duplicate: true, delivery_id: 'msg_dup' });
    // two copies at once: one is processed, the other waits for it and is a duplicate
    const twin = erpBody([reading('sorter', 8)]);
    const both = await Promise.all([1, 2].map(() => post('erp', twin, signStandard(ERP_SECRET, 'msg_twin', nowS(), twin))));
    expect(both.map((x) => x.status).sort()).to.deep.equal([200, 202]);
    expect(await values('acme/plant1/packaging/line1/mixer/temperature')).to.deep.equal([7]);
    expect(await values('acme/plant1/packaging/line1/sorter/temperature')).to.deep.equal([8]);
    expect(await query(server.databaseUrl, `SELECT delivery_id FROM ingest_dedup WHERE source = 'erp' AND delivery_id LIKE 'msg_%' ORDER BY 1`))
      .to.deep.equal([{ delivery_id: 'msg_dup' }, { delivery_id: 'msg_good_1' }, { delivery_id: 'msg_twin' }]);
  });

  it('reports values rejected by schema, levels, mapping or role with their codes, storing the rest', async () => {
    const body = erpBody([
      reading('bottler', 19),
      reading('bottler2', 'hot'),
      reading('boiler', 50, { area: 'kitchen' }),
      { site: 'plant1', area: 'packaging', temperature: 1 },
      reading('filler', 3, { site: 'plant2' }),
    ]);
    const r = await post('erp', body, signStandard(ERP_SECRET, 'msg_mixed', nowS(), body));
    expect(r.status).to.equal(202);
    expect(r.body).to.include({ stored: 1, rejected: 4 });
    expect((r.body['results'] as Json[]).map((x) => x['code'] ?? x['status'])).to.deep.equal([
      'stored', 'UNS_ERR_SCHEMA_VIOLATION', 'UNS_ERR_ISA95_LEVEL', 'UNS_ERR_INGEST_MAPPING', 'UNS_ERR_NOT_AUTHORIZED',
    ]);
    expect(await values('acme/plant1/packaging/line1/bottler/temperature')).to.deep.equal([19]);
    expect(await values('acme/plant1/packaging/line1/bottler2/temperature')).to.deep.equal([]);
    expect(await values('acme/plant2/packaging/line1/filler/temperature')).to.deep.equal([]);
  });

  it('refuses senders outside the allowlist with 403, and unknown sources with 404', async () => {
    const body = JSON.stringify({ cell: 'filler', count: 5 });
    let r = await post('legacy', body, { 'x-webhook-signature': hexHmac(LEGACY_SECRET, body) });
    expect([r.status, code(r.body)]).to.deep.equal([403, 'UNS_ERR_FORBIDDEN']);
    r = await post('nope', body, {});
    expect([r.status, code(r.body)]).to.deep.equal([404, 'UNS_ERR_NOT_FOUND']);
    r = await post('erp', 'not json', signStandard(ERP_SECRET, 'msg_text', nowS(), 'not json'));
    expect([r.status, code(r.body)]).to.deep.equal([400, 'UNS_ERR_BAD_REQUEST']);
  });

  it('describes a source on GET .../verify without its secret', async () => {
    const token = roleToken('ana', ['analyst']);
    const res = await fetch(`${base}/api/v1/ingest/erp/verify`, { headers: { authorization: `Bearer ${token}` } });
    const text = await res.text();
    expect(res.status).to.equal(200);
    const v = JSON.parse(text) as Json;
    expect(v).to.include({ status: 'success', source: 'erp', verification_required: true, tolerance_s: 300, role: 'erp-writer' });
    expect(v['url']).to.match(/\/api\/v1\/ingest\/erp$/);
    expect(v['signature']).to.deep.include({ scheme: 'standard', headers: { id: 'webhook-id', timestamp: 'webhook-timestamp', signature: 'webhook-signature' } });
    expect(v['delivery_id']).to.deep.equal({ header: 'webhook-id' });
    expect(v['mappings']).to.deep.equal(SOURCES[0]?.mappings);
    expect(text).to.not.contain(ERP_SECRET.slice('whsec_'.length, 20));
    expect(text).to.not.contain('UNS_INGEST_SECRET');
    const thermo = (await (await fetch(`${base}/api/v1/ingest/thermo/verify`, { headers: { authorization: `Bearer ${token}` } })).text());
    expect(thermo).to.not.contain(THERMO_SECRET);
    expect((JSON.parse(thermo) as Json)['timestamp']).to.deep.equal({ field: 'sent_at', unit: 'epoch s or ms, or RFC 3339' });
    expect((await fetch(`${base}/api/v1/ingest/erp/verify`)).status).to.equal(401);
    expect((await fetch(`${base}/api/v1/ingest/nope/verify`, { headers: { authorization: `Bearer ${token}` } })).status).to.equal(404);
  });
});
