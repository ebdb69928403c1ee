/**
 * finetorch: fine-tune pretrained PyTorch models from TypeScript, on libtorch.
 *
 * @example
 * import * as torch from 'finetorch';
 * const x = torch.randn([2, 3]);
 * console.log(await (await x.sum()).item());
 */
export { Tensor, cat, stack } from './tensor';
export type { TensorData, ValuesIndices, ReduceOptions } from './tensor';
export { tensor, zeros, ones, empty, full, rand, randn, randint, arange } from './creation';
export type { TensorOptions, TensorLike } from './creation';
export { tidy, keep, memory } from './memory';
export type { MemoryInfo } from './memory';
export { manualSeed, setNumThreads, getNumThreads, setTrainingPriority, version, cuda, backends } from './runtime';
export type { DType } from './native';
export { noGrad, enableGrad, inferenceMode, type GradMode } from './autograd';
export { ERROR_CODES, type ErrorCode, type FinetorchError } from './errors';
export * as jit from './jit';
export * as nn from './nn';
export * as optim from './optim';
export * as train from './train';
export * as data from './data';
export * as transforms from './transforms';
export * as report from './report';
export * as serving from './serving';
export * as peft from './peft';
export * as distributed from './distributed';
