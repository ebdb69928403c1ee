/**
 * `ImageFolder`: a folder with one sub-folder of images per class, as torchvision's ImageFolder.
 * Files are only opened for reading; sharp decodes them on libuv's threadpool.
 */
import * as fs from 'fs';
import * as path from 'path';
import { compile, Transform, type Compiled } from '../transforms/transform';
import { toTensor } from '../transforms/tensor';
import { runTransform, type ImageMeta } from '../transforms/pipeline';
import { checkIndex, Dataset, SkippedSampleError, type ItemContext, type PreparedSample, type Sample } from './dataset';
import { Rng } from './random';

/** The extensions sharp decodes: JPEG, PNG, WebP, GIF and TIFF (first frame), AVIF. */
export const IMAGE_EXTENSIONS: readonly string[] = ['.jpg', '.jpeg', '.png', '.webp', '.gif', '.tif', '.tiff', '.avif'];

/** Options of `ImageFolder`. */
export interface ImageFolderOptions {
  /** Applied to every image; by default `toTensor()` (CHW float32 in [0, 1] at the image's size). */
  transform?: Transform;
  /** File extensions to load, case-insensitive (default `IMAGE_EXTENSIONS`). */
  extensions?: string[];
  /** An unreadable image fails the epoch with an error naming it ('error', default) or is left out ('skip'). */
  onError?: 'error' | 'skip';
}

/** What `ImageFolder.report()` returns. */
export interface ImageFolderReport {
  samples: number;
  classes: number;
  /** Class folders with no images (kept as classes, so indices match the folder names). */
  emptyClasses: string[];
  /** Files that were not loaded: hidden, another extension, or outside any class folder. */
  ignoredFiles: number;
  /** Images that could not be decoded and were skipped (onError: 'skip'), with the reason. */
  skipped: { path: string; reason: string }[];
}

/** Python's string order (by code point), which torchvision sorts classes and files with. */
function byCodePoint(a: string, b: string): number {
  const x = Array.from(a);
  const y = Array.from(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0)! - y[i].codePointAt(0)!;
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

function isDir(p: string, d: fs.Dirent): boolean {
  if (d.isDirectory()) return true;
  if (!d.isSymbolicLink()) return false;
  try { return fs.statSync(p).isDirectory(); } catch { return false; }
}

function isFile(p: string, d: fs.Dirent): boolean {
  if (d.isFile()) return true;
  if (!d.isSymbolicLink()) return false;
  try { return fs.statSync(p).isFile(); } catch { return false; }
}

/**
 * The images of one class folder, walked recursively in torchvision's order: folders sorted by
 * path, files sorted by name. Hidden entries (starting with '.') are skipped; symlinked folders
 * are followed once.
 */
function walk(dir: string, extensions: Set<string>, seen: Set<string>): { files: string[]; ignored: number } {
  const dirs: string[] = [];
  const stack = [dir];
  while (stack.length) {
    const d = stack.pop()!;
    const real = fs.realpathSync(d);
    if (seen.has(real)) continue;
    seen.add(real);
    dirs.push(d);
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      if (!e.name.startsWith('.') && isDir(path.join(d, e.name), e)) stack.push(path.join(d, e.name));
    }
  }
  dirs.sort(byCodePoint);
  const files: string[] = [];
  let ignored = 0;
  for (const d of dirs) {
    const names = fs.readdirSync(d, { withFileTypes: true })
      .filter((e) => isFile(path.join(d, e.name), e))
      .map((e) => e.name)
      .sort(byCodePoint);
    for (const name of names) {
      if (!name.startsWith('.') && extensions.has(path.extname(name).toLowerCase())) files.push(path.join(d, name));
      else ignored++;
    }
  }
  return { files, ignored };
}

/**
 * A classification dataset laid out as `root/<class>/<image>` (images may sit in sub-folders of a
 * class folder). Classes are the sub-folder names sorted as torchvision sorts them, so class
 * indices match a model trained with torchvision on the same folder. Images are decoded with sharp
 * (JPEG, PNG, WebP, GIF/TIFF first frame, AVIF) off the main thread; greyscale becomes 3 channels
 * and alpha is dropped (as PIL's `convert('RGB')`); EXIF orientation is ignored, as in torchvision.
 *
 * Unlike torchvision, hidden files and folders are skipped, and an empty class folder is kept as a
 * class with no samples (with a warning) instead of an error; a tree with no image at all is an
 * error. The folder is scanned once, synchronously, in the constructor.
 *
 * Each file is read into memory by Node and decoded by sharp from there; in a DataLoader the
 * batch is then written natively off the main thread. The first decode turns off libvips'
 * operation cache (`sharp.cache(false)`; no operation repeats in a data pipeline) unless the
 * application has set sharp's cache limits itself.
 *
 * @example
 * const train = new data.ImageFolder('photos/train', { transform: transforms.imagenet({ train: true }) });
 * console.log(train.classes, train.length);
 * const loader = new data.DataLoader(train, { batchSize: 32, shuffle: true });
 */
export class ImageFolder extends Dataset<Sample> {
  readonly root: string;
  /** Class names, sorted; a class's index is its position. */
  readonly classes: readonly string[];
  /** Class name to index. */
  readonly classToIndex: Readonly<Record<string, number>>;
  /** `[path, classIndex]` of every image, in torchvision's order. */
  readonly samples: readonly (readonly [string, number])[];
  /** The class index of every sample. */
  readonly targets: readonly number[];
  readonly transform: Transform | undefined;
  readonly onError: 'error' | 'skip';
  private readonly compiled: Compiled;
  private readonly meta = new Map<number, ImageMeta>();
  private readonly skippedFiles = new Map<string, string>();
  private readonly emptyClasses: string[];
  private readonly ignoredFiles: number;

