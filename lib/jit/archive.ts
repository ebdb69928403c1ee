/**
 * Integrity check for TorchScript archives, done in TypeScript before libtorch sees the file.
 *
 * Why: libtorch 1.13's torch::jit::load can crash the whole process (SIGSEGV/SIGABRT) on a damaged
 * archive, e.g. a deflated entry whose compressed data is corrupt. A crash cannot be caught, so we
 * walk the zip ourselves: structure, bounds, every entry inflated and CRC-32 checked. This module
 * must stay free of the native addon so it can run before (and without) loading libtorch.
 *
 * A TorchScript file is a zip written by PyTorch (miniz): `<name>/data.pkl`, `<name>/code/...`,
 * `<name>/data/0`, `<name>/version`. Entries are mostly STORED, some DEFLATED; PyTorch writes zip64
 * records and data descriptors (flag bit 3), so sizes are taken from the central directory.
 */
import * as zlib from 'zlib';
import { codedError } from '../errors';

/** One entry of a zip archive, as listed in its central directory. */
export interface ArchiveEntry {
  /** Entry name, e.g. `'model/data.pkl'`. */
  name: string;
  /** Compression method: 0 (stored) or 8 (deflated). */
  method: number;
  /** Size of the entry's data in the file. */
  compressedSize: number;
  /** Size once inflated. */
  size: number;
  /** Declared CRC-32 of the uncompressed bytes (unsigned). */
  crc32: number;
  /** Offset of the entry's local header in the file. */
  offset: number;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const EOCD_SIZE = 22;
const MAX_COMMENT = 0xffff;

/** A reason that has `what` and a category prefixed when it reaches the caller. */
class Damage extends Error {}
const damaged = (detail: string) => new Damage(`damaged TorchScript archive: ${detail}`);
const truncated = (detail: string) => new Damage(`truncated TorchScript archive (${detail})`);

// zip64 fields are 64-bit; anything past 2^53 is far beyond any Buffer, so the bounds checks catch it.
const u64 = (buf: Buffer, pos: number) => Number(buf.readBigUInt64LE(pos));

/**
 * Checks that `buf` holds an intact TorchScript archive and lists its entries.
 *
 * Every entry is inflated and its CRC-32 compared, so this reads the whole file once; it is
 * meant to run right before handing the file to libtorch.
 *
 * @param buf the whole file's contents
 * @param what how to name the file in errors (usually its path)
 * @returns the entries, in central directory order
 * @throws Error whose message starts with `${what}: ` and says what is wrong
 * @example
 * const entries = checkArchive(fs.readFileSync('model.pt'), 'model.pt');
 * entries.map((e) => e.name); // ['model/data/0', ..., 'model/data.pkl', ..., 'model/version']
 */
export function checkArchive(buf: Buffer, what: string): ArchiveEntry[] {
  try {
    if (buf.length === 0) throw new Damage('the file is empty');
    const entries = listEntries(buf);
    // "Is it TorchScript?" before inflating everything: a plain zip is a user mistake, not damage.
    if (!entries.some((e) => e.name.endsWith('data.pkl'))) throw new Damage('a zip archive but not TorchScript (no data.pkl)');
    if (!entries.some((e) => e.name === 'version' || e.name.endsWith('/version'))) {
      throw new Damage('a zip archive but not TorchScript (no version record)');
    }
    for (const entry of entries) {
      const data = entryData(buf, entry);
      if (zlib.crc32(data) !== entry.crc32) throw damaged(`entry '${entry.name}' fails its CRC-32 check`);
    }
    return entries;
  } catch (err) {
    if (err instanceof Damage) throw codedError('FINETORCH_BAD_MODEL_FILE', `${what}: ${err.message}`);
    // Anything else (e.g. a RangeError from a read we failed to bounds-check) still must not
    // escape as a crash-worthy surprise: report it as damage, keeping the cause.
    throw codedError('FINETORCH_BAD_MODEL_FILE', `${what}: damaged TorchScript archive (${err instanceof Error ? err.message : String(err)})`, { cause: err });
  }
}

/**
 * Returns the uncompressed bytes of one entry (a view into `buf`, not a copy, for stored entries).
 * The length is checked against the declared size; the CRC-32 is not (checkArchive does that).
 *
 * @example
 * const entries = checkArchive(buf, 'model.pt');
 * const version = entries.find((e) => e.name.endsWith('/version'))!;
 * readEntry(buf, version).toString('utf8').trim(); // '3'
 */
export function readEntry(buf: Buffer, entry: ArchiveEntry, what = 'archive'): Buffer {
  try {
    return entryData(buf, entry);
  } catch (err) {
    throw codedError('FINETORCH_BAD_MODEL_FILE', `${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

/** Finds the end records, walks the central directory and cross-checks each local header. */
function listEntries(buf: Buffer): ArchiveEntry[] {
  // Distinguish "not a zip at all" from "a zip that was cut short": both lack an end record.
  const looksLikeZip = buf.length >= 4 && buf.readUInt32LE(0) === SIG_LOCAL;
  const noEnd = () => (looksLikeZip
    ? truncated('end of central directory record missing')
    : new Damage('not a TorchScript file (not a zip archive)'));
  if (buf.length < EOCD_SIZE) throw noEnd();

  // The EOCD is 22 bytes plus a comment of up to 64 KiB, so search backwards that far.
  let eocd = -1;
  for (let p = buf.length - EOCD_SIZE; p >= Math.max(0, buf.length - EOCD_SIZE - MAX_COMMENT); p--) {
    if (buf.readUInt32LE(p) === SIG_EOCD && p + EOCD_SIZE + buf.readUInt16LE(p + 20) <= buf.length) { eocd = p; break; }
  }
  if (eocd < 0) throw noEnd();

  let count = buf.readUInt16LE(eocd + 10);
  let cdSize = buf.readUInt32LE(eocd + 12);
  let cdOffset = buf.readUInt32LE(eocd + 16);
  let recordsStart = eocd; // the central directory must end before the end records begin
  if (buf.readUInt16LE(eocd + 4) !== 0 || buf.readUInt16LE(eocd + 6) !== 0 || buf.readUInt16LE(eocd + 8) !== count) {
    throw new Damage('unsupported TorchScript archive (split across several files)');
  }
  // zip64: a locator right before the EOCD points at the zip64 EOCD, whose 64-bit fields win.
  if (eocd >= 20 && buf.readUInt32LE(eocd - 20) === SIG_ZIP64_LOCATOR) {
    const z = u64(buf, eocd - 12);
    // Pointing past its own locator means bytes went missing in between (a cut, not a flip).
    if (z + 56 > eocd - 20) throw truncated('zip64 end record points past the data; part of the file is missing');
    if (buf.readUInt32LE(z) !== SIG_ZIP64_EOCD) throw damaged('zip64 end of central directory record missing');
    if (u64(buf, z + 24) !== u64(buf, z + 32)) throw new Damage('unsupported TorchScript archive (split across several files)');
    count = u64(buf, z + 32);
    cdSize = u64(buf, z + 40);
    cdOffset = u64(buf, z + 48);
    recordsStart = z;
  } else if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    throw damaged('zip64 end of central directory locator missing');
  }
  if (cdOffset + cdSize > buf.length) throw truncated('central directory past end of file');
  if (cdOffset + cdSize > recordsStart) throw damaged('central directory overlaps its end record');
  if (count * 46 > cdSize) throw damaged(`central directory too small for its ${count} entries`);

  const entries: ArchiveEntry[] = [];
  const names = new Set<string>();
  const cdEnd = cdOffset + cdSize;
  let p = cdOffset;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cdEnd || buf.readUInt32LE(p) !== SIG_CENTRAL) throw damaged(`central directory entry ${i + 1} of ${count} missing`);
    const flags = buf.readUInt16LE(p + 8);
    const nameLen = buf.readUInt16LE(p + 28);
    const extraLen = buf.readUInt16LE(p + 30);
    const next = p + 46 + nameLen + extraLen + buf.readUInt16LE(p + 32);
    if (next > cdEnd) throw damaged(`central directory entry ${i + 1} of ${count} runs past the directory`);
    const rawName = buf.subarray(p + 46, p + 46 + nameLen);
    const name = rawName.toString('utf8');
    const entry: ArchiveEntry = {
      name, method: buf.readUInt16LE(p + 10), crc32: buf.readUInt32LE(p + 16),
      compressedSize: buf.readUInt32LE(p + 20), size: buf.readUInt32LE(p + 24), offset: buf.readUInt32LE(p + 42),
    };
    readZip64Extra(buf.subarray(p + 46 + nameLen, p + 46 + nameLen + extraLen), entry);

    if (flags & 1) throw new Damage(`unsupported TorchScript archive (entry '${name}' is encrypted)`);
    if (entry.method !== 0 && entry.method !== 8) {
      throw new Damage(`unsupported TorchScript archive (entry '${name}' uses compression method ${entry.method}; ` +
        'only stored and deflated are supported)');
    }
    if (entry.method === 0 && entry.size !== entry.compressedSize) throw damaged(`stored entry '${name}' has different sizes`);
    if (names.has(name)) throw damaged(`entry '${name}' appears twice`);
    names.add(name);

    // The local header must exist, name the same entry and its data must fit before the directory.
    const { start, localName, localMethod } = localHeader(buf, entry);
    if (!localName.equals(rawName)) throw damaged(`entry '${name}' has a different name in its local header`);
    if (localMethod !== entry.method) throw damaged(`entry '${name}' has a different compression method in its local header`);
    if (start + entry.compressedSize > buf.length) throw truncated(`entry '${name}' runs past end of file`);
    if (start + entry.compressedSize > cdOffset) throw damaged(`entry '${name}' overlaps the central directory`);
    entries.push(entry);
    p = next;
  }
  if (p !== cdEnd) throw damaged(`central directory holds more than its ${count} entries`);
  return entries;
}

/** Zip64 extra field (id 0x0001): 64-bit values for exactly those fields set to 0xFFFFFFFF, in order. */
function readZip64Extra(extra: Buffer, entry: ArchiveEntry): void {
  for (let q = 0; q + 4 <= extra.length;) {
    const id = extra.readUInt16LE(q);
    const len = extra.readUInt16LE(q + 2);
    if (q + 4 + len > extra.length) throw damaged(`entry '${entry.name}' has a malformed extra field`);
    if (id === 0x0001) {
      let r = q + 4;
      const take = () => {
        if (r + 8 > q + 4 + len) throw damaged(`entry '${entry.name}' has a short zip64 extra field`);
        const v = u64(extra, r);
        r += 8;
        return v;
      };
      if (entry.size === 0xffffffff) entry.size = take();
      if (entry.compressedSize === 0xffffffff) entry.compressedSize = take();
      if (entry.offset === 0xffffffff) entry.offset = take();
    }
    q += 4 + len;
  }
}

/** Reads an entry's local header; `start` is where its data begins. */
function localHeader(buf: Buffer, entry: ArchiveEntry) {
  const at = entry.offset;
  if (at + 30 > buf.length || buf.readUInt32LE(at) !== SIG_LOCAL) throw damaged(`local header of entry '${entry.name}' missing`);
  const nameLen = buf.readUInt16LE(at + 26);
  const start = at + 30 + nameLen + buf.readUInt16LE(at + 28);
  if (start > buf.length) throw truncated(`local header of entry '${entry.name}' runs past end of file`);
  return { start, localName: buf.subarray(at + 30, at + 30 + nameLen), localMethod: buf.readUInt16LE(at + 8) };
}

/** The uncompressed bytes of an entry; throws Damage when they cannot be had or have the wrong size. */
function entryData(buf: Buffer, entry: ArchiveEntry): Buffer {
  const { start } = localHeader(buf, entry);
  if (start + entry.compressedSize > buf.length) throw truncated(`entry '${entry.name}' runs past end of file`);
  const raw = buf.subarray(start, start + entry.compressedSize);
  if (entry.method === 0) return raw;
  if (entry.method !== 8) throw new Damage(`unsupported TorchScript archive (entry '${entry.name}' uses compression method ${entry.method})`);
  let out: Buffer;
  try {
    // Cap the output one byte past the declared size: a lying header (zip bomb) stops there.
    out = zlib.inflateRawSync(raw, { maxOutputLength: entry.size + 1 });
  } catch (err) {
    throw damaged(`entry '${entry.name}' does not inflate (${err instanceof Error ? err.message : String(err)})`);
  }
  if (out.length !== entry.size) throw damaged(`entry '${entry.name}' inflates to ${out.length} bytes, not the declared ${entry.size}`);
  return out;
}
