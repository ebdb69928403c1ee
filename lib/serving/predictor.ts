/**
 * `torch.serving.Predictor`: answers predictions from its own copy of a model, on an executor
 * thread of its own, so a request never queues behind the training steps that the process's main
 * executor runs in order. Concurrent requests of the same shape are batched (dynamic batching).
 */
import { performance } from 'perf_hooks';
import { promises as fsp } from 'fs';
import * as check from '../check';
import { codedError, type FinetorchError } from '../errors';
import { native, type DType, type NativePredictor, type PredictorParam, type PredictorRow } from '../native';
import { Tensor, type TensorData } from '../tensor';
import { queuedOnExecutor, tensor as makeTensor } from '../creation';
import { checkArchive } from '../jit/archive';
import { checkContents } from '../jit/load';
import { readMetadata, type ModelMetadata } from '../jit/metadata';
import { ScriptModule } from '../jit/module';

/** Options of `Predictor.load`. */
export interface PredictorOptions {
  /** Where the predictor's copy of the model lives and runs: 'cpu' (default), 'cuda', 'cuda:N'. */
  device?: string;
  /**
   * Intra-op threads of the predictor's own thread (default 1). Under OpenMP, libtorch's CPU
   * backend on Debian and in pip's wheels, the count is per calling thread, so this limits the
   * predictor only; `torch.setNumThreads` sets the training executor's.
   */
  threads?: number;
  /** The most concurrent requests run as one batch (default 8; 1 turns batching off). */
  maxBatch?: number;
  /**
   * How long a request that finds the predictor idle waits for company before its batch runs, in
   * ms (default 2). While a batch runs, new requests gather (up to `maxBatch`) until it ends, as
   * Triton's dynamic batcher does: they would wait behind it anyway, and go as one batch.
   */
  maxDelayMs?: number;
  /**
   * Serve an inference-optimized copy (default false): `torch.jit.optimize_for_inference(
   * torch.jit.freeze(model))`. Weights become constants, BatchNorm folds into the convolution
   * before it, and on CPU convolutions run on oneDNN with prepacked weights: a resnet18 image at
   * 2 threads took 0.7-0.8x the time here (about 0.9x at 1 thread; batches gain less). Outputs equal
   * the model's within float rounding (folding changes the last bits). Each `update()` makes the
   * copy again, on the predictor's thread (resnet18: 0.1-0.3 s, during which requests wait). A model
   * that cannot be frozen is served as it is, with a warning (`optimized` says which).
   */
  optimize?: boolean;
}

/** One class of `classify`'s answer, most probable first. */
export interface Classification {
  /** `labels[index]`: the given labels, else the model's recorded class names, else the index as a string. */
  label: string;
  index: number;
  /** The softmax probability of the class. */
  probability: number;
}

/** What `stats()` reports since the predictor was loaded. */
export interface PredictorStats {
  /** Requests answered (successfully or with an Error). */
  requests: number;
  /** Requests answered with an Error. */
  errors: number;
  /** Batches run. */
  batches: number;
  /** requests / batches. */
  meanBatchSize: number;
  /** Latency from the call to its answer, in ms, over the last 1024 requests. */
  latencyMs: { p50: number; p99: number };
}

/**
 * One example: a Tensor without the batch dimension, or its elements and shape. A tensor made by
 * `torch.tensor(data)` on the CPU, or returned by an awaited op, is read at once; one made by a
 * factory (`torch.randn`, `zeros`, ...) or copied to a GPU by `torch.tensor` is made by a task on
 * the training executor, which the request then waits for.
 */
export type PredictorInput = Tensor | { data: ArrayLike<number>; shape: number[] };

/**
 * A predict() result. Its values were copied out on the predictor's thread, so `data()`,
 * `item()` and `tolist()` answer without a task on the training executor.
 */
class Prediction extends Tensor {
  /** @internal */
  constructor(row: { tensor: Tensor['handle']; data?: Float32Array | Float64Array }) {
    super(row.tensor);
    this.values = row.data;
  }

  private readonly values?: Float32Array | Float64Array;

