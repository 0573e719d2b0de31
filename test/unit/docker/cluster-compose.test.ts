/**
 * docker/compose.cluster.yaml and docker/haproxy.cfg agree with each other and with the server: every UNS_*
 * variable they set is one the server reads, both instances join the same Redis and expect the PROXY header
 * HAProxy sends them, each keeps its own data dir, and the balancer sends MQTT and HTTP to both.
 */
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { ENV_KEYS } from '../../../src/core/config.js';
import { packageRoot } from '../../../src/core/paths.js';

interface Service { environment?: Record<string, string>; volumes?: string[]; ports?: string[]; image?: string; command?: string[] }

describe('docker cluster profile (compose.cluster.yaml + haproxy.cfg)', () => {
  const dir = join(packageRoot(), 'docker');
  const compose = parse(readFileSync(join(dir, 'compose.cluster.yaml'), 'utf8'), { merge: true }) as { services: Record<string, Service> };
  const haproxy = readFileSync(join(dir, 'haproxy.cfg'), 'utf8');
  const instances = ['uns-bridge-1', 'uns-bridge-2'];
  const known = new Set(ENV_KEYS.map(([name]) => name));

  it('runs TimescaleDB, Redis, two instances and HAProxy', () => {
    expect(Object.keys(compose.services).sort()).to.deep.equal(['haproxy', 'redis', 'timescaledb', ...instances].sort());
  });

  it('sets only variables the server reads, the same cluster for both instances, and the PROXY header on', () => {
    for (const name of instances) {
      const env = compose.services[name]?.environment ?? {};
      for (const key of Object.keys(env)) {
        const base = key.endsWith('_FILE') ? key.slice(0, -5) : key;
        expect(known.has(base), `${name}: ${key}`).to.equal(true);
      }
      expect(env['UNS_CLUSTER'], name).to.equal('redis://redis:6379');
      expect(env['UNS_MQTT_PROXY_PROTOCOL'], name).to.equal('on');
    }
  });

  it('gives each instance a data dir of its own', () => {
    const data = instances.map((n) => (compose.services[n]?.volumes ?? []).find((v) => v.endsWith(':/data')));
    expect(data.every((v) => v !== undefined)).to.equal(true);
    expect(new Set(data).size).to.equal(instances.length);
  });

  it('balances MQTT (with PROXY v2) and HTTP over both instances, checking /ready, and publishes only the balancer', () => {
    const backend = (name: string): string => haproxy.split(/\n(?=backend |frontend )/).find((b) => b.startsWith(`backend ${name}`)) ?? '';
    const mqtt = backend('uns_mqtt');
    const http = backend('uns_http');
    for (const n of instances) {
      expect(mqtt).to.include(`${n}:1883`);
      expect(http).to.include(`${n}:8080`);
    }
    expect(mqtt).to.match(/send-proxy-v2/);
    expect(mqtt).to.match(/httpchk GET \/ready/);
    expect(http).to.match(/httpchk GET \/ready/);
    expect(compose.services['haproxy']?.ports).to.deep.equal(['1883:1883', '8080:8080']);
    for (const n of instances) expect(compose.services[n]?.ports, n).to.equal(undefined);
  });
});
