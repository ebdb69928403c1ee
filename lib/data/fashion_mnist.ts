/**
 * `FashionMNIST`: Zalando's 28x28 greyscale clothing images, read from the IDX files (gzip or
 * plain) that Debian's `dataset-fashion-mnist` package installs.
 */
import * as fs from 'fs';
import * as path from 'path';
import { promisify } from 'util';
import * as zlib from 'zlib';
import { compile, tables, Transform, type Compiled } from '../transforms/transform';
import { toTensor } from '../transforms/tensor';
import { runTransform } from '../transforms/pipeline';
import { checkIndex, Dataset, int64Targets, type ItemContext, type PreparedSample, type RowSource, type Sample } from './dataset';
import { Rng } from './random';

const gunzip = promisify(zlib.gunzip);

/** Options of `FashionMNIST`. */
export interface FashionMNISTOptions {
  /** Folder holding the IDX files; default Debian's `/usr/share/datasets/fashion-mnist`. */
  root?: string;
  /** The 60,000 training images (true, default) or the 10,000 test images (false). */
  train?: boolean;
  /** Applied to each 1-channel 28x28 image; default `toTensor()`. */
  transform?: Transform;
}

/** A parsed IDX file: unsigned bytes with their dimensions. */
interface Idx {
  dims: number[];
  data: Uint8Array;
}

/** Parses an IDX file of unsigned bytes (magic 0x00 0x00 0x08 ndim, big-endian sizes). */
function parseIdx(buf: Uint8Array, file: string, ndim: number): Idx {
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (buf.length < 4 + 4 * ndim || view.getUint16(0) !== 0 || buf[2] !== 0x08 || buf[3] !== ndim) {
    throw new Error(`FashionMNIST: '${file}' is not an IDX file of ${ndim}-D unsigned bytes (bad header)`);
  }
  const dims = Array.from({ length: ndim }, (_, i) => view.getUint32(4 + 4 * i));
  const start = 4 + 4 * ndim;
  const size = dims.reduce((a, b) => a * b, 1);
  if (buf.length - start !== size) {
    throw new Error(`FashionMNIST: '${file}' should hold ${size} bytes of data for dimensions [${dims}] but holds ${buf.length - start} (truncated?)`);
  }
  return { dims, data: buf.subarray(start) };
}

function isGzip(buf: Uint8Array): boolean {
  return buf.length >= 2 && buf[0] === 0x1f && buf[1] === 0x8b;
}

/**
 * Fashion-MNIST (as torchvision's `datasets.FashionMNIST`): items are `{ input, target }` with
 * input float32 [1, 28, 28] in [0, 1] (as ToTensor gives) and the class index in [0, 10). Files
 * are looked for in `root` and in torchvision's layout `root/FashionMNIST/raw`, gzipped or not.
 * Labels are read in the constructor; images on first use (about 47 MB for the training set).
 *
 * @example
 * const train = new data.FashionMNIST({ train: true });
 * const test = new data.FashionMNIST({ train: false });
 * console.log(train.length, data.FashionMNIST.classes[train.targets[0]]); // 60000 'Ankle boot'
 */
export class FashionMNIST extends Dataset<Sample> {
  /** The ten class names, by index. */
  static readonly classes: readonly string[] = [
    'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot',
  ];
  /** Where Debian's `dataset-fashion-mnist` installs the files. */
  static readonly defaultRoot = '/usr/share/datasets/fashion-mnist';

  readonly root: string;
  readonly train: boolean;
  readonly length: number;
  /** The label of every sample. */
  readonly targets: Uint8Array;
  readonly transform: Transform | undefined;
  private readonly imagesFile: string;
  private readonly compiled: Compiled;
  private images: Promise<Idx> | undefined;