  override data(): Promise<TensorData> {
    if (this.values === undefined || this.disposed) return super.data();
    return Promise.resolve(this.values.slice());
  }

  override async item(): Promise<number | boolean> {
    if (this.values === undefined || this.disposed || this.numel !== 1) return super.item();
    return this.values[0];
  }
}

interface Request {
  input: Tensor;
  owned: boolean;  // made here from { data, shape }: disposed once its batch has run
  topk: number;
  started: number;
  resolve: (row: PredictorRow) => void;
  reject: (err: Error) => void;
}

interface Queue {
  requests: Request[];
  timer: NodeJS.Timeout | undefined;
}

const LATENCY_WINDOW = 1024;

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

async function readModelFile(source: string | Buffer, what: string): Promise<{ bytes: Buffer; code: [string, string][]; metadata?: ModelMetadata }> {
  let bytes: Buffer;
  if (typeof source === 'string') {
    bytes = await fsp.readFile(source).catch((e: NodeJS.ErrnoException) => {
      throw codedError('FINETORCH_BAD_MODEL_FILE', e.code === 'ENOENT' ? `${what}: no such file '${source}'` : `${what}: cannot read '${source}': ${e.message}`);
    });
  } else {
    bytes = source;
  }
  const name = typeof source === 'string' ? source : 'buffer';
  const entries = checkArchive(bytes, name);
  return { bytes, code: checkContents(bytes, entries, name), metadata: readMetadata(bytes, entries, name) };
}

/** An Error that names the predictor's operation and keeps the cause's code (errno codes too). */
function wrapped(err: unknown, message: string): FinetorchError {
  const e = Object.assign(new Error(message, { cause: err }) as FinetorchError, { code: (err as FinetorchError).code ?? 'FINETORCH_NATIVE' });
  return e;
}

function rethrow(err: unknown, what: string): never {
  const e = err as FinetorchError;
  throw wrapped(err, `${what}: ${e.detail ?? e.message}`);
}

/**
 * Serves a TorchScript model while the same process trains: the predictor holds its own copy of
 * the weights in eval mode, runs under inference mode on a thread of its own (never behind the
 * training executor's queue), batches concurrent same-shape requests, and takes new weights with
 * `update()` without stopping.
 *
 * @example
 * const predictor = await torch.serving.Predictor.load('model.pt', { threads: 1, maxBatch: 16, maxDelayMs: 2 });
 * const logits = await predictor.predict(image);          // image: Tensor [3, 224, 224]
 * const top = await predictor.classify(image, { topk: 3, labels: ['cat', 'dog', 'fox'] });
 * await predictor.update(model);                          // after (or during) train.fit(model, ...)
 * console.log(predictor.stats());
 * await predictor.close();
 */
export class Predictor {
  private readonly queues = new Map<string, Queue>();
  private readonly inFlight = new Set<Promise<unknown>>();
  private readonly latencies: number[] = [];
  private counts = { requests: 0, errors: 0, batches: 0, batched: 0 };
  /** Batches handed to the predictor's thread and not answered yet. */
  private running = 0;
  private closed = false;

  private constructor(
    private readonly handle: NativePredictor,
    private readonly params: PredictorParam[],
    /** Where the predictor's copy of the model runs. */
    readonly device: string,
    /** The dtype inputs must have: the model's floating-point parameters' (float32 for most). */
    readonly dtype: DType,
    private readonly maxBatch: number,
    private readonly maxDelayMs: number,
    /**
     * The metadata recorded in the served model's file (`finetorch.json`: class names, eval
     * transform, task...), as `torch.jit.load` gives it; the loaded ScriptModule's `metadata` when
     * loaded from one; undefined when there is none. `update()` swaps weights, not this.
     */
    readonly metadata: ModelMetadata | undefined,
    private readonly optimize: boolean,
  ) {}

  /**
   * Whether the served model is the inference-optimized copy (`optimize: true` and the model
   * could be frozen).
   */
  get optimized(): boolean {
    return this.optimize && !this.closed && this.handle.notOptimized() === '';
  }

