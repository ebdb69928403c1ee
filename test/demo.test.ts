/**
 * `npm run demo` (`finetorch demo`): the bundled ResNet pretrained on Fashion-MNIST classes 0-4,
 * fine-tuned on 50 labelled images per class of the five classes it never saw, against the same
 * architecture from random weights on the same images and against LoRA on the pretrained model's
 * last stage plus the new head. Run as users run it: the compiled CLI in a child process, with its
 * default settings.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import * as torch from '../lib';
import { CliResult, ensureDist, ROOT, runCli, show } from './helpers/dist';

/** One run of metrics.json's `results`. */
interface Run {
  name: string;
  accuracy: number;
  epochs: unknown[];
  lora?: { targets: string[]; rank: number; alpha: number };
  parameters: number;
  trainableParameters: number;
  optimizerStateBytes: number;
  optimizerStateDictBytes: number;
  seconds: number;
}

/**
 * The margin the pretrained backbone must win by. Not a number copied from a run: it is the larger
 * of 2 points (what the issue calls a clear margin) and 3 standard errors of the difference of two
 * accuracies measured on `n` test images (unpaired, so conservative). Below that, the gap could be
 * the test set's sampling noise rather than the pretraining. With 5,000 test images and accuracies
 * near 85-90% the two are about equal (3 SE is about 1.9 points).
 */
function margin(a: number, b: number, n: number): number {
  const se = Math.sqrt((a * (1 - a)) / n + (b * (1 - b)) / n);
  return Math.max(0.02, 3 * se);
}

