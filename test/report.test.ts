/**
 * report.html rendered in Debian's headless Chromium and screenshotted: the Vega-Lite charts draw
 * (every chart's <svg> holds marks that encode the inputs), the page opens offline, and the
 * settings table and misclassified images are there. The report is built by writeReport on
 * synthetic inputs, so no training runs here.
 */
import { execFile } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import sharp from 'sharp';
import { writeReport, type ReportInput } from '../lib/report/report';
import type { EvaluateResult } from '../lib/train/evaluate';
import type { EpochRecord } from '../lib/train/fit';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const CLASSES = ['cat', 'dog & wolf', 'bird'];
const CONFUSION = [[5, 1, 0], [2, 3, 1], [0, 0, 6]];
const LR_STEPS = Array.from({ length: 12 }, (_, i) => 1e-3 * 0.5 * (1 + Math.cos((Math.PI * i) / 12)));

function epochs(): EpochRecord[] {
  return [1, 2, 3].map((epoch) => ({
    epoch, loss: 1.2 / epoch, accuracy: 0.4 + 0.15 * epoch, valLoss: 1.3 / epoch, valAccuracy: 0.35 + 0.15 * epoch, valTop5: 1,
    lr: [LR_STEPS[epoch * 4 - 1]], time: 1, samplesPerSec: 100, samples: 48, skippedSteps: 0,
  }));
}

function evaluation(): EvaluateResult {
  const total = CONFUSION.flat().reduce((a, b) => a + b, 0);
  const correct = CONFUSION.reduce((a, row, i) => a + row[i], 0);
  return {
    loss: 0.7, accuracy: correct / total, topk: 1, k: 3, top5: 1, samples: total, confusion: CONFUSION,
    perClass: CONFUSION.map((row, i) => {
      const predicted = CONFUSION.reduce((a, r) => a + r[i], 0);
      const support = row.reduce((a, b) => a + b, 0);
      return { precision: row[i] / predicted, recall: row[i] / support, support };
    }),
  };
}

async function thumbnail(rgb: [number, number, number]): Promise<Buffer> {
  return sharp({ create: { width: 24, height: 24, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } }).png().toBuffer();
}

/**
 * Opens `file` in headless Chromium with the network pointed at nothing (a dead proxy, every host
 * unresolvable), lets the page's scripts run (10 s of virtual time: vega-embed renders into the
 * DOM), then writes a screenshot and resolves to the DOM after the scripts ran.
 */
function render(file: string, screenshot: string, profile: string): Promise<string> {
  const args = [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', `--user-data-dir=${profile}`,
    '--proxy-server=127.0.0.1:9', '--host-resolver-rules=MAP * ~NOTFOUND',
    '--hide-scrollbars', '--window-size=1280,1800', '--virtual-time-budget=10000',
    `--screenshot=${screenshot}`, '--dump-dom', `file://${file}`,
  ];
  return new Promise((resolve, reject) => {
    execFile(CHROMIUM, args, { encoding: 'utf8', timeout: 90_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${CHROMIUM} failed: ${err.message}\n${stderr.split('\n').filter((l) => !/dbus/i.test(l)).join('\n')}`));
      else resolve(stdout);
    });
  });
}

const unescape = (s: string) => s.replace(/&(amp|lt|gt|quot|#39|#(\d+));/g, (_, name, code) =>
  (code ? String.fromCharCode(Number(code)) : ({ amp: '&', lt: '<', gt: '>', quot: '"', '#39': "'" } as Record<string, string>)[name]));

/** The part of the DOM inside chart `id`'s div (up to the next chart or heading). */
function chartDom(dom: string, id: string): string {
  const start = dom.indexOf(`id="chart-${id}"`);
  if (start < 0) return '';
  const rest = dom.slice(start + 1);
  const ends = [rest.indexOf('id="chart-'), rest.indexOf('<h2')].filter((i) => i >= 0);
  return rest.slice(0, Math.min(...ends));
}

interface MarkItem { label: string; d?: string; text?: string }

/**
 * The items of every data mark (Vega's `role-mark` containers) of `kind` ('line', 'symbol',
 * 'rect', 'text') in a chart: one array per container. Items of a non-group mark are flat <path>
 * or <text> elements, so a container ends at its first </g>.
 */
function marks(chart: string, kind: string): MarkItem[][] {
  const out: MarkItem[][] = [];
  const container = new RegExp(`<g class="mark-${kind} role-mark[^"]*"[^>]*>([\\s\\S]*?)</g>`, 'g');
  for (const m of chart.matchAll(container)) {
    const items: MarkItem[] = [];
    for (const it of m[1].matchAll(/<(path|text)\b([^>]*)>(?:([^<]*)<\/text>)?/g)) {
      const label = /aria-label="([^"]*)"/.exec(it[2]);
      const d = /\sd="([^"]*)"/.exec(it[2]);
      items.push({ label: unescape(label?.[1] ?? ''), d: d?.[1], text: it[3] === undefined ? undefined : unescape(it[3]) });
    }
    out.push(items);
  }
  return out;
}

