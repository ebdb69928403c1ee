#include "generic_step.h"

#include "amp.h"
#include "executor.h"
#include "lora.h"
#include "optimizer.h"
#include "script_module.h"
#include "tensor.h"

namespace finetorch {

namespace {

// One positional argument: a tensor, or named tensors for a Dict[str, Tensor] parameter.
struct InputArg {
  SlotPtr tensor;
  std::vector<std::pair<std::string, SlotPtr>> named;
};

Amp ReadAmp(const Napi::Object& o) {
  Napi::Value v = o.Get("amp");
  return static_cast<Amp>(v.IsNumber() ? v.As<Napi::Number>().Int32Value() : 0);
}

}  // namespace

Napi::Value ForwardAutocast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ModulePtr m = ModuleWrap::Of(env, info[0], "forward");
  Napi::Array raw = info[1].As<Napi::Array>();
  std::vector<InputArg> inputs(raw.Length());
  for (uint32_t i = 0; i < raw.Length(); i++) {
    Napi::Value v = raw.Get(i);
    if (v.IsObject() && !v.As<Napi::Object>().InstanceOf(Addon(env).tensorCtor.Value())) {
      Napi::Object o = v.As<Napi::Object>();
      Napi::Array keys = o.GetPropertyNames();
      for (uint32_t k = 0; k < keys.Length(); k++) {
        std::string key = keys.Get(k).As<Napi::String>();
        inputs[i].named.emplace_back(key, TensorWrap::SlotOf(env, o.Get(key), "forward input '" + key + "'"));
      }
    } else {
      inputs[i].tensor = TensorWrap::SlotOf(env, v, "forward input");
    }
  }
  Napi::Object o = info[2].As<Napi::Object>();
  Amp amp = ReadAmp(o);
  std::string device = o.Get("device").IsString() ? o.Get("device").As<Napi::String>().Utf8Value() : "";
  return Addon(env).executor->Submit<Val>(
      env, "forward",
      [=] {
        AutoGradMode grad(true);
        LoraScope lora(*m);
        c10::Device dev = device.empty() ? c10::Device(c10::kCPU) : ParseDevice(device);
        std::vector<c10::IValue> args;
        for (const auto& in : inputs) {
          if (in.tensor) {
            at::Tensor x = in.tensor->get();
            args.emplace_back(x.device() == dev ? x : x.to(dev));
          } else {
            c10::Dict<std::string, at::Tensor> dict;
            for (const auto& [key, slot] : in.named) {
              at::Tensor x = slot->get();
              dict.insert(key, x.device() == dev ? x : x.to(dev));
            }
            args.emplace_back(dict);
          }
        }
        AutocastScope autocast(amp, dev);
        return FromIValue(m->forward(args));
      },
      [](Napi::Env env, Val& out) -> Napi::Value { return ToJs(env, out); });
}

Napi::Value ScaledBackward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  OptimizerPtr opt = OptimizerWrap::Of(env, info[0], "backward");
  SlotPtr loss = TensorWrap::SlotOf(env, info[1], "backward");
  Napi::Object o = info[2].As<Napi::Object>();
  double factor = o.Get("factor").As<Napi::Number>().DoubleValue();
  Amp amp = ReadAmp(o);
  return Addon(env).executor->Run(env, "backward", [=] {
    at::Tensor l = loss->get();
    if (amp == Amp::FP16) {
      opt->scaler.init(l.device());
      (l * factor * opt->scaler.scale).backward();
    } else {
      (factor == 1.0 ? l : l * factor).backward();
    }
  });
}

}  // namespace finetorch
