/**
 * Progress display for `fit`: a bar per epoch on a TTY (cli-progress), one line per epoch
 * otherwise, nothing when switched off.
 */
import { SingleBar, Presets } from 'cli-progress';

export interface ProgressSink {
  start(epoch: number, epochs: number, total: number): void;
  update(done: number, stats: { loss: number; accuracy: number; lr: number; samplesPerSec: number }): void;
  end(line: string): void;
}

/** @internal */
export function makeProgress(mode: boolean | 'auto' | undefined, stream: NodeJS.WriteStream = process.stderr): ProgressSink {
  if (mode === false) return { start() {}, update() {}, end() {} };
  if (mode === true || stream.isTTY) {
    const bar = new SingleBar(
      { format: 'epoch {epoch} [{bar}] {value}/{total} | loss {loss} | acc {acc} | lr {lr} | {sps} samples/s', stream, hideCursor: true, clearOnComplete: true },
      Presets.shades_classic,
    );
    return {
      start: (epoch, epochs, total) => bar.start(total || 1, 0, { epoch: `${epoch + 1}/${epochs}`, loss: '-', acc: '-', lr: '-', sps: '-' }),
      update: (done, s) => {
        if (done > bar.getTotal()) bar.setTotal(done);
        bar.update(done, { loss: s.loss.toFixed(4), acc: s.accuracy.toFixed(3), lr: s.lr.toExponential(2), sps: s.samplesPerSec.toFixed(1) });
      },
      end: (line) => { bar.stop(); stream.write(`${line}\n`); },
    };
  }
  return { start() {}, update() {}, end: (line) => { stream.write(`${line}\n`); } };
}
