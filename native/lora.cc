#include "lora.h"

#include "executor.h"
#include "script_module.h"

#include <cmath>
#include <mutex>
#include <sstream>
#include <unordered_map>

namespace finetorch {

namespace {

struct Target {
  std::string name;
  torch::jit::Module layer;
  at::Tensor w0, a, b;
};

struct State {
  explicit State(const c10::intrusive_ptr<c10::ivalue::Object>& root) : owner(root) {}
  // The root module's object, weakly: a module freed and another allocated at the same address
  // must not inherit the adapter.
  c10::weak_intrusive_ptr<c10::ivalue::Object> owner;
  double scale = 1, dropout = 0;
  bool merged = false;
  std::vector<Target> targets;
};

std::mutex registryMutex;

std::unordered_map<const void*, std::shared_ptr<State>>& Registry() {
  static auto* registry = new std::unordered_map<const void*, std::shared_ptr<State>>();
  return *registry;
}

// Drops the adapters of modules that are gone: an entry holds its targets' layers and tensors,
// which would otherwise outlive the model. Called with the lock held; the registry is small.
void Sweep(std::unordered_map<const void*, std::shared_ptr<State>>& reg) {
  for (auto it = reg.begin(); it != reg.end();) {
    auto alive = it->second->owner.lock();
    if (!alive || alive.get() != it->first) it = reg.erase(it);
    else ++it;
  }
}

std::shared_ptr<State> Find(const torch::jit::Module& root) {
  std::lock_guard<std::mutex> lock(registryMutex);
  auto& reg = Registry();
  if (reg.empty()) return nullptr;
  Sweep(reg);
  auto it = reg.find(root._ivalue().get());
  return it == reg.end() ? nullptr : it->second;
}

void Register(const torch::jit::Module& root, std::shared_ptr<State> s) {
  std::lock_guard<std::mutex> lock(registryMutex);
  auto& reg = Registry();
  Sweep(reg);
  reg[root._ivalue().get()] = std::move(s);
}

torch::jit::Module Submodule(const torch::jit::Module& root, const std::string& path) {
  torch::jit::Module m = root;
  std::stringstream ss(path);
  std::string part;
  while (std::getline(ss, part, '.')) {
    auto next = m.attr(part, c10::IValue());
    if (!next.isModule()) throw std::runtime_error("lora: '" + path + "' is not a submodule");
    m = next.toModule();
  }
  return m;
}

// B.view(out, r) @ A.view(r, -1), shaped as W0. With dropout (training only), the LoRA branch's
// input features are dropped with one mask per forward: A's input columns (a conv's input
// channels) are zeroed and the rest scaled by 1 / (1 - p). A weight cannot drop elements of x
// per sample, as peft's Dropout on the branch's input does.
at::Tensor Delta(const State& s, const Target& t, bool withDropout) {
  int64_t out = t.w0.size(0), r = t.a.size(0);
  at::Tensor a = t.a;
  if (withDropout && s.dropout > 0 && t.layer.is_training() && at::GradMode::is_enabled()) {
    std::vector<int64_t> shape(a.dim(), 1);
    shape[1] = a.size(1);
    at::Tensor keep = at::empty(shape, a.options()).bernoulli_(1 - s.dropout).div_(1 - s.dropout);
    a = a * keep;
  }
  return at::matmul(t.b.reshape({out, r}), a.reshape({r, -1})).reshape(t.w0.sizes());
}

void Restore(std::vector<std::pair<torch::jit::Module, at::Tensor>>& restore) noexcept {
  for (auto& [layer, w] : restore) {
    try {
      layer.setattr("weight", w);
    } catch (...) {  // setattr on an existing slot does not throw; nothing to undo if it did
    }
  }
  restore.clear();
}

}  // namespace

LoraScope::LoraScope(const torch::jit::Module& root) {
  auto s = Find(root);
  if (!s || s->merged) return;
  try {
    for (auto& t : s->targets) {
      at::Tensor w = at::add(t.w0, Delta(*s, t, true), s->scale);
      t.layer.setattr("weight", w);
      restore_.emplace_back(t.layer, t.w0);
    }
  } catch (...) {
    Restore(restore_);
    throw;
  }
}

LoraScope::~LoraScope() { Restore(restore_); }

LoraSaveScope::LoraSaveScope(const torch::jit::Module& root, bool merge) {
  auto s = Find(root);
  if (!s || s->merged == merge) return;
  NoGradGuard noGrad;
  try {
    for (auto& t : s->targets) {
      // merged W0 holds W0 + delta: the base is W0 - delta
      at::Tensor w = at::add(t.w0, Delta(*s, t, false), merge ? s->scale : -s->scale);
      t.layer.setattr("weight", w);
      restore_.emplace_back(t.layer, t.w0);
    }
  } catch (...) {
    Restore(restore_);
    throw;
  }
}

LoraSaveScope::~LoraSaveScope() { Restore(restore_); }

void AppendLoraParameters(const torch::jit::Module& root, std::vector<std::pair<std::string, at::Tensor>>& out) {
  auto s = Find(root);
  if (!s) return;
  for (const auto& t : s->targets) {
    out.emplace_back(t.name + ".lora_A.weight", t.a);
    out.emplace_back(t.name + ".lora_B.weight", t.b);
  }
}

void LoraTo(const torch::jit::Module& root, const c10::optional<c10::Device>& device, const c10::optional<at::ScalarType>& dtype) {
  auto s = Find(root);
  if (!s) return;
  NoGradGuard noGrad;
  for (auto& t : s->targets) {
    for (at::Tensor* x : {&t.a, &t.b}) {
      auto d = device.value_or(x->device());
      auto type = dtype && at::isFloatingType(*dtype) ? *dtype : x->scalar_type();
      if (d != x->device() || type != x->scalar_type()) x->set_data(x->to(d, type));
    }
  }
}

// loraAttach(module, targets[], { rank, alpha, dropout, init })
Napi::Value LoraAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ModulePtr m = ModuleWrap::Of(env, info[0], "lora");
  std::vector<std::string> names;
  Napi::Array arr = info[1].As<Napi::Array>();
  for (uint32_t i = 0; i < arr.Length(); i++) names.push_back(arr.Get(i).As<Napi::String>());
  Napi::Object o = info[2].As<Napi::Object>();
  int64_t rank = o.Get("rank").As<Napi::Number>().Int64Value();
  double alpha = o.Get("alpha").As<Napi::Number>().DoubleValue();
  double dropout = o.Get("dropout").As<Napi::Number>().DoubleValue();
  bool gaussian = o.Get("init").As<Napi::String>().Utf8Value() == "gaussian";
  return Addon(env).executor->Run(env, "lora", [m, names, rank, alpha, dropout, gaussian] {
    if (Find(*m)) throw std::runtime_error("lora: the model already has a LoRA adapter");
    auto s = std::make_shared<State>(m->_ivalue());
    s->scale = alpha / double(rank);
    s->dropout = dropout;
    NoGradGuard noGrad;
    for (const auto& name : names) {
      auto layer = Submodule(*m, name);
      auto wv = layer.attr("weight", c10::IValue());
      if (!wv.isTensor()) throw std::runtime_error("lora: '" + name + "' has no weight tensor");
      at::Tensor w0 = wv.toTensor();
      if (w0.dim() != 2 && w0.dim() != 4) {
        throw std::runtime_error("lora: '" + name + "' has a " + std::to_string(w0.dim()) + "-D weight: only Linear and Conv2d layers can be targets");
      }
      if (w0.dim() == 4 && layer.hasattr("groups") && layer.attr("groups").isInt() && layer.attr("groups").toInt() != 1) {
        throw std::runtime_error("lora: '" + name + "' is a grouped convolution (groups=" + std::to_string(layer.attr("groups").toInt()) +
                                 "): LoRA supports only groups=1 convolutions; leave it out of targets");
      }
      int64_t out = w0.size(0), fanIn = w0.numel() / std::max<int64_t>(out, 1);
      if (rank < 1 || rank > std::min(out, fanIn)) {
        throw std::runtime_error("lora: rank " + std::to_string(rank) + " is out of range for '" + name + "': at most min(" +
                                 std::to_string(out) + ", " + std::to_string(fanIn) + ") = " + std::to_string(std::min(out, fanIn)));
      }
      auto opts = w0.options().requires_grad(false);
      std::vector<int64_t> aShape = w0.sizes().vec(), bShape{out, rank};
      aShape[0] = rank;
      if (w0.dim() == 4) bShape.insert(bShape.end(), {1, 1});
      at::Tensor a = at::empty(aShape, opts);
      // peft's init: A as nn.Linear/Conv2d's kaiming_uniform_(a=sqrt(5)), i.e. U(+-1/sqrt(fan_in)),
      // or N(0, 1/r) ('gaussian'); B zeros, so a fresh adapter changes nothing.
      if (gaussian) a.normal_(0, 1.0 / double(rank));
      else a.uniform_(-1.0 / std::sqrt(double(fanIn)), 1.0 / std::sqrt(double(fanIn)));
      at::Tensor b = at::zeros(bShape, opts);
      s->targets.push_back({name, layer, w0, a.requires_grad_(true), b.requires_grad_(true)});
    }
    Register(*m, s);
  });
}

// loraMerge(module, merged)
Napi::Value LoraMerge(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ModulePtr m = ModuleWrap::Of(env, info[0], "merge");
  bool merged = info[1].ToBoolean();
  return Addon(env).executor->Run(env, merged ? "merge" : "unmerge", [m, merged] {
    auto s = Find(*m);
    if (!s) throw std::runtime_error("the model has no LoRA adapter");
    if (s->merged == merged) return;
    NoGradGuard noGrad;
    for (auto& t : s->targets) t.w0.add_(Delta(*s, t, false), merged ? s->scale : -s->scale);
    s->merged = merged;
  });
}

}  // namespace finetorch
