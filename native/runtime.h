// Seeds, threads and training's priority (runtime.cc).
#pragma once

#include "common.h"

namespace finetorch {

Napi::Value ManualSeed(const Napi::CallbackInfo& info);
Napi::Value SetNumThreads(const Napi::CallbackInfo& info);
Napi::Value GetNumThreads(const Napi::CallbackInfo& info);
Napi::Value SetTrainingPriority(const Napi::CallbackInfo& info);
// cpuKernels(): the ATen kernels finetorch runs its own versions of in this process (cpu_kernels.h).
Napi::Value CpuKernelsJs(const Napi::CallbackInfo& info);

}  // namespace finetorch