  constructor(root: string, options: ImageFolderOptions = {}) {
    super();
    if (typeof root !== 'string' || root === '') throw new TypeError('ImageFolder: root must be a folder path');
    if (options === null || typeof options !== 'object') throw new TypeError('ImageFolder: options must be an object');
    const known = ['transform', 'extensions', 'onError'];
    for (const k of Object.keys(options)) {
      if (!known.includes(k)) throw new TypeError(`ImageFolder: unknown option '${k}' (known: ${known.join(', ')})`);
    }
    const onError = options.onError ?? 'error';
    if (onError !== 'error' && onError !== 'skip') throw new TypeError(`ImageFolder: onError must be 'error' or 'skip': got ${JSON.stringify(onError)}`);
    this.onError = onError;
    if (options.transform !== undefined && !(options.transform instanceof Transform)) {
      throw new TypeError('ImageFolder: transform must be made with finetorch transforms (transforms.compose([...]), transforms.imagenet(...))');
    }
    this.transform = options.transform;
    this.compiled = compile(options.transform ?? toTensor());
    const extList = options.extensions ?? IMAGE_EXTENSIONS;
    if (!Array.isArray(extList) || extList.length === 0 || !extList.every((e) => typeof e === 'string' && e.replace(/^\./, '') !== '')) {
      throw new TypeError(`ImageFolder: extensions must be a non-empty array like ['.jpg', '.png']: got ${JSON.stringify(extList)}`);
    }
    const extensions = new Set(extList.map((e) => (e.startsWith('.') ? e : `.${e}`).toLowerCase()));

    this.root = path.resolve(root);
    let stat: fs.Stats;
    try { stat = fs.statSync(this.root); } catch { throw new Error(`ImageFolder: '${root}' does not exist`); }
    if (!stat.isDirectory()) throw new Error(`ImageFolder: '${root}' is not a folder`);

    const top = fs.readdirSync(this.root, { withFileTypes: true });
    const classes = top.filter((e) => !e.name.startsWith('.') && isDir(path.join(this.root, e.name), e)).map((e) => e.name).sort(byCodePoint);
    if (classes.length === 0) {
      throw new Error(`ImageFolder: no class folders in '${root}': expected one sub-folder per class (${path.join(root, 'cat', '001.jpg')}, ...)`);
    }
    let ignored = top.length - classes.length;
    const samples: [string, number][] = [];
    const empty: string[] = [];
    const seen = new Set<string>();
    classes.forEach((c, k) => {
      const { files, ignored: n } = walk(path.join(this.root, c), extensions, seen);
      ignored += n;
      if (files.length === 0) empty.push(c);
      for (const f of files) samples.push([f, k]);
    });
    const extText = [...extensions].join(', ');
    if (samples.length === 0) {
      throw new Error(`ImageFolder: no images (${extText}) in the ${classes.length} class folder(s) of '${root}'`);
    }
    if (empty.length > 0) {
      process.emitWarning(`ImageFolder: class folder(s) with no images (${extText}) in '${root}': ${empty.join(', ')}; ` +
        'they are kept as classes with no samples');
    }
    this.classes = classes;
    this.classToIndex = Object.fromEntries(classes.map((c, k) => [c, k]));
    this.samples = samples;
    this.targets = samples.map(([, t]) => t);
    this.emptyClasses = empty;
    this.ignoredFiles = ignored;
  }

  get length(): number {
    return this.samples.length;
  }

  /**
   * Decodes and transforms sample `index` for batching: the pixels are written straight into the
   * batch buffer. Under `onError: 'skip'` an unreadable image throws `SkippedSampleError`.
   */
  override async prepare(index: number, context: ItemContext): Promise<PreparedSample> {
    checkIndex(index, this.length, 'ImageFolder');
    const [file, target] = this.samples[index];
    let decoded;
    try {
      decoded = await runTransform({ file, meta: this.meta.get(index) }, this.compiled, context.rng);
    } catch (err) {
      const reason = (err as Error)?.message ?? String(err);
      if (this.onError === 'skip') {
        this.skippedFiles.set(file, reason);
        throw new SkippedSampleError(`ImageFolder: skipped unreadable image '${file}': ${reason}`, { path: file, cause: err });
      }
      throw new Error(`ImageFolder: cannot read image '${file}' (class '${this.classes[target]}'): ${reason}`, { cause: err });
    }
    if (decoded.meta) this.meta.set(index, decoded.meta);
    return { shape: decoded.shape, type: Float32Array, target, planes: decoded.planes, write: (out, offset) => decoded.write(out as Float32Array, offset) };
  }

  /**
   * Sample `index`: `{ input: { data: Float32Array, shape: [C, H, W] }, target }`. Without a
   * context, random transforms draw from a fresh unseeded stream.
   */
  async get(index: number, context?: ItemContext): Promise<Sample> {
    const p = await this.prepare(index, context ?? { rng: Rng.random() });
    const data = new Float32Array(p.shape.reduce((a, b) => a * b, 1));
    p.write(data, 0);
    return { input: { data, shape: p.shape }, target: p.target };
  }

  /** What was found when scanning, and the images skipped so far as unreadable. */
  report(): ImageFolderReport {
    return {
      samples: this.samples.length,
      classes: this.classes.length,
      emptyClasses: [...this.emptyClasses],
      ignoredFiles: this.ignoredFiles,
      skipped: [...this.skippedFiles].map(([p, reason]) => ({ path: p, reason })),
    };
  }
}
