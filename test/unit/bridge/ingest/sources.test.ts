import { expect } from 'chai';
import { buildIngestSources } from '../../../../bridge/ingest/index.js';
import { namespaceFromObject } from '../../../../src/core/topics.js';
import { UnsError } from '../../../../src/core/errors.js';
import { silentLogger } from '../../../../src/core/log.js';

const mapping = [{ topic: 'acme/{{id}}', value: 'v' }];
const ns = (source: Record<string, unknown>) => namespaceFromObject({
  version: 1, levels: [], routes: [{ name: 'all', filter: 'acme/#', encoding: 'json' }],
  roles: { plc: { write: ['acme/#'] } },
  ingest: [{ name: 'erp', signature: 'standard', role: 'plc', mappings: mapping, ...source }],
});
const code = (fn: () => unknown): string => {
  try { fn(); } catch (e) { expect(e).to.be.instanceOf(UnsError); return (e as UnsError).code; }
  return 'none';
};

describe('ingest sources', () => {
  const log = silentLogger();

  it('takes the secret from the UNS_INGEST_SECRET_* variable topics.yaml names', () => {
    const s = buildIngestSources(ns({ secretEnv: 'UNS_INGEST_SECRET_ERP' }), { secrets: { UNS_INGEST_SECRET_ERP: 'a-long-enough-secret-value' }, allowLiteralSecrets: false }, log);
    expect(s.get('erp')?.secret).to.equal('a-long-enough-secret-value');
    expect(s.get('erp')?.perms.canWrite('acme/x')).to.equal(true);
  });

  it('stops start-up when that variable is unset, without naming a secret', () => {
    expect(code(() => buildIngestSources(ns({ secretEnv: 'UNS_INGEST_SECRET_ERP' }), { secrets: {}, allowLiteralSecrets: false }, log))).to.equal('UNS_ERR_CONFIG_INVALID');
  });

  it('refuses a literal secret unless the config allows it (development)', () => {
    const literal = ns({ secret: 'literal-secret-0123456789' });
    expect(code(() => buildIngestSources(literal, { secrets: {}, allowLiteralSecrets: false }, log))).to.equal('UNS_ERR_CONFIG_INVALID');
    expect(buildIngestSources(literal, { secrets: {}, allowLiteralSecrets: true }, log).get('erp')?.secret).to.equal('literal-secret-0123456789');
  });

  it('refuses weak or malformed secrets', () => {
    const cfg = (v: string) => ({ secrets: { UNS_INGEST_SECRET_ERP: v }, allowLiteralSecrets: false });
    const n = ns({ secretEnv: 'UNS_INGEST_SECRET_ERP' });
    expect(code(() => buildIngestSources(n, cfg('short'), log))).to.equal('UNS_ERR_CONFIG_INVALID');
    expect(code(() => buildIngestSources(n, cfg('whsec_bm90IGJhc2U2NA'), log))).to.equal('UNS_ERR_CONFIG_INVALID');
    expect(code(() => buildIngestSources(n, cfg(`whsec_${Buffer.alloc(32, 7).toString('base64')}`), log))).to.equal('none');
  });
});
