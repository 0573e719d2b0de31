/**
 * Bad MQTT input gets a clear answer and nothing else breaks (docs/guarantees.md, "Bad input" and "Security
 * defaults"). One real server for the file; hostile clients speak raw MQTT over TCP so they can send what
 * no client library would. After each case a well-behaved bystander publishes QoS 1 and /health answers.
 */
import { expect } from 'chai';
import jwt from 'jsonwebtoken';
import mqtt, { type MqttClient } from 'mqtt';
import { WebSocket } from 'ws';
import mqttPacket from 'mqtt-packet';
import { query } from '../helpers/postgres.js';
import { testConfig, startTestServer, connect, publish, waitFor, cleanup, ADMIN } from '../helpers/server.js';
import { RawClient, connectBytes, publishBytes, remainingLength, type Packet } from '../helpers/raw-mqtt.js';
import type { RunningServer } from '../../src/main.js';
import type { Config } from '../../src/core/config.js';
import type { ErrorCode } from '../../src/core/errors.js';

const SECRET = 'test-secret-that-is-long-enough-0123456789';
const T = 'acme/plant1/packaging/line1/filler/temperature';
/** The `raw` route: forwarded live, never stored, so floods do not touch the database. */
const RAW_TOPIC = 'acme/plant1/packaging/line1/filler/raw/dump';
const CONNECT_TIMEOUT_MS = 500;
const MAX_PACKET_BYTES = 65_536;
/** Aedes' default receive window for inbound QoS 2 (`maxInflightInbound`); uns-bridge does not change it. */
const MAX_INFLIGHT_INBOUND = 1_000;

function token(claims: Record<string, unknown>, opts: { key?: string; expiresInS?: number | null } = {}): string {
  const exp = opts.expiresInS === undefined ? 300 : opts.expiresInS;
  return jwt.sign({ ...claims, ...(exp === null ? {} : { exp: Math.floor(Date.now() / 1000) + exp }) }, opts.key ?? SECRET, {
    algorithm: 'HS256', noTimestamp: exp === null,
  });
}

