/** `torch.optim`: optimizers and learning-rate schedules. */
export { Optimizer, AdamW, SGD } from './optimizer';
export type { AdamWOptions, SGDOptions, ParamGroup, OptimizerState } from './optimizer';
export * as lrScheduler from './lr_scheduler';
