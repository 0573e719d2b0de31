/**
 * The bench's slice of the namespace in topics.yaml, shared by the MQTT load generator, the WebSocket
 * clients (whose filters must match what is published) and the synthetic store of the read scenarios.
 */

export const SITES = ['plant1', 'plant2'] as const;
export const AREAS = ['brewing', 'packaging', 'utilities', 'warehouse'] as const;
const CELLS = ['filler', 'capper', 'labeler', 'palletizer', 'mixer', 'boiler', 'compressor', 'conveyor'];
// None of these is a named route in topics.yaml, so all go to the catch-all route (JSON, no deadband).
const TAGS = ['flow_rate', 'level', 'vibration', 'humidity', 'current', 'voltage', 'torque', 'ph', 'conductivity', 'weight'];

/** `acme/<site>/<area>` of publisher i: publishers take the 8 (site, area) pairs in turn. */
export function areaOf(i: number): string {
  const site = SITES[i % SITES.length] as string;
  const area = AREAS[Math.floor(i / SITES.length) % AREAS.length] as string;
  return `acme/${site}/${area}`;
}

/** Publisher i owns topics acme/<site>/<area>/line<n>/<cell>/<tag>: (site, area, line) is unique per publisher. */
export function topicsFor(i: number, count: number): string[] {
  const line = `line${Math.floor(i / (SITES.length * AREAS.length)) + 1}`;
  const out: string[] = [];
  for (let j = 0; j < count; j++) {
    const cell = CELLS[j % CELLS.length] as string;
    const tag = (TAGS[j % TAGS.length] as string) + (j >= TAGS.length ? `_${Math.floor(j / TAGS.length)}` : '');
    out.push(`${areaOf(i)}/${line}/${cell}/${tag}`);
  }
  return out;
}

/** The ISA-95 levels of a topic made by topicsFor, as the server stores them in topics.levels. */
export function levelsOf(topic: string): Record<string, string> {
  const [enterprise, site, area, line, cell] = topic.split('/');
  return { enterprise: enterprise ?? '', site: site ?? '', area: area ?? '', line: line ?? '', cell: cell ?? '' };
}

/** Every `acme/<site>/<area>` prefix, in publisher order. */
export const ALL_AREAS: readonly string[] = SITES.flatMap((_, s) => AREAS.map((_a, a) => areaOf(a * SITES.length + s)));

/** Does an MQTT filter of the shapes the bench uses (`acme/#`, `acme/<site>/#`, `acme/<site>/<area>/#`) cover this area? */
export function filterCoversArea(filter: string, area: string): boolean {
  if (!filter.endsWith('/#')) return filter === area;
  const prefix = filter.slice(0, -2);
  return area === prefix || area.startsWith(`${prefix}/`);
}
