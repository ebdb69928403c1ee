// The JS handle of a TorchScript module (torch::jit::Module). The module itself is only touched on
// the executor thread; JS reads a snapshot (parameters, buffers, submodules, methods) taken there.
#pragma once

#include "common.h"

#include <torch/script.h>

namespace finetorch {

using ModulePtr = std::shared_ptr<torch::jit::Module>;

// A value crossing between JS and TorchScript (a method's inputs and outputs): built on one thread,
// consumed on the other.
struct Val {
  enum Kind { None, Bool, Num, Str, TensorIn, TensorOut, List, Tuple, Dict } kind = None;
  bool b = false;
  double d = 0;
  bool integral = false;
  std::string s;
  SlotPtr slot;
  at::Tensor tensor;
  Meta meta;
  std::vector<Val> items;
  std::vector<std::string> keys;
};

// A TorchScript value (tensors, numbers, strings, lists, tuples, dicts) as a Val; executor thread.
Val FromIValue(const c10::IValue& iv);
// A Val made by FromIValue as JS values (Tensors, arrays, objects); JS thread.
Napi::Value ToJs(Napi::Env env, Val& v);

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
Napi::Value JitOptimize(const Napi::CallbackInfo& info);
// Applies backends.jit.optimize's setting on a new executor.
void ApplyJitDefaults(Napi::Env env);
void DisableCpuFusionOnce();

}  // namespace finetorch
