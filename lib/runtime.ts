/**
 * Process-wide settings: seeds, threads, versions, CUDA queries.
 */
import * as check from './check';
import { mallocTuning, native, type MallocTuning } from './native';

/**
 * Seeds libtorch's generators (CPU and CUDA). Queued in order: random work requested after it
 * draws from the new seed.
 *
 * @example
 * torch.manualSeed(42);
 * const a = torch.randn([3]);
 */
export function manualSeed(seed: number): Promise<void> {
  check.integer(seed, 'manualSeed(): seed', 0, Number.MAX_SAFE_INTEGER);
  return native.manualSeed(seed);
}

/**
 * Sets libtorch's intra-op thread count for finetorch's computations.
 *
 * @example
 * await torch.setNumThreads(2);
 */
export function setNumThreads(n: number): Promise<void> {
  check.integer(n, 'setNumThreads(): n', 1, 1024);
  return native.setNumThreads(n);
}

/**
 * Lowers (or, with the privilege, raises) the OS priority of the threads that train: the executor
 * that runs `fit`, tensor ops and `evaluate`, and its intra-op pool (and the pool's later threads,
 * after `setNumThreads`). `nice` is Linux's nice value, -20 (first) to 19 (last); 0 is the default.
 * For a process that serves while it trains: a `serving.Predictor` runs on threads of its own, so
 * with training at nice 10 requests get the CPU first when there are fewer cores than busy
 * threads, and training takes what is left (`finetorch serve` does this for POST /finetune).
 * Going back below the current value needs CAP_SYS_NICE (an Error otherwise).
 *
 * @example
 * await torch.setTrainingPriority(10);   // serving first, training in the gaps
 */
export function setTrainingPriority(nice: number): Promise<void> {
  check.integer(nice, 'setTrainingPriority(): nice', -20, 19);
  return native.setTrainingPriority(nice);
}

/** libtorch's intra-op thread count. @example console.log(torch.getNumThreads()); */
export function getNumThreads(): number {
  return native.getNumThreads();
}

const info = native.buildInfo();

/**
 * Versions: `libtorch` (the one loaded), `builtWith` (compiled against), `cuda` (CUDA runtime
 * version, or null for a CPU build).
 *
 * @example
 * console.log(torch.version.libtorch, torch.version.cuda);
 */
export const version: Readonly<{ libtorch: string; builtWith: string; cuda: string | null; finetorch: string }> = Object.freeze({
  libtorch: info.runtime ?? info.builtWith,
  builtWith: info.builtWith,
  cuda: info.cuda,
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  finetorch: (require('../package.json') as { version: string }).version,
});

function cudaIndex(device: string | number | undefined): number {
  if (device === undefined) return 0;
  if (typeof device === 'number') return check.integer(device, 'cuda device', 0);
  const d = check.device(device, 'cuda device');
  return d.includes(':') ? Number(d.split(':')[1]) : 0;
}

/** CUDA queries and memory management. */
export const cuda = {
  /**
   * The CUDA caching allocator's bytes for a device: allocated, reserved and peak allocated;
   * null without CUDA (or in a build without CUDA headers).
   *
   * @example
   * console.log(torch.cuda.memory()?.peak);
   */
  memory(device?: string | number): { allocated: number; reserved: number; peak: number } | null {
    if (!native.cudaIsAvailable()) return null;
    return native.cudaMemory(cudaIndex(device));
  },
  /** Returns cached, unused GPU memory to the driver. @example await torch.cuda.emptyCache(); */
  async emptyCache(): Promise<void> {
    if (native.cudaIsAvailable()) await native.cudaEmptyCache();
  },
  /** Waits for all queued GPU work. @example await torch.cuda.synchronize(); */
  async synchronize(): Promise<void> {
    if (!native.cudaIsAvailable()) throw new Error('cuda.synchronize(): CUDA is not available');
    await native.cudaSynchronize();
  },
  /** Whether libtorch sees a usable CUDA device. @example if (torch.cuda.isAvailable()) {...} */
  isAvailable(): boolean {
    return native.cudaIsAvailable();
  },
  /** The number of visible CUDA devices. @example torch.cuda.deviceCount() */
  deviceCount(): number {
    return native.cudaIsAvailable() ? native.cudaDeviceCount() : 0;
  },
};

