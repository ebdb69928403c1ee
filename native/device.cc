// Devices, seeds, threads, versions and memory accounting: the process-wide side of libtorch.
#include "device.h"

#include "executor.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/cuda.h>

#include <regex>

#ifdef __GLIBC__
#include <malloc.h>
#endif

#ifdef FINETORCH_CUDA_HEADERS
#include <c10/cuda/CUDACachingAllocator.h>
#endif

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

Napi::Value Memory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& data = Addon(env);
  Napi::Object o = Napi::Object::New(env);
  o.Set("tensors", double(data.liveTensors.load()));
  o.Set("bytes", double(data.liveBytes.load()));
  return o;
}

}  // namespace finetorch

namespace finetorch {

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

// cudaMemory(device): { allocated, reserved, peak } from c10's caching allocator, or null when
// this build has no CUDA headers (CPU libtorch, or node-gyp prebuilds).
Napi::Value CudaMemory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#ifdef FINETORCH_CUDA_HEADERS
  int device = info[0].As<Napi::Number>().Int32Value();
  return Guard(env, "cuda.memory()", [&]() -> Napi::Value {
    auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device);
    Napi::Object o = Napi::Object::New(env);
    o.Set("allocated", double(stats.allocated_bytes[0].current));
    o.Set("reserved", double(stats.reserved_bytes[0].current));
    o.Set("peak", double(stats.allocated_bytes[0].peak));
    return o;
  });
#else
  return env.Null();
#endif
}

Napi::Value CudaEmptyCache(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
#ifdef FINETORCH_CUDA_HEADERS
  return Addon(env).executor->Submit<bool>(
      env, "cuda.emptyCache()", [] { c10::cuda::CUDACachingAllocator::emptyCache(); return true; },
      [](Napi::Env env, bool&) { return Napi::Boolean::New(env, true); });
#else
  auto d = Napi::Promise::Deferred::New(env);
  d.Resolve(Napi::Boolean::New(env, false));
  return d.Promise();
#endif
}

}  // namespace finetorch

namespace finetorch {

// tuneMalloc(mmapThreshold, trimThreshold, topPad): glibc's malloc serves blocks above 128 KiB
// with fresh mmap()s and gives them back on free, so every decoded image, batch and activation of
// that size page-faults its memory in again. Raising the thresholds keeps such blocks in the heap
// for reuse (what MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ do at start-up). The top pad
// matters for threads other than the main one (the executor, which trains): their arenas are
// chains of 64 MiB heaps, and a heap that empties is unmapped whatever the trim threshold, unless
// the pad is at least a heap's size. Process-wide; false where the C library is not glibc.
Napi::Value TuneMalloc(const Napi::CallbackInfo& info) {
#ifdef __GLIBC__
  int mmap = info[0].As<Napi::Number>().Int32Value();
  int trim = info[1].As<Napi::Number>().Int32Value();
  int pad = info[2].As<Napi::Number>().Int32Value();
  bool ok = mallopt(M_MMAP_THRESHOLD, mmap) == 1 && mallopt(M_TRIM_THRESHOLD, trim) == 1 && mallopt(M_TOP_PAD, pad) == 1;
  return Napi::Boolean::New(info.Env(), ok);
#else
  return Napi::Boolean::New(info.Env(), false);
#endif
}

}  // namespace finetorch