function unsignedToken(claims: Record<string, unknown>): string {
  const b64 = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.`;
}

const plc = (sub = 'line1-plc'): { username: string; password: string } => ({ username: sub, password: token({ sub, roles: ['plc'] }) });
const analyst = (): { username: string; password: string } => ({ username: 'ana', password: token({ sub: 'ana', roles: ['analyst'] }) });

describe('mqtt security (one server for every area)', function () {
  this.timeout(20_000);
  let config: Config;
  let server: RunningServer;
  let bystander: MqttClient;
  let bystanderClosed = false;
  let tick = 0;
  const raws: RawClient[] = [];

  /** Raw clients are tracked so `after` can close any a failing test left open. */
  async function rawConnect(opts: Parameters<typeof RawClient.connect>[1]): Promise<{ client: RawClient; returnCode: number | null }> {
    const r = await RawClient.connect(server.mqttPort, opts);
    raws.push(r.client);
    return r;
  }

  async function rawOpen(): Promise<RawClient> {
    const c = await RawClient.open(server.mqttPort);
    raws.push(c);
    return c;
  }

  async function admin(clientId = ''): Promise<RawClient> {
    const { client, returnCode } = await rawConnect({ clientId, ...ADMIN });
    expect(returnCode, 'admin CONNACK').to.equal(0);
    return client;
  }

  const denied = (code: ErrorCode): number => server.broker!.stats.publishesDenied[code] ?? 0;
  const frames = (code: ErrorCode): number => server.broker!.stats.frameViolations[code] ?? 0;
  const refused = (code: ErrorCode): number => server.broker!.stats.connectsRefused[code] ?? 0;

  /** Another client and the server carry on: a QoS 1 publish is acknowledged and /health answers. */
  async function carriesOn(): Promise<void> {
    const value = 20 + (++tick % 50) * 0.5;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      publish(bystander, T, JSON.stringify({ value })),
      new Promise((_r, rej) => { timer = setTimeout(() => rej(new Error('bystander PUBACK did not arrive')), 5_000); }),
    ]).finally(() => clearTimeout(timer));
    expect(bystanderClosed, 'bystander connection closed').to.equal(false);
    const health = await fetch(`http://127.0.0.1:${server.httpPort}/health`);
    expect(health.status).to.equal(200);
  }

  before(async function () {
    this.timeout(60_000);
    config = testConfig(null, {
      mqtt: { host: '127.0.0.1', port: 0, maxPacketBytes: MAX_PACKET_BYTES, connectTimeoutMs: CONNECT_TIMEOUT_MS },
    });
    server = await startTestServer(config);
    bystander = await connect(server.mqttPort, { clientId: 'bystander' });
    bystander.on('close', () => { bystanderClosed = true; });
  });

  after(async () => {
    for (const c of raws) c.destroy();
    bystander?.end(true);
    await server?.stop();
    if (config) cleanup(config);
  });

  describe('mqtt security - authentication', () => {
    it('refuses a CONNECT without credentials when no anonymous role is configured', async () => {
      const { client, returnCode } = await rawConnect({ clientId: 'anon' });
      expect(returnCode).to.be.oneOf([4, 5]);
      expect(await client.closesWithin(1_000), 'closed after a refusing CONNACK [MQTT-3.2.2-5]').to.equal(true);
      await carriesOn();
    });

    for (const [what, creds] of [
      ['a wrong password', { username: ADMIN.username, password: 'not-the-password' }],
      ['an unknown user', { username: 'nobody', password: 'whatever-password' }],
      ['an expired JWT', { username: 'line1-plc', password: token({ sub: 'line1-plc', roles: ['plc'] }, { expiresInS: -3_600 }) }],
      ['a JWT with alg none', { username: 'line1-plc', password: unsignedToken({ sub: 'line1-plc', roles: ['admin'], exp: Math.floor(Date.now() / 1000) + 300 }) }],
      ['a JWT without exp', { username: 'line1-plc', password: token({ sub: 'line1-plc', roles: ['plc'] }, { expiresInS: null }) }],
      ['a JWT good for ten years (beyond auth.jwtMaxLifetimeS)', { username: 'line1-plc', password: token({ sub: 'line1-plc', roles: ['plc'] }, { expiresInS: 10 * 365 * 86_400 }) }],
      ['a JWT signed with another key', { username: 'line1-plc', password: token({ sub: 'line1-plc', roles: ['admin'] }, { key: 'another-secret-that-is-long-enough-987654' }) }],
      ['a JWT granting only an unknown role', { username: 'line1-plc', password: token({ sub: 'line1-plc', roles: ['superuser'] }) }],
    ] as const) {
      it(`refuses ${what} with CONNACK 4 and closes the connection [MQTT-3.2.2-5]`, async () => {
        const before = refused('UNS_ERR_AUTH_FAILED');
        const { client, returnCode } = await rawConnect({ clientId: 'intruder', ...creds });
        expect(returnCode).to.equal(4);
        expect(await client.closesWithin(1_000)).to.equal(true);
        expect(refused('UNS_ERR_AUTH_FAILED')).to.equal(before + 1);
        await carriesOn();
      });
    }

    it('accepts a valid JWT (HS256, exp, known role) as the password', async () => {
      const { client, returnCode } = await rawConnect({ clientId: 'plc-ok', ...plc() });
      expect(returnCode).to.equal(0);
      client.send({ cmd: 'pingreq' });
      expect(await client.next('pingresp')).to.not.equal(null);
      client.send({ cmd: 'disconnect' });
      await carriesOn();
    });
  });

  describe('mqtt security - ACL', () => {
    it('closes the connection of a role publishing outside its write permissions and stores nothing', async () => {
      const topic = 'acme/plant1/packaging/line1/filler/count';
      const count = async (): Promise<[number, number]> => {
        const all = await query(server.databaseUrl, 'SELECT count(*)::int AS n FROM samples');
        const mine = await query(server.databaseUrl,
          'SELECT count(*)::int AS n FROM samples s JOIN topics t ON t.id = s.topic_id WHERE t.name = $1', [topic]);
        return [all[0]?.['n'] as number, mine[0]?.['n'] as number];
      };
      const { client, returnCode } = await rawConnect({ clientId: 'dashboard', ...analyst() });
      expect(returnCode).to.equal(0);
      const before = await count();
      const deniedBefore = denied('UNS_ERR_NOT_AUTHORIZED');
      client.write(publishBytes(topic, '4321', { qos: 1, messageId: 11 }));
      expect(await client.closesWithin(1_000)).to.equal(true);
      expect(client.count('puback')).to.equal(0);
      expect(denied('UNS_ERR_NOT_AUTHORIZED')).to.equal(deniedBefore + 1);
      expect(await count()).to.deep.equal(before);
      await carriesOn();
    });

    it('grants 0x80 per filter outside the read permissions and the QoS for filters inside [MQTT-3.9.3-1]', async () => {
      const { client, returnCode } = await rawConnect({ clientId: 'dashboard2', ...analyst() });
      expect(returnCode).to.equal(0);
      client.send({ cmd: 'subscribe', messageId: 5, subscriptions: [{ topic: '#', qos: 1 }, { topic: 'acme/plant1/#', qos: 1 }, { topic: 'acme/plant2/+/line2/kettle/state', qos: 0 }] });
      const suback = await client.next('suback');
      expect(suback && 'granted' in suback ? suback.granted : null).to.deep.equal([128, 1, 0]);
      client.send({ cmd: 'pingreq' });
      expect(await client.next('pingresp'), 'the subscriber stays connected').to.not.equal(null);
      client.destroy();
      await carriesOn();
    });

    it('refuses a write-only role a subscription to the data it writes', async () => {
      const before = server.broker!.stats.subscribesDenied;
      const { client, returnCode } = await rawConnect({ clientId: 'plc-sub', ...plc() });
      expect(returnCode).to.equal(0);
      client.send({ cmd: 'subscribe', messageId: 6, subscriptions: [{ topic: 'acme/#', qos: 1 }, { topic: 'spBv1.0/+/NCMD/#', qos: 1 }] });
      const suback = await client.next('suback');
      expect(suback && 'granted' in suback ? suback.granted : null).to.deep.equal([128, 1]);
      expect(server.broker!.stats.subscribesDenied).to.equal(before + 1);
      client.destroy();
      await carriesOn();
    });
  });

  describe('mqtt security - limits and topics', () => {
    it('closes a connection whose PUBLISH announces more than maxPacketBytes, from the fixed header alone', async () => {
      const client = await admin();
      const before = frames('UNS_ERR_PACKET_TOO_LARGE');
      // Only the fixed header and a few body bytes: if the server waited for the body it would never close.
      client.write(Buffer.concat([Buffer.from([0x32]), remainingLength(1_000_000), Buffer.from([0x00, 0x04, 0x61, 0x63])]));
      const t0 = Date.now();
      expect(await client.closesWithin(1_000)).to.equal(true);
      expect(Date.now() - t0).to.be.below(1_000);
      expect(frames('UNS_ERR_PACKET_TOO_LARGE')).to.equal(before + 1);
      await carriesOn();
    });

    it('closes an unauthenticated connection whose CONNECT announces more than maxPacketBytes', async () => {
      const client = await rawOpen();
      const before = frames('UNS_ERR_PACKET_TOO_LARGE');
      client.write(Buffer.concat([Buffer.from([0x10]), remainingLength(MAX_PACKET_BYTES * 100), Buffer.from([0x00, 0x04])]));
      expect(await client.closesWithin(1_000)).to.equal(true);
      expect(frames('UNS_ERR_PACKET_TOO_LARGE')).to.equal(before + 1);
      await carriesOn();
    });

    it('closes a connection sending a Remaining Length longer than four bytes [MQTT-2.2.3]', async () => {
      const client = await admin();
      const before = frames('UNS_ERR_MALFORMED_PACKET');
      client.write(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]));
      expect(await client.closesWithin(1_000)).to.equal(true);
      expect(frames('UNS_ERR_MALFORMED_PACKET')).to.equal(before + 1);
      await carriesOn();
    });

    const prefix = 'acme/plant1/packaging/line1/filler/';
    for (const [what, topic, code] of [
      ['U+0000 [MQTT-4.7.3-2]', Buffer.from(`${prefix}te\u0000mp`), 'UNS_ERR_TOPIC_INVALID'],
      ['ill-formed UTF-8 (0xC3 0x28) [MQTT-1.5.3-1]', Buffer.concat([Buffer.from(prefix), Buffer.from([0xc3, 0x28])]), 'UNS_ERR_TOPIC_INVALID'],
      ['a UTF-8-encoded surrogate (0xED 0xA0 0x80) [MQTT-1.5.3-1]', Buffer.concat([Buffer.from(prefix), Buffer.from([0xed, 0xa0, 0x80])]), 'UNS_ERR_TOPIC_INVALID'],
      ["the wildcard '+' [MQTT-3.3.2-2]", Buffer.from('acme/plant1/+/line1/filler/temperature'), null],
      ["the wildcard '#' [MQTT-3.3.2-2]", Buffer.from('acme/plant1/#'), null],
      ['more than maxTopicLevels (32) levels', Buffer.from(Array.from({ length: 33 }, (_, i) => `l${i}`).join('/')), null],
      ['more than maxTopicBytes (1024) bytes', Buffer.from(`${prefix}${'x'.repeat(1_024)}`), 'UNS_ERR_TOPIC_INVALID'],
      ['the reserved prefix $SYS/ [MQTT-4.7.2-1]', Buffer.from('$SYS/x'), 'UNS_ERR_TOPIC_RESERVED'],
      ['the reserved prefix $uns/ [MQTT-4.7.2-1]', Buffer.from('$uns/rejected/x'), 'UNS_ERR_TOPIC_RESERVED'],
    ] as const) {
      it(`closes a connection publishing to a topic with ${what}${code ? ` (${code})` : ''}`, async () => {
        const client = await admin();
        const before = code ? denied(code) : 0;
        client.write(publishBytes(topic, '{"value": 1}', { qos: 1, messageId: 21 }));
        expect(await client.closesWithin(1_000)).to.equal(true);
        expect(client.count('puback')).to.equal(0);
        if (code) expect(denied(code)).to.equal(before + 1);
        await carriesOn();
      });
    }
  });

  describe('mqtt security - CONNECT rules', () => {
    it('answers a zero-length client id with a persistent session with CONNACK 2 [MQTT-3.1.3-8]', async () => {
      const before = refused('UNS_ERR_CLIENT_ID_REJECTED');
      const { client, returnCode } = await rawConnect({ clientId: '', clean: false, ...ADMIN });
      expect(returnCode).to.equal(2);
      expect(await client.closesWithin(1_000), 'closed after CONNACK 2 [MQTT-3.1.3-9]').to.equal(true);
      expect(refused('UNS_ERR_CLIENT_ID_REJECTED')).to.equal(before + 1);
      await carriesOn();
    });

    it('accepts a zero-length client id with a clean session [MQTT-3.1.3-6]', async () => {
      const { client, returnCode } = await rawConnect({ clientId: '', clean: true, ...ADMIN });
      expect(returnCode).to.equal(0);
      client.send({ cmd: 'disconnect' });
      await carriesOn();
    });

    it('refuses a client id held by another principal with CONNACK 2 and keeps the holder connected', async () => {
      const holder = await admin('line1-filler');
      const before = refused('UNS_ERR_CLIENT_ID_REJECTED');
      const { client, returnCode } = await rawConnect({ clientId: 'line1-filler', ...plc('someone-else') });
      expect(returnCode).to.equal(2);
      expect(await client.closesWithin(1_000)).to.equal(true);
      expect(refused('UNS_ERR_CLIENT_ID_REJECTED')).to.equal(before + 1);
      holder.send({ cmd: 'pingreq' });
      expect(await holder.next('pingresp'), 'the holder still answers').to.not.equal(null);
      expect(holder.isClosed).to.equal(false);
      holder.destroy();
      await carriesOn();
    });

    it("leaves the holder's in-flight QoS 2 state alone when a CONNECT for its client id is refused [MQTT-4.3.3-2]", async () => {
      const watcher = await connect(server.mqttPort, { clientId: 'q2-watcher' });
      try {
        let delivered = 0;
        let marker = false;
        watcher.on('message', (_t, p) => { if (p.toString() === 'marker') marker = true; else delivered++; });
        await new Promise<void>((res, rej) => watcher.subscribe(RAW_TOPIC, { qos: 0 }, (e) => (e ? rej(e) : res())));
        const holder = await admin('line1-filler-q2');
        holder.write(publishBytes(RAW_TOPIC, 'once', { qos: 2, messageId: 7 }));
        expect(await holder.next('pubrec'), 'PUBREC').to.not.equal(null);
        // Refused CONNECTs for the same id, by another principal and by a wrong password, with clean sessions.
        expect((await rawConnect({ clientId: 'line1-filler-q2', ...plc('someone-else') })).returnCode).to.equal(2);
        expect((await rawConnect({ clientId: 'line1-filler-q2', username: ADMIN.username, password: 'wrong-password' })).returnCode).to.equal(4);
        // The holder re-sends the PUBLISH (DUP): it is known, so it is acknowledged and not delivered again.
        holder.write(publishBytes(RAW_TOPIC, 'once', { qos: 2, messageId: 7, dup: true }));
        expect(await holder.next('pubrec'), 'PUBREC for the DUP').to.not.equal(null);
        holder.send({ cmd: 'pubrel', messageId: 7 });
        expect(await holder.next('pubcomp'), 'PUBCOMP').to.not.equal(null);
        await carriesOn();
        // A fence: the holder's next message reaches the watcher's socket after any second copy would have.
        holder.write(publishBytes(RAW_TOPIC, 'marker', { qos: 1, messageId: 8 }));
        expect(await holder.next('puback'), 'PUBACK for the marker').to.not.equal(null);
        await waitFor(() => marker, 5_000, 'the marker at the watcher');
        expect(delivered).to.equal(1);
        holder.destroy();
      } finally {
        watcher.end(true);
      }
    });

    it('lets the same principal take over its own client id, disconnecting the old connection [MQTT-3.1.4-2]', async () => {
      const first = await admin('line1-filler-2');
      const second = await admin('line1-filler-2');
      expect(await first.closesWithin(1_000), 'the old connection is closed').to.equal(true);
      second.send({ cmd: 'pingreq' });
      expect(await second.next('pingresp')).to.not.equal(null);
      second.destroy();
      await carriesOn();
    });

    it('closes a connection that sends nothing before the connect timeout', async () => {
      const client = await rawOpen();
      const closedAfter = await Promise.race([client.closed, new Promise<number>((r) => setTimeout(() => r(-1), CONNECT_TIMEOUT_MS + 1_000))]);
      expect(closedAfter, 'closed by the server').to.not.equal(-1);
      expect(closedAfter).to.be.at.least(CONNECT_TIMEOUT_MS - 50);
      await carriesOn();
    });
  });

  describe('mqtt security - QoS 2 flood', () => {
    it('cuts off a client that sends fresh QoS 2 PUBLISHes without ever sending PUBREL, beyond maxInflightInbound', async () => {
      const client = await admin('flooder');
      const packets: Buffer[] = [];
      for (let id = 1; id <= MAX_INFLIGHT_INBOUND; id++) packets.push(publishBytes(RAW_TOPIC, `f${id}`, { qos: 2, messageId: id }));
      client.write(Buffer.concat(packets));
      // Up to the limit every PUBLISH is received (PUBREC) and the connection stays up...
      await waitFor(() => client.count('pubrec') === MAX_INFLIGHT_INBOUND || client.isClosed, 5_000, 'PUBRECs');
      expect(client.count('pubrec')).to.equal(MAX_INFLIGHT_INBOUND);
      expect(client.isClosed).to.equal(false);
      // ...a DUP of one in flight is still answered, as it takes no new slot [MQTT-4.3.3-2]...
      client.write(publishBytes(RAW_TOPIC, 'f1', { qos: 2, messageId: 1, dup: true }));
      await waitFor(() => client.count('pubrec') === MAX_INFLIGHT_INBOUND + 1 || client.isClosed, 2_000, 'PUBREC for the DUP');
      expect(client.isClosed).to.equal(false);
      // ...and one more fresh identifier without a PUBREL for the others ends the connection.
      client.write(publishBytes(RAW_TOPIC, 'one too many', { qos: 2, messageId: MAX_INFLIGHT_INBOUND + 1 }));
      expect(await client.closesWithin(1_000)).to.equal(true);
      expect(client.count('pubrec')).to.equal(MAX_INFLIGHT_INBOUND + 1);
      await carriesOn();
    });
  });

  describe('mqtt security - WebSocket', () => {
    it('carries MQTT over WebSocket on the configured path and stores a QoS 1 publish', async () => {
      const ws = mqtt.connect(`ws://127.0.0.1:${server.httpPort}${config.mqtt.wsPath}`, {
        username: ADMIN.username, password: ADMIN.password, clientId: 'ws-client', reconnectPeriod: 0, connectTimeout: 5_000,
      });
      try {
        await new Promise<void>((res, rej) => { ws.once('connect', () => res()); ws.once('error', rej); });
        const topic = 'acme/plant2/brewing/line2/kettle/temperature';
        const value = 60 + Math.round(Math.random() * 100) / 10;
        await publish(ws, topic, JSON.stringify({ value }));
        const rows = await query(server.databaseUrl, `SELECT s.v_num FROM samples s JOIN topics t ON t.id = s.topic_id
          WHERE t.name = $1 ORDER BY s.time DESC LIMIT 1`, [topic]);
        expect(rows[0]?.['v_num']).to.equal(value);
      } finally {
        ws.end(true);
      }
      await carriesOn();
    });

    it('refuses a WebSocket upgrade on any other path', async () => {
      const ws = new WebSocket(`ws://127.0.0.1:${server.httpPort}/not-mqtt`, 'mqtt');
      const outcome = await new Promise<string>((res) => {
        ws.once('open', () => res('open'));
        ws.once('error', () => res('error'));
        ws.once('close', () => res('close'));
      });
      ws.terminate();
      expect(outcome).to.not.equal('open');
      await carriesOn();
    });

    it('closes a WebSocket connection whose MQTT packet announces more than maxPacketBytes', async () => {
      const ws = new WebSocket(`ws://127.0.0.1:${server.httpPort}${config.mqtt.wsPath}`, 'mqtt');
      try {
        await new Promise<void>((res, rej) => { ws.once('open', () => res()); ws.once('error', rej); });
        const closed = new Promise<void>((res) => ws.once('close', () => res()));
        // The broker may split a packet over several WebSocket messages: parse the stream, not the messages.
        const parser = mqttPacket.parser({ protocolVersion: 4 });
        const connack = new Promise<Packet>((res) => parser.once('packet', res));
        ws.on('message', (d: Buffer) => parser.parse(d));
        ws.send(connectBytes({ clientId: 'ws-big', ...ADMIN }));
        const reply = await connack;
        expect(reply.cmd).to.equal('connack');
        expect('returnCode' in reply ? reply.returnCode : null).to.equal(0);
        const before = frames('UNS_ERR_PACKET_TOO_LARGE');
        ws.send(Buffer.concat([Buffer.from([0x32]), remainingLength(1_000_000), Buffer.from([0x00, 0x04])]));
        const ok = await Promise.race([closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 1_000))]);
        expect(ok, 'closed within 1 s').to.equal(true);
        expect(frames('UNS_ERR_PACKET_TOO_LARGE')).to.equal(before + 1);
      } finally {
        ws.terminate();
      }
      await carriesOn();
    });
  });
});
