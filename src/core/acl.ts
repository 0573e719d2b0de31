/**
 * Role permissions on topic filters, from topics.yaml. A publish needs a write filter that matches the
 * topic; a subscribe needs a read filter that covers the whole subscription filter.
 *
 * Deny rules (`deny: {read, write}` in a role) are evaluated first, over all of a principal's roles: a
 * topic a deny filter matches is refused whatever any role allows (a role may read `#` except
 * `acme/+/hr/#`). A subscription lying wholly inside a deny filter is refused; one that only overlaps it is
 * granted, and then every delivery to it is checked (`hasReadDenies`): the MQTT broker, the live streams and
 * webhooks drop the denied topics. Without deny rules nothing is checked per delivered message.
 */
import { TopicMatcher, filterCovers, filtersOverlap } from './topic-filter.js';

export interface RolePermissions {
  readonly read: readonly string[];
  readonly write: readonly string[];
  readonly deny?: { readonly read: readonly string[]; readonly write: readonly string[] } | undefined;
}

export type RoleMap = ReadonlyMap<string, RolePermissions>;

function matcher(filters: readonly string[]): TopicMatcher<true> | null {
  return filters.length === 0 ? null : new TopicMatcher(filters.map((f) => [f, true] as [string, true]), { cacheSize: 10_000 });
}

export class Permissions {
  private readonly writer: TopicMatcher<true>;
  private readonly reader: TopicMatcher<true>;
  private readonly readFilters: readonly string[];
  private readonly deniedWrite: TopicMatcher<true> | null;
  private readonly deniedRead: TopicMatcher<true> | null;
  private readonly denyReadFilters: readonly string[];

  constructor(read: readonly string[], write: readonly string[], deny: { readonly read: readonly string[]; readonly write: readonly string[] } = { read: [], write: [] }) {
    this.writer = new TopicMatcher(write.map((f) => [f, true] as [string, true]), { cacheSize: 10_000 });
    this.reader = new TopicMatcher(read.map((f) => [f, true] as [string, true]), { cacheSize: 10_000 });
    this.readFilters = read;
    this.deniedWrite = matcher(deny.write);
    this.deniedRead = matcher(deny.read);
    this.denyReadFilters = deny.read;
  }

  /** Some read is denied: deliveries to a granted subscription may still need canRead per topic. */
  get hasReadDenies(): boolean {
    return this.deniedRead !== null;
  }

  canWrite(topic: string): boolean {
    if (this.deniedWrite?.match(topic) === true) return false;
    return this.writer.match(topic) === true;
  }

  canRead(topic: string): boolean {
    if (this.deniedRead?.match(topic) === true) return false;
    return this.reader.match(topic) === true;
  }

  canSubscribe(filter: string): boolean {
    if (this.denyReadFilters.some((d) => filterCovers(d, filter))) return false;
    return this.readFilters.some((outer) => filterCovers(outer, filter));
  }

  /** The subscription is granted but overlaps a deny rule: its deliveries must be checked with canRead. */
  needsDeliveryCheck(filter: string): boolean {
    return this.denyReadFilters.some((d) => filtersOverlap(d, filter));
  }
}

export class AccessControl {
  private readonly cache = new Map<string, Permissions>();

  constructor(private readonly roles: RoleMap) {}

  hasRole(role: string): boolean {
    return this.roles.has(role);
  }

  /** One Permissions object per distinct set of roles, built once. */
  forRoles(roles: readonly string[]): Permissions {
    const key = [...roles].sort().join('\n');
    let p = this.cache.get(key);
    if (!p) {
      const read: string[] = [];
      const write: string[] = [];
      const deny = { read: [] as string[], write: [] as string[] };
      for (const r of roles) {
        const spec = this.roles.get(r);
        if (!spec) continue;
        read.push(...spec.read);
        write.push(...spec.write);
        deny.read.push(...(spec.deny?.read ?? []));
        deny.write.push(...(spec.deny?.write ?? []));
      }
      p = new Permissions(read, write, deny);
      this.cache.set(key, p);
    }
    return p;
  }
}
