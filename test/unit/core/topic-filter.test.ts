import { expect } from 'chai';
import {
  TopicMatcher,
  compileFilter,
  filterCovers,
  filtersOverlap,
  validateTopicFilter,
  validateTopicName,
} from '../../../src/core/topic-filter.js';

const LIMITS = { maxBytes: 256, maxLevels: 8 };

describe('topic filter', () => {
  describe('validateTopicName', () => {
    it('accepts an ordinary topic', () => {
      expect(validateTopicName('acme/plant1/packaging/line1/filler/temperature', LIMITS)).to.equal(null);
    });

    it('accepts empty levels and a leading or trailing separator [MQTT-4.7.1-1]', () => {
      expect(validateTopicName('/a//b/', LIMITS)).to.equal(null);
    });

    it('refuses an empty topic [MQTT-4.7.3-1]', () => {
      expect(validateTopicName('', LIMITS)).to.be.a('string');
    });

    it('refuses wildcards in a topic name [MQTT-3.3.2-2]', () => {
      expect(validateTopicName('a/+/b', LIMITS)).to.be.a('string');
      expect(validateTopicName('a/#', LIMITS)).to.be.a('string');
      expect(validateTopicName('a+b', LIMITS)).to.be.a('string');
    });

    it('refuses U+0000 [MQTT-4.7.3-2]', () => {
      expect(validateTopicName('a/\u0000/b', LIMITS)).to.be.a('string');
    });

    it('refuses U+FFFD, the trace of ill-formed UTF-8 on the wire [MQTT-1.5.3-1]', () => {
      expect(validateTopicName('a/\uFFFD', LIMITS)).to.be.a('string');
    });

    it('refuses lone UTF-16 surrogates but accepts pairs', () => {
      expect(validateTopicName('a/\uD800', LIMITS)).to.be.a('string');
      expect(validateTopicName('a/\uDC00x', LIMITS)).to.be.a('string');
      expect(validateTopicName('a/\uD800x', LIMITS)).to.be.a('string');
      expect(validateTopicName('a/\uD83D\uDE00', LIMITS)).to.equal(null);
    });

    it('counts the limit in UTF-8 bytes, not characters', () => {
      const limits = { maxBytes: 4, maxLevels: 8 };
      expect(validateTopicName('°C', limits)).to.equal(null); // 3 bytes
      expect(validateTopicName('°°C', limits)).to.be.a('string'); // 5 bytes in 3 characters
      expect(validateTopicName('\uD83D\uDE00', limits)).to.equal(null); // 4 bytes
      expect(validateTopicName('a\uD83D\uDE00', limits)).to.be.a('string'); // 5 bytes
      expect(validateTopicName('€€', { maxBytes: 5, maxLevels: 8 })).to.be.a('string'); // 6 bytes
    });

    it('refuses more levels than the limit', () => {
      expect(validateTopicName('1/2/3', { maxBytes: 100, maxLevels: 3 })).to.equal(null);
      expect(validateTopicName('1/2/3/4', { maxBytes: 100, maxLevels: 3 })).to.be.a('string');
    });
  });

  describe('validateTopicFilter', () => {
    it('accepts legal wildcards', () => {
      for (const f of ['#', '+', 'a/#', 'a/+/b', '+/+', '/+', '+/', 'a/+/#', '$SYS/#']) {
        expect(validateTopicFilter(f, LIMITS), f).to.equal(null);
      }
    });

    it("refuses '#' that is not the last level alone [MQTT-4.7.1-2]", () => {
      for (const f of ['a/#/b', 'a#', 'a/b#', '#/a', '##']) {
        expect(validateTopicFilter(f, LIMITS), f).to.be.a('string');
      }
    });

    it("refuses '+' that does not fill a whole level [MQTT-4.7.1-3]", () => {
      for (const f of ['a+', 'a/+b', '+a/b', 'a/b+/c', '++']) {
        expect(validateTopicFilter(f, LIMITS), f).to.be.a('string');
      }
    });

    it('applies the topic name rules too [MQTT-4.7.3-1] [MQTT-4.7.3-2]', () => {
      expect(validateTopicFilter('', LIMITS)).to.be.a('string');
      expect(validateTopicFilter('a/\u0000', LIMITS)).to.be.a('string');
      expect(validateTopicFilter('a/\uFFFD/#', LIMITS)).to.be.a('string');
      expect(validateTopicFilter('1/2/3/4/5/6/7/8/#', LIMITS)).to.be.a('string');
    });
  });

  describe('compileFilter', () => {
    const cases: [string, string, boolean][] = [
      ['a/b', 'a/b', true],
      ['a/b', 'a/b/c', false],
      ['a/+', 'a/b', true],
      ['a/+', 'a/', true], // '+' matches an empty level
      ['a/+', 'a', false],
      ['a/+', 'a/b/c', false],
      ['+/+', '/finance', true], // [MQTT-4.7.1-3] non-normative example
      ['/+', '/finance', true],
      ['+', '/finance', false],
      ['a/#', 'a', true], // '#' also matches the parent level [MQTT-4.7.1-2]
      ['a/#', 'a/b/c', true],
      ['a/#', 'ab', false],
      ['a/#', 'ab/c', false],
      ['a/+/c/#', 'a/b/c', true],
      ['a/+/c/#', 'a/b/d', false],
      ['#', 'a/b', true],
      ['sport/tennis/+', 'sport/tennis/player1', true],
      ['sport/tennis/+', 'sport/tennis/player1/ranking', false],
    ];
    for (const [filter, topic, expected] of cases) {
      it(`${expected ? 'matches' : 'does not match'} ${topic} with ${filter}`, () => {
        expect(compileFilter(filter)(topic)).to.equal(expected);
      });
    }

    it('does not match $SYS topics with a leading wildcard [MQTT-4.7.2-1]', () => {
      expect(compileFilter('#')('$SYS/broker/uptime')).to.equal(false);
      expect(compileFilter('+/broker/uptime')('$SYS/broker/uptime')).to.equal(false);
      expect(compileFilter('+/#')('$uns/rejected/x')).to.equal(false);
    });

    it('matches $ topics with a filter that names the $ level', () => {
      expect(compileFilter('$SYS/#')('$SYS/broker/uptime')).to.equal(true);
      expect(compileFilter('$SYS/+/uptime')('$SYS/broker/uptime')).to.equal(true);
    });

    it('treats a $ that is not the first character as ordinary', () => {
      expect(compileFilter('#')('a/$b')).to.equal(true);
    });
  });

  describe('TopicMatcher', () => {
    const matcher = new TopicMatcher<string>([
      ['acme/+/+/+/+/temperature', 'temperature'],
      ['acme/#', 'catch-all'],
      ['spBv1.0/#', 'sparkplug'],
    ]);

    it('returns the first matching entry in list order', () => {
      expect(matcher.match('acme/plant1/packaging/line1/filler/temperature')).to.equal('temperature');
      expect(matcher.match('acme/plant1/packaging/line1/filler/pressure')).to.equal('catch-all');
      expect(matcher.match('spBv1.0/g/NDATA/n')).to.equal('sparkplug');
    });

    it('returns undefined when nothing matches, also from the cache', () => {
      expect(matcher.match('other/x')).to.equal(undefined);
      expect(matcher.match('other/x')).to.equal(undefined);
    });

    it('returns every match in list order from matchAll', () => {
      expect(matcher.matchAll('acme/plant1/packaging/line1/filler/temperature')).to.deep.equal(['temperature', 'catch-all']);
      expect(matcher.matchAll('other')).to.deep.equal([]);
    });

    it('stays correct when the bounded cache is cleared', () => {
      const small = new TopicMatcher<number>([['a/+', 1], ['#', 2]], { cacheSize: 2 });
      for (let round = 0; round < 3; round++) {
        expect(small.match('a/x')).to.equal(1);
        expect(small.match('b')).to.equal(2);
        expect(small.match('a/y')).to.equal(1);
        expect(small.matchAll('a/z')).to.deep.equal([1, 2]);
      }
    });
  });

  describe('filtersOverlap', () => {
    const cases: [string, string, boolean][] = [
      ['a/b', 'a/b', true],
      ['a/b', 'a/c', false],
      ['a/+', 'a/b', true],
      ['a/+', '+/b', true],
      ['a/#', 'a', true],
      ['a/#', 'b/#', false],
      ['a/+', 'a', false],
      ['a/+/c', 'a/b/d', false],
      ['#', 'anything/at/all', true],
      ['#', '$SYS/#', false], // [MQTT-4.7.2-1]
      ['+/x', '$SYS/x', false],
      ['$SYS/#', '$SYS/broker/+', true],
      ['a/+/+', 'a/#', true],
    ];
    for (const [a, b, expected] of cases) {
      it(`${expected ? 'finds' : 'finds no'} overlap between ${a} and ${b}`, () => {
        expect(filtersOverlap(a, b)).to.equal(expected);
        expect(filtersOverlap(b, a)).to.equal(expected);
      });
    }
  });

  describe('filterCovers', () => {
    const cases: [string, string, boolean][] = [
      ['acme/#', 'acme/plant1/+/x', true],
      ['acme/#', 'acme', true], // '#' includes the parent level
      ['acme/#', 'acme/#', true],
      ['acme/+/a', 'acme/#', false],
      ['acme/+', 'acme/x', true],
      ['acme/+', 'acme/+', true],
      ['acme/x', 'acme/+', false],
      ['acme/+', 'acme', false],
      ['acme', 'acme/#', false],
      ['acme/+/+', 'acme/x', false],
      ['#', 'acme/+/#', true],
      ['#', '$SYS/broker', false], // [MQTT-4.7.2-1]
      ['+/broker', '$SYS/broker', false],
      ['#', '+/broker', true], // a leading wildcard never reaches $ topics either
      ['$SYS/#', '$SYS/broker/+', true],
      ['$SYS/#', '+/broker', false],
    ];
    for (const [outer, inner, expected] of cases) {
      it(`${expected ? 'says' : 'denies'} ${outer} covers ${inner}`, () => {
        expect(filterCovers(outer, inner)).to.equal(expected);
      });
    }
  });
});
