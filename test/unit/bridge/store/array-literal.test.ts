import { expect } from 'chai';
import pg from 'pg';
import { numArray, textArray, boolArray } from '../../../../bridge/sinks/store/array-literal.js';

// node-pg's own array parser reads what PostgreSQL would: a literal that round-trips through it is what
// the server sees.
const parser = pg.types.getTypeParser as unknown as (oid: number) => (s: string) => unknown;
const parseText = parser(1009); // text[]
const parseBool = parser(1000); // bool[]
const parseFloat8 = parser(1022); // float8[]

describe('array literals', () => {
  it('writes numbers and NULLs', () => {
    expect(numArray([1, 2.5, null, -3e-7])).to.equal('{1,2.5,NULL,-3e-7}');
    expect(parseFloat8(numArray([1, 2.5, null]))).to.deep.equal([1, 2.5, null]);
    expect(numArray(['9223372036854775807'])).to.equal('{9223372036854775807}');
  });

  it('quotes every text element and escapes quotes and backslashes', () => {
    const values = ['plain', 'with "quotes"', 'back\\slash', '{braces},commas', 'NULL', '', ' spaced ', null, 'ünïcödé 😀'];
    expect(parseText(textArray(values))).to.deep.equal(values);
  });

  it('writes booleans', () => {
    expect(parseBool(boolArray([true, false, null]))).to.deep.equal([true, false, null]);
  });
});
