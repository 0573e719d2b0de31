import { expect } from 'chai';
import { classifyDbError, describeDbError, isTxConflict, type DbErrorClass } from '../../../src/core/db-errors.js';

const pgError = (code: string, message = 'x'): Error => Object.assign(new Error(message), { code });

/** SQLSTATE -> class: only errors about one row's data may ever make a row a rejection. */
const TABLE: ReadonlyArray<readonly [code: string, cls: DbErrorClass, what: string]> = [
  ['22P02', 'row', 'invalid text representation'],
  ['22P05', 'row', 'untranslatable character (lone surrogate in jsonb)'],
  ['22021', 'row', 'character not in repertoire'],
  ['22003', 'row', 'numeric value out of range'],
  ['22008', 'row', 'datetime field overflow'],
  ['23502', 'row', 'not-null violation'],
  ['23503', 'row', 'foreign key violation'],
  ['23514', 'row', 'check violation'],
  ['54000', 'row', 'program limit exceeded (row too big)'],
  ['08006', 'transient', 'connection failure'],
  ['08001', 'transient', 'unable to connect'],
  ['53100', 'transient', 'disk full'],
  ['53200', 'transient', 'out of memory'],
  ['53300', 'transient', 'too many connections'],
  ['57P01', 'transient', 'admin shutdown'],
  ['57P03', 'transient', 'cannot connect now (starting up)'],
  ['57014', 'transient', 'query cancelled (statement timeout)'],
  ['40001', 'transient', 'serialization failure'],
  ['40P01', 'transient', 'deadlock'],
  ['58030', 'transient', 'I/O error'],
  ['55P03', 'transient', 'lock not available'],
  ['42501', 'permanent', 'insufficient privilege (REVOKE INSERT)'],
  ['42P01', 'permanent', 'undefined table'],
  ['42703', 'permanent', 'undefined column'],
  ['28P01', 'permanent', 'invalid password'],
  ['3D000', 'permanent', 'database does not exist'],
  ['25006', 'permanent', 'read-only transaction (standby)'],
  ['57P04', 'permanent', 'database dropped'],
  ['54001', 'permanent', 'statement too complex'],
  ['0A000', 'permanent', 'feature not supported'],
  ['XX000', 'permanent', 'internal error'],
  ['P0001', 'permanent', 'raised by a trigger'],
  ['ZZ999', 'permanent', 'unknown class'],
];

describe('database error classifier', () => {
  for (const [code, cls, what] of TABLE) {
    it(`classifies ${code} (${what}) as ${cls}`, () => {
      expect(classifyDbError(pgError(code))).to.equal(cls);
    });
  }

  it('classifies socket errors and node-postgres connection failures as transient', () => {
    expect(classifyDbError(pgError('ECONNREFUSED'))).to.equal('transient');
    expect(classifyDbError(pgError('ECONNRESET'))).to.equal('transient');
    expect(classifyDbError(pgError('ENOENT'))).to.equal('transient');
    expect(classifyDbError(new Error('timeout exceeded when trying to connect'))).to.equal('transient');
    expect(classifyDbError(new Error('Connection terminated unexpectedly'))).to.equal('transient');
  });

  it('never blames the data for an error it cannot explain', () => {
    expect(classifyDbError(new Error('something odd'))).to.equal('permanent');
    expect(classifyDbError(null)).to.equal('permanent');
    expect(classifyDbError('a string')).to.equal('permanent');
  });

  it('tells a transaction that lost a race (run it again) from other transient errors', () => {
    expect(isTxConflict(pgError('40P01'))).to.equal(true);
    expect(isTxConflict(pgError('40001'))).to.equal(true);
    expect(isTxConflict(pgError('08006'))).to.equal(false);
    expect(isTxConflict(new Error('x'))).to.equal(false);
  });

  it('describes an error with its SQLSTATE first', () => {
    expect(describeDbError(pgError('42501', 'permission denied for table samples'))).to.equal('42501 permission denied for table samples');
    expect(describeDbError(new Error('plain'))).to.equal('plain');
  });
});
