/**
 * The one place that loads the compiled addon (through node-gyp-build: `build/Release` first, then
 * `prebuilds/`) and declares its typed surface. Nothing else in finetorch `require`s the `.node`.
 */
import * as path from 'path';
import type { GradMode } from './autograd';

/** A dtype name as finetorch and PyTorch spell it. */
export type DType =
  | 'float32' | 'float64' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'int16' | 'int8' | 'uint8' | 'bool';

/** The raw tensor handle. Metadata getters are synchronous; computation goes through `op`. */
export interface NativeTensor {
  readonly shape: number[];
  readonly dtype: DType;
  readonly device: string;
  requiresGrad: boolean;
  readonly numel: number;
  readonly nbytes: number;
  readonly disposed: boolean;
  dispose(): void;
  data(): Promise<Float32Array | Float64Array | Int32Array | Int16Array | Int8Array | Uint8Array | BigInt64Array>;
  item(): Promise<number | boolean>;
}

export type OpArg = number | boolean | string | number[] | null | undefined;

export interface BuildInfo {
  builtWith: string;
  runtime: string | null;
  cuda: string | null;
  cudaCompiled: boolean;
}

/** What the executor reports about a TorchScript module. */
export interface ModuleSnapshot {
  parameters: [string, NativeTensor][];
  buffers: [string, NativeTensor][];
  modules: { name: string; type: string; training: boolean }[];
  methods: { name: string; returns: string; args: { name: string; type: string; hasDefault: boolean }[] }[];
  traced: boolean;
}

/** The raw TorchScript module handle; every method is queued on the executor. */
export interface NativeModule {
  readonly disposed: boolean;
  snapshot(): Promise<ModuleSnapshot>;
  /** The TorchScript archive's bytes (written in memory; TypeScript writes the file), with extra files `{ name: text }`. */
  save(extraFiles?: Record<string, string>, merge?: boolean): Promise<Buffer>;
  runMethod(name: string, inputs: unknown[], grad?: GradMode): Promise<unknown>;
  setTraining(path: string, on: boolean, recursive: boolean): Promise<void>;
  to(device: string | null, dtype: string | null): Promise<void>;
  replaceHeadLayer(path: string, outFeatures: number): Promise<void>;
  channelsLast(): Promise<void>;
  dispose(): void;
}

/** A parameter of a model a Predictor serves, as the predictor loaded it. */
export interface PredictorParam { name: string; shape: number[]; dtype: DType }

/** One example's result from a predictor batch: its output row, or its softmax top-k. */
export type PredictorRow =
  | { tensor: NativeTensor; data?: Float32Array | Float64Array }
  | { probabilities: number[]; indices: number[] };

/** The raw serving predictor: an executor thread of its own and its own copy of the model. */
export interface NativePredictor {
  load(bytes: Buffer, code: [string, string][]): Promise<PredictorParam[]>;
  /** Clones `module` on the training executor (between its queued steps). */
  adopt(module: NativeModule): Promise<PredictorParam[]>;
  /** Copies `module`'s weights (taken on the training executor) into the served model. */
  copyWeights(module: NativeModule): Promise<void>;
  updateFromBytes(bytes: Buffer, code: [string, string][]): Promise<void>;
  run(inputs: NativeTensor[], topk: number): Promise<PredictorRow[]>;
  close(): void;
  /** Why the served model is not the optimized copy asked for ('' when it is, or none was asked for). */
  notOptimized(): string;
}

/** Per-group optimizer settings handed to the native optimizer. */
export interface NativeGroup {
  params: NativeTensor[];
  lr: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  amsgrad?: boolean;
  momentum?: number;
  dampening?: number;
  nesterov?: boolean;
}

/** The raw optimizer handle (creation and every call queued on the executor). */
export interface NativeOptimizer {
  readonly disposed: boolean;
  step(): Promise<void>;
  zeroGrad(): Promise<void>;
  setLr(group: number, lr: number): void;
  addParamGroup(group: NativeGroup): Promise<void>;
  stateDict(): Promise<Buffer>;
  loadStateDict(state: Buffer): Promise<void>;
  dispose(): void;
}

export interface TrainStepOptions {
  /** The built-in loss (lib/nn/losses.ts's LOSS_KIND; 0, cross-entropy, when absent). */
  lossKind?: number;
  reduction: number;
  ignoreIndex?: number;
  labelSmoothing?: number;
  /** SmoothL1's beta, Huber's delta. */
  lossParam?: number;
  posWeight?: NativeTensor | null;
  lossScale: number;
  clipNorm: number;
  step: boolean;
  zeroGrad: boolean;
  /** 0 none, 1 bf16, 2 fp16 (autocast; fp16 with loss scaling). */
  amp?: number;
  channelsLast?: boolean;
  /** Where the batch goes before the forward ('' keeps it where it is). */
  device?: string;
}

