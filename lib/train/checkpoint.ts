/**
 * Training checkpoints: the model (TorchScript), the optimizer's state, the scheduler, the
 * position in training and libtorch's RNG state, written so a crash at any moment leaves the
 * previous checkpoint whole (each file atomically; `latest.json`, written last, names the set).
 */
import { promises as fsp } from 'fs';
import * as path from 'path';
import { fsReason, writeAtomic } from '../fsutil';
import { load } from '../jit/load';
import type { ScriptModule } from '../jit/module';
import { native, type NativeTensor } from '../native';
import type { Optimizer } from '../optim/optimizer';
import type { SchedulerState } from '../optim/lr_scheduler';
import { Tensor } from '../tensor';
import { tensor } from '../creation';
import { adapterOf } from '../peft/lora';
import { decodeSafetensors, encodeSafetensors } from '../peft/safetensors';

/** Where fit is: the next batch to run is `batch` of `epoch` (both 0-based). */
export interface TrainingPosition {
  epoch: number;
  batch: number;
  globalStep: number;
  stagesApplied: number;
}

export interface CheckpointMeta extends TrainingPosition {
  format: 'finetorch-checkpoint';
  version: 1;
  model: string;
  optimizer: string;
  rng: string;
  /** A LoRA adapter's A and B (safetensors), when the model has one; the model file holds the base weights. */
  adapter?: string | null;
  scheduler: SchedulerState | null;
  history: unknown[];
  savedAt: string;
}

/** @internal Saves a checkpoint into `dir` and prunes all but the newest `keep`. */
export async function saveCheckpoint(dir: string, model: ScriptModule, optimizer: Optimizer, scheduler: { stateDict(): SchedulerState } | undefined,
  pos: TrainingPosition, history: unknown[], keep: number): Promise<string> {
  await fsp.mkdir(dir, { recursive: true }).catch((err) => {
    throw new Error(`checkpoint: cannot make the folder '${dir}': ${fsReason(err)}`, { cause: err });
  });
  const tag = `ckpt-${String(pos.globalStep).padStart(8, '0')}`;
  const rngHandle = (await native.op('getRngState', [], [], false)) as NativeTensor;
  const rng = new Tensor(rngHandle);
  const rngBytes = await rng.data();
  rng.dispose();
  const opt = await optimizer.stateDict();
  const meta: CheckpointMeta = {
    format: 'finetorch-checkpoint', version: 1, ...pos,
    model: `${tag}.pt`, optimizer: `${tag}.optim`, rng: `${tag}.rng`, adapter: adapterOf(model) ? `${tag}.lora.safetensors` : null,
    scheduler: scheduler ? scheduler.stateDict() : null, history, savedAt: new Date().toISOString(),
  };
  try {
    // with an adapter: the base weights, and A and B beside them, so that resuming is exact
    await writeAtomic(path.join(dir, meta.model), await model.serialize({ merge: false }), 'checkpoint');
    if (meta.adapter) {
      const lora = model.namedParameters().filter(([n]) => /\.lora_[AB]\.weight$/.test(n));
      const entries = await Promise.all(lora.map(async ([n, t]) => {
        const data = await t.data();
        return [n, { shape: t.shape, data: data instanceof Float64Array ? data : Float32Array.from(data as Float32Array) }] as const;
      }));
      await writeAtomic(path.join(dir, meta.adapter), encodeSafetensors(entries.map(([n, v]) => [n, v])), 'checkpoint');
    }
    await writeAtomic(path.join(dir, meta.optimizer), opt.state, 'checkpoint');
    await writeAtomic(path.join(dir, meta.rng), rngBytes as Uint8Array, 'checkpoint');
    await writeAtomic(path.join(dir, 'latest.json'), JSON.stringify({ ...meta, optimizerGroups: opt.groups }, null, 2), 'checkpoint');
  } catch (err) {
    // Files of a set that latest.json does not name are never used: free their space (a full disk
    // is the usual cause), unless an earlier complete save of the same step is the one it names.
    const current = await fsp.readFile(path.join(dir, 'latest.json'), 'utf8').then((t) => JSON.parse(t).model as unknown, () => null);
    if (current !== meta.model) await Promise.all([meta.model, meta.optimizer, meta.rng, ...(meta.adapter ? [meta.adapter] : [])].map((f) => fsp.rm(path.join(dir, f), { force: true })));
    throw err;
  }
  // Temporary files of a save that was killed midway are never part of a checkpoint.
  for (const f of await fsp.readdir(dir)) {
    if (f.startsWith('.') && f.endsWith('.tmp') && !f.includes(`.${process.pid}.`)) await fsp.rm(path.join(dir, f), { force: true });
  }
  const tags = (await fsp.readdir(dir)).filter((f) => /^ckpt-\d{8}\.pt$/.test(f)).map((f) => f.slice(0, -3)).sort();
  for (const old of tags.slice(0, Math.max(0, tags.length - keep))) {
    if (old === tag) continue;
    await Promise.all(['.pt', '.optim', '.rng', '.lora.safetensors'].map((ext) => fsp.rm(path.join(dir, old + ext), { force: true })));
  }
  return path.join(dir, 'latest.json');
}

