// Memory accounting: finetorch's live tensors and bytes, and CUDA's caching allocator.
#include "memory_stats.h"

#include "executor.h"

#ifdef FINETORCH_CUDA_HEADERS
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace finetorch {

Napi::Value Memory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& data = Addon(env);
  Napi::Object o = Napi::Object::New(env);
  o.Set("tensors", double(data.liveTensors.load()));
  o.Set("bytes", double(data.liveBytes.load()));
  return o;
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