export interface Binding {
  Optimizer: new (kind: 'adamw' | 'sgd', groups: NativeGroup[]) => NativeOptimizer;
  trainStep(module: NativeModule, optimizer: NativeOptimizer | null, input: NativeTensor, target: NativeTensor,
      weight: NativeTensor | null, options: TrainStepOptions): Promise<{ loss: number; correct: number; total: number; gradNorm: number | null; skipped: boolean; scale: number }>;
  /** The update for gradients accumulated without a step (unscale, clip, step, zero-grad), as trainStep applies it. */
  applyStep(optimizer: NativeOptimizer, options: { clipNorm: number; amp: number }): Promise<{ gradNorm: number | null; skipped: boolean; scale: number }>;
  clipGradNorm(params: NativeTensor[], maxNorm: number, normType: number): Promise<number>;
  /** `forward` with grad on under autocast (amp 1 bf16, 2 fp16), inputs moved to `device`: fit's generic step with `amp`. */
  forwardAutocast(module: NativeModule, inputs: (NativeTensor | Record<string, NativeTensor>)[], options: { amp: number; device: string }): Promise<unknown>;
  /** Backward of `loss * factor`, times the optimizer's loss scale when amp is 2 (fp16). */
  scaledBackward(optimizer: NativeOptimizer, loss: NativeTensor, options: { factor: number; amp: number }): Promise<void>;
  ScriptModule: new (...args: never[]) => NativeModule;
  loadModule(source: string | Buffer, device: string, code?: [string, string][]): Promise<NativeModule>;
  Predictor: new (device: string, threads: number, optimize: boolean) => NativePredictor;
  Tensor: new (...args: never[]) => NativeTensor;
  fromData(data: ArrayBufferView, shape: number[], srcDtype: DType, dtype: DType, device: string, requiresGrad: boolean, pinMemory?: boolean): NativeTensor;
  factory(kind: string, shape: number[], dtype: DType, device: string, requiresGrad: boolean, a?: number, b?: number, c?: number): NativeTensor;
  op(name: string, inputs: NativeTensor[], args?: OpArg[], grad?: GradMode): Promise<NativeTensor | NativeTensor[]>;
  buildInfo(): BuildInfo;
  cudaIsAvailable(): boolean;
  cudaDeviceCount(): number;
  manualSeed(seed: number): Promise<void>;
  setNumThreads(n: number): Promise<void>;
  /** The nice value of the executor thread and its intra-op pool. */
  setTrainingPriority(nice: number): Promise<void>;
  getNumThreads(): number;
  /** Attaches a LoRA adapter to the named Linear/Conv2d layers (A kaiming-uniform or gaussian, B zeros). */
  loraAttach(module: NativeModule, targets: string[], options: { rank: number; alpha: number; dropout: number; init: string }): Promise<void>;
  /** Adds the adapter's delta to the base weights in place (true), or takes it out (false). */
  loraMerge(module: NativeModule, merged: boolean): Promise<void>;
  /** TorchScript's CPU fuser: reads it, and sets it when a flag is given. */
  jitCpuFusion(flag?: boolean): boolean;
  fusedAdamW(): boolean;
  cpuKernels(): string[];
  jitOptimize(flag?: boolean): boolean;
  tuneMalloc(mmapThreshold: number, trimThreshold: number, topPad: number): boolean;
  collateImages(images: { data: Uint8Array; luts: Float32Array; mirrored: boolean }[], shape: number[], pinMemory: boolean): Promise<NativeTensor>;
  /** PIL's resize of 8-bit HWC pixels (native/resample.cc), on libuv's threadpool. */
  resampleImage(data: Uint8Array, width: number, height: number, channels: number, outWidth: number, outHeight: number, filter: string): Promise<Uint8Array>;
  /** A JPEG's crop decoded by libjpeg-turbo and resized (native/jpeg.cc); null: decode it with sharp. Absent without libjpeg. */
  decodeJpeg?(bytes: Uint8Array, left: number, top: number, width: number, height: number, outWidth: number, outHeight: number, filter: string): Promise<Uint8Array | null>;
  /** Rows `indices` of an in-memory dataset as [input, int64 target] (8-bit rows through `luts` into float32). */
  gatherRows(inputs: ArrayBufferView, srcDtype: DType, shape: number[], indices: Uint32Array, luts: Float32Array | null, targets: BigInt64Array, pinMemory: boolean): [NativeTensor, NativeTensor];
  memory(): { tensors: number; bytes: number };
  cudnnBenchmark(flag?: boolean): boolean;
  cudaSynchronize(): Promise<void>;
  cudaMemory(device: number): { allocated: number; reserved: number; peak: number } | null;
  cudaEmptyCache(): Promise<boolean>;
  /** torch.distributed's process group (c10d TCPStore + ProcessGroupGloo); see native/distributed.h. */
  distInit(options: { addr: string; port: number; rank: number; worldSize: number; timeoutMs: number; iface?: string }): Promise<void>;
  distDestroy(): Promise<void>;
  distAllReduce(tensor: NativeTensor, op: 'sum' | 'product' | 'min' | 'max' | 'avg'): Promise<void>;
  distBroadcast(tensor: NativeTensor, src: number): Promise<void>;
  distAllGather(tensor: NativeTensor): Promise<NativeTensor[]>;
  distBarrier(): Promise<void>;
  /** DistributedDataParallel's c10d Reducer over trainable parameters; see native/ddp.h. */
  Reducer: new (params: NativeTensor[], names: string[], buffers: NativeTensor[], options: { bucketCapMB: number; broadcastBuffers: boolean }) => NativeReducer;
}

