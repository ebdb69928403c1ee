// PIL's Image.resize on 8-bit interleaved images, bit for bit: what torchvision's Resize and
// RandomResizedCrop do to a PIL image. Bilinear, bicubic and lanczos are Pillow's separable
// convolution (ImagingResample): per output pixel a filter centred at (x + 0.5) * scale, its
// support widened by the scale when shrinking (antialiasing), taps outside the image dropped and
// the weights renormalised, 22-bit fixed-point weights computed in double as Pillow does, a
// horizontal pass (only over the rows the vertical pass reads) rounded to 8 bits, then a vertical
// pass. Nearest is ImagingScaleAffine's sampling. The sums are Pillow's int32 sums in another
// order (integer addition, so the same numbers); rows are accumulated whole so that the compiler
// vectorises the inner loops.
//
// The work runs on libuv's threadpool beside sharp's decodes: the main thread (where the JS port
// this replaces used to run) only hands over the buffers.
#include "resample.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace finetorch {
namespace {

constexpr int kPrecisionBits = 22;
constexpr int32_t kHalf = 1 << (kPrecisionBits - 1);

double Support(Filter f) {
  switch (f) {
    case Filter::kBilinear: return 1.0;
    case Filter::kBicubic: return 2.0;
    default: return 3.0;
  }
}

double Sinc(double x) {
  if (x == 0.0) return 1.0;
  x *= M_PI;
  return std::sin(x) / x;
}

double At(Filter f, double x) {
  switch (f) {
    case Filter::kBilinear:
      x = std::fabs(x);
      return x < 1.0 ? 1.0 - x : 0.0;
    case Filter::kBicubic: {
      constexpr double a = -0.5;
      x = std::fabs(x);
      if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
      if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
      return 0.0;
    }
    default:
      return x >= -3.0 && x < 3.0 ? Sinc(x) * Sinc(x / 3.0) : 0.0;
  }
}

// One axis: output i reads count[i] inputs from first[i] with weights k[i * ksize ...].
struct Taps {
  std::vector<int32_t> first, count, k;
  int ksize = 0;
};

// Pillow's precompute_coeffs then normalize_coeffs_8bpc.
Taps MakeTaps(int inSize, int outSize, Filter f) {
  const double scale = static_cast<double>(inSize) / outSize;
  const double filterScale = std::max(scale, 1.0);
  const double support = Support(f) * filterScale;
  Taps t;
  t.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  t.first.resize(outSize);
  t.count.resize(outSize);
  t.k.assign(static_cast<size_t>(outSize) * t.ksize, 0);
  std::vector<double> w(t.ksize);
  const double ss = 1.0 / filterScale;
  for (int xx = 0; xx < outSize; xx++) {
    const double center = (xx + 0.5) * scale;
    const int xmin = std::max(0, static_cast<int>(center - support + 0.5));
    const int n = std::min(inSize, static_cast<int>(center + support + 0.5)) - xmin;
    double sum = 0.0;
    for (int x = 0; x < n; x++) {
      w[x] = At(f, (x + xmin - center + 0.5) * ss);
      sum += w[x];
    }
    for (int x = 0; x < n; x++) {
      const double v = sum != 0.0 ? w[x] / sum : w[x];
      t.k[static_cast<size_t>(xx) * t.ksize + x] = static_cast<int32_t>(v < 0 ? -0.5 + v * (1 << kPrecisionBits) : 0.5 + v * (1 << kPrecisionBits));
    }
    t.first[xx] = xmin;
    t.count[xx] = n;
  }
  return t;
}

inline uint8_t Clip8(int32_t ss) {
  const int32_t v = ss >> kPrecisionBits;
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

// Rows [rowFirst, rowFirst + rows) of an HWC image along x to outW pixels.
template <int C>
void Horizontal(const uint8_t* in, int inW, int rowFirst, int rows, int outW, const Taps& t, uint8_t* out) {
  for (int y = 0; y < rows; y++) {
    const uint8_t* row = in + static_cast<size_t>(rowFirst + y) * inW * C;
    uint8_t* o = out + static_cast<size_t>(y) * outW * C;
    for (int xx = 0; xx < outW; xx++) {
      const int32_t* k = t.k.data() + static_cast<size_t>(xx) * t.ksize;
      const uint8_t* s = row + static_cast<size_t>(t.first[xx]) * C;
      const int n = t.count[xx];
      int32_t acc[C];
      for (int c = 0; c < C; c++) acc[c] = kHalf;
      for (int x = 0; x < n; x++) {
        for (int c = 0; c < C; c++) acc[c] += s[x * C + c] * k[x];
      }
      for (int c = 0; c < C; c++) o[xx * C + c] = Clip8(acc[c]);
    }
  }
}

void HorizontalAny(const uint8_t* in, int inW, int C, int rowFirst, int rows, int outW, const Taps& t, uint8_t* out) {
  switch (C) {
    case 1: return Horizontal<1>(in, inW, rowFirst, rows, outW, t, out);
    case 3: return Horizontal<3>(in, inW, rowFirst, rows, outW, t, out);
    case 4: return Horizontal<4>(in, inW, rowFirst, rows, outW, t, out);
    default: {
      for (int y = 0; y < rows; y++) {
        const uint8_t* row = in + static_cast<size_t>(rowFirst + y) * inW * C;
        uint8_t* o = out + static_cast<size_t>(y) * outW * C;
        for (int xx = 0; xx < outW; xx++) {
          const int32_t* k = t.k.data() + static_cast<size_t>(xx) * t.ksize;
          for (int c = 0; c < C; c++) {
            int32_t acc = kHalf;
            const uint8_t* s = row + static_cast<size_t>(t.first[xx]) * C + c;
            for (int x = 0; x < t.count[xx]; x++) acc += s[x * C] * k[x];
            o[xx * C + c] = Clip8(acc);
          }
        }
      }
    }
  }
}

// An image of rowLength values per row along y; row 0 of `in` is input row `rowOffset`.
void Vertical(const uint8_t* in, int rowLength, int rowOffset, int outH, const Taps& t, uint8_t* out) {
  std::vector<int32_t> acc(rowLength);
  for (int yy = 0; yy < outH; yy++) {
    const int32_t* k = t.k.data() + static_cast<size_t>(yy) * t.ksize;
    std::fill(acc.begin(), acc.end(), kHalf);
    for (int y = 0; y < t.count[yy]; y++) {
      const uint8_t* s = in + static_cast<size_t>(t.first[yy] - rowOffset + y) * rowLength;
      const int32_t w = k[y];
      int32_t* a = acc.data();
      for (int i = 0; i < rowLength; i++) a[i] += s[i] * w;
    }
    uint8_t* o = out + static_cast<size_t>(yy) * rowLength;
    for (int i = 0; i < rowLength; i++) o[i] = Clip8(acc[i]);
  }
}

// Pillow's ImagingScaleAffine sampling: the source position starts at half a step and
// accumulates the step in double, truncated.
void Nearest(const uint8_t* in, int inW, int inH, int C, int outW, int outH, uint8_t* out) {
  const double sx = static_cast<double>(inW) / outW;
  const double sy = static_cast<double>(inH) / outH;
  std::vector<int> xin(outW);
  double xo = sx * 0.5;
  for (int x = 0; x < outW; x++, xo += sx) xin[x] = std::min(inW - 1, static_cast<int>(xo));
  double yo = sy * 0.5;
  for (int y = 0; y < outH; y++, yo += sy) {
    const uint8_t* row = in + static_cast<size_t>(std::min(inH - 1, static_cast<int>(yo))) * inW * C;
    uint8_t* o = out + static_cast<size_t>(y) * outW * C;
    for (int x = 0; x < outW; x++) std::memcpy(o + x * C, row + static_cast<size_t>(xin[x]) * C, C);
  }
}

class ResampleWorker : public Napi::AsyncWorker {
 public:
  ResampleWorker(Napi::Env env, Napi::Uint8Array in, Napi::Uint8Array out, int w, int h, int c, int ow, int oh, Filter f)
      : Napi::AsyncWorker(env, "finetorch.resampleImage"),
        deferred_(Napi::Promise::Deferred::New(env)),
        inRef_(Napi::Persistent(in)), outRef_(Napi::Persistent(out)),
        in_(in.Data()), out_(out.Data()), w_(w), h_(h), c_(c), ow_(ow), oh_(oh), f_(f) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      Resample(in_, w_, h_, c_, ow_, oh_, f_, out_);
    } catch (const std::exception& e) {
      SetError(std::string("resample: ") + e.what());
    }
  }
  void OnOK() override { deferred_.Resolve(outRef_.Value()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::Reference<Napi::Uint8Array> inRef_, outRef_;  // alive while the pool works on them
  const uint8_t* in_;
  uint8_t* out_;
  int w_, h_, c_, ow_, oh_;
  Filter f_;
};

}  // namespace

void Resample(const uint8_t* in, int inW, int inH, int C, int outW, int outH, Filter f, uint8_t* out) {
  if (f == Filter::kNearest) return Nearest(in, inW, inH, C, outW, outH, out);
  const bool alongX = outW != inW;
  const bool alongY = outH != inH;
  if (!alongX && !alongY) {
    std::memcpy(out, in, static_cast<size_t>(inW) * inH * C);
    return;
  }
  if (!alongY) return HorizontalAny(in, inW, C, 0, inH, outW, MakeTaps(inW, outW, f), out);
  const Taps v = MakeTaps(inH, outH, f);
  if (!alongX) return Vertical(in, inW * C, 0, outH, v, out);
  // As Pillow: only the rows the vertical pass reads go through the horizontal pass.
  const int rowFirst = v.first[0];
  const int rowEnd = v.first[outH - 1] + v.count[outH - 1];
  std::vector<uint8_t> mid(static_cast<size_t>(rowEnd - rowFirst) * outW * C);
  HorizontalAny(in, inW, C, rowFirst, rowEnd - rowFirst, outW, MakeTaps(inW, outW, f), mid.data());
  Vertical(mid.data(), outW * C, rowFirst, outH, v, out);
}

int WholeArg(const Napi::Value& v, int min, const char* fn, const char* what) {
  if (!v.IsNumber()) throw Napi::TypeError::New(v.Env(), std::string(fn) + ": " + what + " must be a number");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= min && d <= (1 << 24) && std::floor(d) == d)) {
    throw Napi::RangeError::New(v.Env(), std::string(fn) + ": " + what + " must be a whole number from " + std::to_string(min) +
                                             ", got " + v.ToString().Utf8Value());
  }
  return static_cast<int>(d);
}

