/**
 * The local durable spool: while the database is unavailable, each batch is written to its own segment file
 * and fsynced before the messages in it are acknowledged. When the database returns, segments are replayed
 * oldest first; each replay commits a marker row in the same transaction, so a segment is applied at most
 * once even if the process dies mid-replay (exactly once in the store).
 *
 * A segment is acknowledged only once every byte is on disk: writes are looped until complete, the file is
 * fsynced, its size checked, then renamed into place and the folder fsynced. A framing header carries the
 * body's length and CRC-32, so a segment torn by a crash or a failing disk is recognised at replay (and
 * quarantined in `corrupt/`, never half-applied). A failed append removes its temp file; temp files left by
 * a crash are removed at start-up (they were never acknowledged).
 */
import * as nodeFs from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import type { WriteItem } from './rows.js';

export interface SpooledSegment {
  readonly segment: string;
  readonly items: readonly WriteItem[];
}

/** The file operations the spool uses; injected so tests can make a disk fail, fill up or write short. */
export interface SpoolFs {
  mkdirSync(path: string, opts: { recursive: true }): unknown;
  readdirSync(path: string): string[];
  statSync(path: string, opts: { throwIfNoEntry: false }): { size: number } | undefined;
  openSync(path: string, flags: string): number;
  writeSync(fd: number, buf: Uint8Array, offset: number, length: number): number;
  fsyncSync(fd: number): void;
  fstatSync(fd: number): { size: number };
  closeSync(fd: number): void;
  renameSync(from: string, to: string): void;
  unlinkSync(path: string): void;
  readFileSync(path: string): Buffer;
}

export const realSpoolFs: SpoolFs = nodeFs as unknown as SpoolFs;

export type SpoolFailure = 'limit' | 'disk';

/** The spool cannot take this batch: its own size limit, or the disk refused (full, read-only, failing). */
export class SpoolFullError extends Error {
  constructor(readonly failure: SpoolFailure, message: string) {
    super(message);
    this.name = 'SpoolFullError';
  }
}

/** A segment that does not read back whole (torn write, failing disk). */
export class SpoolCorruptError extends Error {
  constructor(readonly segment: string, message: string) {
    super(`${segment}: ${message}`);
    this.name = 'SpoolCorruptError';
  }
}

const MAGIC = 'UNSSPOOL1';
const SUFFIX = '.seg';
/** Segments written before framing existed: plain JSON. */
const LEGACY_SUFFIX = '.json';

export class Spool {
  private seq = 0;
  /** Names this process's segments (a segment from an earlier run may hold originals of re-sends). */
  readonly instance = randomBytes(4).toString('hex');
  private used = 0;
  private count = 0;

  constructor(private readonly dir: string, private readonly maxBytes: number, private readonly fs: SpoolFs = realSpoolFs) {
    fs.mkdirSync(dir, { recursive: true });
    for (const name of fs.readdirSync(dir)) {
      if (name.endsWith('.tmp')) {
        // A crash between open and rename: never acknowledged, so nothing in it is owed to anyone.
        try { fs.unlinkSync(join(dir, name)); } catch { /* gone already */ }
      } else if (isSegment(name)) {
        this.used += fs.statSync(join(dir, name), { throwIfNoEntry: false })?.size ?? 0;
        this.count++;
      }
    }
  }

  get bytes(): number {
    return this.used;
  }

  /** Segments on disk (kept as a count: listing a large spool per segment would make replay quadratic). */
  get segments(): number {
    return this.count;
  }

  /** Segments in arrival order. Names sort by time, then sequence. Lists the folder: call once per replay. */
  list(): string[] {
    return this.fs.readdirSync(this.dir).filter(isSegment).sort();
  }