  /**
   * Loads a model to serve: a TorchScript file (path or Buffer), read on the predictor's own
   * thread, or a `ScriptModule`, cloned with its weights as a task on the training executor (so
   * between the steps of a `fit` that trains it).
   *
   * @example
   * const p = await torch.serving.Predictor.load(model, { device: 'cpu', threads: 1, maxBatch: 16 });
   */
  static async load(source: string | Buffer | ScriptModule, options: PredictorOptions = {}): Promise<Predictor> {
    if (options === null || typeof options !== 'object') throw new TypeError('Predictor.load: options must be an object');
    const device = check.device(options.device ?? 'cpu', 'Predictor.load: device');
    const threads = check.integer(options.threads ?? 1, 'Predictor.load: threads', 1, 1024);
    const maxBatch = check.integer(options.maxBatch ?? 8, 'Predictor.load: maxBatch', 1, 4096);
    const maxDelayMs = options.maxDelayMs ?? 2;
    if (typeof maxDelayMs !== 'number' || !(maxDelayMs >= 0) || !Number.isFinite(maxDelayMs)) {
      throw new TypeError(`Predictor.load: maxDelayMs must be a number >= 0: got ${check.describe(maxDelayMs)}`);
    }
    if (!(source instanceof ScriptModule) && typeof source !== 'string' && !Buffer.isBuffer(source)) {
      throw new TypeError(`Predictor.load: expected a file path, a Buffer or a ScriptModule: got ${check.describe(source)}`);
    }
    if (source instanceof ScriptModule && source.disposed) throw codedError('FINETORCH_DISPOSED', 'Predictor.load: the model was disposed');
    const file = source instanceof ScriptModule ? undefined : await readModelFile(source, 'Predictor.load');
    if (options.optimize !== undefined && typeof options.optimize !== 'boolean') {
      throw new TypeError(`Predictor.load: optimize must be a boolean: got ${check.describe(options.optimize)}`);
    }
    const optimize = options.optimize ?? false;
    const handle = new native.Predictor(device, threads, optimize);
    let params: PredictorParam[];
    try {
      params = file ? await handle.load(file.bytes, file.code) : await handle.adopt((source as ScriptModule).handle);
    } catch (err) {
      handle.close();
      rethrow(err, 'Predictor.load');
    }
    const dtype = params.find((p) => check.isFloating(p.dtype))?.dtype ?? 'float32';
    const metadata = file ? file.metadata : (source as ScriptModule).metadata;
    const why = handle.notOptimized();
    if (why) process.emitWarning(`Predictor.load: serving the model as it is: it could not be frozen for optimize (${why})`, { code: 'FINETORCH_NOT_OPTIMIZED' });
    return new Predictor(handle, params, device, dtype, maxBatch, maxDelayMs, metadata, optimize);
  }

  /**
   * The model's output for one example (no batch dimension): a Tensor, the example's row of the
   * batched forward. Runs batched with other requests of the same shape made meanwhile.
   *
   * @example
   * const logits = await predictor.predict({ data: pixels, shape: [3, 224, 224] });
   * console.log(await logits.data());
   */
  async predict(input: PredictorInput): Promise<Tensor> {
    const row = await this.submit(input, 0, 'predict');
    if (!('tensor' in row)) throw new Error('predict: internal error: expected a tensor row');
    return new Prediction(row);
  }

