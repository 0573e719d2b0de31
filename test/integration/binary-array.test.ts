/**
 * The batch inserts send their columns as binary arrays: what PostgreSQL reads from each one (array_recv) is
 * checked here against a real server, element by element, NULLs, edge values and empty arrays included.
 */
import { expect } from 'chai';
import pg from 'pg';
import { TestPostgres } from '../helpers/postgres.js';
import { boolArray, float8Array, int4Array, int8Array, jsonbArray, textArray, timestamptzArray } from '../../bridge/sinks/store/binary-array.js';

describe('binary array parameters', function () {
  this.timeout(60_000);
  const server = new TestPostgres({ timescale: false });
  let c: pg.Client;

  before(async () => {
    await server.start();
    c = new pg.Client({ connectionString: server.url });
    await c.connect();
  });
  after(async () => {
    await c?.end().catch(() => undefined);
    await server.destroy();
  });

  /** The array as the server read it, sent back as text so nothing on the way back is binary. */
  async function roundTrip(param: Buffer, type: string): Promise<Array<string | null>> {
    const r = await c.query<{ v: string | null }>(`SELECT u::text AS v FROM unnest($1::${type}) WITH ORDINALITY AS x(u, i) ORDER BY i`, [param]);
    return r.rows.map((row) => row.v);
  }

  it('float8: values, NULLs, extremes and non-finite numbers', async () => {
    const values = [1, 2.5, null, -3e-7, 1.7976931348623157e308, 5e-324, -0, Number.NaN, Number.POSITIVE_INFINITY];
    expect(await roundTrip(float8Array(values), 'float8[]'))
      .to.deep.equal(['1', '2.5', null, '-3e-07', '1.7976931348623157e+308', '5e-324', '-0', 'NaN', 'Infinity']);
  });

  it('int4 and int8: signs, limits and decimal strings', async () => {
    expect(await roundTrip(int4Array([0, -1, 2147483647, -2147483648]), 'int4[]')).to.deep.equal(['0', '-1', '2147483647', '-2147483648']);
    expect(await roundTrip(int4Array(Int32Array.of(7, -7)), 'int4[]')).to.deep.equal(['7', '-7']);
    const big = Number.MAX_SAFE_INTEGER;
    expect(await roundTrip(int8Array([0, -1, big, -big, '4294967296', null, 4294967295]), 'int8[]'))
      .to.deep.equal(['0', '-1', String(big), String(-big), '4294967296', null, '4294967295']);
    expect(() => int8Array([2 ** 60])).to.throw(RangeError);
  });

  it('timestamptz: epoch microseconds, before and after 2000, to the microsecond (typed arrays too)', async () => {
    await c.query("SET TIME ZONE 'UTC'");
    const us = Float64Array.of(Date.UTC(2026, 11, 5, 13, 14, 15) * 1000 + 123_456, 0, Date.UTC(1999, 11, 31, 23, 59, 59) * 1000 + 999_999);
    expect(await roundTrip(timestamptzArray(us), 'timestamptz[]'))
      .to.deep.equal(['2026-12-05 13:14:15.123456+00', '1970-01-01 00:00:00+00', '1999-12-31 23:59:59.999999+00']);
    expect(() => timestamptzArray([1.5])).to.throw(RangeError);
  });

  it('bool', async () => {
    expect(await roundTrip(boolArray([true, false, null]), 'bool[]')).to.deep.equal(['true', 'false', null]);
  });

  it('text: quotes, backslashes, braces, control characters and multi-byte text kept exactly', async () => {
    const values = ['plain', 'with "quotes"', 'back\\slash', '{braces},commas', 'NULL', '', ' spaced ', null, 'ünïcödé 😀', 'tab\tnew\nline', 'x'.repeat(70_000)];
    expect(await roundTrip(textArray(values), 'text[]')).to.deep.equal(values);
  });

  it('jsonb: documents, with their escapes', async () => {
    const docs = ['{"a":1}', '"quoted \\" \\\\ \\n"', '[1,2,{"b":null}]', null, '12345678901234567890', '"😀"'];
    const back = await roundTrip(jsonbArray(docs), 'jsonb[]');
    expect(back.map((v) => (v === null ? null : JSON.parse(v)))).to.deep.equal(docs.map((d) => (d === null ? null : JSON.parse(d))));
  });

  it('empty arrays of every kind', async () => {
    for (const [buf, type] of [[float8Array([]), 'float8[]'], [int4Array([]), 'int4[]'], [int8Array([]), 'int8[]'], [timestamptzArray([]), 'timestamptz[]'],
      [boolArray([]), 'bool[]'], [textArray([]), 'text[]'], [jsonbArray([]), 'jsonb[]']] as const) {
      expect(await roundTrip(buf, type), type).to.deep.equal([]);
    }
  });

  it('a wrong element type is refused by the server, not misread', async () => {
    let err: Error | null = null;
    try { await roundTrip(float8Array([1]), 'int8[]'); } catch (e) { err = e as Error; }
    expect(err?.message).to.match(/wrong element type|element type/);
  });
});
