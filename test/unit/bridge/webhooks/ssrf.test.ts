import { expect } from 'chai';
import { checkAddress, classifyAddress, inAllowlist, parseAllowlist, EMPTY_ALLOWLIST } from '../../../../bridge/sinks/webhooks/ssrf.js';
import type { AddressClass } from '../../../../bridge/sinks/webhooks/ssrf.js';
import { checkUrl } from '../../../../bridge/sinks/webhooks/http-client.js';
import { UnsError } from '../../../../src/core/errors.js';

const cases: Array<[string, AddressClass]> = [
  // IPv4, IANA special-purpose registry
  ['127.0.0.1', 'loopback'],
  ['127.255.255.254', 'loopback'],
  ['10.1.2.3', 'private'],
  ['172.16.0.1', 'private'],
  ['172.31.255.255', 'private'],
  ['172.32.0.1', 'public'],
  ['192.168.1.1', 'private'],
  ['169.254.169.254', 'link-local'],
  ['100.64.0.1', 'cgnat'],
  ['100.127.255.255', 'cgnat'],
  ['100.128.0.1', 'public'],
  ['0.0.0.0', 'unspecified'],
  ['0.1.2.3', 'reserved'],
  ['224.0.0.1', 'multicast'],
  ['239.255.255.250', 'multicast'],
  ['240.0.0.1', 'reserved'],
  ['255.255.255.255', 'reserved'],
  ['192.0.0.8', 'reserved'],
  ['192.0.2.10', 'reserved'],
  ['198.51.100.7', 'reserved'],
  ['203.0.113.9', 'reserved'],
  ['198.18.0.1', 'reserved'],
  ['198.19.255.255', 'reserved'],
  ['198.20.0.1', 'public'],
  ['8.8.8.8', 'public'],
  ['93.184.216.34', 'public'],
  // non-canonical IPv4 spellings (inet_aton forms)
  ['0177.0.0.1', 'loopback'],
  ['2130706433', 'loopback'],
  ['0x7f.1', 'loopback'],
  ['127.1', 'loopback'],
  ['0xa9fea9fe', 'link-local'],
  // IPv6
  ['::1', 'loopback'],
  ['::', 'unspecified'],
  ['fe80::1', 'link-local'],
  ['fe80::1%eth0', 'link-local'],
  ['febf::1', 'link-local'],
  ['fc00::1', 'private'],
  ['fd12:3456:789a::1', 'private'],
  ['fec0::1', 'private'],
  ['ff02::1', 'multicast'],
  ['::ffff:127.0.0.1', 'loopback'],
  ['::ffff:7f00:1', 'loopback'],
  ['::ffff:a9fe:a9fe', 'link-local'],
  ['::ffff:8.8.8.8', 'public'],
  ['::127.0.0.1', 'loopback'],
  ['::10.0.0.1', 'private'],
  ['::8.8.8.8', 'reserved'],
  ['64:ff9b::10.0.0.1', 'private'],
  ['64:ff9b::7f00:1', 'loopback'],
  ['64:ff9b::808:808', 'public'],
  ['64:ff9b:1::1', 'private'],
  ['2002:7f00:1::', 'loopback'],
  ['2002:a9fe:a9fe::1', 'link-local'],
  ['2002:0808:0808::1', 'public'],
  ['2001:0:4136:e378:8000:63bf:80ff:fffe', 'loopback'], // Teredo, client 127.0.0.1 inverted
  ['2001:db8::1', 'reserved'],
  ['3fff::1', 'reserved'],
  ['100::1', 'reserved'],
  ['2001:2::1', 'reserved'],
  ['4000::1', 'reserved'],
  ['2606:4700:4700::1111', 'public'],
  ['2a00:1450:4001:80b::200e', 'public'],
  ['[::1]', 'loopback'],
  // not an address
  ['example.com', 'reserved'],
  ['', 'reserved'],
];

describe('webhook ssrf - classifyAddress', () => {
  for (const [ip, cls] of cases) {
    it(`classifies ${ip || '(empty)'} as ${cls}`, () => {
      expect(classifyAddress(ip)).to.equal(cls);
    });
  }
});

