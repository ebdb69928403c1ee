/**
 * lib/jit/archive.ts against real TorchScript archives written by real PyTorch at test time
 * (Debian's python3-torch at /usr/bin/python3, or $FINETORCH_PYTHON), then damaged on purpose.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';
import { ArchiveEntry, checkArchive, readEntry } from '../lib/jit/archive';

const PYTHON = process.env.FINETORCH_PYTHON ?? '/usr/bin/python3';

// Writes: model.pt (torch.jit.save, mixed stored/deflated), deflated.pt (every entry re-zipped
// DEFLATED), zip64.pt (re-zipped with Python's zip64 limits at 0, so every central entry carries a
// 0x0001 extra field and the EOCD holds 0xFFFF sentinels), plain.zip (a zip with a text file), and
// manifest.json (what Python's zipfile lists for each, to compare against).
const MAKE_ARCHIVES = `
import json, os, sys, zipfile, torch
d = sys.argv[1]
m = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)))
torch.jit.save(m, os.path.join(d, 'model.pt'))
def rezip(dst, method):
    with zipfile.ZipFile(os.path.join(d, 'model.pt')) as src, zipfile.ZipFile(os.path.join(d, dst), 'w', method) as out:
        for info in src.infolist():
            out.writestr(info.filename, src.read(info), compress_type=method)
rezip('deflated.pt', zipfile.ZIP_DEFLATED)
limits = zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT
zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = 0, 0
rezip('zip64.pt', zipfile.ZIP_STORED)
zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = limits
with zipfile.ZipFile(os.path.join(d, 'plain.zip'), 'w', zipfile.ZIP_DEFLATED) as z:
    z.writestr('notes.txt', 'not a model\\n' * 50)
x = torch.randn(3, 4)
for name in ('deflated.pt', 'zip64.pt'):
    assert torch.allclose(torch.jit.load(os.path.join(d, name))(x), m(x)), name
manifest = {}
for name in ('model.pt', 'deflated.pt', 'zip64.pt', 'plain.zip'):
    with zipfile.ZipFile(os.path.join(d, name)) as z:
        manifest[name] = [dict(name=i.filename, method=i.compress_type, size=i.file_size,
                               compressedSize=i.compress_size, crc32=i.CRC, offset=i.header_offset) for i in z.infolist()]
json.dump(manifest, open(os.path.join(d, 'manifest.json'), 'w'))
`;

let dir: string;
let model: Buffer;
let deflated: Buffer;
let zip64: Buffer;
let plain: Buffer;
let manifest: Record<string, ArchiveEntry[]>;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finetorch-archive-'));
  execFileSync(PYTHON, ['-c', MAKE_ARCHIVES, dir], { stdio: ['ignore', 'pipe', 'pipe'] });
  model = fs.readFileSync(path.join(dir, 'model.pt'));
  deflated = fs.readFileSync(path.join(dir, 'deflated.pt'));
  zip64 = fs.readFileSync(path.join(dir, 'zip64.pt'));
  plain = fs.readFileSync(path.join(dir, 'plain.zip'));
  manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
});

afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** Where an entry's data starts, read from its local header. */
function dataStart(buf: Buffer, e: ArchiveEntry): number {
  return e.offset + 30 + buf.readUInt16LE(e.offset + 26) + buf.readUInt16LE(e.offset + 28);
}

/** Offset of an entry's central directory header (its name's occurrence preceded by PK\1\2). */
function centralHeader(buf: Buffer, name: string): number {
  for (let i = buf.lastIndexOf(name); i >= 0; i = buf.lastIndexOf(name, i - 1)) {
    if (i >= 46 && buf.readUInt32LE(i - 46) === 0x02014b50 && buf.readUInt16LE(i - 46 + 28) === Buffer.byteLength(name)) return i - 46;
  }
  throw new Error(`no central header for ${name}`);
}

function flipped(buf: Buffer, at: number, mask = 0xff): Buffer {
  const copy = Buffer.from(buf);
  copy[at] ^= mask;
  return copy;
}

/** Deterministic "random" bytes (an LCG), so failures reproduce. */
function noise(n: number, seed = 12345): Buffer {
  const out = Buffer.alloc(n);
  for (let i = 0; i < n; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    out[i] = seed >>> 24;
  }
  return out;
}

