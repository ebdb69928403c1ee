/**
 * `DistributedSampler`: each rank's share of a dataset, with PyTorch's semantics: every rank gets
 * the same number of samples (the list is padded with samples from its start, or cut with
 * `dropLast`), rank r takes every world-size-th index from r, and `shuffle` draws one permutation
 * per (seed, epoch) that all ranks agree on.
 */
import * as check from '../check';
import { getRank, getWorldSize, isInitialized } from '../distributed';
import { Rng } from './random';

/** What a DataLoader's `sampler` gives: how many indices per epoch, and which. */
export interface Sampler {
  readonly length: number;
  /** Sets the epoch whose order `indices()` returns. */
  setEpoch(epoch: number): void;
  /** The dataset indices of the current epoch, in order. */
  indices(): Uint32Array;
}

/** Options of `DistributedSampler`. */
export interface DistributedSamplerOptions {
  /** Ranks sharing the dataset (default: `torch.distributed.getWorldSize()`). */
  numReplicas?: number;
  /** This rank (default: `torch.distributed.getRank()`). */
  rank?: number;
  /** A new order every epoch, the same on every rank (default true, as PyTorch). */
  shuffle?: boolean;
  /** The shuffle's seed; every rank must use the same (default 0). */
  seed?: number;
  /** Drop the tail so the dataset splits evenly instead of padding it (default false). */
  dropLast?: boolean;
}

const DISTRIBUTED = 0x44445000;

/**
 * Splits a dataset across the ranks of `torch.distributed`. Give it to a DataLoader as `sampler`;
 * `train.fit` (through `DataLoader.setEpoch`) moves it to each new epoch, so the shuffle changes
 * every epoch. In a hand-written loop over the sampler itself, call `setEpoch(epoch)` as in PyTorch.
 *
 * @example
 * const sampler = new torch.data.DistributedSampler(trainSet, { shuffle: true, seed: 0 });
 * const loader = new torch.data.DataLoader(trainSet, { batchSize: 32, sampler });
 * await train.fit(ddp, { train: loader, epochs: 3, optimizer });
 */
export class DistributedSampler implements Sampler {
  readonly numReplicas: number;
  readonly rank: number;
  readonly shuffle: boolean;
  readonly seed: number;
  readonly dropLast: boolean;
  /** Samples this rank gets per epoch (the same on every rank). */
  readonly numSamples: number;
  /** numSamples x numReplicas. */
  readonly totalSize: number;
  private readonly size: number;
  private epoch = 0;

  constructor(dataset: { readonly length: number }, options: DistributedSamplerOptions = {}) {
    if (dataset === null || typeof dataset !== 'object' || !Number.isSafeInteger(dataset.length)) {
      throw new TypeError(`DistributedSampler: dataset must have a length: got ${check.describe(dataset)}`);
    }
    if (options === null || typeof options !== 'object') throw new TypeError('DistributedSampler: options must be an object');
    const needGroup = options.numReplicas === undefined || options.rank === undefined;
    if (needGroup && !isInitialized()) {
      throw new Error('DistributedSampler: the process group is not initialized; call torch.distributed.initProcessGroup() first, or pass numReplicas and rank');
    }
    this.numReplicas = check.integer(options.numReplicas ?? getWorldSize(), 'DistributedSampler: numReplicas', 1);
    this.rank = check.integer(options.rank ?? getRank(), 'DistributedSampler: rank', 0);
    if (this.rank >= this.numReplicas) throw new RangeError(`DistributedSampler: rank must be in [0, ${this.numReplicas}): got ${this.rank}`);
    this.shuffle = check.boolean(options.shuffle ?? true, 'DistributedSampler: shuffle');
    this.seed = check.integer(options.seed ?? 0, 'DistributedSampler: seed', 0, Number.MAX_SAFE_INTEGER);
    this.dropLast = check.boolean(options.dropLast ?? false, 'DistributedSampler: dropLast');
    this.size = dataset.length;
    this.numSamples = this.dropLast && this.size % this.numReplicas !== 0
      ? Math.ceil((this.size - this.numReplicas) / this.numReplicas)
      : Math.ceil(this.size / this.numReplicas);
    this.totalSize = this.numSamples * this.numReplicas;
  }

  /** Samples per epoch on this rank. */
  get length(): number {
    return this.numSamples;
  }

  /** Sets the epoch of the next `indices()`: all ranks then draw the same permutation. */
  setEpoch(epoch: number): void {
    this.epoch = check.integer(epoch, 'DistributedSampler.setEpoch: epoch', 0, Number.MAX_SAFE_INTEGER);
  }

  /** This rank's dataset indices for the current epoch. */
  indices(): Uint32Array {
    const n = this.size;
    let all: Uint32Array;
    if (this.shuffle) {
      all = new Rng(this.seed, DISTRIBUTED, this.epoch).permutation(n);
    } else {
      all = new Uint32Array(n);
      for (let i = 0; i < n; i++) all[i] = i;
    }
    // Every numReplicas-th of the list padded to totalSize by repeating it from its start (as
    // often as needed), or cut to it (dropLast).
    const out = new Uint32Array(this.numSamples);
    for (let i = 0; i < this.numSamples; i++) out[i] = all[(this.rank + i * this.numReplicas) % n];
    return out;
  }

  [Symbol.iterator](): Iterator<number> {
    return this.indices()[Symbol.iterator]();
  }
}
