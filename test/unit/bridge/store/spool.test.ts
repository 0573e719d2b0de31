import { expect } from 'chai';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Spool, SpoolCorruptError, SpoolFullError, realSpoolFs, type SpoolFs } from '../../../../bridge/sinks/store/spool.js';
import type { WriteItem } from '../../../../bridge/sinks/store/rows.js';

const item = (n: number): WriteItem => ({
  samples: [{ topic: `acme/a/b/c/m${n}/v`, time: 1_700_000_000_000 + n, num: n, text: null, bool: null, json: null, bytes: null, quality: null, src: String(n) }],
  topics: [{ name: `acme/a/b/c/m${n}/v`, levels: null, route: 'r', unit: null }],
  receivedAt: 1_700_000_000_000 + n,
});

/** The real filesystem, with writes and fsyncs that can be made to fail the way a full or failing disk does. */
function faultyFs(f: { writeChunk?: number; stopAfterBytes?: number; writeError?: string; fsyncError?: string }): SpoolFs & { written: number } {
  const wrapped = {
    ...realSpoolFs,
    written: 0,
    writeSync(fd: number, buf: Uint8Array, off: number, len: number): number {
      if (f.writeError) throw Object.assign(new Error(`${f.writeError}: write failed`), { code: f.writeError });
      let n = Math.min(len, f.writeChunk ?? len);
      if (f.stopAfterBytes !== undefined) n = Math.max(0, Math.min(n, f.stopAfterBytes - wrapped.written));
      const w = realSpoolFs.writeSync(fd, buf, off, n);
      wrapped.written += w;
      return w;
    },
    fsyncSync(fd: number): void {
      if (f.fsyncError) throw Object.assign(new Error(`${f.fsyncError}: fsync failed`), { code: f.fsyncError });
      realSpoolFs.fsyncSync(fd);
    },
  };
  return wrapped;
}

describe('spool', () => {
  let dir: string;
  beforeEach(() => { dir = fs.mkdtempSync(join(tmpdir(), 'uns-spool-')); });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const files = (): string[] => fs.readdirSync(dir).filter((n) => n !== 'corrupt').sort();

  it('keeps appended batches in order, reads them back whole, and counts bytes and segments', () => {
    const spool = new Spool(dir, 1 << 20);
    const a = spool.append([item(1), item(2)]);
    const b = spool.append([item(3)]);
    expect(spool.list()).to.deep.equal([a, b]);
    expect(spool.segments).to.equal(2);
    expect(spool.bytes).to.equal(fs.statSync(join(dir, a)).size + fs.statSync(join(dir, b)).size);
    expect(spool.read(a)).to.deep.equal({ items: [item(1), item(2)], segment: a });
    spool.remove(a);
    expect(spool.segments).to.equal(1);
    expect(spool.bytes).to.equal(fs.statSync(join(dir, b)).size);
    // A new spool over the same folder finds what is there.
    const again = new Spool(dir, 1 << 20);
    expect(again.segments).to.equal(1);
    expect(again.bytes).to.equal(spool.bytes);
  });

  it('completes a segment written in short pieces (writeSync returning fewer bytes than asked)', () => {
    const spool = new Spool(dir, 1 << 20, faultyFs({ writeChunk: 7 }));
    const name = spool.append([item(1), item(2), item(3)]);
    expect(spool.read(name).items).to.have.length(3);
  });

  for (const [what, fault] of [
    ['a disk that stops taking bytes mid-segment (short write, then 0)', { stopAfterBytes: 100 }],
    ['ENOSPC from write', { writeError: 'ENOSPC' }],
    ['EIO from fsync', { fsyncError: 'EIO' }],
  ] as const) {
    it(`refuses the batch on ${what}, leaving no file and no bytes counted`, () => {
      const spool = new Spool(dir, 1 << 20, faultyFs(fault));
      expect(() => spool.append([item(1), item(2)])).to.throw(SpoolFullError).with.property('failure', 'disk');
      expect(files()).to.deep.equal([]);
      expect(spool.bytes).to.equal(0);
      expect(spool.segments).to.equal(0);
    });
  }

  it('refuses a batch past its size limit without touching the disk', () => {
    const spool = new Spool(dir, 600);
    spool.append([item(1)]);
    const before = files();
    expect(() => { for (let i = 0; i < 10; i++) spool.append([item(i), item(i + 1)]); }).to.throw(SpoolFullError).with.property('failure', 'limit');
    expect(files().length).to.be.greaterThan(0);
    expect(files().slice(0, before.length)).to.deep.equal(before);
    expect(files().some((n) => n.endsWith('.tmp'))).to.equal(false);
  });

  it('detects a torn segment at read and moves it to corrupt/', () => {
    const spool = new Spool(dir, 1 << 20);
    const name = spool.append([item(1), item(2)]);
    const p = join(dir, name);
    fs.truncateSync(p, fs.statSync(p).size - 5);
    expect(() => spool.read(name)).to.throw(SpoolCorruptError, /truncated/);
    spool.quarantine(name);
    expect(spool.list()).to.deep.equal([]);
    expect(spool.segments).to.equal(0);
    expect(fs.readdirSync(join(dir, 'corrupt'))).to.deep.equal([name]);
  });

  it('detects a flipped byte by its checksum', () => {
    const spool = new Spool(dir, 1 << 20);
    const name = spool.append([item(1)]);
    const p = join(dir, name);
    const buf = fs.readFileSync(p);
    const at = buf.length - 10;
    buf[at] = (buf[at] as number) ^ 0x01;
    fs.writeFileSync(p, buf);
    expect(() => spool.read(name)).to.throw(SpoolCorruptError, /checksum/);
  });

  it('removes temp files a crash left behind (never acknowledged) and still reads segments of the plain JSON format', () => {
    fs.writeFileSync(join(dir, '000001700000000-0000000001-abcd1234.seg.tmp'), 'half a segm');
    const legacy = '000001700000000-0000000000-abcd1234.json';
    fs.writeFileSync(join(dir, legacy), JSON.stringify({ items: [item(9)] }));
    const spool = new Spool(dir, 1 << 20);
    expect(files()).to.deep.equal([legacy]);
    expect(spool.read(legacy).items).to.deep.equal([item(9)]);
  });
});
