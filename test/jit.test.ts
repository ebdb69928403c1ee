/**
 * torch.jit against real PyTorch: TorchScript models exported by Python at test time (see
 * helpers/python.ts), loaded, adapted (replaceHead, freeze/unfreeze), run, saved, and read back by
 * Python's torch.jit.load.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as vm from 'vm';
import * as torch from '../lib';
import type { Tensor } from '../lib';
import { fixtures, readFloat32, runPython, scratchDir, type Fixtures } from './helpers/python';

let fx: Fixtures;
let tmp: string;

beforeAll(async () => {
  fx = await fixtures();
  tmp = scratchDir('jit');
});

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

/** The largest |a[i] - b[i]|; lengths must match. */
function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

async function floats(t: Tensor): Promise<Float32Array> {
  expect(t.dtype).toBe('float32');
  return (await t.data()) as Float32Array;
}

const resnetInput = () => torch.tensor(readFloat32(fx.resnetInput), { shape: fx.resnetInputShape });
const param = (m: torch.jit.ScriptModule, name: string) => {
  const hit = m.namedParameters().find(([n]) => n === name);
  if (!hit) throw new Error(`no parameter ${name}`);
  return hit[1];
};
const buffer = (m: torch.jit.ScriptModule, name: string) => {
  const hit = m.namedBuffers().find(([n]) => n === name);
  if (!hit) throw new Error(`no buffer ${name}`);
  return hit[1];
};

/**
 * Loads `file` in Python, puts it in train or eval mode as `mode` says (or leaves it), runs it on
 * the resnet input, writes the output to `out` and prints a JSON report.
 */
function pythonReport(file: string, out: string, mode: 'eval' | 'keep'): {
  fcWeight: number[]; fcBias: number[]; training: boolean; trainingOf: Record<string, boolean>; outShape: number[];
} {
  const code = `
import json, sys
import numpy as np, torch
file, x_path, out = sys.argv[1:4]
m = torch.jit.load(file)
if sys.argv[4] == 'eval':
    m.eval()
training = {name: mod.training for name, mod in m.named_modules()}
root_training = m.training
x = torch.from_numpy(np.fromfile(x_path, dtype='<f4').reshape(${JSON.stringify(fx.resnetInputShape)}))
if sys.argv[4] == 'eval':
    with torch.no_grad():
        y = m(x)
    y.numpy().astype('<f4').tofile(out)
    shape = list(y.shape)
else:
    shape = []
np.asarray(m.fc.weight.detach().numpy(), dtype='<f4').tofile(out + '.fcw')
print(json.dumps(dict(fcWeight=list(m.fc.weight.shape), fcBias=list(m.fc.bias.shape), training=root_training,
                      trainingOf=training, outShape=shape)))
`;
  return JSON.parse(runPython(code, undefined, [file, fx.resnetInput, out, mode]));
}

