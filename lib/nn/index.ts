/** `torch.nn`: losses and utilities for training TorchScript models. */
export { CrossEntropyLoss } from './loss';
export type { CrossEntropyOptions } from './loss';
export { BCEWithLogitsLoss, MSELoss, SmoothL1Loss, HuberLoss } from './losses';
export type { BCEWithLogitsOptions, ReductionOptions, MSEOptions, SmoothL1Options, HuberOptions, Reduction, LossFunction } from './losses';
export * as functional from './functional';
export * as utils from './utils';
export * as parallel from './parallel';
