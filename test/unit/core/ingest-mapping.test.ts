import { expect } from 'chai';
import { applyMappings, parsePath, parseTemplate, type CompiledMapping, type FieldPath, type TopicTemplate } from '../../../src/core/ingest-mapping.js';
import type { JsonValue } from '../../../src/core/message.js';

function path(text: string): FieldPath {
  const p = parsePath(text);
  if (typeof p === 'string') throw new Error(p);
  return p;
}
function template(text: string): TopicTemplate {
  const t = parseTemplate(text);
  if (typeof t === 'string') throw new Error(t);
  return t;
}

describe('ingest mapping', () => {
  it('parses JSONPath-lite paths and refuses malformed ones', () => {
    expect(path('readings[*]').segs).to.deep.equal([{ kind: 'field', name: 'readings' }, { kind: 'each' }]);
    expect(path('$.device.id')).to.include({ root: true, wildcard: false });
    expect(path('a[2].b').segs).to.deep.equal([{ kind: 'field', name: 'a' }, { kind: 'index', index: 2 }, { kind: 'field', name: 'b' }]);
    for (const bad of ['', 'a..b', '.a', 'a.', 'a[x]', 'a[*]b']) expect(parsePath(bad), bad).to.be.a('string');
  });

  it('parses topic templates into parts and the filter of the topics they make', () => {
    const t = template('acme/plant1/{{site_area}}/line1/{{machine}}_{{ n }}/temperature');
    expect(t.filter).to.equal('acme/plant1/+/line1/+/temperature');
    expect(t.parts).to.have.length(7);
    expect(parseTemplate('acme/{{a[*]}}/x')).to.be.a('string');
    expect(parseTemplate('acme/+/{{a}}')).to.be.a('string');
    expect(parseTemplate('$SYS/{{a}}')).to.be.a('string');
    expect(parseTemplate('acme/{{a}/x')).to.be.a('string');
  });

  it('maps every record, with fields relative to the record or ($.) to the body', () => {
    const m: CompiledMapping = {
      match: path('probes[*]'), topic: template('acme/plant1/{{$.area}}/line1/{{probe_id}}/temperature'),
      value: path('temperature'), timestamp: path('timestamp'), unit: path('unit'),
    };
    const body: JsonValue = {
      area: 'brewing',
      probes: [
        { probe_id: 'p1', temperature: 225.5, unit: 'F', timestamp: '2025-07-20T14:30:00Z' },
        { probe_id: 2, temperature: 135.2 },
        { probe_id: 'a/b', temperature: 1 },
        { probe_id: 'p4' },
      ],
    };
    const out = applyMappings(body, [m], 100);
    if ('tooMany' in out) throw new Error('tooMany');
    expect(out[0]).to.deep.include({ ok: true, topic: 'acme/plant1/brewing/line1/p1/temperature', value: 225.5, unit: 'F', timestamp: '2025-07-20T14:30:00Z' });
    expect(out[1]).to.deep.include({ ok: true, topic: 'acme/plant1/brewing/line1/2/temperature', value: 135.2 });
    expect(out[2]).to.include({ ok: false, code: 'UNS_ERR_INGEST_MAPPING', topic: null });
    expect(out[3]).to.include({ ok: false, code: 'UNS_ERR_INGEST_MAPPING', topic: 'acme/plant1/brewing/line1/p4/temperature' });
  });

  it('stops at the value limit', () => {
    const m: CompiledMapping = { match: path('v[*]'), topic: template('acme/x'), value: path('$.n') };
    expect(applyMappings({ n: 1, v: [1, 2, 3] }, [m], 2)).to.deep.equal({ tooMany: true });
  });
});
