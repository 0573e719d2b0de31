/**
 * The read API over real HTTP against real servers: the namespace tree, single topics, latest values and
 * history (raw with keyset paging, aggregated per bucket). One contract suite, run against PostgreSQL +
 * TimescaleDB (continuous aggregates, with their watermark and invalidations) and against the embedded
 * plain PostgreSQL (date_bin), with the same hand-checkable expectations. Data arrives over MQTT QoS 1.
 */
import { expect } from 'chai';
import type { MqttClient } from 'mqtt';
import sparkplugPayload from 'sparkplug-payload';
import { TestPostgres, query } from '../helpers/postgres.js';
import { testConfig, startTestServer, connect, publish, cleanup, ADMIN, roleToken } from '../helpers/server.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';

const MIN = 60_000;
const HOUR = 3_600_000;

const TEMP = 'acme/plant1/packaging/line1/filler/temperature';
const COUNT = 'acme/plant1/packaging/line1/filler/count';
const STATE = 'acme/plant1/packaging/line1/capper/state';
const ENERGY = 'acme/plant1/utilities/line1/meter/energy_total';
const KETTLE = 'acme/plant2/brewing/line2/kettle/temperature';
// Catch-all route: no deadband, so every value is stored.
const FLOW = 'acme/plant1/utilities/line3/meter/flow';
const PULSES = 'acme/plant1/utilities/line3/meter/pulses';
const BIG = '123456789012345678901234567890';
const SPB = 'spBv1.0/plant1/edge1/Temperature';

interface Point { t: number; v: number }
type Body = Record<string, unknown>;
interface Agg { timestamp: string; avg: number; min: number; max: number; count: number; first: number; last: number }

/** What the API must answer, computed here independently of any SQL. */
function expectedBuckets(points: readonly Point[], width: number, fromMs: number, toMs: number): Agg[] {
  const from = Math.floor(fromMs / width) * width;
  const to = Math.ceil(toMs / width) * width;
  const groups = new Map<number, Point[]>();
  for (const p of [...points].sort((a, b) => a.t - b.t)) {
    if (p.t < from || p.t >= to) continue;
    const b = Math.floor(p.t / width) * width;
    const g = groups.get(b) ?? [];
    g.push(p);
    groups.set(b, g);
  }
  return [...groups.entries()].sort((a, b) => a[0] - b[0]).map(([b, g]) => ({
    timestamp: new Date(b).toISOString(),
    avg: g.reduce((s, p) => s + p.v, 0) / g.length,
    min: Math.min(...g.map((p) => p.v)),
    max: Math.max(...g.map((p) => p.v)),
    count: g.length,
    first: (g[0] as Point).v,
    last: (g[g.length - 1] as Point).v,
  }));
}

function expectBuckets(got: Agg[], want: Agg[], what: string): void {
  expect(got.map((b) => b.timestamp), `${what}: bucket starts`).to.deep.equal(want.map((b) => b.timestamp));
  got.forEach((b, i) => {
    const w = want[i] as Agg;
    expect({ ...b, avg: 0 }, `${what} @ ${w.timestamp}`).to.deep.equal({ ...w, avg: 0 });
    expect(b.avg, `${what} avg @ ${w.timestamp}`).to.be.closeTo(w.avg, 1e-9 * Math.max(1, Math.abs(w.avg)));
  });
}

interface Backend {
  name: string;
  timescale: boolean;
  setup(): Promise<string | null>;
  teardown(): Promise<void>;
}

