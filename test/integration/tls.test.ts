/**
 * TLS: MQTT over TLS on its own port, HTTPS and WSS on the HTTP port, certificates renewed in place
 * (file change and SIGHUP-style reload), a bad renewal kept out of service, and client certificates that
 * stand for a user. Certificates are made by openssl for each run; clients are MQTT.js, Node's TLS and
 * mosquitto_pub over real sockets.
 */
import { expect } from 'chai';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, renameSync, rmSync, copyFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { connect as tlsConnect } from 'node:tls';
import { request as httpsRequest } from 'node:https';
import { request as httpRequest } from 'node:http';
import { connect as netConnect } from 'node:net';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { TestPostgres } from '../helpers/postgres.js';
import { makePki } from '../helpers/pki.js';
import { ADMIN, cleanup, hashPassword, publish, startTestServer, testConfig, waitFor } from '../helpers/server.js';
import { loadConfig } from '../../src/core/config.js';
import type { RunningServer } from '../../src/main.js';

/** The SHA-256 fingerprint of the certificate a TLS port serves now. */
function servedFingerprint(port: number, ca: Buffer): Promise<string> {
  return new Promise((res, rej) => {
    const s = tlsConnect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => {
      const fp = s.getPeerCertificate().fingerprint256;
      s.end();
      res(fp);
    });
    s.once('error', rej);
  });
}

