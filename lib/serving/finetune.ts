/**
 * `POST /finetune` for a prediction service: fine-tunes a copy of the served model on an
 * ImageFolder in the background (on the training executor, while the Predictor keeps answering
 * from its own thread) and hot-swaps the Predictor to it when the copy validates better. Used by
 * `finetorch serve` and examples/service.ts.
 */
import * as fs from 'fs';
import type * as http from 'http';
import * as os from 'os';
import * as path from 'path';
import * as tar from 'tar';
import { DataLoader } from '../data/loader';
import { Subset } from '../data/dataset';
import { ImageFolder } from '../data/image_folder';
import { load } from '../jit/load';
import type { ScriptModule } from '../jit/module';
import { CrossEntropyLoss } from '../nn/loss';
import { AdamW } from '../optim/optimizer';
import { evaluate } from '../train/evaluate';
import { fit } from '../train/fit';
import { fromJSON, imagenet, type Transform } from '../transforms';
import { HttpError, readBody, type RouteHandler } from './http';
import type { Predictor } from './predictor';

/** Where the latest fine-tune stands (GET /status shows it). */
export interface FinetuneStatus {
  state: 'idle' | 'training' | 'done' | 'failed';
  /** The last finished epoch. */
  epoch?: number;
  /** Validation accuracy of the served weights before, and of the fine-tuned copy after. */
  before?: number;
  after?: number;
  /** Whether the predictor now serves the fine-tuned weights. */
  swapped?: boolean;
  error?: string;
}

/** Options of `finetuneRoute`. */
export interface FinetuneRouteOptions {
  /** The served model: the file the Predictor was loaded from, or a loaded ScriptModule (not disposed here). */
  model: string | ScriptModule;
  /**
   * The eval transform (validation); also the training transform unless `trainTransform` is given
   * (default: the one the served model file records, else `transforms.imagenet({ train: false, size: 224 })`).
   */
  transform?: Transform;
  trainTransform?: Transform;
  /** The served classes: a folder with other classes is refused (400) (default: the ones the model file records). */
  labels?: readonly string[];
  /** Called with the fine-tuned copy once the Predictor serves it (e.g. to save it: the swap lives in memory). */
  onSwap?: (model: ScriptModule) => Promise<void>;
  /** The largest tar upload accepted, in bytes (default 1 GiB; larger answers 413). */
  maxUploadBytes?: number;
  /** Defaults of a request that names none: epochs 3, lr 1e-3, batch size 16. */
  epochs?: number;
  lr?: number;
  batchSize?: number;
}

/** What `finetuneRoute` gives a service: the route, its status for GET /status, and the running job. */
export interface FinetuneRoute {
  /**
   * The `'POST /finetune'` handler, answering 202: a JSON body `{ "dir": "path/to/ImageFolder",
   * "epochs": 3, "lr": 0.001 }` names a folder on the server; a tar (or tar.gz) of the ImageFolder
   * as the body (`Content-Type: application/x-tar` or `application/gzip`, epochs and lr in the
   * query string) uploads one.
   */
  handler: RouteHandler;
  status(): FinetuneStatus;
  /** The fine-tune now running (or the last one). */
  job(): Promise<FinetuneStatus>;
}

/** Content types that mark a POST /finetune body as an archive (anything else is read as JSON). */
const ARCHIVE_TYPES = new Set(['application/x-tar', 'application/tar', 'application/gzip', 'application/x-gzip', 'application/x-compressed-tar', 'application/octet-stream']);

const JSON_USAGE = 'POST { "dir": "path/to/ImageFolder", "epochs": 3, "lr": 0.001 } as JSON, or a tar of the ImageFolder with Content-Type: application/x-tar';

/**
 * Unpacks an uploaded tar (or tar.gz, detected by node-tar) into a new temporary folder, as it
 * arrives: regular files and folders only (links and devices are skipped; node-tar refuses paths
 * that leave the folder), at most `maxBytes` of body. Answers the ImageFolder's root: the folder
 * itself, or its one top folder when the archive wraps the class folders in one (`tar cf x.tar photos/`).
 */
