/**
 * An image classification service on Node's own http, answering from a torch.serving.Predictor
 * (its own thread and weights, so answers keep coming while the same process trains). The
 * /predict and /status routes are `torch.serving.createService`'s (also `finetorch serve`); this
 * program adds a background fine-tune with hot swap.
 *
 *   POST /predict   body: a JPEG/PNG/WebP image   -> { top: [{ label, index, probability }] }
 *   POST /finetune  body: { "dir": "photos", "epochs": 3, "lr": 0.001 }, an ImageFolder with the served classes
 *                   -> 202; fine-tunes a copy in the background and hot-swaps the predictor to it
 *                   when its validation accuracy (every 5th image) beats the served weights'
 *   GET  /status                                  -> { predictor: stats(), finetune, uptimeS }
 *
 * Run:
 *   node dist-examples/service.js model.pt classes.json 8080
 *   curl --data-binary @cat.jpg http://127.0.0.1:8080/predict
 */
import * as fs from 'fs';
import * as http from 'http';
import type { AddressInfo } from 'net';
import * as torch from 'finetorch';
import { data, train, transforms } from 'finetorch';

export interface ServiceOptions {
  /** The model to serve: a TorchScript file or a loaded ScriptModule (cloned). */
  model: string | torch.jit.ScriptModule;
  /** Class names, by output index (default: the ones the model file records). */
  labels?: string[];
  /**
   * The model's input size (the eval transform resizes to size * 256 / 224, then center-crops);
   * default: the eval transform the model file records, else 224.
   */
  size?: number;
  topk?: number;
  /** 0 picks a free port. */
  port?: number;
  host?: string;
  predictor?: torch.serving.PredictorOptions;
  /** The largest accepted upload, in bytes (default 10 MiB). */
  maxBytes?: number;
}

/** Where the latest fine-tune stands (GET /status shows it). */
export interface FinetuneStatus {
  state: 'idle' | 'training' | 'done' | 'failed';
  epoch?: number;
  /** Validation accuracy of the served weights before, and of the fine-tuned copy after. */
  before?: number;
  after?: number;
  /** Whether the predictor now serves the fine-tuned weights. */
  swapped?: boolean;
  error?: string;
}

export interface Service {
  url: string;
  predictor: torch.serving.Predictor;
  /** The fine-tune now running (or the last one), for a caller that wants to await it. */
  finetuning(): Promise<FinetuneStatus>;
  close(): Promise<void>;
}

const { HttpError, readBody } = torch.serving;