  /**
   * The `topk` most probable classes of one example (softmax over the model's output), computed
   * on the predictor's thread: `[{ label, index, probability }]`, most probable first. Labels are
   * `labels` when given, else the class names the model file records (`metadata.classes`).
   *
   * @example
   * const [best] = await predictor.classify(image, { topk: 1, labels: ['cat', 'dog'] });
   * console.log(`${best.label}: ${(best.probability * 100).toFixed(1)}%`);
   */
  async classify(input: PredictorInput, options: { topk?: number; labels?: readonly string[] } = {}): Promise<Classification[]> {
    if (options === null || typeof options !== 'object') throw new TypeError('classify: options must be an object');
    const topk = check.integer(options.topk ?? 5, 'classify: topk', 1);
    if (options.labels !== undefined && (!Array.isArray(options.labels) || options.labels.some((l) => typeof l !== 'string'))) {
      throw new TypeError('classify: labels must be an array of strings');
    }
    const labels = options.labels ?? this.metadata?.classes;
    const from = options.labels ? 'labels were given' : 'class names are recorded in the model file';
    const row = await this.submit(input, topk, 'classify');
    if (!('indices' in row)) throw new Error('classify: internal error: expected top-k');
    if (labels && row.indices.some((i) => i >= labels.length)) {
      throw codedError('FINETORCH_INDEX', `classify: the model scored class ${Math.max(...row.indices)} but only ${labels.length} ${from}`);
    }
    return row.indices.slice(0, topk).map((index, j) => ({
      label: labels ? labels[index] : String(index),
      index,
      probability: row.probabilities[j],
    }));
  }

  /**
   * Hot swap: copies the weights of `source` (a ScriptModule of the same architecture, or a
   * TorchScript file) into the served model. Names, shapes and dtypes are checked first; a refused
   * update is an Error and the predictor keeps serving the old weights. Requests made before the
   * call finish on the old weights. With a ScriptModule, the copy is a task on the training
   * executor, so it is safe while `fit` trains that model: it is taken between steps.
   *
   * @example
   * const fitting = torch.train.fit(model, { train, epochs: 3, optimizer, loss });
   * setInterval(() => predictor.update(model).catch(console.error), 60_000);  // fresher weights while it trains
   */
  async update(source: ScriptModule | string | Buffer): Promise<void> {
    this.open('update');
    if (source instanceof ScriptModule) {
      if (source.disposed) throw codedError('FINETORCH_DISPOSED', 'Predictor.update: the model was disposed');
    } else if (typeof source !== 'string' && !Buffer.isBuffer(source)) {
      throw new TypeError(`Predictor.update: expected a ScriptModule, a file path or a Buffer: got ${check.describe(source)}`);
    }
    // Requests made before the update run before the copy, which the executor queues after them.
    for (const key of [...this.queues.keys()]) this.flush(key);
    try {
      if (source instanceof ScriptModule) {
        await this.track(this.handle.copyWeights(source.handle));
      } else {
        const file = await readModelFile(source, 'Predictor.update');
        this.open('update');
        await this.track(this.handle.updateFromBytes(file.bytes, file.code));
      }
    } catch (err) {
      rethrow(err, 'Predictor.update');
    }
  }

  /** Counts and latency percentiles since the predictor was loaded. */
  stats(): PredictorStats {
    const sorted = [...this.latencies].sort((a, b) => a - b);
    return {
      requests: this.counts.requests,
      errors: this.counts.errors,
      batches: this.counts.batches,
      meanBatchSize: this.counts.batches ? this.counts.batched / this.counts.batches : 0,
      latencyMs: { p50: percentile(sorted, 50), p99: percentile(sorted, 99) },
    };
  }

  /** The names, shapes and dtypes of the served model's parameters. */
  get parameters(): { name: string; shape: number[]; dtype: DType }[] {
    return this.params.map((p) => ({ name: p.name, shape: [...p.shape], dtype: p.dtype }));
  }

  /** True once `close()` has been called. */
  get isClosed(): boolean { return this.closed; }