function contract(backend: Backend): void {
  describe(`api read - ${backend.name}`, function () {
    this.timeout(60_000);
    let config: Config;
    let server: RunningServer;
    let client: MqttClient;
    let base: string;
    let url: string;
    let admin: string;
    const analyst = roleToken('ana', ['analyst']);
    const plc = roleToken('plc1', ['plc']);

    const now = Date.now();
    // Four hours back, on the hour: every bucket width below starts on an aligned edge there.
    const B = Math.floor(now / HOUR) * HOUR - 4 * HOUR;
    const flow: Point[] = Array.from({ length: 120 }, (_, i) => ({ t: B + i * 97_000 + 13, v: Math.round((Math.sin(i) * 50 + i) * 1000) / 1000 }));
    // Newer than anything materialised when the aggregates are refreshed below.
    const tail: Point[] = Array.from({ length: 5 }, (_, i) => ({ t: now - 10 * MIN + i * 61_000, v: 100 + i }));
    // Four samples at each of five instants: paging must still return each exactly once.
    // Four readings a millisecond apart each second (one topic cannot hold two samples of one instant).
    const pulses: Point[] = Array.from({ length: 20 }, (_, i) => ({ t: B + Math.floor(i / 4) * 1000 + (i % 4), v: i }));
    const published: Point[] = [];

    async function get(path: string, token: string | null = admin, headers: Record<string, string> = {}): Promise<{ status: number; body: Body; text: string }> {
      const res = await fetch(`${base}${path}`, { headers: { ...(token !== null ? { authorization: `Bearer ${token}` } : {}), ...headers } });
      const text = await res.text();
      return { status: res.status, body: text ? (JSON.parse(text) as Body) : {}, text };
    }
    const code = (b: Body): unknown => (b['error'] as { code?: string } | undefined)?.code;
    const send = (topic: string, points: readonly Point[]): Promise<unknown[]> =>
      Promise.all(points.map((p) => publish(client, topic, JSON.stringify({ value: p.v, timestamp: p.t }))));
    async function buckets(bucket: string, fromMs: number, toMs: number, limit = 10_000): Promise<Agg[]> {
      const out: Agg[] = [];
      let cursor: string | null = null;
      do {
        const r = await get(`/api/v1/datapoints/history?topic=${encodeURIComponent(FLOW)}&from=${fromMs}&to=${toMs}&bucket=${bucket}` +
          `&agg=avg,min,max,count,first,last&limit=${limit}${cursor ? `&cursor=${cursor}` : ''}`);
        expect(r.status, r.text).to.equal(200);
        out.push(...(r.body['datapoints'] as Agg[]));
        cursor = r.body['next_cursor'] as string | null;
      } while (cursor !== null);
      return out;
    }
    const refresh = async (): Promise<void> => {
      await query(url, "CALL refresh_continuous_aggregate('samples_1m', NULL, NULL)");
      await query(url, "CALL refresh_continuous_aggregate('samples_1h', NULL, NULL)");
    };

    before(async () => {
      config = testConfig(await backend.setup());
      server = await startTestServer(config);
      expect(server.store.timescale.enabled).to.equal(backend.timescale);
      url = server.databaseUrl;
      base = `http://127.0.0.1:${server.httpPort}`;
      const login = await fetch(`${base}/api/v1/auth/login`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(ADMIN),
      });
      admin = ((await login.json()) as { access_token: string }).access_token;
      client = await connect(server.mqttPort);
      await publish(client, TEMP, JSON.stringify({ value: 21.5 }));
      await publish(client, COUNT, '1234');
      await publish(client, STATE, 'RUNNING');
      await publish(client, ENERGY, `{"value": ${BIG}}`);
      await publish(client, KETTLE, JSON.stringify({ value: 64 }));
      const codec = sparkplugPayload.get('spBv1.0');
      await publish(client, 'spBv1.0/plant1/NBIRTH/edge1', Buffer.from(codec!.encodePayload({
        timestamp: Date.now(), seq: 0,
        metrics: [{ name: 'bdSeq', type: 'Int64', value: 0 }, { name: 'Temperature', type: 'Double', value: 40.5 }],
      })));
      await send(FLOW, flow);
      await send(PULSES, pulses);
      published.push(...flow);
      if (backend.timescale) await refresh();
      await send(FLOW, tail);
      published.push(...tail);
    });

    after(async () => {
      client?.end(true);
      await server?.stop();
      await backend.teardown();
      if (config) cleanup(config);
    });

    describe('GET /api/v1/topics', () => {
      it('answers the tree one level below the filter prefix by default, with child and topic counts', async () => {
        const r = await get('/api/v1/topics');
        expect(r.status).to.equal(200);
        expect(r.body).to.include({ filter: '#', depth: 1 });
        const root = r.body['tree'] as Body;
        expect(root).to.include({ name: '', path: '', child_count: 2 });
        const kids = root['children'] as Body[];
        expect(kids.map((k) => [k['name'], k['path'], k['children']])).to.deep.equal([['acme', 'acme', []], ['spBv1.0', 'spBv1.0', []]]);
        // Cut off by depth, still counted.
        expect(kids[0]).to.include({ child_count: 2, topic_count: 7 });
        expect(kids[1]).to.include({ child_count: 1, topic_count: 1 });
        expect(root['topic_count']).to.equal(8);
      });

      it('walks depth levels below the fixed prefix and carries topic metadata on topic nodes', async () => {
        const r = await get(`/api/v1/topics?filter=${encodeURIComponent('acme/plant1/packaging/#')}&depth=3`);
        expect(r.status).to.equal(200);
        const root = r.body['tree'] as Body;
        expect(root).to.include({ name: 'packaging', path: 'acme/plant1/packaging', child_count: 1, topic_count: 3 });
        const line = (root['children'] as Body[])[0] as Body;
        expect(line).to.include({ name: 'line1', child_count: 2 });
        const cells = line['children'] as Body[];
        expect(cells.map((c) => c['name'])).to.deep.equal(['capper', 'filler']);
        const filler = cells[1] as Body;
        const tags = filler['children'] as Body[];
        expect(tags.map((t) => [t['name'], t['path'], t['child_count']])).to.deep.equal([['count', COUNT, 0], ['temperature', TEMP, 0]]);
        const temp = (tags[1] as Body)['topic'] as Body;
        expect(temp).to.include({ unit: '°C', route: 'temperature', schema: 'measurement', last_value: 21.5, quality: 'good' });
        expect(temp['description'], "the route's description from topics.yaml").to.equal('Process and equipment temperatures.');
        expect(temp['levels']).to.deep.equal({ enterprise: 'acme', site: 'plant1', area: 'packaging', line: 'line1', cell: 'filler' });
        expect(Date.parse(temp['first_seen'] as string)).to.be.within(now - MIN, Date.now());
        expect(Date.parse(temp['last_seen'] as string)).to.be.within(now - MIN, Date.now());
        expect(filler).not.to.have.property('topic');
        // depth 0: the prefix node alone, its children counted.
        const d0 = await get(`/api/v1/topics?filter=${encodeURIComponent('acme/plant1/+/line1/#')}&depth=0`);
        expect(d0.body['tree']).to.deep.equal({ name: 'plant1', path: 'acme/plant1', children: [], child_count: 2, topic_count: 4 });
      });

      it('leaves out topics outside the caller\'s read permissions, in nodes and counts', async () => {
        const a = await get('/api/v1/topics?depth=1', analyst);
        expect(a.status).to.equal(200);
        const root = a.body['tree'] as Body;
        expect(root).to.include({ child_count: 1, topic_count: 7 });
        expect((root['children'] as Body[]).map((k) => k['name'])).to.deep.equal(['acme']);
        const p = await get('/api/v1/topics?depth=5', plc);
        expect(p.body['tree']).to.deep.equal({ name: '', path: '', child_count: 0, topic_count: 0, children: [] });
      });

      it('refuses a malformed filter with 400 UNS_ERR_FILTER_INVALID and a bad depth with 400 UNS_ERR_BAD_REQUEST', async () => {
        const r = await get(`/api/v1/topics?filter=${encodeURIComponent('acme/#/x')}`);
        expect([r.status, code(r.body)]).to.deep.equal([400, 'UNS_ERR_FILTER_INVALID']);
        const d = await get('/api/v1/topics?depth=-1');
        expect([d.status, code(d.body)]).to.deep.equal([400, 'UNS_ERR_BAD_REQUEST']);
      });
    });

    describe('GET /api/v1/topics/<topic>', () => {
      it('answers one topic by path or URL-encoded, keeping big integers exact', async () => {
        for (const path of [TEMP, encodeURIComponent(TEMP)]) {
          const r = await get(`/api/v1/topics/${path}`);
          expect(r.status).to.equal(200);
          expect(r.body).to.include({ topic: TEMP, unit: '°C', route: 'temperature', last_value: 21.5 });
        }
        const e = await get(`/api/v1/topics/${ENERGY}`);
        expect(e.text).to.contain(`"last_value":${BIG}`);
      });

      it('answers 404 alike for an absent topic and one outside the caller\'s permissions', async () => {
        const absent = await get('/api/v1/topics/acme/plant1/nothing/here');
        const hidden = await get(`/api/v1/topics/${TEMP}`, plc);
        expect([absent.status, code(absent.body)]).to.deep.equal([404, 'UNS_ERR_NOT_FOUND']);
        expect([hidden.status, code(hidden.body)]).to.deep.equal([404, 'UNS_ERR_NOT_FOUND']);
        expect((await get(`/api/v1/topics/${SPB}`, analyst)).status).to.equal(404);
        expect((await get(`/api/v1/topics/${SPB}`)).status).to.equal(200);
      });
    });

    describe('GET /api/v1/datapoints/latest', () => {
      it('answers the current value of every readable topic under the filter', async () => {
        const r = await get(`/api/v1/datapoints/latest?filter=${encodeURIComponent('acme/plant1/packaging/#')}`);
        expect(r.status).to.equal(200);
        const dps = r.body['datapoints'] as Body[];
        expect(dps.map((d) => [d['topic'], d['value'], d['quality'], d['unit']])).to.deep.equal([
          [STATE, 'RUNNING', 'good', null],
          [COUNT, 1234, 'good', null],
          [TEMP, 21.5, 'good', '°C'],
        ]);
        const big = await get(`/api/v1/datapoints/latest?filter=${encodeURIComponent(ENERGY)}`);
        expect(big.text).to.contain(`"value":${BIG}`);
      });

      it('never shows a topic outside the caller\'s permissions', async () => {
        const all = ((await get('/api/v1/datapoints/latest')).body['datapoints'] as Body[]).map((d) => d['topic']);
        expect(all).to.include(SPB);
        const ana = ((await get('/api/v1/datapoints/latest', analyst)).body['datapoints'] as Body[]).map((d) => d['topic']);
        expect(ana).to.include(TEMP).and.not.include(SPB);
        expect(ana.every((t) => String(t).startsWith('acme/'))).to.equal(true);
        expect((await get('/api/v1/datapoints/latest', plc)).body['datapoints']).to.deep.equal([]);
      });

      it('refuses a malformed filter with 400 UNS_ERR_FILTER_INVALID', async () => {
        const r = await get(`/api/v1/datapoints/latest?filter=${encodeURIComponent('acme/pl+nt/#')}`);
        expect([r.status, code(r.body)]).to.deep.equal([400, 'UNS_ERR_FILTER_INVALID']);
      });
    });

    describe('GET /api/v1/datapoints/history (raw)', () => {
      it('pages through every sample exactly once, oldest first, with an opaque cursor', async () => {
        const seen: Body[] = [];
        let cursor: string | null = null;
        let pages = 0;
        do {
          const r = await get(`/api/v1/datapoints/history?topic=${FLOW}&from=${new Date(B).toISOString()}&to=${now + MIN}&limit=17${cursor ? `&cursor=${cursor}` : ''}`);
          expect(r.status, r.text).to.equal(200);
          expect(r.body).to.include({ topic: FLOW, unit: null });
          seen.push(...(r.body['datapoints'] as Body[]));
          cursor = r.body['next_cursor'] as string | null;
          pages++;
        } while (cursor !== null);
        expect(pages).to.equal(Math.ceil(published.length / 17));
        const want = [...published].sort((a, b) => a.t - b.t);
        expect(seen.map((d) => [d['timestamp'], d['value'], d['quality']])).to.deep.equal(want.map((p) => [new Date(p.t).toISOString(), p.v, 'good']));
      });

      it('returns rows close in time exactly once across page boundaries', async () => {
        for (const limit of [1, 3, 4, 7]) {
          const values: number[] = [];
          let cursor: string | null = null;
          do {
            const r = await get(`/api/v1/datapoints/history?topic=${PULSES}&from=${B}&to=${B + MIN}&limit=${limit}${cursor ? `&cursor=${cursor}` : ''}`);
            expect(r.status, r.text).to.equal(200);
            values.push(...(r.body['datapoints'] as Body[]).map((d) => d['value'] as number));
            cursor = r.body['next_cursor'] as string | null;
          } while (cursor !== null);
          expect([...values].sort((a, b) => a - b), `limit ${limit}`).to.deep.equal(pulses.map((p) => p.v));
        }
      });

      it('defaults to the last hour and keeps big integers exact', async () => {
        const r = await get(`/api/v1/datapoints/history?topic=${ENERGY}`);
        expect(r.status).to.equal(200);
        expect(r.text).to.contain(`"value":${BIG}`);
        expect(Date.parse(r.body['to'] as string) - Date.parse(r.body['from'] as string)).to.equal(HOUR);
        const f = await get(`/api/v1/datapoints/history?topic=${FLOW}`);
        const [lo, hi] = [Date.parse(f.body['from'] as string), Date.parse(f.body['to'] as string)];
        const want = published.filter((p) => p.t >= lo && p.t < hi).sort((a, b) => a.t - b.t).map((p) => p.v);
        expect(want).to.include.members(tail.map((p) => p.v));
        expect((f.body['datapoints'] as Body[]).map((d) => d['value'])).to.deep.equal(want);
      });
    });

    describe('GET /api/v1/datapoints/history (buckets)', () => {
      const from = (): number => B;
      const to = (): number => now + MIN;

      for (const [bucket, width] of [['1m', MIN], ['5m', 5 * MIN], ['1h', HOUR], ['1d', 24 * HOUR]] as const) {
        it(`computes ${bucket} avg/min/max/count/first/last equal to the hand computation`, async () => {
          expectBuckets(await buckets(bucket, from(), to()), expectedBuckets(published, width, from(), to()), bucket);
        });
      }

      it('pages buckets with a cursor and answers only the asked aggregates (avg by default)', async () => {
        const all = await buckets('5m', from(), to());
        expectBuckets(await buckets('5m', from(), to(), 4), all, '5m paged by 4');
        const r = await get(`/api/v1/datapoints/history?topic=${FLOW}&from=${from()}&to=${to()}&bucket=1h`);
        const first = (r.body['datapoints'] as Body[])[0] as Body;
        expect(Object.keys(first).sort()).to.deep.equal(['avg', 'timestamp']);
        expect(r.body).to.include({ bucket: '1h' });
        expect(r.body['agg']).to.deep.equal(['avg']);
        const mc = await get(`/api/v1/datapoints/history?topic=${FLOW}&from=${from()}&to=${to()}&bucket=1h&agg=max,count`);
        expect(Object.keys((mc.body['datapoints'] as Body[])[0] as Body).sort()).to.deep.equal(['count', 'max', 'timestamp']);
      });

      if (backend.timescale) {
        it('reads materialised buckets from the continuous aggregates, and raw samples wherever they are stale', async () => {
          const target = flow[10] as Point;
          const minute = Math.floor(target.t / MIN) * MIN;
          const hour = Math.floor(target.t / HOUR) * HOUR;
          // A marker only the materialisation holds: seen through the API, the cagg is in use.
          const mark = async (view: string, bucketMs: number, col: 'max' | 'min', value: number): Promise<void> => {
            const mat = (await query<{ t: string }>(url, `SELECT format('%I.%I', h.schema_name, h.table_name) AS t
              FROM _timescaledb_catalog.continuous_agg ca JOIN _timescaledb_catalog.hypertable h ON h.id = ca.mat_hypertable_id
              WHERE ca.user_view_name = $1`, [view]))[0]!.t;
            await query(url, `UPDATE ${mat} SET ${col} = $1 WHERE bucket = to_timestamp($2 / 1000.0)
              AND topic_id = (SELECT id FROM topics WHERE name = $3)`, [value, bucketMs, FLOW]);
          };
          await mark('samples_1m', minute, 'max', 12345.5);
          await mark('samples_1h', hour, 'min', -999.5);
          expect(((await buckets('1m', minute, minute + MIN))[0] as Agg).max).to.equal(12345.5);
          expect(((await buckets('5m', minute, minute + MIN))[0] as Agg).max).to.equal(12345.5);
          expect(((await buckets('1h', hour, hour + HOUR))[0] as Agg).min).to.equal(-999.5);
          // A late sample into materialised time invalidates it: that range now comes from raw samples.
          const late = { t: target.t + 1_000, v: -7.25 };
          await send(FLOW, [late]);
          published.push(late);
          for (const [bucket, width] of [['1m', MIN], ['5m', 5 * MIN], ['1h', HOUR], ['1d', 24 * HOUR]] as const) {
            expectBuckets(await buckets(bucket, from(), to()), expectedBuckets(published, width, from(), to()), `${bucket} after a late sample`);
          }
          // Refreshed again, the aggregates serve it and agree.
          await refresh();
          for (const [bucket, width] of [['5m', 5 * MIN], ['1h', HOUR]] as const) {
            expectBuckets(await buckets(bucket, from(), to()), expectedBuckets(published, width, from(), to()), `${bucket} after refresh`);
          }
        });
      }
    });

    describe('bad requests', () => {
      const h = (q: string): string => `/api/v1/datapoints/history?topic=${FLOW}&${q}`;

      it('answers 401 UNS_ERR_UNAUTHENTICATED to a missing, expired or garbage token on every read endpoint', async () => {
        const expired = roleToken('ana', ['analyst'], -600);
        for (const path of ['/api/v1/topics', `/api/v1/topics/${TEMP}`, '/api/v1/datapoints/latest', h('')]) {
          for (const token of [null, expired, 'garbage.token.here']) {
            const r = await get(path, token);
            expect([r.status, code(r.body)], `${path} with ${token === null ? 'no token' : token.slice(0, 12)}`).to.deep.equal([401, 'UNS_ERR_UNAUTHENTICATED']);
          }
        }
      });

      it('answers 403 UNS_ERR_FORBIDDEN to history of a topic outside the caller\'s permissions', async () => {
        const r = await get(h(''), plc);
        expect([r.status, code(r.body)]).to.deep.equal([403, 'UNS_ERR_FORBIDDEN']);
        const s = await get(`/api/v1/datapoints/history?topic=${SPB}`, analyst);
        expect([s.status, code(s.body)]).to.deep.equal([403, 'UNS_ERR_FORBIDDEN']);
      });

      it('answers 400 UNS_ERR_BAD_REQUEST to bad ranges, limits, cursors, buckets and aggregates', async () => {
        for (const q of [
          `from=${now}&to=${now - 1000}`, // from after to
          `from=${now}&to=${now}`, // empty
          'from=2020-01-01T00:00:00Z&to=2021-06-01T00:00:00Z', // over 366 days
          'from=yesterday', 'limit=10001', 'limit=0', 'cursor=not-a-cursor!', `cursor=${Buffer.from('r1:x:1').toString('base64url')}`,
          'bucket=2m', 'bucket=1m&agg=median', 'agg=max', 'extra=1',
        ]) {
          const r = await get(h(q));
          expect([r.status, code(r.body)], q).to.deep.equal([400, 'UNS_ERR_BAD_REQUEST']);
        }
        const wild = await get('/api/v1/datapoints/history?topic=acme/%2B/x');
        expect([wild.status, code(wild.body)]).to.deep.equal([400, 'UNS_ERR_BAD_REQUEST']);
        const raw = await get(h('limit=2'));
        const bc = await get(h(`bucket=1m&cursor=${raw.body['next_cursor'] as string}`));
        expect([bc.status, code(bc.body)]).to.deep.equal([400, 'UNS_ERR_BAD_REQUEST']);
      });
    });
  });
}

const external = new TestPostgres();
contract({
  name: `external PostgreSQL${external.timescale ? ' + TimescaleDB' : ''}`,
  timescale: external.timescale,
  async setup() { await external.start(); return external.createDatabase('api_read'); },
  async teardown() { await external.destroy(); },
});
contract({
  name: 'embedded PostgreSQL (plain, date_bin)',
  timescale: false,
  async setup() { return null; },
  async teardown() { /* the server stops its own embedded PostgreSQL */ },
});