async function receiveArchive(req: http.IncomingMessage, maxBytes: number): Promise<{ tmp: string; dir: string }> {
  const tmp = await fs.promises.mkdtemp(path.join(os.tmpdir(), 'finetorch-upload-'));
  let files = 0;
  try {
    // node-tar turns what it refuses (paths with '..', bad headers, a cut-off archive) into warnings
    // and goes on; the first one fails the upload once the unpacking has ended ('close'), so the
    // temporary folder is only removed when nothing writes to it any more.
    await new Promise<void>((resolve, reject) => {
      let size = 0;
      let failure: HttpError | undefined;
      const fail = (status: number, message: string) => { failure ??= new HttpError(status, message); };
      const notTar = (message: string) => fail(400, `the body is not a tar archive of an ImageFolder: ${message}`);
      const unpack = tar.x({
        cwd: tmp,
        onwarn: (code, message) => { if (code !== 'TAR_ENTRY_INFO') notTar(`${code}: ${message}`); },
        filter: (_p, entry) => {
          const type = (entry as tar.ReadEntry).type;
          if (type === 'File' || type === 'OldFile' || type === 'ContiguousFile') files++;
          return type === 'Directory' || type === 'File' || type === 'OldFile' || type === 'ContiguousFile';
        },
      });
      unpack.on('error', (err: Error) => notTar(err.message));
      unpack.on('close', () => (failure ? reject(failure) : resolve()));
      const stop = () => {
        req.unpipe(unpack);
        unpack.end();
      };
      req.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > maxBytes && !failure) {
          fail(413, `the upload is larger than ${maxBytes} bytes`);
          stop();
          req.resume();  // read the rest without keeping it, so the 413 reaches the client
        }
      });
      req.on('close', () => {
        if (!req.complete) {
          fail(400, 'the upload was cut off');
          stop();
        }
      });
      req.pipe(unpack);
    });
    if (files === 0) throw new HttpError(400, 'the uploaded archive holds no files: send a tar of an ImageFolder (one folder of images per class)');
    const top = (await fs.promises.readdir(tmp, { withFileTypes: true })).filter((e) => !e.name.startsWith('.'));
    let dir = tmp;
    if (top.length === 1 && top[0].isDirectory()) {
      const inner = (await fs.promises.readdir(path.join(tmp, top[0].name), { withFileTypes: true })).filter((e) => !e.name.startsWith('.'));
      if (inner.length > 0 && inner.every((e) => e.isDirectory())) dir = path.join(tmp, top[0].name);
    }
    return { tmp, dir };
  } catch (err) {
    await fs.promises.rm(tmp, { recursive: true, force: true });
    throw err;
  }
}

/** epochs and lr of a request (JSON numbers, or query-string text), checked. */
function jobNumbers(epochs: unknown, lr: unknown): { epochs?: number; lr?: number } {
  const num = (v: unknown) => (typeof v === 'string' && v.trim() !== '' ? Number(v) : v);
  const e = num(epochs), l = num(lr);
  if (e !== undefined && !(typeof e === 'number' && Number.isInteger(e) && e > 0 && e <= 1000)) {
    throw new HttpError(400, `epochs must be an integer in [1, 1000], got ${JSON.stringify(epochs)}`);
  }
  if (l !== undefined && !(typeof l === 'number' && l > 0 && l < 1)) {
    throw new HttpError(400, `lr must be a number in (0, 1), got ${JSON.stringify(lr)}`);
  }
  return { epochs: e as number | undefined, lr: l as number | undefined };
}

/**
 * A background fine-tune with hot swap, as a route for `createService`. Every 5th image of the
 * folder validates (the served weights before, the copy after); the rest trains, with AdamW and
 * cross-entropy. One fine-tune at a time (409 while one runs or uploads). The folder is named in
 * a JSON body, or uploaded as a tar (unpacked into a temporary folder, removed when the fine-tune ends).
 *
 * @example
 * const ft = torch.serving.finetuneRoute(predictor, { model: 'model.pt', transform, labels });
 * const server = torch.serving.createService(predictor, { transform, labels,
 *   routes: { 'POST /finetune': ft.handler }, status: () => ({ finetune: ft.status() }) });
 * // then: curl -X POST --data-binary @photos.tar -H 'Content-Type: application/x-tar' 'http://host:8080/finetune?epochs=3'
 */
