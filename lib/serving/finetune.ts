/**
 * `POST /finetune` for a prediction service: fine-tunes a copy of the served model on an
 * ImageFolder in the background (on the training executor, while the Predictor keeps answering
 * from its own thread) and hot-swaps the Predictor to it when the copy validates better. Used by
 * `finetorch serve` and examples/service.ts.
 */
import * as fs from 'fs';
import type * as http from 'http';
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
  /** Defaults of a request that names none: epochs 3, lr 1e-3, batch size 16. */
  epochs?: number;
  lr?: number;
  batchSize?: number;
}

/** What `finetuneRoute` gives a service: the route, its status for GET /status, and the running job. */
export interface FinetuneRoute {
  /** The `'POST /finetune'` handler: body `{ "dir": "path/to/ImageFolder", "epochs": 3, "lr": 0.001 }`, answers 202. */
  handler: RouteHandler;
  status(): FinetuneStatus;
  /** The fine-tune now running (or the last one). */
  job(): Promise<FinetuneStatus>;
}

/**
 * A background fine-tune with hot swap, as a route for `createService`. Every 5th image of the
 * folder validates (the served weights before, the copy after); the rest trains, with AdamW and
 * cross-entropy. One fine-tune at a time (409 while one runs).
 *
 * @example
 * const ft = torch.serving.finetuneRoute(predictor, { model: 'model.pt', transform, labels });
 * const server = torch.serving.createService(predictor, { transform, labels,
 *   routes: { 'POST /finetune': ft.handler }, status: () => ({ finetune: ft.status() }) });
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

  const handler: RouteHandler = async (req: http.IncomingMessage) => {
    if (status.state === 'training') throw new HttpError(409, 'a fine-tune is running already');
    let body: { dir?: unknown; epochs?: unknown; lr?: unknown };
    try {
      body = JSON.parse((await readBody(req, 1 << 16)).toString('utf8')) as typeof body;
    } catch {
      throw new HttpError(400, 'POST { "dir": "path/to/ImageFolder", "epochs": 3, "lr": 0.001 } as JSON');
    }
    if (typeof body.dir !== 'string' || !fs.existsSync(body.dir) || !fs.statSync(body.dir).isDirectory()) {
      throw new HttpError(400, `no such folder: ${String(body.dir)}`);
    }
    if (body.epochs !== undefined && !(typeof body.epochs === 'number' && Number.isInteger(body.epochs) && body.epochs > 0 && body.epochs <= 1000)) {
      throw new HttpError(400, `epochs must be an integer in [1, 1000], got ${JSON.stringify(body.epochs)}`);
    }
    if (body.lr !== undefined && !(typeof body.lr === 'number' && body.lr > 0 && body.lr < 1)) {
      throw new HttpError(400, `lr must be a number in (0, 1), got ${JSON.stringify(body.lr)}`);
    }
    const mine: FinetuneStatus = { state: 'training', epoch: 0 };
    status = mine;
    job = run(mine, body.dir, (body.epochs as number | undefined) ?? options.epochs ?? 3, (body.lr as number | undefined) ?? options.lr ?? 1e-3).then(
      () => { mine.state = 'done'; return mine; },
      (err: Error) => {
        mine.state = 'failed';
        mine.error = err.message;
        if (current !== base) current?.dispose();
        return mine;
      },
    );
    return { status: 202, body: { finetune: mine } };
  };

  return { handler, status: () => status, job: () => job };
}
