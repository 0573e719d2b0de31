/**
 * Bulk export over real HTTP: CSV (RFC 4180) and NDJSON content, the file name, permissions, and the
 * streaming promises — rows come off a server-side cursor only as fast as the client reads them, a
 * client that leaves ends the query, and exports are capped so they cannot starve ingest of connections.
 * Run against PostgreSQL + TimescaleDB (hypertable, time index) and the embedded plain PostgreSQL (sort).
 */
import { expect } from 'chai';
import type { MqttClient } from 'mqtt';
import sparkplugPayload from 'sparkplug-payload';
import { TestPostgres, query } from '../helpers/postgres.js';
import { testConfig, startTestServer, connect, publish, cleanup, waitFor, ADMIN, roleToken } from '../helpers/server.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';

const MIN = 60_000;
const M = 'acme/plant1/utilities/line4/meter';
const TEMP = 'acme/plant1/packaging/line1/filler/temperature';
const SPB = 'spBv1.0/plant1/edge1/Temperature';
const BULK = `${M}/bulk`;
const BIG = '123456789012345678901234567890';
const BULK_ROWS = 300_000;
// 40 MB of 1 kB strings: far beyond the socket buffers, and quick to produce when nothing holds it back.
const FAT = `${M}/fat`;
const FAT_ROWS = 40_000;

