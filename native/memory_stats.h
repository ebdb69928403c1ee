// Memory accounting (memory_stats.cc).
#pragma once

#include "common.h"

namespace finetorch {

Napi::Value Memory(const Napi::CallbackInfo& info);
Napi::Value CudaMemory(const Napi::CallbackInfo& info);
Napi::Value CudaEmptyCache(const Napi::CallbackInfo& info);

}  // namespace finetorch
