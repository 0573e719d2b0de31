/**
 * Locations inside the installed package. Source runs from src/core/, the build from dist/src/core/, so
 * paths are found by walking up to package.json rather than by counting '..'.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UnsError } from './errors.js';

let cachedRoot: string | undefined;

/** The folder holding this package's package.json, found by walking up from `from` (a file URL or path). */
export function packageRoot(from: string | URL = import.meta.url): string {
  const useCache = from === import.meta.url;
  if (useCache && cachedRoot !== undefined) return cachedRoot;
  const start = typeof from === 'string' && !from.startsWith('file:') ? from : fileURLToPath(from);
  let dir = dirname(start);
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) {
      if (useCache) cachedRoot = dir;
      return dir;
    }
    const parent = dirname(dir);
    if (parent === dir) {
      throw new UnsError('UNS_ERR_CONFIG_INVALID', `no package.json above ${start}: cannot locate the package root`);
    }
    dir = parent;
  }
}

/** The package's schemas/ folder (topics.schema.json, config.schema.json, payloads/). */
export function schemasDir(): string {
  return join(packageRoot(), 'schemas');
}

/** The version in package.json (for /metrics' uns_build_info and --version). */
export function packageVersion(): string {
  return (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
}