describe('resnet18 (scripted torchvision, 1000-class head)', () => {
  test('eval-mode forward matches PyTorch on the same input within 1e-5', async () => {
    const model = await torch.jit.load(fx.resnet18);
    expect(model.traced).toBe(false);
    model.eval();
    expect(model.training).toBe(false);
    const y = await model.forward(resnetInput());
    expect(y.shape).toEqual(fx.resnetOutputShape);
    expect(fx.resnetOutputShape).toEqual([2, 1000]);
    const want = readFloat32(fx.resnetOutput);
    expect(maxAbsDiff(await floats(y), want)).toBeLessThanOrEqual(1e-5);
    // the output is not trivially zero, so the comparison means something
    expect(Math.max(...Array.from(want, Math.abs))).toBeGreaterThan(1e-2);
    model.dispose();
  });

  test('numParameters and namedParameters match torchvision resnet18 (11,689,512 parameters, 62 tensors)', async () => {
    const model = await torch.jit.load(fx.resnet18);
    expect(model.numParameters()).toBe(11_689_512);
    expect(model.namedParameters()).toHaveLength(62);
    expect(param(model, 'fc.weight').shape).toEqual([1000, 512]);
    expect(param(model, 'conv1.weight').shape).toEqual([64, 3, 7, 7]);
    // BatchNorm running statistics are buffers, not parameters
    expect(model.namedBuffers().map(([n]) => n)).toContain('bn1.running_mean');
    expect(model.namedParameters().map(([n]) => n)).not.toContain('bn1.running_mean');
    model.dispose();
  });

  test("replaceHead({ numClasses: 5 }) picks 'fc', makes a [5, 512] weight and [5] bias inside nn.Linear's ±1/sqrt(512)", async () => {
    const model = await torch.jit.load(fx.resnet18);
    expect(model.headCandidates()).toEqual(['fc']);
    const logs: string[] = [];
    const name = await model.replaceHead({ numClasses: 5, log: (m) => logs.push(m) });
    expect(name).toBe('fc');
    expect(logs).toEqual(["replaceHead chose 'fc' (Linear 512 -> 1000), now 512 -> 5"]);

    const w = param(model, 'fc.weight');
    const b = param(model, 'fc.bias');
    expect(w.shape).toEqual([5, 512]);
    expect(b.shape).toEqual([5]);
    expect(w.requiresGrad).toBe(true);
    expect(b.requiresGrad).toBe(true);
    const bound = 1 / Math.sqrt(512);
    for (const values of [await floats(w), await floats(b)]) {
      for (const v of values) expect(Math.abs(v)).toBeLessThanOrEqual(bound);
    }
    // uniform over the whole range, not a constant: 2560 draws come close to both ends
    const wv = Array.from(await floats(w));
    expect(Math.max(...wv)).toBeGreaterThan(0.9 * bound);
    expect(Math.min(...wv)).toBeLessThan(-0.9 * bound);
    expect(new Set(wv).size).toBeGreaterThan(2500);
    expect(model.numParameters()).toBe(11_689_512 - 1000 * 513 + 5 * 513);

    // the model runs with the new head
    model.eval();
    const y = await model.forward(resnetInput());
    expect(y.shape).toEqual([2, 5]);
    model.dispose();
  });

  test("freeze() then unfreeze('fc.*') leaves exactly fc.weight and fc.bias trainable", async () => {
    const model = await torch.jit.load(fx.resnet18);
    await model.replaceHead({ numClasses: 5, log: () => {} });
    expect(model.freeze()).toBe(model);
    expect(model.parameters({ trainable: true })).toHaveLength(0);
    expect(model.numParameters({ trainable: true })).toBe(0);
    expect(model.unfreeze('fc.*')).toBe(model);

    const trainable = model.parameters({ trainable: true });
    expect(trainable).toHaveLength(2);
    expect(model.numParameters({ trainable: true })).toBe(5 * 512 + 5);
    expect(model.numParameters({ trainable: false })).toBe(model.numParameters() - (5 * 512 + 5));
    const names = model.namedParameters().filter(([, t]) => t.requiresGrad).map(([n]) => n);
    expect(names).toEqual(['fc.weight', 'fc.bias']);
    expect(trainable[0].handle).toBe(param(model, 'fc.weight').handle);
    expect(trainable[1].handle).toBe(param(model, 'fc.bias').handle);
    model.dispose();
  });

  test('saved after replaceHead, Python reads it back: fc.weight [5, 512], same weights, same eval output within 1e-5', async () => {
    const model = await torch.jit.load(fx.resnet18);
    await model.replaceHead({ numClasses: 5, log: () => {} });
    model.freeze().unfreeze('fc.*').eval();
    const ours = await floats(await model.forward(resnetInput()));
    const file = path.join(tmp, 'finetuned.pt');
    await model.save(file);

    const out = path.join(tmp, 'finetuned.out');
    const report = pythonReport(file, out, 'eval');
    expect(report.fcWeight).toEqual([5, 512]);
    expect(report.fcBias).toEqual([5]);
    expect(report.outShape).toEqual([2, 5]);
    expect(maxAbsDiff(readFloat32(out), ours)).toBeLessThanOrEqual(1e-5);
    expect(maxAbsDiff(readFloat32(`${out}.fcw`), await floats(param(model, 'fc.weight')))).toBe(0);
    model.dispose();
  });

  describe('freeze/unfreeze patterns', () => {
    let model: torch.jit.ScriptModule;
    let names: string[];
    beforeAll(async () => {
      model = await torch.jit.load(fx.resnet18);
      names = model.namedParameters().map(([n]) => n);
    });
    afterAll(() => model.dispose());
    const trainableNames = () => model.namedParameters().filter(([, t]) => t.requiresGrad).map(([n]) => n);

    test("'layer4.**' matches every layer4 parameter, at any depth, and nothing else", () => {
      model.freeze().unfreeze('layer4.**');
      const want = names.filter((n) => n.startsWith('layer4.'));
      expect(want).toHaveLength(15); // 2 blocks x (2 conv + 2 bn x 2) + downsample conv + bn x 2
      expect(trainableNames()).toEqual(want);
      expect(want).toContain('layer4.0.downsample.1.weight');
    });

    test("'layer4.*' is one level deep: it matches no parameter and says so", () => {
      expect(() => model.freeze('layer4.*')).toThrow(/^freeze\(\): no parameter matches layer4\.\*; names look like 'conv1\.weight'$/);
    });

    test('a RegExp selects by regular expression', () => {
      model.freeze().unfreeze(/^layer[34]\.\d\.bn2\./);
      expect(trainableNames()).toEqual([
        'layer3.0.bn2.weight', 'layer3.0.bn2.bias', 'layer3.1.bn2.weight', 'layer3.1.bn2.bias',
        'layer4.0.bn2.weight', 'layer4.0.bn2.bias', 'layer4.1.bn2.weight', 'layer4.1.bn2.bias',
      ]);
    });

    test('a global RegExp matches every name (its lastIndex does not carry over between names)', () => {
      model.freeze().unfreeze(/weight/g);
      expect(trainableNames()).toEqual(names.filter((n) => n.endsWith('weight')));
    });

    test('an array mixes globs and RegExps; freeze with patterns narrows what is trainable', () => {
      model.freeze().unfreeze(['fc.*', /^conv1\./, 'bn1.bias']);
      expect(trainableNames()).toEqual(['conv1.weight', 'bn1.bias', 'fc.weight', 'fc.bias']);
      model.freeze('fc.bias');
      expect(trainableNames()).toEqual(['conv1.weight', 'bn1.bias', 'fc.weight']);
      model.unfreeze();
      expect(trainableNames()).toEqual(names);
    });
  });

  describe('frozen BatchNorm stays in eval mode under train()', () => {
    test('Python sees m.training True, frozen bn1 False, unfrozen layer4 BatchNorms True', async () => {
      const model = await torch.jit.load(fx.resnet18);
      model.freeze().unfreeze('layer4.**').train();
      expect(model.training).toBe(true);
      const file = path.join(tmp, 'train-mode.pt');
      await model.save(file);
      const report = pythonReport(file, path.join(tmp, 'train-mode.out'), 'keep');
      expect(report.training).toBe(true);
      expect(report.trainingOf['']).toBe(true);
      expect(report.trainingOf.bn1).toBe(false);
      expect(report.trainingOf['layer1.0.bn1']).toBe(false);
      expect(report.trainingOf['layer3.1.bn2']).toBe(false);
      expect(report.trainingOf['layer4.0.bn1']).toBe(true);
      expect(report.trainingOf['layer4.0.downsample.1']).toBe(true);
      // non-BatchNorm modules follow train()
      expect(report.trainingOf.conv1).toBe(true);
      expect(report.trainingOf.layer1).toBe(true);
      model.dispose();
    });

    test('train-mode forwards leave the running statistics of frozen BatchNorms unchanged and update the others', async () => {
      const model = await torch.jit.load(fx.resnet18);
      model.freeze().unfreeze('layer4.**').train();
      const watched = ['bn1.running_mean', 'bn1.running_var', 'layer2.0.bn1.running_mean', 'layer4.0.bn1.running_mean', 'layer4.1.bn2.running_var'];
      const before = new Map<string, Float32Array>();
      for (const n of watched) before.set(n, Float32Array.from(await floats(buffer(model, n))));
      const tracked = async (n: string) => Number((await buffer(model, n).data())[0]);
      expect(await tracked('bn1.num_batches_tracked')).toBe(0);

      await torch.noGrad(async () => {
        for (let i = 0; i < 2; i++) (await model.forward(resnetInput())).dispose();
      });

      for (const n of ['bn1.running_mean', 'bn1.running_var', 'layer2.0.bn1.running_mean']) {
        expect(maxAbsDiff(await floats(buffer(model, n)), before.get(n)!)).toBe(0);
      }
      for (const n of ['layer4.0.bn1.running_mean', 'layer4.1.bn2.running_var']) {
        expect(maxAbsDiff(await floats(buffer(model, n)), before.get(n)!)).toBeGreaterThan(0);
      }
      expect(await tracked('bn1.num_batches_tracked')).toBe(0);
      expect(await tracked('layer4.0.bn1.num_batches_tracked')).toBe(2);
      model.dispose();
    });

    test('with frozenBatchNormEval = false, train() puts every BatchNorm in training mode', async () => {
      const model = await torch.jit.load(fx.resnet18);
      model.frozenBatchNormEval = false;
      model.freeze().train();
      const file = path.join(tmp, 'all-train.pt');
      await model.save(file);
      const report = pythonReport(file, path.join(tmp, 'all-train.out'), 'keep');
      expect(report.trainingOf.bn1).toBe(true);
      expect(report.trainingOf['layer4.0.bn1']).toBe(true);
      model.dispose();
    });

    test('eval() puts every module in eval mode', async () => {
      const model = await torch.jit.load(fx.resnet18);
      model.freeze().unfreeze('layer4.**').train().eval();
      expect(model.training).toBe(false);
      const file = path.join(tmp, 'eval-mode.pt');
      await model.save(file);
      const report = pythonReport(file, path.join(tmp, 'eval-mode.out'), 'keep');
      expect(Object.entries(report.trainingOf).filter(([, on]) => on)).toEqual([]);
      model.dispose();
    });
  });

  test('namedModules() gives dotted names and Python type names', async () => {
    const model = await torch.jit.load(fx.resnet18);
    const mods = new Map(model.namedModules());
    expect(mods.get('')).toEqual({ name: '', type: 'torchvision.models.resnet.ResNet' });
    expect(mods.get('fc')).toEqual({ name: 'fc', type: 'torch.nn.modules.linear.Linear' });
    expect(mods.get('conv1')?.type).toBe('torch.nn.modules.conv.Conv2d');
    expect(mods.get('bn1')?.type).toBe('torch.nn.modules.batchnorm.BatchNorm2d');
    expect(mods.get('layer4')?.type).toBe('torch.nn.modules.container.Sequential');
    expect(mods.get('layer4.0')?.type).toBe('torchvision.models.resnet.BasicBlock');
    expect(mods.get('layer4.0.downsample.1')?.type).toBe('torch.nn.modules.batchnorm.BatchNorm2d');
    // no mangled names (___torch_mangle_N) leak through
    for (const [, m] of mods) expect(m.type).not.toMatch(/mangle/);
    model.dispose();
  });

  test('summary() has a row per module that owns parameters, fc among them', async () => {
    const model = await torch.jit.load(fx.resnet18);
    await model.replaceHead({ numClasses: 5, log: () => {} });
    model.freeze().unfreeze('fc.*');
    const s = model.summary();
    const fc = s.rows.find((r) => r.name === 'fc');
    expect(fc).toEqual({ name: 'fc', type: 'torch.nn.modules.linear.Linear', shape: [[5, 512], [5]], parameters: 2565, trainable: 2565 });
    expect(s.rows.find((r) => r.name === 'conv1')).toMatchObject({ parameters: 9408, trainable: 0 });
    expect(s.rows.some((r) => r.name === 'relu' || r.name === 'layer4')).toBe(false); // own no parameters
    expect(s.totalParameters).toBe(model.numParameters());
    expect(s.trainableParameters).toBe(2565);
    expect(s.headCandidates).toEqual(['fc']);

    const text = s.toString();
    const lines = text.split('\n');
    expect(lines[0]).toMatch(/^name\s+type\s+shape\s+parameters\s+trainable$/);
    expect(lines.find((l) => l.startsWith('fc '))).toMatch(/^fc\s+Linear\s+\[5, 512\] \[5\]\s+2,565\s+yes$/);
    expect(lines.find((l) => l.startsWith('conv1 '))).toMatch(/\s+9,408\s+no$/);
    expect(text).toContain(`total parameters: ${model.numParameters().toLocaleString('en-US')}, trainable: 2,565`);
    expect(text).toContain('head candidates (final Linear layers): fc');
    model.dispose();
  });
});

