#!/usr/bin/env node
/**
 * Data loading throughput: finetorch's ImageFolder + DataLoader against PyTorch's DataLoader with
 * torchvision transforms (num_workers=2, persistent workers) on the same 2,000 JPEGs (500x375),
 * each decoded, random-resized-cropped to 224, flipped and normalised into batches of 32.
 *
 *   npx tsc -p tsconfig.build.json && node bench/data.js [--images 2000] [--rounds 3] [--prefetch 4]
 *     [--sharp-concurrency N] [--same-malloc] [--backend libjpeg|sharp]
 *
 * The images are generated once with sharp into a cache folder under the OS temp dir. Each side
 * runs one warm-up epoch (page cache, worker start-up), then `rounds` timed epochs, alternating
 * finetorch and PyTorch so both see the same machine load; it prints the ratio of the best epochs
 * and the median of the per-round ratios. It also prints the machine's JPEG decode limits: each
 * file decoded whole to RGB and nothing else, one image per core at a time, by libjpeg-turbo (what
 * PIL decodes with; finetorch's default for JPEGs, which decodes only a crop's rows and columns)
 * and by sharp (libvips threads 1). A pipeline that decodes every image whole cannot beat them.
 * --sharp-concurrency sets libvips' threads per image (sharp.concurrency; default: sharp's own).
 * Python is $FINETORCH_PYTHON or /usr/bin/python3 (Debian's python3-torch/torchvision).
 */
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const { loadAverage, pythonEnv } = require('./machine');
const { benchOptions } = require('./args');

const o = benchOptions(process.argv.slice(2), {
  images: { type: 'int', default: 2000 },
  rounds: { type: 'int', default: 3 },
  prefetch: { type: 'int', default: 4, min: 0 },
  'sharp-concurrency': { type: 'int', default: 0, min: 0 },
  'same-malloc': { type: 'flag' },
  backend: { type: 'string', default: '' },
}, 'node bench/data.js [--images 2000] [--rounds 3] [--prefetch 4] [--sharp-concurrency N] [--same-malloc] [--backend libjpeg|sharp]');
const N = o.images;
const ROUNDS = o.rounds;
const PREFETCH = o.prefetch;
const BATCH = 32;
const CLASSES = 10;
const PYTHON = require('../scripts/python').pythonPath();

const sharp = require('sharp');
const { top, data, transforms } = loadFinetorch();

function loadFinetorch() {
  const dist = path.join(__dirname, '..', 'dist');
  if (!fs.existsSync(path.join(dist, 'data', 'index.js'))) {
    console.error('bench/data.js: build the TypeScript first: npx tsc -p tsconfig.build.json');
    process.exit(1);
  }
  const top = require(dist);
  return { top, data: top.data ?? require(path.join(dist, 'data')), transforms: top.transforms ?? require(path.join(dist, 'transforms')) };
}

/** A photo-like 500x375 picture: smooth shapes, gradients and sensor-like noise. */
function picture(seed) {
  const W = 500;
  const H = 375;
  const px = Buffer.alloc(W * H * 3);
  let s = seed * 2654435761 >>> 0 || 1;
  const rnd = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296);
  const blobs = Array.from({ length: 6 }, () => [rnd() * W, rnd() * H, 40 + rnd() * 120, [rnd() * 255, rnd() * 255, rnd() * 255]]);
  const base = [rnd() * 255, rnd() * 255, rnd() * 255];
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      let c = base.map((b, k) => b * (0.6 + 0.4 * Math.sin((x + y * (k + 1)) / 90)));
      for (const [bx, by, r, col] of blobs) {
        const d = Math.hypot(x - bx, y - by);
        if (d < r) c = c.map((v, k) => v + (col[k] - v) * (1 - d / r));
      }
      const i = (y * W + x) * 3;
      for (let k = 0; k < 3; k++) px[i + k] = Math.max(0, Math.min(255, c[k] + (rnd() - 0.5) * 24));
    }
  }
  return px;
}

async function makeImages() {
  const root = path.join(os.tmpdir(), `finetorch-bench-jpegs-${N}`);
  const done = path.join(root, '.complete');
  if (fs.existsSync(done)) return root;
  console.log(`generating ${N} JPEGs (500x375) in ${root} ...`);
  fs.rmSync(root, { recursive: true, force: true });
  for (let c = 0; c < CLASSES; c++) fs.mkdirSync(path.join(root, `class${c}`), { recursive: true });
  for (let i = 0; i < N; i++) {
    await sharp(picture(i + 1), { raw: { width: 500, height: 375, channels: 3 } })
      .jpeg({ quality: 90 })
      .toFile(path.join(root, `class${i % CLASSES}`, `img${String(i).padStart(5, '0')}.jpg`));
  }
  fs.writeFileSync(done, '');
  return root;
}

async function finetorchEpoch(loader) {
  const t0 = process.hrtime.bigint();
  let n = 0;
  for await (const { input, target } of loader) {
    n += input.shape[0];
    input.dispose();
    target.dispose();
  }
  return { n, secs: Number(process.hrtime.bigint() - t0) / 1e9 };
}

