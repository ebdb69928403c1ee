/**
 * `finetorch serve model.pt --port 8080`: the HTTP service of `torch.serving.createService`, with
 * `torch.serving.finetuneRoute`'s POST /finetune (a background fine-tune and hot swap).
 */
import * as fs from 'fs';
import * as path from 'path';
import type { AddressInfo } from 'net';
import { Predictor } from '../serving/predictor';
import { createService } from '../serving/http';
import { finetuneRoute } from '../serving/finetune';
import { setTrainingPriority } from '../runtime';
import { imagenet } from '../transforms';
import { classesBeside, headOutputs, loadModel, parseNumber, requireFile, UsageError, warnLine } from './common';

/** The options of `finetorch serve`, as commander gives them. */
export interface ServeFlags {
  port?: string;
  host?: string;
  labels?: string;
  maxBatch?: string;
  maxDelayMs?: string;
  threads?: string;
  topk?: string;
  size?: string;
  out?: string;
  trainingNice?: string;
  optimize?: boolean;
}

/** Class names from a JSON file: an array of strings, or `{ classes: [...] }` as finetune's classes.json. */
function readLabels(file: string): string[] {
  const st = fs.statSync(file, { throwIfNoEntry: false });
  if (!st || st.isDirectory()) throw new UsageError(`--labels '${file}' ${st ? 'is a folder' : 'does not exist'}; expected a JSON array of class names`);
  let v: unknown;
  try {
    v = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new UsageError(`--labels '${file}' is not JSON: ${(e as Error).message}`);
  }
  const list = Array.isArray(v) ? v : (v as { classes?: unknown } | null)?.classes;
  if (!Array.isArray(list) || list.length === 0 || list.some((c) => typeof c !== 'string')) {
    throw new UsageError(`--labels '${file}' must hold a non-empty JSON array of class names (strings)`);
  }
  return list as string[];
}

/** --out: a file path in an existing folder, not the served model itself. */
function checkOut(out: string, model: string): string {
  if (path.resolve(out) === path.resolve(model)) throw new UsageError(`--out '${out}' is the served model file: fine-tunes never overwrite it; name another file`);
  const st = fs.statSync(out, { throwIfNoEntry: false });
  if (st?.isDirectory()) throw new UsageError(`--out '${out}' is a folder: name the file to save the fine-tuned model to`);
  const dir = path.dirname(path.resolve(out));
  if (!fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory()) throw new UsageError(`--out '${out}': the folder '${dir}' does not exist`);
  return out;
}

/**
 * Serves `file` until SIGINT or SIGTERM: every flag is checked before the model loads; the model
 * is loaded in an isolated child first, like every model the CLI is given. Prints the URL (with the
 * port chosen when --port is 0) on stdout once it listens.
 */
export async function serve(file: string, o: ServeFlags): Promise<void> {
  const port = parseNumber(o.port ?? '8080', '--port', true, { atLeast: 0 });
  if (port > 65535) throw new UsageError(`--port must be at most 65535: got '${o.port}'`);
  const host = o.host ?? '127.0.0.1';
  if (host.trim() === '') throw new UsageError('--host must not be empty');
  const maxBatch = parseNumber(o.maxBatch ?? '8', '--max-batch', true, { atLeast: 1 });
  const maxDelayMs = parseNumber(o.maxDelayMs ?? '2', '--max-delay-ms', false, { atLeast: 0 });
  const threads = parseNumber(o.threads ?? '1', '--threads', true, { atLeast: 1 });
  if (threads > 1024) throw new UsageError(`--threads must be at most 1024: got '${o.threads}'`);
  const topk = parseNumber(o.topk ?? '5', '--topk', true, { atLeast: 1 });
  const size = o.size === undefined ? undefined : parseNumber(o.size, '--size', true, { atLeast: 8 });
  const given = o.labels === undefined ? undefined : readLabels(o.labels);
  requireFile(file, 'model');
  const out = o.out === undefined ? undefined : checkOut(o.out, file);
  const trainingNice = parseNumber(o.trainingNice ?? '10', '--training-nice', true, { atLeast: 0 });
  if (trainingNice > 19) throw new UsageError(`--training-nice must be at most 19: got '${o.trainingNice}'`);

  const model = await loadModel(file, 'cpu');
  let predictor: Predictor;
  let labels: string[] | undefined;
  try {
    const recorded = model.metadata?.classes;
    const beside = given || recorded ? undefined : classesBeside(file);
    labels = given ?? beside;
    const names = labels ?? recorded;
    const outputs = headOutputs(model);
    if (names && outputs !== undefined && names.length !== outputs) {
      const from = given ? `--labels '${o.labels}'` : beside ? 'classes.json beside the model' : `${file}'s metadata`;
      throw new UsageError(`${from} names ${names.length} classes but the model predicts ${outputs}`);
    }
    predictor = await Predictor.load(model, { threads, maxBatch, maxDelayMs, optimize: o.optimize ?? false }).catch((e: Error) => { throw new UsageError(e.message); });
  } finally {
    model.dispose();
  }
  // Requests first: a fine-tune's threads yield the CPU to the predictor's (and to HTTP's).
  await setTrainingPriority(trainingNice);
  const transform = size === undefined ? undefined : imagenet({ train: false, size });
  // The user's model file is never written: a swapped-in fine-tune is saved to --out, if given.
  const finetune = finetuneRoute(predictor, {
    model: file, transform, labels,
    onSwap: out === undefined ? undefined : async (m) => { await m.save(out); console.log(`fine-tuned weights saved to ${out}`); },
  });
  const server = createService(predictor, {
    transform, labels, topk, warn: warnLine,
    routes: { 'POST /finetune': finetune.handler },
    status: () => ({ finetune: finetune.status() }),
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => { server.off('error', reject); resolve(); });
    });
  } catch (e) {
    await predictor.close();
    throw new UsageError(`cannot listen on ${host}:${port}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const address = server.address() as AddressInfo;
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  console.log(`serving ${file} on http://${shown}:${address.port} (POST /predict with an image, POST /finetune { dir } or a tar, GET /status)`);

  // Answers the requests already made, then frees the predictor; the process then has nothing left to wait for.
  await new Promise<void>((resolve) => {
    const stop = () => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      server.close(() => resolve());
      server.closeIdleConnections();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  await finetune.job();
  await predictor.close();
}
