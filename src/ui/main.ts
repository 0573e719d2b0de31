/**
 * UNS Explorer: the page uns-bridge serves at `/`. Log in with the API's users (the same roles decide what
 * is shown); browse the namespace tree, watch live values of a subtree over the WebSocket stream, chart a
 * topic's history and export it as CSV, read the latest rejected messages, and see the server's state.
 * Everything comes from this server: no CDN, no fonts or scripts from elsewhere.
 */
import { Api, ApiFailure } from './api.js';
import { LiveStream, type LivePoint } from './live.js';
import { ancestorsOf, bucketFor, formatValue, mayWrite, metricTotals, pathsTo, visibleRows, windowOf, type Row, type TopicMeta, type TopicNode } from './model.js';
import uPlot from './vendor/uplot.js';

type Child = Node | string | null | undefined | false;

/** A small element builder: text is always text (never parsed as HTML). */
function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Record<string, string | boolean | ((e: Event) => void)> = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (typeof v === 'function') el.addEventListener(k.replace(/^on/, ''), v);
    else if (v === true) el.setAttribute(k, '');
    else if (v !== false) el.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

const api = new Api();
const root = document.getElementById('app') as HTMLElement;
let teardown: (() => void) | null = null;

function qualityBadge(q: string | null | undefined): HTMLElement {
  const quality = q ?? 'unknown';
  return h('span', { class: `quality q-${quality}`, title: `quality: ${quality}` }, quality);
}

function when(iso: string | null | undefined): string {
  if (!iso) return '—';
  const d = new Date(iso);
  return `${d.toLocaleDateString()} ${d.toLocaleTimeString()}`;
}

function problem(e: unknown): string {
  return e instanceof ApiFailure ? `${e.code}: ${e.message}` : (e as Error).message;
}

// ---- shell and routing -----------------------------------------------------------------------------------

function shell(active: string, body: HTMLElement): void {
  const link = (hash: string, label: string): HTMLElement =>
    h('a', { href: hash, ...(active === hash ? { 'aria-current': 'page' } : {}) }, label);
  root.replaceChildren(
    h('header', { class: 'top' },
      h('span', { class: 'brand' }, 'uns-bridge'),
      h('nav', { 'aria-label': 'Views' }, link('#/namespace', 'Namespace'), link('#/rejections', 'Rejections'), link('#/webhooks', 'Webhooks'),
        link('#/rules', 'Rules'), link('#/sparkplug', 'Sparkplug'), link('#/server', 'Server')),
      h('span', { class: 'who' }, api.username ?? ''),
      h('button', { type: 'button', class: 'link', onclick: () => { api.logout(); route(); } }, 'Log out')),
    h('main', { id: 'view' }, body),
  );
}

function route(): void {
  teardown?.();
  teardown = null;
  if (api.token === null) { loginView(); return; }
  const hash = location.hash || '#/namespace';
  if (hash.startsWith('#/rejections')) rejectionsView();
  else if (hash.startsWith('#/webhooks')) webhooksView();
  else if (hash.startsWith('#/rules')) rulesView();
  else if (hash.startsWith('#/sparkplug')) sparkplugView();
  else if (hash.startsWith('#/server')) serverView();
  else namespaceView();
}

api.onLoggedOut = () => route();
window.addEventListener('hashchange', route);

// ---- login ------------------------------------------------------------------------------------------------

function loginView(): void {
  const error = h('p', { class: 'error', role: 'alert' });
  const user = h('input', { id: 'username', name: 'username', autocomplete: 'username', required: true });
  const pass = h('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const form = h('form', { class: 'login', 'aria-label': 'Log in' },
    h('h1', {}, 'uns-bridge'),
    h('label', { for: 'username' }, 'User'), user,
    h('label', { for: 'password' }, 'Password'), pass,
    h('button', { type: 'submit' }, 'Log in'),
    error);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    error.textContent = '';
    api.login(user.value, pass.value).then(() => route(), (err: unknown) => { error.textContent = problem(err); });
  });
  root.replaceChildren(h('main', { class: 'center' }, form));
  user.focus();
}

// ---- namespace: tree, detail, live values, chart -----------------------------------------------------------

const ROW = 28;