export function finetuneRoute(predictor: Predictor, options: FinetuneRouteOptions): FinetuneRoute {
  let status: FinetuneStatus = { state: 'idle' };
  let job: Promise<FinetuneStatus> = Promise.resolve(status);
  let base: ScriptModule | undefined;    // the weights the predictor serves, to train from
  let current: ScriptModule | undefined; // the copy being trained

  const meta = predictor.metadata;
  const transform = options.transform ?? (meta?.transform && fromJSON(meta.transform)) ?? imagenet({ train: false, size: 224 });
  const labels = options.labels ?? meta?.classes;
  const run = async (mine: FinetuneStatus, dir: string, epochs: number, lr: number): Promise<void> => {
    base ??= typeof options.model === 'string' ? await load(options.model) : options.model;
    const copy = await load(await base.serialize());
    current = copy;
    const trainSet = new ImageFolder(dir, { transform: options.trainTransform ?? transform });
    const evalSet = new ImageFolder(dir, { transform });
    if (labels && trainSet.classes.join('\n') !== labels.join('\n')) {
      throw new HttpError(400, `'${dir}' has classes ${trainSet.classes.join(', ')}, the service serves ${labels.join(', ')}`);
    }
    const all = Array.from({ length: trainSet.length }, (_, i) => i);
    const val = new DataLoader(new Subset(evalSet, all.filter((i) => i % 5 === 0)), { batchSize: 32 });
    const trainLoader = new DataLoader(new Subset(trainSet, all.filter((i) => i % 5 !== 0)), { batchSize: options.batchSize ?? 16, shuffle: true, seed: 0 });
    mine.before = (await evaluate(copy, val)).accuracy;
    await fit(copy, {
      train: trainLoader, epochs, optimizer: new AdamW(copy.parameters(), { lr }), loss: new CrossEntropyLoss(), progress: false,
      callbacks: { onEpochEnd: (r) => { mine.epoch = r.epoch; } },
    });
    mine.after = (await evaluate(copy, val)).accuracy;
    mine.swapped = mine.after > mine.before;
    if (mine.swapped) {
      await predictor.update(copy);
      if (base !== options.model) base.dispose();
      base = copy;
      await options.onSwap?.(copy);
    } else {
      copy.dispose();
    }
  };

  let receiving = false;
  const handler: RouteHandler = async (req: http.IncomingMessage) => {
    if (status.state === 'training' || receiving) throw new HttpError(409, 'a fine-tune is running already');
    const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
    let dir: string;
    let numbers: { epochs?: number; lr?: number };
    let upload: string | undefined;
    if (ARCHIVE_TYPES.has(type)) {
      const query = new URL(req.url ?? '/', 'http://localhost').searchParams;
      numbers = jobNumbers(query.get('epochs') ?? undefined, query.get('lr') ?? undefined);
      receiving = true;
      try {
        ({ tmp: upload, dir } = await receiveArchive(req, options.maxUploadBytes ?? 2 ** 30));
      } finally {
        receiving = false;
      }
    } else {
      let body: { dir?: unknown; epochs?: unknown; lr?: unknown };
      try {
        body = JSON.parse((await readBody(req, 1 << 16)).toString('utf8')) as typeof body;
      } catch {
        throw new HttpError(400, JSON_USAGE);
      }
      if (body === null || typeof body !== 'object') throw new HttpError(400, JSON_USAGE);
      if (typeof body.dir !== 'string' || !fs.existsSync(body.dir) || !fs.statSync(body.dir).isDirectory()) {
        throw new HttpError(400, `no such folder: ${String(body.dir)}`);
      }
      numbers = jobNumbers(body.epochs, body.lr);
      dir = body.dir;
    }
    const mine: FinetuneStatus = { state: 'training', epoch: 0 };
    status = mine;
    job = run(mine, dir, numbers.epochs ?? options.epochs ?? 3, numbers.lr ?? options.lr ?? 1e-3).then(
      () => { mine.state = 'done'; return mine; },
      (err: Error) => {
        mine.state = 'failed';
        mine.error = err.message;
        if (current !== base) current?.dispose();
        return mine;
      },
    ).finally(() => (upload ? fs.promises.rm(upload, { recursive: true, force: true }) : undefined));
    return { status: 202, body: { finetune: mine } };
  };

  return { handler, status: () => status, job: () => job };
}
