/**
 * The `finetorch` command line end to end, run as a user runs it (`node dist/cli/main.js ...` in a
 * child process) on a small image folder made with sharp and a small CNN scripted by real PyTorch
 * at test time: finetune, inspect, predict, evaluate, finetune --resume, and the errors a person
 * can act on (exit code 1, one line, no stack trace).
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { cuda } from '../lib';
import { CliResult, ensureDist, expectOk, runCli, show, smallModelScript } from './helpers/dist';
import { runPythonAsync } from './helpers/python';

/** Class folder -> base colour. Names sort by code point ('Green' < 'blue' < 'red'), as in Python. */
const COLOURS: Record<string, [number, number, number]> = { red: [210, 30, 30], Green: [30, 190, 40], blue: [25, 40, 215] };
const CLASSES = Object.keys(COLOURS).sort(); // JS sorts ASCII by code point, as Python's sorted()
const PER_CLASS = 12;

/** A 40x40 image of `rgb` with +-30 of deterministic noise per channel; even i JPEG, odd i PNG. */
async function colourImage(file: string, rgb: number[], seed: number): Promise<void> {
  const px = Buffer.alloc(40 * 40 * 3);
  let s = seed >>> 0;
  for (let i = 0; i < px.length; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    px[i] = Math.max(0, Math.min(255, rgb[i % 3] + ((s >>> 16) % 61) - 30));
  }
  const img = sharp(px, { raw: { width: 40, height: 40, channels: 3 } });
  await (file.endsWith('.png') ? img.png() : img.jpeg({ quality: 90 })).toFile(file);
}

async function imageTree(root: string, classes: string[]): Promise<string[]> {
  const files: string[] = [];
  await Promise.all(classes.flatMap((c, k) => {
    fs.mkdirSync(path.join(root, c), { recursive: true });
    return Array.from({ length: PER_CLASS }, (_, i) => {
      const file = path.join(root, c, `img${String(i).padStart(2, '0')}.${i % 2 ? 'png' : 'jpg'}`);
      files.push(file);
      return colourImage(file, COLOURS[c], 1 + k * 1000 + i);
    });
  }));
  return files.sort();
}

const MAKE_MODEL = smallModelScript(10, true);

/**
 * An error a person can act on: exit code 1, nothing on stdout, every stderr line is finetorch's
 * own (no stack frame, no Node warning), and the last one (the error) matches every pattern.
 * `lines` is how many lines stderr has (1 when nothing was logged before the error).
 */
function expectActionableError(r: CliResult, patterns: RegExp[], lines = 1): void {
  if (r.code !== 1) throw new Error(`expected exit code 1:\n${show(r)}`);
  expect(r.stdout).toBe('');
  const err = r.stderr.trimEnd().split('\n');
  expect(err).toHaveLength(lines);
  for (const l of err) expect(l).toMatch(/^finetorch: \S/);
  expect(r.stderr).not.toMatch(/^\s+at /m);
  for (const p of patterns) expect(err[err.length - 1]).toMatch(p);
}