function namespaceView(): void {
  const filterInput = h('input', { id: 'filter', value: '#', 'aria-label': 'MQTT filter', spellcheck: 'false' });
  const count = h('span', { class: 'muted', id: 'tree-count' });
  const spacer = h('div', { class: 'spacer' });
  const tree = h('div', { class: 'tree', id: 'tree', role: 'tree', tabindex: '0', 'aria-label': 'Namespace' }, spacer);
  const detail = h('section', { class: 'detail', id: 'detail', 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'Select a node of the namespace.'));
  const form = h('form', { class: 'filter', role: 'search' }, filterInput, h('button', { type: 'submit' }, 'Filter'));
  shell('#/namespace', h('div', { class: 'split' }, h('aside', { class: 'side' }, form, count, tree), detail));

  let top: TopicNode | null = null;
  let expanded = new Set<string>();
  let rows: Row[] = [];
  let focus = 0;
  let selected: string | null = null;
  const live = new Map<string, LivePoint>();
  let liveTable: HTMLTableSectionElement | null = null;
  let liveState: HTMLElement | null = null;
  let chart: uPlot | null = null;
  let chartChanged: ((p: LivePoint) => void) | null = null;

  const stream = new LiveStream(() => api.token, {
    points: (points, kind) => {
      if (kind === 'snapshot') live.clear();
      for (const p of points) {
        const before = live.get(p.topic);
        live.set(p.topic, { ...p, unit: p.unit ?? before?.unit ?? null });
        drawLiveRow(p.topic, kind === 'datapoints_batch' && before !== undefined && before.value !== p.value);
        if (p.topic === selected && kind === 'datapoints_batch') {
          // The selected topic's own card follows its live value.
          const unit = live.get(p.topic)?.unit ?? null;
          const v = document.getElementById('last-value');
          if (v) v.textContent = formatValue(p.value, unit);
          document.getElementById('last-quality')?.replaceChildren(qualityBadge(p.quality));
          chartChanged?.(p);
        }
      }
    },
    gap: (dropped) => { if (liveState) { liveState.textContent = `behind: ${dropped} values dropped by the server`; liveState.className = 'state behind'; } },
    state: (s) => { if (liveState) { liveState.textContent = s === 'live' ? 'live' : s === 'connecting' ? 'connecting…' : 'disconnected, retrying'; liveState.className = `state ${s}`; } },
  });
  teardown = () => { stream.close(); chart?.destroy(); window.removeEventListener('resize', onResize); };

  const drawTree = (): void => {
    spacer.style.height = `${rows.length * ROW}px`;
    const { start, end } = windowOf(rows.length, ROW, tree.scrollTop, tree.clientHeight);
    const items: HTMLElement[] = [];
    for (let i = start; i < end; i++) {
      const r = rows[i] as Row;
      const n = r.node;
      const item = h('div', {
        class: `row${i === focus ? ' focus' : ''}${n.path === selected ? ' selected' : ''}`, role: 'treeitem', id: `row-${i}`,
        'aria-level': String(r.depth + 1), 'aria-selected': n.path === selected ? 'true' : 'false',
        ...(r.hasChildren ? { 'aria-expanded': r.expanded ? 'true' : 'false' } : {}), 'data-path': n.path,
        onclick: () => { focus = i; if (r.hasChildren) toggle(n.path); select(n); },
      },
      h('span', { class: 'caret', 'aria-hidden': 'true' }, r.hasChildren ? (r.expanded ? '▾' : '▸') : ''),
      h('span', { class: 'name' }, n.name),
      n.topic ? qualityBadge(n.topic.quality) : h('span', { class: 'count', title: 'topics below' }, String(n.topic_count)));
      item.style.top = `${i * ROW}px`;
      item.style.paddingLeft = `${8 + r.depth * 16}px`;
      items.push(item);
    }
    spacer.replaceChildren(...items);
    tree.setAttribute('aria-activedescendant', `row-${focus}`);
  };
  const refreshRows = (): void => { if (top) rows = visibleRows(top, expanded); drawTree(); };
  const toggle = (path: string): void => {
    if (expanded.has(path)) expanded.delete(path); else expanded.add(path);
    refreshRows();
  };
  tree.addEventListener('scroll', drawTree);
  const onResize = (): void => drawTree();
  window.addEventListener('resize', onResize);
  tree.addEventListener('keydown', (e) => {
    const r = rows[focus];
    if (r === undefined) return;
    if (e.key === 'ArrowDown') focus = Math.min(rows.length - 1, focus + 1);
    else if (e.key === 'ArrowUp') focus = Math.max(0, focus - 1);
    else if (e.key === 'ArrowRight' && r.hasChildren && !r.expanded) toggle(r.node.path);
    else if (e.key === 'ArrowLeft' && r.expanded) toggle(r.node.path);
    else if (e.key === 'ArrowLeft' && r.depth > 0) focus = rows.findIndex((x) => x.node.path === ancestorsOf(r.node.path).pop());
    else if (e.key === 'Enter' || e.key === ' ') select(r.node);
    else return;
    e.preventDefault();
    const y = focus * ROW;
    if (y < tree.scrollTop) tree.scrollTop = y;
    else if (y + ROW > tree.scrollTop + tree.clientHeight) tree.scrollTop = y + ROW - tree.clientHeight;
    drawTree();
  });

  const load = (filter: string): void => {
    count.textContent = 'loading…';
    api.get<{ tree: TopicNode }>(`/api/v1/topics?filter=${encodeURIComponent(filter)}&depth=128`).then((body) => {
      top = body.tree;
      expanded = new Set(pathsTo(top, top.topic_count <= 50 ? 128 : 2));
      focus = 0;
      count.textContent = `${top.topic_count} topic${top.topic_count === 1 ? '' : 's'}`;
      refreshRows();
    }, (e: unknown) => { count.textContent = problem(e); });
  };
  form.addEventListener('submit', (e) => { e.preventDefault(); load(filterInput.value.trim() || '#'); });

  const drawLiveRow = (topic: string, changed: boolean): void => {
    if (liveTable === null) return;
    const p = live.get(topic) as LivePoint;
    let tr = liveTable.querySelector<HTMLTableRowElement>(`tr[data-topic="${CSS.escape(topic)}"]`);
    const cells = [h('td', { class: 'topic' }, topic), h('td', { class: 'value' }, formatValue(p.value, p.unit)), h('td', {}, qualityBadge(p.quality)), h('td', {}, when(p.timestamp))];
    if (tr === null) {
      if (liveTable.rows.length >= 500) return;
      tr = h('tr', { 'data-topic': topic });
      liveTable.append(tr);
    }
    tr.replaceChildren(...cells);
    if (changed) { tr.classList.remove('flash'); void tr.offsetWidth; tr.classList.add('flash'); }
  };

  const select = (n: TopicNode): void => {
    selected = n.path;
    drawTree();
    chart?.destroy();
    chart = null;
    const meta = n.topic;
    liveTable = h('tbody', { id: 'live-rows' });
    liveState = h('span', { class: 'state connecting', id: 'live-state' }, 'connecting…');
    live.clear();
    const parts: HTMLElement[] = [h('h2', { id: 'detail-title' }, n.path)];
    if (meta) parts.push(metaList(meta, n.path));
    else parts.push(h('p', { class: 'muted' }, `${n.topic_count} topics below, ${n.child_count} direct children`));
    parts.push(h('h3', {}, 'Live ', liveState),
      h('table', { class: 'live' }, h('thead', {}, h('tr', {}, h('th', {}, 'Topic'), h('th', {}, 'Value'), h('th', {}, 'Quality'), h('th', {}, 'Source time'))), liveTable));
    if (meta) {
      const c = chartSection(n.path, meta, (u) => { chart?.destroy(); chart = u; });
      chartChanged = c.changed;
      parts.push(c.el);
    } else chartChanged = null;
    detail.replaceChildren(...parts);
    stream.follow(meta ? n.path : `${n.path}/#`);
  };

  load('#');
}