describe('webhook ssrf - allowlist', () => {
  it('parses CIDRs, bare addresses and host names', () => {
    const a = parseAllowlist('10.0.0.0/8,127.0.0.1/32,hooks.local, fd00::/8  ::1 Hooks.Example.');
    expect(a.cidrs.map((c) => c.text)).to.deep.equal(['10.0.0.0/8', '127.0.0.1/32', 'fd00::/8', '::1']);
    expect([...a.hosts]).to.deep.equal(['hooks.local', 'hooks.example']);
  });

  it('opens any range for an allow-listed CIDR, loopback included', () => {
    const a = parseAllowlist('10.0.0.0/8,127.0.0.1/32,fd00::/8');
    expect(checkAddress('127.0.0.1', a)).to.deep.equal({ allowed: true, class: 'loopback' });
    expect(checkAddress('127.0.0.2', a).allowed).to.equal(false);
    expect(checkAddress('10.200.1.1', a).allowed).to.equal(true);
    expect(checkAddress('11.0.0.1', a).allowed).to.equal(true); // public anyway
    expect(checkAddress('192.168.0.1', a).allowed).to.equal(false);
    expect(checkAddress('fd00::5', a).allowed).to.equal(true);
    expect(checkAddress('fc00::5', a).allowed).to.equal(false);
    expect(inAllowlist('::ffff:127.0.0.1', a)).to.equal(true);
  });

  it('masks host bits and handles /0 and odd prefixes', () => {
    expect(inAllowlist('172.20.1.1', parseAllowlist('172.16.5.5/12'))).to.equal(true);
    expect(inAllowlist('172.32.0.1', parseAllowlist('172.16.0.0/12'))).to.equal(false);
    expect(inAllowlist('169.254.169.254', parseAllowlist('0.0.0.0/0'))).to.equal(true);
    expect(inAllowlist('::1', parseAllowlist('0.0.0.0/0'))).to.equal(false);
  });

  it('refuses bad entries at start-up with UNS_ERR_CONFIG_INVALID', () => {
    for (const bad of ['10.0.0.0/33', '::/129', '10.0.0.0/x', 'not a host!', '300.1.1.1', 'a/b']) {
      expect(() => parseAllowlist(bad), bad).to.throw(UnsError).with.property('code', 'UNS_ERR_CONFIG_INVALID');
    }
    expect(parseAllowlist('')).to.deep.include({ cidrs: [] });
  });
});

describe('webhook ssrf - URL checks before any connection', () => {
  const blocked = [
    'http://127.0.0.1/',
    'http://localhost/',
    'http://LOCALHOST./x',
    'http://api.localhost/',
    'http://[::1]/',
    'http://169.254.169.254/latest/meta-data/',
    'http://0177.0.0.1/',
    'http://2130706433/',
    'http://0x7f.1/',
    'http://127.1/',
    'http://[::ffff:127.0.0.1]/',
    'http://10.1.2.3/',
    'http://100.64.0.1/',
    'https://[fe80::1]/',
    'http://0.0.0.0:8080/',
  ];
  for (const url of blocked) {
    it(`refuses ${url} as ssrf-blocked`, () => {
      const r = checkUrl(url, EMPTY_ALLOWLIST);
      expect(r.ok).to.equal(false);
      if (!r.ok) expect(r.errorClass).to.equal('ssrf-blocked');
    });
  }

  it('refuses other schemes and junk as invalid-url', () => {
    for (const url of ['ftp://example.com/', 'file:///etc/passwd', 'gopher://x/', 'not a url', '//example.com', 'http://']) {
      const r = checkUrl(url);
      expect(r.ok, url).to.equal(false);
      if (!r.ok) expect(r.errorClass, url).to.equal('invalid-url');
    }
  });

  it('passes public literals and names (names are checked again at connect time)', () => {
    expect(checkUrl('https://93.184.216.34/hook').ok).to.equal(true);
    expect(checkUrl('https://hooks.example.com/x').ok).to.equal(true);
    expect(checkUrl('http://localhost:9/', parseAllowlist('localhost')).ok).to.equal(true);
    expect(checkUrl('http://127.0.0.1:9/', parseAllowlist('127.0.0.1/32')).ok).to.equal(true);
  });
});
