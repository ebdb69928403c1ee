/** `train.describe`: the metadata a fine-tuned model carries in its file. */
import { metadataText, type ModelMetadata, type ModelTask } from '../jit/metadata';
import { version } from '../runtime';
import { Transform } from '../transforms/transform';

/** What `train.describe` records. Every field is optional. */
export interface DescribeOptions {
  /** Class names, in the order of the model's outputs (e.g. `ImageFolder.classes`). */
  classes?: readonly string[];
  /** The evaluation transform: what an image must go through before the model sees it. */
  transform?: Transform;
  /** 'single-label' (softmax over classes), 'multi-label' (a sigmoid per class) or 'regression'. */
  task?: ModelTask;
  /** How the model was trained (epochs, learning rate, ...), as JSON. */
  settings?: Record<string, unknown>;
  /** The final metrics (validation accuracy, loss, ...), as JSON. */
  metrics?: Record<string, unknown>;
}

/**
 * Builds the metadata that `finetorch finetune` stores in `model.pt`, for `fit` users to store the
 * same way: class names, the evaluation transform (as `transforms.fromJSON` reads it), the task,
 * the finetorch and libtorch versions, training settings and final metrics. `finetorch predict`,
 * `evaluate` and `inspect` read it back, and so does Python (see the README).
 *
 * @example
 * const evalTransform = transforms.imagenet({ train: false, size: 160 });
 * const history = await train.fit(model, { train: trainLoader, val: valLoader, epochs: 3, optimizer });
 * model.metadata = train.describe({
 *   classes: trainSet.classes, transform: evalTransform, task: 'single-label',
 *   settings: { epochs: 3, lr: 1e-3 }, metrics: { valAccuracy: history.epochs.at(-1)?.valAccuracy },
 * });
 * await model.save('model.pt'); // or model.save('model.pt', { metadata: train.describe(...) })
 */
export function describe(options: DescribeOptions = {}): ModelMetadata {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) throw new TypeError('describe(): options must be an object');
  const known = ['classes', 'transform', 'task', 'settings', 'metrics'];
  const unknown = Object.keys(options).filter((k) => !known.includes(k));
  if (unknown.length) throw new TypeError(`describe(): unknown option ${unknown.map((k) => `'${k}'`).join(', ')} (known: ${known.join(', ')})`);
  if (options.transform !== undefined && !(options.transform instanceof Transform)) {
    throw new TypeError('describe(): transform must be a transform (transforms.imagenet({ train: false }), transforms.compose([...]), ...)');
  }
  const meta: ModelMetadata = {
    format: 'finetorch-model',
    ...(options.task !== undefined && { task: options.task }),
    ...(options.classes !== undefined && { classes: Array.isArray(options.classes) ? [...options.classes] : options.classes as never }),
    ...(options.transform !== undefined && { transform: options.transform.toJSON() }),
    finetorch: version.finetorch,
    libtorch: version.libtorch,
    ...(options.settings !== undefined && { settings: options.settings }),
    ...(options.metrics !== undefined && { metrics: options.metrics }),
    createdAt: new Date().toISOString(),
  };
  // The same checks as saving: a wrong type fails here, where the caller wrote it.
  return JSON.parse(metadataText(meta, 'describe()')!) as ModelMetadata;
}