function metaList(m: TopicMeta, topic: string): HTMLElement {
  const row = (k: string, v: Child): HTMLElement[] => [h('dt', {}, k), h('dd', {}, v)];
  return h('dl', { class: 'meta' },
    ...row('Last value', h('span', { id: 'last-value' }, formatValue(m.last_value, m.unit))),
    ...row('Last 24 h', sparkline(topic)),
    ...row('Quality', h('span', { id: 'last-quality' }, qualityBadge(m.quality))),
    ...row('Source time', when(m.last_timestamp)),
    ...row('Last seen', when(m.last_seen)),
    ...row('Unit', m.unit ?? '—'),
    ...row('Route', m.description ? `${m.route}: ${m.description}` : m.route),
    ...row('Schema', m.schema ?? '—'),
    ...row('ISA-95', m.levels ? Object.entries(m.levels).map(([k, v]) => `${k}=${v}`).join(', ') : '—'),
    ...row('First seen', when(m.first_seen)));
}

/** A topic's last 24 hours as a small line (hourly averages), drawn when the data comes. */
function sparkline(topic: string): HTMLElement {
  const box = h('span', { class: 'spark', id: 'sparkline', role: 'img', 'aria-label': `Last 24 hours of ${topic}` });
  const to = Date.now();
  const q = `topic=${encodeURIComponent(topic)}&from=${new Date(to - 86_400_000).toISOString()}&to=${new Date(to).toISOString()}&bucket=5m&agg=avg`;
  api.get<{ datapoints: Array<{ timestamp: string; avg?: number }> }>(`/api/v1/datapoints/history?${q}`).then((body) => {
    const pts = body.datapoints.filter((p) => typeof p.avg === 'number') as Array<{ timestamp: string; avg: number }>;
    if (pts.length === 0) { box.textContent = 'no numeric samples'; return; }
    const W = 160;
    const H = 28;
    const xs = pts.map((p) => Date.parse(p.timestamp));
    const ys = pts.map((p) => p.avg);
    const [x0, x1] = [to - 86_400_000, to];
    const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
    const px = (x: number): number => ((x - x0) / (x1 - x0)) * W;
    const py = (y: number): number => (y1 === y0 ? H / 2 : H - 2 - ((y - y0) / (y1 - y0)) * (H - 4));
    const ns = 'http://www.w3.org/2000/svg';
    const svg = document.createElementNS(ns, 'svg');
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    svg.setAttribute('width', String(W));
    svg.setAttribute('height', String(H));
    const line = document.createElementNS(ns, pts.length === 1 ? 'circle' : 'polyline');
    if (pts.length === 1) {
      line.setAttribute('cx', String(px(xs[0] as number)));
      line.setAttribute('cy', String(py(ys[0] as number)));
      line.setAttribute('r', '2');
    } else line.setAttribute('points', xs.map((x, i) => `${px(x).toFixed(1)},${py(ys[i] as number).toFixed(1)}`).join(' '));
    line.setAttribute('class', 'spark-line');
    svg.append(line);
    const r4 = (v: number): string => String(Number(v.toPrecision(4)));
    box.replaceChildren(svg, h('span', { class: 'muted small' }, ` ${y0 === y1 ? r4(y0) : `${r4(y0)} – ${r4(y1)}`}`));
  }, () => { box.textContent = '—'; });
  return box;
}

