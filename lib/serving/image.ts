/** Encoded images (an HTTP upload, a file's bytes) to predictor inputs, through a transform. */
import { Rng } from '../data/random';
import { runTransform } from '../transforms/pipeline';
import { compile, type Transform } from '../transforms/transform';

/**
 * Decodes an encoded image (JPEG, PNG, WebP, ...) and applies `transform` (an eval recipe such as
 * `transforms.imagenet({ train: false })`) on this thread, without a task on any executor: the
 * result goes straight to `Predictor.predict` or `classify`. An undecodable image is an Error.
 *
 * @example
 * const input = await torch.serving.imageInput(req.body, transforms.imagenet({ train: false, size: 224 }));
 * const top = await predictor.classify(input, { topk: 3, labels });
 */
export async function imageInput(bytes: Buffer | Uint8Array, transform: Transform): Promise<{ data: Float32Array; shape: number[] }> {
  if (!(bytes instanceof Uint8Array)) throw new TypeError('imageInput: expected the image bytes as a Buffer');
  const buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let decoded;
  try {
    decoded = await runTransform({ file: 'upload', bytes: buf }, compile(transform), new Rng(0));
  } catch (err) {
    throw new Error(`imageInput: not a decodable image: ${(err as Error).message}`, { cause: err });
  }
  const [c, h, w] = decoded.shape;
  const data = new Float32Array(c * h * w);
  decoded.write(data, 0);
  return { data, shape: [c, h, w] };
}
