/**
 * Writing files so that a crash, a full disk or a read-only mount never leaves half a file under
 * the target name, nor a temporary file beside it: every file finetorch writes for the user (models,
 * checkpoints, reports, CLI outputs) goes through `writeAtomic`.
 */
import { promises as fsp } from 'fs';
import * as path from 'path';

const REASONS: Record<string, string> = {
  ENOSPC: 'no space left on the device',
  EDQUOT: 'the disk quota is exhausted',
  EROFS: 'the file system is read-only',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  ENOENT: 'a folder on the path does not exist',
  ENOTDIR: 'a part of the path is not a folder',
  EISDIR: 'the path is a folder',
  EMFILE: 'too many open files',
  ENAMETOOLONG: 'the file name is too long',
  EIO: 'an I/O error from the device',
  EFBIG: 'the file is too large for the file system',
  EEXIST: 'a file of that name is in the way',
};

/** `ENOSPC (no space left on the device)`: a file-system error as its errno code and words a user can act on. */
export function fsReason(err: unknown): string {
  const { code, detail } = (err ?? {}) as { code?: string; detail?: string };
  if (code) return `${code} (${REASONS[code] ?? (err as Error).message})${detail ? `: ${detail}` : ''}`;
  return (err as Error)?.message ?? String(err);
}

/**
 * Refuses a target that cannot be a file: a path ending in '/' (path.resolve drops the slash, so
 * 'out/x.pt/' would quietly become the file 'out/x.pt') or an existing folder. Resolves to the
 * absolute target.
 */
async function checkFileTarget(file: unknown, what: string): Promise<string> {
  if (typeof file !== 'string' || file === '') {
    throw new TypeError(`${what}: the path must be a non-empty string: got ${file === null ? 'null' : typeof file}`);
  }
  if (file.endsWith('/') || file.endsWith(path.sep)) {
    throw new Error(`${what}(${file}): the path ends in '${file.slice(-1)}', so it names a folder, not a file; ` +
      `give the file's name, e.g. '${file.replace(/[\\/]+$/, '')}'`);
  }
  const target = path.resolve(file);
  const st = await fsp.stat(target).catch(() => null);
  if (st?.isDirectory()) throw new Error(`${what}(${file}): '${target}' is an existing folder, not a file; give the path of a file`);
  const dir = path.dirname(target);
  const dst = await fsp.stat(dir).catch(() => null);
  if (!dst?.isDirectory()) throw new Error(`${what}: folder ${dir} does not exist`);
  return target;
}

/**
 * Writes `content` (bytes or text) to `file` atomically: into a temporary file in the same folder,
 * flushed to disk, renamed over `file`, and the folder flushed. On any failure the temporary file
 * is deleted, the previous file is untouched, and the Error names the file and the cause
 * (`ENOSPC (no space left on the device)`), with the errno in `code`.
 *
 * @example
 * await writeAtomic('out/metrics.json', JSON.stringify(metrics), 'finetune');
 */
export async function writeAtomic(file: string, content: string | Uint8Array, what: string): Promise<void> {
  const target = await checkFileTarget(file, what);
  const dir = path.dirname(target);
  // The pid in the name lets a checkpoint tell a live writer's temporary file from a dead one's.
  const tmp = path.join(dir, `.${path.basename(target)}.${process.pid}.${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}.tmp`);
  let created = false;
  try {
    const fh = await fsp.open(tmp, 'wx');
    created = true;
    try {
      await fh.writeFile(content);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsp.rename(tmp, target);
    created = false;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException)?.code;
    if (created) await fsp.rm(tmp, { force: true }).catch(() => {});
    throw Object.assign(new Error(`${what}(${file}): cannot write '${target}': ${fsReason(err)}`, { cause: err }), code ? { code } : {});
  }
  const dh = await fsp.open(dir, 'r').catch(() => null);
  if (dh) {
    try { await dh.sync(); } catch { /* some file systems cannot flush a folder; the rename is done */ } finally { await dh.close(); }
  }
}