interface AggPoint { timestamp: string; avg?: number; min?: number; max?: number }
interface RawPoint { timestamp: string; value: unknown }

/** The history chart of one topic: a range, buckets chosen by span (raw when zoomed in), CSV of the range. */
function chartSection(topic: string, meta: TopicMeta, onChart: (c: uPlot) => void): { el: HTMLElement; changed(p: LivePoint): void } {
  const box = h('div', { class: 'chart', id: 'chart', role: 'img', 'aria-label': `History of ${topic}` });
  const info = h('span', { class: 'muted', id: 'chart-info' });
  // A preset ("last 6 h") follows the clock: it ends now whenever it is drawn or exported. A zoom is fixed.
  let span: number | null = 3_600_000;
  let range = { from: Date.now() - 3_600_000, to: Date.now() };
  const current = (): { from: number; to: number } => (span === null ? range : { from: Date.now() - span, to: Date.now() });
  let plot: uPlot | null = null;
  let seq = 0;
  // Live values come as soon as they are accepted, before the store has committed them: the raw chart adds
  // those newer than what history returned, so a redraw never shows less than the live table.
  const liveTail: Array<[number, number]> = [];

  const draw = (): void => {
    const my = ++seq;
    range = current();
    const bucket = bucketFor(range.to - range.from);
    const q = `topic=${encodeURIComponent(topic)}&from=${new Date(range.from).toISOString()}&to=${new Date(range.to).toISOString()}`;
    info.textContent = 'loading…';
    const url = bucket === null ? `/api/v1/datapoints/history?${q}&limit=10000` : `/api/v1/datapoints/history?${q}&bucket=${bucket}&agg=avg,min,max`;
    api.get<{ datapoints: Array<AggPoint & RawPoint> }>(url).then((body) => {
      if (my !== seq) return;
      const pts = body.datapoints;
      const xs = pts.map((p) => Date.parse(p.timestamp) / 1000);
      const ys = pts.map((p) => (typeof p.value === 'number' ? p.value : null));
      if (bucket === null) {
        const last = xs.length > 0 ? (xs[xs.length - 1] as number) : Number.NEGATIVE_INFINITY;
        for (const [x, y] of liveTail) if (x > last && x >= range.from / 1000 && x <= range.to / 1000) { xs.push(x); ys.push(y); }
      }
      const data: uPlot.AlignedData = bucket === null
        ? [xs, ys]
        : [xs, pts.map((p) => p.avg ?? null), pts.map((p) => p.min ?? null), pts.map((p) => p.max ?? null)];
      info.textContent = `${xs.length} ${bucket === null ? (xs.length === 1 ? 'sample' : 'samples') : `${bucket} buckets (avg, min–max band)`}`;
      const unit = meta.unit ?? '';
      const series: uPlot.Series[] = bucket === null
        ? [{}, { label: topic, stroke: '#1f6feb', width: 1.5, points: { show: pts.length < 200 } }]
        : [{}, { label: 'avg', stroke: '#1f6feb', width: 1.5 }, { label: 'min', stroke: '#8aa9d6', width: 1 }, { label: 'max', stroke: '#8aa9d6', width: 1 }];
      const opts: uPlot.Options = {
        width: Math.max(320, box.clientWidth), height: 260, series,
        axes: [{}, { label: unit, size: 60 }],
        scales: { x: { time: true, min: range.from / 1000, max: range.to / 1000 } },
        ...(bucket === null ? {} : { bands: [{ series: [3, 2], fill: 'rgba(31,111,235,0.12)' }] }),
        cursor: { drag: { x: true, y: false } },
        hooks: {
          setSelect: [(u: uPlot) => {
            if (u.select.width < 4) return;
            const min = u.posToVal(u.select.left, 'x');
            const max = u.posToVal(u.select.left + u.select.width, 'x');
            span = null;
            range = { from: Math.round(min * 1000), to: Math.round(max * 1000) };
            draw();
          }],
        },
      };
      plot?.destroy();
      box.replaceChildren();
      plot = new uPlot(opts, data, box);
      onChart(plot);
    }, (e: unknown) => { if (my === seq) info.textContent = problem(e); });
  };

  const pick = (label: string, ms: number): HTMLElement => h('button', { type: 'button', onclick: () => { span = ms; draw(); } }, label);
  const exportCsv = (): void => {
    const r = current();
    const q = `filter=${encodeURIComponent(topic)}&from=${new Date(r.from).toISOString()}&to=${new Date(r.to).toISOString()}`;
    api.download(`/api/v1/export.csv?${q}`, `${topic.replaceAll('/', '_')}.csv`).catch((e: unknown) => { info.textContent = problem(e); });
  };
  const section = h('section', { class: 'history' },
    h('h3', {}, 'History'),
    h('div', { class: 'toolbar', role: 'group', 'aria-label': 'Time range' },
      pick('1 h', 3_600_000), pick('6 h', 6 * 3_600_000), pick('24 h', 86_400_000), pick('7 d', 7 * 86_400_000), pick('30 d', 30 * 86_400_000),
      h('button', { type: 'button', id: 'export-csv', onclick: exportCsv }, 'Export CSV'), info),
    box,
    h('p', { class: 'muted small' }, 'Drag across the chart to zoom in; raw samples are shown below two hours.'));
  queueMicrotask(draw);
  // A new value of the topic: a chart that follows the clock is drawn again (at most every 5 s).
  let pending: number | null = null;
  let lastDraw = 0;
  const changed = (p: LivePoint): void => {
    const x = p.timestamp === null ? Number.NaN : Date.parse(p.timestamp) / 1000;
    if (typeof p.value === 'number' && !Number.isNaN(x)) {
      liveTail.push([x, p.value]);
      if (liveTail.length > 1_000) liveTail.shift();
    }
    if (span === null || pending !== null) return;
    const wait = Math.max(0, lastDraw + 5_000 - Date.now());
    pending = window.setTimeout(() => { pending = null; lastDraw = Date.now(); if (section.isConnected) draw(); }, wait);
  };
  return { el: section, changed };
}

