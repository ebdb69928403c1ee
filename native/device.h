#pragma once

#include "common.h"

namespace finetorch {

Napi::Value BuildInfo(const Napi::CallbackInfo& info);
Napi::Value CudaIsAvailable(const Napi::CallbackInfo& info);
Napi::Value CudaDeviceCount(const Napi::CallbackInfo& info);
Napi::Value ManualSeed(const Napi::CallbackInfo& info);
Napi::Value SetNumThreads(const Napi::CallbackInfo& info);
Napi::Value GetNumThreads(const Napi::CallbackInfo& info);
Napi::Value Memory(const Napi::CallbackInfo& info);
Napi::Value CudnnBenchmark(const Napi::CallbackInfo& info);
Napi::Value CudaSynchronize(const Napi::CallbackInfo& info);
Napi::Value CudaMemory(const Napi::CallbackInfo& info);
Napi::Value CudaEmptyCache(const Napi::CallbackInfo& info);
Napi::Value TuneMalloc(const Napi::CallbackInfo& info);

}  // namespace finetorch