/** The raw Reducer handle (native/ddp.h). */
export interface NativeReducer {
  setup(): Promise<void>;
  prepare(sync: boolean): Promise<void>;
  syncGradients(): Promise<void>;
  dispose(): void;
}

const root = path.resolve(__dirname, '..');
const rebuildHint =
  'Rebuild finetorch against the libtorch you have: `npm rebuild finetorch` (or `npm run build:native` in a checkout); ' +
  '`node scripts/find-libtorch` shows which libtorch a build will use.';

/** Compares the libtorch a binary was compiled with to the one loaded at run time (major.minor). */
export function checkLibtorchVersion(info: BuildInfo): void {
  const mm = (v: string) => v.split('.').slice(0, 2).join('.');
  if (info.runtime !== null && mm(info.runtime) !== mm(info.builtWith)) {
    throw new Error(
      `finetorch was built against libtorch ${info.builtWith} but libtorch ${info.runtime} is loaded. ${rebuildHint}`,
    );
  }
}

function load(): Binding {
  // OpenMP's wait policy stays libgomp's (idle workers spin briefly, then sleep) unless the user
  // sets OMP_WAIT_POLICY: on a quiet 2-core machine PASSIVE made resnet18 at 2 threads 40% slower
  // and the small MLP 2.6x slower; it helps only where other processes compete for the cores.
  let binding: Binding;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    binding = require('node-gyp-build')(root) as Binding;
  } catch (err) {
    const msg = (err as Error).message;
    if (/libtorch|libc10|cannot open shared object/.test(msg)) {
      throw new Error(`finetorch could not load libtorch: ${msg.split('\n')[0]}. ${rebuildHint}`);
    }
    throw err;
  }
  checkLibtorchVersion(binding.buildInfo());
  return binding;
}

/** What `tuneMalloc` was given at load, or null when it was not applied. */
export interface MallocTuning {
  mmapThreshold: number;
  trimThreshold: number;
  topPad: number;
}

/**
 * Keeps blocks under 32 MiB in glibc's heap instead of fresh mmap()s per allocation (decoded
 * images, batches, activations), and keeps the executor thread's emptied heaps mapped: about a
 * third less CPU per image in the data pipeline, and 1.4-1.8x the training steps per second on
 * resnet18 (measured here; see native/device.cc). The process-wide equivalent of starting Node
 * with MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=134217728 MALLOC_TOP_PAD_=67108864;
 * FINETORCH_MALLOC_TUNING=0 leaves malloc as it was.
 */
function tuneMalloc(binding: Binding): MallocTuning | null {
  if (process.env.FINETORCH_MALLOC_TUNING === '0') return null;
  const tuning = { mmapThreshold: 32 << 20, trimThreshold: 128 << 20, topPad: 64 << 20 };
  return binding.tuneMalloc(tuning.mmapThreshold, tuning.trimThreshold, tuning.topPad) ? tuning : null;
}

/**
 * A script for a child `node -e` that loads a TorchScript file with the same addon (and reads its
 * structure, as `jit.load` does) and exits 0 on
 * success, 1 with the error on stdout otherwise (a crash shows as a signal).
 */
export function probeLoadScript(file: string, device: string): string {
  return `require(${JSON.stringify(require.resolve('node-gyp-build'))})(${JSON.stringify(root)})` +
    `.loadModule(${JSON.stringify(file)}, ${JSON.stringify(device)})` +
    '.then((m) => m.snapshot())' +
    `.then(() => process.exit(0), (e) => { process.stdout.write(e.message); process.exit(1); });`;
}

/** The loaded addon. */
export const native: Binding = load();

/** The malloc settings applied when the addon was loaded (null: none; see tuneMalloc). */
export const mallocTuning: MallocTuning | null = tuneMalloc(native);
