#include "script_module.h"

#include <torch/csrc/jit/python/update_graph_executor_opt.h>

#include "code_check.h"
#include "executor.h"
#include "lora.h"
#include "tensor.h"

#include <atomic>
#include <cmath>
#include <mutex>
#include <sstream>

// Exported by libtorch_cpu in 1.13 and 2.x; declared here because Debian's libtorch-dev does not
// ship their header (torch/csrc/jit/codegen/fuser/interface.h).
namespace torch {
namespace jit {
TORCH_API bool canFuseOnCPU();
TORCH_API void overrideCanFuseOnCPU(bool value);
}  // namespace jit
}  // namespace torch

namespace finetorch {

namespace {



Val FromJs(Napi::Env env, const Napi::Value& v, int depth = 0) {
  if (depth > 32) throw Napi::Error::New(env, "inputs are nested too deeply");
  Val out;
  if (v.IsUndefined() || v.IsNull()) return out;
  if (v.IsBoolean()) { out.kind = Val::Bool; out.b = v.As<Napi::Boolean>(); return out; }
  if (v.IsNumber()) {
    out.kind = Val::Num;
    out.d = v.As<Napi::Number>().DoubleValue();
    out.integral = std::floor(out.d) == out.d && std::fabs(out.d) < 9007199254740992.0;
    return out;
  }
  if (v.IsString()) { out.kind = Val::Str; out.s = v.As<Napi::String>(); return out; }
  if (TensorWrap::FromValue(env, v)) {
    out.kind = Val::TensorIn;
    out.slot = TensorWrap::SlotOf(env, v, "input");
    return out;
  }
  if (v.IsArray()) {
    Napi::Array a = v.As<Napi::Array>();
    out.kind = Val::List;
    for (uint32_t i = 0; i < a.Length(); i++) out.items.push_back(FromJs(env, a.Get(i), depth + 1));
    return out;
  }
  if (v.IsObject()) {
    Napi::Object o = v.As<Napi::Object>();
    Napi::Array names = o.GetPropertyNames();
    out.kind = Val::Dict;
    for (uint32_t i = 0; i < names.Length(); i++) {
      std::string k = names.Get(i).As<Napi::String>();
      out.keys.push_back(k);
      out.items.push_back(FromJs(env, o.Get(k), depth + 1));
    }
    return out;
  }
  throw Napi::TypeError::New(env, "inputs must be tensors, numbers, booleans, strings, arrays or plain objects");
}

c10::IValue ToIValue(const Val& v, const c10::TypePtr& type) {
  using namespace c10;
  TypePtr t = type;
  if (t && t->kind() == TypeKind::OptionalType) t = t->expectRef<OptionalType>().getElementType();
  switch (v.kind) {
    case Val::None: return IValue();
    case Val::Bool: return v.b;
    case Val::Num:
      if (t && t->kind() == TypeKind::FloatType) return v.d;
      if (t && t->kind() == TypeKind::IntType) return static_cast<int64_t>(v.d);
      return v.integral ? IValue(static_cast<int64_t>(v.d)) : IValue(v.d);
    case Val::Str: return v.s;
    case Val::TensorIn: return v.slot->get();
    case Val::List:
    case Val::Tuple: {
      if (t && t->kind() == TypeKind::TupleType) {
        auto elems = t->expectRef<TupleType>().elements();
        std::vector<IValue> xs;
        for (size_t i = 0; i < v.items.size(); i++) xs.push_back(ToIValue(v.items[i], i < elems.size() ? elems[i] : nullptr));
        return ivalue::Tuple::create(std::move(xs));
      }
      TypePtr elem = t && t->kind() == TypeKind::ListType ? t->expectRef<ListType>().getElementType() : nullptr;
      if (!elem) {
        bool allTensors = !v.items.empty();
        for (auto& x : v.items) allTensors = allTensors && x.kind == Val::TensorIn;
        if (!allTensors) {
          std::vector<IValue> xs;
          for (auto& x : v.items) xs.push_back(ToIValue(x, nullptr));
          return ivalue::Tuple::create(std::move(xs));
        }
        elem = TensorType::get();
      }
      impl::GenericList list(elem);
      for (auto& x : v.items) list.push_back(ToIValue(x, elem));
      return list;
    }
    case Val::Dict: {
      TypePtr valueType = TensorType::get();
      if (t && t->kind() == TypeKind::DictType) valueType = t->expectRef<DictType>().getValueType();
      impl::GenericDict dict(StringType::get(), valueType);
      for (size_t i = 0; i < v.items.size(); i++) dict.insert(v.keys[i], ToIValue(v.items[i], valueType));
      return dict;
    }
    default: throw std::runtime_error("unsupported input");
  }
}

}  // namespace

Val FromIValue(const c10::IValue& iv) {
  Val out;
  if (iv.isNone()) return out;
  if (iv.isTensor()) {
    out.kind = Val::TensorOut;
    out.tensor = iv.toTensor();
    out.meta = Meta::Of(out.tensor);
  } else if (iv.isBool()) {
    out.kind = Val::Bool; out.b = iv.toBool();
  } else if (iv.isInt()) {
    out.kind = Val::Num; out.d = double(iv.toInt());
  } else if (iv.isDouble()) {
    out.kind = Val::Num; out.d = iv.toDouble();
  } else if (iv.isString()) {
    out.kind = Val::Str; out.s = iv.toStringRef();
  } else if (iv.isTuple() || iv.isList()) {
    out.kind = Val::List;
    if (iv.isTuple()) for (auto& x : iv.toTupleRef().elements()) out.items.push_back(FromIValue(x));
    else for (const auto& x : iv.toListRef()) out.items.push_back(FromIValue(x));
  } else if (iv.isGenericDict()) {
    out.kind = Val::Dict;
    for (const auto& kv : iv.toGenericDict()) {
      out.keys.push_back(kv.key().isString() ? kv.key().toStringRef() : kv.key().tagKind() == "Int" ? std::to_string(kv.key().toInt()) : "?");
      out.items.push_back(FromIValue(kv.value()));
    }
  } else {
    throw std::runtime_error("output of type " + iv.tagKind() + " cannot be returned to JS");
  }
  return out;
}

Napi::Value ToJs(Napi::Env env, Val& v) {
  switch (v.kind) {
    case Val::None: return env.Null();
    case Val::Bool: return Napi::Boolean::New(env, v.b);
    case Val::Num: return Napi::Number::New(env, v.d);
    case Val::Str: return Napi::String::New(env, v.s);
    case Val::TensorOut: {
      auto slot = std::make_shared<Slot>();
      slot->t = v.tensor;
      return TensorWrap::New(env, slot, v.meta);
    }
    case Val::List: {
      Napi::Array a = Napi::Array::New(env, v.items.size());
      for (size_t i = 0; i < v.items.size(); i++) a.Set(i, ToJs(env, v.items[i]));
      return a;
    }
    case Val::Dict: {
      Napi::Object o = Napi::Object::New(env);
      for (size_t i = 0; i < v.items.size(); i++) o.Set(v.keys[i], ToJs(env, v.items[i]));
      return o;
    }
    default: return env.Undefined();
  }
}

namespace {

std::string TypeName(const torch::jit::Module& m) {
  auto name = m.type()->name();
  std::string q = name ? name->qualifiedName() : "Module";
  const std::string prefix = "__torch__.";
  if (q.rfind(prefix, 0) == 0) q = q.substr(prefix.size());
  // Scripting mangles repeated class names: torch.nn.modules.conv.___torch_mangle_3.Conv2d.
  auto pos = q.find("___torch_mangle_");
  if (pos != std::string::npos) {
    auto dot = q.find('.', pos);
    q = q.substr(0, pos) + (dot == std::string::npos ? "" : q.substr(dot + 1));
  }
  return q;
}

// Whether a graph reads the `training` attribute. Walks the nodes rather than printing the graph:
// printing reads the debug source ranges, which a damaged archive can make crash.
bool ReadsTraining(const torch::jit::Block* block) {
  for (const torch::jit::Node* node : block->nodes()) {
    if (node->kind() == c10::prim::GetAttr && node->s(c10::attr::name) == "training") return true;
    for (const torch::jit::Block* inner : node->blocks()) {
      if (ReadsTraining(inner)) return true;
    }
  }
  return false;
}

struct Snap {
  std::vector<std::pair<std::string, at::Tensor>> params, buffers;
  std::vector<Meta> paramMetas, bufferMetas;
  struct Mod { std::string name, type; bool training; };
  std::vector<Mod> modules;
  struct Arg { std::string name, type; bool hasDefault; };
  struct Method { std::string name; std::vector<Arg> args; std::string returns; };
  std::vector<Method> methods;
  bool traced = false;
};

Snap TakeSnapshot(const torch::jit::Module& m) {
  Snap s;
  for (const auto& p : m.named_parameters(true)) {
    s.params.emplace_back(p.name, p.value);
    s.paramMetas.push_back(Meta::Of(p.value));
  }
  size_t own = s.params.size();
  AppendLoraParameters(m, s.params);
  for (size_t i = own; i < s.params.size(); i++) s.paramMetas.push_back(Meta::Of(s.params[i].second));
  for (const auto& b : m.named_buffers(true)) {
    s.buffers.emplace_back(b.name, b.value);
    s.bufferMetas.push_back(Meta::Of(b.value));
  }
  bool trainingDependent = false, readsTraining = false;
  for (const auto& sub : m.named_modules()) {
    std::string type = TypeName(sub.value);
    s.modules.push_back({sub.name, type, sub.value.is_training()});
    if (type.find("BatchNorm") != std::string::npos || type.find("Dropout") != std::string::npos) trainingDependent = true;
    for (const auto& method : sub.value.get_methods()) {
      if (ReadsTraining(method.graph()->block())) readsTraining = true;
    }
  }
  s.traced = trainingDependent && !readsTraining;
  for (const auto& method : m.get_methods()) {
    Snap::Method md{method.name(), {}, ""};
    const auto& schema = method.function().getSchema();
    for (size_t i = 1; i < schema.arguments().size(); i++) {  // 0 is self
      const auto& a = schema.arguments()[i];
      md.args.push_back({a.name(), a.type()->annotation_str(), a.default_value().has_value()});
    }
    if (!schema.returns().empty()) md.returns = schema.returns()[0].type()->annotation_str();
    s.methods.push_back(md);
  }
  return s;
}

Napi::Value SnapToJs(Napi::Env env, Snap& s) {
  Napi::Object o = Napi::Object::New(env);
  auto pairs = [&](auto& list, auto& metas) {
    Napi::Array a = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); i++) {
      auto slot = std::make_shared<Slot>();
      slot->t = list[i].second;
      Napi::Array pair = Napi::Array::New(env, 2);
      pair.Set(0u, list[i].first);
      pair.Set(1u, TensorWrap::New(env, slot, metas[i]));
      a.Set(i, pair);
    }
    return a;
  };
  o.Set("parameters", pairs(s.params, s.paramMetas));
  o.Set("buffers", pairs(s.buffers, s.bufferMetas));
  Napi::Array mods = Napi::Array::New(env, s.modules.size());
  for (size_t i = 0; i < s.modules.size(); i++) {
    Napi::Object m = Napi::Object::New(env);
    m.Set("name", s.modules[i].name);
    m.Set("type", s.modules[i].type);
    m.Set("training", s.modules[i].training);
    mods.Set(i, m);
  }
  o.Set("modules", mods);
  Napi::Array methods = Napi::Array::New(env, s.methods.size());
  for (size_t i = 0; i < s.methods.size(); i++) {
    Napi::Object m = Napi::Object::New(env);
    m.Set("name", s.methods[i].name);
    m.Set("returns", s.methods[i].returns);
    Napi::Array args = Napi::Array::New(env, s.methods[i].args.size());
    for (size_t j = 0; j < s.methods[i].args.size(); j++) {
      Napi::Object a = Napi::Object::New(env);
      a.Set("name", s.methods[i].args[j].name);
      a.Set("type", s.methods[i].args[j].type);
      a.Set("hasDefault", s.methods[i].args[j].hasDefault);
      args.Set(j, a);
    }
    m.Set("args", args);
    methods.Set(i, m);
  }
  o.Set("methods", methods);
  o.Set("traced", s.traced);
  return o;
}

