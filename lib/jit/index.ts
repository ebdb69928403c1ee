/** `torch.jit`: TorchScript models. */
export { load } from './load';
export type { LoadOptions } from './load';
export { ScriptModule, ModelSummary } from './module';
export type { ModuleInfo, SummaryRow, SaveOptions } from './module';
export type { ModelMetadata, ModelTask } from './metadata';
export type { NamePattern } from './patterns';
