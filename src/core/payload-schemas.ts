/**
 * Payload JSON Schemas (schemas/payloads/*.schema.json), compiled once at start-up so the per-message
 * validate stage only calls a ready function.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import { UnsError } from './errors.js';
import type { Namespace } from './topics.js';

const SUFFIX = '.schema.json';

/**
 * Compiles every `*.schema.json` in `dir`, keyed by its `$id` (or the file name without `.schema.json`
 * when it has none). A missing directory yields an empty map: assertSchemasExist then names what is
 * missing. Throws UnsError('UNS_ERR_SCHEMA_INVALID') for a file that does not parse or compile, or an
 * `$id` used twice.
 */
export function loadPayloadSchemas(dir: string): ReadonlyMap<string, ValidateFunction> {
  let names: string[];
  try {
    names = readdirSync(dir).filter((n) => n.endsWith(SUFFIX)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new Map();
    throw new UnsError('UNS_ERR_SCHEMA_INVALID', `${dir}: cannot read: ${(err as Error).message}`, { cause: err });
  }
  // allErrors off: the first violation is enough to reject a message and cheaper to find.
  // One Ajv instance for the folder, so schemas can $ref each other by $id.
  const ajv = new Ajv2020({ allErrors: false, strict: true, allowUnionTypes: true });
  const fileOf = new Map<string, string>();
  for (const name of names) {
    const file = join(dir, name);
    let schema: unknown;
    try {
      schema = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new UnsError('UNS_ERR_SCHEMA_INVALID', `${file}: ${(err as Error).message}`, { cause: err });
    }
    if (typeof schema !== 'object' || schema === null || Array.isArray(schema)) {
      throw new UnsError('UNS_ERR_SCHEMA_INVALID', `${file}: a JSON Schema must be an object`);
    }
    const declared = (schema as { $id?: unknown }).$id;
    const id = typeof declared === 'string' ? declared : basename(name, SUFFIX);
    const other = fileOf.get(id);
    if (other !== undefined) {
      throw new UnsError('UNS_ERR_SCHEMA_INVALID', `${file}: schema id ${JSON.stringify(id)} is already used by ${other}`);
    }
    try {
      // Without $id the key names it; with one, Ajv registers it under the $id.
      ajv.addSchema(schema, typeof declared === 'string' ? undefined : id);
    } catch (err) {
      throw new UnsError('UNS_ERR_SCHEMA_INVALID', `${file}: ${(err as Error).message}`, { cause: err });
    }
    fileOf.set(id, file);
  }
  const out = new Map<string, ValidateFunction>();
  for (const [id, file] of fileOf) {
    try {
      const validate = ajv.getSchema(id);
      if (validate === undefined) throw new Error(`schema ${JSON.stringify(id)} did not register`);
      out.set(id, validate);
    } catch (err) {
      throw new UnsError('UNS_ERR_SCHEMA_INVALID', `${file}: ${(err as Error).message}`, { cause: err });
    }
  }
  return out;
}

/** Throws UnsError('UNS_ERR_SCHEMA_NOT_FOUND') naming every route whose `schema` is not in `schemas`. */
export function assertSchemasExist(
  ns: Pick<Namespace, 'file' | 'routes'>,
  schemas: ReadonlyMap<string, unknown>,
): void {
  const missing = ns.routes
    .filter((r) => r.schema !== undefined && !schemas.has(r.schema))
    .map((r) => `route ${r.name}: schema ${JSON.stringify(r.schema)} not found`);
  if (missing.length > 0) {
    const known = schemas.size === 0 ? 'none' : [...schemas.keys()].join(', ');
    throw new UnsError('UNS_ERR_SCHEMA_NOT_FOUND', `${ns.file}: ${missing.join('; ')} (known schemas: ${known})`);
  }
}
