import { expect } from 'chai';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UnsError } from '../../../src/core/errors.js';
import { packageRoot } from '../../../src/core/paths.js';
import { assertSchemasExist, loadPayloadSchemas } from '../../../src/core/payload-schemas.js';
import { loadTopics, namespaceFromObject } from '../../../src/core/topics.js';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(UnsError);
    return (err as UnsError).code;
  }
  return undefined;
}

describe('payload schemas', () => {
  const shipped = () => loadPayloadSchemas(join(packageRoot(), 'schemas', 'payloads'));
  let dir: string;
  let n = 0;
  const folder = (files: Record<string, string>): string => {
    const d = join(dir, `set-${n++}`);
    mkdirSync(d);
    for (const [name, text] of Object.entries(files)) writeFileSync(join(d, name), text);
    return d;
  };

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'uns-schemas-'));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('compiles the shipped schemas, keyed by $id', () => {
    expect([...shipped().keys()].sort()).to.deep.equal(['machine-state', 'measurement']);
  });

  it('accepts a numeric measurement envelope and refuses a text one', () => {
    const measurement = shipped().get('measurement');
    expect(measurement?.({ value: 21.5, timestamp: 1_700_000_000_000, quality: 'good', unit: '°C' })).to.equal(true);
    expect(measurement?.({ value: '21.5' })).to.equal(false);
    expect(measurement?.({ timestamp: 1 })).to.equal(false);
    expect(measurement?.({ value: 1, extra: true })).to.equal(false);
  });

  it('accepts only the listed machine states', () => {
    const state = shipped().get('machine-state');
    for (const v of ['RUNNING', 'IDLE', 'STOPPED', 'FAULTED', 'MAINTENANCE', 'STARVED', 'BLOCKED']) {
      expect(state?.({ value: v }), v).to.equal(true);
    }
    expect(state?.({ value: 'running' })).to.equal(false);
    expect(state?.({ value: 'EXPLODED' })).to.equal(false);
  });

  it('finds every schema the shipped topics.yaml names', () => {
    const ns = loadTopics(join(packageRoot(), 'topics.yaml'));
    expect(() => assertSchemasExist(ns, shipped())).not.to.throw();
  });

  it('keys a schema without $id by its file name', () => {
    const d = folder({ 'pressure.schema.json': '{"type":"object"}', 'notes.txt': 'ignored' });
    expect([...loadPayloadSchemas(d).keys()]).to.deep.equal(['pressure']);
  });

  it('lets schemas refer to each other by $id', () => {
    const d = folder({
      'base.schema.json': '{"$id":"base","type":"object","required":["value"],"properties":{"value":{"type":"number"}}}',
      'derived.schema.json': '{"$id":"derived","$ref":"base"}',
    });
    const derived = loadPayloadSchemas(d).get('derived');
    expect(derived?.({ value: 1 })).to.equal(true);
    expect(derived?.({})).to.equal(false);
  });

  it('yields no schemas for a missing folder', () => {
    expect(loadPayloadSchemas(join(dir, 'absent')).size).to.equal(0);
  });

  it('refuses a file that is not JSON', () => {
    expect(codeOf(() => loadPayloadSchemas(folder({ 'x.schema.json': '{' })))).to.equal('UNS_ERR_SCHEMA_INVALID');
  });

  it('refuses a schema that breaks strict mode', () => {
    const d = folder({ 'x.schema.json': '{"type":"object","propertees":{}}' });
    expect(codeOf(() => loadPayloadSchemas(d))).to.equal('UNS_ERR_SCHEMA_INVALID');
  });

  it('refuses two files with the same $id', () => {
    const d = folder({ 'a.schema.json': '{"$id":"same"}', 'b.schema.json': '{"$id":"same"}' });
    expect(codeOf(() => loadPayloadSchemas(d))).to.equal('UNS_ERR_SCHEMA_INVALID');
  });

  it('names the route whose schema is missing', () => {
    const ns = namespaceFromObject({
      version: 1,
      levels: [],
      routes: [{ name: 'temperature', filter: 'acme/#', encoding: 'json', schema: 'nope' }],
    });
    try {
      assertSchemasExist(ns, shipped());
      expect.fail('expected UNS_ERR_SCHEMA_NOT_FOUND');
    } catch (err) {
      expect(err).to.be.instanceOf(UnsError);
      expect((err as UnsError).code).to.equal('UNS_ERR_SCHEMA_NOT_FOUND');
      expect((err as UnsError).message).to.contain('temperature').and.contain('nope');
    }
  });
});