describe('finetorch CLI on a generated image folder', () => {
  let dir: string;
  let data: string;
  let out: string;
  let images: string[]; // relative to dir
  const cli = (...args: string[]) => runCli(args, dir);
  const FINETUNE = ['finetune', '--model', 'm.pt', '--data', 'photos', '--epochs', '2', '--batch-size', '8', '--size', '32',
    // --lr 0.05: large enough that 8 steps separate three solid colours, so the checks below can
    // tell a model that learned the folder's labels from one that did not.
    '--lr', '0.05', '--out', 'out', '--no-progress'];
  // Every CLI run starts Node and loads libtorch (and the model once more in an isolated child), a
  // few seconds each on a loaded 2-core machine: runs that do not depend on each other go together.
  let run: CliResult; // finetune
  let inspected: CliResult;
  let predicted: CliResult; // every image, default --top
  let predictedTop1: CliResult;
  let evaluation: CliResult;
  let history: unknown; // metrics.json's before --resume
  let resumed: CliResult;
  let python: string[]; // what Python says about model.pt, before and after --resume
  // The metadata in model.pt (#17): evaluate and inspect of a copy with no classes.json beside it,
  // and a --size that disagrees with the recorded 32.
  let evaluationRecorded: CliResult;
  let inspectedFinetuned: CliResult;
  let predictedOverride: CliResult;

  beforeAll(async () => {
    ensureDist();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finetorch-cli-'));
    data = path.join(dir, 'photos');
    out = path.join(dir, 'out');
    const files = await Promise.all([imageTree(data, CLASSES), runPythonAsync(MAKE_MODEL, dir, ['m.pt', 'state_dict.pt'])]);
    images = files[0].map((f) => path.relative(dir, f));
    [run, inspected] = await Promise.all([cli(...FINETUNE), cli('inspect', 'm.pt')]);
    if (run.code !== 0) return; // the first test shows why
    fs.copyFileSync(path.join(out, 'model.pt'), path.join(dir, 'first.pt'));
    fs.copyFileSync(path.join(out, 'report.html'), path.join(dir, 'first-report.html'));
    history = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8')).history;
    [predicted, predictedTop1, evaluation, evaluationRecorded, inspectedFinetuned, predictedOverride] = await Promise.all([
      cli('predict', 'out/model.pt', ...images, '--size', '32'),
      cli('predict', 'out/model.pt', 'photos/Green/img00.jpg', '--top', '1'), // size and names from model.pt
      cli('evaluate', 'out/model.pt', '--data', 'photos', '--size', '32'),
      cli('evaluate', 'first.pt', '--data', 'photos'),
      cli('inspect', 'first.pt'),
      cli('predict', 'first.pt', 'photos/Green/img00.jpg', '--size', '48', '--top', '1'),
    ]);
    resumed = await cli(...FINETUNE, '--resume');
    python = (await runPythonAsync(`
import sys, torch
a, b = (torch.jit.load(f).eval() for f in sys.argv[1:3])
print(list(a.fc.weight.shape), list(a.fc.bias.shape), list(a(torch.randn(2, 3, 32, 32)).shape))
sa, sb = a.state_dict(), b.state_dict()
print(sorted(sa) == sorted(sb) and all(torch.equal(sa[k], sb[k]) for k in sa))
for f in sys.argv[1:3]:
    extra = {'finetorch.json': ''}
    torch.jit.load(f, _extra_files=extra)
    print(extra['finetorch.json'].decode())
`, dir, ['first.pt', 'out/model.pt'])).trim().split('\n');
  }, 300_000);

  afterAll(() => { if (dir) fs.rmSync(dir, { recursive: true, force: true }); });

  describe('finetune', () => {
    test('exits 0 and writes model.pt, metrics.json, classes.json, report.html, curves.png and a checkpoint', () => {
      expectOk(run);
      for (const f of ['model.pt', 'metrics.json', 'classes.json', 'report.html', 'curves.png', 'checkpoints/latest.json']) {
        expect(fs.existsSync(path.join(out, f))).toBe(true);
      }
      expect(run.stdout).toMatch(/^validation accuracy \d+\.\d% \(top-3 \d+\.\d%\) on 4 images$/m);
      // the head replacement is reported on stderr, naming the layer and both sizes
      expect(run.stderr).toMatch(/replaceHead chose 'fc' \(Linear 8 -> 10\), now 8 -> 3/);
    });

    test('classes.json holds the folder names sorted by code point, as torchvision orders them', () => {
      expect(JSON.parse(fs.readFileSync(path.join(out, 'classes.json'), 'utf8'))).toEqual(['Green', 'blue', 'red']);
    });

    test('metrics.json: a history of 2 epochs, the settings used, and the validation split of 0.1 of 36 images', () => {
      const m = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8'));
      expect(m.history.map((e: { epoch: number }) => e.epoch)).toEqual([1, 2]);
      for (const e of m.history) {
        expect(Number.isFinite(e.loss) && Number.isFinite(e.valLoss)).toBe(true);
        expect(e.samples).toBe(32);
        expect(e.valAccuracy).toBeGreaterThanOrEqual(0);
        expect(e.valAccuracy).toBeLessThanOrEqual(1);
      }
      expect(m.settings).toMatchObject({ epochs: 2, batchSize: 8, size: 32, lr: 0.05, device: 'cpu', head: 'fc', trainImages: 32, valImages: 4 });
      expect(m.classes).toEqual(CLASSES);
      expect(m.evaluation.samples).toBe(4);
      expect(m.evaluation.confusion).toHaveLength(3);
    });

    test('model.pt is TorchScript that Python loads, with fc replaced by Linear(8, 3)', () => {
      expect(python[0]).toBe('[3, 8] [3] [2, 3]');
    });

    test('report.html embeds all four charts and their data matches metrics.json; curves.png is a PNG', async () => {
      const html = fs.readFileSync(path.join(dir, 'first-report.html'), 'utf8'); // before --resume rewrote it
      for (const id of ['curves', 'lr', 'confusion', 'perclass']) expect(html).toContain(`<div class="chart" id="chart-${id}"></div>`);
      const specs = JSON.parse(/const specs = (\{.*\});\n/.exec(html)![1]);
      const m = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8'));
      const loss = specs.curves.hconcat[0].data.values as { epoch: number; value: number; series: string }[];
      expect(loss.filter((v) => v.series === 'fine-tune train').map((v) => v.value)).toEqual(m.history.map((e: { loss: number }) => e.loss));
      expect(loss.filter((v) => v.series === 'fine-tune validation').map((v) => v.value)).toEqual(m.history.map((e: { valLoss: number }) => e.valLoss));
      expect(specs.lr.data.values).toHaveLength(8); // 2 epochs x ceil(32 / 8) optimizer steps
      expect(html).toMatch(/<th>batchSize<\/th><td>8<\/td>/);
      const png = await sharp(path.join(out, 'curves.png')).metadata();
      expect(png.format).toBe('png');
      expect(png.width).toBeGreaterThan(600);
    });

    test('model.pt records its classes, its 32-pixel eval transform, the task, versions, settings and metrics (Python reads them)', () => {
      const meta = JSON.parse(python[2]);
      expect(meta).toMatchObject({
        format: 'finetorch-model', task: 'single-label', classes: CLASSES,
        transform: { type: 'compose', transforms: [{ type: 'resize', size: 36 }, { type: 'centerCrop', size: 32 }, { type: 'toTensor' }, { type: 'normalize' }] },
        settings: { epochs: 2, batchSize: 8, size: 32, lr: 0.05, model: 'm.pt', data: 'photos' },
        metrics: { valImages: 4, epochs: 2 },
      });
      expect(meta.finetorch).toMatch(/^\d+\.\d+\.\d+/);
      expect(meta.libtorch).toMatch(/^\d+\.\d+/);
      const m = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8'));
      expect(meta.metrics.valAccuracy).toBe(m.evaluation.accuracy);
    });

    test('--resume keeps the metadata in model.pt', () => {
      const strip = (t: string) => { const { createdAt: _, ...rest } = JSON.parse(t); return rest; };
      expect(strip(python[3])).toEqual(strip(python[2]));
    });

    test('--resume after a finished run exits 0, keeps the 2-epoch history and does not train again', () => {
      expectOk(resumed);
      expect(JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8')).history).toEqual(history);
      expect(python[1]).toBe('True'); // model.pt's parameters and buffers are those of the finished run
    });

    test("the report written after --resume still charts the learning rate of every optimizer step of the run", () => {
      const lr = (file: string) => JSON.parse(/const specs = (\{.*\});\n/.exec(fs.readFileSync(file, 'utf8'))![1]).lr;
      const first = lr(path.join(dir, 'first-report.html'));
      expect(first.encoding.x.title).toBe('optimizer step');
      expect(first.data.values).toHaveLength(8);
      expect(lr(path.join(out, 'report.html'))).toEqual(first);
    });
  });

  test('inspect prints the module table with fc as a Linear head candidate', () => {
    expectOk(inspected);
    expect(inspected.stdout).toMatch(/^fc\s+Linear\s+\[10, 8\] \[10\]\s+90\s+yes$/m);
    expect(inspected.stdout).toMatch(/^conv\s+Conv2d\s/m);
    expect(inspected.stdout).toMatch(/^bn\s+BatchNorm2d\s/m);
    expect(inspected.stdout).toMatch(/total parameters: 330/);
    expect(inspected.stdout).toMatch(/head candidates.*: fc$/m);
  });

  describe('predict and evaluate on the fine-tuned model', () => {
    /** `predict` output: image -> [[percent, class], ...] in printed order. */
    function parsePredict(stdout: string): Map<string, [number, string][]> {
      const res = new Map<string, [number, string][]>();
      let current: [number, string][] = [];
      for (const line of stdout.trimEnd().split('\n')) {
        const m = /^\s+(\d+\.\d)%  (.+)$/.exec(line);
        if (m) current.push([Number(m[1]), m[2]]);
        else res.set(line, (current = []));
      }
      return res;
    }

    interface Evaluation { accuracy: number; rows: Map<string, string[]>; confusion: number[][]; labels: string[] }
    function parseEvaluate(stdout: string): Evaluation {
      const lines = stdout.trimEnd().split('\n');
      const accuracy = Number(/^accuracy (\d+\.\d+)%/.exec(lines[0])![1]);
      const rows = new Map<string, string[]>();
      for (const c of CLASSES) {
        const l = lines.find((x) => x.startsWith(`${c} `));
        expect(l).toBeDefined();
        rows.set(c, l!.trim().split(/\s+/).slice(1));
      }
      const at = lines.findIndex((l) => l.startsWith('confusion matrix (rows: true, columns: predicted)'));
      expect(at).toBeGreaterThan(0);
      const body = lines.slice(at + 2, at + 2 + CLASSES.length);
      return {
        accuracy, rows,
        confusion: body.map((l) => l.trim().split(/\s+/).slice(-CLASSES.length).map(Number)),
        labels: body.map((l) => l.replace(/(\s+\d+)+\s*$/, '').trim()),
      };
    }

    test('predict prints, per image, every class of classes.json with percentages that sum to 100, highest first', () => {
      expectOk(predicted);
      const p = parsePredict(predicted.stdout);
      expect([...p.keys()]).toEqual(images);
      for (const rows of p.values()) {
        expect(rows.map(([, c]) => c).sort()).toEqual(CLASSES); // the default top-5 is capped at the 3 classes
        const pct = rows.map(([v]) => v);
        expect([...pct].sort((a, b) => b - a)).toEqual(pct);
        expect(Math.abs(pct.reduce((a, b) => a + b, 0) - 100)).toBeLessThanOrEqual(0.2); // 3 values rounded to 0.1
      }
    });

    test('evaluate without --size uses the recorded 32-pixel transform and class names (the 224 of #17 is gone)', () => {
      expectOk(evaluationRecorded);
      // first.pt is model.pt copied away from classes.json: the same report as --size 32 beside it
      expect(evaluationRecorded.stdout).toBe(evaluation.stdout);
      expect(evaluationRecorded.stderr).toBe('');
    });

    test('a --size that disagrees with the recorded transform wins, with one warning line naming both', () => {
      expectOk(predictedOverride);
      expect(predictedOverride.stdout).toMatch(/^photos\/Green\/img00\.jpg\n\s+\d+\.\d%  (Green|blue|red)\n$/);
      expect(predictedOverride.stderr).toMatch(/^finetorch: warning: --size 48 overrides the preprocessing recorded in first\.pt \(32x32 inputs: compose\(\[resize\(36\), centerCrop\(32\), .*\)\]\)\); the model was not trained on what it will see\n$/);
    });

    test('inspect of the fine-tuned model prints what its file records', () => {
      expectOk(inspectedFinetuned);
      expect(inspectedFinetuned.stdout).toMatch(/^metadata \(finetorch\.json\):$/m);
      expect(inspectedFinetuned.stdout).toMatch(/^  task: single-label$/m);
      expect(inspectedFinetuned.stdout).toMatch(/^  classes \(3\): Green, blue, red$/m);
      expect(inspectedFinetuned.stdout).toMatch(/^  preprocessing: compose\(\[resize\(36\), centerCrop\(32\), toTensor\(\), normalize\(.*\)\]\) \(32x32 inputs\)$/m);
      expect(inspectedFinetuned.stdout).toMatch(/^  metrics: valAccuracy=[\d.]+, valTop3=[\d.]+, valLoss=[\d.]+, valImages=4, epochs=2$/m);
      expect(inspected.stdout).toMatch(/^metadata: none/m);
    });

    test('predict --top 1 prints one class per image', () => {
      expectOk(predictedTop1);
      expect(predictedTop1.stdout).toMatch(/^photos\/Green\/img00\.jpg\n\s+\d+\.\d%  Green\n$/);
    });

    test('evaluate prints accuracy, precision/recall/support per class and a confusion matrix that agree with each other', () => {
      expectOk(evaluation);
      const ev = parseEvaluate(evaluation.stdout);
      expect(evaluation.stdout).toMatch(/\(36 images\)/);
      expect(evaluation.stdout).toMatch(/^class\s+precision\s+recall\s+support$/m);
      const C = ev.confusion;
      expect(C.map((row) => row.reduce((a, b) => a + b, 0))).toEqual([PER_CLASS, PER_CLASS, PER_CLASS]);
      const diag = C.reduce((a, row, i) => a + row[i], 0);
      expect(ev.accuracy).toBeCloseTo((100 * diag) / 36, 2);
      CLASSES.forEach((c, i) => {
        const [precision, recall, support] = ev.rows.get(c)!;
        const predictedAs = C.reduce((a, row) => a + row[i], 0);
        expect(Number(support)).toBe(PER_CLASS);
        expect(recall).toBe((C[i][i] / PER_CLASS).toFixed(3));
        expect(precision).toBe(predictedAs ? (C[i][i] / predictedAs).toFixed(3) : '-');
      });
      // 8 steps at lr 0.05 on three solid colours: a model that learned the labels gets nearly all
      // of them (chance is 33%); a swapped label or class order would show here.
      expect(ev.accuracy).toBeGreaterThan(90);
    });

    test("the confusion matrix's rows name each class in full", () => {
      expect(parseEvaluate(evaluation.stdout).labels).toEqual(CLASSES.map((c, i) => `${i} ${c}`));
    });

    test("predict's top class over every image reproduces evaluate's confusion matrix", () => {
      const p = parsePredict(predicted.stdout);
      const confusion = CLASSES.map(() => CLASSES.map(() => 0));
      for (const f of images) confusion[CLASSES.indexOf(f.split('/')[1])][CLASSES.indexOf(p.get(f)![0][1])]++;
      expect(confusion).toEqual(parseEvaluate(evaluation.stdout).confusion);
    });
  });

  describe('errors a person can act on: exit code 1 and one line naming the problem', () => {
    const r: Record<string, CliResult> = {};
    beforeAll(async () => {
      for (const c of ['a', 'b']) {
        fs.mkdirSync(path.join(dir, 'no-images', c), { recursive: true });
        fs.writeFileSync(path.join(dir, 'no-images', c, 'notes.txt'), 'not an image\n');
      }
      for (const c of ['blue', 'red']) fs.cpSync(path.join(data, c), path.join(dir, 'two', c), { recursive: true });
      fs.writeFileSync(path.join(dir, 'notes.pt'), 'not a model\n');
      fs.writeFileSync(path.join(dir, 'taken'), 'a file where --out wants a folder\n');
      const runs: Record<string, string[]> = {
        missingModel: ['finetune', '--model', 'missing.pt', '--data', 'photos', '--out', 'e1', '--no-progress'],
        inspectMissing: ['inspect', 'missing.pt'],
        missingData: ['finetune', '--model', 'm.pt', '--data', 'no-such-folder', '--out', 'e2', '--no-progress'],
        evaluateMissingData: ['evaluate', 'first.pt', '--data', 'no-such-folder'],
        noImages: ['finetune', '--model', 'm.pt', '--data', 'no-images', '--out', 'e3', '--no-progress'],
        classCount: ['evaluate', 'first.pt', '--data', 'two', '--size', '32'],
        cudaFinetune: ['finetune', '--model', 'm.pt', '--data', 'photos', '--device', 'cuda', '--out', 'e4', '--no-progress'],
        cudaPredict: ['predict', 'm.pt', 'photos/red/img00.jpg', '--device', 'cuda'],
        textModel: ['finetune', '--model', 'notes.pt', '--data', 'photos', '--out', 'e5', '--no-progress'],
        stateDict: ['inspect', 'state_dict.pt'],
        resumeNothing: ['finetune', '--model', 'm.pt', '--data', 'photos', '--size', '32', '--out', 'fresh', '--resume', '--no-progress'],
        // the model file is not TorchScript either: the --out check must come first, before any load
        outIsFile: ['finetune', '--model', 'notes.pt', '--data', 'photos', '--out', 'taken', '--no-progress'],
        zeroEpochs: ['finetune', '--model', 'm.pt', '--data', 'photos', '--epochs', '0', '--batch-size', '4', '--out', 'e6', '--no-progress'],
        negativeLr: ['finetune', '--model', 'm.pt', '--data', 'photos', '--lr', '-1e-3', '--out', 'e7', '--no-progress'],
        emptyTop: ['predict', 'm.pt', 'photos/red/img00.jpg', '--top', ''],
        zeroTop: ['predict', 'm.pt', 'photos/red/img00.jpg', '--top', '0'],
      };
      const results = await Promise.all(Object.values(runs).map((args) => cli(...args)));
      Object.keys(runs).forEach((k, i) => { r[k] = results[i]; });
    }, 300_000);

    test('a missing model file', () => {
      expectActionableError(r.missingModel, [/model/, /'missing\.pt'/, /does not exist/]);
      expectActionableError(r.inspectMissing, [/'missing\.pt' does not exist/]);
    });

    test('a missing data folder', () => {
      expectActionableError(r.missingData, [/--data/, /'no-such-folder'/, /does not exist/]);
      expectActionableError(r.evaluateMissingData, [/'no-such-folder'/, /does not exist/]);
    });

    test('a data folder whose class folders hold no images', () => {
      expectActionableError(r.noImages, [/no images/, /'no-images'/]);
    });

    test('evaluate with a 2-class folder against the 3-class model', () => {
      expectActionableError(r.classCount, [/predicts 3 classes/, /'two' has 2 class folders/]);
    });

    (cuda.isAvailable() ? test.skip : test)('--device cuda on a machine without CUDA', () => {
      expectActionableError(r.cudaFinetune, [/--device/, /CUDA is not available/]);
      expectActionableError(r.cudaPredict, [/CUDA/]);
    });

    test('a model file that is not TorchScript (a text file, a torch.save state dict)', () => {
      expectActionableError(r.textModel, [/notes\.pt/, /not a TorchScript file/]);
      expectActionableError(r.stateDict, [/state_dict\.pt/, /not a loadable TorchScript model/]);
    });

    test('--resume with no checkpoint in --out', () => {
      // checked before the model is loaded: one line
      expectActionableError(r.resumeNothing, [/--resume/, /no checkpoint/, /fresh/], 1);
    });

    test('--out naming a file is refused before the model is loaded', () => {
      expectActionableError(r.outIsFile, [/--out '.*taken' is a file: it must be a folder/]);
      expect(fs.readFileSync(path.join(dir, 'taken'), 'utf8')).toBe('a file where --out wants a folder\n');
    });

    test('a wrong number names that one option and its value, not a list of options', () => {
      expectActionableError(r.zeroEpochs, [/^finetorch: --epochs must be at least 1: got '0'$/]);
      expectActionableError(r.negativeLr, [/^finetorch: --lr must be greater than 0: got '-1e-3'$/]);
      expectActionableError(r.emptyTop, [/^finetorch: --top must be an integer: got ''$/]);
      expectActionableError(r.zeroTop, [/^finetorch: --top must be at least 1: got '0'$/]);
    });
  });
});
