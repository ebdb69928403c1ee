#include "common.h"

#include <c10/util/Exception.h>

#include <stdexcept>
#include <unordered_map>

namespace finetorch {

AddonData& Addon(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

std::string FirstLine(const std::string& msg) {
  // TorchScript wraps the real error after a traceback: keep its final "RuntimeError: ..." line.
  if (msg.rfind("The following operation failed in the TorchScript interpreter", 0) == 0) {
    auto pos = msg.rfind("Error: ");
    if (pos != std::string::npos) {
      auto start = msg.rfind('\n', pos);
      std::string tail = msg.substr(pos + 7);
      auto nl = tail.find('\n');
      (void)start;
      return nl == std::string::npos ? tail : tail.substr(0, nl);
    }
  }
  auto end = msg.find('\n');
  std::string line = end == std::string::npos ? msg : msg.substr(0, end);
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

Napi::Error ToJsError(Napi::Env env, const std::string& what, std::exception_ptr ex) {
  std::string detail = ExceptionMessage(ex);
  return Napi::Error::New(env, what.empty() ? detail : what + ": " + detail);
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

void CheckTargets(const at::Tensor& logits, const at::Tensor& target, int64_t ignoreIndex) {
  if (target.is_floating_point() || logits.dim() < 1) return;  // probabilities: shapes checked in JS
  int64_t classes = logits.dim() >= 2 ? logits.size(1) : logits.size(0);
  at::NoGradGuard ng;
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
