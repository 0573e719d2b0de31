import { expect } from 'chai';
import { compileTemplate } from '../../../../bridge/sinks/webhooks/template.js';

function render(src: string, values: Record<string, unknown>): string {
  const t = compileTemplate(src);
  if (!t.ok) throw new Error(t.message);
  return t.template.render((p) => values[p.join('.')]);
}

describe('webhook payload templates', () => {
  it('inserts values JSON-escaped inside strings and as JSON outside them', () => {
    const out = render('{"s": "v={{value}}", "raw": {{value}}, "n": {{data.n}}}', { value: 'a"b\\c\n</x>', 'data.n': 12.5 });
    expect(JSON.parse(out)).to.deep.equal({ s: 'v=a"b\\c\n</x>', raw: 'a"b\\c\n</x>', n: 12.5 });
  });

  it('keeps big integers exact, writes bytes as base64 and missing values as null', () => {
    const out = render('{"big": {{value}}, "bytes": {{data.b}}, "none": {{topic}}, "in": "[{{topic}}]"}', { value: 2n ** 60n + 1n, 'data.b': new Uint8Array([1, 2]) });
    expect(out).to.equal('{"big": 1152921504606846977, "bytes": {"base64":"AQI="}, "none": null, "in": "[]"}');
  });

  it('never evaluates: a value that looks like a placeholder or code stays text', () => {
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a literal ${...} is the injection payload under test
    const out = render('{"t": "{{topic}}"}', { topic: '{{event.id}} ${process.exit(1)} "},"x":"' });
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a literal ${...} is the injection payload under test
    expect(JSON.parse(out)).to.deep.equal({ t: '{{event.id}} ${process.exit(1)} "},"x":"' });
  });

  for (const [what, src] of [
    ['an expression', '{"c": "{{a == 1 ? 2 : 3}}"}'],
    ['a function call', '{"c": "{{topic.toUpperCase()}}"}'],
    ['an unknown root', '{"c": "{{process.env}}"}'],
    ['a field of a leaf', '{"c": "{{topic.length}}"}'],
    ['an unclosed placeholder', '{"c": "{{topic"}'],
    ['text that is not JSON', 'topic={{topic}}'],
  ] as const) {
    it(`refuses ${what}`, () => {
      expect(compileTemplate(src).ok).to.equal(false);
    });
  }

  it('accepts escaped quotes in literals and placeholders in keys', () => {
    const out = render('{"say \\"{{unit}}\\"": "{{event.id}}"}', { unit: '°C', 'event.id': 'e1' });
    expect(JSON.parse(out)).to.deep.equal({ 'say "°C"': 'e1' });
  });
});
