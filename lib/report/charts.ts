/**
 * Vega-Lite chart specs for the training report, and their rendering to SVG/PNG in Node (vega's
 * headless renderer, then sharp) for the PNG written beside the report.
 */
import { writeAtomic } from '../fsutil';
import type { EvaluateResult } from '../train/evaluate';
import type { EpochRecord } from '../train/fit';

/** One training run to chart (the demo compares three). */
export interface RunHistory {
  name: string;
  epochs: EpochRecord[];
  /** Learning rate after every optimizer step (group 0), when recorded. */
  lrSteps?: number[];
}

type Spec = Record<string, unknown>;
const SCHEMA = 'https://vega.github.io/schema/vega-lite/v5.json';

function curve(runs: RunHistory[], metric: 'loss' | 'accuracy', title: string): Spec {
  const values = runs.flatMap((r) => r.epochs.flatMap((e) => {
    const out = [{ epoch: e.epoch, value: e[metric], series: `${r.name} train` }];
    const v = metric === 'loss' ? e.valLoss : e.valAccuracy;
    if (v !== undefined) out.push({ epoch: e.epoch, value: v, series: `${r.name} validation` });
    return out;
  }));
  return {
    $schema: SCHEMA, title, width: 320, height: 220, data: { values },
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'epoch', type: 'quantitative', axis: { values: [...new Set(values.map((v) => v.epoch))], format: 'd' } },
      y: { field: 'value', type: 'quantitative', title: metric, ...(metric === 'accuracy' ? { scale: { domain: [0, 1] } } : {}) },
      color: { field: 'series', type: 'nominal' },
    },
  };
}

/** Train/validation loss and accuracy per epoch, side by side. */
export function curvesSpec(runs: RunHistory[]): Spec {
  return { $schema: SCHEMA, hconcat: [curve(runs, 'loss', 'Loss per epoch'), curve(runs, 'accuracy', 'Accuracy per epoch')] };
}

/** The learning-rate schedule (per step when recorded, else per epoch). */
export function lrSpec(runs: RunHistory[]): Spec {
  const values = runs.flatMap((r) => (r.lrSteps?.length
    ? r.lrSteps.map((lr, i) => ({ step: i + 1, lr, run: r.name }))
    : r.epochs.map((e) => ({ step: e.epoch, lr: e.lr[0], run: r.name }))));
  const perStep = runs.some((r) => r.lrSteps?.length);
  return {
    $schema: SCHEMA, title: 'Learning rate', width: 320, height: 220, data: { values }, mark: 'line',
    encoding: {
      x: { field: 'step', type: 'quantitative', title: perStep ? 'optimizer step' : 'epoch' },
      y: { field: 'lr', type: 'quantitative', axis: { format: '.1e' } },
      color: { field: 'run', type: 'nominal' },
    },
  };
}

/** The confusion matrix as a heat map with counts. */
export function confusionSpec(ev: EvaluateResult, classes: string[], set = 'validation'): Spec {
  const values = ev.confusion.flatMap((row, t) => row.map((count, p) => ({ true: classes[t] ?? String(t), predicted: classes[p] ?? String(p), count })));
  const order = classes.length ? classes : ev.confusion.map((_, i) => String(i));
  return {
    $schema: SCHEMA, title: `Confusion matrix (${set})`, width: 300, height: 300, data: { values },
    encoding: {
      x: { field: 'predicted', type: 'ordinal', sort: order },
      y: { field: 'true', type: 'ordinal', sort: order },
    },
    layer: [
      { mark: 'rect', encoding: { color: { field: 'count', type: 'quantitative', scale: { scheme: 'blues' } } } },
      { mark: { type: 'text', fontSize: 10 }, encoding: { text: { field: 'count', type: 'quantitative' } } },
    ],
  };
}

/** Accuracy (recall) of each class. */
export function perClassSpec(ev: EvaluateResult, classes: string[], set = 'validation'): Spec {
  const values = ev.perClass.map((c, i) => ({ class: classes[i] ?? String(i), accuracy: Number.isNaN(c.recall) ? 0 : c.recall, support: c.support }));
  return {
    $schema: SCHEMA, title: `Per-class accuracy (${set})`, width: 320, height: 220, data: { values }, mark: 'bar',
    encoding: {
      x: { field: 'class', type: 'nominal', sort: null },
      y: { field: 'accuracy', type: 'quantitative', scale: { domain: [0, 1] } },
      tooltip: [{ field: 'class' }, { field: 'accuracy', format: '.3f' }, { field: 'support' }],
    },
  };
}

/** Renders a Vega-Lite spec to SVG in Node (no browser, no network). */
export async function toSvg(spec: Spec): Promise<string> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const vega = require('vega');
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const vl = require('vega-lite');
  const view = new vega.View(vega.parse(vl.compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Renders a Vega-Lite spec to a PNG file (SVG rasterised by sharp), written atomically. */
export async function toPng(spec: Spec, file: string): Promise<void> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const sharp = require('sharp');
  const png: Buffer = await sharp(Buffer.from(await toSvg(spec)), { density: 144 }).flatten({ background: '#ffffff' }).png().toBuffer();
  await writeAtomic(file, png, 'writeReport');
}
