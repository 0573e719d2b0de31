import { expect } from 'chai';
import { deflateSync, gzipSync } from 'node:zlib';
import sparkplugPayload from 'sparkplug-payload';
import type { UMetric, UPayload } from 'sparkplug-payload/lib/sparkplugbpayload.js';
import { SparkplugDecoder } from '../../../../bridge/decode/sparkplug.js';
import type { SparkplugDecodeResult, SparkplugMetricsResult } from '../../../../bridge/decode/sparkplug.js';
import { isRejection } from '../../../../src/core/message.js';

const codec = sparkplugPayload.get('spBv1.0');
if (codec === null) throw new Error('sparkplug-payload lacks spBv1.0');

const NOW = Date.UTC(2024, 4, 1, 12);
const G = 'plant1';
const E = 'edge1';

function encode(p: UPayload): Uint8Array {
  return (codec as NonNullable<typeof codec>).encodePayload(p);
}

function metric(name: string | undefined, type: UMetric['type'], value: UMetric['value'], extra: Partial<UMetric> = {}): UMetric {
  const m = { type, value, ...extra } as UMetric;
  if (name !== undefined) m.name = name;
  return m;
}

function metrics(r: SparkplugDecodeResult): SparkplugMetricsResult {
  if (isRejection(r)) throw new Error(`expected metrics, got ${r.code}: ${r.reason}`);
  if (r.kind !== 'metrics') throw new Error(`expected metrics, got ${r.kind}`);
  return r;
}

function codeOf(r: SparkplugDecodeResult): string | undefined {
  return isRejection(r) ? r.code : undefined;
}

function nbirth(dec: SparkplugDecoder, opts: { seq?: number; bdSeq?: number; metrics?: UMetric[] } = {}): SparkplugMetricsResult {
  const payload: UPayload = {
    timestamp: NOW,
    seq: opts.seq ?? 0,
    metrics: [
      metric('bdSeq', 'Int64', opts.bdSeq ?? 0),
      metric('Node Control/Rebirth', 'Boolean', false, { alias: 1 }),
      metric('Temperature', 'Double', 20.5, { alias: 2 }),
      ...(opts.metrics ?? []),
    ],
  };
  return metrics(dec.decode(`spBv1.0/${G}/NBIRTH/${E}`, encode(payload), NOW));
}

function ndata(dec: SparkplugDecoder, seq: number, ms: UMetric[]): SparkplugDecodeResult {
  return dec.decode(`spBv1.0/${G}/NDATA/${E}`, encode({ timestamp: NOW, seq, metrics: ms }), NOW);
}

function dbirth(dec: SparkplugDecoder, device: string, seq: number, ms: UMetric[]): SparkplugDecodeResult {
  return dec.decode(`spBv1.0/${G}/DBIRTH/${E}/${device}`, encode({ timestamp: NOW, seq, metrics: ms }), NOW);
}

function ddata(dec: SparkplugDecoder, device: string, seq: number, ms: UMetric[]): SparkplugDecodeResult {
  return dec.decode(`spBv1.0/${G}/DDATA/${E}/${device}`, encode({ timestamp: NOW, seq, metrics: ms }), NOW);
}

function ndeath(dec: SparkplugDecoder, bdSeq: number): SparkplugDecodeResult {
  return dec.decode(`spBv1.0/${G}/NDEATH/${E}`, encode({ timestamp: NOW, metrics: [metric('bdSeq', 'Int64', bdSeq)] }), NOW);
}