torch::jit::Module Submodule(const torch::jit::Module& root, const std::string& path) {
  torch::jit::Module m = root;
  if (path.empty()) return m;
  std::stringstream ss(path);
  std::string part;
  while (std::getline(ss, part, '.')) {
    auto next = m.attr(part, c10::IValue());
    if (!next.isModule()) throw std::runtime_error("'" + path + "' is not a submodule");
    m = next.toModule();
  }
  return m;
}

}  // namespace

Napi::Function ModuleWrap::Init(Napi::Env env) {
  Napi::Function f = DefineClass(env, "ScriptModule",
                                 {
                                     InstanceMethod<&ModuleWrap::Snapshot>("snapshot"),
                                     InstanceMethod<&ModuleWrap::Save>("save"),
                                     InstanceMethod<&ModuleWrap::RunMethod>("runMethod"),
                                     InstanceMethod<&ModuleWrap::SetTraining>("setTraining"),
                                     InstanceMethod<&ModuleWrap::To>("to"),
                                     InstanceMethod<&ModuleWrap::ReplaceHeadLayer>("replaceHeadLayer"),
                                     InstanceMethod<&ModuleWrap::ChannelsLast>("channelsLast"),
                                     InstanceMethod<&ModuleWrap::Dispose>("dispose"),
                                     InstanceAccessor<&ModuleWrap::GetDisposed>("disposed"),
                                 });
  Addon(env).moduleCtor = Napi::Persistent(f);
  return f;
}

