// Registers every native concept. Context-aware: each Node environment (the main thread or a
// worker_threads Worker) gets its own AddonData and executor thread.
#include "collate.h"
#include "ddp.h"
#include "device.h"
#include "distributed.h"
#include "executor.h"
#include "generic_step.h"
#include "jpeg.h"
#include "lora.h"
#include "malloc_tuning.h"
#include "memory_stats.h"
#include "optimizer.h"
#include "predictor.h"
#include "resample.h"
#include "runtime.h"
#include "script_module.h"
#include "tensor.h"
#include "train_step.h"

namespace finetorch {

namespace {
// The executor is owned by the cleanup hook, which runs whatever the order of env teardown.
void Cleanup(void* arg) {
  auto* executor = static_cast<Executor*>(arg);
  executor->Shutdown();
  delete executor;
}
}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  DisableCpuFusionOnce();
  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);  // deleted by node-addon-api at env teardown
  data->executor = new Executor(env);
  napi_add_env_cleanup_hook(env, Cleanup, data->executor);
  ApplyJitDefaults(env);

  Napi::Function tensor = TensorWrap::Init(env);
  data->tensorCtor = Napi::Persistent(tensor);
  exports.Set("Tensor", tensor);
  exports.Set("ScriptModule", ModuleWrap::Init(env));
  exports.Set("loadModule", Napi::Function::New(env, LoadModule));
  exports.Set("Predictor", PredictorWrap::Init(env));
  exports.Set("Optimizer", OptimizerWrap::Init(env));
  exports.Set("trainStep", Napi::Function::New(env, TrainStep));
  exports.Set("applyStep", Napi::Function::New(env, ApplyAccumulated));
  exports.Set("clipGradNorm", Napi::Function::New(env, ClipGradNorm));
  exports.Set("forwardAutocast", Napi::Function::New(env, ForwardAutocast));
  exports.Set("scaledBackward", Napi::Function::New(env, ScaledBackward));
  exports.Set("fromData", Napi::Function::New(env, FromData));
  exports.Set("factory", Napi::Function::New(env, Factory));
  exports.Set("op", Napi::Function::New(env, Op));
  exports.Set("buildInfo", Napi::Function::New(env, BuildInfo));
  exports.Set("cudaIsAvailable", Napi::Function::New(env, CudaIsAvailable));
  exports.Set("cudaDeviceCount", Napi::Function::New(env, CudaDeviceCount));
  exports.Set("manualSeed", Napi::Function::New(env, ManualSeed));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  exports.Set("getNumThreads", Napi::Function::New(env, GetNumThreads));
  exports.Set("setTrainingPriority", Napi::Function::New(env, SetTrainingPriority));
  exports.Set("memory", Napi::Function::New(env, Memory));
  exports.Set("cudnnBenchmark", Napi::Function::New(env, CudnnBenchmark));
  exports.Set("cudaSynchronize", Napi::Function::New(env, CudaSynchronize));
  exports.Set("cudaMemory", Napi::Function::New(env, CudaMemory));
  exports.Set("cudaEmptyCache", Napi::Function::New(env, CudaEmptyCache));
  exports.Set("collateImages", Napi::Function::New(env, CollateImages));
  exports.Set("gatherRows", Napi::Function::New(env, GatherRows));
  exports.Set("resampleImage", Napi::Function::New(env, ResampleImage));
#ifdef FINETORCH_JPEG
  exports.Set("decodeJpeg", Napi::Function::New(env, DecodeJpeg));
#endif
  exports.Set("loraAttach", Napi::Function::New(env, LoraAttach));
  exports.Set("loraMerge", Napi::Function::New(env, LoraMerge));
  exports.Set("jitCpuFusion", Napi::Function::New(env, JitCpuFusion));
  exports.Set("fusedAdamW", Napi::Function::New(env, FusedAdamW));
  exports.Set("cpuKernels", Napi::Function::New(env, CpuKernelsJs));
  exports.Set("jitOptimize", Napi::Function::New(env, JitOptimize));
  exports.Set("tuneMalloc", Napi::Function::New(env, TuneMalloc));
  exports.Set("distInit", Napi::Function::New(env, DistInit));
  exports.Set("distDestroy", Napi::Function::New(env, DistDestroy));
  exports.Set("distAllReduce", Napi::Function::New(env, DistAllReduce));
  exports.Set("distBroadcast", Napi::Function::New(env, DistBroadcast));
  exports.Set("distAllGather", Napi::Function::New(env, DistAllGather));
  exports.Set("distBarrier", Napi::Function::New(env, DistBarrier));
  exports.Set("Reducer", ReducerWrap::Init(env));
  return exports;
}

}  // namespace finetorch

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return finetorch::Init(env, exports); }

NODE_API_MODULE(finetorch, InitAddon)
