/** `train`: the fine-tuning loop, evaluation and prediction. */
export { fit } from './fit';
export type { FitOptions, History, EpochRecord, Stage, FitCallbacks } from './fit';
export { evaluate, predict } from './evaluate';
export type { EvaluateResult, EvaluateOptions, EvaluateTask, MultiLabelResult, PredictOptions } from './evaluate';
export type { Batch, BatchSource, ModelInput } from './batch';
export type { FitLoss } from './generic_step';
export type { OutputChoice } from './model_io';
export { describe } from './describe';
export type { DescribeOptions } from './describe';
