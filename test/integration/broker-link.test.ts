/**
 * The external-broker link against a real Mosquitto, with the ingest function as the seam: a message the
 * store could not make durable is not acknowledged, the link reconnects, and the broker delivers it again
 * (DUP) until it is; nothing it was told to keep is lost, and nothing is acknowledged before it is durable.
 */
import { expect } from 'chai';
import mqtt from 'mqtt';
import { TestMosquitto } from '../helpers/mosquitto.js';
import { waitFor } from '../helpers/server.js';
import { BrokerLink } from '../../broker/index.js';
import { silentLogger } from '../../src/core/log.js';
import type { IngestOutcome, InboundRecord } from '../../src/core/index.js';

describe('broker link - a message not made durable is delivered again', function () {
  this.timeout(60_000);
  const mosq = new TestMosquitto();
  before(async () => { await mosq.start(); });
  after(async () => { await mosq.destroy(); });

  it('leaves it unacknowledged, reconnects, and takes the re-delivery (DUP) once it is durable', async () => {
    const seen: Array<{ payload: string; dup: boolean; connection: number | undefined }> = [];
    let failNext = true;
    const durable: string[] = [];
    const link = new BrokerLink({
      url: mosq.url, clientId: 'link-redeliver', username: null, password: null, ca: null, group: 'redeliver', filters: ['acme/#'],
      sessionExpiryS: 600, receiveMaximum: 100, keepaliveS: 30, rejectedPrefix: '$uns/rejected/', resendCheckCount: 64, log: silentLogger(),
      ingest: (rec: InboundRecord, done: (o: IngestOutcome) => void) => {
        const payload = Buffer.from(rec.payload).toString();
        seen.push({ payload, dup: rec.source.dup, connection: rec.source.connection });
        if (payload === 'one' && failNext) {
          failNext = false;
          done({ error: new Error('the write could not be made durable: database and spool unavailable') });
          return;
        }
        durable.push(payload);
        done({});
      },
    });
    await link.start();
    expect(link.stats).to.include({ connected: true, subscribed: false });
    link.accept();
    // A message published before the SUBACK finds no subscriber: the link says when the broker granted it.
    await waitFor(() => link.stats.subscribed, 5_000, 'subscribed');
    const dev = mqtt.connect(mosq.url, { clientId: 'dev-redeliver', reconnectPeriod: 0 });
    await new Promise<void>((res, rej) => { dev.once('connect', () => res()); dev.once('error', rej); });
    await new Promise<void>((r) => dev.publish('acme/x', 'one', { qos: 1 }, () => r()));
    await waitFor(() => durable.includes('one'), 20_000, 'the re-delivery made durable');
    const ones = seen.filter((s) => s.payload === 'one');
    expect(ones).to.have.length(2);
    expect(ones[1]?.dup, 'delivered again as a re-delivery').to.equal(true);
    expect(ones[1]?.connection).to.be.greaterThan(ones[0]?.connection as number);
    expect(link.stats.notDurable).to.equal(1);
    expect(link.stats.connectionsLost).to.be.at.least(1);
    // Subscribed again on the new connection (the session kept the subscription; the SUBACK says so anew).
    await waitFor(() => link.stats.subscribed, 5_000, 'subscribed again');
    dev.end(true);
    await link.close(500);
  });
});
