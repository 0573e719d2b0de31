import { expect } from 'chai';
import { decodeValuePayload } from '../../../../bridge/decode/envelope.js';
import type { DecodedValue, ValueDecodeContext, ValueEncoding } from '../../../../bridge/decode/envelope.js';
import { isRejection } from '../../../../src/core/message.js';
import type { Point, Rejection } from '../../../../src/core/message.js';

const receivedAt = Date.UTC(2024, 4, 1, 12, 0, 0);
const ctx: ValueDecodeContext = {
  topic: 'acme/plant1/line2/temp',
  receivedAt,
  unit: 'degC',
  limits: { maxBytes: 64 * 1024, maxDepth: 16 },
};
const enc = new TextEncoder();

function decode(text: string | Uint8Array, encoding: ValueEncoding = 'json', c: ValueDecodeContext = ctx): DecodedValue | Rejection {
  return decodeValuePayload(typeof text === 'string' ? enc.encode(text) : text, encoding, c);
}

function ok(text: string | Uint8Array, encoding: ValueEncoding = 'json'): DecodedValue {
  const r = decode(text, encoding);
  if (isRejection(r)) throw new Error(`expected points, got ${r.code}: ${r.reason}`);
  return r;
}

function point(text: string | Uint8Array, encoding: ValueEncoding = 'json'): Point {
  const p = ok(text, encoding).points[0];
  if (p === undefined) throw new Error('no point');
  return p;
}

function codeOf(text: string | Uint8Array, encoding: ValueEncoding = 'json'): string | undefined {
  const r = decode(text, encoding);
  return isRejection(r) ? r.code : undefined;
}

