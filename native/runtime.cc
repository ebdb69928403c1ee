// Seeds and threads: the process-wide random state and intra-op thread count, set on the executor.
#include "runtime.h"

#include "executor.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>

#include <atomic>

namespace finetorch {

// manualSeed(n): queued, so it takes effect between the random work queued before and after it.
Napi::Value ManualSeed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t seed = static_cast<uint64_t>(info[0].As<Napi::Number>().Int64Value());
  return Addon(env).executor->Run(
      env, "manualSeed()",
      [seed] { at::manual_seed(seed); });
}

// The intra-op thread count is per calling thread under OpenMP, so it is set on the executor.
static std::atomic<int> gNumThreads{0};

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int n = info[0].As<Napi::Number>().Int32Value();
  gNumThreads = n;
  return Addon(env).executor->Run(
      env, "setNumThreads()",
      [n] { at::set_num_threads(n); });
}

Napi::Value GetNumThreads(const Napi::CallbackInfo& info) {
  int n = gNumThreads.load();
  if (n == 0) n = Addon(info.Env()).executor->numThreadsAtStart();
  return Napi::Number::New(info.Env(), n);
}

}  // namespace finetorch