describe('other models', () => {
  test('a Dict[str, Tensor] input and Tuple[Tensor, Tensor] output: a plain object in, an array of Tensors out', async () => {
    const model = await torch.jit.load(fx.dictTuple);
    expect(model.methods()).toEqual([{ name: 'forward', args: [{ name: 'inputs', type: 'Dict[str, Tensor]' }], returns: 'Tuple[Tensor, Tensor]' }]);
    const out = await model.forward({ a: torch.tensor([1, 2, 3]), b: torch.tensor([10, 20, 30]) });
    expect(Array.isArray(out)).toBe(true);
    expect(out).toHaveLength(2);
    expect(out[0]).toBeInstanceOf(torch.Tensor);
    expect(out[1]).toBeInstanceOf(torch.Tensor);
    expect(Array.from(await out[0].data())).toEqual([11, 22, 33]);
    expect(Array.from(await out[1].data())).toEqual([2, 4, 6]); // a * scale, scale = 2
    // runMethod is the same call by name
    const again = await model.runMethod('forward', { a: torch.tensor([1]), b: torch.tensor([1]) });
    expect(Array.from(await again[0].data())).toEqual([2]);
    model.dispose();
  });

  test('the tiny MLP matches PyTorch on a fixed input', async () => {
    const model = await torch.jit.load(fx.mlp);
    expect(model.numParameters()).toBe(4 * 8 + 8 + 8 * 2 + 2);
    const y = await model.forward(torch.tensor(readFloat32(fx.mlpInput), { shape: [3, 4] }));
    expect(y.shape).toEqual([3, 2]);
    expect(maxAbsDiff(await floats(y), readFloat32(fx.mlpOutput))).toBeLessThanOrEqual(1e-6);
    model.dispose();
  });

  test("a traced model with BatchNorm reports traced and warns once, with code 'FINETORCH_TRACED_MODEL'", async () => {
    // jest hands each test file a copy of \`process\`; Node emits 'warning' on the real one, which
    // code run in the main context still sees.
    const realProcess = vm.runInThisContext('process') as NodeJS.Process;
    const seen: Error[] = [];
    const onWarning = (w: Error) => { seen.push(w); };
    realProcess.on('warning', onWarning);
    try {
      const first = await torch.jit.load(fx.tracedBn);
      const second = await torch.jit.load(fx.tracedBn);
      const scripted = await torch.jit.load(fx.resnet18); // scripted: no warning
      // warnings are emitted on the next tick; one macrotask later they have all arrived
      await new Promise((resolve) => setImmediate(resolve));
      const ours = seen.filter((w) => (w as NodeJS.ErrnoException).code === 'FINETORCH_TRACED_MODEL');
      expect(ours).toHaveLength(1);
      expect(ours[0].message).toContain(fx.tracedBn);
      expect(ours[0].message).toMatch(/torch\.jit\.script/);
      expect(first.traced).toBe(true);
      expect(second.traced).toBe(true);
      expect(scripted.traced).toBe(false);
      // it still runs
      const y = await first.forward(torch.zeros(fx.tracedBnInputShape));
      expect(y.shape).toEqual([1, 2]);
      for (const m of [first, second, scripted]) m.dispose();
    } finally {
      realProcess.off('warning', onWarning);
    }
  });
});