// ---- rejections --------------------------------------------------------------------------------------------

interface Rejection { id: string; time: string; topic: string; code: string; reason: string; client_id: string | null; payload_text: string | null; payload_base64: string | null }

function rejectionsView(): void {
  const filter = h('input', { id: 'rej-filter', value: '#', 'aria-label': 'MQTT filter', spellcheck: 'false' });
  const code = h('input', { id: 'rej-code', placeholder: 'UNS_ERR_…', 'aria-label': 'Error code', list: 'rej-codes', spellcheck: 'false' });
  const codes = h('datalist', { id: 'rej-codes' });
  const body = h('tbody', { id: 'rej-rows' });
  const status = h('p', { class: 'muted', role: 'status' });
  const more = h('button', { type: 'button', hidden: true }, 'Older');
  const seen = new Set<string>();
  let next: string | null = null;

  const fetchPage = (reset: boolean): void => {
    const q = new URLSearchParams({ filter: filter.value.trim() || '#', limit: '100' });
    if (code.value.trim() !== '') q.set('code', code.value.trim());
    if (!reset && next !== null) q.set('before', next);
    status.textContent = 'loading…';
    api.get<{ rejections: Rejection[]; next_before: string | null }>(`/api/v1/rejections?${q}`).then((page) => {
      if (reset) body.replaceChildren();
      for (const r of page.rejections) {
        if (!seen.has(r.code)) { seen.add(r.code); codes.append(h('option', { value: r.code })); }
        const payload = r.payload_text ?? (r.payload_base64 === null ? '—' : `${Math.floor((r.payload_base64.length * 3) / 4)} bytes (not UTF-8)`);
        body.append(h('tr', {}, h('td', {}, when(r.time)), h('td', {}, h('code', {}, r.code)), h('td', { class: 'topic' }, r.topic),
          h('td', {}, r.client_id ?? '—'), h('td', {}, r.reason), h('td', { class: 'payload' }, payload.length > 200 ? `${payload.slice(0, 199)}…` : payload)));
      }
      next = page.next_before;
      more.hidden = next === null;
      status.textContent = body.rows.length === 0 ? 'No rejected messages.' : `${body.rows.length} shown`;
    }, (e: unknown) => { status.textContent = problem(e); });
  };
  const form = h('form', { class: 'filter', role: 'search' }, filter, code, codes, h('button', { type: 'submit' }, 'Show'));
  form.addEventListener('submit', (e) => { e.preventDefault(); fetchPage(true); });
  more.addEventListener('click', () => fetchPage(false));
  shell('#/rejections', h('section', { class: 'page' },
    h('h2', {}, 'Rejected messages'),
    h('p', { class: 'muted' }, 'Messages refused with a coded reason (also republished on $uns/rejected/<topic>), newest first.'),
    form, status,
    table(['Time', 'Code', 'Topic', 'Client', 'Reason', 'Payload'], body),
    more));
  fetchPage(true);
}

// ---- webhooks ----------------------------------------------------------------------------------------------

interface Webhook {
  id: string; name: string; url: string; events: string[]; is_active: boolean; disabled_reason: string | null;
  health?: { state: string; failing_since: string | null; last_success_at: string | null };
  success_count?: number; failure_count?: number; pending_count?: number; success_rate?: number | null; last_triggered?: string | null;
}
interface Delivery { id: string; event_type: string; status: string; attempts: number; dead_reason: string | null; created_at: string; last_attempt_at: string | null; response_code: number | null; latency_ms: number | null }
interface Attempt { attempt: number; started_at: string; response_code: number | null; latency_ms: number; error_class: string | null; outcome: string; response_excerpt: string | null }

