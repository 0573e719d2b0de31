import { expect } from 'chai';
import { parseJsonExact, stringifyJson } from '../../../../bridge/decode/json-exact.js';
import type { JsonParseResult } from '../../../../bridge/decode/json-exact.js';
import type { JsonValue } from '../../../../src/core/message.js';

const limits = { maxBytes: 2 * 1024 * 1024, maxDepth: 32 };
const enc = new TextEncoder();

function parse(text: string, l = limits): JsonParseResult {
  return parseJsonExact(enc.encode(text), l);
}

function value(text: string): JsonValue {
  const r = parse(text);
  if (!r.ok) throw new Error(`expected ok, got ${r.code}: ${r.reason}`);
  return r.value;
}

function code(r: JsonParseResult): string | undefined {
  return r.ok ? undefined : r.code;
}

describe('json-exact parser', () => {
  it('parses ordinary JSON like JSON.parse', () => {
    const text = '{"a":[1,2.5,-3e2,true,false,null,"x\\"y"],"b":{"c":"\\u00e9"}}';
    expect(value(text)).to.deep.equal(JSON.parse(text));
  });

  it('keeps integers beyond 2^53 as exact bigint and round-trips them', () => {
    const text = '{"big":9007199254740993,"neg":-18446744073709551617,"nested":{"list":[123456789012345678901234567890,1]}}';
    const v = value(text) as { [k: string]: JsonValue };
    expect(v['big']).to.equal(9007199254740993n);
    expect(v['neg']).to.equal(-18446744073709551617n);
    expect((v['nested'] as { list: JsonValue[] }).list[0]).to.equal(123456789012345678901234567890n);
    expect((v['nested'] as { list: JsonValue[] }).list[1]).to.equal(1);
    expect(stringifyJson(v)).to.equal(text);
  });

  it('returns a top-level big integer as bigint', () => {
    expect(value('18446744073709551615')).to.equal(18446744073709551615n);
  });

  it('keeps safe 16-digit integers and MAX_SAFE_INTEGER as numbers', () => {
    expect(value('[9007199254740991,-9007199254740991,1000000000000000]')).to.deep.equal([
      9007199254740991, -9007199254740991, 1000000000000000,
    ]);
  });

  it('leaves digits inside strings untouched', () => {
    const v = value('{"id":"12345678901234567890123","n":12345678901234567890123,"k\\"12345678901234567890":1}') as {
      [k: string]: JsonValue;
    };
    expect(v['id']).to.equal('12345678901234567890123');
    expect(v['n']).to.equal(12345678901234567890123n);
    expect(v['k"12345678901234567890']).to.equal(1);
  });

  it('does not confuse a real string with a big integer (no marker collisions)', () => {
    const v = value('["__bigint__0", 99999999999999999999, "\\u0001BIG0"]') as JsonValue[];
    expect(v).to.deep.equal(['__bigint__0', 99999999999999999999n, '\u0001BIG0']);
  });

  it('keeps __proto__ as an own key on the exact path', () => {
    const v = value('{"__proto__":{"x":1},"n":99999999999999999999}') as { [k: string]: JsonValue };
    expect(Object.getPrototypeOf(v)).to.equal(Object.prototype);
    expect(Object.hasOwn(v, '__proto__')).to.equal(true);
  });

  it('rejects a 1 MB bracket bomb with UNS_ERR_PAYLOAD_TOO_DEEP, fast', () => {
    const bomb = '['.repeat(1024 * 1024);
    const started = process.hrtime.bigint();
    const r = parse(bomb);
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    expect(code(r)).to.equal('UNS_ERR_PAYLOAD_TOO_DEEP');
    expect(ms).to.be.below(100);
  });

  it('accepts nesting at exactly maxDepth and rejects one deeper', () => {
    expect(parse('[[1]]', { maxBytes: 100, maxDepth: 2 }).ok).to.equal(true);
    expect(code(parse('[[[1]]]', { maxBytes: 100, maxDepth: 2 }))).to.equal('UNS_ERR_PAYLOAD_TOO_DEEP');
    expect(parse('["[[[[[["]', { maxBytes: 100, maxDepth: 2 }).ok).to.equal(true);
  });

  it('rejects \\u0000 in values and keys with UNS_ERR_PAYLOAD_NUL', () => {
    expect(code(parse('{"a":"x\\u0000y"}'))).to.equal('UNS_ERR_PAYLOAD_NUL');
    expect(code(parse('{"\\u0000":1}'))).to.equal('UNS_ERR_PAYLOAD_NUL');
    expect(code(parseJsonExact(new Uint8Array([0x22, 0x61, 0x00, 0x22]), limits))).to.equal('UNS_ERR_PAYLOAD_NUL');
  });

  it('does not mistake an escaped backslash before u0000 for U+0000', () => {
    expect(value('"\\\\u0000"')).to.equal('\\u0000');
  });

  it('rejects malformed JSON with UNS_ERR_DECODE_JSON', () => {
    for (const bad of ['{"a":}', '', '[1,]', '{"a":1', 'tru', '01', '[1 2]', '{"n":012345678901234567890}', '[99999999999999999999 1]']) {
      expect(code(parse(bad)), bad).to.equal('UNS_ERR_DECODE_JSON');
    }
  });

  it('rejects ill-formed UTF-8 with UNS_ERR_DECODE_JSON', () => {
    expect(code(parseJsonExact(new Uint8Array([0x22, 0xc3, 0x28, 0x22]), limits))).to.equal('UNS_ERR_DECODE_JSON');
  });

  it('rejects non-integer numbers that overflow with UNS_ERR_DECODE_JSON', () => {
    expect(code(parse('{"x":1e400}'))).to.equal('UNS_ERR_DECODE_JSON');
    expect(code(parse('[-1.5E+999]'))).to.equal('UNS_ERR_DECODE_JSON');
  });

  it('finds big integers and overflow when the full scan runs too', () => {
    // More opening brackets than maxDepth sends the text through the character scan.
    const l = { maxBytes: 1000, maxDepth: 2 };
    const r = parse('[[1],[99999999999999999999],"\\\\u0000"]', l);
    expect(r.ok && r.value).to.deep.equal([[1], [99999999999999999999n], '\\u0000']);
    expect(code(parse('[[1],[1e400]]', l))).to.equal('UNS_ERR_DECODE_JSON');
  });

  it('rejects payloads over maxBytes with UNS_ERR_PAYLOAD_TOO_LARGE', () => {
    expect(code(parse('[1,2,3]', { maxBytes: 3, maxDepth: 4 }))).to.equal('UNS_ERR_PAYLOAD_TOO_LARGE');
  });
});

describe('json-exact stringify', () => {
  it('writes plain values exactly like JSON.stringify', () => {
    const v: JsonValue = { a: [1, 'x', null, true], b: { c: 2.5 } };
    expect(stringifyJson(v)).to.equal(JSON.stringify(v));
  });

  it('writes bigint as an exact JSON number, nested and negative', () => {
    const v: JsonValue = { a: [1n, -99999999999999999999n], s: 'q"', o: { z: 18446744073709551615n } };
    expect(stringifyJson(v)).to.equal('{"a":[1,-99999999999999999999],"s":"q\\"","o":{"z":18446744073709551615}}');
    expect(stringifyJson(12345678901234567890n)).to.equal('12345678901234567890');
  });
});
