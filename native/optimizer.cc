#include "optimizer.h"

#include "executor.h"
#include "fused_adamw.h"
#include "script_module.h"
#include "tensor.h"

#include <torch/serialize.h>

#include <cmath>
#include <sstream>

namespace finetorch {

torch::optim::Optimizer& OptimizerHolder::get() const {
  if (!opt) throw std::runtime_error(error.empty() ? "the optimizer was not created" : error);
  return *opt;
}

namespace {

struct GroupSpec {
  std::vector<SlotPtr> params;
  double lr, beta1, beta2, eps, weightDecay, momentum, dampening;
  bool amsgrad, nesterov;
};

double Num(const Napi::Object& o, const char* k, double def) {
  Napi::Value v = o.Get(k);
  return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : def;
}
bool Flag(const Napi::Object& o, const char* k) { return o.Get(k).ToBoolean(); }

std::unique_ptr<torch::optim::OptimizerOptions> GroupOptions(const std::string& kind, const GroupSpec& g);

// AdamW as PyTorch's Python implementation of the same version computes it (torch.optim.AdamW,
// single-tensor path, which CPU tensors take), so a step here equals a step there bit for bit.
// libtorch's C++ AdamW differs from it since 2.0 (see FT_ADAMW_LERP). State, options and
// serialization stay libtorch's, so saved optimizer states keep their format.
class AdamW : public torch::optim::AdamW {
 public:
  using torch::optim::AdamW::AdamW;

  at::Tensor step(LossClosure closure = nullptr) override {
    NoGradGuard noGrad;
    at::Tensor loss;
    if (closure) {
      AutoGradMode grad(true);
      loss = closure();
    }
    for (auto& group : param_groups_) {
      auto& o = static_cast<torch::optim::AdamWOptions&>(group.options());
      const double lr = o.lr(), beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas());
      for (auto& p : group.params()) {
        if (!p.grad().defined()) continue;
        const at::Tensor& grad = p.grad();
        TORCH_CHECK(!grad.is_sparse(), "AdamW does not support sparse gradients");
        auto key = OptimizerStateKey(state_, p);
        auto it = state_.find(key);
        if (it == state_.end()) {
          auto fresh = std::make_unique<torch::optim::AdamWParamState>();
          fresh->step(0);
          fresh->exp_avg(at::zeros_like(p, at::MemoryFormat::Preserve));
          fresh->exp_avg_sq(at::zeros_like(p, at::MemoryFormat::Preserve));
          if (o.amsgrad()) fresh->max_exp_avg_sq(at::zeros_like(p, at::MemoryFormat::Preserve));
          it = state_.emplace(key, std::move(fresh)).first;
        }
        auto& st = static_cast<torch::optim::AdamWParamState&>(*it->second);
        st.step(st.step() + 1);
        AdamWUpdate(p, grad, st.exp_avg(), st.exp_avg_sq(), o.amsgrad() ? &st.max_exp_avg_sq() : nullptr,
                    {lr, beta1, beta2, o.eps(), o.weight_decay(), static_cast<double>(st.step())});
      }
    }
    return loss;
  }
};
}  // namespace

Napi::Function OptimizerWrap::Init(Napi::Env env) {
  return DefineClass(env, "Optimizer",
                     {
                         InstanceMethod<&OptimizerWrap::Step>("step"),
                         InstanceMethod<&OptimizerWrap::ZeroGrad>("zeroGrad"),
                         InstanceMethod<&OptimizerWrap::SetLr>("setLr"),
                         InstanceMethod<&OptimizerWrap::AddParamGroup>("addParamGroup"),
                         InstanceMethod<&OptimizerWrap::StateDict>("stateDict"),
                         InstanceMethod<&OptimizerWrap::LoadStateDict>("loadStateDict"),
                         InstanceMethod<&OptimizerWrap::Dispose>("dispose"),
                         InstanceAccessor<&OptimizerWrap::GetDisposed>("disposed"),
                     });
}

