// The tensor operations JS can queue: one table from op name to a libtorch call. Arguments were
// validated in TypeScript; here they are read by position without re-checking their meaning.
#include "executor.h"
#include "tensor.h"

#include <ATen/ScalarOps.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <functional>
#include <unordered_map>
#include <variant>

namespace finetorch {

namespace {

using Arg = std::variant<std::monostate, double, bool, std::string, std::vector<int64_t>>;
using Args = std::vector<Arg>;
using Ts = std::vector<at::Tensor>;

struct OpOut {
  Ts tensors;
  std::vector<Meta> metas;
  bool tuple = false;
};

bool Has(const Args& a, size_t k) { return k < a.size() && !std::holds_alternative<std::monostate>(a[k]); }
double D(const Args& a, size_t k) { return std::get<double>(a.at(k)); }
int64_t I(const Args& a, size_t k) { return static_cast<int64_t>(std::get<double>(a.at(k))); }
bool B(const Args& a, size_t k, bool def = false) { return Has(a, k) ? std::get<bool>(a[k]) : def; }
const std::vector<int64_t>& L(const Args& a, size_t k) { return std::get<std::vector<int64_t>>(a.at(k)); }
const std::string& S(const Args& a, size_t k) { return std::get<std::string>(a.at(k)); }

// A binary op takes a second tensor, or a scalar in args[0].
template <typename F>
OpOut Binary(const Ts& t, const Args& a, F f) {
  if (t.size() > 1) return {{f(t[0], t[1])}};
  // A wrapped-number scalar promotes like Python's: int tensor + 2 stays int, + 2.5 becomes float.
  double v = D(a, 0);
  bool integral = std::floor(v) == v && std::fabs(v) < 9007199254740992.0;
  at::Tensor s = c10::scalar_to_tensor(integral ? at::Scalar(int64_t(v)) : at::Scalar(v));
  s.unsafeGetTensorImpl()->set_wrapped_number(true);
  return {{f(t[0], s)}};
}

using OpFn = std::function<OpOut(const Ts&, const Args&)>;

const std::unordered_map<std::string, OpFn>& Table() {
  static const std::unordered_map<std::string, OpFn> ops = {
      {"add", [](const Ts& t, const Args& a) { return Binary(t, a, [](auto& x, auto& y) { return at::add(x, y); }); }},
      {"sub", [](const Ts& t, const Args& a) { return Binary(t, a, [](auto& x, auto& y) { return at::sub(x, y); }); }},
      {"mul", [](const Ts& t, const Args& a) { return Binary(t, a, [](auto& x, auto& y) { return at::mul(x, y); }); }},
      {"div", [](const Ts& t, const Args& a) { return Binary(t, a, [](auto& x, auto& y) { return at::div(x, y); }); }},
      {"pow", [](const Ts& t, const Args& a) { return Binary(t, a, [](auto& x, auto& y) { return at::pow(x, y); }); }},
      {"eq", [](const Ts& t, const Args& a) { return Binary(t, a, [](auto& x, auto& y) { return at::eq(x, y); }); }},
      {"ne", [](const Ts& t, const Args& a) { return Binary(t, a, [](auto& x, auto& y) { return at::ne(x, y); }); }},
      {"lt", [](const Ts& t, const Args& a) { return Binary(t, a, [](auto& x, auto& y) { return at::lt(x, y); }); }},
      {"le", [](const Ts& t, const Args& a) { return Binary(t, a, [](auto& x, auto& y) { return at::le(x, y); }); }},
      {"gt", [](const Ts& t, const Args& a) { return Binary(t, a, [](auto& x, auto& y) { return at::gt(x, y); }); }},
      {"ge", [](const Ts& t, const Args& a) { return Binary(t, a, [](auto& x, auto& y) { return at::ge(x, y); }); }},
      {"maximum", [](const Ts& t, const Args&) { return OpOut{{at::maximum(t[0], t[1])}}; }},
      {"minimum", [](const Ts& t, const Args&) { return OpOut{{at::minimum(t[0], t[1])}}; }},
      {"matmul", [](const Ts& t, const Args&) { return OpOut{{at::matmul(t[0], t[1])}}; }},
      {"neg", [](const Ts& t, const Args&) { return OpOut{{at::neg(t[0])}}; }},
      {"abs", [](const Ts& t, const Args&) { return OpOut{{at::abs(t[0])}}; }},
      {"exp", [](const Ts& t, const Args&) { return OpOut{{at::exp(t[0])}}; }},
      {"log", [](const Ts& t, const Args&) { return OpOut{{at::log(t[0])}}; }},
      {"sqrt", [](const Ts& t, const Args&) { return OpOut{{at::sqrt(t[0])}}; }},
      {"relu", [](const Ts& t, const Args&) { return OpOut{{at::relu(t[0])}}; }},
      {"sigmoid", [](const Ts& t, const Args&) { return OpOut{{at::sigmoid(t[0])}}; }},
      {"tanh", [](const Ts& t, const Args&) { return OpOut{{at::tanh(t[0])}}; }},
      {"clamp", [](const Ts& t, const Args& a) {
         c10::optional<at::Scalar> lo, hi;
         if (Has(a, 0)) lo = D(a, 0);
         if (Has(a, 1)) hi = D(a, 1);
         return OpOut{{at::clamp(t[0], lo, hi)}};
       }},
      {"sum", [](const Ts& t, const Args& a) {
         if (!Has(a, 0)) return OpOut{{at::sum(t[0])}};
         return OpOut{{at::sum(t[0], L(a, 0), B(a, 1))}};
       }},
      {"mean", [](const Ts& t, const Args& a) {
         if (!Has(a, 0)) return OpOut{{at::mean(t[0])}};
         return OpOut{{at::mean(t[0], L(a, 0), B(a, 1))}};
       }},
      {"max", [](const Ts& t, const Args& a) {
         if (!Has(a, 0)) return OpOut{{at::max(t[0])}};
         auto r = at::max(t[0], I(a, 0), B(a, 1));
         return OpOut{{std::get<0>(r), std::get<1>(r)}, {}, true};
       }},
      {"min", [](const Ts& t, const Args& a) {
         if (!Has(a, 0)) return OpOut{{at::min(t[0])}};
         auto r = at::min(t[0], I(a, 0), B(a, 1));
         return OpOut{{std::get<0>(r), std::get<1>(r)}, {}, true};
       }},
      {"argmax", [](const Ts& t, const Args& a) {
         c10::optional<int64_t> dim;
         if (Has(a, 0)) dim = I(a, 0);
         return OpOut{{at::argmax(t[0], dim, B(a, 1))}};
       }},
      {"argmin", [](const Ts& t, const Args& a) {
         c10::optional<int64_t> dim;
         if (Has(a, 0)) dim = I(a, 0);
         return OpOut{{at::argmin(t[0], dim, B(a, 1))}};
       }},
      {"softmax", [](const Ts& t, const Args& a) { return OpOut{{at::softmax(t[0], I(a, 0))}}; }},
      {"logSoftmax", [](const Ts& t, const Args& a) { return OpOut{{at::log_softmax(t[0], I(a, 0))}}; }},
      {"reshape", [](const Ts& t, const Args& a) { return OpOut{{at::reshape(t[0], L(a, 0))}}; }},
      {"permute", [](const Ts& t, const Args& a) { return OpOut{{t[0].permute(L(a, 0))}}; }},
      {"transpose", [](const Ts& t, const Args& a) { return OpOut{{at::transpose(t[0], I(a, 0), I(a, 1))}}; }},
      {"flatten", [](const Ts& t, const Args& a) { return OpOut{{at::flatten(t[0], I(a, 0), I(a, 1))}}; }},
      {"unsqueeze", [](const Ts& t, const Args& a) { return OpOut{{at::unsqueeze(t[0], I(a, 0))}}; }},
      {"squeeze", [](const Ts& t, const Args& a) {
         return OpOut{{Has(a, 0) ? at::squeeze(t[0], I(a, 0)) : at::squeeze(t[0])}};
       }},
      {"slice", [](const Ts& t, const Args& a) {
         c10::optional<int64_t> start, end;
         if (Has(a, 1)) start = I(a, 1);
         if (Has(a, 2)) end = I(a, 2);
         return OpOut{{at::slice(t[0], I(a, 0), start, end, Has(a, 3) ? I(a, 3) : 1)}};
       }},
      {"indexSelect", [](const Ts& t, const Args& a) { return OpOut{{at::index_select(t[0], I(a, 0), t[1])}}; }},
      {"cat", [](const Ts& t, const Args& a) { return OpOut{{at::cat(t, I(a, 0))}}; }},
      {"stack", [](const Ts& t, const Args& a) { return OpOut{{at::stack(t, I(a, 0))}}; }},
      {"clone", [](const Ts& t, const Args&) { return OpOut{{t[0].clone()}}; }},
      {"detach", [](const Ts& t, const Args&) { return OpOut{{t[0].detach()}}; }},
      {"contiguous", [](const Ts& t, const Args&) { return OpOut{{t[0].contiguous()}}; }},
      {"topk", [](const Ts& t, const Args& a) {
         auto r = at::topk(t[0], I(a, 0), I(a, 1), B(a, 2, true), B(a, 3, true));
         return OpOut{{std::get<0>(r), std::get<1>(r)}, {}, true};
       }},
      {"crossEntropy", [](const Ts& t, const Args& a) {
         c10::optional<at::Tensor> w;
         if (t.size() > 2) w = t[2];
         CheckTargets(t[0], t[1], I(a, 1));
         return OpOut{{at::cross_entropy_loss(t[0], t[1], w, I(a, 0), I(a, 1), D(a, 2))}};
       }},
      // Element-wise losses: t = [input, target, ...]; args[0] the reduction (0 none, 1 mean, 2 sum).
      // bceWithLogits: t[2] the weight when args[1], then the pos_weight when args[2].
      {"bceWithLogits", [](const Ts& t, const Args& a) {
         c10::optional<at::Tensor> w, pw;
         size_t k = 2;
         if (B(a, 1) && k < t.size()) w = t[k++];
         if (B(a, 2) && k < t.size()) pw = t[k++];
         return OpOut{{at::binary_cross_entropy_with_logits(t[0], t[1], w, pw, I(a, 0))}};
       }},
      {"mseLoss", [](const Ts& t, const Args& a) { return OpOut{{at::mse_loss(t[0], t[1], I(a, 0))}}; }},
      {"smoothL1Loss", [](const Ts& t, const Args& a) { return OpOut{{at::smooth_l1_loss(t[0], t[1], I(a, 0), D(a, 1))}}; }},
      {"huberLoss", [](const Ts& t, const Args& a) { return OpOut{{at::huber_loss(t[0], t[1], I(a, 0), D(a, 1))}}; }},
      {"copy_", [](const Ts& t, const Args&) {
         NoGradGuard ng;
         t[0].copy_(t[1]);
         return OpOut{};
       }},
      {"backward", [](const Ts& t, const Args&) {
         t[0].backward();
         return OpOut{};
       }},
      {"grad", [](const Ts& t, const Args&) {
         at::Tensor g = t[0].grad();
         return g.defined() ? OpOut{{g}} : OpOut{};
       }},
      // The CPU generator's state, for checkpoints that resume bit-identically.
      {"getRngState", [](const Ts&, const Args&) {
         auto gen = at::detail::getDefaultCPUGenerator();
         std::lock_guard<std::mutex> lock(gen.mutex());
         return OpOut{{gen.get_state()}};
       }},
      {"setRngState", [](const Ts& t, const Args&) {
         auto gen = at::detail::getDefaultCPUGenerator();
         std::lock_guard<std::mutex> lock(gen.mutex());
         gen.set_state(t[0]);
         return OpOut{};
       }},
      {"to", [](const Ts& t, const Args& a) {
         at::Tensor x = t[0];
         auto dtype = Has(a, 1) ? ParseDtype(S(a, 1)) : x.scalar_type();
         auto device = Has(a, 0) ? ParseDevice(S(a, 0)) : x.device();
         return OpOut{{x.to(device, dtype, B(a, 2), B(a, 3))}};
       }},
  };
  return ops;
}

Arg ParseArg(Napi::Env env, const Napi::Value& v) {
  if (v.IsUndefined() || v.IsNull()) return std::monostate{};
  if (v.IsNumber()) return v.As<Napi::Number>().DoubleValue();
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value();
  if (v.IsString()) return v.As<Napi::String>().Utf8Value();
  if (v.IsArray()) {
    Napi::Array arr = v.As<Napi::Array>();
    std::vector<int64_t> out(arr.Length());
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value e = arr.Get(i);
      if (!e.IsNumber()) throw Napi::TypeError::New(env, "op arguments: lists must hold integers");
      out[i] = e.As<Napi::Number>().Int64Value();
    }
    return out;
  }
  throw Napi::TypeError::New(env, "op arguments: unsupported argument type");
}

}  // namespace

