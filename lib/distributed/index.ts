/**
 * `torch.distributed`: PyTorch's process group on its own engine, c10d (a TCPStore for the
 * rendezvous, ProcessGroupGloo for the collectives). One group per process, as PyTorch's default
 * group; `finetorch launch` starts the processes and sets the environment `initProcessGroup` reads.
 * Collectives run on the native executor, in call order with every other libtorch job, so the
 * event loop never waits for another rank. Before each collective the ranks check that they all
 * run the same one on the same dtype and shape; a mismatch (a collective skipped or added on one
 * rank) rejects on every rank with a `FINETORCH_DISTRIBUTED` error naming which rank runs what.
 */
import * as check from '../check';
import { tensor } from '../creation';
import { codedError } from '../errors';
import { native } from '../native';
import { Tensor } from '../tensor';

/** The reductions of `allReduce`, as PyTorch's `torch.distributed.ReduceOp`. */
export const ReduceOp = { SUM: 'sum', PRODUCT: 'product', MIN: 'min', MAX: 'max', AVG: 'avg' } as const;
/** One of `ReduceOp`'s values. */
export type ReduceOp = (typeof ReduceOp)[keyof typeof ReduceOp];

/** Options of `initProcessGroup`. */
export interface InitProcessGroupOptions {
  /** 'gloo' (CPU tensors; the default). 'nccl' needs a libtorch built with NCCL and is not wired yet. */
  backend?: 'gloo' | 'nccl';
  /** 'env://' (default: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) or 'tcp://host:port'. */
  initMethod?: string;
  /** This process's rank (default: the RANK environment variable). */
  rank?: number;
  /** How many processes take part (default: WORLD_SIZE). */
  worldSize?: number;
  /** How long the rendezvous and each collective may wait for the other ranks (default 30 minutes, as PyTorch). */
  timeoutMs?: number;
}

let state: { rank: number; worldSize: number } | undefined;

function fail(message: string): never {
  throw codedError('FINETORCH_DISTRIBUTED', message);
}

function envInteger(name: string, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') {
    fail(`initProcessGroup: ${name} is not set; run under \`finetorch launch\`, or set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT`);
  }
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < min) fail(`initProcessGroup: ${name} must be an integer >= ${min}: got '${raw}'`);
  return n;
}

function masterFromEnv(): { addr: string; port: number } {
  const addr = process.env.MASTER_ADDR;
  if (!addr) fail('initProcessGroup: MASTER_ADDR is not set; run under `finetorch launch`, or set MASTER_ADDR and MASTER_PORT (rank 0\'s address and a free port)');
  return { addr, port: envInteger('MASTER_PORT', 1) };
}

function masterFromUrl(url: string): { addr: string; port: number } {
  const m = /^tcp:\/\/(\[[^\]]+\]|[^:/]+):(\d+)\/?$/.exec(url);
  if (!m) fail(`initProcessGroup: initMethod must be 'env://' or 'tcp://host:port': got '${url}'`);
  return { addr: m[1].replace(/^\[|\]$/g, ''), port: Number(m[2]) };
}

/**
 * Joins the process group: every rank must call it with the same world size and master address.
 * It resolves once all ranks have joined, and rejects with a `FINETORCH_DISTRIBUTED` error saying
 * what was wrong (a missing variable, an unreachable or busy MASTER_PORT, a WORLD_SIZE mismatch,
 * ranks that did not join within `timeoutMs`).
 *
 * @example
 * // finetorch launch --nproc-per-node 2 train.js
 * await torch.distributed.initProcessGroup({ backend: 'gloo' });
 * console.log(`rank ${torch.distributed.getRank()} of ${torch.distributed.getWorldSize()}`);
 */
export async function initProcessGroup(options: InitProcessGroupOptions = {}): Promise<void> {
  if (options === null || typeof options !== 'object') throw new TypeError('initProcessGroup: options must be an object');
  const backend = options.backend ?? 'gloo';
  if (backend === 'nccl') fail("initProcessGroup: backend 'nccl' is not available in this build of finetorch; use 'gloo'");
  if (backend !== 'gloo') throw new TypeError(`initProcessGroup: backend must be 'gloo' or 'nccl': got ${check.describe(backend)}`);
  if (state) fail('initProcessGroup: the process group is already initialized (call destroyProcessGroup() first)');
  const method = options.initMethod ?? 'env://';
  if (typeof method !== 'string') throw new TypeError(`initProcessGroup: initMethod must be a string: got ${check.describe(method)}`);
  const { addr, port } = method === 'env://' ? masterFromEnv() : masterFromUrl(method);
  if (port > 65535) fail(`initProcessGroup: the master port must be in [1, 65535]: got ${port}`);
  const worldSize = options.worldSize === undefined ? envInteger('WORLD_SIZE', 1) : check.integer(options.worldSize, 'initProcessGroup: worldSize', 1);
  const rank = options.rank === undefined ? envInteger('RANK', 0) : check.integer(options.rank, 'initProcessGroup: rank', 0);
  if (rank >= worldSize) fail(`initProcessGroup: RANK must be in [0, WORLD_SIZE): got rank ${rank} with WORLD_SIZE=${worldSize}`);
  const timeoutMs = check.integer(options.timeoutMs ?? 30 * 60_000, 'initProcessGroup: timeoutMs', 1);
  const iface = process.env.GLOO_SOCKET_IFNAME;
  await native.distInit({ addr, port, rank, worldSize, timeoutMs, ...(iface ? { iface } : {}) });
  state = { rank, worldSize };
}

