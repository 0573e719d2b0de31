/**
 * The namespace browser: `GET /api/v1/topics` answers the tree of stored topics under a filter, cut
 * `depth` levels below the filter's fixed prefix; `GET /api/v1/topics/<topic>` answers one topic's
 * metadata and current value. A caller never learns of a topic outside its read permissions: such
 * topics are left out of trees and counts, and a single one answers 404 exactly like an absent one.
 */
import { Router } from 'express';
import { ApiError } from '../errors.js';
import { principalOf, requireAuth } from '../auth.js';
import { sendJson } from '../json.js';
import { validateTopicName } from '../../core/index.js';
import type { TopicInfo } from '../../../bridge/index.js';
import type { ApiDeps } from '../deps.js';
import { checkFilter, readError } from './datapoints.js';

/** A tree bigger than this is refused (400): ask for less depth or a narrower filter. */
export const MAX_TREE_NODES = 50_000;

interface BuildNode {
  readonly name: string;
  readonly path: string;
  /** Materialised children; null at the depth limit, where only their names are counted. */
  readonly children: Map<string, BuildNode> | null;
  readonly cut: Set<string> | null;
  topicCount: number;
  topicId: number | null;
}

function node(name: string, path: string, atLimit: boolean): BuildNode {
  return { name, path, children: atLimit ? null : new Map(), cut: atLimit ? new Set() : null, topicCount: 0, topicId: null };
}

/** The levels of a filter before its first wildcard: the part every matching topic shares. */
function fixedPrefix(filter: string): string[] {
  const out: string[] = [];
  for (const lvl of filter.split('/')) {
    if (lvl === '+' || lvl === '#') break;
    out.push(lvl);
  }
  return out;
}

/**
 * Builds the tree of `topics` (all matching the filter, all readable) under `prefix`, materialising
 * nodes down to `depth` levels below it. Returns null when that would exceed MAX_TREE_NODES.
 */
export function buildTree(prefix: readonly string[], topics: ReadonlyArray<{ id: number; name: string }>, depth: number): { root: BuildNode; topicNodes: BuildNode[] } | null {
  const root = node(prefix[prefix.length - 1] ?? '', prefix.join('/'), depth === 0);
  const topicNodes: BuildNode[] = [];
  let count = 1;
  for (const t of topics) {
    const levels = t.name.split('/');
    // Every matching topic starts with the filter's fixed levels (filterToRegex anchors them).
    let cur: BuildNode | null = root;
    root.topicCount++;
    for (let i = prefix.length; cur !== null && i < levels.length; i++) {
      const lvl = levels[i] as string;
      if (cur.children === null) {
        // Below the depth limit: counted, not materialised.
        (cur.cut as Set<string>).add(lvl);
        cur = null;
        break;
      }
      let next = cur.children.get(lvl);
      if (!next) {
        if (++count > MAX_TREE_NODES) return null;
        next = node(lvl, levels.slice(0, i + 1).join('/'), i - prefix.length + 1 >= depth);
        cur.children.set(lvl, next);
      }
      next.topicCount++;
      cur = next;
    }
    if (cur !== null) {
      cur.topicId = t.id;
      topicNodes.push(cur);
    }
  }
  return { root, topicNodes };
}

/** What topics.yaml says of a route: its payload schema and its description. */
type RouteFacts = (route: string) => { schema: string | null; description: string | null };

function topicJson(info: TopicInfo, routeOf: RouteFacts): Record<string, unknown> {
  const route = routeOf(info.route);
  return {
    unit: info.unit, route: info.route, description: route.description, levels: info.levels, schema: route.schema,
    last_value: info.lastValue, last_timestamp: info.lastTimestamp, quality: info.quality,
    last_seen: info.lastSeen, first_seen: info.firstSeen,
  };
}

function treeJson(n: BuildNode, infos: ReadonlyMap<number, TopicInfo>, schemaOf: RouteFacts): Record<string, unknown> {
  const kids = n.children === null ? [] : [...n.children.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const info = n.topicId === null ? undefined : infos.get(n.topicId);
  return {
    name: n.name,
    path: n.path,
    child_count: n.children === null ? (n.cut as Set<string>).size : n.children.size,
    topic_count: n.topicCount,
    children: kids.map((k) => treeJson(k, infos, schemaOf)),
    ...(info ? { topic: topicJson(info, schemaOf) } : {}),
  };
}

export function namespaceRouter(deps: ApiDeps): Router {
  const r = Router();
  const routes = new Map(deps.namespace.routes.map((x) => [x.name, { schema: x.schema ?? null, description: x.description ?? null }]));
  const schemaOf: RouteFacts = (route) => routes.get(route) ?? { schema: null, description: null };

  r.get('/api/v1/topics', requireAuth(deps.auth), deps.validator.query('TopicsQuery'), (req, res, next) => {
    const p = principalOf(req);
    const q = req.query as unknown as { filter: string; depth: number };
    checkFilter(q.filter, deps);
    (async () => {
      const topics = await deps.queries.topics(q.filter, (t) => p.perms.canRead(t));
      const built = buildTree(fixedPrefix(q.filter), topics, q.depth);
      if (built === null) {
        throw new ApiError('UNS_ERR_BAD_REQUEST', `the tree has more than ${MAX_TREE_NODES} nodes: lower depth or narrow the filter`);
      }
      const infos = new Map((await deps.queries.topicInfo(built.topicNodes.map((n) => n.topicId as number))).map((i) => [i.id, i]));
      sendJson(res, { filter: q.filter, depth: q.depth, tree: treeJson(built.root, infos, schemaOf) });
    })().catch((e: unknown) => next(readError(e)));
  });

  // The topic is the rest of the path: /api/v1/topics/acme/plant1/... or one URL-encoded segment.
  r.get('/api/v1/topics/*topic', requireAuth(deps.auth), deps.validator.query('TopicQuery'), (req, res, next) => {
    const p = principalOf(req);
    const parts = (req.params as { topic?: string[] | string }).topic;
    const topic = Array.isArray(parts) ? parts.join('/') : String(parts ?? '');
    const bad = validateTopicName(topic, deps.limits.topic);
    if (bad !== null) throw new ApiError('UNS_ERR_BAD_REQUEST', `topic: ${bad}`);
    // Unreadable answers exactly like absent, so existence outside one's permissions never shows.
    if (!p.perms.canRead(topic)) throw new ApiError('UNS_ERR_NOT_FOUND', 'no such topic');
    deps.queries.topicByName(topic).then((info) => {
      if (!info) throw new ApiError('UNS_ERR_NOT_FOUND', 'no such topic');
      sendJson(res, { topic: info.name, ...topicJson(info, schemaOf) });
    }).catch((e: unknown) => next(readError(e)));
  });

  return r;
}
