/**
 * An image classification service on Node's own http, answering from a torch.serving.Predictor
 * (its own thread and weights, so answers keep coming while the same process trains). The
 * /predict and /status routes are `torch.serving.createService`'s (also `finetorch serve`); this
 * program adds a background fine-tune with hot swap.
 *
 *   POST /predict   body: a JPEG/PNG/WebP image   -> { top: [{ label, index, probability }] }
 *   POST /finetune  body: { "dir": "photos", "epochs": 3, "lr": 0.001 }, an ImageFolder with the served classes,
 *                   or a tar of one (Content-Type: application/x-tar; ?epochs=3&lr=0.001)
 *                   -> 202; fine-tunes a copy in the background and hot-swaps the predictor to it
 *                   when its validation accuracy (every 5th image) beats the served weights'
 *   GET  /status                                  -> { predictor: stats(), finetune, uptimeS }
 *
 * Run:
 *   node dist-examples/service.js model.pt classes.json 8080
 *   curl --data-binary @cat.jpg http://127.0.0.1:8080/predict
 */
import * as fs from 'fs';
import type { AddressInfo } from 'net';
import * as torch from 'finetorch';
import { transforms } from 'finetorch';

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
  /** The largest accepted image upload, in bytes (default 10 MiB). */
  maxBytes?: number;
  /** The largest tar of an ImageFolder accepted by POST /finetune, in bytes (default 1 GiB). */
  maxUploadBytes?: number;
}

/** Where the latest fine-tune stands (GET /status shows it). */
export type FinetuneStatus = torch.serving.FinetuneStatus;

export interface Service {
  url: string;
  predictor: torch.serving.Predictor;
  /** The fine-tune now running (or the last one), for a caller that wants to await it. */
  finetuning(): Promise<FinetuneStatus>;
  close(): Promise<void>;
}

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
  // A copy of the served model trains on the training executor; the predictor keeps answering
  // from its own thread, and takes the copy's weights only if they validate better.
  const finetune = torch.serving.finetuneRoute(predictor, { model: options.model, transform, trainTransform, labels, maxUploadBytes: options.maxUploadBytes });
  const server = torch.serving.createService(predictor, {
    transform, labels, topk: options.topk, maxBytes: options.maxBytes,
    routes: { 'POST /finetune': finetune.handler },
    status: () => ({ finetune: finetune.status() }),
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.host ?? '127.0.0.1', () => resolve());
  });
  const { address, port } = server.address() as AddressInfo;
  return {
    url: `http://${address}:${port}`,
    predictor,
    finetuning: () => finetune.job(),
    close: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await finetune.job();
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
