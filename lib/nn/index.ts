/** `torch.nn`: losses and utilities for training TorchScript models. */
export { CrossEntropyLoss } from './loss';
export type { CrossEntropyOptions } from './loss';
export * as functional from './functional';
export * as utils from './utils';