/** RFC 4180 reader: quoted fields may hold commas, doubled quotes and line breaks; records end in CRLF. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let i = 0;
  let quoted = false;
  while (i < text.length) {
    const c = text[i] as string;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i += 2; continue; }
      if (c === '"') { quoted = false; i++; continue; }
      field += c;
      i++;
      continue;
    }
    if (c === '"' && field === '') { quoted = true; i++; continue; }
    if (c === ',') { row.push(field); field = ''; i++; continue; }
    if (c === '\r' && text[i + 1] === '\n') { row.push(field); rows.push(row); row = []; field = ''; i += 2; continue; }
    field += c;
    i++;
  }
  if (field !== '' || row.length > 0) throw new Error('CSV does not end with CRLF');
  return rows;
}

interface Backend {
  name: string;
  setup(): Promise<string | null>;
  teardown(): Promise<void>;
}

function contract(backend: Backend): void {
  describe(`api export - ${backend.name}`, function () {
    this.timeout(60_000);
    let config: Config;
    let server: RunningServer;
    let client: MqttClient;
    let base: string;
    let url: string;
    let admin: string;
    const analyst = roleToken('ana', ['analyst']);
    const plc = roleToken('plc1', ['plc']);
    const t0 = Math.floor(Date.now() / 1000) * 1000 - 30 * MIN + 7;
    const from = t0 - 1;
    const to = t0 + 1000;
    const bulkFrom = t0 + 10 * MIN;
    const iso = (ms: number): string => new Date(ms).toISOString();

    function get(path: string, token: string | null = admin, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<Response> {
      return fetch(`${base}${path}`, { headers: { ...(token !== null ? { authorization: `Bearer ${token}` } : {}), ...headers }, ...(signal ? { signal } : {}) });
    }
    const code = async (res: Response): Promise<unknown> => ((await res.json()) as { error?: { code?: string } }).error?.code;
    /** Sessions of this server holding an export cursor. */
    const exportSessions = async (): Promise<number> => (await query<{ n: number }>(url,
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'uns-bridge' AND (query LIKE 'FETCH%' OR query LIKE 'DECLARE uns_export%')"))[0]?.n ?? -1;

    before(async () => {
      config = testConfig(await backend.setup());
      server = await startTestServer(config);
      url = server.databaseUrl;
      base = `http://127.0.0.1:${server.httpPort}`;
      const login = await fetch(`${base}/api/v1/auth/login`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ADMIN),
      });
      admin = ((await login.json()) as { access_token: string }).access_token;
      client = await connect(server.mqttPort);
      const env = (value: string, t: number, extra = ''): string => `{"value": ${value}, "timestamp": ${t}${extra}}`;
      await publish(client, `${M}/note`, env(JSON.stringify('a,b "c"\nd'), t0));
      await publish(client, `${M}/note`, env('"plain"', t0 + 1));
      await publish(client, `${M}/obj`, env('{"x": 1, "y": "z,w"}', t0 + 2));
      await publish(client, `${M}/big`, env(BIG, t0 + 3));
      await publish(client, `${M}/flag`, env('true', t0 + 4, ', "quality": "uncertain"'));
      await publish(client, TEMP, env('21.5', t0 + 5));
      const codec = sparkplugPayload.get('spBv1.0');
      await publish(client, 'spBv1.0/plant1/NBIRTH/edge1', Buffer.from(codec!.encodePayload({
        timestamp: t0 + 6, seq: 0,
        metrics: [{ name: 'bdSeq', type: 'Int64', value: 0 }, { name: 'Temperature', type: 'Double', value: 40.5 }],
      })));
      // Bulk rows straight into the store: enough to outrun every socket buffer between server and client.
      const id = (await query<{ id: number }>(url, "INSERT INTO topics (name, route, unit) VALUES ($1, 'catch-all', 'l/min') RETURNING id", [BULK]))[0]!.id;
      await query(url, `INSERT INTO samples (time, topic_id, v_num)
        SELECT to_timestamp(($1::float8 + g) / 1000), $2, g FROM generate_series(0, $3::int - 1) g`, [bulkFrom, id, BULK_ROWS]);
      const fat = (await query<{ id: number }>(url, "INSERT INTO topics (name, route) VALUES ($1, 'catch-all') RETURNING id", [FAT]))[0]!.id;
      await query(url, `INSERT INTO samples (time, topic_id, v_text)
        SELECT to_timestamp(($1::float8 + g) / 1000), $2, repeat('x', 1000) FROM generate_series(0, $3::int - 1) g`, [bulkFrom, fat, FAT_ROWS]);
    });

    after(async () => {
      client?.end(true);
      await server?.stop();
      await backend.teardown();
      if (config) cleanup(config);
    });

    it('streams CSV with a header, RFC 4180 quoting, exact big integers and the file name', async () => {
      const res = await get(`/api/v1/export.csv?from=${iso(from)}&to=${to}`);
      expect(res.status).to.equal(200);
      expect(res.headers.get('content-type')).to.match(/^text\/csv/);
      const name = (ms: number): string => iso(ms).replace(/[-:]/g, '');
      expect(res.headers.get('content-disposition')).to.equal(`attachment; filename="uns-export-${name(from)}-${name(to)}.csv"`);
      const text = await res.text();
      expect(text).to.contain(`,"a,b ""c""\nd",`);
      expect(text).to.contain(`,"{""x"": 1, ""y"": ""z,w""}",`);
      expect(parseCsv(text)).to.deep.equal([
        ['time', 'topic', 'value', 'quality', 'unit'],
        [iso(t0), `${M}/note`, 'a,b "c"\nd', 'good', ''],
        [iso(t0 + 1), `${M}/note`, 'plain', 'good', ''],
        [iso(t0 + 2), `${M}/obj`, '{"x": 1, "y": "z,w"}', 'good', ''],
        [iso(t0 + 3), `${M}/big`, BIG, 'good', ''],
        [iso(t0 + 4), `${M}/flag`, 'true', 'uncertain', ''],
        [iso(t0 + 5), TEMP, '21.5', 'good', '°C'],
        [iso(t0 + 6), SPB, '40.5', 'good', ''],
      ]);
    });

    it('streams NDJSON for Accept: application/x-ndjson (or format=ndjson), values as JSON', async () => {
      const res = await get(`/api/v1/export.csv?from=${from}&to=${to}&filter=${encodeURIComponent(`${M}/#`)}`, admin, { accept: 'application/x-ndjson' });
      expect(res.status).to.equal(200);
      expect(res.headers.get('content-type')).to.match(/^application\/x-ndjson/);
      expect(res.headers.get('content-disposition')).to.match(/filename="uns-export-\d{8}T\d{6}\.\d{3}Z-\d{8}T\d{6}\.\d{3}Z\.ndjson"$/);
      const text = await res.text();
      expect(text.endsWith('\n')).to.equal(true);
      const lines = text.trimEnd().split('\n');
      expect(lines[3]).to.equal(`{"time":"${iso(t0 + 3)}","topic":"${M}/big","value":${BIG},"quality":"good","unit":null}`);
      expect(lines.map((l) => JSON.parse(l) as unknown)).to.deep.equal([
        { time: iso(t0), topic: `${M}/note`, value: 'a,b "c"\nd', quality: 'good', unit: null },
        { time: iso(t0 + 1), topic: `${M}/note`, value: 'plain', quality: 'good', unit: null },
        { time: iso(t0 + 2), topic: `${M}/obj`, value: { x: 1, y: 'z,w' }, quality: 'good', unit: null },
        { time: iso(t0 + 3), topic: `${M}/big`, value: Number(BIG), quality: 'good', unit: null },
        { time: iso(t0 + 4), topic: `${M}/flag`, value: true, quality: 'uncertain', unit: null },
      ]);
      const same = await get(`/api/v1/export?from=${from}&to=${to}&filter=${encodeURIComponent(`${M}/#`)}&format=ndjson`);
      expect(await same.text()).to.equal(text);
    });

    it('exports only topics inside the caller\'s read permissions', async () => {
      const ana = parseCsv(await (await get(`/api/v1/export.csv?from=${from}&to=${to}`, analyst)).text());
      expect(ana.map((r) => r[1])).to.include(TEMP).and.not.include(SPB);
      const none = await get(`/api/v1/export.csv?from=${from}&to=${to}`, plc);
      expect(none.status).to.equal(200);
      expect(await none.text()).to.equal('time,topic,value,quality,unit\r\n');
    });

    it('streams a large export completely, in order, without a row limit', async () => {
      const res = await get(`/api/v1/export.csv?filter=${encodeURIComponent(BULK)}&from=${bulkFrom}&to=${bulkFrom + BULK_ROWS}`);
      expect(res.status).to.equal(200);
      const reader = (res.body as ReadableStream<Uint8Array>).getReader();
      const dec = new TextDecoder();
      let rest = '';
      let n = -1; // the header
      let last = -1;
      let chunks = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        chunks++;
        const lines = (rest + dec.decode(value, { stream: true })).split('\r\n');
        rest = lines.pop() as string;
        for (const l of lines) {
          if (n >= 0) {
            const v = Number(l.split(',')[2]);
            if (v !== last + 1) throw new Error(`row ${n}: value ${v} after ${last}`);
            last = v;
          }
          n++;
        }
      }
      expect(rest).to.equal('');
      expect(n).to.equal(BULK_ROWS);
      expect(chunks).to.be.greaterThan(10);
    });

    it('holds the cursor while the client does not read (back-pressure), caps concurrent exports, and ends the query when the client leaves', async () => {
      const path = `/api/v1/export.csv?filter=${encodeURIComponent(FAT)}&from=${bulkFrom}&to=${bulkFrom + FAT_ROWS}`;
      const stalled = [new AbortController(), new AbortController()];
      // Headers arrive; the bodies are never read.
      const responses = await Promise.all(stalled.map((ac) => get(path, admin, {}, ac.signal)));
      expect(responses.map((r) => r.status)).to.deep.equal([200, 200]);
      // Both exports stay parked on their cursors: the server does not read ahead into memory (without
      // back-pressure, 40 MB each would be buffered and the queries done well within this time).
      for (let i = 0; i < 6; i++) {
        // Time as input: the exports must still be parked after this long.
        await new Promise((r) => setTimeout(r, 250));
        expect(await exportSessions(), `after ${(i + 1) * 250} ms`).to.equal(2);
      }
      const third = await get(path);
      expect(third.status).to.equal(429);
      expect(third.headers.get('retry-after')).to.match(/^\d+$/);
      expect(await code(third)).to.equal('UNS_ERR_RATE_LIMITED');
      for (const ac of stalled) ac.abort();
      await waitFor(async () => (await exportSessions()) === 0, 10_000, 'export sessions to end');
      // The server carries on: a new export runs to the end.
      const again = await get(`/api/v1/export.csv?from=${from}&to=${to}`);
      expect(again.status).to.equal(200);
      expect(parseCsv(await again.text())).to.have.length(8);
    });

    it('refuses bad requests: 401 without valid credentials, 400 for a bad filter or range', async () => {
      const expired = roleToken('ana', ['analyst'], -600);
      for (const token of [null, expired, 'garbage']) {
        const r = await get('/api/v1/export.csv', token);
        expect([r.status, await code(r)]).to.deep.equal([401, 'UNS_ERR_UNAUTHENTICATED']);
      }
      const f = await get(`/api/v1/export.csv?filter=${encodeURIComponent('acme/#/x')}`);
      expect([f.status, await code(f)]).to.deep.equal([400, 'UNS_ERR_FILTER_INVALID']);
      for (const q of [`from=${to}&to=${from}`, 'from=soon', 'format=xml']) {
        const r = await get(`/api/v1/export.csv?${q}`);
        expect([r.status, await code(r)], q).to.deep.equal([400, 'UNS_ERR_BAD_REQUEST']);
      }
    });
  });
}

const external = new TestPostgres();
contract({
  name: `external PostgreSQL${external.timescale ? ' + TimescaleDB' : ''}`,
  async setup() { await external.start(); return external.createDatabase('api_export'); },
  async teardown() { await external.destroy(); },
});
contract({
  name: 'embedded PostgreSQL',
  async setup() { return null; },
  async teardown() { /* the server stops its own embedded PostgreSQL */ },
});
