/** CSV cells of the export: RFC 4180 quoting, and text cells a spreadsheet would run as formulas neutralised. */
import { expect } from 'chai';
import { csvField, csvText } from '../../../src/api/routes/export.js';

describe('export CSV cells', () => {
  it('quotes a field holding a comma, quote, CR or LF and doubles its quotes (RFC 4180 2.6, 2.7)', () => {
    expect(csvField('plain')).to.equal('plain');
    expect(csvField('a,b')).to.equal('"a,b"');
    expect(csvField('say "hi"')).to.equal('"say ""hi"""');
    expect(csvField('two\r\nlines')).to.equal('"two\r\nlines"');
  });

  it('prefixes text cells starting with = + - @ tab or CR with a quote, so no spreadsheet runs them', () => {
    for (const s of ['=HYPERLINK("http://x","y")', '+1+1', '-2+3', '@SUM(A1)', '\tcmd', '\rcmd']) {
      const cell = csvText(s);
      expect(cell.replace(/^"/, '').startsWith("'"), s).to.equal(true);
    }
    expect(csvText('=1,2')).to.equal(`"'=1,2"`);
    expect(csvText('acme/plant1/x')).to.equal('acme/plant1/x');
  });

  it('leaves numbers alone: a negative reading stays a number', () => {
    expect(csvField('-5.25')).to.equal('-5.25');
  });
});
