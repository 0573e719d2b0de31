/**
 * Role permissions on topic filters, from topics.yaml. A publish needs a write filter that matches the
 * topic; a subscribe needs a read filter that covers the whole subscription filter, so a subscriber never
 * receives a topic outside its permissions and nothing has to be checked per delivered message.
 */
import { TopicMatcher, filterCovers } from './topic-filter.js';

export type RoleMap = ReadonlyMap<string, { readonly read: readonly string[]; readonly write: readonly string[] }>;

export class Permissions {
  private readonly writer: TopicMatcher<true>;
  private readonly reader: TopicMatcher<true>;
  private readonly readFilters: readonly string[];

  constructor(read: readonly string[], write: readonly string[]) {
    this.writer = new TopicMatcher(write.map((f) => [f, true] as [string, true]), { cacheSize: 10_000 });
    this.reader = new TopicMatcher(read.map((f) => [f, true] as [string, true]), { cacheSize: 10_000 });
    this.readFilters = read;
  }

  canWrite(topic: string): boolean {
    return this.writer.match(topic) === true;
  }

  canRead(topic: string): boolean {
    return this.reader.match(topic) === true;
  }

  canSubscribe(filter: string): boolean {
    return this.readFilters.some((outer) => filterCovers(outer, filter));
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
      for (const r of roles) {
        const spec = this.roles.get(r);
        if (!spec) continue;
        read.push(...spec.read);
        write.push(...spec.write);
      }
      p = new Permissions(read, write);
      this.cache.set(key, p);
    }
    return p;
  }
}
