// The JS handle of a libtorch optimizer (AdamW, SGD): its parameter groups, state and the fp16 loss
// scaler its steps use. The training step that drives it is in train_step.h.
#pragma once

#include "amp.h"
#include "common.h"

#include <torch/optim.h>

namespace finetorch {

struct OptimizerHolder {
  std::unique_ptr<torch::optim::Optimizer> opt;
  std::vector<std::vector<at::Tensor>> groups;  // the parameters of each group, in order
  std::string error;
  GradScaler scaler;  // used by fp16 training steps
  torch::optim::Optimizer& get() const;
};
using OptimizerPtr = std::shared_ptr<OptimizerHolder>;

class OptimizerWrap : public Napi::ObjectWrap<OptimizerWrap> {
 public:
  static Napi::Function Init(Napi::Env env);
  static OptimizerPtr Of(Napi::Env env, const Napi::Value& v, const std::string& what);
  explicit OptimizerWrap(const Napi::CallbackInfo& info);

 private:
  Napi::Value Step(const Napi::CallbackInfo& info);
  Napi::Value ZeroGrad(const Napi::CallbackInfo& info);
  Napi::Value SetLr(const Napi::CallbackInfo& info);
  Napi::Value AddParamGroup(const Napi::CallbackInfo& info);
  Napi::Value StateDict(const Napi::CallbackInfo& info);
  Napi::Value LoadStateDict(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value GetDisposed(const Napi::CallbackInfo& info);
  OptimizerPtr holder_;
  std::string kind_;
};

// fusedAdamW(): whether AdamW updates run as one pass here (fused_adamw.cc).
Napi::Value FusedAdamW(const Napi::CallbackInfo& info);

}  // namespace finetorch
