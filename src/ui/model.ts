/**
 * The Explorer's logic that needs no page: the namespace tree as visible rows, the window of rows a
 * virtualised list draws, the history bucket for a time span, value formatting, and metrics text parsing.
 * Tested on its own (test/unit/ui/model.test.ts).
 */

export type Quality = 'good' | 'uncertain' | 'bad' | 'stale';

export interface TopicMeta {
  readonly unit: string | null;
  readonly route: string;
  readonly description: string | null;
  readonly levels: Readonly<Record<string, string>> | null;
  readonly schema: string | null;
  readonly last_value: unknown;
  readonly last_timestamp: string | null;
  readonly quality: Quality | null;
  readonly last_seen: string | null;
  readonly first_seen: string;
}

export interface TopicNode {
  readonly name: string;
  readonly path: string;
  readonly child_count: number;
  readonly topic_count: number;
  readonly children: readonly TopicNode[];
  readonly topic?: TopicMeta;
}

export interface Row {
  readonly node: TopicNode;
  /** 0 for the children of the root. */
  readonly depth: number;
  readonly expanded: boolean;
  readonly hasChildren: boolean;
}

/** The rows a tree shows: pre-order, children by name, below expanded nodes only. */
export function visibleRows(root: TopicNode, expanded: ReadonlySet<string>): Row[] {
  const out: Row[] = [];
  const walk = (n: TopicNode, depth: number): void => {
    const kids = [...n.children].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const c of kids) {
      const open = expanded.has(c.path);
      out.push({ node: c, depth, expanded: open, hasChildren: c.children.length > 0 });
      if (open) walk(c, depth + 1);
    }
  };
  walk(root, 0);
  return out;
}

/** The paths to expand so that `path` is visible (its ancestors, root excluded). */
export function ancestorsOf(path: string): string[] {
  const levels = path.split('/');
  const out: string[] = [];
  for (let i = 1; i < levels.length; i++) out.push(levels.slice(0, i).join('/'));
  return out;
}

/** Every node path of a tree down to `maxDepth` levels below the root (to open a small tree at once). */
export function pathsTo(root: TopicNode, maxDepth: number): string[] {
  const out: string[] = [];
  const walk = (n: TopicNode, d: number): void => {
    if (d >= maxDepth) return;
    for (const c of n.children) { out.push(c.path); walk(c, d + 1); }
  };
  walk(root, 0);
  return out;
}

/** Rows [start, end) to draw for a scroll position, with `overscan` rows beyond each edge. */
export function windowOf(count: number, rowHeight: number, scrollTop: number, viewport: number, overscan = 8): { start: number; end: number } {
  const first = Math.floor(Math.max(0, scrollTop) / rowHeight);
  const visible = Math.ceil(Math.max(0, viewport) / rowHeight) + 1;
  return { start: Math.max(0, first - overscan), end: Math.min(count, first + visible + overscan) };
}

export type Bucket = '1m' | '5m' | '1h' | '1d';

/**
 * The history a chart asks for over a span: raw samples up to 2 hours, then the smallest bucket that keeps
 * the chart under ~5,000 points (1m to 2 days, 5m to 14 days, 1h to 180 days, 1d beyond).
 */
export function bucketFor(spanMs: number): Bucket | null {
  const h = 3_600_000;
  if (spanMs <= 2 * h) return null;
  if (spanMs <= 48 * h) return '1m';
  if (spanMs <= 14 * 24 * h) return '5m';
  if (spanMs <= 180 * 24 * h) return '1h';
  return '1d';
}

/** A value for display: numbers as they are, raw bytes by size, JSON compact, long text cut. */
export function formatValue(v: unknown, unit?: string | null): string {
  let s: string;
  if (v === null || v === undefined) s = '—';
  else if (typeof v === 'number' || typeof v === 'boolean') s = String(v);
  else if (typeof v === 'string') s = v;
  else if (typeof v === 'object' && v !== null && typeof (v as { base64?: unknown }).base64 === 'string') {
    s = `${Math.floor(((v as { base64: string }).base64.length * 3) / 4)} bytes`;
  } else s = JSON.stringify(v);
  if (s.length > 120) s = `${s.slice(0, 119)}…`;
  return unit && v !== null && v !== undefined ? `${s} ${unit}` : s;
}

/** Samples of Prometheus text format by metric name (labels folded by summing), for the server view. */
export function metricTotals(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m === null) continue;
    const v = Number(m[3]);
    if (!Number.isFinite(v)) continue;
    out.set(m[1] as string, (out.get(m[1] as string) ?? 0) + v);
  }
  return out;
}

/** Whether an MQTT topic filter matches a topic ('+' one level, '#' the rest), as the server's ACL reads them. */
export function filterMatches(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    const lvl = f[i] as string;
    if (lvl === '#') return i < t.length || i === t.length;
    if (i >= t.length) return false;
    if (lvl !== '+' && lvl !== t[i]) return false;
  }
  return f.length === t.length;
}

/** Whether write filters allow a topic (for showing write actions; the server checks again). */
export function mayWrite(writeFilters: readonly string[], topic: string): boolean {
  return writeFilters.some((f) => filterMatches(f, topic));
}