ModuleWrap::ModuleWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModuleWrap>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), "ScriptModule cannot be constructed directly: use torch.jit.load()");
  }
  module_ = *info[0].As<Napi::External<ModulePtr>>().Data();
}

Napi::Object ModuleWrap::New(Napi::Env env, ModulePtr module) {
  return Addon(env).moduleCtor.New({Napi::External<ModulePtr>::New(env, &module)});
}

ModulePtr ModuleWrap::Of(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(Addon(env).moduleCtor.Value())) {
    throw Napi::TypeError::New(env, what + ": expected a ScriptModule");
  }
  auto* w = Unwrap(v.As<Napi::Object>());
  if (!w->module_) throw CodedJsError(env, "FINETORCH_DISPOSED", what + ": the module was disposed");
  return w->module_;
}

// loadModule(pathOrBuffer, device): Promise<ScriptModule>
Napi::Value LoadModule(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path;
  std::shared_ptr<std::string> bytes;
  if (info[0].IsBuffer()) {
    auto b = info[0].As<Napi::Buffer<char>>();
    bytes = std::make_shared<std::string>(b.Data(), b.Length());
  } else {
    path = info[0].As<Napi::String>();
  }
  std::string device = info[1].As<Napi::String>();
  // optional [name, source][]: the archive's code entries, checked before libtorch compiles them
  std::vector<std::pair<std::string, std::string>> code;
  if (info.Length() > 2 && info[2].IsArray()) {
    auto arr = info[2].As<Napi::Array>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      auto pair = arr.Get(i).As<Napi::Array>();
      code.emplace_back(pair.Get(0u).As<Napi::String>().Utf8Value(), pair.Get(1u).As<Napi::String>().Utf8Value());
    }
  }
  return Addon(env).executor->Submit<ModulePtr>(
      env, "jit.load",
      [path, bytes, device, code = std::move(code)] {
        CheckCodeEntries(code);
        auto dev = ParseDevice(device);
        try {
          if (bytes) {
            std::istringstream in(*bytes);
            return std::make_shared<torch::jit::Module>(torch::jit::load(in, dev));
          }
          return std::make_shared<torch::jit::Module>(torch::jit::load(path, dev));
        } catch (const c10::OutOfMemoryError&) {
          throw;
        } catch (const std::exception&) {
          // whatever libtorch's reader or TorchScript's compiler refused: the file is the cause
          throw CodedError("FINETORCH_BAD_MODEL_FILE", ExceptionMessage(std::current_exception()));
        }
      },
      [](Napi::Env env, ModulePtr& m) -> Napi::Value { return ModuleWrap::New(env, m); });
}