Filter ParseFilter(Napi::Env env, const std::string& name) {
  if (name == "nearest") return Filter::kNearest;
  if (name == "bilinear") return Filter::kBilinear;
  if (name == "bicubic") return Filter::kBicubic;
  if (name == "lanczos") return Filter::kLanczos;
  throw Napi::RangeError::New(env, "resample: unknown filter '" + name + "' (nearest, bilinear, bicubic, lanczos)");
}

Napi::Value ResampleImage(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 7 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(env, "resample: expected (data: Uint8Array, width, height, channels, outWidth, outHeight, filter)");
  }
  auto in = info[0].As<Napi::Uint8Array>();
  const int w = WholeArg(info[1], 1, "resample", "width");
  const int h = WholeArg(info[2], 1, "resample", "height");
  const int c = WholeArg(info[3], 1, "resample", "channels");
  const int ow = WholeArg(info[4], 1, "resample", "outWidth");
  const int oh = WholeArg(info[5], 1, "resample", "outHeight");
  const Filter f = ParseFilter(env, info[6].ToString().Utf8Value());
  if (in.ElementLength() != static_cast<size_t>(w) * h * c) {
    throw Napi::RangeError::New(env, "resample: " + std::to_string(in.ElementLength()) + " bytes are not a " +
                                         std::to_string(w) + "x" + std::to_string(h) + "x" + std::to_string(c) + " image");
  }
  auto out = Napi::Uint8Array::New(env, static_cast<size_t>(ow) * oh * c);
  auto* worker = new ResampleWorker(env, in, out, w, h, c, ow, oh, f);
  Napi::Promise promise = worker->Promise();
  worker->Queue();  // deletes itself after OnOK/OnError
  return promise;
}

}  // namespace finetorch