/**
 * Backend switches, as `torch.backends`.
 *
 * `backends.malloc.tuning` says what finetorch set in glibc's malloc when it loaded (blocks under
 * 32 MiB are kept in the heap for reuse rather than mmap()ed and page-faulted in afresh each time,
 * and the training thread's emptied heaps stay mapped: about a third less CPU per image in the data
 * pipeline, 1.4-1.8x the training speed on CPU); null when the C library is not glibc or
 * FINETORCH_MALLOC_TUNING=0 was set.
 *
 * @example
 * torch.backends.cudnn.benchmark = true; // autotune convolutions for fixed input sizes
 * torch.backends.malloc.tuning; // { mmapThreshold: 33554432, trimThreshold: 134217728, topPad: 67108864 }
 * torch.backends.jit.cpuFusion; // false: TorchScript's CPU fuser is off unless turned on
 * torch.backends.jit.optimize; // false: every call runs the same (unoptimised) graph, for exact resumes
 * torch.backends.cpu.fusedAdamW; // true on x86-64 with AVX2: AdamW updates a parameter in one pass
 * torch.backends.cpu.kernels; // ['max_pool2d', 'batch_norm_stats']: ATen kernels done faster, same bits
 */
export const backends = {
  cudnn: {
    get benchmark(): boolean { return native.cudnnBenchmark(); },
    set benchmark(flag: boolean) { native.cudnnBenchmark(check.boolean(flag, 'cudnn.benchmark')); },
  },
  malloc: {
    get tuning(): MallocTuning | null { return mallocTuning; },
  },
  cpu: {
    /**
     * Whether `optim.AdamW` updates each CPU parameter in one pass over its four tensors (parameter,
     * gradient, both moments) instead of PyTorch's eight-op sequence: about a third of the time on
     * resnet18, with the same bits. True on x86-64 CPUs with AVX2 and FMA, where ATen's kernels fuse
     * the same multiply-adds; the first check compares the pass with the op sequence bit for bit
     * and keeps the ops on any difference. amsgrad, non-contiguous and non-float32 parameters
     * always take the op sequence.
     */
    get fusedAdamW(): boolean { return native.fusedAdamW(); },
    /**
     * The ATen CPU kernels finetorch runs its own, faster versions of in this process, which give
     * ATen's results bit for bit: `'max_pool2d'` (max-pool with indices, eight outputs at a time:
     * 3.4-7.5x ATen's on resnet18's stem) and `'batch_norm_stats'` (batch norm's training mean and
     * variance, eight channels at a time: 1.5-3.5x). Each is put in place of ATen's when the
     * addon loads, only where it matched ATen's kernel in every bit on a probe with ties, NaN and
     * infinities; other dtypes, layouts and dilations still run ATen's. Empty on CPUs without AVX2
     * or with `FINETORCH_CPU_KERNELS=0` in the environment.
     */
    get kernels(): string[] { return native.cpuKernels(); },
  },
  jit: {
    /**
     * TorchScript's CPU fuser (NNC), process-wide; off by default (PyTorch's
     * `torch._C._jit_override_can_fuse_on_cpu`). Where libtorch was built with LLVM (Debian 13's
     * 2.6) its kernel compilation can take minutes on small training graphs, and fused kernels
     * round differently from unfused ones; pip's builds have it off too.
     */
    get cpuFusion(): boolean { return native.jitCpuFusion(); },
    set cpuFusion(flag: boolean) { native.jitCpuFusion(check.boolean(flag, 'backends.jit.cpuFusion')); },
    /**
     * TorchScript's graph-executor optimisation for finetorch's computations (PyTorch's
     * `torch.jit.optimized_execution`); off by default. On, a method's first call after a load
     * runs a profiling graph with eager autograd and later calls an optimised graph whose
     * derivative formulas (tanh, GELU, sigmoid...) round differently in the last bit, so a run
     * resumed in a new process would not end bit-identical to an uninterrupted one. On CPU, with
     * the fusers off, the two run at the same speed. A `serving.Predictor` keeps libtorch's
     * default (on) on its own thread.
     */
    get optimize(): boolean { return native.jitOptimize(); },
    set optimize(flag: boolean) { native.jitOptimize(check.boolean(flag, 'backends.jit.optimize')); },
  },
};