describe('sparkplug decoder', () => {
  it('turns NBIRTH metrics into points and reports the birth', () => {
    const dec = new SparkplugDecoder();
    const r = nbirth(dec);
    expect(r.messageType).to.equal('NBIRTH');
    expect(r.points.map((p) => p.topic)).to.deep.equal([
      `spBv1.0/${G}/${E}/Node Control/Rebirth`,
      `spBv1.0/${G}/${E}/Temperature`,
    ]);
    expect(r.points[1]).to.deep.include({ value: 20.5, timestamp: NOW, quality: 'good' });
    expect(r.birth?.bdSeq).to.equal(0);
    expect(r.birth?.metrics.find((m) => m.name === 'Temperature')).to.deep.equal({ name: 'Temperature', datatype: 'Double', alias: 2 });
  });

  it('resolves NDATA aliases from the NBIRTH', () => {
    const dec = new SparkplugDecoder();
    nbirth(dec);
    const r = metrics(ndata(dec, 1, [metric(undefined, 'Double', 21.25, { alias: 2, timestamp: NOW - 5 })]));
    expect(r.points).to.deep.equal([{ topic: `spBv1.0/${G}/${E}/Temperature`, value: 21.25, timestamp: NOW - 5, quality: 'good' }]);
    expect(r.warning).to.equal(undefined);
  });

  it('resolves aliases from the last DBIRTH', () => {
    const dec = new SparkplugDecoder();
    nbirth(dec);
    dbirth(dec, 'pump1', 1, [metric('Speed', 'Int32', 10, { alias: 100 })]);
    metrics(dbirth(dec, 'pump1', 2, [metric('Pressure', 'Float', 1.5, { alias: 100 })]));
    const r = metrics(ddata(dec, 'pump1', 3, [metric(undefined, 'Float', 2.5, { alias: 100 })]));
    expect(r.device).to.equal('pump1');
    expect(r.points[0]).to.deep.include({ topic: `spBv1.0/${G}/${E}/pump1/Pressure`, value: 2.5 });
  });

  it('reads signed narrow integers using the BIRTH datatype when DATA omits it', () => {
    const dec = new SparkplugDecoder();
    nbirth(dec, { metrics: [metric('Offset', 'Int16', -3, { alias: 7 })] });
    // [tck-id-payloads-metric-datatype-not-req] DATA metrics normally carry no datatype.
    const bytes = encode({ timestamp: NOW, seq: 1, metrics: [metric(undefined, 'Int16', -5, { alias: 7 })] });
    const raw = codec.decodePayload(bytes);
    expect(raw.metrics?.[0]?.type).to.equal('Int16');
    const r = metrics(dec.decode(`spBv1.0/${G}/NDATA/${E}`, bytes, NOW));
    expect(r.points[0]?.value).to.equal(-5);
  });

  it('keeps Int64 and UInt64 beyond 2^53 exact', () => {
    const dec = new SparkplugDecoder();
    const r = nbirth(dec, {
      metrics: [
        metric('u64', 'UInt64', '18446744073709551615' as unknown as number, { alias: 10 }),
        metric('i64', 'Int64', '-9007199254740993' as unknown as number, { alias: 11 }),
        metric('i64small', 'Int64', -42, { alias: 12 }),
        metric('u32', 'UInt32', 4_000_000_000, { alias: 13 }),
      ],
    });
    const byName = new Map(r.points.map((p) => [p.topic.split('/').pop(), p.value]));
    expect(byName.get('u64')).to.equal(18446744073709551615n);
    expect(byName.get('i64')).to.equal(-9007199254740993n);
    expect(byName.get('i64small')).to.equal(-42);
    expect(byName.get('u32')).to.equal(4_000_000_000);
  });

  it('converts strings, bytes, nulls, DataSets and Templates', () => {
    const dec = new SparkplugDecoder();
    const r = nbirth(dec, {
      metrics: [
        metric('s', 'String', 'hello', { alias: 20 }),
        metric('b', 'Bytes', new Uint8Array([1, 2, 3]), { alias: 21 }),
        metric('n', 'Double', null, { alias: 22 }),
        metric('dt', 'DateTime', NOW, { alias: 23 }),
        metric(
          'ds',
          'DataSet',
          { numOfColumns: 2, columns: ['a', 'b'], types: ['Int32', 'String'], rows: [[1, 'x'], [2, 'y']] },
          { alias: 24 },
        ),
        metric(
          'tpl',
          'Template',
          {
            templateRef: 'Motor',
            isDefinition: false,
            metrics: [metric('rpm', 'Int32', 1500)],
            parameters: [{ name: 'rated', type: 'Int32', value: 3000 }],
          },
          { alias: 25 },
        ),
      ],
    });
    const byName = new Map(r.points.map((p) => [p.topic.split('/').pop(), p]));
    expect(byName.get('s')?.value).to.equal('hello');
    expect(Array.from(byName.get('b')?.value as Uint8Array)).to.deep.equal([1, 2, 3]);
    expect(byName.get('n')).to.deep.include({ value: null, quality: 'bad' });
    expect(byName.get('dt')?.value).to.equal(NOW);
    expect(byName.get('ds')?.value).to.deep.equal({ columns: ['a', 'b'], types: ['Int32', 'String'], rows: [[1, 'x'], [2, 'y']] });
    expect(byName.get('tpl')?.value).to.deep.equal({
      templateRef: 'Motor',
      isDefinition: false,
      parameters: { rated: 3000 },
      metrics: { rpm: 1500 },
    });
  });

  it('takes quality from the Quality property', () => {
    const dec = new SparkplugDecoder();
    const r = nbirth(dec, {
      metrics: [
        metric('q1', 'Double', 1, { alias: 30, properties: { Quality: { type: 'Int32', value: 0 } } }),
        metric('q2', 'Double', 1, { alias: 31, properties: { Quality: { type: 'Int32', value: 64 } } }),
        metric('q3', 'Double', 1, { alias: 32, properties: { Quality: { type: 'Int32', value: 192 } } }),
      ],
    });
    expect(r.points.slice(-3).map((p) => p.quality)).to.deep.equal(['bad', 'uncertain', 'good']);
  });

  it('rejects NDATA before NBIRTH', () => {
    const dec = new SparkplugDecoder();
    expect(codeOf(ndata(dec, 1, [metric('Temperature', 'Double', 1)]))).to.equal('UNS_ERR_SPARKPLUG_STATE');
  });

  it('rejects DDATA before DBIRTH and DBIRTH before NBIRTH', () => {
    const dec = new SparkplugDecoder();
    expect(codeOf(dbirth(dec, 'pump1', 1, [metric('Speed', 'Int32', 1)]))).to.equal('UNS_ERR_SPARKPLUG_STATE');
    nbirth(dec);
    expect(codeOf(ddata(dec, 'pump1', 1, [metric('Speed', 'Int32', 1)]))).to.equal('UNS_ERR_SPARKPLUG_STATE');
  });

  it('rejects an unknown alias', () => {
    const dec = new SparkplugDecoder();
    nbirth(dec);
    expect(codeOf(ndata(dec, 1, [metric(undefined, 'Double', 1, { alias: 99 })]))).to.equal('UNS_ERR_SPARKPLUG_STATE');
  });

  it('accepts data after a sequence gap but warns', () => {
    const dec = new SparkplugDecoder();
    nbirth(dec, { seq: 0 });
    expect(metrics(ndata(dec, 1, [metric('Temperature', 'Double', 1)])).warning).to.equal(undefined);
    const r = metrics(ndata(dec, 4, [metric('Temperature', 'Double', 2)]));
    expect(r.points).to.have.length(1);
    expect(r.warning?.code).to.equal('UNS_ERR_SPARKPLUG_STATE');
    // The counter follows the node, so the next message in order is clean again.
    expect(metrics(ndata(dec, 5, [metric('Temperature', 'Double', 3)])).warning).to.equal(undefined);
  });

  it('wraps the sequence number from 255 to 0', () => {
    const dec = new SparkplugDecoder();
    nbirth(dec, { seq: 255 });
    expect(metrics(ndata(dec, 0, [metric('Temperature', 'Double', 1)])).warning).to.equal(undefined);
  });

  it('rejects a stale NDEATH and keeps the node online', () => {
    const dec = new SparkplugDecoder();
    nbirth(dec, { bdSeq: 3 });
    expect(codeOf(ndeath(dec, 2))).to.equal('UNS_ERR_SPARKPLUG_STATE');
    expect(codeOf(ndata(dec, 1, [metric('Temperature', 'Double', 1)]))).to.equal(undefined);
  });

  it('takes the node and its devices offline on a matching NDEATH', () => {
    const dec = new SparkplugDecoder();
    nbirth(dec, { bdSeq: 3 });
    metrics(dbirth(dec, 'pump1', 1, [metric('Speed', 'Int32', 1, { alias: 100 })]));
    const r = metrics(ndeath(dec, 3));
    expect(r).to.deep.include({ messageType: 'NDEATH', death: true });
    // [tck-id-operational-behavior-edge-node-termination-host-action-ndeath-node-tags-stale] and -devices-tags-stale:
    // every metric of the node and its devices (bdSeq aside), stale at the receive time, no value.
    expect(r.points).to.deep.equal([
      { topic: `spBv1.0/${G}/${E}/Node Control/Rebirth`, value: null, timestamp: NOW, quality: 'stale' },
      { topic: `spBv1.0/${G}/${E}/Temperature`, value: null, timestamp: NOW, quality: 'stale' },
      { topic: `spBv1.0/${G}/${E}/pump1/Speed`, value: null, timestamp: NOW, quality: 'stale' },
    ]);
    expect(codeOf(ndata(dec, 2, [metric('Temperature', 'Double', 1)]))).to.equal('UNS_ERR_SPARKPLUG_STATE');
    expect(codeOf(ddata(dec, 'pump1', 2, [metric('Speed', 'Int32', 1)]))).to.equal('UNS_ERR_SPARKPLUG_STATE');
  });

  it('takes a device offline on DDEATH', () => {
    const dec = new SparkplugDecoder();
    nbirth(dec);
    metrics(dbirth(dec, 'pump1', 1, [metric('Speed', 'Int32', 1)]));
    const death = dec.decode(`spBv1.0/${G}/DDEATH/${E}/pump1`, encode({ timestamp: NOW, seq: 2 }), NOW);
    expect(metrics(death)).to.deep.include({ death: true, device: 'pump1', points: [{ topic: `spBv1.0/${G}/${E}/pump1/Speed`, value: null, timestamp: NOW, quality: 'stale' }] });
    expect(codeOf(ddata(dec, 'pump1', 3, [metric('Speed', 'Int32', 1)]))).to.equal('UNS_ERR_SPARKPLUG_STATE');
  });

  it('forgets device aliases on a new NBIRTH', () => {
    const dec = new SparkplugDecoder();
    nbirth(dec);
    metrics(dbirth(dec, 'pump1', 1, [metric('Speed', 'Int32', 1, { alias: 100 })]));
    nbirth(dec, { bdSeq: 1 });
    expect(codeOf(ddata(dec, 'pump1', 1, [metric(undefined, 'Int32', 1, { alias: 100 })]))).to.equal('UNS_ERR_SPARKPLUG_STATE');
  });

  it('rejects invalid, truncated and empty protobuf with UNS_ERR_DECODE_SPARKPLUG', () => {
    const dec = new SparkplugDecoder();
    const good = encode({ timestamp: NOW, seq: 0, metrics: [metric('bdSeq', 'Int64', 0), metric('x', 'String', 'abcdef')] });
    const topic = `spBv1.0/${G}/NBIRTH/${E}`;
    expect(codeOf(dec.decode(topic, good.subarray(0, good.length - 3), NOW))).to.equal('UNS_ERR_DECODE_SPARKPLUG');
    expect(codeOf(dec.decode(topic, new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), NOW))).to.equal('UNS_ERR_DECODE_SPARKPLUG');
    expect(codeOf(dec.decode(topic, new Uint8Array(0), NOW))).to.equal('UNS_ERR_DECODE_SPARKPLUG');
    expect(codeOf(dec.decode(`spBv1.0/${G}/NDATA/${E}`, new Uint8Array(0), NOW))).to.equal('UNS_ERR_DECODE_SPARKPLUG');
  });

  it('rejects NBIRTH without seq or bdSeq', () => {
    const dec = new SparkplugDecoder();
    const topic = `spBv1.0/${G}/NBIRTH/${E}`;
    expect(codeOf(dec.decode(topic, encode({ timestamp: NOW, metrics: [metric('bdSeq', 'Int64', 0)] }), NOW))).to.equal('UNS_ERR_DECODE_SPARKPLUG');
    expect(codeOf(dec.decode(topic, encode({ timestamp: NOW, seq: 0, metrics: [metric('x', 'Int32', 0)] }), NOW))).to.equal('UNS_ERR_DECODE_SPARKPLUG');
  });

  it('rejects metric names that cannot be topic levels: empty, U+0000, empty levels', () => {
    const dec = new SparkplugDecoder();
    nbirth(dec);
    expect(codeOf(ndata(dec, 1, [metric('', 'Int32', 1)])), 'an empty name identifies nothing').to.equal('UNS_ERR_DECODE_SPARKPLUG');
    for (const name of ['a\u0000b', 'a//b', '/a', 'a/']) {
      const d2 = new SparkplugDecoder();
      expect(codeOf(d2.decode(`spBv1.0/${G}/NBIRTH/${E}`, encode({ timestamp: NOW, seq: 0, metrics: [metric('bdSeq', 'Int64', 0), metric(name, 'Int32', 1)] }), NOW)), name)
        .to.equal('UNS_ERR_SPARKPLUG_METRIC');
    }
  });

  it('keeps slashes in metric names as topic levels and percent-encodes +, # and %', () => {
    const dec = new SparkplugDecoder();
    nbirth(dec, { metrics: [metric('Motor/Speed', 'Int32', 1), metric('Tank+1#A%', 'Int32', 1)] });
    expect(metrics(ndata(dec, 1, [metric('Motor/Speed', 'Int32', 1)])).points[0]?.topic).to.equal(`spBv1.0/${G}/${E}/Motor/Speed`);
    expect(metrics(ndata(dec, 2, [metric('Tank+1#A%', 'Int32', 1)])).points[0]?.topic).to.equal(`spBv1.0/${G}/${E}/Tank%2B1%23A%25`);
  });

  it('[tck-id-topics-nbirth-metric-reqs] refuses DATA metrics missing from the BIRTH or changing its datatype', () => {
    const dec = new SparkplugDecoder();
    nbirth(dec);
    expect(codeOf(ndata(dec, 1, [metric('Pressure', 'Double', 1)]))).to.equal('UNS_ERR_SPARKPLUG_METRIC');
    expect(codeOf(ndata(dec, 2, [metric('Temperature', 'String', 'hot')]))).to.equal('UNS_ERR_SPARKPLUG_METRIC');
    expect(metrics(ndata(dec, 3, [metric('Temperature', 'Double', 21)])).points[0]?.value).to.equal(21);
  });

  it('refuses timestamps before 2000 or beyond maxFutureMs with UNS_ERR_TIMESTAMP_RANGE', () => {
    const dec = new SparkplugDecoder({ maxFutureMs: 60_000 });
    nbirth(dec);
    expect(codeOf(ndata(dec, 1, [metric('Temperature', 'Double', 1, { timestamp: 1_700_000_000 })])), 'seconds, not ms').to.equal('UNS_ERR_TIMESTAMP_RANGE');
    expect(codeOf(ndata(dec, 2, [metric('Temperature', 'Double', 1, { timestamp: NOW + 60_001 })]))).to.equal('UNS_ERR_TIMESTAMP_RANGE');
    expect(metrics(ndata(dec, 3, [metric('Temperature', 'Double', 1, { timestamp: NOW + 60_000 })])).points[0]?.timestamp).to.equal(NOW + 60_000);
  });

  it('[tck-id-operational-behavior-host-reordering-start] awaits the numbers a gap skipped; a late one closes its part; a wide gap asks a rebirth', () => {
    const told: string[] = [];
    const dec = new SparkplugDecoder({
      listener: { gapOpened: (_g, _e, x, y) => told.push(`gap ${x}..${y}`), rebirthNeeded: (_g, _e, r) => told.push(`rebirth: ${r}`), staleDeath: () => told.push('stale death') },
    });
    nbirth(dec);
    metrics(ndata(dec, 3, [metric('Temperature', 'Double', 1)]));
    expect(dec.missing(G, E)).to.deep.equal([1, 2]);
    metrics(ndata(dec, 2, [metric('Temperature', 'Double', 2)]));
    expect(dec.missing(G, E)).to.deep.equal([1]);
    metrics(ndata(dec, 4, [metric('Temperature', 'Double', 3)]));
    metrics(ndata(dec, 200, [metric('Temperature', 'Double', 4)]));
    expect(told).to.deep.equal(['gap 1..3', 'rebirth: sequence gap: expected 5, got 200']);
  });

  it('refuses payloads over maxBytes and more than maxMetrics metrics', () => {
    const dec = new SparkplugDecoder({ maxBytes: 64, maxMetrics: 3 });
    const topic = `spBv1.0/${G}/NBIRTH/${E}`;
    expect(codeOf(dec.decode(topic, new Uint8Array(65), NOW))).to.equal('UNS_ERR_PAYLOAD_TOO_LARGE');
    const many = encode({ seq: 0, metrics: [1, 2, 3, 4].map((i) => metric(`m${i}`, 'Boolean', true)) });
    expect(codeOf(dec.decode(topic, many, NOW))).to.equal('UNS_ERR_PAYLOAD_TOO_LARGE');
  });

  it('decodes DEFLATE and GZIP compressed payloads', () => {
    const dec = new SparkplugDecoder();
    const inner = encode({ timestamp: NOW, seq: 0, metrics: [metric('bdSeq', 'Int64', 0), metric('x', 'Int32', 7)] });
    for (const [algorithm, body] of [
      ['DEFLATE', deflateSync(inner)],
      ['GZIP', gzipSync(inner)],
    ] as const) {
      const outer = encode({ uuid: 'SPBV1.0_COMPRESSED', body, metrics: [metric('algorithm', 'String', algorithm)] });
      const r = metrics(dec.decode(`spBv1.0/${G}/NBIRTH/${E}`, outer, NOW));
      expect(r.points[0]).to.deep.include({ topic: `spBv1.0/${G}/${E}/x`, value: 7 });
    }
  });

  it('refuses a DEFLATE zip bomb with UNS_ERR_PAYLOAD_TOO_LARGE', () => {
    const dec = new SparkplugDecoder({ maxBytes: 1024 * 1024 });
    const body = deflateSync(new Uint8Array(64 * 1024 * 1024));
    expect(body.length).to.be.below(1024 * 1024);
    const outer = encode({ uuid: 'SPBV1.0_COMPRESSED', body, metrics: [metric('algorithm', 'String', 'DEFLATE')] });
    expect(codeOf(dec.decode(`spBv1.0/${G}/NBIRTH/${E}`, outer, NOW))).to.equal('UNS_ERR_PAYLOAD_TOO_LARGE');
  });

  it('treats NCMD, DCMD and STATE as control messages', () => {
    const dec = new SparkplugDecoder();
    expect(dec.decode(`spBv1.0/${G}/NCMD/${E}`, new Uint8Array([1]), NOW)).to.deep.equal({ kind: 'control', messageType: 'NCMD' });
    expect(dec.decode(`spBv1.0/${G}/DCMD/${E}/d`, new Uint8Array(0), NOW)).to.deep.equal({ kind: 'control', messageType: 'DCMD' });
    expect(dec.decode('spBv1.0/STATE/host1', new TextEncoder().encode('{"online":true}'), NOW)).to.deep.equal({
      kind: 'control',
      messageType: 'STATE',
    });
  });

  it('rejects topics outside the Sparkplug topic namespace', () => {
    const dec = new SparkplugDecoder();
    for (const t of ['spAv1.0/g/NDATA/e', 'spBv1.0/g/NDATA', 'spBv1.0/g/FOO/e', 'spBv1.0/g/DDATA/e', 'spBv1.0/g/NDATA/e/d', 'spBv1.0//NDATA/e']) {
      expect(codeOf(dec.decode(t, new Uint8Array([8, 1]), NOW)), t).to.equal('UNS_ERR_DECODE_SPARKPLUG');
    }
  });

  it('keeps aliases, seq and bdSeq across snapshot and restore', () => {
    const dec = new SparkplugDecoder();
    nbirth(dec, { seq: 0, bdSeq: 7, metrics: [metric('Big', 'UInt64', 1, { alias: '18446744073709551615' as unknown as number })] });
    metrics(dbirth(dec, 'pump1', 1, [metric('Speed', 'Int32', 1, { alias: 100 })]));
    const snap = JSON.parse(JSON.stringify(dec.snapshot())) as unknown;

    const restored = new SparkplugDecoder();
    expect(restored.restore(snap)).to.deep.equal({ ok: true });
    const r = metrics(ddata(restored, 'pump1', 2, [metric(undefined, 'Int32', 5, { alias: 100 })]));
    expect(r.points[0]).to.deep.include({ topic: `spBv1.0/${G}/${E}/pump1/Speed`, value: 5 });
    expect(r.warning).to.equal(undefined);
    const big = metrics(ndata(restored, 3, [metric(undefined, 'UInt64', 2, { alias: '18446744073709551615' as unknown as number })]));
    expect(big.points[0]?.topic).to.equal(`spBv1.0/${G}/${E}/Big`);
    expect(codeOf(ndeath(restored, 6))).to.equal('UNS_ERR_SPARKPLUG_STATE');
    expect(metrics(ndeath(restored, 7)).death).to.equal(true);
  });

  it('leaves the state unchanged when a snapshot is malformed', () => {
    const dec = new SparkplugDecoder();
    nbirth(dec);
    const result = dec.restore({ version: 1, nodes: [{ group: G, edge: E }] });
    expect(result.ok).to.equal(false);
    expect(codeOf(ndata(dec, 1, [metric(undefined, 'Double', 1, { alias: 2 })]))).to.equal(undefined);
  });
});