describe('save is atomic', () => {
  const leftovers = (dir: string) => fs.readdirSync(dir).filter((f) => f.endsWith('.tmp') || f.startsWith('.'));

  test('after save the folder holds only the saved file, which loads back', async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'save-'));
    const model = await torch.jit.load(fx.mlp);
    await model.save(path.join(dir, 'mlp.pt'));
    expect(fs.readdirSync(dir)).toEqual(['mlp.pt']);
    const back = await torch.jit.load(path.join(dir, 'mlp.pt'));
    expect(back.numParameters()).toBe(model.numParameters());
    model.dispose();
    back.dispose();
  });

  test('saving over an existing file replaces it', async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'save-'));
    const file = path.join(dir, 'model.pt');
    fs.writeFileSync(file, 'old contents');
    const model = await torch.jit.load(fx.mlp);
    await model.save(file);
    expect(fs.readdirSync(dir)).toEqual(['model.pt']);
    expect(leftovers(dir)).toEqual([]);
    const bytes = fs.readFileSync(file);
    expect(bytes.readUInt32LE(0)).toBe(0x04034b50); // a zip now
    const back = await torch.jit.load(file);
    expect(back.namedParameters().map(([n]) => n)).toEqual(model.namedParameters().map(([n]) => n));

    // and over a previously saved model, with different weights
    await model.replaceHead({ numClasses: 3, log: () => {} });
    await model.save(file);
    expect(fs.readdirSync(dir)).toEqual(['model.pt']);
    const again = await torch.jit.load(file);
    expect(param(again, '2.weight').shape).toEqual([3, 8]);
    for (const m of [model, back, again]) m.dispose();
  });

  test('saving into a missing folder rejects and creates nothing', async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'save-'));
    const missing = path.join(dir, 'no', 'such');
    const model = await torch.jit.load(fx.mlp);
    await expect(model.save(path.join(missing, 'model.pt'))).rejects.toThrow(`save: folder ${missing} does not exist`);
    expect(fs.readdirSync(dir)).toEqual([]);
    expect(fs.existsSync(path.join(dir, 'no'))).toBe(false);
    model.dispose();
  });

  test('saving to a path that is a folder rejects and leaves no temporary file', async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'save-'));
    fs.mkdirSync(path.join(dir, 'taken'));
    const model = await torch.jit.load(fx.mlp);
    await expect(model.save(path.join(dir, 'taken'))).rejects.toThrow(/^save\(.*taken\): /);
    expect(fs.readdirSync(dir)).toEqual(['taken']);
    expect(fs.readdirSync(path.join(dir, 'taken'))).toEqual([]);
    model.dispose();
  });
});

