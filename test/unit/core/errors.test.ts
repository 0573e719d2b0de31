import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ERROR_CODES } from '../../../src/core/errors.js';
import { packageRoot } from '../../../src/core/paths.js';

describe('error codes', () => {
  it('lists every registry code in the README and no other', () => {
    const readme = readFileSync(join(packageRoot(), 'README.md'), 'utf8');
    const section = readme.split('## Error codes')[1]?.split('\n## ')[0] ?? '';
    const documented = [...section.matchAll(/^\| `(UNS_ERR_[A-Z0-9_]+)` \|/gm)].map((m) => m[1]).sort();
    expect(documented).to.deep.equal(Object.keys(ERROR_CODES).sort());
  });
});