Napi::Value ModuleWrap::Snapshot(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ModulePtr m = Of(env, info.This(), "module");
  return Addon(env).executor->Submit<Snap>(
      env, "module", [m] { return TakeSnapshot(*m); }, [](Napi::Env env, Snap& s) { return SnapToJs(env, s); });
}

// save(extraFiles?): Promise<Buffer>, the TorchScript archive's bytes. Written in memory, because
// libtorch's file writer aborts the process when the disk fills (it throws from a destructor);
// TypeScript writes the bytes to disk, where a full disk is an ordinary error. extraFiles
// ({ name: text }) go in through libtorch's ExtraFilesMap, as `<archive>/extra/<name>`, which is
// where Python's torch.jit.load(_extra_files=...) looks for them.
Napi::Value ModuleWrap::Save(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ModulePtr m = Of(env, info.This(), "save");
  torch::jit::ExtraFilesMap extra;
  if (info.Length() > 0 && info[0].IsObject()) {
    auto files = info[0].As<Napi::Object>();
    auto names = files.GetPropertyNames();
    for (uint32_t i = 0; i < names.Length(); i++) {
      std::string name = names.Get(i).As<Napi::String>();
      extra[name] = files.Get(name).As<Napi::String>().Utf8Value();
    }
  }
  // merge (default true): a LoRA adapter's delta goes into the saved weights
  bool merge = info.Length() < 2 || !info[1].IsBoolean() || info[1].As<Napi::Boolean>().Value();
  return Addon(env).executor->Submit<std::shared_ptr<std::string>>(
      env, "save",
      [m, extra = std::move(extra), merge] {
        LoraSaveScope lora(*m, merge);
        std::ostringstream out;
        m->save(out, extra);
        return std::make_shared<std::string>(std::move(out).str());
      },
      [](Napi::Env env, std::shared_ptr<std::string>& bytes) -> Napi::Value {
        auto* keep = new std::shared_ptr<std::string>(bytes);
        return Napi::Buffer<char>::New(env, bytes->data(), bytes->size(),
                                       [](Napi::Env, char*, std::shared_ptr<std::string>* k) { delete k; }, keep);
      });
}

