/**
 * `npm run demo` (`finetorch demo`): the bundled ResNet pretrained on Fashion-MNIST classes 0-4,
 * fine-tuned on 50 labelled images per class of the five classes it never saw, against the same
 * architecture from random weights on the same images. Run as users run it: the compiled CLI in a
 * child process, with its default settings.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { CliResult, ensureDist, runCli, show } from './helpers/dist';

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

  /** The accuracy the demo printed for `name`, in [0, 1]. */
  function printed(name: string): number {
    const m = new RegExp(`^  ${name}\\s+(\\d+\\.\\d)%$`, 'm').exec(r.stdout);
    if (!m) throw new Error(`no '${name}' accuracy line in the demo's output:\n${r.stdout}`);
    return Number(m[1]) / 100;
  }

  test('prints both test accuracies side by side and the difference, matching metrics.json', () => {
    const metrics = JSON.parse(fs.readFileSync(path.join(dir, 'demo-out', 'metrics.json'), 'utf8'));
    const [pre, scratch] = metrics.results as { name: string; accuracy: number; epochs: unknown[] }[];
    expect([pre.name, scratch.name]).toEqual(['pretrained', 'from scratch']);
    expect(r.stdout).toMatch(/^\s+test accuracy \(classes 5-9\)$/m);
    expect(printed('pretrained')).toBeCloseTo(pre.accuracy, 3);
    expect(printed('from scratch')).toBeCloseTo(scratch.accuracy, 3);
    const diff = /^  difference\s+(-?\d+\.\d) points in favour of the pretrained backbone$/m.exec(r.stdout);
    expect(diff).not.toBeNull();
    expect(Number(diff![1])).toBeCloseTo((pre.accuracy - scratch.accuracy) * 100, 1);
    // the defaults of the issue: 50 labelled images of each of the 5 unseen classes, 6 epochs each
    expect(r.stdout).toMatch(/fine-tuning on 250 labelled images \(50 per class\) of Sandal, Shirt, Sneaker, Bag, Ankle boot; testing on 5000/);
    expect(pre.epochs).toHaveLength(6);
    expect(scratch.epochs).toHaveLength(6);
    console.log(`demo: pretrained ${(pre.accuracy * 100).toFixed(1)}%, from scratch ${(scratch.accuracy * 100).toFixed(1)}%, ${tookS.toFixed(0)} s`);
  });

  test('the pretrained backbone beats training from scratch by a clear margin, and both runs trained', () => {
    const n = Number(/testing on (\d+)/.exec(r.stdout)![1]);
    const pre = printed('pretrained');
    const scratch = printed('from scratch');
    // Both runs learned (chance is 20% on 5 classes), so the comparison is between two trained models,
    // not against a broken baseline.
    expect(scratch).toBeGreaterThan(0.4);
    expect(pre - scratch).toBeGreaterThan(margin(pre, scratch, n));
  });

  test('writes report.html comparing both runs, curves.png, model.pt and classes.json', async () => {
    const out = path.join(dir, 'demo-out');
    const html = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
    const specs = JSON.parse(/const specs = (\{.*\});\n/.exec(html)![1]);
    const series = new Set((specs.curves.hconcat[0].data.values as { series: string }[]).map((v) => v.series));
    expect([...series].sort()).toEqual(['from scratch train', 'from scratch validation', 'pretrained train', 'pretrained validation']);
    expect(Object.keys(specs).sort()).toEqual(['confusion', 'curves', 'lr', 'perclass']);
    expect(html).toContain('pretrained test accuracy');
    expect(html).toContain('<h2>Misclassified examples</h2>');
    const png = await sharp(path.join(out, 'curves.png')).metadata();
    expect(png.format).toBe('png');
    expect(png.width).toBeGreaterThan(600);
    expect(JSON.parse(fs.readFileSync(path.join(out, 'classes.json'), 'utf8'))).toEqual(['Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot']);
    expect(fs.statSync(path.join(out, 'model.pt')).size).toBeGreaterThan(0);
  });
});
