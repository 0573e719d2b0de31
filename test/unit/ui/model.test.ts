/** The Explorer's page-free logic: visible tree rows, the virtual window, history buckets, formatting, metrics. */
import { expect } from 'chai';
import { ancestorsOf, bucketFor, filterMatches, formatValue, mayWrite, metricTotals, pathsTo, visibleRows, windowOf, type TopicNode } from '../../../src/ui/model.js';

function node(path: string, children: TopicNode[] = []): TopicNode {
  const name = path.split('/').pop() as string;
  return { name, path, child_count: children.length, topic_count: Math.max(1, children.reduce((n, c) => n + c.topic_count, 0)), children };
}

describe('Explorer model', () => {
  const tree = node('acme', [
    node('acme/plant2', [node('acme/plant2/brewing')]),
    node('acme/plant1', [node('acme/plant1/utilities'), node('acme/plant1/packaging', [node('acme/plant1/packaging/line1')])]),
  ]);

  it('shows children by name, below expanded nodes only, with their depth', () => {
    expect(visibleRows(tree, new Set()).map((r) => r.node.path)).to.deep.equal(['acme/plant1', 'acme/plant2']);
    const rows = visibleRows(tree, new Set(['acme/plant1', 'acme/plant1/packaging']));
    expect(rows.map((r) => `${r.depth}:${r.node.name}:${r.expanded ? 'open' : r.hasChildren ? 'closed' : 'leaf'}`)).to.deep.equal([
      '0:plant1:open', '1:packaging:open', '2:line1:leaf', '1:utilities:leaf', '0:plant2:closed',
    ]);
  });

  it('names the ancestors to open for a path, and every path down to a depth', () => {
    expect(ancestorsOf('acme/plant1/packaging/line1')).to.deep.equal(['acme', 'acme/plant1', 'acme/plant1/packaging']);
    expect(pathsTo(tree, 1).sort()).to.deep.equal(['acme/plant1', 'acme/plant2']);
    expect(pathsTo(tree, 128)).to.have.length(6);
  });

  it('draws only the rows in view plus the overscan, at any scroll position', () => {
    expect(windowOf(10_000, 28, 0, 560, 8)).to.deep.equal({ start: 0, end: 29 });
    expect(windowOf(10_000, 28, 28 * 5_000, 560, 8)).to.deep.equal({ start: 4_992, end: 5_029 });
    expect(windowOf(10_000, 28, 28 * 9_990, 560, 8)).to.deep.equal({ start: 9_982, end: 10_000 });
    expect(windowOf(0, 28, 0, 560)).to.deep.equal({ start: 0, end: 0 });
  });

  it('asks raw samples up to two hours, then the smallest bucket that keeps the chart under ~5,000 points', () => {
    const h = 3_600_000;
    expect(bucketFor(2 * h)).to.equal(null);
    expect(bucketFor(2 * h + 1)).to.equal('1m');
    expect(bucketFor(48 * h)).to.equal('1m');
    expect(bucketFor(7 * 24 * h)).to.equal('5m');
    expect(bucketFor(90 * 24 * h)).to.equal('1h');
    expect(bucketFor(400 * 24 * h)).to.equal('1d');
    for (const [span, width] of [[48 * h, 60_000], [14 * 24 * h, 300_000], [180 * 24 * h, h]] as const) {
      expect(span / width, `${span} ms`).to.be.at.most(5_000);
    }
  });

  it('formats values with their unit, raw bytes by size, long text cut', () => {
    expect(formatValue(21.5, 'degC')).to.equal('21.5 degC');
    expect(formatValue(null, 'degC')).to.equal('—');
    expect(formatValue({ base64: 'AAECAw==' })).to.equal('6 bytes');
    expect(formatValue({ state: 'RUNNING' })).to.equal('{"state":"RUNNING"}');
    expect(formatValue('x'.repeat(200))).to.have.length(120);
  });

  it('sums Prometheus samples by name across labels', () => {
    const m = metricTotals('# HELP x\n# TYPE x counter\nuns_ingest_accepted_total 42\nuns_ingest_rejected_total{code="A"} 2\nuns_ingest_rejected_total{code="B"} 3\n');
    expect(m.get('uns_ingest_accepted_total')).to.equal(42);
    expect(m.get('uns_ingest_rejected_total')).to.equal(5);
  });

  it('matches MQTT filters as the ACL does, to show write actions only where the role may write', () => {
    expect(filterMatches('spBv1.0/+/NCMD/#', 'spBv1.0/plant/NCMD/edge-1')).to.equal(true);
    expect(filterMatches('spBv1.0/+/NCMD/#', 'spBv1.0/plant/NCMD')).to.equal(true);
    expect(filterMatches('spBv1.0/+/NCMD/#', 'spBv1.0/plant/DCMD/edge-1')).to.equal(false);
    expect(filterMatches('acme/+', 'acme/plant1/x')).to.equal(false);
    expect(filterMatches('#', 'anything/at/all')).to.equal(true);
    expect(mayWrite(['acme/#'], 'spBv1.0/g/NCMD/e')).to.equal(false);
    expect(mayWrite(['acme/#', 'spBv1.0/#'], 'spBv1.0/g/NCMD/e')).to.equal(true);
  });
});
