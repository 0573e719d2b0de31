/**
 * Inbound ingest sources at run time: the topics.yaml spec with its secret resolved (from the
 * UNS_INGEST_SECRET_* variable it names, or a literal only when the config allows it), its IP allowlist
 * parsed and its role's permissions built. Start-up code: a problem throws UNS_ERR_CONFIG_INVALID naming
 * the source, never the secret.
 */
import { UnsError } from '../../src/core/index.js';
import type { Logger } from '../../src/core/index.js';
import type { IngestSourceSpec, Namespace } from '../../src/core/index.js';
import { Permissions } from '../../src/core/index.js';
import { isValidSecret, SECRET_PREFIX } from '../sinks/webhooks/signing.js';
import { parseAllowlist, type Allowlist } from '../sinks/webhooks/ssrf.js';

/** Shorter shared secrets are guessable offline from one signed request. */
export const MIN_SECRET_CHARS = 16;

export interface IngestSource {
  readonly spec: IngestSourceSpec;
  readonly secret: string;
  readonly allowlist: Allowlist | null;
  /** The source's role: its write filters decide which mapped topics may be written. */
  readonly perms: Permissions;
}

export interface IngestSecretsConfig {
  readonly secrets: Readonly<Record<string, string>>;
  readonly allowLiteralSecrets: boolean;
}

export function buildIngestSources(ns: Namespace, cfg: IngestSecretsConfig, log: Logger): ReadonlyMap<string, IngestSource> {
  const out = new Map<string, IngestSource>();
  for (const spec of ns.ingest) {
    const where = `${ns.file} ingest source ${spec.name}`;
    let secret: string;
    if ('env' in spec.secret) {
      const v = cfg.secrets[spec.secret.env];
      if (v === undefined || v === '') throw new UnsError('UNS_ERR_CONFIG_INVALID', `${where}: environment variable ${spec.secret.env} is not set`);
      secret = v;
    } else {
      if (!cfg.allowLiteralSecrets) {
        throw new UnsError('UNS_ERR_CONFIG_INVALID', `${where}: a literal secret in topics.yaml is refused; use secretEnv (or set ingest.allowLiteralSecrets for development)`);
      }
      log.warn({ source: spec.name }, 'ingest source uses a literal secret from topics.yaml: development only, use secretEnv');
      secret = spec.secret.literal;
    }
    if (secret.startsWith(SECRET_PREFIX) ? !isValidSecret(secret) : secret.length < MIN_SECRET_CHARS) {
      throw new UnsError('UNS_ERR_CONFIG_INVALID', `${where}: the secret must be whsec_<base64 of 24-64 bytes> or at least ${MIN_SECRET_CHARS} characters`);
    }
    if (spec.signature !== 'standard' && spec.timestampField === null) {
      log.warn({ source: spec.name }, 'ingest source has no timestampField: only delivery-id de-duplication guards against replays');
    }
    const role = ns.roles.get(spec.role);
    out.set(spec.name, Object.freeze({
      spec, secret, allowlist: spec.allow === null ? null : parseAllowlist(spec.allow),
      perms: new Permissions(role?.read ?? [], role?.write ?? []),
    }));
  }
  return out;
}
