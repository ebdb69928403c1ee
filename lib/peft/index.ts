/**
 * `torch.peft`: parameter-efficient fine-tuning. LoRA adapters on Linear and Conv2d layers of a
 * TorchScript model, saved and loaded in Hugging Face peft's file layout, merged into the weights
 * when the model is saved; BitFit.
 *
 * @example
 * await torch.peft.lora(model, { targets: ['layer4.**'], rank: 8, alpha: 16, modulesToSave: ['fc'] });
 * await train.fit(model, { ... });
 * await torch.peft.saveAdapter(model, 'adapter/');
 * await model.save('merged.pt');
 */
export { lora, merge, unmerge, saveAdapter, loadAdapter, bitfit, adapterOf } from './lora';
export type { LoraOptions, LoraAdapter } from './lora';
export { encodeSafetensors, decodeSafetensors } from './safetensors';
export type { SafeTensor } from './safetensors';
