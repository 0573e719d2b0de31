/**
 * The local durable spool: while the database is unreachable, each batch is written to its own file and
 * fsynced before the messages in it are acknowledged. When the database returns, segments are replayed
 * oldest first; each replay commits a marker row in the same transaction, so a segment is applied at most
 * once even if the process dies mid-replay (exactly once in the store).
 */
import { mkdirSync, readdirSync, statSync, openSync, writeSync, fsyncSync, closeSync, renameSync, readFileSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { WriteBatch, WriteItem } from './rows.js';

export class SpoolFullError extends Error {
  constructor(readonly bytes: number, readonly limit: number) {
    super(`spool full: ${bytes} of ${limit} bytes used`);
    this.name = 'SpoolFullError';
  }
}

export class Spool {
  private seq = 0;
  private readonly instance = randomBytes(4).toString('hex');
  private used = 0;

  constructor(private readonly dir: string, private readonly maxBytes: number) {
    mkdirSync(dir, { recursive: true });
    for (const name of this.list()) this.used += statSync(join(dir, name)).size;
  }

  get bytes(): number {
    return this.used;
  }

  /** Segments in arrival order. Names sort by time, then sequence. */
  list(): string[] {
    return readdirSync(this.dir).filter((n) => n.endsWith('.json')).sort();
  }

  append(items: readonly WriteItem[]): string {
    const body = Buffer.from(JSON.stringify({ items }));
    if (this.used + body.length > this.maxBytes) throw new SpoolFullError(this.used, this.maxBytes);
    const name = `${Date.now().toString().padStart(15, '0')}-${(this.seq++).toString().padStart(10, '0')}-${this.instance}.json`;
    const tmp = join(this.dir, `${name}.tmp`);
    const fd = openSync(tmp, 'w');
    try {
      writeSync(fd, body);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, join(this.dir, name));
    // The rename itself must reach the disk before we acknowledge.
    const dfd = openSync(this.dir, 'r');
    try { fsyncSync(dfd); } finally { closeSync(dfd); }
    this.used += body.length;
    return name;
  }

  read(name: string): WriteBatch {
    const parsed = JSON.parse(readFileSync(join(this.dir, name), 'utf8')) as { items: WriteItem[] };
    return { items: parsed.items, segment: name };
  }

  remove(name: string): void {
    const p = join(this.dir, name);
    const size = statSync(p, { throwIfNoEntry: false })?.size ?? 0;
    unlinkSync(p);
    this.used = Math.max(0, this.used - size);
  }
}