describe('finetorch demo', () => {
  let dir: string;
  let r: CliResult;
  let tookS: number;

  beforeAll(async () => {
    ensureDist();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finetorch-demo-'));
    const t0 = Date.now();
    r = await runCli(['demo', '--out', 'demo-out', '--no-progress'], dir, 280_000);
    tookS = (Date.now() - t0) / 1000;
    if (r.code !== 0) throw new Error(`demo failed:\n${show(r)}`);
  }, 300_000);

  afterAll(() => { if (dir) fs.rmSync(dir, { recursive: true, force: true }); });

  const metrics = (): { results: Run[] } => JSON.parse(fs.readFileSync(path.join(dir, 'demo-out', 'metrics.json'), 'utf8'));

  /** The row the demo printed for `name`: test accuracy in [0, 1], trainable parameters, their share and the AdamW state in KiB. */
  function printed(name: string): { accuracy: number; trainable: number; share: number; kib: number } {
    const m = new RegExp(`^  ${name}\\s+(\\d+\\.\\d)%\\s+([\\d,]+) \\((\\d+\\.\\d)%\\)\\s+(\\d+\\.\\d) KiB$`, 'm').exec(r.stdout);
    if (!m) throw new Error(`no '${name}' row in the demo's output:\n${r.stdout}`);
    return { accuracy: Number(m[1]) / 100, trainable: Number(m[2].replace(/,/g, '')), share: Number(m[3]) / 100, kib: Number(m[4]) };
  }

  test('prints the three runs side by side (test accuracy, trainable parameters, AdamW state) and the difference, matching metrics.json', () => {
    const { results } = metrics();
    expect(results.map((x) => x.name)).toEqual(['pretrained', 'from scratch', 'LoRA r=8']);
    expect(r.stdout).toMatch(/^\s+test accuracy\s+trainable parameters\s+AdamW state$/m);
    for (const run of results) {
      const row = printed(run.name);
      expect(row.accuracy).toBeCloseTo(run.accuracy, 3);
      expect(row.trainable).toBe(run.trainableParameters);
      expect(row.share).toBeCloseTo(run.trainableParameters / run.parameters, 3);
      expect(row.kib).toBeCloseTo(run.optimizerStateBytes / 1024, 1);
    }
    const [pre, scratch, lora] = results;
    const diff = /^  difference\s+(-?\d+\.\d) points in favour of the pretrained backbone$/m.exec(r.stdout);
    expect(diff).not.toBeNull();
    expect(Number(diff![1])).toBeCloseTo((pre.accuracy - scratch.accuracy) * 100, 1);
    // the defaults of the issue: 50 labelled images of each of the 5 unseen classes, 6 epochs each
    expect(r.stdout).toMatch(/fine-tuning on 250 labelled images \(50 per class\) of Sandal, Shirt, Sneaker, Bag, Ankle boot; testing on 5000/);
    for (const run of results) expect(run.epochs).toHaveLength(6);
    console.log(`demo: pretrained ${(pre.accuracy * 100).toFixed(1)}%, from scratch ${(scratch.accuracy * 100).toFixed(1)}%, ` +
      `LoRA ${(lora.accuracy * 100).toFixed(1)}% (${lora.trainableParameters} of ${lora.parameters} parameters trained), ${tookS.toFixed(0)} s`);
  });

  test('the pretrained backbone beats training from scratch by a clear margin, and every run trained', () => {
    const n = Number(/testing on (\d+)/.exec(r.stdout)![1]);
    const pre = printed('pretrained').accuracy;
    const scratch = printed('from scratch').accuracy;
    // Every run learned (chance is 20% on 5 classes), so the comparison is between trained models,
    // not against a broken baseline.
    expect(scratch).toBeGreaterThan(0.4);
    expect(printed('LoRA r=8').accuracy).toBeGreaterThan(0.4);
    expect(pre - scratch).toBeGreaterThan(margin(pre, scratch, n));
  });

  test("LoRA trains only rank-r factors of the last stage's convs and the new head: its trainable parameters and AdamW state follow from the model's shapes", async () => {
    const [pre, scratch, lora] = metrics().results;
    expect(lora.lora).toEqual({ targets: ['layer3.**'], rank: 8, alpha: 16 });
    const classes = JSON.parse(fs.readFileSync(path.join(dir, 'demo-out', 'classes.json'), 'utf8')).length;
    const model = await torch.jit.load(path.join(ROOT, 'models', 'fmnist-resnet-pretrained.pt'));
    try {
      const shapes = new Map(model.namedParameters().map(([k, p]) => [k, p.shape]));
      const head = model.headCandidates()[0];
      const inFeatures = shapes.get(`${head}.weight`)![1];
      const newHead = inFeatures * classes + classes;
      const full = [...shapes].filter(([k]) => !k.startsWith(`${head}.`)).reduce((a, [, s]) => a + s.reduce((x, y) => x * y, 1), 0) + newHead;
      // A conv [out, in, kh, kw] gets A [r, in, kh, kw] and B [out, r, 1, 1].
      const convs = [...shapes].filter(([k, s]) => k.startsWith('layer3.') && k.endsWith('.weight') && s.length === 4).map(([, s]) => s);
      expect(convs).toHaveLength(3); // conv1, conv2 and the downsample's 1x1
      const adapter = convs.reduce((a, [out, cin, kh, kw]) => a + lora.lora!.rank * (cin * kh * kw + out), 0);
      expect(pre.trainableParameters).toBe(full);
      expect(pre.parameters).toBe(full);
      expect(scratch.trainableParameters).toBe(full);
      expect(lora.trainableParameters).toBe(adapter + newHead);
      expect(lora.parameters).toBe(full + adapter);
    } finally {
      model.dispose();
    }
    for (const run of [pre, scratch, lora]) {
      expect(run.optimizerStateBytes).toBe(run.trainableParameters * 2 * 4); // exp_avg and exp_avg_sq, float32
      // the serialized state holds those moments, plus step counts and the archive's framing
      expect(run.optimizerStateDictBytes).toBeGreaterThan(run.optimizerStateBytes);
      expect(run.optimizerStateDictBytes).toBeLessThan(run.optimizerStateBytes * 1.5 + 64 * 1024);
    }
    // (run times are recorded, not asserted: speed is measured in bench/, never in a timed test)
    for (const run of [pre, scratch, lora]) expect(run.seconds).toBeGreaterThan(0);
  });

  test('writes report.html comparing the three runs (charts and table), curves.png, model.pt and classes.json', async () => {
    const out = path.join(dir, 'demo-out');
    const html = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
    const specs = JSON.parse(/const specs = (\{.*\});\n/.exec(html)![1]);
    const names = metrics().results.map((x) => x.name);
    const series = new Set((specs.curves.hconcat[0].data.values as { series: string }[]).map((v) => v.series));
    expect([...series].sort()).toEqual(names.flatMap((n) => [`${n} train`, `${n} validation`]).sort());
    expect(new Set((specs.lr.data.values as { run: string }[]).map((v) => v.run))).toEqual(new Set(names));
    expect(Object.keys(specs).sort()).toEqual(['confusion', 'curves', 'lr', 'perclass']);
    expect(html).toContain('pretrained test accuracy');
    expect(html).toContain('LoRA test accuracy');
    expect(html).toContain('<h2>Misclassified examples</h2>');
    const png = await sharp(path.join(out, 'curves.png')).metadata();
    expect(png.format).toBe('png');
    expect(png.width).toBeGreaterThan(600);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'classes.json'), 'utf8'))).toEqual(['Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot']);
    expect(fs.statSync(path.join(out, 'model.pt')).size).toBeGreaterThan(0);
  });

  test("the report's 'Runs compared' table shows each run's test accuracy, trainable parameters and optimizer state from metrics.json", () => {
    const html = fs.readFileSync(path.join(dir, 'demo-out', 'report.html'), 'utf8');
    const table = /<h2>Runs compared<\/h2><table id="runs">(.*?)<\/table>/.exec(html);
    expect(table).not.toBeNull();
    const rows = [...table![1].matchAll(/<tr>(.*?)<\/tr>/g)].map((m) => [...m[1].matchAll(/<t[hd]>(.*?)<\/t[hd]>/g)].map((c) => c[1]));
    expect(rows[0].slice(0, 4)).toEqual(['run', 'test accuracy', 'trainable parameters', 'optimizer state (AdamW moments)']);
    expect(rows.slice(1).map((row) => row.slice(0, 4))).toEqual(metrics().results.map((x) => [
      x.name, `${(x.accuracy * 100).toFixed(1)}%`,
      `${x.trainableParameters.toLocaleString('en-US')} (${((x.trainableParameters / x.parameters) * 100).toFixed(1)}%)`,
      `${(x.optimizerStateBytes / 1024).toFixed(1)} KiB`,
    ]));
  });
});
