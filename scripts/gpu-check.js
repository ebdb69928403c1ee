#!/usr/bin/env node
// The CUDA check program run by scripts/gpu-check (plain Node, no jest): assertions on the CUDA
// paths, then training-throughput benchmarks against PyTorch eager on the same GPU.
// Usage: node scripts/gpu-check.js RESULTS_DIR
'use strict';
const assert = require('assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');
const torch = require('../dist');

const results = path.resolve(process.argv[2] || 'gpu-results');
fs.mkdirSync(results, { recursive: true });
const python = process.env.FINETORCH_PYTHON || 'python3';
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'finetorch-gpu-'));
const py = (code) => execFileSync(python, ['-c', code], { cwd: work, maxBuffer: 1 << 26 }).toString();
const log = (...a) => console.log('gpu-check:', ...a);

// A scripted ResNet (torchvision's when present, else the same architecture defined here).
const MODELS = `
import torch, torch.nn as nn
try:
    import torchvision
    def resnet(depth): return getattr(torchvision.models, f'resnet{depth}')()
except ImportError:
    class Basic(nn.Module):
        expansion = 1
        def __init__(s, i, o, st=1):
            super().__init__()
            s.conv1 = nn.Conv2d(i, o, 3, st, 1, bias=False); s.bn1 = nn.BatchNorm2d(o)
            s.conv2 = nn.Conv2d(o, o, 3, 1, 1, bias=False); s.bn2 = nn.BatchNorm2d(o)
            s.down = nn.Sequential(nn.Conv2d(i, o, 1, st, bias=False), nn.BatchNorm2d(o)) if st != 1 or i != o else nn.Identity()
        def forward(s, x): return torch.relu(s.bn2(s.conv2(torch.relu(s.bn1(s.conv1(x))))) + s.down(x))
    class Bottle(nn.Module):
        expansion = 4
        def __init__(s, i, o, st=1):
            super().__init__()
            s.conv1 = nn.Conv2d(i, o, 1, bias=False); s.bn1 = nn.BatchNorm2d(o)
            s.conv2 = nn.Conv2d(o, o, 3, st, 1, bias=False); s.bn2 = nn.BatchNorm2d(o)
            s.conv3 = nn.Conv2d(o, o * 4, 1, bias=False); s.bn3 = nn.BatchNorm2d(o * 4)
            s.down = nn.Sequential(nn.Conv2d(i, o * 4, 1, st, bias=False), nn.BatchNorm2d(o * 4)) if st != 1 or i != o * 4 else nn.Identity()
        def forward(s, x):
            y = torch.relu(s.bn1(s.conv1(x))); y = torch.relu(s.bn2(s.conv2(y)))
            return torch.relu(s.bn3(s.conv3(y)) + s.down(x))
    class ResNet(nn.Module):
        def __init__(s, block, layers):
            super().__init__()
            s.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False); s.bn1 = nn.BatchNorm2d(64); s.pool = nn.MaxPool2d(3, 2, 1)
            mods, i = [], 64
            for n, (o, st) in enumerate(zip([64, 128, 256, 512], [1, 2, 2, 2])):
                blocks = []
                for k in range(layers[n]):
                    blocks.append(block(i, o, st if k == 0 else 1)); i = o * block.expansion
                mods.append(nn.Sequential(*blocks))
            s.layer1, s.layer2, s.layer3, s.layer4 = mods
            s.fc = nn.Linear(i, 1000)
        def forward(s, x):
            x = s.pool(torch.relu(s.bn1(s.conv1(x))))
            x = s.layer4(s.layer3(s.layer2(s.layer1(x))))
            return s.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))
    def resnet(depth): return ResNet(Basic, [2, 2, 2, 2]) if depth == 18 else ResNet(Bottle, [3, 4, 6, 3])
`;

