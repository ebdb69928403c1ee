/**
 * Stable error codes. Errors from libtorch and from finetorch's native layer carry `err.code`, set
 * in C++ where the error is made (`native/common.cc`: `ErrorCode`); errors that TypeScript makes
 * about a disposed handle or a bad model file carry the same codes. Match on `code`, never on
 * message text: messages may change between libtorch versions, codes do not.
 *
 * @example
 * try {
 *   await model.forward(x);
 * } catch (err) {
 *   if ((err as torch.FinetorchError).code === 'FINETORCH_OUT_OF_MEMORY') batchSize /= 2;
 * }
 */
export const ERROR_CODES = {
  /** An allocation failed (CPU or CUDA memory). */
  FINETORCH_OUT_OF_MEMORY: 'an allocation failed',
  /** Shapes that do not fit together (matmul, broadcasting, view, a layer's input size). */
  FINETORCH_SHAPE: 'shapes do not fit',
  /** A dtype that the operation does not take, or dtypes that do not match. */
  FINETORCH_DTYPE: 'a dtype that does not fit',
  /** Tensors on different devices in one operation. */
  FINETORCH_DEVICE: 'tensors on different devices',
  /** An index or dimension out of range. */
  FINETORCH_INDEX: 'an index out of range',
  /** A value libtorch refused (ValueError). */
  FINETORCH_VALUE: 'a value libtorch refused',
  /** An operation libtorch does not implement for these inputs. */
  FINETORCH_NOT_IMPLEMENTED: 'not implemented for these inputs',
  /** The model file is not TorchScript that libtorch can load (damaged, a state dict, other format). */
  FINETORCH_BAD_MODEL_FILE: 'not a loadable TorchScript file',
  /** A tensor, model or optimizer was used after `dispose()`. */
  FINETORCH_DISPOSED: 'used after dispose()',
  /** Any other libtorch error. */
  FINETORCH_TORCH: 'another libtorch error',
  /** Any other native error. */
  FINETORCH_NATIVE: 'another native error',
  /**
   * torch.distributed: a bad launch (missing RANK, WORLD_SIZE mismatch, unreachable or busy
   * MASTER_PORT), models that differ across ranks, or a collective that failed because a rank was
   * lost (the message names it).
   */
  FINETORCH_DISTRIBUTED: 'a distributed launch or collective failed',
} as const;

/** One of `ERROR_CODES`' keys. */
export type ErrorCode = keyof typeof ERROR_CODES;

/** An Error with a stable `code` (see `ERROR_CODES`). File-system errors keep Node's errno code (`ENOSPC`). */
export interface FinetorchError extends Error {
  code?: ErrorCode | string;
  /** For native errors: the message without the operation's name in front. */
  detail?: string;
}

/** @internal An Error carrying `code`. */
export function codedError(code: ErrorCode, message: string, options?: { cause?: unknown }): FinetorchError {
  const err = new Error(message, options) as FinetorchError;
  err.code = code;
  return err;
}

/** @internal Gives an Error of any class (TypeError, RangeError) its code. */
export function withCode<E extends Error>(code: ErrorCode, err: E): E & FinetorchError {
  return Object.assign(err, { code });
}

/** @internal The Error for a handle used after dispose(). */
export function disposedError(message: string): FinetorchError {
  return codedError('FINETORCH_DISPOSED', message);
}