/** True between `initProcessGroup` and `destroyProcessGroup`. */
export function isInitialized(): boolean {
  return state !== undefined;
}

function current(what: string): { rank: number; worldSize: number } {
  if (!state) fail(`${what}: the process group is not initialized (call torch.distributed.initProcessGroup() first)`);
  return state;
}

/**
 * This process's rank in [0, getWorldSize()).
 *
 * @example
 * if (torch.distributed.getRank() === 0) console.log('I write the checkpoints');
 */
export function getRank(): number {
  return current('getRank').rank;
}

/**
 * How many processes are in the group.
 *
 * @example
 * const perRank = Math.ceil(total / torch.distributed.getWorldSize());
 */
export function getWorldSize(): number {
  return current('getWorldSize').worldSize;
}

/**
 * Leaves the process group (stops its heartbeat; on rank 0, closes the rendezvous store).
 *
 * @example
 * await torch.distributed.destroyProcessGroup();
 */
export async function destroyProcessGroup(): Promise<void> {
  if (!state) return;
  state = undefined;
  await native.distDestroy();
}

function tensorArg(t: unknown, what: string): Tensor {
  if (!(t instanceof Tensor)) throw new TypeError(`${what}: expected a Tensor, got ${check.describe(t)}`);
  return t;
}

/**
 * Reduces `tensor` across all ranks in place (every rank gets the result) and resolves with it.
 * `ReduceOp.AVG` sums and divides by the world size (float tensors).
 *
 * @example
 * const correct = torch.tensor([hits], { dtype: 'float64' });
 * await torch.distributed.allReduce(correct, { op: torch.distributed.ReduceOp.SUM });
 */
export async function allReduce(tensor: Tensor, options: { op?: ReduceOp } = {}): Promise<Tensor> {
  const t = tensorArg(tensor, 'allReduce');
  const op = options.op ?? ReduceOp.SUM;
  if (!Object.values(ReduceOp).includes(op)) throw new TypeError(`allReduce: op must be one of torch.distributed.ReduceOp's values: got ${check.describe(op)}`);
  current('allReduce');
  await native.distAllReduce(t.handle, op);
  return t;
}

/**
 * Copies rank `src`'s `tensor` into `tensor` on every other rank, in place.
 *
 * @example
 * const seed = torch.tensor([Date.now() % 1e6], { dtype: 'int64' });
 * await torch.distributed.broadcast(seed, { src: 0 });  // every rank now has rank 0's seed
 */
export async function broadcast(tensor: Tensor, options: { src?: number } = {}): Promise<Tensor> {
  const t = tensorArg(tensor, 'broadcast');
  const { worldSize } = current('broadcast');
  const src = check.integer(options.src ?? 0, 'broadcast: src', 0, worldSize - 1);
  await native.distBroadcast(t.handle, src);
  return t;
}

/**
 * Every rank's `tensor` (same shape and dtype on all ranks), in rank order.
 *
 * @example
 * const all = await torch.distributed.allGather(torch.tensor([torch.distributed.getRank()]));
 * // all[r] holds rank r's value
 */
export async function allGather(tensor: Tensor): Promise<Tensor[]> {
  const t = tensorArg(tensor, 'allGather');
  current('allGather');
  return (await native.distAllGather(t.handle)).map((h) => new Tensor(h));
}

/** @internal Sums a list of numbers across ranks (float64, so counts stay exact). */
export async function sumAcrossRanks(values: number[]): Promise<number[]> {
  const t = tensor(Float64Array.from(values), { shape: [values.length] });
  try {
    await allReduce(t, { op: ReduceOp.SUM });
    return Array.from(await t.data() as Float64Array);
  } finally {
    t.dispose();
  }
}

/**
 * @internal Every rank's list of numbers (float64; the lengths may differ), in rank order: the
 * lengths are summed first, then the lists, padded to the longest, are gathered.
 */
export async function gatherAcrossRanks(values: Float64Array): Promise<Float64Array[]> {
  const lengths = new Array<number>(getWorldSize()).fill(0);
  lengths[getRank()] = values.length;
  const all = await sumAcrossRanks(lengths);
  const longest = Math.max(...all);
  if (longest === 0) return all.map(() => new Float64Array(0));
  const padded = new Float64Array(longest);
  padded.set(values);
  const t = tensor(padded, { shape: [longest] });
  try {
    const parts = await allGather(t);
    try {
      return await Promise.all(parts.map(async (p, r) => (await p.data() as Float64Array).slice(0, all[r])));
    } finally {
      parts.forEach((p) => p.dispose());
    }
  } finally {
    t.dispose();
  }
}

/**
 * Resolves once every rank has reached it.
 *
 * @example
 * if (torch.distributed.getRank() === 0) await prepareData();
 * await torch.distributed.barrier();
 */
export async function barrier(): Promise<void> {
  current('barrier');
  await native.distBarrier();
}
