import { expect } from 'chai';
import { createHmac, randomBytes } from 'node:crypto';
import {
  generateSecret,
  isValidSecret,
  secretKey,
  signSimple,
  signStandard,
  verifyHexHmac,
  verifySimple,
  verifyStandard,
} from '../../../../bridge/sinks/webhooks/signing.js';

// The published Standard Webhooks test vector (standard-webhooks libraries' test suites).
const VECTOR = {
  secret: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
  id: 'msg_p5jXN8AQM9LWM0D4loKWxJek',
  timestamp: 1614265330,
  payload: '{"test": 2432232314}',
  signature: 'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
};

/** An independent receiver, written from the spec with node:crypto only (not the module's helpers). */
function independentVerify(secret: string, headers: Record<string, string>, body: string): boolean {
  const key = Buffer.from(secret.split('_')[1] ?? '', 'base64');
  const content = `${headers['webhook-id']}.${headers['webhook-timestamp']}.${body}`;
  const expected = createHmac('sha256', key).update(content).digest('base64');
  return (headers['webhook-signature'] ?? '').split(' ').some((s) => s === `v1,${expected}`);
}

describe('webhook signing - Standard Webhooks', () => {
  it('reproduces the published test vector', () => {
    const h = signStandard([VECTOR.secret], VECTOR.id, VECTOR.timestamp, VECTOR.payload);
    expect(h).to.deep.equal({
      'webhook-id': VECTOR.id,
      'webhook-timestamp': '1614265330',
      'webhook-signature': VECTOR.signature,
    });
  });

  it('signs Buffer bodies byte for byte like strings', () => {
    const h = signStandard([VECTOR.secret], VECTOR.id, VECTOR.timestamp, Buffer.from(VECTOR.payload));
    expect(h['webhook-signature']).to.equal(VECTOR.signature);
  });

  it('verifies the published vector within the tolerance', () => {
    const headers = { 'webhook-id': VECTOR.id, 'webhook-timestamp': String(VECTOR.timestamp), 'webhook-signature': VECTOR.signature };
    expect(verifyStandard([VECTOR.secret], headers, VECTOR.payload, VECTOR.timestamp + 10)).to.deep.equal({ ok: true });
  });

  it('is accepted by an independent verifier for random secrets and bodies', () => {
    for (let i = 0; i < 20; i++) {
      const secret = generateSecret();
      const body = randomBytes(50 + i).toString('base64');
      const h = signStandard([secret], `msg_${i}`, 1_700_000_000 + i, body);
      expect(independentVerify(secret, { ...h }, body), `round ${i}`).to.equal(true);
    }
  });

  it('emits one v1 signature per secret during rotation, each verifiable alone', () => {
    const oldS = generateSecret();
    const newS = generateSecret();
    const h = signStandard([newS, oldS], 'msg_rot', 1_700_000_000, '{"a":1}');
    expect(h['webhook-signature'].split(' ')).to.have.length(2);
    expect(verifyStandard([oldS], h, '{"a":1}', 1_700_000_000)).to.deep.equal({ ok: true });
    expect(verifyStandard([newS], h, '{"a":1}', 1_700_000_000)).to.deep.equal({ ok: true });
    expect(independentVerify(oldS, { ...h }, '{"a":1}')).to.equal(true);
  });

  it('rejects a re-serialised body, another id, another secret (mismatch)', () => {
    const h = signStandard([VECTOR.secret], VECTOR.id, VECTOR.timestamp, VECTOR.payload);
    const now = VECTOR.timestamp;
    expect(verifyStandard([VECTOR.secret], h, '{"test":2432232314}', now)).to.deep.equal({ ok: false, reason: 'mismatch' });
    expect(verifyStandard([VECTOR.secret], { ...h, 'webhook-id': 'msg_other' }, VECTOR.payload, now)).to.deep.equal({ ok: false, reason: 'mismatch' });
    expect(verifyStandard([generateSecret()], h, VECTOR.payload, now)).to.deep.equal({ ok: false, reason: 'mismatch' });
  });

  it('rejects a stale or future timestamp beyond ±5 minutes (timestamp-skew)', () => {
    const h = signStandard([VECTOR.secret], VECTOR.id, VECTOR.timestamp, VECTOR.payload);
    expect(verifyStandard([VECTOR.secret], h, VECTOR.payload, VECTOR.timestamp + 300)).to.deep.equal({ ok: true });
    expect(verifyStandard([VECTOR.secret], h, VECTOR.payload, VECTOR.timestamp + 301)).to.deep.equal({ ok: false, reason: 'timestamp-skew' });
    expect(verifyStandard([VECTOR.secret], h, VECTOR.payload, VECTOR.timestamp - 301)).to.deep.equal({ ok: false, reason: 'timestamp-skew' });
    expect(verifyStandard([VECTOR.secret], h, VECTOR.payload, VECTOR.timestamp + 1000, 3600)).to.deep.equal({ ok: true });
  });

  it('reports missing and malformed headers', () => {
    const h = signStandard([VECTOR.secret], VECTOR.id, VECTOR.timestamp, VECTOR.payload);
    const now = VECTOR.timestamp;
    expect(verifyStandard([VECTOR.secret], {}, VECTOR.payload, now)).to.deep.equal({ ok: false, reason: 'missing' });
    expect(verifyStandard([VECTOR.secret], { ...h, 'webhook-signature': undefined }, VECTOR.payload, now)).to.deep.equal({ ok: false, reason: 'missing' });
    expect(verifyStandard([VECTOR.secret], { ...h, 'webhook-timestamp': '16142e5' }, VECTOR.payload, now)).to.deep.equal({ ok: false, reason: 'malformed' });
    expect(verifyStandard([VECTOR.secret], { ...h, 'webhook-signature': 'garbage' }, VECTOR.payload, now)).to.deep.equal({ ok: false, reason: 'malformed' });
    expect(verifyStandard([VECTOR.secret], { ...h, 'webhook-signature': 'v2,abc' }, VECTOR.payload, now)).to.deep.equal({ ok: false, reason: 'malformed' });
    expect(verifyStandard([VECTOR.secret], { ...h, 'webhook-id': ['a', 'b'] }, VECTOR.payload, now)).to.deep.equal({ ok: false, reason: 'malformed' });
  });

  it('finds the v1 signature among other versions and reads header names case-insensitively', () => {
    const h = signStandard([VECTOR.secret], VECTOR.id, VECTOR.timestamp, VECTOR.payload);
    const headers = {
      'Webhook-Id': h['webhook-id'],
      'WEBHOOK-TIMESTAMP': h['webhook-timestamp'],
      'webhook-signature': `v1a,AAAA v1,bm90IGl0 ${h['webhook-signature']}`,
    };
    expect(verifyStandard([VECTOR.secret], headers, VECTOR.payload, VECTOR.timestamp)).to.deep.equal({ ok: true });
  });
});