  /**
   * Answers the requests already made, then stops the predictor's thread and frees its model.
   * Later calls are Errors; a second close() does nothing.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const key of [...this.queues.keys()]) this.flush(key);
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
    this.handle.close();
  }

  private open(what: string): void {
    if (this.closed) throw codedError('FINETORCH_DISPOSED', `${what}: the predictor is closed`);
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.inFlight.add(p);
    const done = () => { this.inFlight.delete(p); };
    p.then(done, done);
    return p;
  }

  private toInput(input: PredictorInput, what: string): { t: Tensor; owned: boolean } {
    if (input instanceof Tensor) {
      if (input.disposed) throw codedError('FINETORCH_DISPOSED', `${what}: the input tensor was disposed`);
      if (input.dtype !== this.dtype) {
        throw codedError('FINETORCH_DTYPE', `${what}: the input is ${input.dtype} but the model takes ${this.dtype}`);
      }
      return { t: input, owned: false };
    }
    if (input === null || typeof input !== 'object' || !('data' in input) || !('shape' in input)) {
      throw new TypeError(`${what}: the input must be a Tensor or { data, shape }: got ${check.describe(input)}`);
    }
    const shape = check.shape(input.shape, `${what}: shape`);
    const data = input.data;
    if (data === null || typeof data !== 'object' || typeof (data as ArrayLike<number>).length !== 'number') {
      throw new TypeError(`${what}: data must be an array or a TypedArray of numbers`);
    }
    const n = shape.reduce((a, b) => a * b, 1);
    if (data.length !== n) {
      throw codedError('FINETORCH_SHAPE', `${what}: data has ${data.length} elements but shape [${shape.join(', ')}] needs ${n}`);
    }
    const values = data instanceof Float32Array || data instanceof Float64Array ? data : Float32Array.from(data);
    return { t: makeTensor(values, { shape, dtype: this.dtype }), owned: true };
  }

  private async submit(input: PredictorInput, topk: number, what: string): Promise<PredictorRow> {
    const started = performance.now();
    this.open(what);
    const { t, owned } = this.toInput(input, what);
    if (queuedOnExecutor.has(t)) {
      // Its values are made by a task on the training executor: only once that has run may the
      // predictor's thread read them (tensors from torch.tensor() on the CPU never wait here).
      await t.data();
      queuedOnExecutor.delete(t);
      this.open(what);
    }
    return new Promise<PredictorRow>((resolve, reject) => {
      const key = `${topk > 0 ? 'c' : 'p'}|${t.dtype}|${t.device}|${t.shape.join(',')}`;
      let q = this.queues.get(key);
      if (!q) {
        q = { requests: [], timer: undefined };
        this.queues.set(key, q);
      }
      q.requests.push({ input: t, owned, topk, started, resolve, reject });
      if (q.requests.length >= this.maxBatch) this.flush(key);
      else if (this.running === 0 && q.timer === undefined) q.timer = setTimeout(() => this.flush(key), this.maxDelayMs);
      // Otherwise the request waits for the running batch to end (see flush).
    });
  }

  private flush(key: string): void {
    const q = this.queues.get(key);
    if (!q) return;
    this.queues.delete(key);
    if (q.timer !== undefined) clearTimeout(q.timer);
    const batch = q.requests;
    const topk = Math.max(...batch.map((r) => r.topk));
    this.counts.batches++;
    this.counts.batched += batch.length;
    let run: Promise<PredictorRow[]>;
    try {
      run = this.handle.run(batch.map((r) => r.input.handle), topk);
    } catch (err) {
      run = Promise.reject(err);
    }
    const shape = batch[0].input.shape;
    this.running++;
    const ended = () => {
      // What gathered while this batch ran goes now, as one batch per input shape.
      if (--this.running === 0) for (const k of [...this.queues.keys()]) this.flush(k);
    };
    run.then(ended, ended);
    this.track(run).then(
      (rows) => {
        batch.forEach((r, i) => this.answer(r, () => r.resolve(rows[i]), false));
      },
      (err: FinetorchError) => {
        const e = wrapped(err,
          `${topk > 0 ? 'classify' : 'predict'}: the model refused an input of shape [${shape.join(', ')}] (${batch[0].input.dtype}): ${err.detail ?? err.message}`);
        batch.forEach((r) => this.answer(r, () => r.reject(e), true));
      },
    );
  }

  private answer(r: Request, settle: () => void, failed: boolean): void {
    if (r.owned) r.input.dispose();
    this.counts.requests++;
    if (failed) this.counts.errors++;
    this.latencies.push(performance.now() - r.started);
    if (this.latencies.length > LATENCY_WINDOW) this.latencies.shift();
    settle();
  }
}