function mqttsConnect(port: number, opts: IClientOptions): Promise<MqttClient> {
  const client = mqtt.connect(`mqtts://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 5000, servername: 'localhost', ...opts });
  return new Promise((res, rej) => {
    client.once('connect', () => { client.removeAllListeners('error'); client.on('error', () => undefined); res(client); });
    client.once('error', (e) => { client.end(true); rej(e); });
    client.once('close', () => rej(new Error('closed before CONNACK')));
  });
}

function getText(port: number, path: string, ca: Buffer): Promise<{ status: number; text: string }> {
  return new Promise((res, rej) => {
    const req = httpsRequest({ host: '127.0.0.1', port, path, ca, servername: 'localhost' }, (r) => {
      let text = '';
      r.on('data', (c: Buffer) => { text += c.toString(); });
      r.on('end', () => res({ status: r.statusCode ?? 0, text }));
    });
    req.once('error', rej);
    req.end();
  });
}

function fingerprintOf(file: string): string {
  return execFileSync('openssl', ['x509', '-in', file, '-noout', '-fingerprint', '-sha256'], { encoding: 'utf8' }).trim().split('=')[1] as string;
}

describe('TLS: MQTT over TLS, HTTPS/WSS, certificate reload, client certificates', function () {
  this.timeout(60_000);
  let pg: TestPostgres;
  let pki: string;
  let certDir: string;
  let server: RunningServer | null = null;
  let ca: Buffer;

  before(async () => {
    pg = new TestPostgres();
    await pg.start();
    pki = mkdtempSync(join(tmpdir(), 'uns-pki-'));
    makePki(pki);
    ca = readFileSync(join(pki, 'test-ca.crt'));
  });
  after(async () => {
    await pg.stop();
    rmSync(pki, { recursive: true, force: true });
  });
  beforeEach(() => {
    // The files the server is configured with: a copy, so renewals can be staged in place.
    certDir = mkdtempSync(join(tmpdir(), 'uns-certs-'));
    copyFileSync(join(pki, 'server-a.crt'), join(certDir, 'server.crt'));
    copyFileSync(join(pki, 'server-a.key'), join(certDir, 'server.key'));
  });
  afterEach(async () => {
    if (server) {
      await server.stop();
      cleanup(server.config);
      server = null;
    }
    rmSync(certDir, { recursive: true, force: true });
  });

  const tlsConfig = (tlsOver: Record<string, unknown> = {}) => testConfig(pg.url, {
    tls: { certPath: join(certDir, 'server.crt'), keyPath: join(certDir, 'server.key'), mqttPort: 0, watchIntervalMs: 100, ...tlsOver },
  });

  it('serves MQTT over TLS beside plain MQTT, HTTPS and MQTT over WSS; stored messages are the same', async () => {
    server = await startTestServer(tlsConfig());
    expect(server.https).to.equal(true);
    expect(server.mqttsPort).to.be.a('number').and.not.equal(server.mqttPort);

    const overTls = await mqttsConnect(server.mqttsPort as number, { ca, username: ADMIN.username, password: ADMIN.password });
    await publish(overTls, 'acme/plant1/packaging/line1/filler/temperature', '{"value": 71.5}');
    overTls.end();
    const plain = mqtt.connect(`mqtt://127.0.0.1:${server.mqttPort}`, { username: ADMIN.username, password: ADMIN.password, reconnectPeriod: 0 });
    await new Promise<void>((res, rej) => { plain.once('connect', () => res()); plain.once('error', rej); });
    await publish(plain, 'acme/plant1/packaging/line1/filler/pressure', '{"value": 2.5}');
    plain.end();
    const wss = mqtt.connect(`wss://127.0.0.1:${server.httpPort}/mqtt`, { ca, servername: 'localhost', username: ADMIN.username, password: ADMIN.password, reconnectPeriod: 0 });
    await new Promise<void>((res, rej) => { wss.once('connect', () => res()); wss.once('error', rej); });
    await publish(wss, 'acme/plant1/packaging/line1/filler/speed', '{"value": 120}');
    wss.end();

    const { rows } = await server.store.pool.query<{ name: string }>(
      `SELECT t.name FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name LIKE 'acme/plant1/packaging/line1/filler/%' ORDER BY t.name`);
    expect(rows.map((r) => r.name)).to.deep.equal([
      'acme/plant1/packaging/line1/filler/pressure', 'acme/plant1/packaging/line1/filler/speed', 'acme/plant1/packaging/line1/filler/temperature']);

    const ready = await getText(server.httpPort, '/ready', ca);
    expect(ready.status).to.equal(200);
    const metrics = await getText(server.httpPort, '/metrics', ca);
    const notAfter = execFileSync('openssl', ['x509', '-in', join(pki, 'server-a.crt'), '-noout', '-enddate'], { encoding: 'utf8' }).trim().split('=')[1] as string;
    expect(metrics.text).to.contain(`uns_tls_certificate_expiry_timestamp_seconds ${Math.floor(Date.parse(notAfter) / 1000)}`);
    // Plain HTTP on the HTTPS port gets no answer of the API.
    const plainStatus = await new Promise<number | string>((res) => {
      const req = httpRequest({ host: '127.0.0.1', port: server!.httpPort, path: '/ready' }, (r) => { r.resume(); res(r.statusCode ?? 0); });
      req.once('error', (e: NodeJS.ErrnoException) => res(e.code ?? 'error'));
      req.end();
    });
    expect(plainStatus).to.not.equal(200);
  });

  it('counts a plain MQTT CONNECT on the TLS port as a failed handshake and keeps serving', async () => {
    server = await startTestServer(tlsConfig());
    const port = server.mqttsPort as number;
    await new Promise<void>((res) => {
      const s = netConnect(port, '127.0.0.1', () => s.write(Buffer.from('101000044d5154540402003c0004746573740000', 'hex')));
      s.on('error', () => undefined);
      s.on('close', () => res());
    });
    await waitFor(() => server!.broker!.stats.tlsHandshakeFailures >= 1, 5_000, 'the handshake failure counted');
    const c = await mqttsConnect(port, { ca, username: ADMIN.username, password: ADMIN.password });
    c.end();
  });

  it('mosquitto_pub --cafile publishes over TLS and the message is stored', async () => {
    if (!existsSync('/usr/bin/mosquitto_pub')) throw new Error('mosquitto_pub not installed: apt-get install mosquitto-clients (see .ci/run)');
    server = await startTestServer(tlsConfig());
    const code = await new Promise<number | null>((res) => {
      const p = spawn('mosquitto_pub', ['-h', 'localhost', '-p', String(server!.mqttsPort), '--cafile', join(pki, 'test-ca.crt'),
        '-u', ADMIN.username, '-P', ADMIN.password, '-q', '1', '-t', 'acme/plant2/packaging/line1/filler/temperature', '-m', '{"value": 64}'], { stdio: 'ignore' });
      p.on('exit', res);
    });
    expect(code).to.equal(0);
    const { rows } = await server.store.pool.query<{ v: number }>(
      `SELECT s.v_num AS v FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name = 'acme/plant2/packaging/line1/filler/temperature'`);
    expect(rows.map((r) => r.v)).to.deep.equal([64]);
  });

  it('serves a renewed certificate once its files change, on MQTT and HTTPS, without dropping open connections', async () => {
    server = await startTestServer(tlsConfig());
    const mqttsPort = server.mqttsPort as number;
    const a = fingerprintOf(join(pki, 'server-a.crt'));
    const b = fingerprintOf(join(pki, 'server-b.crt'));
    expect(await servedFingerprint(mqttsPort, ca)).to.equal(a);
    const open = await mqttsConnect(mqttsPort, { ca, username: ADMIN.username, password: ADMIN.password });

    // As renewals land: the new files written beside, then renamed over the old ones.
    copyFileSync(join(pki, 'server-b.key'), join(certDir, 'server.key.new'));
    copyFileSync(join(pki, 'server-b.crt'), join(certDir, 'server.crt.new'));
    renameSync(join(certDir, 'server.key.new'), join(certDir, 'server.key'));
    renameSync(join(certDir, 'server.crt.new'), join(certDir, 'server.crt'));

    await waitFor(async () => (await servedFingerprint(mqttsPort, ca)) === b, 10_000, 'the renewed certificate on MQTT');
    await waitFor(async () => (await servedFingerprint(server!.httpPort, ca)) === b, 10_000, 'the renewed certificate on HTTPS');
    expect(open.connected).to.equal(true);
    await publish(open, 'acme/plant1/packaging/line4/filler/temperature', '{"value": 1}');
    open.end();
  });

  it('keeps the certificate in service when a renewal is half written (new certificate, old key), on reload too', async () => {
    server = await startTestServer(tlsConfig({ watchIntervalMs: 60_000 }));
    const mqttsPort = server.mqttsPort as number;
    const a = fingerprintOf(join(pki, 'server-a.crt'));
    copyFileSync(join(pki, 'server-b.crt'), join(certDir, 'server.crt'));
    expect(await server.reload('test')).to.deep.equal({ tls: false, topics: 'unchanged' });
    expect(await servedFingerprint(mqttsPort, ca)).to.equal(a);
    // The key arrives: the next reload (SIGHUP) applies the pair.
    copyFileSync(join(pki, 'server-b.key'), join(certDir, 'server.key'));
    expect(await server.reload('test')).to.deep.equal({ tls: true, topics: 'unchanged' });
    expect(await servedFingerprint(mqttsPort, ca)).to.equal(fingerprintOf(join(pki, 'server-b.crt')));
  });

  describe('client certificates', () => {
    const plcKey = (): Buffer => readFileSync(join(pki, 'client-plc.key'));
    const plcCert = (): Buffer => readFileSync(join(pki, 'client-plc.crt'));

    async function withPlcUser(s: RunningServer): Promise<void> {
      await s.store.upsertUser('line1-plc', await hashPassword('plc-password-1'), ['plc']);
      await s.reload('test');
    }

    it('optional: a verified certificate stands for the user its CN names, with that user\'s permissions', async () => {
      server = await startTestServer(tlsConfig({ caPath: join(pki, 'test-ca.crt'), clientCerts: 'optional' }));
      await withPlcUser(server);
      const c = await mqttsConnect(server.mqttsPort as number, { ca, key: plcKey(), cert: plcCert(), clientId: 'plc-by-cert' });
      await publish(c, 'acme/plant1/packaging/line3/filler/temperature', '{"value": 42}');
      // The plc role may not write outside acme/# and spBv1.0/#: the broker closes the connection.
      const closed = new Promise<void>((res) => c.once('close', () => res()));
      c.publish('hr/salaries', '1', { qos: 1 });
      await closed;
      const { rows } = await server.store.pool.query<{ v: number }>(
        `SELECT s.v_num AS v FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name = 'acme/plant1/packaging/line3/filler/temperature'`);
      expect(rows.map((r) => r.v)).to.deep.equal([42]);
    });

    it('optional: refuses a certificate naming no known user, a user name that differs from it, and a foreign CA without a password', async () => {
      server = await startTestServer(tlsConfig({ caPath: join(pki, 'test-ca.crt'), clientCerts: 'optional' }));
      await withPlcUser(server);
      const port = server.mqttsPort as number;
      const refused = async (opts: IClientOptions): Promise<number | undefined> => {
        try {
          const c = await mqttsConnect(port, { ca, ...opts });
          c.end();
          return 0;
        } catch (e) {
          return (e as { code?: number }).code;
        }
      };
      expect(await refused({ key: readFileSync(join(pki, 'client-ghost.key')), cert: readFileSync(join(pki, 'client-ghost.crt')) })).to.equal(4);
      expect(await refused({ key: plcKey(), cert: plcCert(), username: ADMIN.username, password: ADMIN.password })).to.equal(4);
      const foreign = { key: readFileSync(join(pki, 'client-foreign.key')), cert: readFileSync(join(pki, 'client-foreign.crt')) };
      expect(await refused(foreign)).to.equal(4);
      // Not verified, so not an identity; the password still works for that connection.
      expect(await refused({ ...foreign, username: 'line1-plc', password: 'plc-password-1' })).to.equal(0);
      expect(server.broker!.stats.connectsRefused['UNS_ERR_AUTH_FAILED']).to.equal(3);
    });

    it('required: a connection without a verified client certificate fails its handshake', async () => {
      server = await startTestServer(tlsConfig({ caPath: join(pki, 'test-ca.crt'), clientCerts: 'required' }));
      await withPlcUser(server);
      const port = server.mqttsPort as number;
      let err: Error | null = null;
      try {
        const c = await mqttsConnect(port, { ca, username: 'line1-plc', password: 'plc-password-1' });
        c.end();
      } catch (e) {
        err = e as Error;
      }
      expect(err, 'a connection without a certificate').to.not.equal(null);
      await waitFor(() => server!.broker!.stats.tlsHandshakeFailures >= 1, 5_000, 'the refused handshake counted');
      const c = await mqttsConnect(port, { ca, key: plcKey(), cert: plcCert() });
      expect(c.connected).to.equal(true);
      c.end();
    });
  });

  describe('configuration', () => {
    it('refuses a certificate without its key, client certificates without a CA, and plain MQTT off without TLS', () => {
      expect(() => loadConfig({ UNS_TLS_CERT_PATH: '/x.crt' })).to.throw(/UNS_TLS_CERT_PATH and UNS_TLS_KEY_PATH go together/);
      expect(() => loadConfig({ UNS_TLS_CERT_PATH: '/x.crt', UNS_TLS_KEY_PATH: '/x.key', UNS_TLS_CLIENT_CERTS: 'optional' })).to.throw(/UNS_TLS_CA_PATH/);
      expect(() => loadConfig({ UNS_MQTT_PLAIN: 'off' })).to.throw(/UNS_MQTT_PLAIN/);
      expect(() => loadConfig({ UNS_TLS_CLIENT_CERTS: 'sometimes' })).to.throw(/UNS_TLS_CLIENT_CERTS/);
    });

    it('does not start with a key that does not belong to the certificate, and names the files', async () => {
      copyFileSync(join(pki, 'server-b.key'), join(certDir, 'server.key'));
      const cfg = tlsConfig();
      try {
        let err: Error | null = null;
        try {
          server = await startTestServer(cfg);
        } catch (e) {
          err = e as Error;
        }
        expect(err?.message).to.match(/TLS certificate .*server\.crt with key .*server\.key/);
      } finally {
        cleanup(cfg);
      }
    });

    it('TLS only: without plain MQTT, the MQTT port is the TLS one', async () => {
      server = await startTestServer(tlsConfig({ mqttPlain: 'off' }));
      expect(server.mqttPort).to.equal(server.mqttsPort);
      const c = await mqttsConnect(server.mqttPort, { ca, username: ADMIN.username, password: ADMIN.password });
      c.end();
    });
  });
});
