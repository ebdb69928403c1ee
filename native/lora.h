// LoRA on TorchScript modules: a target layer's `weight` is re-parametrised as
// W0 + (alpha / r) * (B.view(out, r) @ A.view(r, -1)).view(W0.shape) while a forward runs, with W0
// frozen and A, B trainable leaves. A TorchScript class type is shared by every instance of the same
// concrete type, so nothing is registered on the module: a registry keyed by the root module's
// object holds the adapter, and the forward paths open a LoraScope around the model call. Outside
// a scope (snapshots, to(), clones, saves) the weight attribute holds W0 itself.
#pragma once

#include "common.h"

#include <torch/script.h>

namespace finetorch {

// While alive, every un-merged LoRA target of `root` has weight = W0 + delta, computed under the
// grad mode current at construction (so backward reaches A and B); restores W0 when destroyed.
// A no-op for a module without an adapter.
class LoraScope {
 public:
  explicit LoraScope(const torch::jit::Module& root);
  ~LoraScope();
  LoraScope(const LoraScope&) = delete;
  LoraScope& operator=(const LoraScope&) = delete;

 private:
  std::vector<std::pair<torch::jit::Module, at::Tensor>> restore_;
};

// For a save: weights merged (`merge`) or the base weights (not merged), whatever the adapter's
// state; restores the resting weights when destroyed.
class LoraSaveScope {
 public:
  LoraSaveScope(const torch::jit::Module& root, bool merge);
  ~LoraSaveScope();
  LoraSaveScope(const LoraSaveScope&) = delete;
  LoraSaveScope& operator=(const LoraSaveScope&) = delete;

 private:
  std::vector<std::pair<torch::jit::Module, at::Tensor>> restore_;
};

// The adapter's tensors as parameters named `<target>.lora_A.weight` / `<target>.lora_B.weight`.
void AppendLoraParameters(const torch::jit::Module& root, std::vector<std::pair<std::string, at::Tensor>>& out);

// Moves/casts the adapter's tensors in place (set_data), after the module's own to().
void LoraTo(const torch::jit::Module& root, const c10::optional<c10::Device>& device, const c10::optional<at::ScalarType>& dtype);

// loraAttach(module, targets[], { rank, alpha, dropout, init }): Promise<void>
Napi::Value LoraAttach(const Napi::CallbackInfo& info);
// loraMerge(module, merged): Promise<void>; merges the delta into W0 in place, or takes it out.
Napi::Value LoraMerge(const Napi::CallbackInfo& info);

}  // namespace finetorch
