#include "executor.h"

#include "cpu_kernels.h"

#include <ATen/Parallel.h>

#include <atomic>
#include <future>

namespace finetorch {

namespace {
std::atomic<TaskErrorFilter> errorFilter{nullptr};
}  // namespace

void SetTaskErrorFilter(TaskErrorFilter filter) { errorFilter.store(filter); }

void Task::Run() {
  try {
    Compute();
  } catch (...) {
    TaskErrorFilter filter = errorFilter.load();
    error_ = filter ? filter(std::current_exception()) : std::current_exception();
  }
}

void Task::Finish(Napi::Env env) {
  if (!deferred) return;
  Napi::HandleScope scope(env);
  if (error_) {
    deferred->Reject(ToJsError(env, what_, error_).Value());
    return;
  }
  try {
    deferred->Resolve(Complete(env));
  } catch (const Napi::Error& e) {
    deferred->Reject(e.Value());
  } catch (...) {
    deferred->Reject(ToJsError(env, what_, std::current_exception()).Value());
  }
}

namespace {
class PostTask : public Task {
 public:
  PostTask(std::string what, std::function<void()> work) : Task(std::move(what)), work_(std::move(work)) {}

 protected:
  void Compute() override { work_(); }
  Napi::Value Complete(Napi::Env env) override { return env.Undefined(); }

 private:
  std::function<void()> work_;
};
}  // namespace

Executor::Executor(Napi::Env env) {
  tsfn_ = Tsfn::New(env, "finetorch.executor", 0, 1, this);
  tsfn_.Unref(env);
  std::promise<int> started;
  auto fut = started.get_future();
  thread_ = std::thread([this, &started] {
    // A new OS thread starts with OpenMP's single-thread default; give it libtorch's intra-op pool.
    at::init_num_threads();
    InstallCpuKernels();  // before the first task: ATen's max-pool and batch-norm statistics, faster
    started.set_value(at::get_num_threads());
    Loop();
  });
  numThreadsAtStart_ = fut.get();
}

Executor::~Executor() { Shutdown(); }

void Executor::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  tsfn_.Release();
}

void Executor::Enqueue(Napi::Env env, std::unique_ptr<Task> task) {
  if (pending_++ == 0) tsfn_.Ref(env);
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(task));
  }
  cv_.notify_one();
}

void Executor::Post(Napi::Env env, std::string what, std::function<void()> work) {
  Enqueue(env, std::make_unique<PostTask>(std::move(what), std::move(work)));
}

void Executor::Loop() {
  for (;;) {
    std::unique_ptr<Task> task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;  // the environment is going away: queued work is dropped
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task->Run();
    Task* raw = task.release();
    if (tsfn_.NonBlockingCall(raw) != napi_ok) delete raw;  // env is going away
  }
}

void Executor::CallJs(Napi::Env env, Napi::Function, Executor* self, Task* task) {
  std::unique_ptr<Task> owned(task);
  if (env == nullptr) return;
  // A Worker being torn down can no longer run JS: settling the promise then throws, and an
  // exception escaping here would terminate the whole process.
  try {
    owned->Finish(env);
    if (--self->pending_ == 0) self->tsfn_.Unref(env);
  } catch (...) {
  }
}

}  // namespace finetorch
