/**
 * `DistributedDataParallel`: PyTorch's DDP over c10d's own Reducer. Each rank holds a replica of
 * the model; the wrapper broadcasts rank 0's parameters and buffers at wrap time, and during every
 * synchronised backward the Reducer all-reduces the gradients of the trainable parameters in
 * buckets as they fill (so communication overlaps the rest of backward) and leaves their average,
 * so every rank's optimizer takes the same step.
 */
import { isGradEnabled } from '../../autograd';
import * as check from '../../check';
import { isInitialized } from '../../distributed';
import { codedError } from '../../errors';
import type { ScriptModule } from '../../jit/module';
import { native, type NativeReducer } from '../../native';
import type { Tensor } from '../../tensor';

/** Options of `DistributedDataParallel`. */
export interface DistributedDataParallelOptions {
  /** Bucket size of the gradient all-reduce in MiB (default 25, as PyTorch). */
  bucketCapMB?: number;
  /** Broadcast rank 0's buffers (BatchNorm statistics) before each forward (default true, as PyTorch). */
  broadcastBuffers?: boolean;
}

/**
 * Wraps a model for data-parallel training: give it to `train.fit` in place of the model, or call
 * `forward`, `backward` and `step` by hand. Only trainable parameters (`requiresGrad`, a LoRA
 * adapter's for a LoRA model) are reduced, so wrap after freezing, adapting and moving the model.
 * The wrap checks that every rank has the same trainable parameter shapes; a mismatch rejects
 * `ready` (and the first forward or fit) with a `FINETORCH_DISTRIBUTED` error naming the ranks.
 *
 * @example
 * await torch.distributed.initProcessGroup({ backend: 'gloo' });
 * const model = await torch.jit.load('resnet18.pt');
 * const ddp = new torch.nn.parallel.DistributedDataParallel(model);
 * await ddp.ready;
 * // by hand (every rank runs the same steps on its own share of the data):
 * const loss = await lossFn.forward(await ddp.forward(x), y);
 * await loss.backward();   // gradients are averaged across ranks here
 * await optimizer.step();
 * // or: await train.fit(ddp, { train: loader, epochs: 3, optimizer });
 */
export class DistributedDataParallel {
  /** The wrapped model (PyTorch's `ddp.module`): save it, evaluate it, read its parameters. */
  readonly module: ScriptModule;
  /** Resolves once rank 0's parameters and buffers are on every rank; rejects when the models differ. */
  readonly ready: Promise<void>;
  private readonly reducer: NativeReducer;
  private readonly reduced: Tensor[];
  private noSyncDepth = 0;
  private disposed = false;

  constructor(module: ScriptModule, options: DistributedDataParallelOptions = {}) {
    if (module === null || typeof module !== 'object' || typeof (module as ScriptModule).namedParameters !== 'function') {
      throw new TypeError(`DistributedDataParallel: expected a ScriptModule (torch.jit.load), got ${check.describe(module)}`);
    }
    if (!isInitialized()) {
      throw codedError('FINETORCH_DISTRIBUTED', 'DistributedDataParallel: the process group is not initialized (call torch.distributed.initProcessGroup() first)');
    }
    if (options === null || typeof options !== 'object') throw new TypeError('DistributedDataParallel: options must be an object');
    const bucketCapMB = check.number(options.bucketCapMB ?? 25, 'DistributedDataParallel: bucketCapMB');
    if (!(bucketCapMB > 0)) throw new RangeError(`DistributedDataParallel: bucketCapMB must be > 0: got ${bucketCapMB}`);
    const broadcastBuffers = check.boolean(options.broadcastBuffers ?? true, 'DistributedDataParallel: broadcastBuffers');
    const trainable = module.namedParameters().filter(([, t]) => t.requiresGrad);
    if (trainable.length === 0) {
      throw codedError('FINETORCH_DISTRIBUTED', 'DistributedDataParallel: the model has no trainable parameters (unfreeze some, or add a LoRA adapter, before wrapping)');
    }
    this.module = module;
    this.reduced = trainable.map(([, t]) => t);
    this.reducer = new native.Reducer(
      trainable.map(([, t]) => t.handle), trainable.map(([n]) => n),
      module.namedBuffers().map(([, t]) => t.handle), { bucketCapMB, broadcastBuffers },
    );
    this.ready = this.reducer.setup().catch((err: Error) => {
      throw Object.assign(new Error(`DistributedDataParallel: ${(err as { detail?: string }).detail ?? err.message}`, { cause: err }), { code: 'FINETORCH_DISTRIBUTED' });
    });
    // Reported when used (forward, fit) or awaited; not as an unhandled rejection meanwhile.
    this.ready.catch(() => undefined);
  }

  /**
   * Runs the model's `forward`. In training mode with grad enabled (and outside `noSync`), the
   * next backward all-reduces and averages the gradients.
   */
  async forward(...inputs: unknown[]): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
    await this.beforeStep(this.module.training && isGradEnabled() && this.noSyncDepth === 0);
    return this.module.forward(...inputs);
  }

  /**
   * Runs `fn` with gradient synchronisation off, as PyTorch's `no_sync()`: backward passes inside
   * accumulate local gradients, and the first synchronised backward after it averages the sum.
   *
   * @example
   * await ddp.noSync(async () => {
   *   for (const b of microBatches.slice(0, -1)) await (await lossFn.forward(await ddp.forward(b.x), b.y)).backward();
   * });
   * await (await lossFn.forward(await ddp.forward(last.x), last.y)).backward();  // synchronises
   * await optimizer.step();
   */
  async noSync<T>(fn: () => Promise<T> | T): Promise<T> {
    this.noSyncDepth++;
    try {
      return await fn();
    } finally {
      this.noSyncDepth--;
    }
  }

  /** Whether the next training backward synchronises: false inside `noSync`. */
  get syncing(): boolean {
    return this.noSyncDepth === 0;
  }

  /** Training mode of the wrapped model. Returns this. */
  train(mode = true): this {
    this.module.train(mode);
    return this;
  }

  /** Evaluation mode of the wrapped model. Returns this. */
  eval(): this {
    return this.train(false);
  }

  /** The wrapped model's parameters (optionally only the trainable ones). */
  parameters(options: { trainable?: boolean } = {}): Tensor[] {
    return this.module.parameters(options);
  }

  /**
   * @internal Before a training forward (fit's steps): broadcasts rank 0's buffers and, when
   * `sync`, arms the Reducer for the backward that follows.
   */
  async beforeStep(sync: boolean): Promise<void> {
    if (this.disposed) throw codedError('FINETORCH_DISPOSED', 'DistributedDataParallel: used after dispose()');
    const now = this.module.parameters({ trainable: true });
    if (now.length !== this.reduced.length || now.some((t) => !this.reduced.includes(t))) {
      // Gradients of parameters the Reducer does not know would stay local and the ranks drift apart.
      throw codedError('FINETORCH_DISTRIBUTED', 'DistributedDataParallel: the trainable parameters changed after wrapping (freeze/unfreeze, stages, replaceHead, lora); ' +
        'wrap the model again after changing them');
    }
    await this.ready;
    await this.reducer.prepare(sync);
  }

  /** @internal Averages gradients accumulated without synchronisation (the tail of an accumulation window). */
  async syncGradients(): Promise<void> {
    await this.ready;
    await this.reducer.syncGradients();
  }

  /** Releases the Reducer (its gradient hooks); the wrapped model stays usable. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.reducer.dispose();
  }
}