describe('valid archives', () => {
  test.each(['model.pt', 'deflated.pt', 'zip64.pt'])('%s passes and lists what Python zipfile lists', (name) => {
    const buf = { 'model.pt': model, 'deflated.pt': deflated, 'zip64.pt': zip64 }[name]!;
    const entries = checkArchive(buf, name);
    expect(entries).toEqual(manifest[name]);
    expect(entries.some((e) => e.name.endsWith('/data.pkl'))).toBe(true);
    expect(entries.some((e) => e.name.endsWith('/version'))).toBe(true);
  });

  test('torch.jit.save output mixes stored and deflated entries; the re-zip is all deflated', () => {
    const methods = new Set(checkArchive(model, 'model.pt').map((e) => e.method));
    expect([...methods].sort()).toEqual([0, 8]);
    expect(checkArchive(deflated, 'deflated.pt').every((e) => e.method === 8)).toBe(true);
  });

  test('PyTorch writes zip64 end records; the zip64 re-zip also has 0x0001 extra fields', () => {
    expect(model.readUInt32LE(model.length - 22 - 20)).toBe(0x07064b50); // zip64 locator before the EOCD
    expect(deflated.readUInt32LE(deflated.length - 22 - 20)).not.toBe(0x07064b50); // Python: plain EOCD only
    const second = manifest['zip64.pt'][1];
    const central = centralHeader(zip64, second.name);
    expect(zip64.readUInt32LE(central + 20)).toBe(0xffffffff); // sizes and offset live in the extra field
    expect(zip64.readUInt32LE(central + 42)).toBe(0xffffffff);
    expect(zip64.readUInt16LE(central + 46 + Buffer.byteLength(second.name))).toBe(0x0001);
  });

  test('0xFFFF/0xFFFFFFFF sentinels in the EOCD defer to the zip64 record, and need its locator', () => {
    for (const [name, buf] of [['model.pt', model], ['zip64.pt', zip64]] as const) {
      const withSentinels = Buffer.from(buf);
      const eocd = buf.length - 22;
      withSentinels.writeUInt16LE(0xffff, eocd + 8);
      withSentinels.writeUInt16LE(0xffff, eocd + 10);
      withSentinels.writeUInt32LE(0xffffffff, eocd + 12);
      withSentinels.writeUInt32LE(0xffffffff, eocd + 16);
      expect(checkArchive(withSentinels, name)).toEqual(manifest[name]);
      withSentinels.writeUInt32LE(0, eocd - 20); // the locator's signature
      expect(() => checkArchive(withSentinels, name))
        .toThrow(`${name}: damaged TorchScript archive: zip64 end of central directory locator missing`);
    }
  });

  test('readEntry returns the same bytes whether stored or deflated', () => {
    const stored = checkArchive(model, 'model.pt');
    const packed = checkArchive(deflated, 'deflated.pt');
    expect(packed.map((e) => e.name)).toEqual(stored.map((e) => e.name));
    stored.forEach((e, i) => {
      const a = readEntry(model, e);
      expect(a.length).toBe(e.size);
      expect(readEntry(deflated, packed[i]).equals(a)).toBe(true);
      expect(zlib.crc32(a) >>> 0).toBe(e.crc32);
    });
    const version = stored.find((e) => e.name.endsWith('/version'))!;
    expect(readEntry(model, version).toString('utf8').trim()).toMatch(/^\d+$/);
    const pkl = stored.find((e) => e.name.endsWith('/data.pkl'))!;
    expect(readEntry(model, pkl)[0]).toBe(0x80); // pickle PROTO opcode
  });
});

describe('not TorchScript', () => {
  test('empty buffer', () => {
    expect(() => checkArchive(Buffer.alloc(0), 'model.pt')).toThrow(/^model\.pt: the file is empty$/);
  });

  test.each([[4096], [21], [3]])('%i bytes of noise', (n) => {
    expect(() => checkArchive(noise(n), 'model.pt')).toThrow(/^model\.pt: not a TorchScript file \(not a zip archive\)$/);
  });

  test('a text file', () => {
    expect(() => checkArchive(Buffer.from('def forward(self, x):\n  return x\n'), 'model.pt'))
      .toThrow('model.pt: not a TorchScript file (not a zip archive)');
  });

  test('a plain zip made by Python zipfile', () => {
    expect(manifest['plain.zip'].map((e) => e.name)).toEqual(['notes.txt']);
    expect(() => checkArchive(plain, 'notes.zip')).toThrow(/^notes\.zip: a zip archive but not TorchScript \(no data\.pkl\)$/);
  });
});