  constructor(options: FashionMNISTOptions = {}) {
    super();
    if (options === null || typeof options !== 'object') throw new TypeError('FashionMNIST: options must be an object');
    for (const k of Object.keys(options)) {
      if (!['root', 'train', 'transform'].includes(k)) throw new TypeError(`FashionMNIST: unknown option '${k}' (known: root, train, transform)`);
    }
    if (options.root !== undefined && (typeof options.root !== 'string' || options.root === '')) throw new TypeError('FashionMNIST: root must be a folder path');
    if (options.train !== undefined && typeof options.train !== 'boolean') throw new TypeError('FashionMNIST: train must be a boolean');
    if (options.transform !== undefined && !(options.transform instanceof Transform)) {
      throw new TypeError('FashionMNIST: transform must be made with finetorch transforms (transforms.compose([...]))');
    }
    this.root = options.root ?? FashionMNIST.defaultRoot;
    this.train = options.train ?? true;
    this.transform = options.transform;
    this.compiled = compile(options.transform ?? toTensor());
    const prefix = this.train ? 'train' : 't10k';
    const labelsFile = this.find(`${prefix}-labels-idx1-ubyte`);
    this.imagesFile = this.find(`${prefix}-images-idx3-ubyte`);
    let raw: Uint8Array = fs.readFileSync(labelsFile);
    if (isGzip(raw)) raw = zlib.gunzipSync(raw);
    const labels = parseIdx(raw, labelsFile, 1);
    const bad = labels.data.findIndex((v) => v >= 10);
    if (bad >= 0) throw new Error(`FashionMNIST: '${labelsFile}' has label ${labels.data[bad]} at index ${bad}; labels must be in [0, 10)`);
    this.targets = labels.data;
    this.length = labels.dims[0];
  }

  private find(base: string): string {
    const dirs = [this.root, path.join(this.root, 'FashionMNIST', 'raw')];
    for (const d of dirs) {
      for (const name of [`${base}.gz`, base]) {
        const p = path.join(d, name);
        if (fs.existsSync(p)) return p;
      }
    }
    throw new Error(`FashionMNIST: cannot find ${base}(.gz) in ${dirs.map((d) => `'${d}'`).join(' or ')}. ` +
      "Install Debian's package (apt-get install dataset-fashion-mnist, which puts the files in " +
      `${FashionMNIST.defaultRoot}) or pass { root } pointing at a folder with the four IDX files ` +
      'from https://github.com/zalandoresearch/fashion-mnist (gzipped or not)');
  }

  /** Reads the images file (once); `get` calls it. */
  async load(): Promise<void> {
    await this.ensure();
  }

  private ensure(): Promise<Idx> {
    this.images ??= (async () => {
      let raw: Uint8Array = await fs.promises.readFile(this.imagesFile);
      if (isGzip(raw)) raw = await gunzip(raw);
      const idx = parseIdx(raw, this.imagesFile, 3);
      if (idx.dims[0] !== this.length) {
        throw new Error(`FashionMNIST: '${this.imagesFile}' has ${idx.dims[0]} images but the labels file has ${this.length} labels`);
      }
      return idx;
    })();
    return this.images;
  }

  override async prepare(index: number, context: ItemContext): Promise<PreparedSample> {
    checkIndex(index, this.length, 'FashionMNIST');
    const { dims: [, height, width], data } = await this.ensure();
    const pixels = data.subarray(index * height * width, (index + 1) * height * width);
    const decoded = await runTransform({ raw: { data: pixels, width, height, channels: 1 } }, this.compiled, context.rng);
    return { shape: decoded.shape, type: Float32Array, target: this.targets[index], planes: decoded.planes, write: (out, offset) => decoded.write(out as Float32Array, offset) };
  }

  /**
   * @internal The pixels and labels, for the DataLoader's one-call gather of a batch: when the
   * transform only converts and normalises (no crop, flip or other per-sample step), a sample is
   * its 8-bit row through the transform's table. Null otherwise, or when a subclass overrides
   * `get` or `prepare`.
   */
  rows(): Promise<RowSource | null> {
    this.rowSource ??= (async () => {
      if (this.compiled.image.length > 0 || this.get !== FashionMNIST.prototype.get || this.prepare !== FashionMNIST.prototype.prepare) return null;
      let luts: Float32Array;
      try {
        [luts] = tables(this.compiled, 1);
      } catch {
        return null; // a 3-channel Normalize: the per-sample path reports it, naming the sample
      }
      const { dims: [, height, width], data } = await this.ensure();
      return { inputs: data, shape: [1, height, width], luts, targets: int64Targets(this.targets) };
    })();
    return this.rowSource;
  }

  private rowSource: Promise<RowSource | null> | undefined;

  /** Sample `index`: `{ input: { data: Float32Array, shape: [1, 28, 28] }, target }`. */
  async get(index: number, context?: ItemContext): Promise<Sample> {
    const p = await this.prepare(index, context ?? { rng: Rng.random() });
    const out = new Float32Array(p.shape.reduce((a, b) => a * b, 1));
    p.write(out, 0);
    return { input: { data: out, shape: p.shape }, target: p.target };
  }
}