void DisableCpuFusionOnce() {
  // TorchScript's CPU fuser (NNC) compiles fused kernels with LLVM where libtorch was built with
  // it (Debian's 2.6, not pip's wheels nor Debian's 1.13). That compilation hangs or takes minutes
  // on small training graphs (Python on Debian 13 stalls the same way from the third step of a
  // scripted MLP), and fused kernels round differently from the unfused ones a model ran before
  // its graph was optimized. So it is off by default, as in pip's builds; torch.backends.jit.cpuFusion
  // turns it back on.
  static std::once_flag once;
  std::call_once(once, [] { torch::jit::overrideCanFuseOnCPU(false); });
}

// jitCpuFusion(flag?): the CPU fuser switch (process-wide); sets it when a boolean is given.
Napi::Value JitCpuFusion(const Napi::CallbackInfo& info) {
  return Guard(info.Env(), "backends.jit.cpuFusion", [&] {
    if (info.Length() > 0 && info[0].IsBoolean()) torch::jit::overrideCanFuseOnCPU(info[0].As<Napi::Boolean>().Value());
    return Napi::Boolean::New(info.Env(), torch::jit::canFuseOnCPU());
  });
}

// TorchScript's graph-executor optimisation on the executor, off by default: with it on, a method's
// first call after a load runs the profiling graph (eager autograd) and later calls an optimised
// one whose autodiff formulas round differently (tanh, GELU, sigmoid backward: ~1e-8), so a run
// resumed in a new process would part from the uninterrupted one in the last bits. Off, every step
// runs the same graph. libtorch keeps the flag per thread: it is set on the executor, queued, so
// work queued after it runs with it.
static std::atomic<bool> gJitOptimize{false};

