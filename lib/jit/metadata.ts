/**
 * Model metadata: a JSON document carried inside the TorchScript archive as the extra file
 * `finetorch.json`, so class names and preprocessing travel with the model however it is copied.
 * libtorch writes it (ExtraFilesMap, at `<archive>/extra/finetorch.json`); reading is done here,
 * from the entries the archive check already listed, so loading stays one pass over the file.
 */
import { readEntry, type ArchiveEntry } from './archive';
import { fromJSON } from '../transforms/json';
import type { TransformJSON } from '../transforms/transform';

/** The extra file's name in the archive (Python: `torch.jit.load(f, _extra_files={'finetorch.json': ''})`). */
export const METADATA_FILE = 'finetorch.json';

/** What a model is trained for: one class per input, any number of classes, or numbers. */
export type ModelTask = 'single-label' | 'multi-label' | 'regression';

/**
 * A model's metadata: any JSON object. The fields `train.describe` fills are typed, and checked
 * when a model loads; others are kept as they are.
 */
export interface ModelMetadata {
  /** 'finetorch-model' when written by `train.describe`. */
  format?: string;
  /** Class names, in output order. */
  classes?: string[];
  /** The evaluation transform, as `transforms.fromJSON` reads it. */
  transform?: TransformJSON;
  task?: ModelTask;
  /** finetorch's version when the file was written. */
  finetorch?: string;
  /** libtorch's version when the file was written. */
  libtorch?: string;
  /** How the model was trained (free form: epochs, learning rate, ...). */
  settings?: Record<string, unknown>;
  /** The final metrics (free form: validation accuracy, loss, ...). */
  metrics?: Record<string, unknown>;
  [key: string]: unknown;
}

const TASKS: readonly string[] = ['single-label', 'multi-label', 'regression'];

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === 'object' && !Array.isArray(v) && [Object.prototype, null].includes(Object.getPrototypeOf(v));

/** Why each typed field is wrong, or nothing when it is right. */
const FIELD_CHECKS: Record<string, (v: unknown) => string | undefined> = {
  classes: (v) => (Array.isArray(v) && v.every((c) => typeof c === 'string') ? undefined : 'must be an array of strings'),
  task: (v) => (typeof v === 'string' && TASKS.includes(v) ? undefined : `must be one of ${TASKS.map((t) => `'${t}'`).join(', ')}`),
  transform: (v) => {
    try {
      fromJSON(v as TransformJSON);
      return undefined;
    } catch (err) {
      return `is not a transform (${(err as Error).message})`;
    }
  },
  finetorch: (v) => (typeof v === 'string' ? undefined : 'must be a string'),
  libtorch: (v) => (typeof v === 'string' ? undefined : 'must be a string'),
  settings: (v) => (isPlainObject(v) ? undefined : 'must be an object'),
  metrics: (v) => (isPlainObject(v) ? undefined : 'must be an object'),
};

/** @internal The problems of a metadata object's typed fields, as `field: why`. */
export function metadataProblems(meta: Record<string, unknown>): [string, string][] {
  const out: [string, string][] = [];
  for (const [field, checkField] of Object.entries(FIELD_CHECKS)) {
    if (meta[field] === undefined) continue;
    const why = checkField(meta[field]);
    if (why) out.push([field, why]);
  }
  return out;
}

function warn(message: string): void {
  process.emitWarning(message, { code: 'FINETORCH_BAD_METADATA' });
}

/**
 * @internal The metadata of an archive, or undefined when it has none. Damage (bad JSON, not an
 * object, wrongly typed fields) is a warning naming the file, never an Error: the model itself is
 * fine, so it still loads; wrongly typed fields are left out, the rest is kept.
 */
export function readMetadata(bytes: Buffer, entries: readonly ArchiveEntry[], what: string): ModelMetadata | undefined {
  const entry = entries.find((e) => /^[^/]+\/extra\/finetorch\.json$/.test(e.name));
  if (!entry) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(readEntry(bytes, entry, what).toString('utf8'));
  } catch (err) {
    warn(`${what}: its metadata (${METADATA_FILE}) is not valid JSON (${(err as Error).message}); the model loads without metadata`);
    return undefined;
  }
  if (!isPlainObject(value)) {
    warn(`${what}: its metadata (${METADATA_FILE}) is not a JSON object; the model loads without metadata`);
    return undefined;
  }
  const problems = metadataProblems(value);
  if (problems.length) {
    warn(`${what}: its metadata (${METADATA_FILE}) has wrongly typed fields, left out: ${problems.map(([f, why]) => `'${f}' ${why}`).join('; ')}`);
    for (const [f] of problems) delete value[f];
  }
  return value as ModelMetadata;
}

/**
 * @internal Checks metadata given to `save`/`serialize` or set on a model, and returns its JSON
 * text: a plain object whose typed fields are right (a `transform` may be a Transform), or
 * null/undefined for none.
 */
export function metadataText(meta: unknown, what: string): string | undefined {
  if (meta === undefined || meta === null) return undefined;
  if (!isPlainObject(meta)) throw new TypeError(`${what}: metadata must be a plain object (or null for none)`);
  let text: string;
  try {
    text = JSON.stringify(meta);
  } catch (err) {
    throw new TypeError(`${what}: metadata must be JSON (${(err as Error).message})`, { cause: err });
  }
  const problems = metadataProblems(JSON.parse(text));
  if (problems.length) throw new TypeError(`${what}: metadata field ${problems.map(([f, why]) => `'${f}' ${why}`).join('; ')}`);
  return text;
}