/** @internal Reads `latest.json` of a checkpoint folder (or the file itself). */
export async function readCheckpoint(from: string): Promise<{ dir: string; meta: CheckpointMeta & { optimizerGroups: { lr: number; initialLr?: number }[] } }> {
  const st = await fsp.stat(from).catch(() => null);
  if (!st) throw new Error(`resumeFrom: no checkpoint at '${from}'`);
  const file = st.isDirectory() ? path.join(from, 'latest.json') : from;
  const text = await fsp.readFile(file, 'utf8').catch(() => { throw new Error(`resumeFrom: '${from}' holds no latest.json`); });
  let meta;
  try { meta = JSON.parse(text); } catch { throw new Error(`resumeFrom: ${file} is not valid JSON`); }
  if (meta?.format !== 'finetorch-checkpoint') throw new Error(`resumeFrom: ${file} is not a finetorch checkpoint`);
  return { dir: path.dirname(file), meta };
}

/** @internal Restores model weights, optimizer state and RNG from a checkpoint, and its metadata when the model has none. */
export async function restoreCheckpoint(dir: string, meta: CheckpointMeta & { optimizerGroups: { lr: number; initialLr?: number }[] }, model: ScriptModule, optimizer: Optimizer): Promise<void> {
  if (meta.adapter && !adapterOf(model)) {
    throw new Error('resumeFrom: the checkpoint was saved with a LoRA adapter; attach the same adapter (torch.peft.lora with the same targets and rank) before resuming');
  }
  const lora: [string, Tensor][] = [];
  if (meta.adapter) {
    const full = path.join(dir, meta.adapter);
    const bytes = await fsp.readFile(full).catch((err: unknown) => { throw new Error(`resumeFrom: cannot read the adapter file '${full}': ${fsReason(err)}`); });
    for (const [n, v] of decodeSafetensors(bytes, `resumeFrom: ${full}`)) lora.push([n, tensor(v.data, { shape: v.shape })]);
  }
  const saved = await load(path.join(dir, meta.model));
  try {
    const src = new Map([...saved.namedParameters(), ...saved.namedBuffers(), ...lora]);
    const dst = [...model.namedParameters(), ...model.namedBuffers()];
    for (const [name, t] of dst) {
      const s = src.get(name);
      if (!s || s.shape.join() !== t.shape.join()) {
        throw new Error(`resumeFrom: the checkpoint does not fit this model ('${name}' ${s ? `has shape [${s.shape}], the model [${t.shape}]` : 'is missing'})`);
      }
      await native.op('copy_', [t.handle, s.handle], [], false);
    }
    // A model rebuilt from its base file for the resume has lost what the checkpoint recorded.
    if (model.metadata === undefined && saved.metadata !== undefined) model.metadata = saved.metadata;
  } finally {
    saved.dispose();
    for (const [, t] of lora) t.dispose();
  }
  // A damaged file is named, in the user's terms, before libtorch's own first line.
  const named = async (file: string, what: string, fn: (bytes: Buffer) => Promise<void>) => {
    const full = path.join(dir, file);
    const bytes = await fsp.readFile(full).catch((err: unknown) => { throw new Error(`resumeFrom: cannot read the ${what} file '${full}': ${fsReason(err)}`); });
    try {
      await fn(bytes);
    } catch (err) {
      throw new Error(`resumeFrom: the ${what} file '${full}' is damaged or not one finetorch wrote (${bytes.length} bytes): ${(err as Error).message}`);
    }
  };
  await named(meta.optimizer, 'optimizer state', (state) => optimizer.loadStateDict({ kind: optimizer.kind, groups: meta.optimizerGroups, state }));
  await named(meta.rng, 'random-generator state', async (bytes) => {
    const rng = tensor(new Uint8Array(bytes));
    try { await native.op('setRngState', [rng.handle], [], false); } finally { rng.dispose(); }
  });
}