describe('damaged archives', () => {
  test.each([4, 30, 100, 0.5, -100, -22, -1])('truncated at %d', (cut) => {
    const end = cut > 0 && cut < 1 ? Math.floor(model.length * cut) : cut < 0 ? model.length + cut : cut;
    expect(() => checkArchive(model.subarray(0, end), 'model.pt'))
      .toThrow(/^model\.pt: truncated TorchScript archive \(end of central directory record missing\)$/);
  });

  test('a chunk cut out of the middle', () => {
    const cut = (buf: Buffer) => Buffer.concat([buf.subarray(0, 1000), buf.subarray(2000)]);
    expect(() => checkArchive(cut(deflated), 'model.pt'))
      .toThrow(/^model\.pt: truncated TorchScript archive \(central directory past end of file\)$/);
    expect(() => checkArchive(cut(model), 'model.pt'))
      .toThrow(/^model\.pt: truncated TorchScript archive \(zip64 end record points past the data; part of the file is missing\)$/);
  });

  test('a byte flipped inside each stored entry\'s data fails its CRC-32 check', () => {
    const stored = manifest['model.pt'].filter((e) => e.method === 0 && e.size > 0);
    expect(stored.length).toBeGreaterThan(3);
    for (const e of stored) {
      for (const at of [0, e.size >> 1, e.size - 1]) {
        expect(() => checkArchive(flipped(model, dataStart(model, e) + at, 0x01), 'model.pt'))
          .toThrow(`model.pt: damaged TorchScript archive: entry '${e.name}' fails its CRC-32 check`);
      }
    }
  });

  test('a byte flipped inside deflated data fails to inflate or fails its CRC-32 check', () => {
    const e = manifest['deflated.pt'].reduce((a, b) => (b.compressedSize > a.compressedSize ? b : a));
    const quoted = e.name.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    const expected = new RegExp(`^deflated\\.pt: damaged TorchScript archive: entry '${quoted}' ` +
      '(does not inflate \\(.+\\)|fails its CRC-32 check|inflates to \\d+ bytes, not the declared \\d+)$');
    for (let at = 0; at < e.compressedSize; at += 7) {
      expect(() => checkArchive(flipped(deflated, dataStart(deflated, e) + at), 'deflated.pt')).toThrow(expected);
    }
  });

  test('deflated data damaged with its CRC rewritten to match either passes or fails with an Error', () => {
    const e = manifest['deflated.pt'].reduce((a, b) => (b.compressedSize > a.compressedSize ? b : a));
    const central = centralHeader(deflated, e.name);
    const outcomes = { passed: 0, failed: 0 };
    for (let at = 0; at < e.compressedSize; at++) {
      for (const mask of [0x01, 0x80]) {
        const buf = flipped(deflated, dataStart(deflated, e) + at, mask);
        let out: Buffer | undefined;
        try {
          out = zlib.inflateRawSync(buf.subarray(dataStart(buf, e), dataStart(buf, e) + e.compressedSize));
        } catch { /* undecodable: leave the CRC as it was */ }
        if (out) buf.writeUInt32LE(zlib.crc32(out) >>> 0, central + 16);
        let result: unknown;
        try {
          result = checkArchive(buf, 'deflated.pt');
        } catch (err) {
          expect(err).toBeInstanceOf(Error);
          expect((err as Error).message).toMatch(/^deflated\.pt: damaged TorchScript archive: /);
          outcomes.failed++;
          continue;
        }
        // It passed: only possible when the damaged stream inflated to exactly the declared size.
        expect(out?.length).toBe(e.size);
        const listed = (result as ArchiveEntry[]).find((x) => x.name === e.name)!;
        expect(readEntry(buf, listed).equals(out!)).toBe(true);
        outcomes.passed++;
      }
    }
    expect(outcomes.failed).toBeGreaterThan(0);
    expect(outcomes.passed + outcomes.failed).toBe(e.compressedSize * 2);
  });

  test('declared sizes that lie: more output than declared (zip bomb guard), data past the directory', () => {
    const e = manifest['deflated.pt'].reduce((a, b) => (b.size > a.size ? b : a));
    const central = centralHeader(deflated, e.name);
    const smaller = Buffer.from(deflated);
    smaller.writeUInt32LE(e.size - 10, central + 24);
    expect(() => checkArchive(smaller, 'deflated.pt'))
      .toThrow(new RegExp(`^deflated\\.pt: damaged TorchScript archive: entry '.*' does not inflate \\(.*${e.size - 9}.*\\)$`));
    const larger = Buffer.from(deflated);
    larger.writeUInt32LE(e.size + 10, central + 24);
    expect(() => checkArchive(larger, 'deflated.pt'))
      .toThrow(`deflated.pt: damaged TorchScript archive: entry '${e.name}' inflates to ${e.size} bytes, not the declared ${e.size + 10}`);
    const last = manifest['model.pt'].at(-1)!;
    const overlong = Buffer.from(model);
    overlong.writeUInt32LE(last.size + 100, centralHeader(model, last.name) + 20);
    overlong.writeUInt32LE(last.size + 100, centralHeader(model, last.name) + 24);
    expect(() => checkArchive(overlong, 'model.pt'))
      .toThrow(`model.pt: damaged TorchScript archive: entry '${last.name}' overlaps the central directory`);
  });

  test('an unsupported compression method', () => {
    const e = manifest['model.pt'].find((x) => x.method === 0)!;
    const buf = Buffer.from(model);
    buf.writeUInt16LE(12, centralHeader(buf, e.name) + 10); // bzip2
    buf.writeUInt16LE(12, e.offset + 8);
    expect(() => checkArchive(buf, 'model.pt')).toThrow(
      `model.pt: unsupported TorchScript archive (entry '${e.name}' uses compression method 12; only stored and deflated are supported)`);
  });

  test('a missing local header', () => {
    const e = manifest['model.pt'][2];
    const buf = Buffer.from(model);
    buf.writeUInt32LE(0, e.offset);
    expect(() => checkArchive(buf, 'model.pt')).toThrow(`model.pt: damaged TorchScript archive: local header of entry '${e.name}' missing`);
  });

  test('a local header naming another entry', () => {
    const e = manifest['model.pt'][0];
    const nameAt = e.offset + 30;
    const buf = flipped(model, nameAt + Buffer.byteLength(e.name) - 1, 0x01);
    expect(() => checkArchive(buf, 'model.pt'))
      .toThrow(`model.pt: damaged TorchScript archive: entry '${e.name}' has a different name in its local header`);
  });

  test('two entries with the same name', () => {
    const [a, b] = manifest['model.pt'];
    expect(a.name.slice(0, -1)).toBe(b.name.slice(0, -1)); // <name>/data/0 and <name>/data/1
    const buf = Buffer.from(model);
    const last = Buffer.byteLength(a.name) - 1;
    buf[centralHeader(model, a.name) + 46 + last] = buf[a.offset + 30 + last] = b.name.charCodeAt(last);
    expect(() => checkArchive(buf, 'model.pt')).toThrow(`model.pt: damaged TorchScript archive: entry '${b.name}' appears twice`);
  });

  test('an entry count that does not match the central directory', () => {
    const n = manifest['model.pt'].length;
    const zip64Eocd = Number(model.readBigUInt64LE(model.length - 22 - 12));
    const withCount = (count: number) => {
      const buf = Buffer.from(model);
      buf.writeBigUInt64LE(BigInt(count), zip64Eocd + 24);
      buf.writeBigUInt64LE(BigInt(count), zip64Eocd + 32);
      return buf;
    };
    expect(() => checkArchive(withCount(n - 1), 'model.pt'))
      .toThrow(`model.pt: damaged TorchScript archive: central directory holds more than its ${n - 1} entries`);
    expect(() => checkArchive(withCount(n + 1), 'model.pt')).toThrow(/^model\.pt: damaged TorchScript archive: central directory/);
  });

  test('readEntry names the file and the entry when the data is damaged', () => {
    const e = manifest['deflated.pt'].find((x) => x.name.endsWith('/data.pkl'))!;
    const buf = Buffer.from(deflated);
    buf.fill(0xff, dataStart(buf, e), dataStart(buf, e) + e.compressedSize);
    expect(() => readEntry(buf, e, 'deflated.pt')).toThrow(/^deflated\.pt: damaged TorchScript archive: entry '.*data\.pkl' does not inflate/);
  });
});
