// Devices and versions (device.cc).
#pragma once

#include "common.h"

namespace finetorch {

Napi::Value BuildInfo(const Napi::CallbackInfo& info);
Napi::Value CudaIsAvailable(const Napi::CallbackInfo& info);
Napi::Value CudaDeviceCount(const Napi::CallbackInfo& info);
Napi::Value CudnnBenchmark(const Napi::CallbackInfo& info);
Napi::Value CudaSynchronize(const Napi::CallbackInfo& info);

}  // namespace finetorch
