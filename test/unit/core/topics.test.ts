import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UnsError, type ErrorCode } from '../../../src/core/errors.js';
import { packageRoot } from '../../../src/core/paths.js';
import { loadTopics, namespaceFromObject, parseDuration, type Namespace } from '../../../src/core/topics.js';

const ACCEPTANCE_TOPIC = 'acme/plant1/packaging/line1/filler/temperature';

/** A small valid topics.yaml; tests replace one line to break it. */
const BASE = `version: 1
levels:
  - name: enterprise
    allowed: [acme]
  - name: site
    allowed: [plant1, plant2]
  - name: line
    pattern: "line[0-9]{1,3}"
routes:
  - name: temperature
    filter: acme/+/+/temperature
    encoding: json
    unit: "°C"
  - name: sparkplug
    filter: spBv1.0/#
    encoding: sparkplugb
  - name: catch-all
    filter: acme/#
    encoding: json
    retention: 30d
roles:
  plc: { write: ["acme/#"] }
  scada: { read: ["acme/#"] }
users:
  - username: line1-plc
    passwordHash: "scrypt$abc"
    roles: [plc]
anonymous: scada
`;

/** 1-based line number of the first line containing `marker`. */
function lineOf(text: string, marker: string): number {
  const index = text.split('\n').findIndex((l) => l.includes(marker));
  if (index === -1) throw new Error(`marker ${marker} not in text`);
  return index + 1;
}

function thrown(fn: () => unknown): UnsError {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(UnsError);
    return err as UnsError;
  }
  expect.fail('expected an UnsError');
}

function expectCode(err: UnsError, code: ErrorCode): void {
  expect(err.code).to.equal(code);
}