describe('load sources and options', () => {
  test('from a Buffer (also one that is a view into a larger ArrayBuffer)', async () => {
    const bytes = fs.readFileSync(fx.mlp);
    const fromBuffer = await torch.jit.load(bytes);
    expect(fromBuffer.source).toBe('buffer');
    // a Uint8Array view with an offset: load must not read the bytes around it
    const padded = Buffer.concat([Buffer.from('junk before the model'), bytes, Buffer.from('junk after')]);
    const view = new Uint8Array(padded.buffer, padded.byteOffset + 21, bytes.length);
    const fromView = await torch.jit.load(view);
    const x = torch.tensor(readFloat32(fx.mlpInput), { shape: [3, 4] });
    const want = readFloat32(fx.mlpOutput);
    for (const m of [fromBuffer, fromView]) {
      expect(maxAbsDiff(await floats(await m.forward(x)), want)).toBeLessThanOrEqual(1e-6);
      m.dispose();
    }
  });

  test('isolate: true loads a valid file, from a path and from a Buffer', async () => {
    const fromPath = await torch.jit.load(fx.mlp, { isolate: true });
    const fromBuffer = await torch.jit.load(fs.readFileSync(fx.mlp), { isolate: true });
    const x = torch.tensor(readFloat32(fx.mlpInput), { shape: [3, 4] });
    for (const m of [fromPath, fromBuffer]) {
      expect(maxAbsDiff(await floats(await m.forward(x)), readFloat32(fx.mlpOutput))).toBeLessThanOrEqual(1e-6);
      m.dispose();
    }
  });

  test("device: 'cpu' puts every parameter on the CPU", async () => {
    const model = await torch.jit.load(fx.mlp, { device: 'cpu' });
    expect(new Set(model.parameters().map((t) => t.device))).toEqual(new Set(['cpu']));
    model.dispose();
  });
});
