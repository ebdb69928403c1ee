/** `torch.nn.utils`: gradient clipping. */
import * as check from '../check';
import { native } from '../native';
import { Tensor } from '../tensor';
import { disposedError } from '../errors';

/**
 * Rescales the gradients of `params` so their total norm is at most `maxNorm`; resolves to the
 * norm before clipping (as PyTorch's `clip_grad_norm_`).
 *
 * @example
 * await loss.backward();
 * const norm = await torch.nn.utils.clipGradNorm(model.parameters({ trainable: true }), 1.0);
 */
export function clipGradNorm(params: Tensor[], maxNorm: number, normType = 2): Promise<number> {
  if (!Array.isArray(params) || !params.every((p) => p instanceof Tensor)) {
    return Promise.reject(new TypeError('clipGradNorm: params must be an array of Tensors'));
  }
  if (!(typeof maxNorm === 'number' && maxNorm > 0)) return Promise.reject(new RangeError(`clipGradNorm: maxNorm must be > 0, got ${String(maxNorm)}`));
  check.number(normType, 'clipGradNorm: normType');
  try {
    return native.clipGradNorm(params.map((p) => { if (p.disposed) throw disposedError('clipGradNorm: a parameter was disposed'); return p.handle; }), maxNorm, normType);
  } catch (e) {
    return Promise.reject(e);
  }
}
