import { expect } from 'chai';
import { checkWrite } from '../../../src/core/write-access.js';

const limits = { maxBytes: 64, maxLevels: 4 };
const mayWrite = { canWrite: (t: string): boolean => t.startsWith('acme/') };

describe('write access (one check for MQTT, HTTP publish and signed ingest)', () => {
  it('lets a permitted, well-formed topic through', () => {
    expect(checkWrite('acme/a/b', mayWrite, limits, 'role x')).to.equal(null);
  });

  for (const [what, topic, code] of [
    ['a $ topic [MQTT-4.7.2-1]', '$SYS/x', 'UNS_ERR_TOPIC_RESERVED'],
    ['a $uns topic', '$uns/rejected/acme', 'UNS_ERR_TOPIC_RESERVED'],
    ['a wildcard [MQTT-3.3.2-2]', 'acme/+/b', 'UNS_ERR_TOPIC_INVALID'],
    ['too many levels', 'acme/a/b/c/d', 'UNS_ERR_TOPIC_INVALID'],
    ['U+0000 [MQTT-4.7.3-2]', 'acme/\u0000', 'UNS_ERR_TOPIC_INVALID'],
    ['a topic outside the write permissions', 'other/a', 'UNS_ERR_NOT_AUTHORIZED'],
  ] as const) {
    it(`refuses ${what} with ${code}`, () => {
      expect(checkWrite(topic, mayWrite, limits, 'role x')?.code).to.equal(code);
    });
  }
});
