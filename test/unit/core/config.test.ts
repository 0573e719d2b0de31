import { expect } from 'chai';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { loadConfig, DEFAULTS } from '../../../src/core/config.js';
import { UnsError } from '../../../src/core/errors.js';

function failure(env: Record<string, string>, over: Record<string, unknown> = {}): UnsError {
  try {
    loadConfig(env, over);
  } catch (e) {
    expect(e).to.be.instanceOf(UnsError);
    return e as UnsError;
  }
  throw new Error('expected loadConfig to fail');
}

describe('config', () => {
  it('starts from the embedded defaults', () => {
    const c = loadConfig({});
    expect(c.mqtt.port).to.equal(1883);
    expect(c.http.port).to.equal(8080);
    expect(c.mqtt.wsPath).to.equal('/mqtt');
    expect(c.database.url).to.equal(null);
    expect(c.dataDir).to.match(/data$/);
    expect(DEFAULTS.store.highWaterItems).to.be.greaterThan(DEFAULTS.store.lowWaterItems);
  });

  it('reads UNS_* variables into typed values', () => {
    const c = loadConfig({ UNS_MQTT_PORT: '11883', UNS_HTTP_PORT: '18080', UNS_WS_PATH: '/ws/mqtt', UNS_DATA_DIR: '/tmp/x', UNS_TOPICS: '/tmp/t.yaml' });
    expect(c.mqtt.port).to.equal(11883);
    expect(c.http.port).to.equal(18080);
    expect(c.mqtt.wsPath).to.equal('/ws/mqtt');
    expect(c.dataDir).to.equal('/tmp/x');
    expect(c.topicsFile).to.equal('/tmp/t.yaml');
  });

  it('reads a secret from NAME_FILE (Docker secrets), the variable itself winning; an unreadable file is named', () => {
    const dir = mkdtempSync(join(tmpdir(), 'uns-cfg-'));
    writeFileSync(join(dir, 'pw'), 'from-a-file-123\n');
    const c = loadConfig({ UNS_ADMIN_USER: 'ops', UNS_ADMIN_PASSWORD_FILE: join(dir, 'pw') });
    expect(c.auth.adminPassword).to.equal('from-a-file-123');
    expect(loadConfig({ UNS_ADMIN_USER: 'ops', UNS_ADMIN_PASSWORD: 'direct-value-1', UNS_ADMIN_PASSWORD_FILE: join(dir, 'pw') }).auth.adminPassword).to.equal('direct-value-1');
    const e = failure({ UNS_JWT_SECRET_FILE: join(dir, 'missing') });
    expect(e.message).to.contain('UNS_JWT_SECRET_FILE').and.contain('cannot read');
  });

  it('takes DATABASE_URL, and UNS_DATABASE_URL over it', () => {
    expect(loadConfig({ DATABASE_URL: 'postgres://a@h/db' }).database.url).to.equal('postgres://a@h/db');
    expect(loadConfig({ DATABASE_URL: 'postgres://a@h/db', UNS_DATABASE_URL: 'postgresql://b@h/db' }).database.url).to.equal('postgresql://b@h/db');
  });

  it('bounds heap growth between full collections by default (200%), takes 0 for V8\'s own, and refuses what is out of range', () => {
    expect(loadConfig({}).memory.heapGrowingPercent).to.equal(200);
    expect(loadConfig({ UNS_HEAP_GROWING_PERCENT: '0' }).memory.heapGrowingPercent).to.equal(0);
    expect(loadConfig({ UNS_HEAP_GROWING_PERCENT: '50' }).memory.heapGrowingPercent).to.equal(50);
    for (const bad of ['-1', '1001', 'lots']) {
      const e = failure({ UNS_HEAP_GROWING_PERCENT: bad });
      expect(e.code).to.equal('UNS_ERR_CONFIG_INVALID');
      expect(e.message).to.contain('UNS_HEAP_GROWING_PERCENT').and.to.contain(bad);
    }
  });

  it('names the variable and the value of a non-integer port', () => {
    const e = failure({ UNS_MQTT_PORT: 'abc' });
    expect(e.code).to.equal('UNS_ERR_CONFIG_INVALID');
    expect(e.message).to.contain('UNS_MQTT_PORT').and.to.contain('abc');
  });

  it('names the variable of an out-of-range port', () => {
    const e = failure({ UNS_HTTP_PORT: '70000' });
    expect(e.code).to.equal('UNS_ERR_CONFIG_INVALID');
    expect(e.message).to.contain('UNS_HTTP_PORT').and.to.contain('70000');
  });

  it('refuses a database URL that is not PostgreSQL without echoing it', () => {
    const e = failure({ UNS_DATABASE_URL: 'mysql://root:secret@h/db' });
    expect(e.code).to.equal('UNS_ERR_CONFIG_INVALID');
    expect(e.message).to.contain('UNS_DATABASE_URL').and.not.to.contain('secret');
  });

  it('never echoes the admin password', () => {
    const e = failure({ UNS_ADMIN_USER: 'admin', UNS_ADMIN_PASSWORD: 'short' });
    expect(e.code).to.equal('UNS_ERR_CONFIG_INVALID');
    expect(e.message).to.contain('UNS_ADMIN_PASSWORD').and.not.to.contain('short');
  });

  it('wants the admin user and password together', () => {
    expect(failure({ UNS_ADMIN_USER: 'admin' }).code).to.equal('UNS_ERR_CONFIG_INVALID');
  });

  it('merges a YAML config file under the environment', () => {
    const dir = mkdtempSync(join(tmpdir(), 'uns-cfg-'));
    const file = join(dir, 'uns.yaml');
    writeFileSync(file, 'mqtt:\n  port: 2883\n  maxPacketBytes: 65536\nstore:\n  batchMaxItems: 100\n');
    const c = loadConfig({ UNS_CONFIG: file, UNS_MQTT_PORT: '3883' });
    expect(c.mqtt.port).to.equal(3883);
    expect(c.mqtt.maxPacketBytes).to.equal(65536);
    expect(c.store.batchMaxItems).to.equal(100);
    expect(c.mqtt.wsPath).to.equal('/mqtt');
  });

  it('names an unknown key in the config file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'uns-cfg-'));
    const file = join(dir, 'uns.json');
    writeFileSync(file, JSON.stringify({ mqtt: { prot: 1 } }));
    const e = failure({ UNS_CONFIG: file });
    expect(e.code).to.equal('UNS_ERR_CONFIG_INVALID');
    expect(e.message).to.contain('prot');
  });

  it('refuses an unreadable config file', () => {
    expect(failure({ UNS_CONFIG: '/nonexistent/uns.yaml' }).code).to.equal('UNS_ERR_CONFIG_INVALID');
  });

  it('refuses a low-water mark at or above the high-water mark', () => {
    expect(failure({}, { store: { highWaterItems: 10, lowWaterItems: 10 } }).code).to.equal('UNS_ERR_CONFIG_INVALID');
  });

  it('is frozen', () => {
    const c = loadConfig({});
    expect(Object.isFrozen(c)).to.equal(true);
    expect(Object.isFrozen(c.mqtt)).to.equal(true);
    expect(() => { (c.mqtt as { port: number }).port = 1; }).to.throw(TypeError);
  });
});
