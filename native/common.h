// Shared helpers for every native file: error conversion, dtype/device names, tensor metadata.
#pragma once

#include <napi.h>
#include <ATen/ATen.h>

#include "compat.h"

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace finetorch {

class Executor;

// Per-addon-instance state (the addon is context-aware: one per Node environment / Worker).
struct AddonData {
  Executor* executor = nullptr;
  Napi::FunctionReference tensorCtor;
  Napi::FunctionReference moduleCtor;
  std::atomic<int64_t> liveTensors{0};
  std::atomic<int64_t> liveBytes{0};
};

AddonData& Addon(Napi::Env env);

// The first line of a libtorch message: the part a user can read, without C++ backtraces.
std::string FirstLine(const std::string& msg);

// The first line of any exception's message (libtorch's c10::Error without its backtrace).
std::string ExceptionMessage(std::exception_ptr ex);

// An error finetorch makes itself, with its stable code (FINETORCH_SHAPE, FINETORCH_DTYPE, ...):
// the code travels to JS as `err.code`, so TypeScript never reads message text.
class CodedError : public std::runtime_error {
 public:
  CodedError(const char* code, const std::string& msg) : std::runtime_error(msg), code(code) {}
  const char* code;
};

// The stable code of any exception: a CodedError's own; libtorch's by its exception type
// (OutOfMemoryError, IndexError, TypeError, ...) and, for the plain c10::Error that libtorch raises
// for allocation failures and shape mismatches on both 1.13 and 2.x, by its message, here and only
// here; FINETORCH_TORCH for any other libtorch error.
const char* ErrorCode(std::exception_ptr ex);

// Turns any C++ exception into a JS Error; `what` names the operation in the user's terms. The
// Error carries `code` (ErrorCode) and `detail` (the message without the `what: ` prefix).
Napi::Error ToJsError(Napi::Env env, const std::string& what, std::exception_ptr ex);

// A JS Error with a code, made on the JS thread (disposed handles, bad arguments).
Napi::Error CodedJsError(Napi::Env env, const char* code, const std::string& msg);

// Runs `fn` and rethrows whatever it throws as a JS Error (never lets C++ exceptions abort).
template <typename Fn>
auto Guard(Napi::Env env, const std::string& what, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (...) {
    throw ToJsError(env, what, std::current_exception());
  }
}

at::ScalarType ParseDtype(const std::string& name);
std::string DtypeName(at::ScalarType t);
c10::Device ParseDevice(const std::string& name);
std::string DeviceName(const c10::Device& d);

// The grad mode JS asked for with a task: true (autograd), false (no_grad) or "inference"
// (InferenceMode). Read on the JS thread; the scope is entered inside the executor task, because
// both modes are thread-local in libtorch.
enum class GradModeArg { NoGrad, Grad, Inference };
GradModeArg ReadGradMode(const Napi::Value& v);

class GradModeScope {
 public:
  // InferenceMode(false) would switch grad mode on, so only the guard that applies is made.
  explicit GradModeScope(GradModeArg mode) {
    if (mode == GradModeArg::Inference) inference_.emplace();
    else grad_.emplace(mode == GradModeArg::Grad);
  }

 private:
  std::optional<AutoGradMode> grad_;
  std::optional<InferenceMode> inference_;
};

// Class-index targets must lie in [0, C) (or equal ignoreIndex); checked with tensor ops so a
// CUDA target never reaches a kernel that would trip a device-side assert.
void CheckTargets(const at::Tensor& logits, const at::Tensor& target, int64_t ignoreIndex);

// A tensor's storage slot. Only the executor thread reads or replaces `t` once the slot has been
// handed to it, so JS-side metadata reads never race with a running computation.
struct Slot {
  at::Tensor t;
  std::string error;  // set when the queued work that should have produced `t` failed
  const at::Tensor& get() const;
};
using SlotPtr = std::shared_ptr<Slot>;

// Metadata captured on the thread that produced the tensor, read synchronously from JS.
struct Meta {
  std::vector<int64_t> shape;
  at::ScalarType dtype = at::kFloat;
  c10::Device device = c10::Device(c10::kCPU);
  bool requiresGrad = false;
  int64_t numel = 0;
  int64_t nbytes = 0;
  static Meta Of(const at::Tensor& t);
};

}  // namespace finetorch