namespace {
GroupSpec ReadGroup(Napi::Env env, const Napi::Object& g) {
  GroupSpec s{};
  Napi::Array ps = g.Get("params").As<Napi::Array>();
  for (uint32_t j = 0; j < ps.Length(); j++) s.params.push_back(TensorWrap::SlotOf(env, ps.Get(j), "optimizer"));
  s.lr = Num(g, "lr", 1e-3);
  Napi::Value betas = g.Get("betas");
  s.beta1 = betas.IsArray() ? betas.As<Napi::Array>().Get(0u).As<Napi::Number>().DoubleValue() : 0.9;
  s.beta2 = betas.IsArray() ? betas.As<Napi::Array>().Get(1u).As<Napi::Number>().DoubleValue() : 0.999;
  s.eps = Num(g, "eps", 1e-8);
  s.weightDecay = Num(g, "weightDecay", 0);
  s.momentum = Num(g, "momentum", 0);
  s.dampening = Num(g, "dampening", 0);
  s.amsgrad = Flag(g, "amsgrad");
  s.nesterov = Flag(g, "nesterov");
  return s;
}

std::unique_ptr<torch::optim::OptimizerOptions> GroupOptions(const std::string& kind, const GroupSpec& g) {
  if (kind == "adamw") {
    auto o = std::make_unique<torch::optim::AdamWOptions>(g.lr);
    o->betas(std::make_tuple(g.beta1, g.beta2)).eps(g.eps).weight_decay(g.weightDecay).amsgrad(g.amsgrad);
    return o;
  }
  auto o = std::make_unique<torch::optim::SGDOptions>(g.lr);
  o->momentum(g.momentum).dampening(g.dampening).weight_decay(g.weightDecay).nesterov(g.nesterov);
  return o;
}
}  // namespace

// addParamGroup(group): PyTorch's add_param_group, queued (staged fine-tuning adds the backbone).
Napi::Value OptimizerWrap::AddParamGroup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  OptimizerPtr h = Of(env, info.This(), "addParamGroup()");
  GroupSpec spec = ReadGroup(env, info[0].As<Napi::Object>());
  std::string kind = kind_;
  return Addon(env).executor->Run(
      env, "addParamGroup()",
      [h, spec, kind] {
        std::vector<at::Tensor> ts;
        for (auto& s : spec.params) ts.push_back(s->get());
        h->get().add_param_group(torch::optim::OptimizerParamGroup(ts, GroupOptions(kind, spec)));
        h->groups.push_back(ts);
      });
}

// new Optimizer(kind: 'adamw' | 'sgd', groups: { params: Tensor[], lr, betas: [b1, b2], eps,
// weightDecay, amsgrad, momentum, dampening, nesterov }[]); creation is queued on the executor.
OptimizerWrap::OptimizerWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<OptimizerWrap>(info) {
  Napi::Env env = info.Env();
  std::string kind = info[0].As<Napi::String>();
  kind_ = kind;
  Napi::Array raw = info[1].As<Napi::Array>();
  std::vector<GroupSpec> specs;
  for (uint32_t i = 0; i < raw.Length(); i++) specs.push_back(ReadGroup(env, raw.Get(i).As<Napi::Object>()));
  holder_ = std::make_shared<OptimizerHolder>();
  OptimizerPtr h = holder_;
  Addon(env).executor->Post(env, "optimizer", [h, kind, specs] {
    try {
      std::vector<torch::optim::OptimizerParamGroup> pgs;
      for (auto& g : specs) {
        std::vector<at::Tensor> ts;
        for (auto& s : g.params) ts.push_back(s->get());
        h->groups.push_back(ts);
        pgs.emplace_back(ts, GroupOptions(kind, g));
      }
      if (kind == "adamw") h->opt = std::make_unique<AdamW>(pgs, torch::optim::AdamWOptions(specs[0].lr));
      else h->opt = std::make_unique<torch::optim::SGD>(pgs, torch::optim::SGDOptions(specs[0].lr));
    } catch (...) {
      h->error = "optimizer: " + ExceptionMessage(std::current_exception());
    }
  });
}

OptimizerPtr OptimizerWrap::Of(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsObject()) throw Napi::TypeError::New(env, what + ": expected an optimizer");
  auto* w = Unwrap(v.As<Napi::Object>());
  if (!w || !w->holder_) throw CodedJsError(env, "FINETORCH_DISPOSED", what + ": the optimizer was disposed");
  return w->holder_;
}

Napi::Value OptimizerWrap::Step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  OptimizerPtr h = Of(env, info.This(), "step()");
  return Addon(env).executor->Run(
      env, "step()",
      [h] { NoGradGuard g; h->get().step(); });
}

Napi::Value OptimizerWrap::ZeroGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  OptimizerPtr h = Of(env, info.This(), "zeroGrad()");
  return Addon(env).executor->Run(
      env, "zeroGrad()",
      [h] { h->get().zero_grad(); });
}

