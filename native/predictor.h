// A serving predictor: its own copy of a TorchScript model, in eval mode, run under inference mode
// on an executor thread of its own, so a prediction never queues behind training tasks.
#pragma once

#include "common.h"

namespace finetorch {

struct PredictorState;
class Executor;

class PredictorWrap : public Napi::ObjectWrap<PredictorWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit PredictorWrap(const Napi::CallbackInfo& info);
  ~PredictorWrap() override;
  // Stops the executor thread and frees the model; `fromHook` when the env cleanup hook calls it.
  void Shutdown(bool fromHook = false);

 private:
  Napi::Value Load(const Napi::CallbackInfo& info);
  Napi::Value Adopt(const Napi::CallbackInfo& info);
  Napi::Value CopyWeights(const Napi::CallbackInfo& info);
  Napi::Value UpdateFromBytes(const Napi::CallbackInfo& info);
  Napi::Value Run(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value NotOptimized(const Napi::CallbackInfo& info);
  Executor& Live(Napi::Env env, const std::string& what);

  Executor* executor_ = nullptr;  // owned; also released by the env cleanup hook
  std::shared_ptr<PredictorState> state_;
};

}  // namespace finetorch