describe('webhook signing - secrets', () => {
  it('derives the key from the base64 part of whsec_ secrets and the UTF-8 bytes otherwise', () => {
    expect(secretKey(VECTOR.secret)).to.deep.equal(Buffer.from('MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'base64'));
    expect(secretKey('plain-secret')).to.deep.equal(Buffer.from('plain-secret', 'utf8'));
  });

  it('generates whsec_ secrets from injected randomness', () => {
    const s = generateSecret((n) => Buffer.alloc(n, 7), 24);
    expect(s).to.equal(`whsec_${Buffer.alloc(24, 7).toString('base64')}`);
    expect(secretKey(generateSecret())).to.have.length(32);
    expect(isValidSecret(generateSecret())).to.equal(true);
    expect(generateSecret()).to.not.equal(generateSecret());
  });

  it('validates secrets: 24..64 byte whsec_ keys, non-empty plain strings', () => {
    expect(isValidSecret(VECTOR.secret)).to.equal(true);
    expect(isValidSecret('whsec_AAAA')).to.equal(false);
    expect(isValidSecret('whsec_not base64!')).to.equal(false);
    expect(isValidSecret('')).to.equal(false);
    expect(isValidSecret('a-plain-shared-secret')).to.equal(true);
  });
});

describe('webhook signing - X-Webhook-Signature sha256=<hex>', () => {
  const body = '{"device_id":"d1","temperature":225.5}';

  it('is the hex HMAC-SHA256 of the raw body keyed with the decoded whsec_ bytes', () => {
    const expected = createHmac('sha256', Buffer.from('MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'base64')).update(body).digest('hex');
    expect(signSimple(VECTOR.secret, body)).to.equal(`sha256=${expected}`);
  });

  it('uses a plain secret string as-is, as openssl dgst -hmac does', () => {
    const expected = createHmac('sha256', 'your-webhook-secret').update(body).digest('hex');
    expect(signSimple('your-webhook-secret', body)).to.equal(`sha256=${expected}`);
  });

  it('verifies against any of several secrets and rejects everything else', () => {
    const s = generateSecret();
    const sig = signSimple(s, body);
    expect(verifySimple([generateSecret(), s], sig, body)).to.deep.equal({ ok: true });
    expect(verifySimple([s], sig.toUpperCase().replace('SHA256=', 'sha256='), body)).to.deep.equal({ ok: true });
    expect(verifySimple([s], sig, `${body} `)).to.deep.equal({ ok: false, reason: 'mismatch' });
    expect(verifySimple([s], undefined, body)).to.deep.equal({ ok: false, reason: 'missing' });
    expect(verifySimple([s], '', body)).to.deep.equal({ ok: false, reason: 'missing' });
    expect(verifySimple([s], sig.slice('sha256='.length), body)).to.deep.equal({ ok: false, reason: 'malformed' });
    expect(verifySimple([s], 'sha256=xyz', body)).to.deep.equal({ ok: false, reason: 'malformed' });
    expect(verifySimple([s], 'sha1=' + 'a'.repeat(40), body)).to.deep.equal({ ok: false, reason: 'malformed' });
  });

  it('verifyHexHmac accepts sha256=<hex> or bare hex keyed with the secret bytes as configured', () => {
    const secret = 'whsec_looks-prefixed-but-is-used-verbatim';
    const hex = createHmac('sha256', secret).update(body).digest('hex');
    expect(verifyHexHmac(secret, hex, body)).to.deep.equal({ ok: true });
    expect(verifyHexHmac(secret, `sha256=${hex}`, Buffer.from(body))).to.deep.equal({ ok: true });
    expect(verifyHexHmac(Buffer.from(secret), hex, body)).to.deep.equal({ ok: true });
    expect(verifyHexHmac('other', hex, body)).to.deep.equal({ ok: false, reason: 'mismatch' });
    expect(verifyHexHmac(secret, hex.slice(2), body)).to.deep.equal({ ok: false, reason: 'malformed' });
    expect(verifyHexHmac(secret, undefined, body)).to.deep.equal({ ok: false, reason: 'missing' });
  });
});
