/**
 * Self-describing model files: `model.save(path, { metadata })` stores a JSON document in the
 * TorchScript archive as the extra file `finetorch.json`, `torch.jit.load` exposes it as
 * `model.metadata`, real PyTorch reads and writes it through `_extra_files`, later saves and
 * checkpoints keep it, damaged metadata is a warning, and transforms round-trip through JSON.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as torch from '../lib';
import { transforms, train } from '../lib';
import { Rng } from '../lib/data/random';
import { runTransform } from '../lib/transforms/pipeline';
import { compile } from '../lib/transforms/transform';
import { runPython, scratchDir } from './helpers/python';

let dir: string;
const file = (name: string) => path.join(dir, name);

beforeAll(() => {
  dir = scratchDir('metadata');
  // A tiny scripted model, and the same model saved by Python with good and damaged metadata.
  runPython(`
import json, sys, torch, torch.nn as nn
torch.manual_seed(0)
m = torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(12, 3)))
m.save('plain.pt')
good = {'format': 'finetorch-model', 'task': 'multi-label', 'classes': ['a', 'b', 'c'], 'note': 'from python'}
torch.jit.save(m, 'python.pt', _extra_files={'finetorch.json': json.dumps(good)})
torch.jit.save(m, 'badjson.pt', _extra_files={'finetorch.json': '{"classes": ["a",'})
torch.jit.save(m, 'array.pt', _extra_files={'finetorch.json': '[1, 2]'})
torch.jit.save(m, 'types.pt', _extra_files={'finetorch.json': json.dumps({'classes': 'abc', 'task': 'ranking', 'transform': {'type': 'blur'}, 'note': 1})})
`, dir);
});

afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const evalTransform = () => transforms.imagenet({ train: false, size: 64 });

describe('transforms to and from JSON', () => {
  test('imagenet eval at 64 is resize(73) + centerCrop(64) + toTensor + normalize(ImageNet), every default spelled out', () => {
    expect(JSON.parse(JSON.stringify(evalTransform()))).toEqual({
      type: 'compose', transforms: [
        { type: 'resize', size: 73, interpolation: 'bilinear' },
        { type: 'centerCrop', size: 64 },
        { type: 'toTensor' },
        { type: 'normalize', mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
      ],
    });
  });

  test('fromJSON rebuilds every factory with the same description and JSON', () => {
    const all = [
      evalTransform(),
      transforms.imagenet({ train: true, size: 96, interpolation: 'bicubic' }),
      transforms.compose([
        transforms.resize([20, 30], { interpolation: 'nearest' }), transforms.resize(16, { maxSize: 40 }),
        transforms.compose([transforms.randomResizedCrop(12, { scale: [0.5, 1], ratio: [0.9, 1.1] }), transforms.randomHorizontalFlip(0.25)]),
        transforms.colorJitter({ brightness: 0.3, saturation: [0.5, 1.5] }), transforms.centerCrop([10, 8]),
        transforms.toTensor(), transforms.normalize({ mean: [0.5], std: [0.25] }),
      ]),
    ];
    for (const t of all) {
      const back = transforms.fromJSON(JSON.stringify(t));
      expect(back.name).toBe(t.name);
      expect(back.toJSON()).toEqual(t.toJSON());
    }
  });

  test('a rebuilt transform computes the same pixels (imagenet eval at 64, and a seeded augmenting recipe)', async () => {
    const width = 90;
    const height = 70;
    const data = new Uint8Array(width * height * 3).map((_, i) => (i * 37 + (i >> 7)) & 255);
    for (const t of [evalTransform(), transforms.imagenet({ train: true, size: 48 })]) {
      const run = async (x: transforms.Transform) => {
        const d = await runTransform({ raw: { data: data.slice(), width, height, channels: 3 } }, compile(x), new Rng(7));
        const out = new Float32Array(d.shape.reduce((a, b) => a * b, 1));
        d.write(out, 0);
        return { shape: d.shape, out };
      };
      const [a, b] = await Promise.all([run(t), run(transforms.fromJSON(t.toJSON()))]);
      expect(b.shape).toEqual(a.shape);
      expect(Buffer.from(b.out.buffer).equals(Buffer.from(a.out.buffer))).toBe(true);
    }
  });

  test('fromJSON names the path of what it cannot rebuild: unknown type, unknown option, bad argument, bad JSON', () => {
    expect(() => transforms.fromJSON({ type: 'compose', transforms: [{ type: 'blur' }] } as never))
      .toThrow(/transforms\.fromJSON\.transforms\[0\]: unknown transform type "blur"/);
    expect(() => transforms.fromJSON({ type: 'centerCrop', size: 4, padding: 1 } as never)).toThrow(/centerCrop has no option 'padding'/);
    expect(() => transforms.fromJSON({ type: 'centerCrop', size: -4 } as never)).toThrow(/transforms\.fromJSON: centerCrop\(\): size must be a positive integer/);
    expect(() => transforms.fromJSON('{"type":')).toThrow(/not valid JSON/);
  });
});

describe('model metadata in the TorchScript archive', () => {
  test('save(path, { metadata }) stores finetorch.json; jit.load exposes it as model.metadata (undefined when absent)', async () => {
    const model = await torch.jit.load(file('plain.pt'));
    expect(model.metadata).toBeUndefined();
    const meta = { classes: ['cat', 'dog', 'eel'], task: 'single-label' as const, extra: { nested: [1, 'x'] } };
    await model.save(file('with.pt'), { metadata: meta });
    // libtorch's ExtraFilesMap puts it beside the model's records, where Python looks for it.
    expect(fs.readFileSync(file('with.pt')).includes('/extra/finetorch.json')).toBe(true);
    const back = await torch.jit.load(file('with.pt'));
    expect(back.metadata).toEqual(meta);
    // the model itself is unchanged: same output
    const x = torch.randn([2, 3, 2, 2]);
    const [a, b] = await Promise.all([model.forward(x), back.forward(x)]);
    expect(Array.from(await b.data() as Float32Array)).toEqual(Array.from(await a.data() as Float32Array));
    for (const m of [model, back]) m.dispose();
  });

  test('a loaded model keeps its metadata through save and serialize; a new value replaces it, null drops it', async () => {
    const model = await torch.jit.load(file('python.pt'));
    await model.save(file('kept.pt'));
    expect((await torch.jit.load(file('kept.pt'))).metadata).toEqual(model.metadata);
    expect((await torch.jit.load(await model.serialize())).metadata).toEqual(model.metadata);
    await model.save(file('replaced.pt'), { metadata: { classes: ['x', 'y', 'z'] } });
    expect((await torch.jit.load(file('replaced.pt'))).metadata).toEqual({ classes: ['x', 'y', 'z'] });
    expect(model.metadata?.note).toBe('from python'); // a save's metadata is that file's, not the model's
    await model.save(file('dropped.pt'), { metadata: null });
    expect((await torch.jit.load(file('dropped.pt'))).metadata).toBeUndefined();
    model.metadata = { task: 'regression' };
    expect((await torch.jit.load(await model.serialize())).metadata).toEqual({ task: 'regression' });
    model.metadata = null;
    expect((await torch.jit.load(await model.serialize())).metadata).toBeUndefined();
    model.dispose();
  });

  test('metadata survives a LoRA adapter: the merged save, save({ merge: false }) and merge() then save all keep it', async () => {
    const model = await torch.jit.load(file('python.pt'));
    await torch.peft.lora(model, { targets: ['1'], rank: 2, alpha: 4 });
    await model.save(file('lora-merged.pt'));
    await model.save(file('lora-base.pt'), { merge: false });
    await torch.peft.merge(model);
    await model.save(file('lora-merged-in-place.pt'));
    for (const f of ['lora-merged.pt', 'lora-base.pt', 'lora-merged-in-place.pt']) {
      const back = await torch.jit.load(file(f));
      expect(back.metadata).toEqual(model.metadata);
      expect(back.metadata?.note).toBe('from python');
      expect(back.namedParameters().some(([n]) => n.includes('lora'))).toBe(false);
      back.dispose();
    }
    model.dispose();
  });

  test('metadata must be a plain JSON object with well-typed known fields: save and the setter say which field', async () => {
    const model = await torch.jit.load(file('plain.pt'));
    await expect(model.save(file('x.pt'), { metadata: [1] as never })).rejects.toThrow(/save: metadata must be a plain object/);
    await expect(model.save(file('x.pt'), { metadata: { classes: [1, 2] } as never })).rejects.toThrow(/'classes' must be an array of strings/);
    expect(() => { model.metadata = { task: 'ranking' } as never; }).toThrow(/'task' must be one of 'single-label', 'multi-label', 'regression'/);
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    expect(() => { model.metadata = cyclic; }).toThrow(/metadata must be JSON/);
    expect(fs.existsSync(file('x.pt'))).toBe(false);
    model.dispose();
  });

  test('real PyTorch reads what finetorch wrote (_extra_files) and finetorch reads what PyTorch wrote', async () => {
    const model = await torch.jit.load(file('python.pt'));
    expect(model.metadata).toEqual({ format: 'finetorch-model', task: 'multi-label', classes: ['a', 'b', 'c'], note: 'from python' });
    const meta = train.describe({ classes: ['a', 'b', 'c'], transform: evalTransform(), task: 'single-label', settings: { epochs: 2 }, metrics: { valAccuracy: 0.75 } });
    await model.save(file('described.pt'), { metadata: meta });
    model.dispose();
    const out = runPython(`
import json, sys, torch
extra = {'finetorch.json': ''}
m = torch.jit.load(sys.argv[1], _extra_files=extra)
print(json.dumps(json.loads(extra['finetorch.json'])))
print(list(m(torch.zeros(1, 3, 2, 2)).shape))
`, dir, ['described.pt']).trim().split('\n');
    expect(JSON.parse(out[0])).toEqual(meta);
    expect(out[1]).toBe('[1, 3]');
  });

  test('damaged metadata is a FINETORCH_BAD_METADATA warning naming the file, and the model still loads', async () => {
    const warn = jest.spyOn(process, 'emitWarning').mockImplementation(() => undefined);
    try {
      const bad = await torch.jit.load(file('badjson.pt'));
      expect(bad.metadata).toBeUndefined();
      const arr = await torch.jit.load(file('array.pt'));
      expect(arr.metadata).toBeUndefined();
      const types = await torch.jit.load(file('types.pt'));
      // wrongly typed known fields are left out; the rest is kept
      expect(types.metadata).toEqual({ note: 1 });
      const calls = warn.mock.calls.map(([msg, opts]) => [String(msg), (opts as { code?: string })?.code]);
      expect(calls).toHaveLength(3);
      for (const [, code] of calls) expect(code).toBe('FINETORCH_BAD_METADATA');
      expect(calls[0][0]).toMatch(/badjson\.pt: its metadata \(finetorch\.json\) is not valid JSON/);
      expect(calls[1][0]).toMatch(/array\.pt: its metadata \(finetorch\.json\) is not a JSON object/);
      expect(calls[2][0]).toMatch(/types\.pt: .*'classes' must be an array of strings; 'task' must be one of .*; 'transform' is not a transform/);
      expect(Array.from((await bad.forward(torch.zeros([1, 12]))).shape)).toEqual([1, 3]);
      for (const m of [bad, arr, types]) m.dispose();
    } finally {
      warn.mockRestore();
    }
  });
});

describe('train.describe', () => {
  test('records classes, the eval transform as JSON, the task, both versions, settings and metrics', () => {
    const meta = train.describe({ classes: ['b', 'a'], transform: evalTransform(), task: 'single-label', settings: { lr: 1e-3 }, metrics: { valAccuracy: 0.9 } });
    expect(meta).toMatchObject({
      format: 'finetorch-model', task: 'single-label', classes: ['b', 'a'], transform: evalTransform().toJSON(),
      finetorch: torch.version.finetorch, libtorch: torch.version.libtorch, settings: { lr: 1e-3 }, metrics: { valAccuracy: 0.9 },
    });
    expect(Number.isNaN(Date.parse(meta.createdAt as string))).toBe(false);
    expect(transforms.fromJSON(meta.transform!).name).toBe(evalTransform().name);
  });

  test('rejects what it cannot record: an unknown option, a task, a transform that is not one', () => {
    expect(() => train.describe({ labels: ['a'] } as never)).toThrow(/unknown option 'labels'/);
    expect(() => train.describe({ task: 'ranking' as never })).toThrow(/'task' must be one of/);
    expect(() => train.describe({ transform: { type: 'toTensor' } as never })).toThrow(/transform must be a transform/);
  });
});

describe('metadata in checkpoints', () => {
  test('checkpoint model files carry the model metadata, and resuming a model without any adopts it', async () => {
    const batches = () => [0, 1].map((i) => ({ input: torch.randn([4, 3, 2, 2]), target: torch.tensor(new BigInt64Array([0n, 1n, 2n, BigInt(i)])) }));
    const ckpt = file('ckpt');
    const model = await torch.jit.load(file('plain.pt'));
    model.metadata = train.describe({ classes: ['a', 'b', 'c'], task: 'single-label' });
    await train.fit(model, { train: batches(), epochs: 1, optimizer: new torch.optim.SGD(model.parameters(), { lr: 0.1 }), progress: false, checkpoint: { dir: ckpt } });
    const latest = JSON.parse(fs.readFileSync(path.join(ckpt, 'latest.json'), 'utf8'));
    const saved = await torch.jit.load(path.join(ckpt, latest.model));
    expect(saved.metadata).toEqual(model.metadata);
    const fresh = await torch.jit.load(file('plain.pt'));
    await train.fit(fresh, { train: batches(), epochs: 2, optimizer: new torch.optim.SGD(fresh.parameters(), { lr: 0.1 }), progress: false, resumeFrom: ckpt });
    expect(fresh.metadata).toEqual(model.metadata);
    for (const m of [model, saved, fresh]) m.dispose();
  });
});

describe('README', () => {
  test('the Python snippet reads a finetune-style file with /usr/bin/python3', async () => {
    const readme = fs.readFileSync(path.join(__dirname, '..', 'README.md'), 'utf8');
    const snippet = /<!-- python-metadata-snippet -->\n```python\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(snippet).toBeDefined();
    const model = await torch.jit.load(file('plain.pt'));
    await model.save(file('readme.pt'), { metadata: train.describe({ classes: ['cat', 'dog', 'eel'], transform: evalTransform(), task: 'single-label' }) });
    model.dispose();
    const out = runPython(snippet!, dir, ['readme.pt']).trim().split('\n');
    expect(out).toEqual(["single-label ['cat', 'dog', 'eel']", 'input size 64, mean [0.485, 0.456, 0.406]']);
  });
});
