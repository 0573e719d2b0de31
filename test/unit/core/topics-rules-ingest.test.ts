import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UnsError } from '../../../src/core/errors.js';
import { packageRoot } from '../../../src/core/paths.js';
import { loadTopics } from '../../../src/core/topics.js';

const BASE = `version: 1
levels:
  - name: enterprise
    allowed: [acme]
  - name: site
routes:
  - name: all
    filter: acme/#
    encoding: json
roles:
  plc: { write: ["acme/#"] }
  scada: { read: ["acme/#"], write: ["spBv1.0/#"] }
`;

const RULES = `rules:
  - name: hot
    filter: acme/+/temperature
    operator: ">"
    threshold: 80
    hysteresis: 2
    minDuration: 30s
  - name: low
    filter: acme/+/level
    operator: "<="
    threshold: 0.5
`;

const INGEST = `ingest:
  - name: erp
    secretEnv: UNS_INGEST_SECRET_ERP
    signature: standard
    role: plc
    allow: ["10.0.0.0/8", "::1"]
    mappings:
      - match: readings[*]
        topic: "acme/{{site}}/temperature"
        value: temperature
        timestamp: ts
  - name: legacy
    secret: "a-literal-secret-for-tests"
    signature: hex
    header: X-Signature
    idField: delivery
    timestampField: sent_at
    tolerance: 2m
    role: plc
    mappings:
      - topic: "acme/{{$.site}}/level"
        value: level
`;

describe('topics - rules and ingest sections', () => {
  let dir: string;
  let n = 0;
  const load = (text: string) => {
    const file = join(dir, `t${n++}.yaml`);
    writeFileSync(file, text);
    return loadTopics(file);
  };
  const failsAt = (text: string, marker: string): string => {
    try {
      load(text);
    } catch (e) {
      expect(e).to.be.instanceOf(UnsError);
      expect((e as UnsError).code).to.equal('UNS_ERR_TOPICS_INVALID');
      const line = text.split('\n').findIndex((l) => l.includes(marker)) + 1;
      expect((e as UnsError).message).to.match(new RegExp(`:${line}:\\d+ `));
      return (e as UnsError).message;
    }
    return expect.fail('expected UNS_ERR_TOPICS_INVALID');
  };

  before(() => { dir = mkdtempSync(join(tmpdir(), 'uns-topics-ri-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('loads rules with defaults and durations in milliseconds', () => {
    const ns = load(BASE + RULES);
    expect(ns.rules.map((r) => [r.name, r.operator, r.threshold, r.hysteresis, r.minDurationMs, r.enabled])).to.deep.equal([
      ['hot', '>', 80, 2, 30_000, true], ['low', '<=', 0.5, 0, 0, true],
    ]);
    expect(Object.isFrozen(ns.rules[0])).to.equal(true);
  });

  it('loads ingest sources with their mappings compiled', () => {
    const ns = load(BASE + INGEST);
    const [erp, legacy] = ns.ingest;
    expect(erp).to.deep.include({ name: 'erp', signature: 'standard', secret: { env: 'UNS_INGEST_SECRET_ERP' }, header: 'webhook-signature', idHeader: 'webhook-id', toleranceS: 300, role: 'plc' });
    expect(erp?.mappings[0]?.topic.filter).to.equal('acme/+/temperature');
    expect(legacy).to.deep.include({ header: 'x-signature', idHeader: null, toleranceS: 120, secret: { literal: 'a-literal-secret-for-tests' } });
    expect(legacy?.timestampField?.text).to.equal('sent_at');
  });

  it('keeps the shipped topics.yaml valid, with its rule', () => {
    const ns = loadTopics(join(packageRoot(), 'topics.yaml'));
    expect(ns.rules.map((r) => r.name)).to.include('boiler-overtemp');
    expect(ns.ingest).to.deep.equal([]);
    expect(readFileSync(join(packageRoot(), 'topics.yaml'), 'utf8')).to.not.match(/^\s*secret:/m);
  });

  it('reports a bad operator, filter and duration on their lines', () => {
    failsAt(BASE + RULES.replace('operator: ">"', 'operator: "!="'), 'operator: "!="');
    failsAt(BASE + RULES.replace('filter: acme/+/level', 'filter: acme/#/level'), 'acme/#/level');
    failsAt(BASE + RULES.replace('minDuration: 30s', 'minDuration: soon'), 'minDuration: soon');
    expect(failsAt(BASE + RULES.replace('name: low', 'name: hot # again'), 'hot # again')).to.contain('duplicate');
  });

  it('refuses ingest sources with unsafe or impossible settings', () => {
    expect(failsAt(BASE + INGEST.replace('secretEnv: UNS_INGEST_SECRET_ERP', 'secretEnv: UNS_JWT_SECRET'), 'secretEnv: UNS_JWT_SECRET')).to.contain('UNS_INGEST_SECRET_');
    failsAt(BASE + INGEST.replace('    secretEnv: UNS_INGEST_SECRET_ERP\n', ''), '- name: erp');
    failsAt(BASE + INGEST.replace('tolerance: 2m', 'tolerance: 10m'), 'tolerance: 10m');
    failsAt(BASE + INGEST.replace('"10.0.0.0/8"', '"10.0.0.0/33"'), '10.0.0.0/33');
    failsAt(BASE + INGEST.replace('topic: "acme/{{site}}/temperature"', 'topic: "acme/{{readings[*]}}/t"'), 'acme/{{readings[*]}}/t');
    expect(failsAt(BASE + INGEST.replace('role: plc\n    allow', 'role: scada\n    allow'), 'topic: "acme/{{site}}/temperature"')).to.contain('may not write');
    failsAt(BASE + INGEST.replace('role: plc\n    allow', 'role: nobody\n    allow'), 'role: nobody');
    failsAt(BASE + INGEST.replace('signature: standard', 'signature: standard\n    header: X-Sig'), 'header: X-Sig');
  });
});
