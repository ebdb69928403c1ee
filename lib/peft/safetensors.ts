/**
 * The safetensors file format (Hugging Face's `adapter_model.safetensors`), read and written by
 * hand: an 8-byte little-endian header length N, a JSON header of N bytes
 * (`{ name: { dtype, shape, data_offsets: [begin, end] }, __metadata__?: {...} }`, offsets relative
 * to the end of the header), then the raw little-endian data.
 */

/** A floating tensor's values as this format stores them. */
export interface SafeTensor {
  shape: number[];
  data: Float32Array | Float64Array;
}

const WIDTH: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2 };
/** Headers larger than this are damage, not adapters (the Rust reader refuses above 100 MB too). */
const MAX_HEADER = 100_000_000;

/**
 * Encodes `tensors` (float32 as F32, float64 as F64) with `metadata` as `__metadata__`.
 *
 * @example
 * fs.writeFileSync('t.safetensors', torch.peft.encodeSafetensors([['w', { shape: [2], data: new Float32Array([1, 2]) }]]));
 */
export function encodeSafetensors(tensors: [string, SafeTensor][], metadata: Record<string, string> = { format: 'pt' }): Buffer {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const [name, t] of tensors) {
    const bytes = t.data.byteLength;
    header[name] = { dtype: t.data instanceof Float64Array ? 'F64' : 'F32', shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  // the data starts 8-byte aligned, as the Rust writer pads it (with spaces)
  json += ' '.repeat((8 - ((8 + Buffer.byteLength(json)) % 8)) % 8);
  const head = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + head.length + offset);
  out.writeBigUInt64LE(BigInt(head.length), 0);
  head.copy(out, 8);
  let at = 8 + head.length;
  for (const [, t] of tensors) {
    Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).copy(out, at);
    at += t.data.byteLength;
  }
  return out;
}

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

/**
 * Decodes a safetensors file's bytes into float tensors (F16 and BF16 widened to float32). A damaged
 * file is an Error that starts with `what` and says what is wrong.
 *
 * @example
 * const tensors = torch.peft.decodeSafetensors(fs.readFileSync('adapter/adapter_model.safetensors'), 'read');
 */
export function decodeSafetensors(buf: Buffer, what: string): Map<string, SafeTensor> {
  const bad = (why: string) => new Error(`${what}: not a valid safetensors file: ${why}`);
  if (buf.length < 8) throw bad(`${buf.length} bytes, shorter than the 8-byte header length`);
  const n = buf.readBigUInt64LE(0);
  if (n > BigInt(Math.min(MAX_HEADER, buf.length - 8))) throw bad(`the header length (${n}) runs past the end of the file (${buf.length} bytes)`);
  const dataStart = 8 + Number(n);
  let header: unknown;
  try {
    header = JSON.parse(buf.subarray(8, dataStart).toString('utf8'));
  } catch (e) {
    throw bad(`the header is not JSON (${(e as Error).message})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) throw bad('the header is not a JSON object');
  const dataLength = buf.length - dataStart;
  const out = new Map<string, SafeTensor>();
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') continue;
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (e === null || typeof e !== 'object') throw bad(`entry '${name}' is not an object`);
    const width = typeof e.dtype === 'string' ? WIDTH[e.dtype] : undefined;
    if (width === undefined) throw bad(`entry '${name}' has dtype ${JSON.stringify(e.dtype)}; adapters must be F32, F64, F16 or BF16`);
    const isCount = (v: unknown) => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
    if (!Array.isArray(e.shape) || !e.shape.every(isCount)) throw bad(`entry '${name}' has a bad shape ${JSON.stringify(e.shape)}`);
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every(isCount) || off[0] > off[1] || off[1] > dataLength) {
      throw bad(`entry '${name}' has data_offsets ${JSON.stringify(off)} outside the ${dataLength} data bytes`);
    }
    const shape = e.shape as number[];
    const numel = shape.reduce((a, b) => a * b, 1);
    const [begin, end] = off as number[];
    if (end - begin !== numel * width) throw bad(`entry '${name}' has ${end - begin} bytes for shape [${shape.join(', ')}] of ${e.dtype}`);
    const bytes = buf.subarray(dataStart + begin, dataStart + end);
    let data: Float32Array | Float64Array;
    if (e.dtype === 'F64') data = new Float64Array(numel).map((_, i) => bytes.readDoubleLE(8 * i));
    else if (e.dtype === 'F32') data = new Float32Array(numel).map((_, i) => bytes.readFloatLE(4 * i));
    else if (e.dtype === 'F16') data = new Float32Array(numel).map((_, i) => halfToFloat(bytes.readUInt16LE(2 * i)));
    else {
      const widened = Buffer.alloc(4);
      data = new Float32Array(numel).map((_, i) => { widened.writeUInt32LE(bytes.readUInt16LE(2 * i) << 16 >>> 0, 0); return widened.readFloatLE(0); });
    }
    out.set(name, { shape, data });
  }
  return out;
}