void ApplyJitDefaults(Napi::Env env) {
  bool flag = gJitOptimize.load();
  Addon(env).executor->Post(env, "backends.jit.optimize", [flag] { torch::jit::setGraphExecutorOptimize(flag); });
}

// jitOptimize(flag?): sets and/or returns the flag.
Napi::Value JitOptimize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() > 0 && info[0].IsBoolean()) {
    gJitOptimize = info[0].As<Napi::Boolean>().Value();
    ApplyJitDefaults(env);
  }
  return Napi::Boolean::New(env, gJitOptimize.load());
}

// runMethod(name, inputs[]): Promise<output>
Napi::Value ModuleWrap::RunMethod(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>();
  ModulePtr m = Of(env, info.This(), name);
  Napi::Array raw = info[1].As<Napi::Array>();
  std::vector<Val> inputs;
  for (uint32_t i = 0; i < raw.Length(); i++) inputs.push_back(FromJs(env, raw.Get(i)));
  GradModeArg grad = ReadGradMode(info[2]);
  // Not InferenceMode for TorchScript: once a graph has been run with gradients, the executor
  // runs it as a DifferentiableGraph that saves its outputs for backward, which InferenceMode's
  // tensors refuse ("Inference tensors cannot be saved for backward"); no_grad is what it needs.
  // (Measured on resnet18 before this: InferenceMode was no faster than no_grad, 0.95x.)
  if (grad == GradModeArg::Inference) grad = GradModeArg::NoGrad;
  return Addon(env).executor->Submit<Val>(
      env, name,
      [m, name, inputs, grad] {
        torch::jit::Method method = m->get_method(name);
        const auto& schema = method.function().getSchema();
        std::vector<c10::IValue> args;
        for (size_t i = 0; i < inputs.size(); i++) {
          c10::TypePtr t = i + 1 < schema.arguments().size() ? schema.arguments()[i + 1].type() : nullptr;
          args.push_back(ToIValue(inputs[i], t));
        }
        GradModeScope mode(grad);
        LoraScope lora(*m);
        return FromIValue(method(std::move(args)));
      },
      [](Napi::Env env, Val& v) { return ToJs(env, v); });
}

// setTraining(path, on, recursive)
Napi::Value ModuleWrap::SetTraining(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ModulePtr m = Of(env, info.This(), "train");
  std::string path = info[0].As<Napi::String>();
  bool on = info[1].ToBoolean();
  bool recursive = info[2].ToBoolean();
  return Addon(env).executor->Run(
      env, "train",
      [m, path, on, recursive] {
        auto sub = Submodule(*m, path);
        if (recursive) sub.train(on);
        else sub.setattr("training", on);
      });
}

