/**
 * The server's certificate, key and client CA, read from their files and re-read when they change, so a
 * renewed certificate (certbot, cert-manager, a plant PKI) is served without a restart. A change is applied
 * only when the new files make a valid pair: a half-written renewal (new certificate, old key) is logged
 * and the previous ones stay in service.
 */
import { readFileSync, statSync, unwatchFile, watchFile } from 'node:fs';
import { createSecureContext, type SecureContextOptions } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { UnsError } from './errors.js';
import type { Logger } from './log.js';

export interface TlsPaths {
  readonly certPath: string;
  readonly keyPath: string;
  readonly caPath: string | null;
}

export interface TlsSummary {
  readonly subject: string;
  readonly fingerprint256: string;
  readonly validTo: string;
}

function read(paths: TlsPaths): { options: SecureContextOptions; summary: TlsSummary } {
  const readOne = (what: string, path: string): Buffer => {
    try {
      return readFileSync(path);
    } catch (e) {
      throw new UnsError('UNS_ERR_CONFIG_INVALID', `TLS ${what} ${path}: ${(e as Error).message}`);
    }
  };
  const cert = readOne('certificate', paths.certPath);
  const key = readOne('key', paths.keyPath);
  const ca = paths.caPath === null ? undefined : readOne('CA bundle', paths.caPath);
  const options: SecureContextOptions = { cert, key, ...(ca ? { ca } : {}) };
  let x509: X509Certificate;
  try {
    // Both checks: the certificate parses, and the key belongs to it (createSecureContext verifies the pair).
    x509 = new X509Certificate(cert);
    createSecureContext(options);
  } catch (e) {
    throw new UnsError('UNS_ERR_CONFIG_INVALID', `TLS certificate ${paths.certPath} with key ${paths.keyPath}: ${(e as Error).message}`);
  }
  return { options, summary: { subject: x509.subject.replace(/\n/g, ', '), fingerprint256: x509.fingerprint256, validTo: x509.validTo } };
}

export class TlsFiles {
  private current: { options: SecureContextOptions; summary: TlsSummary };
  private readonly listeners: Array<(options: SecureContextOptions) => void> = [];
  private stamp: string;
  private watching = false;

  /** Throws UNS_ERR_CONFIG_INVALID naming the file when the files cannot be read or do not match. */
  constructor(private readonly paths: TlsPaths, private readonly log: Logger) {
    this.current = read(paths);
    this.stamp = this.fileStamp();
  }

  get options(): SecureContextOptions {
    return this.current.options;
  }

  get summary(): TlsSummary {
    return this.current.summary;
  }

  /** Called with the new options whenever the files change to a valid pair. */
  onChange(fn: (options: SecureContextOptions) => void): void {
    this.listeners.push(fn);
  }

  /**
   * Reads the files again; applies them if they changed and are valid. Returns whether new files were
   * applied. A bad pair is logged and the current one kept.
   */
  reload(reason: string): boolean {
    // Said once per change of the files, not at every poll while a renewal is half done.
    this.stamp = this.fileStamp();
    let next: { options: SecureContextOptions; summary: TlsSummary };
    try {
      next = read(this.paths);
    } catch (e) {
      this.log.error({ err: (e as Error).message, reason }, 'TLS files not reloaded: keeping the certificate in service');
      return false;
    }
    if (next.summary.fingerprint256 === this.current.summary.fingerprint256 && Buffer.compare(next.options.key as Buffer, this.current.options.key as Buffer) === 0
      && Buffer.compare((next.options.ca as Buffer | undefined) ?? Buffer.alloc(0), (this.current.options.ca as Buffer | undefined) ?? Buffer.alloc(0)) === 0) {
      return false;
    }
    this.current = next;
    for (const fn of this.listeners) fn(next.options);
    this.log.info({ reason, subject: next.summary.subject, fingerprint256: next.summary.fingerprint256, validTo: next.summary.validTo }, 'TLS certificate reloaded');
    return true;
  }

  /**
   * Polls the files (watchFile: it follows renames and symlink swaps, which is how renewals land, where
   * fs.watch on the old inode would go quiet).
   */
  watch(intervalMs: number): void {
    if (this.watching) return;
    this.watching = true;
    for (const p of this.files()) {
      watchFile(p, { interval: intervalMs, persistent: false }, () => {
        if (this.fileStamp() !== this.stamp) this.reload('file changed');
      });
    }
  }

  close(): void {
    if (!this.watching) return;
    this.watching = false;
    for (const p of this.files()) unwatchFile(p);
  }

  private files(): string[] {
    return [this.paths.certPath, this.paths.keyPath, ...(this.paths.caPath === null ? [] : [this.paths.caPath])];
  }

  private fileStamp(): string {
    return this.files().map((p) => {
      try {
        const s = statSync(p);
        return `${s.ino}:${s.size}:${s.mtimeMs}`;
      } catch {
        return 'missing';
      }
    }).join('|');
  }
}
