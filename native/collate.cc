// The DataLoader's batches assembled natively. gatherRows: a batch of an in-memory dataset
// (TensorDataset, FashionMNIST) is rows of two big JS arrays, copied by index in one call, instead
// of one JS sample object and one write per row. collateImages: the DataLoader's image batches. Each decoded image is 8-bit HWC (sharp's raw output); every
// channel has a 256-entry table that maps a byte to its final float (ToTensor's /255 and Normalize
// folded together), and a left-right flip is applied by the write order. The work runs on libuv's
// threadpool, so neither the main thread nor the executor (busy training) spends time on it, and
// the pixels go straight into the batch tensor's memory: no JS loop, no intermediate buffer.
#include "collate.h"

#include "tensor.h"

#include <torch/cuda.h>

#include <cstring>

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

Napi::Value GatherRows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guard(env, "DataLoader", [&]() -> Napi::Value {
    auto src = info[0].As<Napi::TypedArray>();
    auto srcType = ParseDtype(info[1].As<Napi::String>());
    auto shapeArg = info[2].As<Napi::Array>();
    auto indices = info[3].As<Napi::Uint32Array>();
    const bool mapped = info[4].IsTypedArray();
    auto targets = info[5].As<Napi::BigInt64Array>();
    const bool pin = info[6].ToBoolean() && torch::cuda::is_available();

    std::vector<int64_t> shape{static_cast<int64_t>(indices.ElementLength())};
    for (uint32_t i = 0; i < shapeArg.Length(); i++) shape.push_back(shapeArg.Get(i).As<Napi::Number>().Int64Value());
    const int64_t B = shape[0];
    const int64_t row = c10::multiply_integers(shape.begin() + 1, shape.end());
    const size_t elem = c10::elementSize(srcType);
    if (B == 0 || row <= 0 || src.ByteLength() % (row * elem) != 0) throw Napi::Error::New(env, "DataLoader: the dataset's arrays do not hold whole rows");
    const int64_t N = static_cast<int64_t>(src.ByteLength() / (row * elem));
    if (static_cast<int64_t>(targets.ElementLength()) != N) throw Napi::Error::New(env, "DataLoader: the dataset has " + std::to_string(N) + " inputs but " + std::to_string(targets.ElementLength()) + " targets");
    const uint32_t* idx = indices.Data();
    for (int64_t b = 0; b < B; b++) {
      if (idx[b] >= N) throw Napi::Error::New(env, "DataLoader: index " + std::to_string(idx[b]) + " is out of range [0, " + std::to_string(N) + ")");
    }
    // The view's own data pointer: also right for a SharedArrayBuffer, which has no ArrayBuffer().
    void* data = nullptr;
    napi_get_typedarray_info(env, src, nullptr, nullptr, &data, nullptr, nullptr);
    const auto* base = static_cast<const uint8_t*>(data);

    at::Tensor input;
    if (mapped) {
      // 8-bit planes [C, ...] through each channel's table (ToTensor's /255 and Normalize), as collateImages.
      auto luts = info[4].As<Napi::Float32Array>();
      const int64_t C = shape.size() > 1 ? shape[1] : 1;
      if (srcType != at::kByte || static_cast<int64_t>(luts.ElementLength()) != C * 256 || row % C != 0) {
        throw Napi::Error::New(env, "DataLoader: tables need 8-bit rows and 256 entries per channel");
      }
      input = HostTensor(shape, at::kFloat, pin);
      float* out = input.data_ptr<float>();
      const int64_t plane = row / C;
      for (int64_t b = 0; b < B; b++) {
        const uint8_t* s = base + static_cast<int64_t>(idx[b]) * row;
        float* o = out + b * row;
        for (int64_t c = 0; c < C; c++) {
          const float* lut = luts.Data() + c * 256;
          for (int64_t k = c * plane; k < (c + 1) * plane; k++) o[k] = lut[s[k]];
        }
      }
    } else {
      input = HostTensor(shape, srcType, pin);
      auto* out = static_cast<uint8_t*>(input.data_ptr());
      const size_t bytes = row * elem;
      for (int64_t b = 0; b < B; b++) std::memcpy(out + b * bytes, base + static_cast<size_t>(idx[b]) * bytes, bytes);
    }
    at::Tensor target = HostTensor({B}, at::kLong, pin);
    int64_t* t = target.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; b++) t[b] = targets.Data()[idx[b]];

    auto wrap = [&](const at::Tensor& x) {
      auto slot = std::make_shared<Slot>();
      slot->t = x;
      return TensorWrap::New(env, slot, Meta::Of(x));
    };
    Napi::Array result = Napi::Array::New(env, 2);
    result.Set(0u, wrap(input));
    result.Set(1u, wrap(target));
    return result;
  });
}

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