// to(device | null, dtype | null)
Napi::Value ModuleWrap::To(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ModulePtr m = Of(env, info.This(), "to");
  std::string device = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  std::string dtype = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
  return Addon(env).executor->Run(
      env, "to",
      [m, device, dtype] {
        if (!device.empty() && !dtype.empty()) m->to(ParseDevice(device), ParseDtype(dtype));
        else if (!device.empty()) m->to(ParseDevice(device));
        else if (!dtype.empty()) m->to(ParseDtype(dtype));
        LoraTo(*m, device.empty() ? c10::optional<c10::Device>() : ParseDevice(device),
               dtype.empty() ? c10::optional<at::ScalarType>() : ParseDtype(dtype));
      });
}

// replaceHeadLayer(path, outFeatures): a Linear layer, or a Conv2d (1x1 heads such as SqueezeNet's),
// gets a new weight and bias with `outFeatures` outputs, initialised as torch.nn.Linear / Conv2d's
// reset_parameters does: kaiming_uniform_(a=sqrt(5)) and the bias rule both reduce to
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)); drawn in the same order (weight, then bias), from the same
// generator.
Napi::Value ModuleWrap::ReplaceHeadLayer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ModulePtr m = Of(env, info.This(), "replaceHead");
  std::string path = info[0].As<Napi::String>();
  int64_t out = info[1].As<Napi::Number>().Int64Value();
  return Addon(env).executor->Run(
      env, "replaceHead",
      [m, path, out] {
        auto layer = Submodule(*m, path);
        at::Tensor w = layer.attr("weight").toTensor();
        if (w.dim() != 2 && w.dim() != 4) {
          throw std::runtime_error("'" + path + "' has a " + std::to_string(w.dim()) + "-D weight: it is not a Linear or Conv2d layer");
        }
        if (w.dim() == 4 && layer.hasattr("groups") && layer.attr("groups").isInt() && layer.attr("groups").toInt() != 1) {
          throw std::runtime_error("'" + path + "' is a grouped convolution: it cannot be a classification head");
        }
        std::vector<int64_t> shape = w.sizes().vec();
        shape[0] = out;
        int64_t fanIn = w.numel() / std::max<int64_t>(w.size(0), 1);
        NoGradGuard noGrad;
        auto opts = w.options().requires_grad(false);
        double bound = fanIn > 0 ? 1.0 / std::sqrt(double(fanIn)) : 0.0;
        at::Tensor nw = at::empty(shape, opts).uniform_(-bound, bound);
        layer.register_parameter("weight", nw.requires_grad_(true), false);
        if (layer.hasattr("bias") && layer.attr("bias").isTensor()) {
          at::Tensor nb = at::empty({out}, opts).uniform_(-bound, bound);
          layer.register_parameter("bias", nb.requires_grad_(true), false);
        }
        // Scripted Linear/Conv2d keep out_features/out_channels as class constants (only their repr
        // reads them); where an instance attribute holds it, it follows.
        for (const char* attr : {"out_features", "out_channels"}) {
          if (layer.hasattr(attr) && layer.type()->findConstantSlot(attr) == c10::nullopt) layer.setattr(attr, out);
        }
      });
}

// channelsLast(): 4-D parameters and buffers to the NHWC memory format (same values, same names).
Napi::Value ModuleWrap::ChannelsLast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ModulePtr m = Of(env, info.This(), "channelsLast");
  return Addon(env).executor->Run(
      env, "channelsLast",
      [m] {
        NoGradGuard ng;
        for (const auto& p : m->parameters(true)) {
          if (p.dim() == 4) const_cast<at::Tensor&>(p).set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
        }
        for (const auto& b : m->buffers(true)) {
          if (b.dim() == 4) const_cast<at::Tensor&>(b).set_data(b.contiguous(at::MemoryFormat::ChannelsLast));
        }
      });
}

Napi::Value ModuleWrap::Dispose(const Napi::CallbackInfo& info) {
  module_.reset();
  return info.Env().Undefined();
}

Napi::Value ModuleWrap::GetDisposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !module_);
}

}  // namespace finetorch