/** "a: 1; b: x" -> { a: '1', b: 'x' } (Vega's aria-label of a data item). */
const fields = (label: string) => Object.fromEntries(label.split('; ').map((kv) => [kv.slice(0, kv.indexOf(': ')), kv.slice(kv.indexOf(': ') + 2)]));

describe('report.html', () => {
  let dir: string;
  let html: string;
  let dom: string;
  let shot: string;
  let thumbs: Buffer[];
  const input = (): ReportInput => ({
    title: 'report test: cats & dogs',
    runs: [{ name: 'fine-tune', epochs: epochs(), lrSteps: LR_STEPS }],
    evaluation: evaluation(),
    classes: CLASSES,
    misclassified: [
      { png: thumbs[0], trueLabel: 'cat', predicted: 'dog & wolf', probability: 0.71, source: 'val/cat/001.jpg' },
      { png: thumbs[1], trueLabel: 'dog & wolf', predicted: 'cat', probability: 0.55, source: 'val/dog/007.png' },
    ],
    settings: { model: '/models/m.pt', epochs: 3, lr: 0.001, note: '<b>not bold</b>', freeze: ['layer1.**', 'conv1.*'] },
    summary: { 'validation accuracy': '70.6%' },
  });

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finetorch-report-'));
    thumbs = await Promise.all([thumbnail([200, 40, 40]), thumbnail([40, 160, 60])]);
    const file = await writeReport(path.join(dir, 'out'), input());
    expect(file).toBe(path.join(dir, 'out', 'report.html'));
    html = fs.readFileSync(file, 'utf8');
    shot = path.join(dir, 'screenshot.png');
    dom = await render(file, shot, path.join(dir, 'chromium-profile'));
  }, 120_000);

  afterAll(() => { if (dir) fs.rmSync(dir, { recursive: true, force: true }); });

  test('the screenshot is a non-trivial PNG in which the charts drew', async () => {
    const img = sharp(shot);
    const meta = await img.metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['png', 1280, 1800]);
    const { data, info } = await img.removeAlpha().raw().toBuffer({ resolveWithObject: true });
    let nonWhite = 0;
    let chartBlue = 0; // Vega's first category colour, #4c78a8: the lines, points and bars
    for (let i = 0; i < data.length; i += info.channels) {
      if (data[i] < 245 || data[i + 1] < 245 || data[i + 2] < 245) nonWhite++;
      if (data[i] === 0x4c && data[i + 1] === 0x78 && data[i + 2] === 0xa8) chartBlue++;
    }
    expect(nonWhite / (info.width * info.height)).toBeGreaterThan(0.02);
    // the per-class bars alone are 3 bars ~96 px wide and up to 220 px high
    expect(chartBlue).toBeGreaterThan(5000);
  });

  test('every chart div holds an <svg> with data marks', () => {
    for (const id of ['curves', 'lr', 'confusion', 'perclass']) {
      const chart = chartDom(dom, id);
      expect(chart).toContain('<svg');
      const items = ['line', 'symbol', 'rect', 'text'].flatMap((k) => marks(chart, k).flat());
      expect(items.length).toBeGreaterThan(0);
    }
  });

  test('the curves chart draws train and validation loss and accuracy, one point per epoch', () => {
    const chart = chartDom(dom, 'curves');
    const points = marks(chart, 'symbol');
    expect(points.map((p) => p.length)).toEqual([6, 6]); // loss, accuracy: 3 epochs x (train, validation)
    const panels = [['loss', 'valLoss'], ['accuracy', 'valAccuracy']] as const;
    panels.forEach(([train, val], k) => {
      for (const [series, key] of [['fine-tune train', train], ['fine-tune validation', val]] as const) {
        const got = points[k].map((p) => fields(p.label)).filter((f) => f.series === series);
        expect(got.map((f) => Number(f.epoch))).toEqual([1, 2, 3]);
        got.forEach((f, i) => expect(Number(f[train])).toBeCloseTo(epochs()[i][key]!, 6)); // labelled with the y title
      }
    });
    const lines = marks(chart, 'line').flat();
    expect(lines).toHaveLength(4); // 2 series in each of 2 panels
    for (const l of lines) expect(l.d?.match(/L/g)).toHaveLength(2); // 3 epochs: 2 segments
  });

  test('the epoch axes are labelled with whole epochs only', () => {
    const chart = chartDom(dom, 'curves');
    const axes = [...chart.matchAll(/aria-label="X-axis titled 'epoch'[^"]*"[\s\S]*?<g class="mark-text role-axis-label"[^>]*>([\s\S]*?)<\/g>/g)];
    expect(axes).toHaveLength(2); // loss and accuracy panels
    for (const [, labels] of axes) {
      const shown = [...labels.matchAll(/<text\b([^>]*)>([^<]*)<\/text>/g)].filter((t) => !/opacity="0"/.test(t[1])).map((t) => t[2]);
      expect(shown).toEqual(['1', '2', '3']);
    }
  });

  test('the learning-rate chart draws one line through every optimizer step', () => {
    const [line] = marks(chartDom(dom, 'lr'), 'line').flat();
    expect(line.d?.match(/L/g)).toHaveLength(LR_STEPS.length - 1);
    expect(fields(line.label)['optimizer step']).toBe('1');
  });

  test('the confusion matrix is a 3x3 heat map labelled with the counts', () => {
    const chart = chartDom(dom, 'confusion');
    const cells = marks(chart, 'rect').flat().map((c) => fields(c.label));
    expect(cells).toHaveLength(9);
    const texts = marks(chart, 'text').flat();
    expect(texts).toHaveLength(9);
    const got = CLASSES.map(() => CLASSES.map(() => -1));
    for (const t of texts) {
      const f = fields(t.label);
      got[CLASSES.indexOf(f.true)][CLASSES.indexOf(f.predicted)] = Number(t.text);
    }
    expect(got).toEqual(CONFUSION);
    expect(chart).toContain('Confusion matrix (validation)');
  });

  test('the per-class chart draws one bar per class, its height the class recall', () => {
    const bars = marks(chartDom(dom, 'perclass'), 'rect').flat();
    expect(bars.map((b) => fields(b.label).class)).toEqual(CLASSES);
    const heights = bars.map((b) => Number(/v(-?[\d.]+)/.exec(b.d!)![1]));
    const full = 220; // the chart's height: accuracy 1
    bars.forEach((b, i) => {
      const recall = evaluation().perClass[i].recall;
      expect(Number(fields(b.label).accuracy)).toBeCloseTo(recall, 3);
      expect(heights[i] / full).toBeCloseTo(recall, 2);
    });
  });

  test('opens offline: no script, stylesheet or image is loaded from the network', () => {
    expect(html).not.toMatch(/<script[^>]*\ssrc=/i);
    expect(html).not.toMatch(/<link\b/i);
    expect(html).not.toMatch(/\s(src|href)\s*=\s*["']?(https?:)?\/\//i);
    expect(html).not.toMatch(/url\(\s*["']?(https?:)?\/\//i);
    expect(html).not.toMatch(/@import/i);
    // and the charts above were drawn by a Chromium with no usable network (dead proxy, no DNS)
  });

  test('shows the settings table, values escaped', () => {
    expect(html).toContain('<h2>Settings</h2>');
    expect(html).toContain('<tr><th>model</th><td>/models/m.pt</td></tr>');
    expect(html).toContain('<tr><th>lr</th><td>0.001</td></tr>');
    expect(html).toContain('<tr><th>note</th><td>&#60;b&#62;not bold&#60;/b&#62;</td></tr>');
    expect(html).toContain('<tr><th>freeze</th><td>[&#34;layer1.**&#34;,&#34;conv1.*&#34;]</td></tr>');
    expect(dom).not.toContain('<b>not bold</b>');
  });

  test('shows each misclassified image with its true and predicted labels', () => {
    expect(html).toContain('<h2>Misclassified examples</h2>');
    const figures = [...html.matchAll(/<figure><img alt="([^"]*)" src="data:image\/png;base64,([^"]+)"><figcaption>(.*?)<\/figcaption><\/figure>/g)];
    expect(figures.map((f) => f[1])).toEqual(['val/cat/001.jpg', 'val/dog/007.png']);
    expect(figures.map((f) => Buffer.from(f[2], 'base64').equals(thumbs[figures.indexOf(f)]))).toEqual([true, true]);
    expect(figures[0][3]).toBe('true <b>cat</b><br>predicted <b>dog &#38; wolf</b> (71%)');
    expect(figures[1][3]).toBe('true <b>dog &#38; wolf</b><br>predicted <b>cat</b> (55%)');
  });

  test('writes curves.png beside it: the loss and accuracy panels, not a blank image', async () => {
    const img = sharp(path.join(dir, 'out', 'curves.png'));
    const meta = await img.metadata();
    expect(meta.format).toBe('png');
    expect(meta.width! > meta.height!).toBe(true); // two panels side by side
    const stats = await img.stats();
    expect(stats.isOpaque).toBe(true);
    expect(stats.channels.some((c) => c.min < 128)).toBe(true); // lines and text drawn on white
  });

  test('without an evaluation or misclassified images: only the training charts and no empty sections', async () => {
    const file = await writeReport(path.join(dir, 'bare'), { title: 'bare', runs: [{ name: 'run', epochs: epochs() }], classes: [], settings: { epochs: 3 } });
    const bare = fs.readFileSync(file, 'utf8');
    expect([...bare.matchAll(/<div class="chart" id="chart-(\w+)">/g)].map((m) => m[1])).toEqual(['curves', 'lr']);
    expect(bare).not.toContain('Misclassified');
    expect(bare).not.toContain('Runs compared');
    expect(bare).toContain('<tr><th>epochs</th><td>3</td></tr>');
  });

  test("a comparison shows as the 'Runs compared' table under the summary, one row per run, values escaped", async () => {
    const file = await writeReport(path.join(dir, 'compared'), {
      title: 'compared', runs: [{ name: 'a', epochs: epochs() }, { name: 'b', epochs: epochs() }], classes: [], settings: {},
      comparison: { columns: ['run', 'trainable'], rows: [['a', 1200], ['<b>', '9 (10%)']] },
    });
    const page = fs.readFileSync(file, 'utf8');
    expect(page).toContain('<h2>Runs compared</h2><table id="runs"><tr><th>run</th><th>trainable</th></tr>' +
      '<tr><td>a</td><td>1200</td></tr><tr><td>&#60;b&#62;</td><td>9 (10%)</td></tr></table>');
    expect(page.indexOf('Runs compared')).toBeLessThan(page.indexOf('<h2>Training</h2>'));
  });
});