function table(headers: readonly string[], body: HTMLTableSectionElement): HTMLTableElement {
  return h('table', { class: 'grid' }, h('thead', {}, h('tr', {}, ...headers.map((t) => h('th', {}, t)))), body);
}

function webhooksView(): void {
  const list = h('tbody', { id: 'wh-rows' });
  const status = h('p', { class: 'muted', role: 'status' });
  const detail = h('section', { id: 'wh-detail' });
  shell('#/webhooks', h('section', { class: 'page' }, h('h2', {}, 'Webhooks'), status,
    table(['Name', 'URL', 'Events', 'Health', 'Success', 'Pending', 'Last triggered'], list), detail));

  const showDeliveries = (w: Webhook, only: string, message = ''): void => {
    const rows = h('tbody', { id: 'wh-deliveries' });
    const note = h('p', { class: 'muted', role: 'status' }, message);
    const one = h('div', { id: 'wh-delivery' });
    const filter = (label: string, value: string): HTMLElement => h('button', { type: 'button', ...(only === value ? { 'aria-pressed': 'true' } : {}), onclick: () => showDeliveries(w, value) }, label);
    const test = h('button', { type: 'button', id: 'wh-test', onclick: () => {
      note.textContent = 'sending a test event…';
      api.post<{ status: string; response_code: number | null; error_message: string | null }>(`/api/v1/webhooks/${w.id}/test`, {}).then((r) => {
        showDeliveries(w, only, r.status === 'success' ? `test delivered (${r.response_code ?? ''})` : `test failed: ${r.error_message ?? r.response_code ?? ''}`);
      }, (e: unknown) => { note.textContent = problem(e); });
    } }, 'Send test');
    const stats = h('div', { class: 'cards', id: 'wh-stats' });
    api.get<{ summary?: { total_deliveries: number; succeeded: number; dead: number; pending: number; success_rate: number | null; avg_latency_ms: number | null; total_retries: number };
      time_series?: Array<{ bucket: string; attempts: number; succeeded: number; failed: number }> }>(`/api/v1/webhooks/${w.id}/stats`).then((st) => {
      const m = st.summary;
      if (m === undefined) return;
      const card = (t: string, v: string): HTMLElement => h('div', { class: 'card' }, h('div', { class: 'muted small' }, t), h('div', { class: 'big' }, v));
      const series = st.time_series ?? [];
      const peak = Math.max(1, ...series.map((b) => b.attempts));
      const bars = h('div', { class: 'bars', role: 'img', 'aria-label': 'Attempts per period: succeeded and failed' },
        ...series.map((b) => {
          const bar = h('span', { class: 'bar', title: `${when(b.bucket)}: ${b.succeeded} succeeded, ${b.failed} failed` },
            h('span', { class: 'ok' }), h('span', { class: 'ko' }));
          (bar.firstChild as HTMLElement).style.height = `${(b.succeeded / peak) * 100}%`;
          (bar.lastChild as HTMLElement).style.height = `${(b.failed / peak) * 100}%`;
          return bar;
        }));
      stats.replaceChildren(card('Success rate', m.success_rate === null ? '—' : `${Math.round(m.success_rate * 100)}%`),
        card('Deliveries', `${m.total_deliveries} (${m.dead} dead, ${m.pending} pending)`), card('Retries', String(m.total_retries)),
        card('Avg latency', m.avg_latency_ms === null ? '—' : `${Math.round(m.avg_latency_ms)} ms`), h('div', { class: 'card wide' }, h('div', { class: 'muted small' }, 'Attempts over time'), bars));
    }, () => undefined);
    detail.replaceChildren(h('h3', {}, `Deliveries of ${w.name}`), stats,
      h('div', { class: 'toolbar' }, filter('All', ''), filter('Dead', 'dead'), filter('Pending', 'pending'), test), note,
      table(['Created', 'Event', 'Status', 'Attempts', 'Last code', 'Latency', ''], rows), one);
    const q = only === '' ? '' : `&status=${only}`;
    api.get<{ deliveries: Delivery[] }>(`/api/v1/webhooks/${w.id}/deliveries?limit=100${q}`).then((r) => {
      for (const d of r.deliveries) {
        const replay = d.status === 'dead' ? h('button', { type: 'button', class: 'replay', onclick: () => {
          api.post(`/api/v1/webhooks/${w.id}/deliveries/${d.id}/replay`).then(() => showDeliveries(w, only, 'replayed: a new delivery was queued'),
            (e: unknown) => { note.textContent = problem(e); });
        } }, 'Replay') : null;
        const open = h('button', { type: 'button', class: 'link', onclick: () => showDelivery(w, d.id, one) }, when(d.created_at));
        rows.append(h('tr', { 'data-status': d.status }, h('td', {}, open), h('td', {}, d.event_type), h('td', {}, h('span', { class: `status s-${d.status}` }, d.status)),
          h('td', {}, String(d.attempts)), h('td', {}, d.response_code === null ? '—' : String(d.response_code)),
          h('td', {}, d.latency_ms === null ? '—' : `${d.latency_ms} ms`), h('td', {}, replay)));
      }
      if (r.deliveries.length === 0 && message === '') note.textContent = 'No deliveries.';
    }, (e: unknown) => { note.textContent = problem(e); });
  };

  const showDelivery = (w: Webhook, id: string, into: HTMLElement): void => {
    api.get<{ delivery: Delivery; payload: unknown; attempts: Attempt[] }>(`/api/v1/webhooks/${w.id}/deliveries/${id}`).then((r) => {
      const attempts = h('tbody', {});
      for (const a of r.attempts) {
        attempts.append(h('tr', {}, h('td', {}, String(a.attempt)), h('td', {}, when(a.started_at)), h('td', {}, a.outcome),
          h('td', {}, a.response_code === null ? (a.error_class ?? '—') : String(a.response_code)), h('td', {}, `${a.latency_ms} ms`), h('td', { class: 'payload' }, a.response_excerpt ?? '')));
      }
      into.replaceChildren(h('h3', {}, `Delivery ${id}`), r.delivery.dead_reason ? h('p', { class: 'error' }, `Dead: ${r.delivery.dead_reason}`) : '',
        table(['#', 'Started', 'Outcome', 'Code', 'Latency', 'Response'], attempts),
        h('h4', {}, 'Body sent'), h('pre', { class: 'payload', id: 'wh-body' }, JSON.stringify(r.payload, null, 2)));
    }, (e: unknown) => { into.replaceChildren(h('p', { class: 'error' }, problem(e))); });
  };

  api.get<{ webhooks: Webhook[] }>('/api/v1/webhooks?limit=100').then((r) => {
    for (const w of r.webhooks) {
      const state = w.health?.state ?? (w.is_active ? 'healthy' : 'disabled');
      list.append(h('tr', { 'data-id': w.id },
        h('td', {}, h('button', { type: 'button', class: 'link', onclick: () => showDeliveries(w, '') }, w.name)),
        h('td', { class: 'topic' }, w.url), h('td', {}, w.events.join(', ')),
        h('td', {}, h('span', { class: `status h-${state}` }, state), w.disabled_reason ? ` (${w.disabled_reason})` : ''),
        h('td', {}, w.success_rate === null || w.success_rate === undefined ? '—' : `${Math.round(w.success_rate * 100)}%`),
        h('td', {}, String(w.pending_count ?? 0)), h('td', {}, when(w.last_triggered))));
    }
    status.textContent = r.webhooks.length === 0 ? 'No webhooks (create them with POST /api/v1/webhooks).' : `${r.webhooks.length} webhook${r.webhooks.length === 1 ? '' : 's'}`;
  }, (e: unknown) => { status.textContent = problem(e); });
}