// op(name, inputs: Tensor[], args: unknown[], grad = true): Promise<Tensor | Tensor[]>
Napi::Value Op(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>();
  auto it = Table().find(name);
  if (it == Table().end()) throw Napi::TypeError::New(env, "unknown tensor op '" + name + "'");
  OpFn fn = it->second;
  Napi::Array inputs = info[1].As<Napi::Array>();
  std::vector<SlotPtr> slots;
  for (uint32_t i = 0; i < inputs.Length(); i++) slots.push_back(TensorWrap::SlotOf(env, inputs.Get(i), name));
  Args args;
  if (info.Length() > 2 && info[2].IsArray()) {
    Napi::Array raw = info[2].As<Napi::Array>();
    for (uint32_t i = 0; i < raw.Length(); i++) args.push_back(ParseArg(env, raw.Get(i)));
  }
  GradModeArg grad = ReadGradMode(info[3]);
  return Addon(env).executor->Submit<OpOut>(
      env, name,
      [fn, slots, args, grad] {
        GradModeScope mode(grad);
        Ts ts;
        ts.reserve(slots.size());
        for (auto& s : slots) ts.push_back(s->get());
        OpOut out = fn(ts, args);
        for (auto& t : out.tensors) out.metas.push_back(Meta::Of(t));
        return out;
      },
      [](Napi::Env env, OpOut& out) -> Napi::Value {
        auto wrap = [&](size_t i) {
          auto slot = std::make_shared<Slot>();
          slot->t = out.tensors[i];
          return TensorWrap::New(env, slot, out.metas[i]);
        };
        if (out.tensors.empty()) return env.Null();
        if (!out.tuple) return wrap(0);
        Napi::Array arr = Napi::Array::New(env, out.tensors.size());
        for (size_t i = 0; i < out.tensors.size(); i++) arr.Set(i, wrap(i));
        return arr;
      });
}

}  // namespace finetorch
