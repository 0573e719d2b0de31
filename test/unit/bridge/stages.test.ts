import { expect } from 'chai';
import { join } from 'node:path';
import { namespaceFromObject } from '../../../src/core/topics.js';
import { loadPayloadSchemas } from '../../../src/core/payload-schemas.js';
import { schemasDir } from '../../../src/core/paths.js';
import { silentLogger } from '../../../src/core/log.js';
import type { InboundRecord } from '../../../src/core/message.js';
import { SparkplugDecoder } from '../../../bridge/decode/sparkplug.js';
import { buildStages, draftOf, runStages, routeStage, type Stage } from '../../../bridge/stages.js';

const namespace = namespaceFromObject({
  version: 1,
  levels: [{ name: 'enterprise', allowed: ['acme'] }, { name: 'site', allowed: ['plant1'] }],
  routes: [
    { name: 'temps', filter: 'acme/+/temp', encoding: 'json', schema: 'measurement', unit: '°C' },
    { name: 'counts', filter: 'acme/+/count', encoding: 'number' },
  ],
});
const schemas = loadPayloadSchemas(join(schemasDir(), 'payloads'));
const stages = buildStages({ namespace, schemas, sparkplug: new SparkplugDecoder({ maxBytes: 1 << 20 }), limits: { maxBytes: 1 << 16, maxDepth: 8 }, log: silentLogger() });

const record = (topic: string, payload: string): InboundRecord => ({
  topic, payload: Buffer.from(payload), receivedAt: 1_700_000_000_000,
  source: { protocol: 'mqtt', clientId: 'c', qos: 1, retain: false, dup: false, packetId: 1 },
});

describe('ingest stages', () => {
  it('accepts a valid publish, filling in route, ISA-95 path and points', () => {
    const d = draftOf(record('acme/plant1/temp', '{"value": 21.5}'));
    expect(runStages(stages, d)).to.equal(null);
    expect(d.route?.name).to.equal('temps');
    expect(d.path).to.deep.equal({ enterprise: 'acme', site: 'plant1' });
    expect(d.points).to.deep.equal([{ topic: 'acme/plant1/temp', value: 21.5, timestamp: 1_700_000_000_000, quality: 'good', unit: '°C' }]);
  });

  for (const [what, topic, payload, code] of [
    ['a topic no route matches', 'other/plant1/temp', '1', 'UNS_ERR_NO_ROUTE'],
    ['a level outside its allowed names', 'acme/plant9/temp', '{"value": 1}', 'UNS_ERR_ISA95_LEVEL'],
    ['a payload that is not JSON', 'acme/plant1/temp', '{"value":', 'UNS_ERR_DECODE_JSON'],
    ['a payload that breaks its schema', 'acme/plant1/temp', '{"value": "hot"}', 'UNS_ERR_SCHEMA_VIOLATION'],
    ['a number route given text', 'acme/plant1/count', 'many', 'UNS_ERR_DECODE_NUMBER'],
  ] as const) {
    it(`rejects ${what} with ${code}`, () => {
      const r = runStages(stages, draftOf(record(topic, payload)));
      expect(r?.code).to.equal(code);
      expect(r?.topic).to.equal(topic);
    });
  }

  it('stops at the first rejection: later stages do not run', () => {
    let ran = 0;
    const counting: Stage = () => { ran++; return null; };
    const r = runStages([routeStage(namespace), counting], draftOf(record('nowhere/x', '1')));
    expect(r?.code).to.equal('UNS_ERR_NO_ROUTE');
    expect(ran).to.equal(0);
    expect(runStages([routeStage(namespace), counting], draftOf(record('acme/plant1/count', '1')))).to.equal(null);
    expect(ran).to.equal(1);
  });

  it('keeps integers beyond 2^53 exact while validating them as numbers', () => {
    const d = draftOf(record('acme/plant1/temp', '{"value": 9007199254740993}'));
    expect(runStages(stages, d)).to.equal(null);
    expect(d.points[0]?.value).to.equal(9007199254740993n);
  });
});