// ---- rules ---------------------------------------------------------------------------------------------------

interface Rule { id: string; name: string; topic_filter: string; operator: string; threshold: number; hysteresis: number; min_duration_ms: number; enabled: boolean; source: string }

function rulesView(): void {
  const rows = h('tbody', { id: 'rule-rows' });
  const status = h('p', { class: 'muted', role: 'status' });
  const states = h('section', { id: 'rule-states' });
  shell('#/rules', h('section', { class: 'page' }, h('h2', {}, 'Threshold rules'), status,
    table(['Name', 'Topics', 'Condition', 'Hysteresis', 'For', 'Enabled', 'Source'], rows), states));
  api.get<{ rules: Rule[] }>('/api/v1/rules').then((r) => {
    for (const x of r.rules) {
      const name = h('button', { type: 'button', class: 'link', onclick: () => ruleStates(x, states) }, x.name);
      rows.append(h('tr', {}, h('td', {}, name), h('td', { class: 'topic' }, x.topic_filter), h('td', {}, `${x.operator} ${x.threshold}`),
        h('td', {}, String(x.hysteresis)), h('td', {}, `${Math.round(x.min_duration_ms / 1000)} s`), h('td', {}, x.enabled ? 'yes' : 'no'), h('td', {}, x.source)));
    }
    status.textContent = r.rules.length === 0 ? 'No rules.' : `${r.rules.length} rule${r.rules.length === 1 ? '' : 's'}`;
  }, (e: unknown) => { status.textContent = problem(e); });
}

/** A rule's topics that are past (or on their way past) its threshold. */
function ruleStates(r: Rule, into: HTMLElement): void {
  api.get<{ states: Array<{ topic: string; state: string; since: string; value: number | null }> }>(`/api/v1/rules/${r.id}`).then((x) => {
    const body = h('tbody', { id: 'rule-state-rows' });
    for (const st of x.states) {
      body.append(h('tr', {}, h('td', { class: 'topic' }, st.topic), h('td', {}, h('span', { class: `status ${st.state === 'exceeded' ? 's-dead' : 's-pending'}` }, st.state)),
        h('td', {}, when(st.since)), h('td', {}, formatValue(st.value))));
    }
    into.replaceChildren(h('h3', {}, `${r.name}: topics past the threshold`),
      x.states.length === 0 ? h('p', { class: 'muted' }, 'None: every topic is within the threshold.') : table(['Topic', 'State', 'Since', 'Value'], body));
  }, (e: unknown) => { into.replaceChildren(h('p', { class: 'error' }, problem(e))); });
}