async function checks() {
  if (!torch.cuda.isAvailable()) {
    console.error(`gpu-check: CUDA is not available to finetorch (libtorch ${torch.version.libtorch}, CUDA runtime ${torch.version.cuda ?? 'none: a CPU build'}). ` +
      'Run this on a machine with an NVIDIA GPU whose python3 has a CUDA torch.');
    process.exit(2);
  }
  log(`devices: ${torch.cuda.deviceCount()}, libtorch ${torch.version.libtorch}, CUDA ${torch.version.cuda}`);

  // Tensors round-trip to and from the GPU.
  const host = torch.tensor([[1, 2], [3, 4]]);
  const dev = await host.to('cuda');
  assert.strictEqual(dev.device, 'cuda:0');
  assert.deepStrictEqual(Array.from(await (await dev.matmul(dev)).data()), [7, 10, 15, 22]);
  log('tensor round trip: ok');

  py(`${MODELS}
torch.manual_seed(0)
torch.jit.script(resnet(18)).save('r18.pt')
torch.jit.script(resnet(50)).save('r50.pt')`);

  // resnet18 on CUDA: new head, 20 AdamW steps in fp32, bf16 and fp16; the loss falls.
  const x = torch.randn([16, 3, 64, 64]);
  const y = torch.randint(0, 10, [16]);
  for (const amp of [false, 'bf16', 'fp16']) {
    const model = await torch.jit.load(path.join(work, 'r18.pt'), { device: 'cuda' });
    await model.replaceHead({ numClasses: 10, log: () => {} });
    const opt = new torch.optim.AdamW(model.parameters(), { lr: 1e-3 });
    const losses = [];
    await torch.train.fit(model, {
      train: Array.from({ length: 20 }, () => ({ input: x, target: y })), epochs: 1, optimizer: opt, amp,
      keepBatches: true, progress: false, callbacks: { onBatchEnd: (b) => { losses.push(b.loss); } },
    });
    const first = losses.slice(0, 3).reduce((a, b) => a + b) / 3;
    const last = losses.slice(-3).reduce((a, b) => a + b) / 3;
    assert.ok(last < first, `loss did not fall with amp=${amp}: ${first} -> ${last}`);
    log(`resnet18 20 steps amp=${amp || 'fp32'}: loss ${first.toFixed(3)} -> ${last.toFixed(3)}`);
    if (amp === false) {
      await model.save(path.join(work, 'tuned.pt'));
      const ours = await torch.noGrad(async () => (await (await model.eval().forward(await x.to('cuda'))).data()));
      fs.writeFileSync(path.join(work, 'x.bin'), Buffer.from((await x.data()).buffer));
      const theirs = JSON.parse(py(`
import torch, json, numpy as np
m = torch.jit.load('tuned.pt', map_location='cuda').eval()
x = torch.from_numpy(np.fromfile('x.bin', dtype=np.float32).reshape(16, 3, 64, 64)).cuda()
with torch.no_grad(): print(json.dumps(m(x).float().cpu().flatten().tolist()))`));
      const diff = Math.max(...theirs.map((v, i) => Math.abs(v - ours[i])));
      assert.ok(diff < 1e-3, `saved model differs in Python by ${diff}`);
      log(`saved model loads in Python on CUDA, max |diff| ${diff.toExponential(2)}`);
    }
    model.dispose();
    opt.dispose();
  }

  // Out-of-range labels are an Error, and the CUDA context survives.
  const model = await torch.jit.load(path.join(work, 'r18.pt'), { device: 'cuda' });
  await model.replaceHead({ numClasses: 5, log: () => {} });
  const opt = new torch.optim.AdamW(model.parameters());
  await assert.rejects(
    torch.train.fit(model, { train: [{ input: x, target: torch.full([16], 7, { dtype: 'int64' }) }], epochs: 1, optimizer: opt, progress: false }),
    /labels must be in \[0, 5\): got 7/,
  );
  assert.deepStrictEqual(Array.from(await (await dev.add(1)).data()), [2, 3, 4, 5]);
  log('out-of-range labels: Error, CUDA context alive');
}

async function bench(name, file, { batch, size, headOnly, steps }) {
  const model = await torch.jit.load(path.join(work, file), { device: 'cuda' });
  await model.replaceHead({ numClasses: 1000, log: () => {} });
  if (headOnly) model.freeze().unfreeze('fc.*');
  const opt = new torch.optim.AdamW(model.parameters({ trainable: true }), { lr: 1e-4 });
  torch.backends.cudnn.benchmark = true;
  const input = await torch.randn([batch, 3, size, size]).to('cuda');
  const target = await torch.randint(0, 1000, [batch]).to('cuda');
  const batches = (n) => Array.from({ length: n }, () => ({ input, target }));
  const common = { optimizer: opt, epochs: 1, keepBatches: true, progress: false, amp: 'bf16', channelsLast: true };
  await torch.train.fit(model, { ...common, train: batches(5) });
  await torch.cuda.synchronize();
  const t0 = process.hrtime.bigint();
  await torch.train.fit(model, { ...common, train: batches(steps) });
  await torch.cuda.synchronize();
  const ours = (batch * steps) / (Number(process.hrtime.bigint() - t0) / 1e9);
  const theirs = JSON.parse(py(`
import torch, time, json
torch.backends.cudnn.benchmark = True
m = torch.jit.load('${file}').cuda()
m.fc = torch.nn.Linear(m.fc.in_features, 1000).cuda()
m = m.to(memory_format=torch.channels_last).train()
if ${headOnly ? 'True' : 'False'}:
    for n, p in m.named_parameters(): p.requires_grad = n.startswith('fc.')
opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-4)
x = torch.randn(${batch}, 3, ${size}, ${size}, device='cuda').to(memory_format=torch.channels_last)
y = torch.randint(0, 1000, (${batch},), device='cuda')
lf = torch.nn.CrossEntropyLoss()
def step():
    with torch.autocast('cuda', dtype=torch.bfloat16):
        loss = lf(m(x), y)
    loss.backward(); opt.step(); opt.zero_grad(); return loss.item()
for _ in range(5): step()
torch.cuda.synchronize(); t = time.perf_counter()
for _ in range(${steps}): step()
torch.cuda.synchronize()
print(json.dumps({'sps': ${batch * steps} / (time.perf_counter() - t), 'gpu': torch.cuda.get_device_name()}))`));
  model.dispose();
  opt.dispose();
  return { name, ours, pytorch: theirs.sps, gpu: theirs.gpu };
}

(async () => {
  await checks();
  const rows = [
    await bench('resnet50 full fine-tune, batch 128, 224x224, bf16, channels_last', 'r50.pt', { batch: 128, size: 224, steps: 20 }),
    await bench('resnet18 head-only, batch 128, 224x224, bf16, channels_last', 'r18.pt', { batch: 128, size: 224, headOnly: true, steps: 30 }),
  ];
  const table = [
    `GPU: ${rows[0].gpu}; libtorch ${torch.version.libtorch}, CUDA ${torch.version.cuda}`, '',
    '| benchmark | finetorch samples/s | PyTorch eager samples/s | ratio |', '| --- | ---: | ---: | ---: |',
    ...rows.map((r) => `| ${r.name} | ${r.ours.toFixed(1)} | ${r.pytorch.toFixed(1)} | ${(r.ours / r.pytorch).toFixed(3)} |`),
  ].join('\n');
  fs.writeFileSync(path.join(results, 'table.md'), `${table}\n`);
  console.log(`\n${table}`);
  log('all CUDA checks passed');
})().catch((err) => {
  console.error(`gpu-check: FAILED: ${err.stack || err}`);
  process.exit(1);
});
