// Devices and versions: what this libtorch was built with, CUDA and cuDNN switches.
#include "device.h"

#include "executor.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include <regex>

namespace finetorch {

namespace {
std::string ConfigValue(const std::string& config, const std::string& key) {
  std::smatch m;
  std::regex re(key + "=([^,\\s]+)");
  return std::regex_search(config, m, re) ? m[1].str() : "";
}
}  // namespace

Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("builtWith", TORCH_VERSION);
  std::string config = at::show_config();
  std::string runtime = ConfigValue(config, "TORCH_VERSION");
  o.Set("runtime", runtime.empty() ? env.Null() : Napi::String::New(env, runtime));
  std::smatch m;
  std::regex cudaRe("CUDA Runtime ([0-9.]+)");
  if (std::regex_search(config, m, cudaRe)) o.Set("cuda", m[1].str());
  else o.Set("cuda", env.Null());
  o.Set("cudaCompiled", ConfigValue(config, "USE_CUDA") == "ON" || ConfigValue(config, "USE_CUDA") == "1");
  return o;
}

Napi::Value CudaIsAvailable(const Napi::CallbackInfo& info) {
  return Guard(info.Env(), "cuda.isAvailable()", [&] {
    return Napi::Boolean::New(info.Env(), torch::cuda::is_available());
  });
}

Napi::Value CudaDeviceCount(const Napi::CallbackInfo& info) {
  return Guard(info.Env(), "cuda.deviceCount()", [&] {
    return Napi::Number::New(info.Env(), double(torch::cuda::device_count()));
  });
}

// cudnnBenchmark(flag?): sets (when given) and returns cuDNN's autotuner flag.
Napi::Value CudnnBenchmark(const Napi::CallbackInfo& info) {
  if (info.Length() > 0 && info[0].IsBoolean()) at::globalContext().setBenchmarkCuDNN(info[0].As<Napi::Boolean>());
  return Napi::Boolean::New(info.Env(), at::globalContext().benchmarkCuDNN());
}

// cudaSynchronize(): queued, so it waits for the GPU work queued before it.
Napi::Value CudaSynchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Addon(env).executor->Run(
      env, "cuda.synchronize()",
      [] { torch::cuda::synchronize(); });
}

}  // namespace finetorch
