// The training step (train_step.cc).
#pragma once

#include "common.h"

namespace finetorch {

Napi::Value TrainStep(const Napi::CallbackInfo& info);
Napi::Value ApplyAccumulated(const Napi::CallbackInfo& info);
Napi::Value ClipGradNorm(const Napi::CallbackInfo& info);

}  // namespace finetorch
