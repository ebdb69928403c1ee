// Seeds, threads and priority: the process-wide random state, the intra-op thread count and the
// OS priority of training's threads, each set on the executor.
#include "runtime.h"

#include "cpu_kernels.h"
#include "executor.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>

#include <omp.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>

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
// The nice value given to the executor's threads (INT_MIN: never set).
static std::atomic<int> gTrainingNice{INT_MIN};

namespace {
// Sets `nice` on the calling thread and on every thread of its intra-op pool (one chunk each);
// throws with the OS's reason when one refuses.
void NiceTrainingThreads(int nice) {
  std::atomic<int> err{0};
  auto one = [&] {
    if (setpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)), nice) != 0) err = errno;
  };
  one();
  // libtorch's intra-op pool is this thread's OpenMP team (this file is built with -fopenmp, so the
  // team is libgomp's, as libtorch's own): every team thread runs `one` once.
  int n = at::get_num_threads();
#pragma omp parallel num_threads(n)
  {
    if (omp_get_thread_num() != 0) one();
  }
  if (err) {
    throw CodedError("FINETORCH_VALUE", "cannot set the training threads' nice value to " + std::to_string(nice) + ": " + std::strerror(err) +
                                            (err == EACCES || err == EPERM ? " (raising a priority back needs CAP_SYS_NICE or a higher RLIMIT_NICE)" : ""));
  }
}
}  // namespace

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int n = info[0].As<Napi::Number>().Int32Value();
  gNumThreads = n;
  return Addon(env).executor->Run(
      env, "setNumThreads()",
      [n] {
        at::set_num_threads(n);
        // A larger pool has new threads: they get the priority the others have.
        int nice = gTrainingNice.load();
        if (nice != INT_MIN) NiceTrainingThreads(nice);
      });
}

// setTrainingPriority(nice): the OS priority of the executor thread and its intra-op pool.
Napi::Value SetTrainingPriority(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int nice = info[0].As<Napi::Number>().Int32Value();
  return Addon(env).executor->Run(env, "setTrainingPriority()", [nice] {
    NiceTrainingThreads(nice);
    gTrainingNice = nice;
  });
}

Napi::Value GetNumThreads(const Napi::CallbackInfo& info) {
  int n = gNumThreads.load();
  if (n == 0) n = Addon(info.Env()).executor->numThreadsAtStart();
  return Napi::Number::New(info.Env(), n);
}

Napi::Value CpuKernelsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<std::string> names = CpuKernels();
  Napi::Array out = Napi::Array::New(env, names.size());
  for (uint32_t i = 0; i < names.size(); i++) out.Set(i, names[i]);
  return out;
}

}  // namespace finetorch