const PYTORCH = String.raw`
import json, sys, time, torch
import torchvision.transforms as T
from torchvision.datasets import ImageFolder
from torch.utils.data import DataLoader
root, rounds, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
loader = DataLoader(ImageFolder(root, transform=tf), batch_size=batch, shuffle=True, num_workers=2,
                    persistent_workers=True)
def epoch():
    t0 = time.perf_counter(); n = 0
    for x, y in loader:
        n += x.shape[0]
    return {'n': n, 'secs': time.perf_counter() - t0}
epoch()  # warm-up: page cache, worker start-up
for _ in range(rounds):
    print(json.dumps(epoch()), flush=True)
`;

/**
 * Images/s of decoding every file whole to RGB, `parallel` at a time: by sharp (libvips threads 1)
 * and by libjpeg-turbo (finetorch's decoder; null in a build without it).
 */
async function decodeLimits(root, parallel) {
  const files = fs.readdirSync(root).flatMap((c) => (c.startsWith('.') ? [] : fs.readdirSync(path.join(root, c)).map((f) => path.join(root, c, f))));
  const bytes = files.map((f) => fs.readFileSync(f));
  const rate = async (decode) => {
    const t0 = process.hrtime.bigint();
    let next = 0;
    const worker = async () => {
      while (next < bytes.length) await decode(bytes[next++]);
    };
    await Promise.all(Array.from({ length: parallel }, worker));
    return bytes.length / (Number(process.hrtime.bigint() - t0) / 1e9);
  };
  const before = sharp.concurrency();
  sharp.concurrency(1);
  try {
    const bySharp = await rate((b) => sharp(b).removeAlpha().toColourspace('srgb').raw().toBuffer());
    const { native } = require(path.join(__dirname, '..', 'dist', 'native'));
    const byLibjpeg = native.decodeJpeg ? await rate((b) => native.decodeJpeg(b, 0, 0, 500, 375, 500, 375, 'nearest')) : null;
    return { bySharp, byLibjpeg };
  } finally {
    sharp.concurrency(before);
  }
}

function pytorchEpochs(root, rounds) {
  const env = pythonEnv(top, o.sameMalloc);
  const out = execFileSync(PYTHON, ['-c', PYTORCH, root, String(rounds), String(BATCH)], { encoding: 'utf8', maxBuffer: 1 << 20, env });
  return out.trim().split('\n').map((l) => JSON.parse(l));
}

async function main() {
  const root = await makeImages();
  const train = transforms.compose([
    transforms.randomResizedCrop(224), transforms.randomHorizontalFlip(), transforms.toTensor(), transforms.normalize(),
  ]);
  if (o.sharpConcurrency) sharp.concurrency(o.sharpConcurrency);
  if (o.backend) transforms.setImageBackend(o.backend);
  const ds = new data.ImageFolder(root, { transform: train });
  const loader = new data.DataLoader(ds, { batchSize: BATCH, shuffle: true, seed: 0, prefetch: PREFETCH });
  console.log(`${os.cpus().length} CPUs, load average ${loadAverage()}; ` +
    `sharp ${sharp.versions.sharp} (libvips ${sharp.versions.vips}, concurrency ${sharp.concurrency()}), ` +
    `UV_THREADPOOL_SIZE ${process.env.UV_THREADPOOL_SIZE ?? '4 (default)'}, prefetch ${PREFETCH}; ` +
    `malloc: finetorch ${top.backends.malloc.tuning ? 'tuned' : 'untuned'}, PyTorch ${o.sameMalloc ? 'the same (--same-malloc)' : "glibc's defaults"}`);
  await finetorchEpoch(loader); // warm-up: page cache, header cache
  const ft = [];
  const pt = [];
  for (let r = 0; r < ROUNDS; r++) {
    const f = await finetorchEpoch(loader);
    ft.push(f.n / f.secs);
    const [p] = pytorchEpochs(root, 1);
    pt.push(p.n / p.secs);
    console.log(`round ${r + 1}: finetorch ${(f.n / f.secs).toFixed(1)} images/s, PyTorch ${(p.n / p.secs).toFixed(1)} images/s, ` +
      `ratio ${(ft[r] / pt[r]).toFixed(2)}x`);
  }
  const limits = await decodeLimits(root, os.availableParallelism());
  const best = (xs) => Math.max(...xs);
  console.log(`finetorch DataLoader: ${best(ft).toFixed(1)} images/s (best of ${ROUNDS})`);
  console.log(`PyTorch DataLoader (num_workers=2): ${best(pt).toFixed(1)} images/s (best of ${ROUNDS})`);
  const ratios = ft.map((f, r) => f / pt[r]).sort((a, b) => a - b);
  console.log(`ratio finetorch / PyTorch: ${(best(ft) / best(pt)).toFixed(2)}x (best epochs), ` +
    `${ratios[ratios.length >> 1].toFixed(2)}x (median of the rounds' ratios)`);
  const { bySharp, byLibjpeg } = limits;
  const of = (limit) => `${limit.toFixed(1)} images/s (finetorch's best epoch is ${((100 * best(ft)) / limit).toFixed(0)}% of it)`;
  console.log(`JPEG decode alone, whole images, ${os.availableParallelism()} at a time: ` +
    `${byLibjpeg ? `libjpeg-turbo ${of(byLibjpeg)}, ` : ''}sharp ${of(bySharp)}; load average ${loadAverage()}`);
  console.log(`image backend: ${transforms.getImageBackend()} (transforms.setImageBackend)`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
