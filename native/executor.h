// One worker thread per addon instance that runs every libtorch computation in FIFO order.
// JS receives a Promise that is settled on the main thread when its task is done.
#pragma once

#include "common.h"

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>

namespace finetorch {

// Rewrites a task's exception on the executor thread before it reaches JS (distributed.cc turns a
// failed collective into an error naming the lost rank, whichever task ran it: a backward, a
// fused step, an all-reduce). Set once; nullptr keeps exceptions as they are.
using TaskErrorFilter = std::exception_ptr (*)(std::exception_ptr);
void SetTaskErrorFilter(TaskErrorFilter filter);

// A unit of work: Compute() runs on the executor thread, Complete() on the JS thread.
class Task {
 public:
  explicit Task(std::string what) : what_(std::move(what)) {}
  virtual ~Task() = default;
  void Run();                       // executor thread; records any exception
  void Finish(Napi::Env env);       // JS thread; settles the promise (if any)
  std::unique_ptr<Napi::Promise::Deferred> deferred;

 protected:
  virtual void Compute() = 0;
  virtual Napi::Value Complete(Napi::Env env) = 0;

 private:
  std::string what_;
  std::exception_ptr error_;
};

template <typename T>
class FnTask : public Task {
 public:
  FnTask(std::string what, std::function<T()> compute,
         std::function<Napi::Value(Napi::Env, T&)> complete)
      : Task(std::move(what)), compute_(std::move(compute)), complete_(std::move(complete)) {}

 protected:
  void Compute() override { result_ = compute_(); }
  Napi::Value Complete(Napi::Env env) override { return complete_(env, result_); }

 private:
  std::function<T()> compute_;
  std::function<Napi::Value(Napi::Env, T&)> complete_;
  T result_{};
};

class Executor {
 public:
  explicit Executor(Napi::Env env);
  ~Executor();

  // Queues `compute`; the returned promise resolves with `complete(result)` on the JS thread.
  template <typename T>
  Napi::Promise Submit(Napi::Env env, std::string what, std::function<T()> compute,
                       std::function<Napi::Value(Napi::Env, T&)> complete) {
    auto task = std::make_unique<FnTask<T>>(std::move(what), std::move(compute), std::move(complete));
    task->deferred = std::make_unique<Napi::Promise::Deferred>(env);
    Napi::Promise promise = task->deferred->Promise();
    Enqueue(env, std::move(task));
    return promise;
  }

  // Queues `work`; the returned promise resolves with undefined once it has run.
  Napi::Promise Run(Napi::Env env, std::string what, std::function<void()> work) {
    return Submit<bool>(
        env, std::move(what), [work = std::move(work)] { work(); return true; },
        [](Napi::Env env, bool&) { return env.Undefined(); });
  }

  // Queues work whose failure is recorded by the work itself (no promise).
  void Post(Napi::Env env, std::string what, std::function<void()> work);

  // Stops the thread after the tasks already queued; called from the env cleanup hook.
  void Shutdown();

  int numThreadsAtStart() const { return numThreadsAtStart_; }

 private:
  static void CallJs(Napi::Env env, Napi::Function, Executor* self, Task* task);
  using Tsfn = Napi::TypedThreadSafeFunction<Executor, Task, &Executor::CallJs>;
  void Enqueue(Napi::Env env, std::unique_ptr<Task> task);
  void Loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Task>> queue_;
  bool stopping_ = false;
  int64_t pending_ = 0;  // JS thread only: tasks queued but not finished
  int numThreadsAtStart_ = 1;
  Tsfn tsfn_;
  std::thread thread_;
};

}  // namespace finetorch
