/**
 * `torch.jit.load`: reads a TorchScript file or buffer after checking the archive's integrity
 * ourselves (libtorch's reader can crash on damaged data), optionally in a throwaway child first.
 */
import { execFile } from 'child_process';
import { promises as fsp } from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as check from '../check';
import { native, probeLoadScript } from '../native';
import { checkArchive, readEntry, type ArchiveEntry } from './archive';
import { readMetadata } from './metadata';
import { checkPickle, PickleError } from './pickle';
import { ScriptModule } from './module';
import { codedError, type FinetorchError } from '../errors';

/** Options of `torch.jit.load`. */
export interface LoadOptions {
  /** Where parameters go: 'cpu' (default), 'cuda', 'cuda:N'. */
  device?: string;
  /** Load in a short-lived child process first, so a file that crashes libtorch cannot take this process down. */
  isolate?: boolean;
}

function isolateLoad(file: string, device: string, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['-e', probeLoadScript(file, device)], { timeout: 120_000, maxBuffer: 1 << 20 }, (err, stdout) => {
      if (!err) return resolve();
      const e = err as NodeJS.ErrnoException & { signal?: string; code?: number | string };
      if (e.signal) reject(codedError('FINETORCH_BAD_MODEL_FILE', `${what}: loading the model crashed an isolated child process (${e.signal}); the file is damaged or not a TorchScript model`));
      else reject(codedError('FINETORCH_BAD_MODEL_FILE', `${what}: not a loadable TorchScript model: ${stdout.trim() || e.message}`));
    });
  });
}

/**
 * @internal Second line of defence after the zip layer (whose CRC check a damaged-then-repaired entry
 * passes): every pickle must be a well-formed opcode stream (see pickle.ts), and the source
 * entries are returned for the native side to parse and check before libtorch compiles them.
 */
export function checkContents(bytes: Buffer, entries: ArchiveEntry[], what: string): [string, string][] {
  const code: [string, string][] = [];
  for (const entry of entries) {
    if (/(\.|_)pkl$/.test(entry.name)) {
      try {
        checkPickle(readEntry(bytes, entry, what));
      } catch (err) {
        if (!(err instanceof PickleError)) throw err;
        throw codedError('FINETORCH_BAD_MODEL_FILE', `${what}: damaged TorchScript archive: entry '${entry.name}' is not a valid pickle (${err.message})`);
      }
    } else if (/\/code\/.*\.py$/.test(entry.name)) {
      code.push([entry.name, readEntry(bytes, entry, what).toString('utf8')]);
    }
  }
  return code;
}

/**
 * Loads a TorchScript model (from `torch.jit.script(model).save(...)` or `torch.jit.trace`).
 *
 * @example
 * const model = await torch.jit.load('resnet18.pt', { device: 'cpu' });
 * const untrusted = await torch.jit.load(upload, { isolate: true });
 * console.log(model.metadata?.classes); // what the file recorded (see ScriptModule.metadata)
 */
export async function load(source: string | Buffer | Uint8Array, options: LoadOptions = {}): Promise<ScriptModule> {
  if (options === null || typeof options !== 'object') throw new TypeError('jit.load: options must be an object');
  const device = check.device(options.device ?? 'cpu', 'jit.load');
  let bytes: Buffer;
  let what: string;
  if (typeof source === 'string') {
    what = source;
    const st = await fsp.stat(source).catch((e: NodeJS.ErrnoException) => {
      throw new Error(e.code === 'ENOENT' ? `jit.load: no such file '${source}'` : `jit.load: cannot read '${source}': ${e.message}`);
    });
    if (st.isDirectory()) throw new Error(`jit.load: '${source}' is a directory, not a TorchScript file`);
    bytes = await fsp.readFile(source);
  } else if (source instanceof Uint8Array) {
    what = 'buffer';
    bytes = Buffer.from(source.buffer, source.byteOffset, source.byteLength);
  } else {
    throw new TypeError('jit.load: expected a file path or a Buffer');
  }
  const entries = checkArchive(bytes, what);
  const code = checkContents(bytes, entries, what);
  const metadata = readMetadata(bytes, entries, what);
  if (options.isolate) {
    let file = typeof source === 'string' ? path.resolve(source) : '';
    let scratch = '';
    if (!file) {
      scratch = await fsp.mkdtemp(path.join(os.tmpdir(), 'finetorch-isolate-'));
      file = path.join(scratch, 'model.pt');
      await fsp.writeFile(file, bytes);
    }
    try {
      await isolateLoad(file, device, what);
    } finally {
      if (scratch) await fsp.rm(scratch, { recursive: true, force: true });
    }
  }
  let handle;
  try {
    handle = await native.loadModule(bytes, device, code);
  } catch (err) {
    const e = err as FinetorchError;
    throw codedError(e.code === 'FINETORCH_OUT_OF_MEMORY' ? e.code : 'FINETORCH_BAD_MODEL_FILE',
      `jit.load(${what}): not a loadable TorchScript model: ${e.detail ?? e.message}`, { cause: err });
  }
  let snap;
  try {
    snap = await handle.snapshot();
  } catch (err) {
    handle.dispose();
    const e = err as FinetorchError;
    throw codedError('FINETORCH_BAD_MODEL_FILE', `jit.load(${what}): not a usable TorchScript model: ${e.detail ?? e.message}`, { cause: err });
  }
  const model = new ScriptModule(handle, snap, what);
  model.metadata = metadata;
  return model;
}