  /** Writes the batch durably or throws SpoolFullError; on a throw nothing of the batch is on disk. */
  append(items: readonly WriteItem[]): string {
    const body = Buffer.from(JSON.stringify({ items }));
    const header = Buffer.from(`${MAGIC} ${body.length} ${crc32(body).toString(16)}\n`);
    const size = header.length + body.length;
    if (this.used + size > this.maxBytes) {
      throw new SpoolFullError('limit', `spool full: ${this.used} of ${this.maxBytes} bytes used`);
    }
    const name = `${Date.now().toString().padStart(15, '0')}-${(this.seq++).toString().padStart(10, '0')}-${this.instance}${SUFFIX}`;
    const tmp = join(this.dir, `${name}.tmp`);
    const fs = this.fs;
    let fd: number | null = null;
    try {
      fd = fs.openSync(tmp, 'w');
      writeAll(fs, fd, header);
      writeAll(fs, fd, body);
      fs.fsyncSync(fd);
      const written = fs.fstatSync(fd).size;
      if (written !== size) throw new Error(`segment is ${written} bytes on disk, ${size} written`);
      fs.closeSync(fd);
      fd = null;
      fs.renameSync(tmp, join(this.dir, name));
      // The rename itself must reach the disk before we acknowledge.
      const dfd = fs.openSync(this.dir, 'r');
      try { fs.fsyncSync(dfd); } finally { fs.closeSync(dfd); }
    } catch (e) {
      if (fd !== null) try { fs.closeSync(fd); } catch { /* already failing */ }
      try { fs.unlinkSync(tmp); } catch { /* not created, or renamed */ }
      try { fs.unlinkSync(join(this.dir, name)); } catch { /* not renamed */ }
      const err = e as NodeJS.ErrnoException;
      throw new SpoolFullError('disk', `spool write failed: ${err.code ? `${err.code} ` : ''}${err.message}`);
    }
    this.used += size;
    this.count++;
    return name;
  }

  /** Reads a segment back whole, or throws SpoolCorruptError. */
  read(name: string): SpooledSegment {
    const buf = this.fs.readFileSync(join(this.dir, name));
    let body: Buffer;
    if (name.endsWith(LEGACY_SUFFIX)) {
      body = buf;
    } else {
      const nl = buf.indexOf(0x0a);
      const head = nl > 0 ? buf.subarray(0, nl).toString('latin1').split(' ') : [];
      if (head.length !== 3 || head[0] !== MAGIC) throw new SpoolCorruptError(name, 'no segment header');
      body = buf.subarray(nl + 1);
      if (body.length !== Number(head[1])) throw new SpoolCorruptError(name, `truncated: ${body.length} of ${head[1]} bytes`);
      if (crc32(body).toString(16) !== head[2]) throw new SpoolCorruptError(name, 'checksum mismatch');
    }
    let parsed: { items: WriteItem[] };
    try {
      parsed = JSON.parse(body.toString('utf8')) as { items: WriteItem[] };
    } catch (e) {
      throw new SpoolCorruptError(name, (e as Error).message);
    }
    return { items: parsed.items, segment: name };
  }

  remove(name: string): void {
    const p = join(this.dir, name);
    const size = this.fs.statSync(p, { throwIfNoEntry: false })?.size;
    if (size === undefined) return;
    this.fs.unlinkSync(p);
    this.used = Math.max(0, this.used - size);
    this.count = Math.max(0, this.count - 1);
  }

  /** Moves an unreadable segment out of the replay path, kept for inspection. */
  quarantine(name: string): void {
    const p = join(this.dir, name);
    const size = this.fs.statSync(p, { throwIfNoEntry: false })?.size;
    if (size === undefined) return;
    this.fs.mkdirSync(join(this.dir, 'corrupt'), { recursive: true });
    this.fs.renameSync(p, join(this.dir, 'corrupt', name));
    this.used = Math.max(0, this.used - size);
    this.count = Math.max(0, this.count - 1);
  }
}

function isSegment(name: string): boolean {
  return name.endsWith(SUFFIX) || name.endsWith(LEGACY_SUFFIX);
}

/** writeSync may write fewer bytes than asked (a nearly full disk): loop, and treat 0 as a failure. */
function writeAll(fs: SpoolFs, fd: number, buf: Buffer): void {
  let off = 0;
  while (off < buf.length) {
    const n = fs.writeSync(fd, buf, off, buf.length - off);
    if (n <= 0) throw Object.assign(new Error('short write: the disk took no more bytes'), { code: 'ENOSPC' });
    off += n;
  }
}
