// Seeds and threads (runtime.cc).
#pragma once

#include "common.h"

namespace finetorch {

Napi::Value ManualSeed(const Napi::CallbackInfo& info);
Napi::Value SetNumThreads(const Napi::CallbackInfo& info);
Napi::Value GetNumThreads(const Napi::CallbackInfo& info);

}  // namespace finetorch