// ---- Sparkplug -----------------------------------------------------------------------------------------------

interface SpDevice { device_id: string; online: boolean; born_at: string | null }
interface SpNode { group_id: string; edge_node_id: string; online: boolean; born_at: string | null; died_at: string | null; metrics: number; rebirths_requested: number; last_rebirth_at: string | null; devices: SpDevice[] }

function sparkplugView(): void {
  const rows = h('tbody', { id: 'sp-rows' });
  const status = h('p', { class: 'muted', role: 'status' });
  shell('#/sparkplug', h('section', { class: 'page' }, h('h2', {}, 'Sparkplug edge nodes'), status,
    table(['Group', 'Edge node', 'State', 'Born', 'Died', 'Metrics', 'Devices', ''], rows)));
  Promise.all([
    api.get<{ nodes: SpNode[] }>('/api/v1/sparkplug/nodes'),
    api.get<{ write?: string[] }>('/api/v1/auth/me'),
  ]).then(([r, me]) => {
    for (const n of r.nodes) {
      const canRebirth = mayWrite(me.write ?? [], `spBv1.0/${n.group_id}/NCMD/${n.edge_node_id}`) && n.online;
      const rebirth = canRebirth ? h('button', { type: 'button', onclick: () => {
        api.post(`/api/v1/sparkplug/nodes/${encodeURIComponent(n.group_id)}/${encodeURIComponent(n.edge_node_id)}/rebirth`).then(
          () => { status.textContent = `rebirth requested from ${n.group_id}/${n.edge_node_id}`; },
          (e: unknown) => { status.textContent = problem(e); });
      } }, 'Rebirth') : null;
      const devices = n.devices.map((d) => `${d.device_id}${d.online ? '' : ' (offline)'}`).join(', ');
      rows.append(h('tr', {}, h('td', {}, n.group_id), h('td', {}, n.edge_node_id),
        h('td', {}, h('span', { class: `status ${n.online ? 'h-healthy' : 'h-disabled'}` }, n.online ? 'online' : 'offline')),
        h('td', {}, when(n.born_at)), h('td', {}, when(n.died_at)), h('td', {}, String(n.metrics)), h('td', {}, devices || '—'), h('td', {}, rebirth)));
    }
    status.textContent = r.nodes.length === 0 ? 'No Sparkplug edge node has been born here.' : `${r.nodes.length} edge node${r.nodes.length === 1 ? '' : 's'}`;
  }, (e: unknown) => { status.textContent = problem(e); });
}

// ---- server ------------------------------------------------------------------------------------------------

function serverView(): void {
  const cards = h('div', { class: 'cards', id: 'server-cards' });
  shell('#/server', h('section', { class: 'page' }, h('h2', {}, 'Server'), cards));
  let last: { at: number; accepted: number } | null = null;
  const card = (title: string, value: string, tone = ''): HTMLElement => h('div', { class: `card ${tone}` }, h('div', { class: 'muted small' }, title), h('div', { class: 'big' }, value));
  const poll = async (): Promise<void> => {
    const [ready, metrics] = await Promise.all([
      fetch('/ready').then((r) => r.json() as Promise<{ status: string; checks: Record<string, Record<string, unknown> | null> }>),
      fetch('/metrics').then((r) => r.text()),
    ]);
    const m = metricTotals(metrics);
    const now = performance.now();
    const accepted = m.get('uns_ingest_accepted_total') ?? 0;
    const rate = last === null ? null : ((accepted - last.accepted) / ((now - last.at) / 1000));
    last = { at: now, accepted };
    const c = ready.checks;
    const db = c['database'] as { state?: string } | null;
    const cluster = c['cluster'] as { connected?: boolean; peers?: unknown[] } | undefined;
    const sessions = c['sessions'] as { count?: number; queued?: number } | undefined;
    cards.replaceChildren(
      card('Status', ready.status, ready.status === 'ready' ? 'ok' : 'warn'),
      card('Database', db?.state ?? '—', db?.state === 'healthy' ? 'ok' : 'warn'),
      card('Ingest rate', rate === null ? '…' : `${Math.round(rate)} msg/s`),
      card('Accepted', String(accepted)),
      card('Store queue', String(m.get('uns_store_queue_depth') ?? 0)),
      card('Spool', `${m.get('uns_store_spool_segments') ?? 0} segments`),
      card('MQTT clients', String(m.get('uns_mqtt_clients') ?? 0)),
      ...(sessions ? [card('Persistent sessions', `${sessions.count ?? 0} (${sessions.queued ?? 0} queued)`)] : []),
      ...(cluster ? [card('Cluster', cluster.connected ? `${cluster.peers?.length ?? 0} peers` : 'Redis down', cluster.connected ? 'ok' : 'warn')] : []),
    );
  };
  const tick = (): void => { poll().catch((e: unknown) => { cards.replaceChildren(h('p', { class: 'error' }, problem(e))); }); };
  tick();
  const timer = window.setInterval(tick, 2_000);
  teardown = () => clearInterval(timer);
}

route();
