// The DataLoader's image batches. Each decoded image is 8-bit HWC (sharp's raw output); every
// channel has a 256-entry table that maps a byte to its final float (ToTensor's /255 and Normalize
// folded together), and a left-right flip is applied by the write order. The work runs on libuv's
// threadpool, so neither the main thread nor the executor (busy training) spends time on it, and
// the pixels go straight into the batch tensor's memory: no JS loop, no intermediate buffer.
#include "collate.h"

#include "tensor.h"

#include <torch/cuda.h>

namespace finetorch {
namespace {

struct Image {
  const uint8_t* data;
  const float* luts;  // C x 256
  bool mirrored;
};

void WriteCHW(const Image& img, int64_t C, int64_t H, int64_t W, float* out) {
  const int64_t plane = H * W;
  for (int64_t y = 0; y < H; y++) {
    const uint8_t* row = img.data + y * W * C;
    for (int64_t c = 0; c < C; c++) {
      const float* lut = img.luts + c * 256;
      float* o = out + c * plane + y * W;
      const uint8_t* s = row + c;
      if (!img.mirrored) {
        for (int64_t x = 0; x < W; x++) o[x] = lut[s[x * C]];
      } else {
        for (int64_t x = 0; x < W; x++) o[W - 1 - x] = lut[s[x * C]];
      }
    }
  }
}

class CollateWorker : public Napi::AsyncWorker {
 public:
  CollateWorker(Napi::Env env, std::vector<Image> images, std::vector<Napi::ObjectReference> keep,
                int64_t C, int64_t H, int64_t W, bool pin)
      : Napi::AsyncWorker(env, "finetorch.collateImages"),
        deferred_(Napi::Promise::Deferred::New(env)),
        images_(std::move(images)),
        keep_(std::move(keep)),
        C_(C), H_(H), W_(W), pin_(pin) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      const int64_t B = static_cast<int64_t>(images_.size());
      out_ = HostTensor({B, C_, H_, W_}, at::kFloat, pin_);
      float* base = out_.data_ptr<float>();
      for (int64_t b = 0; b < B; b++) WriteCHW(images_[b], C_, H_, W_, base + b * C_ * H_ * W_);
    } catch (...) {
      SetError("DataLoader: could not assemble a batch: " + ExceptionMessage(std::current_exception()));
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    try {
      auto slot = std::make_shared<Slot>();
      slot->t = out_;
      deferred_.Resolve(TensorWrap::New(env, slot, Meta::Of(out_)));
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::vector<Image> images_;
  std::vector<Napi::ObjectReference> keep_;  // the JS buffers stay alive while the pool reads them
  int64_t C_, H_, W_;
  bool pin_;
  at::Tensor out_;
};

}  // namespace

Napi::Value CollateImages(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, "DataLoader", [&]() -> Napi::Value {
    auto list = info[0].As<Napi::Array>();
    auto shape = info[1].As<Napi::Array>();
    const int64_t C = shape.Get(0u).As<Napi::Number>().Int64Value();
    const int64_t H = shape.Get(1u).As<Napi::Number>().Int64Value();
    const int64_t W = shape.Get(2u).As<Napi::Number>().Int64Value();
    bool pin = info[2].ToBoolean() && torch::cuda::is_available();
    if (C <= 0 || H <= 0 || W <= 0 || list.Length() == 0) throw Napi::Error::New(env, "DataLoader: empty image batch");
    std::vector<Image> images;
    std::vector<Napi::ObjectReference> keep;
    for (uint32_t i = 0; i < list.Length(); i++) {
      auto item = list.Get(i).As<Napi::Object>();
      auto data = item.Get("data").As<Napi::Uint8Array>();
      auto luts = item.Get("luts").As<Napi::Float32Array>();
      if (static_cast<int64_t>(data.ElementLength()) != C * H * W || static_cast<int64_t>(luts.ElementLength()) != C * 256) {
        throw Napi::Error::New(env, "DataLoader: image " + std::to_string(i) + " does not have the batch's shape");
      }
      images.push_back({data.Data(), luts.Data(), item.Get("mirrored").ToBoolean()});
      keep.push_back(Napi::Persistent(item));
    }
    auto* worker = new CollateWorker(env, std::move(images), std::move(keep), C, H, W, pin);
    Napi::Promise promise = worker->Promise();
    worker->Queue();  // deletes itself after OnOK/OnError
    return promise;
  });
}

}  // namespace finetorch