// setLr(group, lr): queued, so steps already queued use the old rate.
Napi::Value OptimizerWrap::SetLr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  OptimizerPtr h = Of(env, info.This(), "lr");
  size_t group = info[0].As<Napi::Number>().Uint32Value();
  double lr = info[1].As<Napi::Number>().DoubleValue();
  Addon(env).executor->Post(env, "lr", [h, group, lr] {
    auto& groups = h->get().param_groups();
    if (group < groups.size()) groups[group].options().set_lr(lr);
  });
  return env.Undefined();
}

Napi::Value OptimizerWrap::StateDict(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  OptimizerPtr h = Of(env, info.This(), "stateDict()");
  return Addon(env).executor->Submit<std::string>(
      env, "stateDict()",
      [h] {
        torch::serialize::OutputArchive archive;
        h->get().save(archive);
        std::ostringstream out;
        archive.save_to(out);
        return out.str();
      },
      [](Napi::Env env, std::string& s) -> Napi::Value { return Napi::Buffer<char>::Copy(env, s.data(), s.size()); });
}

namespace {
// libtorch's optimizer archive keys each parameter's state by its TensorImpl address, written as
// text: "0x55d1..." by 1.13, decimal by 2.x. libtorch 2.x's own loader parses keys with stoull,
// which reads every 1.13 key as 0 (all states collide; the next step dereferences a moved-from
// state). This loader matches the keys as the strings they are, so an optimizer state written
// under either version loads under both; the archive format itself is libtorch's.
template <typename Options, typename ParamState>
void LoadState(torch::optim::Optimizer& opt, torch::serialize::InputArchive& archive) {
  torch::serialize::InputArchive states, groups;
  archive.read("state", states);
  archive.read("param_groups", groups);
  at::Tensor count;
  groups.read("param_groups/size", count);
  auto& pgs = opt.param_groups();
  if (count.item<int64_t>() != static_cast<int64_t>(pgs.size())) {
    throw std::invalid_argument("the saved state has " + std::to_string(count.item<int64_t>()) +
                                " parameter groups, the optimizer " + std::to_string(pgs.size()));
  }
  // Everything is read and checked first, so a state that does not fit leaves the optimizer as it was.
  std::vector<torch::serialize::InputArchive> groupArchives(pgs.size());
  for (size_t i = 0; i < pgs.size(); i++) {
    groups.read("param_groups/" + std::to_string(i), groupArchives[i]);
    at::Tensor size;
    groupArchives[i].read("params/size", size);
    if (size.item<int64_t>() != static_cast<int64_t>(pgs[i].params().size())) {
      throw std::invalid_argument("group " + std::to_string(i) + " of the saved state has " +
                                  std::to_string(size.item<int64_t>()) + " parameters, the optimizer's " +
                                  std::to_string(pgs[i].params().size()));
    }
  }
  opt.state().clear();  // as Python's load_state_dict: the saved state replaces the current one
  for (size_t i = 0; i < pgs.size(); i++) {
    torch::serialize::InputArchive& group = groupArchives[i];
    torch::serialize::InputArchive options;
    auto& params = pgs[i].params();
    for (size_t j = 0; j < params.size(); j++) {
      c10::IValue key;
      group.read("params/" + std::to_string(j), key);
      torch::serialize::InputArchive saved;
      if (!states.try_read(key.toStringRef(), saved)) continue;  // no step taken for it yet
      auto st = std::make_unique<ParamState>();
      st->serialize(saved);
      opt.state()[OptimizerStateKey(opt.state(), params[j])] = std::move(st);
    }
    group.read("options", options);
    Options o(0);
    o.serialize(options);
    pgs[i].set_options(std::make_unique<Options>(o));
  }
}
}  // namespace

Napi::Value OptimizerWrap::LoadStateDict(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  OptimizerPtr h = Of(env, info.This(), "loadStateDict()");
  auto b = info[0].As<Napi::Buffer<char>>();
  auto bytes = std::make_shared<std::string>(b.Data(), b.Length());
  return Addon(env).executor->Run(
      env, "loadStateDict()",
      [h, bytes, kind = kind_] {
        torch::serialize::InputArchive archive;
        std::istringstream in(*bytes);
        archive.load_from(in);
        if (kind == "adamw") LoadState<torch::optim::AdamWOptions, torch::optim::AdamWParamState>(h->get(), archive);
        else LoadState<torch::optim::SGDOptions, torch::optim::SGDParamState>(h->get(), archive);
      });
}

Napi::Value OptimizerWrap::Dispose(const Napi::CallbackInfo& info) {
  holder_.reset();
  return info.Env().Undefined();
}

Napi::Value OptimizerWrap::GetDisposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !holder_);
}

Napi::Value FusedAdamW(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), FusedAdamWAvailable()); }

}  // namespace finetorch
