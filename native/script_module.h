// The JS handle of a TorchScript module (torch::jit::Module). The module itself is only touched on
// the executor thread; JS reads a snapshot (parameters, buffers, submodules, methods) taken there.
#pragma once

#include "common.h"

#include <torch/script.h>

namespace finetorch {

using ModulePtr = std::shared_ptr<torch::jit::Module>;

class ModuleWrap : public Napi::ObjectWrap<ModuleWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  static Napi::Object New(Napi::Env env, ModulePtr module);
  static ModulePtr Of(Napi::Env env, const Napi::Value& v, const std::string& what);
  explicit ModuleWrap(const Napi::CallbackInfo& info);

 private:
  Napi::Value Snapshot(const Napi::CallbackInfo& info);
  Napi::Value Save(const Napi::CallbackInfo& info);
  Napi::Value RunMethod(const Napi::CallbackInfo& info);
  Napi::Value SetTraining(const Napi::CallbackInfo& info);
  Napi::Value To(const Napi::CallbackInfo& info);
  Napi::Value ReplaceHeadLayer(const Napi::CallbackInfo& info);
  Napi::Value ChannelsLast(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value GetDisposed(const Napi::CallbackInfo& info);
  ModulePtr module_;
};

Napi::Value LoadModule(const Napi::CallbackInfo& info);
Napi::Value JitCpuFusion(const Napi::CallbackInfo& info);
void DisableCpuFusionOnce();

}  // namespace finetorch