/** Starts the service; resolves once it listens. */
export async function startService(options: ServiceOptions): Promise<Service> {
  const predictor = await torch.serving.Predictor.load(options.model, options.predictor ?? { threads: 1, maxBatch: 8, maxDelayMs: 2 });
  const recorded = predictor.metadata?.transform;
  const ours = options.size !== undefined || !recorded;
  const transform = ours ? transforms.imagenet({ train: false, size: options.size ?? 224 }) : transforms.fromJSON(recorded);
  // With the file's recorded eval transform, fine-tunes train on it too (no augmentation), so the
  // copy sees inputs like the ones it will serve.
  const trainTransform = ours ? transforms.imagenet({ train: true, size: options.size ?? 224 }) : transform;
  const labels = options.labels ?? predictor.metadata?.classes;
  let finetune: FinetuneStatus = { state: 'idle' };
  let job: Promise<FinetuneStatus> = Promise.resolve(finetune);
  let current: torch.jit.ScriptModule | undefined;  // the copy being trained
  let base: torch.jit.ScriptModule | undefined;     // the weights the predictor serves, to train from

  // A copy of the served model trains on the training executor; the predictor keeps answering
  // from its own thread, and takes the copy's weights only if they validate better.
  const runFinetune = async (dir: string, epochs: number, lr: number): Promise<FinetuneStatus> => {
    base ??= typeof options.model === 'string' ? await torch.jit.load(options.model) : options.model;
    const copy = await torch.jit.load(await base.serialize());
    current = copy;
    const trainSet = new data.ImageFolder(dir, { transform: trainTransform });
    const evalSet = new data.ImageFolder(dir, { transform });
    if (labels && trainSet.classes.join('\n') !== labels.join('\n')) {
      throw new HttpError(400, `'${dir}' has classes ${trainSet.classes.join(', ')}, the service serves ${labels.join(', ')}`);
    }
    const all = Array.from({ length: trainSet.length }, (_, i) => i);
    const valLoader = new data.DataLoader(new data.Subset(evalSet, all.filter((i) => i % 5 === 0)), { batchSize: 32 });
    const trainLoader = new data.DataLoader(new data.Subset(trainSet, all.filter((i) => i % 5 !== 0)), { batchSize: 16, shuffle: true, seed: 0 });
    finetune.before = (await train.evaluate(copy, valLoader)).accuracy;
    const optimizer = new torch.optim.AdamW(copy.parameters(), { lr });
    await train.fit(copy, {
      train: trainLoader, epochs, optimizer, loss: new torch.nn.CrossEntropyLoss(), progress: false,
      callbacks: { onEpochEnd: (r) => { finetune.epoch = r.epoch; } },
    });
    finetune.after = (await train.evaluate(copy, valLoader)).accuracy;
    finetune.swapped = finetune.after > finetune.before;
    if (finetune.swapped) {
      await predictor.update(copy);
      if (base !== options.model) base.dispose();
      base = copy;
    } else {
      copy.dispose();
    }
    return finetune;
  };

  const startFinetune = async (req: http.IncomingMessage) => {
    if (finetune.state === 'training') throw new HttpError(409, 'a fine-tune is running already');
    let body: { dir?: unknown; epochs?: unknown; lr?: unknown };
    try {
      body = JSON.parse((await readBody(req, 1 << 16)).toString('utf8')) as typeof body;
    } catch {
      throw new HttpError(400, 'POST { "dir": "path/to/ImageFolder", "epochs": 3 } as JSON');
    }
    if (typeof body.dir !== 'string' || !fs.existsSync(body.dir)) throw new HttpError(400, `no such folder: ${String(body.dir)}`);
    const epochs = typeof body.epochs === 'number' && Number.isInteger(body.epochs) && body.epochs > 0 ? body.epochs : 3;
    const lr = typeof body.lr === 'number' && body.lr > 0 && body.lr < 1 ? body.lr : 1e-3;
    finetune = { state: 'training', epoch: 0 };
    const mine = finetune;
    job = runFinetune(body.dir, epochs, lr).then(
      () => { mine.state = 'done'; return mine; },
      (err: Error) => {
        mine.state = 'failed';
        mine.error = err.message;
        if (current !== base) current?.dispose();
        return mine;
      },
    );
    return { status: 202, body: { finetune } };
  };

  const server = torch.serving.createService(predictor, {
    transform, labels, topk: options.topk, maxBytes: options.maxBytes,
    routes: { 'POST /finetune': startFinetune },
    status: () => ({ finetune }),
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => resolve());
  });
  const { address, port } = server.address() as AddressInfo;
  return {
    url: `http://${address}:${port}`,
    predictor,
    finetuning: () => job,
    close: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await job;
      await predictor.close();
    },
  };
}

if (require.main === module) {
  const [model, labelsFile, port] = process.argv.slice(2);
  if (!model) {
    console.error('usage: service.js model.pt [classes.json] [port]');
    process.exit(2);
  }
  const labels = labelsFile ? (JSON.parse(fs.readFileSync(labelsFile, 'utf8')) as string[]) : undefined;
  startService({ model, labels, port: port ? Number(port) : 8080 })
    .then((s) => console.log(`serving ${model} on ${s.url}`))
    .catch((e) => { console.error(e); process.exit(1); });
}
