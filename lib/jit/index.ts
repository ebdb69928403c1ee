/** `torch.jit`: TorchScript models. */
export { load } from './load';
export type { LoadOptions } from './load';
export { ScriptModule, ModelSummary } from './module';
export type { ModuleInfo, SummaryRow } from './module';
export type { NamePattern } from './patterns';
