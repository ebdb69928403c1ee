#include "common.h"

#include <c10/util/Exception.h>

#include <stdexcept>
#include <unordered_map>

namespace finetorch {

AddonData& Addon(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

std::string FirstLine(const std::string& msg) {
  // TorchScript wraps the real error after a traceback: keep its last line, without the
  // "RuntimeError: " that every interpreter error carries (keep "KeyError: b" whole).
  if (msg.rfind("The following operation failed in the TorchScript interpreter", 0) == 0) {
    std::string m = msg;
    while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
    std::string last = m.substr(m.rfind('\n') == std::string::npos ? 0 : m.rfind('\n') + 1);
    const std::string prefix = "RuntimeError: ";
    if (last.rfind(prefix, 0) == 0) last = last.substr(prefix.size());
    return last;
  }
  // Some libtorch messages (TorchScript compile errors) start with an empty line.
  size_t start = msg.find_first_not_of(" \r\n");
  if (start == std::string::npos) return "";
  auto end = msg.find('\n', start);
  std::string line = end == std::string::npos ? msg.substr(start) : msg.substr(start, end - start);
  while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
  return line;
}

std::string ExceptionMessage(std::exception_ptr ex) {
  std::string detail;
  try {
    std::rethrow_exception(ex);
  } catch (const c10::Error& e) {
    detail = FirstLine(e.what_without_backtrace());
  } catch (const std::exception& e) {
    detail = FirstLine(e.what());
  } catch (...) {
    detail = "unknown native error";
  }
  return detail;
}

// libtorch raises a plain c10::Error for allocation failures and most shape and dtype errors, and the
// TorchScript interpreter rethrows whatever an op raised as a std::runtime_error holding the
// original message: those are told apart by libtorch's wording, on 1.13 and 2.x, here only.
static const char* CodeFromMessage(const std::string& m) {
  auto has = [&m](const char* s) { return m.find(s) != std::string::npos; };
  if (has("can't allocate memory") || has("out of memory")) return "FINETORCH_OUT_OF_MEMORY";
  if (has("shapes cannot be multiplied") || has("must match the size of tensor") || has("is invalid for input of size") ||
      has("size mismatch") || has("Expected size") || has("Sizes of tensors must match") || has("shape mismatch") ||
      has("channels, but got") || has("-dimensional input")) {
    return "FINETORCH_SHAPE";
  }
  if (has("expected scalar type") || has("Expected object of scalar type") || has("must have the same dtype") ||
      has("result type") || has("expected dtype") || has("Expected dtype")) {
    return "FINETORCH_DTYPE";
  }
  if (has("Expected all tensors to be on the same device")) return "FINETORCH_DEVICE";
  if (has("out of range") || has("IndexError")) return "FINETORCH_INDEX";
  return nullptr;
}

const char* ErrorCode(std::exception_ptr ex) {
  try {
    std::rethrow_exception(ex);
  } catch (const CodedError& e) {
    return e.code;
  } catch (const c10::OutOfMemoryError&) {
    return "FINETORCH_OUT_OF_MEMORY";
  } catch (const c10::IndexError&) {
    return "FINETORCH_INDEX";
  } catch (const c10::TypeError&) {
    return "FINETORCH_DTYPE";
  } catch (const c10::ValueError&) {
    return "FINETORCH_VALUE";
  } catch (const c10::NotImplementedError&) {
    return "FINETORCH_NOT_IMPLEMENTED";
  } catch (const c10::Error& e) {
    const char* code = CodeFromMessage(e.what_without_backtrace());
    return code ? code : "FINETORCH_TORCH";
  } catch (const std::bad_alloc&) {
    return "FINETORCH_OUT_OF_MEMORY";
  } catch (const std::exception& e) {
    const char* code = CodeFromMessage(e.what());
    return code ? code : "FINETORCH_NATIVE";
  } catch (...) {
    return "FINETORCH_NATIVE";
  }
}

Napi::Error ToJsError(Napi::Env env, const std::string& what, std::exception_ptr ex) {
  std::string detail = ExceptionMessage(ex);
  Napi::Error err = Napi::Error::New(env, what.empty() ? detail : what + ": " + detail);
  err.Set("code", Napi::String::New(env, ErrorCode(ex)));
  err.Set("detail", Napi::String::New(env, detail));
  return err;
}

Napi::Error CodedJsError(Napi::Env env, const char* code, const std::string& msg) {
  Napi::Error err = Napi::Error::New(env, msg);
  err.Set("code", Napi::String::New(env, code));
  return err;
}

static const std::unordered_map<std::string, at::ScalarType>& DtypeTable() {
  static const std::unordered_map<std::string, at::ScalarType> table = {
      {"float32", at::kFloat}, {"float64", at::kDouble}, {"float16", at::kHalf},
      {"bfloat16", at::kBFloat16}, {"int64", at::kLong}, {"int32", at::kInt},
      {"int16", at::kShort}, {"int8", at::kChar}, {"uint8", at::kByte}, {"bool", at::kBool},
  };
  return table;
}

at::ScalarType ParseDtype(const std::string& name) {
  auto it = DtypeTable().find(name);
  if (it == DtypeTable().end()) throw std::invalid_argument("unknown dtype '" + name + "'");
  return it->second;
}

std::string DtypeName(at::ScalarType t) {
  for (const auto& kv : DtypeTable()) {
    if (kv.second == t) return kv.first;
  }
  return std::string(c10::toString(t));
}

c10::Device ParseDevice(const std::string& name) { return c10::Device(name); }

std::string DeviceName(const c10::Device& d) { return d.str(); }

GradModeArg ReadGradMode(const Napi::Value& v) {
  if (v.IsString() && v.As<Napi::String>().Utf8Value() == "inference") return GradModeArg::Inference;
  if (v.IsUndefined()) return GradModeArg::Grad;
  return v.ToBoolean().Value() ? GradModeArg::Grad : GradModeArg::NoGrad;
}

void CheckTargets(const at::Tensor& logits, const at::Tensor& target, int64_t ignoreIndex) {
  if (target.is_floating_point() || logits.dim() < 1) return;  // probabilities: shapes checked in JS
  int64_t classes = logits.dim() >= 2 ? logits.size(1) : logits.size(0);
  NoGradGuard ng;
  at::Tensor bad = ((target < 0) | (target >= classes)) & (target != ignoreIndex);
  if (!bad.any().item<bool>()) return;
  at::Tensor flat = bad.reshape({-1}).nonzero();
  int64_t index = flat[0][0].item<int64_t>();
  int64_t value = target.reshape({-1})[index].item<int64_t>();
  throw std::invalid_argument("labels must be in [0, " + std::to_string(classes) + "): got " +
                              std::to_string(value) + " at index " + std::to_string(index));
}

const at::Tensor& Slot::get() const {
  if (!t.defined()) {
    throw std::runtime_error(error.empty() ? "tensor holds no data" : error);
  }
  return t;
}

Meta Meta::Of(const at::Tensor& t) {
  Meta m;
  m.shape = t.sizes().vec();
  m.dtype = t.scalar_type();
  m.device = t.device();
  m.requiresGrad = t.requires_grad();
  m.numel = t.numel();
  m.nbytes = static_cast<int64_t>(t.numel() * t.element_size());
  return m;
}

}  // namespace finetorch
