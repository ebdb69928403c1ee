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
  /** Image files found under more than one class (see `ImageFolder.duplicates`). */
  duplicates: DuplicateImage[];
}

/** One image file that is a sample of several classes, usually through a symlink from one class folder into another. */
export interface DuplicateImage {
  /** The file's real path (symlinks resolved). */
  realPath: string;
  /** The classes it is a sample of, in class order. */
  classes: string[];
  /** The paths it was found at, one per sample. */
  paths: string[];
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

/** A folder on the walk, with the real paths of the folders above it (to stop at a loop). */
interface Pending { path: string; real: string; above: Pending | undefined }

function onWalk(real: string, at: Pending | undefined): boolean {
  for (let p = at; p; p = p.above) if (p.real === real) return true;
  return false;
}

/**
 * The images of one class folder, walked recursively in torchvision's order (its
 * `os.walk(followlinks=True)`): folders sorted by path, files sorted by name. Symlinked folders
 * are followed wherever they point, also into another class's folder, whose images then belong to
 * both classes as in torchvision; a link back to a folder already on the way down is not followed
 * again (torchvision would loop). Hidden entries (starting with '.') are skipped.
 */
function walk(dir: string, extensions: Set<string>): { files: { path: string; real: string }[]; ignored: number } {
  const dirs: Pending[] = [];
  const stack: Pending[] = [{ path: dir, real: fs.realpathSync(dir), above: undefined }];
  while (stack.length) {
    const d = stack.pop()!;
    dirs.push(d);
    for (const e of fs.readdirSync(d.path, { withFileTypes: true })) {
      const p = path.join(d.path, e.name);
      if (e.name.startsWith('.') || !isDir(p, e)) continue;
      const real = e.isSymbolicLink() ? fs.realpathSync(p) : path.join(d.real, e.name);
      if (!onWalk(real, d)) stack.push({ path: p, real, above: d });
    }
  }
  dirs.sort((a, b) => byCodePoint(a.path, b.path));
  const files: { path: string; real: string }[] = [];
  let ignored = 0;
  for (const d of dirs) {
    const entries = fs.readdirSync(d.path, { withFileTypes: true })
      .filter((e) => isFile(path.join(d.path, e.name), e))
      .sort((a, b) => byCodePoint(a.name, b.name));
    for (const e of entries) {
      if (e.name.startsWith('.') || !extensions.has(path.extname(e.name).toLowerCase())) {
        ignored++;
        continue;
      }
      const p = path.join(d.path, e.name);
      files.push({ path: p, real: e.isSymbolicLink() ? fs.realpathSync(p) : path.join(d.real, e.name) });
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
 * error. The folder is scanned once, synchronously, in the constructor. Symlinked folders are
 * followed as torchvision follows them, without looping; a file that thereby belongs to two classes
 * stays a sample of both, as in torchvision, and is listed in `duplicates` with one warning.
 *
 * Each file is read into memory by Node and decoded from there, off the main thread: JPEGs by
 * libjpeg-turbo (only the part the first crop needs), other formats by sharp (see
 * `transforms.setImageBackend`); in a DataLoader the batch is then written natively. The first
 * sharp decode turns off libvips' operation cache (`sharp.cache(false)`; no operation repeats in a
 * data pipeline) unless the application has set sharp's cache limits itself.
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
  /**
   * Image files that are samples of more than one class, by real path: usually a symlink from one
   * class folder into another. They are kept in every class, as torchvision keeps them.
   */
  readonly duplicates: readonly DuplicateImage[];
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
    const byReal = new Map<string, { classes: Set<number>; paths: string[] }>();
    classes.forEach((c, k) => {
      const { files, ignored: n } = walk(path.join(this.root, c), extensions);
      ignored += n;
      if (files.length === 0) empty.push(c);
      for (const f of files) {
        samples.push([f.path, k]);
        const entry = byReal.get(f.real) ?? { classes: new Set<number>(), paths: [] };
        entry.classes.add(k);
        entry.paths.push(f.path);
        byReal.set(f.real, entry);
      }
    });
    const duplicates = [...byReal].filter(([, e]) => e.classes.size > 1)
      .map(([realPath, e]) => ({ realPath, classes: [...e.classes].sort((a, b) => a - b).map((k) => classes[k]), paths: e.paths }));
    const extText = [...extensions].join(', ');
    if (samples.length === 0) {
      throw new Error(`ImageFolder: no images (${extText}) in the ${classes.length} class folder(s) of '${root}'`);
    }
    if (empty.length > 0) {
      process.emitWarning(`ImageFolder: class folder(s) with no images (${extText}) in '${root}': ${empty.join(', ')}; ` +
        'they are kept as classes with no samples');
    }
    if (duplicates.length > 0) {
      const first = duplicates[0];
      process.emitWarning(`ImageFolder: ${duplicates.length} image file(s) in '${root}' are samples of more than one class ` +
        `(by real path, e.g. '${first.realPath}' in ${first.classes.join(' and ')}); they are kept in each class, as torchvision ` +
        'does; ImageFolder.duplicates lists them', { code: 'FINETORCH_IMAGEFOLDER_DUPLICATES' });
    }
    this.duplicates = duplicates;
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
      duplicates: this.duplicates.map((d) => ({ ...d, classes: [...d.classes], paths: [...d.paths] })),
    };
  }
}