describe('value envelope decoder', () => {
  describe('json encoding', () => {
    it('reads an envelope with value, ms timestamp, quality and unit', () => {
      const r = ok('{"value":21.5,"timestamp":1714564800000,"quality":"uncertain","unit":"K","extra":1}');
      expect(r.points).to.deep.equal([
        { topic: ctx.topic, value: 21.5, timestamp: 1714564800000, quality: 'uncertain', unit: 'K' },
      ]);
      expect(r.document).to.deep.equal({ value: 21.5, timestamp: 1714564800000, quality: 'uncertain', unit: 'K', extra: 1 });
    });

    it('defaults timestamp to receive time, quality to good and unit to the route unit', () => {
      expect(point('{"value":true}')).to.deep.equal({ topic: ctx.topic, value: true, timestamp: receivedAt, quality: 'good', unit: 'degC' });
    });

    it('wraps a bare scalar as { value }', () => {
      const r = ok('42');
      expect(r.points[0]?.value).to.equal(42);
      expect(r.document).to.deep.equal({ value: 42 });
      expect(ok('"on"').document).to.deep.equal({ value: 'on' });
    });

    it('treats an object without a value key as the value itself', () => {
      const r = ok('{"x":1,"y":[2,3]}');
      expect(r.points[0]?.value).to.deep.equal({ x: 1, y: [2, 3] });
      expect(r.document).to.deep.equal({ value: { x: 1, y: [2, 3] } });
    });

    it('keeps big integers exact in the value', () => {
      expect(point('{"value":18446744073709551615}').value).to.equal(18446744073709551615n);
    });

    it('accepts ISO 8601 timestamps with Z or an offset', () => {
      expect(point('{"value":1,"timestamp":"2024-05-01T12:00:00Z"}').timestamp).to.equal(Date.UTC(2024, 4, 1, 12));
      expect(point('{"value":1,"timestamp":"2024-05-01T14:00:00.250+02:00"}').timestamp).to.equal(Date.UTC(2024, 4, 1, 12, 0, 0, 250));
      expect(point('{"value":1,"timestamp":"2024-05-01T11:30:00.123456-0030"}').timestamp).to.equal(Date.UTC(2024, 4, 1, 12, 0, 0, 123));
      expect(point('{"value":1,"timestamp":"2024-05-01T12:00:00.5Z"}').timestamp).to.equal(Date.UTC(2024, 4, 1, 12, 0, 0, 500));
    });

    it('rejects timestamps that look like seconds', () => {
      expect(codeOf('{"value":1,"timestamp":1714564800}')).to.equal('UNS_ERR_PAYLOAD_ENVELOPE');
    });

    it('rejects bad timestamps with UNS_ERR_PAYLOAD_ENVELOPE', () => {
      for (const ts of [
        '-1',
        '"2024-05-01T12:00:00"', // no offset: local time would be a guess
        '"2024-02-30T12:00:00Z"',
        '"yesterday"',
        '"2024-05-01"',
        String(receivedAt + 2 * 86_400_000), // two days ahead
        'true',
        '99999999999999999999',
      ]) {
        expect(codeOf(`{"value":1,"timestamp":${ts}}`), ts).to.equal('UNS_ERR_PAYLOAD_ENVELOPE');
      }
    });

    it('maps quality strings and OPC-DA numbers', () => {
      expect(point('{"value":1,"quality":"bad"}').quality).to.equal('bad');
      expect(point('{"value":1,"quality":192}').quality).to.equal('good');
      expect(point('{"value":1,"quality":216}').quality).to.equal('good');
      expect(point('{"value":1,"quality":64}').quality).to.equal('uncertain');
      expect(point('{"value":1,"quality":0}').quality).to.equal('bad');
    });

    it('rejects unknown quality and non-string unit', () => {
      expect(codeOf('{"value":1,"quality":"GOODISH"}')).to.equal('UNS_ERR_PAYLOAD_ENVELOPE');
      expect(codeOf('{"value":1,"quality":1000}')).to.equal('UNS_ERR_PAYLOAD_ENVELOPE');
      expect(codeOf('{"value":1,"unit":5}')).to.equal('UNS_ERR_PAYLOAD_ENVELOPE');
    });

    it('keeps a null value, with quality bad unless stated', () => {
      expect(point('{"value":null}')).to.include({ value: null, quality: 'bad' });
      expect(point('{"value":null,"quality":"good"}')).to.include({ value: null, quality: 'good' });
    });

    it('passes parser rejections through', () => {
      expect(codeOf('{"value":')).to.equal('UNS_ERR_DECODE_JSON');
      expect(codeOf('{"value":"a\\u0000"}')).to.equal('UNS_ERR_PAYLOAD_NUL');
      expect(codeOf('[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]')).to.equal('UNS_ERR_PAYLOAD_TOO_DEEP');
    });
  });

  describe('number encoding', () => {
    it('reads plain decimal text, trimming ASCII whitespace', () => {
      expect(point('21.5', 'number').value).to.equal(21.5);
      expect(point('  42 \n', 'number').value).to.equal(42);
      expect(point('-1.5e3', 'number').value).to.equal(-1500);
      expect(ok('7', 'number').document).to.deep.equal({ value: 7 });
    });

    it('keeps big integers exact', () => {
      expect(point('-9223372036854775809', 'number').value).to.equal(-9223372036854775809n);
    });

    it('accepts a JSON envelope', () => {
      expect(point('{"value": 3, "timestamp": 1714564800000}', 'number')).to.include({ value: 3, timestamp: 1714564800000 });
    });

    it('rejects non-numbers with UNS_ERR_DECODE_NUMBER', () => {
      for (const bad of ['abc', '', '   ', '+1', '.5', '1.', '0x10', 'NaN', 'Infinity', '1e400', '1 2', '{"value":"x"}', '２']) {
        expect(codeOf(bad, 'number'), bad).to.equal('UNS_ERR_DECODE_NUMBER');
      }
    });
  });

  describe('string encoding', () => {
    it('reads UTF-8 text as the value', () => {
      const r = ok('Störung ✓', 'string');
      expect(r.points[0]?.value).to.equal('Störung ✓');
      expect(r.document).to.deep.equal({ value: 'Störung ✓' });
    });

    it('rejects ill-formed UTF-8 with UNS_ERR_DECODE_STRING', () => {
      expect(codeOf(new Uint8Array([0x61, 0xff, 0x62]), 'string')).to.equal('UNS_ERR_DECODE_STRING');
    });

    it('rejects U+0000 with UNS_ERR_PAYLOAD_NUL', () => {
      expect(codeOf(new Uint8Array([0x61, 0x00]), 'string')).to.equal('UNS_ERR_PAYLOAD_NUL');
    });
  });

  describe('raw encoding', () => {
    it('keeps the bytes as the value', () => {
      const bytes = new Uint8Array([0, 1, 2, 255]);
      const r = ok(bytes, 'raw');
      expect(r.points[0]?.value).to.equal(bytes);
      expect(r.document).to.deep.equal({ byteLength: 4 });
    });
  });

  it('rejects payloads over maxBytes with UNS_ERR_PAYLOAD_TOO_LARGE in every encoding', () => {
    const small: ValueDecodeContext = { ...ctx, limits: { maxBytes: 2, maxDepth: 4 } };
    for (const e of ['json', 'number', 'string', 'raw'] as const) {
      const r = decode('123', e, small);
      expect(isRejection(r) ? r.code : undefined, e).to.equal('UNS_ERR_PAYLOAD_TOO_LARGE');
    }
  });
});
