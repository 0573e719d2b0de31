/**
 * The OpenAPI 3.1 document (schemas/openapi.json plus one fragment per area under schemas/openapi/), and
 * request validation compiled once from the same component schemas, so the document and the checks
 * cannot drift apart.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import type { Request, Response, NextFunction, RequestHandler } from 'express';
import { schemasDir } from '../core/index.js';
import { ApiError } from './errors.js';

type Doc = { paths: Record<string, unknown>; components: { schemas: Record<string, unknown> } } & Record<string, unknown>;

export function loadOpenApi(): Doc {
  const root = JSON.parse(readFileSync(join(schemasDir(), 'openapi.json'), 'utf8')) as Doc;
  const dir = join(schemasDir(), 'openapi');
  for (const f of readdirSync(dir).filter((n) => n.endsWith('.json')).sort()) {
    const frag = JSON.parse(readFileSync(join(dir, f), 'utf8')) as { paths?: Record<string, unknown>; schemas?: Record<string, unknown> };
    Object.assign(root.paths, frag.paths ?? {});
    Object.assign(root.components.schemas, frag.schemas ?? {});
  }
  return root;
}

export class RequestValidator {
  private readonly ajv: Ajv2020;
  private readonly queryAjv: Ajv2020;
  private readonly cache = new Map<string, ValidateFunction>();

  constructor(doc: Doc) {
    // Component schemas are JSON Schema 2020-12 (OpenAPI 3.1); refs point at #/components/schemas/X.
    const defs = { $id: 'uns-api', components: { schemas: doc.components.schemas } };
    this.ajv = new Ajv2020({ allErrors: false, strict: false });
    this.ajv.addSchema(defs);
    // Query strings are text: coerce "10" to 10 for query schemas only.
    this.queryAjv = new Ajv2020({ allErrors: false, strict: false, coerceTypes: 'array', useDefaults: true });
    this.queryAjv.addSchema(defs);
    for (const name of Object.keys(doc.components.schemas)) this.compile(name, 'body');
  }

  private compile(name: string, kind: 'body' | 'query'): ValidateFunction {
    const key = `${kind}:${name}`;
    let v = this.cache.get(key);
    if (!v) {
      v = (kind === 'body' ? this.ajv : this.queryAjv).compile({ $ref: `uns-api#/components/schemas/${name}` });
      this.cache.set(key, v);
    }
    return v;
  }

  private check(v: ValidateFunction, data: unknown, where: string): void {
    if (v(data)) return;
    const e = v.errors?.[0];
    const path = e?.instancePath ? e.instancePath : '';
    const extra = e?.keyword === 'additionalProperties' ? ` '${String(e.params['additionalProperty'])}'` : '';
    throw new ApiError('UNS_ERR_BAD_REQUEST', `${where}${path}: ${e?.message ?? 'invalid'}${extra}`);
  }

  body(name: string): RequestHandler {
    const v = this.compile(name, 'body');
    return (req: Request, _res: Response, next: NextFunction) => {
      try { this.check(v, req.body, 'body'); next(); } catch (e) { next(e); }
    };
  }

  /** Validates (and coerces, and fills defaults into) req.query. */
  query(name: string): RequestHandler {
    const v = this.compile(name, 'query');
    return (req: Request, _res: Response, next: NextFunction) => {
      try {
        const q: Record<string, unknown> = { ...(req.query as Record<string, unknown>) };
        this.check(v, q, 'query');
        Object.defineProperty(req, 'query', { value: q, writable: true, configurable: true });
        next();
      } catch (e) { next(e); }
    };
  }

  /** For WebSocket messages and other non-HTTP input: null when valid, else the reason. */
  validate(name: string, data: unknown): string | null {
    try { this.check(this.compile(name, 'body'), data, 'message'); return null; } catch (e) { return (e as Error).message; }
  }
}
