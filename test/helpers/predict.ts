/**
 * The serving tests' reference: what a model predicts for one image, computed the plain way
 * (load, forward, softmax in JS), to compare with the Predictor, the service and `finetorch serve`.
 */
import * as torch from '../../lib';

/** The top-k labels, softmax-ordered, of `modelFile`'s forward on an image through `transform`. */
export async function expectedTop(modelFile: string, bytes: Buffer, transform: torch.transforms.Transform, names: readonly string[], k: number): Promise<{ labels: string[]; probabilities: number[] }> {
  const model = await torch.jit.load(modelFile);
  model.eval();
  const input = await torch.serving.imageInput(bytes, transform);
  const logits = (await (await model.forward(torch.tensor(input.data, { shape: [1, ...input.shape] }))).data()) as Float32Array;
  model.dispose();
  const e = Array.from(logits, (v) => Math.exp(v));
  const sum = e.reduce((a, b) => a + b, 0);
  const order = e.map((v, i) => [v / sum, i]).sort((a, b) => b[0] - a[0]).slice(0, k);
  return { labels: order.map(([, i]) => names[i]), probabilities: order.map(([p]) => p) };
}