describe('topics', () => {
  let dir: string;
  let n = 0;
  const write = (text: string): string => {
    const file = join(dir, `topics-${n++}.yaml`);
    writeFileSync(file, text);
    return file;
  };
  /** Loads `text` expecting UNS_ERR_TOPICS_INVALID with a problem reported on `line`. */
  const expectInvalidAt = (text: string, line: number): UnsError => {
    const file = write(text);
    const err = thrown(() => loadTopics(file));
    expectCode(err, 'UNS_ERR_TOPICS_INVALID');
    expect(err.message).to.contain(`${file}:${line}:`);
    return err;
  };

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'uns-topics-'));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  describe('shipped topics.yaml', () => {
    let ns: Namespace;
    before(() => {
      ns = loadTopics(join(packageRoot(), 'topics.yaml'));
    });

    it('routes the acceptance topic to temperature in °C', () => {
      const route = ns.matchRoute(ACCEPTANCE_TOPIC);
      expect(route?.name).to.equal('temperature');
      expect(route?.unit).to.equal('°C');
      expect(route?.encoding).to.equal('json');
      expect(route?.schema).to.equal('measurement');
      expect(route?.store).to.equal(true);
      expect(route?.isa95).to.equal(true);
    });

    it('resolves the acceptance topic to its ISA-95 path', () => {
      expect(ns.checkLevels(ACCEPTANCE_TOPIC)).to.deep.equal({
        path: { enterprise: 'acme', site: 'plant1', area: 'packaging', line: 'line1', cell: 'filler' },
      });
    });

    it('sends unknown tags under acme/ to the catch-all and Sparkplug to sparkplugb without ISA-95', () => {
      expect(ns.matchRoute('acme/plant2/brewing/line2/kettle/vibration')?.name).to.equal('catch-all');
      const sp = ns.matchRoute('spBv1.0/plant1/NDATA/edge1');
      expect(sp?.encoding).to.equal('sparkplugb');
      expect(sp?.isa95).to.equal(false);
    });

    it('routes nothing outside the namespace', () => {
      expect(ns.matchRoute('other/thing')).to.equal(undefined);
      expect(ns.matchRoute('$SYS/broker/uptime')).to.equal(undefined);
    });

    it('ships no users and no anonymous access', () => {
      expect(ns.users.size).to.equal(0);
      expect(ns.anonymousRole).to.equal(null);
      expect([...ns.roles.keys()]).to.include.members(['admin', 'plc', 'scada', 'analyst']);
    });

    it('is frozen', () => {
      expect(Object.isFrozen(ns)).to.equal(true);
      expect(Object.isFrozen(ns.routes)).to.equal(true);
      expect(Object.isFrozen(ns.routes[0])).to.equal(true);
      expect(Object.isFrozen(ns.levels)).to.equal(true);
      expect(Object.isFrozen(ns.roles.get('plc')?.write)).to.equal(true);
      const check = ns.checkLevels(ACCEPTANCE_TOPIC);
      expect(Object.isFrozen(check)).to.equal(true);
      expect('path' in check && Object.isFrozen(check.path)).to.equal(true);
    });
  });

  describe('checkLevels', () => {
    let ns: Namespace;
    before(() => {
      ns = loadTopics(write(BASE));
    });

    it('names the level and value when a site is not allowed', () => {
      const r = ns.checkLevels('acme/plant9/line1/temperature');
      expect(r).to.have.property('reason').that.contains('site').and.contains('plant9');
    });

    it('names the level when the value breaks its pattern', () => {
      const r = ns.checkLevels('acme/plant1/belt7/temperature');
      expect(r).to.have.property('reason').that.contains('line').and.contains('belt7');
    });

    it('names the missing level when the topic is too short', () => {
      const r = ns.checkLevels('acme/plant1');
      expect(r).to.have.property('reason').that.contains('line');
    });

    it('refuses an empty level', () => {
      expect(ns.checkLevels('acme//line1/x')).to.have.property('reason').that.contains('site');
    });

    it('anchors patterns: a partial match is not a match', () => {
      expect(ns.checkLevels('acme/plant1/xline1/t')).to.have.property('reason');
      expect(ns.checkLevels('acme/plant1/line1x/t')).to.have.property('reason');
    });

    it('gives the same answer from its cache', () => {
      const a = ns.checkLevels('acme/plant2/line3/temperature');
      expect(a).to.deep.equal({ path: { enterprise: 'acme', site: 'plant2', line: 'line3' } });
      expect(ns.checkLevels('acme/plant2/line3/temperature')).to.equal(a);
    });

    it('applies route defaults: store true, isa95 false only for sparkplugb, retention in ms', () => {
      const [temperature, sparkplug, catchAll] = ns.routes;
      expect(temperature).to.include({ store: true, isa95: true });
      expect(sparkplug).to.include({ store: true, isa95: false });
      expect(catchAll).to.include({ retention: '30d', retentionMs: 30 * 86_400_000 });
      expect(ns.users.get('line1-plc')?.roles).to.deep.equal(['plc']);
      expect(ns.anonymousRole).to.equal('scada');
    });
  });

  describe('loadTopics errors', () => {
    it('reports a bad enum value on its line', () => {
      const text = BASE.replace('encoding: sparkplugb', 'encoding: protobuf');
      expectInvalidAt(text, lineOf(text, 'protobuf'));
    });

    it('reports an unknown key on its line', () => {
      const text = BASE.replace('    retention: 30d', '    retention: 30d\n    retension: 30d');
      expectInvalidAt(text, lineOf(text, 'retension'));
    });

    it('reports a missing required key on the line of its parent', () => {
      const text = BASE.replace('    filter: spBv1.0/#\n', '');
      expectInvalidAt(text, lineOf(text, 'name: sparkplug'));
    });

    it('reports a malformed retention on its line', () => {
      const text = BASE.replace('retention: 30d', 'retention: 30 days');
      expectInvalidAt(text, lineOf(text, 'retention'));
    });

    it('reports a YAML syntax error with its line', () => {
      const text = BASE.replace('  plc: { write: ["acme/#"] }', '  plc: { write: ["acme/#" }');
      const err = expectInvalidAt(text, lineOf(text, 'plc: {'));
      expect(err.message).to.match(/:\d+:\d+ /);
    });

    it('reports a duplicate YAML key', () => {
      const text = BASE.replace('anonymous: scada', 'anonymous: scada\nanonymous: plc');
      expectInvalidAt(text, lineOf(text, 'anonymous: plc'));
    });

    it('reports a level pattern that is not a regular expression', () => {
      const text = BASE.replace('pattern: "line[0-9]{1,3}"', 'pattern: "line[0-9"');
      expectInvalidAt(text, lineOf(text, 'pattern:'));
    });

    it('does not let an unbalanced pattern escape its anchors', () => {
      const text = BASE.replace('pattern: "line[0-9]{1,3}"', 'pattern: "line1)|(.*"');
      expectInvalidAt(text, lineOf(text, 'pattern:'));
    });

    it('reports a level with both allowed and pattern', () => {
      const text = BASE.replace('    allowed: [plant1, plant2]', '    allowed: [plant1, plant2]\n    pattern: "plant[0-9]"');
      expectInvalidAt(text, lineOf(text, 'name: site'));
    });

    it('reports a duplicate route name on the second one', () => {
      const text = BASE.replace('name: catch-all', 'name: temperature');
      expectInvalidAt(text, lineOf(text, 'filter: acme/#') - 1);
    });

    it('reports an invalid route filter [MQTT-4.7.1-2]', () => {
      const text = BASE.replace('filter: acme/#', 'filter: acme/#/x');
      expectInvalidAt(text, lineOf(text, 'acme/#/x'));
    });

    it('reports a route that an earlier route hides (first match wins)', () => {
      const text = BASE.replace('filter: acme/+/+/temperature', 'filter: acme/#');
      // now routes[0] covers catch-all's acme/#
      expectInvalidAt(text, lineOf(text, 'retention: 30d') - 2);
    });

    it('reports an isa95 route whose filter can never pass the level rules', () => {
      const text = BASE.replace('filter: acme/+/+/temperature', 'filter: acme/plant9/+/temperature');
      expectInvalidAt(text, lineOf(text, 'plant9'));
    });

    it('reports an invalid filter in a role', () => {
      const text = BASE.replace('scada: { read: ["acme/#"] }', 'scada: { read: ["acme/+x"] }');
      expectInvalidAt(text, lineOf(text, 'acme/+x'));
    });

    it('reports a user with an unknown role', () => {
      const text = BASE.replace('roles: [plc]', 'roles: [operator]');
      expectInvalidAt(text, lineOf(text, 'operator'));
    });

    it('reports an anonymous role that does not exist', () => {
      const text = BASE.replace('anonymous: scada', 'anonymous: guest');
      expectInvalidAt(text, lineOf(text, 'guest'));
    });

    it('reports a duplicate username', () => {
      const text = BASE.replace(
        'anonymous: scada',
        '  - username: line1-plc\n    passwordHash: "scrypt$def"\n    roles: [plc]\nanonymous: scada',
      );
      expectInvalidAt(text, text.split('\n').lastIndexOf('  - username: line1-plc') + 1);
    });

    it('reports an empty file', () => {
      expectInvalidAt('', 1);
    });

    it('reports a missing file', () => {
      expectCode(thrown(() => loadTopics(join(dir, 'absent.yaml'))), 'UNS_ERR_TOPICS_INVALID');
    });

    it('lists every schema problem at once', () => {
      const text = BASE.replace('encoding: sparkplugb', 'encoding: protobuf').replace('anonymous: scada', 'anonymous: 5');
      const err = expectInvalidAt(text, lineOf(text, 'protobuf'));
      expect(err.message).to.contain(`:${lineOf(text, 'anonymous')}:`);
    });
  });

  describe('namespaceFromObject', () => {
    const minimal = {
      version: 1,
      levels: [{ name: 'enterprise', allowed: ['acme'] }],
      routes: [{ name: 'all', filter: 'acme/#', encoding: 'json' }],
    };

    it('builds a namespace without source text', () => {
      const ns = namespaceFromObject(minimal);
      expect(ns.file).to.equal('<inline>');
      expect(ns.matchRoute('acme/x')?.name).to.equal('all');
      expect(ns.checkLevels('acme/x')).to.deep.equal({ path: { enterprise: 'acme' } });
      expect(ns.roles.size).to.equal(0);
      expect(ns.anonymousRole).to.equal(null);
    });

    it('does not share state with the object it was given', () => {
      const obj = structuredClone(minimal);
      const ns = namespaceFromObject(obj);
      obj.routes[0]!.filter = 'other/#';
      expect(ns.routes[0]?.filter).to.equal('acme/#');
    });

    it('applies the same checks, naming the key path', () => {
      const err = thrown(() => namespaceFromObject({ ...minimal, routes: [{ name: 'all', filter: 'acme/#', encoding: 'xml' }] }));
      expectCode(err, 'UNS_ERR_TOPICS_INVALID');
      expect(err.message).to.contain('routes[0].encoding');
    });

    it('refuses what is not an object', () => {
      expectCode(thrown(() => namespaceFromObject(null)), 'UNS_ERR_TOPICS_INVALID');
      expectCode(thrown(() => namespaceFromObject([])), 'UNS_ERR_TOPICS_INVALID');
    });
  });

  describe('parseDuration', () => {
    it('parses each unit into milliseconds (y = 365 days)', () => {
      expect(parseDuration('45s')).to.equal(45_000);
      expect(parseDuration('5m')).to.equal(300_000);
      expect(parseDuration('2h')).to.equal(7_200_000);
      expect(parseDuration('90d')).to.equal(90 * 86_400_000);
      expect(parseDuration('1w')).to.equal(604_800_000);
      expect(parseDuration('1y')).to.equal(365 * 86_400_000);
    });

    it('refuses anything else', () => {
      for (const t of ['', 'd', '1', '1.5d', '-1d', '1 d', '1D', '1ms', ' 1d', '999999999999999y']) {
        expect(parseDuration(t), t).to.equal(null);
      }
    });
  });
});
