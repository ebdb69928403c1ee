/**
 * `report.html`: a self-contained page (opens offline) with the loss/accuracy curves, the
 * learning-rate schedule, the confusion matrix, per-class accuracy, misclassified examples and
 * the run's settings. Charts are Vega-Lite specs rendered in the page by vega-embed, whose
 * scripts are inlined; `curves.png` is the same curves rendered in Node. A table can compare the
 * runs side by side (the demo's accuracy, trainable parameters and optimizer state of each).
 */
import * as fs from 'fs';
import { promises as fsp } from 'fs';
import * as path from 'path';
import { fsReason, writeAtomic } from '../fsutil';
import type { EvaluateResult } from '../train/evaluate';
import { confusionSpec, curvesSpec, lrSpec, perClassSpec, toPng, type RunHistory } from './charts';

/** A misclassified example shown in the report. */
export interface Misclassified {
  /** PNG bytes of the image (a thumbnail is fine). */
  png: Buffer;
  trueLabel: string;
  predicted: string;
  probability: number;
  source?: string;
}

/** Everything `writeReport` shows. */
export interface ReportInput {
  title: string;
  runs: RunHistory[];
  evaluation?: EvaluateResult;
  /** What the evaluation ran on, for chart titles (default 'validation'). */
  evaluationSet?: string;
  classes: string[];
  misclassified?: Misclassified[];
  settings: Record<string, unknown>;
  /** Extra numbers shown at the top (e.g. pretrained vs scratch accuracy). */
  summary?: Record<string, string | number>;
  /** A table comparing the runs, one row each, shown under the summary as 'Runs compared'. */
  comparison?: { columns: string[]; rows: (string | number)[][] };
}

function vendor(pkg: string, file: string): Promise<string> {
  for (const base of module.paths) {
    const candidate = path.join(base, pkg, 'build', file);
    if (fs.existsSync(candidate)) return fsp.readFile(candidate, 'utf8');
  }
  throw new Error(`report: ${pkg}/build/${file} not found (is ${pkg} installed?)`);
}

const esc = (s: unknown) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
// Inlined scripts must not close the <script> element early.
const inline = (code: string) => code.replace(/<\/script/gi, '<\\/script');

/**
 * Writes `report.html` and `curves.png` into `outDir`; resolves to the HTML's path. Each file is
 * written atomically: a failure (a full disk, a read-only folder) leaves no partial or temporary
 * file and rejects with an Error naming the file and the cause.
 *
 * @example
 * await writeReport('out', { title: 'flowers', runs: [{ name: 'fine-tune', epochs: history.epochs }], classes, settings: {} });
 */
export async function writeReport(outDir: string, input: ReportInput): Promise<string> {
  await fsp.mkdir(outDir, { recursive: true }).catch((err) => {
    throw new Error(`writeReport: cannot make the folder '${outDir}': ${fsReason(err)}`, { cause: err });
  });
  const charts: [string, Record<string, unknown>][] = [['curves', curvesSpec(input.runs)], ['lr', lrSpec(input.runs)]];
  if (input.evaluation) {
    const set = input.evaluationSet ?? 'validation';
    charts.push(['confusion', confusionSpec(input.evaluation, input.classes, set)], ['perclass', perClassSpec(input.evaluation, input.classes, set)]);
  }
  const [vega, vegaLite, vegaEmbed] = await Promise.all([
    vendor('vega', 'vega.min.js'), vendor('vega-lite', 'vega-lite.min.js'), vendor('vega-embed', 'vega-embed.min.js'),
  ]);
  const summary = Object.entries(input.summary ?? {}).map(([k, v]) => `<div class="stat"><b>${esc(v)}</b><span>${esc(k)}</span></div>`).join('');
  const mis = (input.misclassified ?? []).map((m) =>
    `<figure><img alt="${esc(m.source ?? m.trueLabel)}" src="data:image/png;base64,${m.png.toString('base64')}"><figcaption>true <b>${esc(m.trueLabel)}</b><br>predicted <b>${esc(m.predicted)}</b> (${(m.probability * 100).toFixed(0)}%)</figcaption></figure>`).join('');
  const comparison = input.comparison && `<table id="runs"><tr>${input.comparison.columns.map((c) => `<th>${esc(c)}</th>`).join('')}</tr>` +
    input.comparison.rows.map((row) => `<tr>${row.map((v) => `<td>${esc(v)}</td>`).join('')}</tr>`).join('') + '</table>';
  const settings = Object.entries(input.settings).map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(typeof v === 'object' ? JSON.stringify(v) : v)}</td></tr>`).join('');
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(input.title)}</title>
<style>
body{font:14px system-ui,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}
.charts{display:flex;flex-wrap:wrap;gap:24px}.chart{min-width:340px}
.stats{display:flex;gap:16px;flex-wrap:wrap}.stat{border:1px solid #ddd;border-radius:6px;padding:10px 16px}
.stat b{display:block;font-size:20px}.stat span{color:#666}
.grid{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0;text-align:center;font-size:12px}
figure img{width:96px;height:96px;object-fit:contain;image-rendering:pixelated;border:1px solid #ccc;background:#000}
table{border-collapse:collapse}th,td{border:1px solid #ddd;padding:4px 8px;text-align:left}
</style>
<script>${inline(vega)}</script><script>${inline(vegaLite)}</script><script>${inline(vegaEmbed)}</script>
</head><body>
<h1>${esc(input.title)}</h1>
<div class="stats">${summary}</div>
${comparison ? `<h2>Runs compared</h2>${comparison}` : ''}
<h2>Training</h2>
<div class="charts">${charts.map(([id]) => `<div class="chart" id="chart-${id}"></div>`).join('')}</div>
${mis ? `<h2>Misclassified examples</h2><div class="grid">${mis}</div>` : ''}
<h2>Settings</h2><table>${settings}</table>
<script>
const specs = ${JSON.stringify(Object.fromEntries(charts)).replace(/</g, '\\u003c')};
window.chartsDone = Promise.all(Object.entries(specs).map(([id, spec]) =>
  vegaEmbed('#chart-' + id, spec, { actions: false, renderer: 'svg' })));
</script>
</body></html>
`;
  const file = path.join(outDir, 'report.html');
  await writeAtomic(file, html, 'writeReport');
  await toPng(curvesSpec(input.runs), path.join(outDir, 'curves.png'));
  return file;
}

export type { RunHistory };
