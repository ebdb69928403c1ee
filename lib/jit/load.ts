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
import { checkArchive } from './archive';
import { ScriptModule } from './module';

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
      if (e.signal) reject(new Error(`${what}: loading the model crashed an isolated child process (${e.signal}); the file is damaged or not a TorchScript model`));
      else reject(new Error(`${what}: not a loadable TorchScript model: ${stdout.trim() || e.message}`));
    });
  });
}

/**
 * Loads a TorchScript model (from `torch.jit.script(model).save(...)` or `torch.jit.trace`).
 *
 * @example
 * const model = await torch.jit.load('resnet18.pt', { device: 'cpu' });
 * const untrusted = await torch.jit.load(upload, { isolate: true });
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
  checkArchive(bytes, what);
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
    handle = await native.loadModule(bytes, device);
  } catch (err) {
    throw new Error(`jit.load(${what}): not a loadable TorchScript model: ${(err as Error).message.replace(/^jit\.load: /, '')}`);
  }
  let snap;
  try {
    snap = await handle.snapshot();
  } catch (err) {
    handle.dispose();
    throw new Error(`jit.load(${what}): not a usable TorchScript model: ${(err as Error).message.replace(/^module: /, '')}`);
  }
  return new ScriptModule(handle, snap, what);
}
