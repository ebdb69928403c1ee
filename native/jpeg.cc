// JPEG decoding with libjpeg-turbo, as PIL does it (the same library on Debian, the same defaults:
// islow IDCT, fancy upsampling, block smoothing), so the pixels are torchvision's. What PIL does
// not do: only the crop is decoded. jpeg_crop_scanline decodes the columns of the iMCUs the crop
// touches, jpeg_skip_scanlines skips the rows above it without IDCT or colour conversion, and the
// rows below it are never read. One iMCU of margin is kept on each side where the image has one,
// so fancy upsampling at the crop's edges sees the same neighbours as in a full decode. Then the
// crop is resized by Pillow's algorithm (resample.cc) in the same task: one hand-off per image
// from the main thread, no libvips pipeline (whose thread hand-offs and allocations cost more than
// the decode of a 500x375 JPEG).
#include "jpeg.h"

#ifdef FINETORCH_JPEG

#include "resample.h"

#include <algorithm>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <jpeglib.h>
#include <jerror.h>

namespace finetorch {
namespace {

struct ErrorManager {
  jpeg_error_mgr pub;
  jmp_buf jump;
  bool warned;
  bool cutShort;  // "Premature end of JPEG file"
};

void OnError(j_common_ptr cinfo) {
  longjmp(reinterpret_cast<ErrorManager*>(cinfo->err)->jump, 1);
}

void OnMessage(j_common_ptr cinfo, int level) {
  if (level >= 0) return;
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  err->warned = true;
  if (cinfo->err->msg_code == JWRN_JPEG_EOF) err->cutShort = true;
}

// A JPEG stream ends with EOI (FF D9), maybe followed by padding. A file cut short does not, and
// PIL refuses it; libjpeg only notices when it reads that far, which a crop may not. A file
// without it at the end (cut short, or with data after EOI, which PIL accepts) is read whole.
bool EndsWithEoi(const uint8_t* data, size_t size) {
  size_t end = size;
  while (end > 2 && (data[end - 1] == 0 || data[end - 1] == 0xFF) && !(data[end - 2] == 0xFF && data[end - 1] == 0xD9)) end--;
  return end >= 2 && data[end - 2] == 0xFF && data[end - 1] == 0xD9;
}

struct Request {
  const uint8_t* bytes;
  size_t size;
  int left, top, width, height;  // the crop, inside the image
};

enum class Outcome { kDecoded, kElsewhere, kCutShort };

// Decodes the crop as RGB into `out` (width * height * 3); `whole`: reads every row to the end of
// the stream. kElsewhere: not decodable cleanly here (another decoder reports why); kCutShort:
// the stream ends before the image does. The only objects alive across the setjmp are in this
// frame (libjpeg's errors longjmp back to it), so none of their destructors is skipped.
Outcome DecodeCrop(const Request& r, bool whole, uint8_t* out) {
  jpeg_decompress_struct cinfo;
  ErrorManager err;
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = OnError;
  err.pub.emit_message = OnMessage;
  err.warned = false;
  err.cutShort = false;
  // The widest row jpeg_crop_scanline can return: the crop, an iMCU (at most 32 pixels) of margin
  // each side, and up to an iMCU more where it aligns the start down.
  std::vector<uint8_t> rowBuffer((static_cast<size_t>(r.width) + 4 * 32) * 3);
  JSAMPROW row = rowBuffer.data();
  if (setjmp(err.jump)) {
    jpeg_destroy_decompress(&cinfo);
    return err.cutShort ? Outcome::kCutShort : Outcome::kElsewhere;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, const_cast<unsigned char*>(r.bytes), static_cast<unsigned long>(r.size));
  jpeg_read_header(&cinfo, TRUE);
  const bool colour = cinfo.jpeg_color_space == JCS_YCbCr || cinfo.jpeg_color_space == JCS_RGB;
  if ((!colour && cinfo.jpeg_color_space != JCS_GRAYSCALE) || err.warned ||
      r.left + r.width > static_cast<int>(cinfo.image_width) || r.top + r.height > static_cast<int>(cinfo.image_height)) {
    jpeg_destroy_decompress(&cinfo);
    return err.cutShort ? Outcome::kCutShort : Outcome::kElsewhere;
  }
  cinfo.out_color_space = JCS_RGB;  // greyscale too: R = G = B, as PIL's convert('RGB')
  jpeg_start_decompress(&cinfo);
  // The crop's columns with an iMCU of margin each side (jpeg_crop_scanline aligns the start down).
  const int imcuW = cinfo.max_h_samp_factor * DCTSIZE;
  const int imcuH = cinfo.max_v_samp_factor * DCTSIZE;
  const int x0 = std::max(0, r.left - imcuW);
  const int x1 = std::min(static_cast<int>(cinfo.output_width), r.left + r.width + imcuW);
  JDIMENSION xoff = static_cast<JDIMENSION>(x0);
  JDIMENSION cropW = static_cast<JDIMENSION>(x1 - x0);
  if (xoff > 0 || cropW < cinfo.output_width) jpeg_crop_scanline(&cinfo, &xoff, &cropW);
  const int skip = whole ? 0 : std::max(0, r.top - imcuH);
  if (skip > 0 && jpeg_skip_scanlines(&cinfo, static_cast<JDIMENSION>(skip)) != static_cast<JDIMENSION>(skip)) longjmp(err.jump, 1);
  if (static_cast<size_t>(cinfo.output_width) * 3 > rowBuffer.size()) longjmp(err.jump, 1);
  const size_t from = static_cast<size_t>(r.left - static_cast<int>(xoff)) * 3;
  for (int y = skip; y < r.top + r.height; y++) {
    if (jpeg_read_scanlines(&cinfo, &row, 1) != 1) longjmp(err.jump, 1);
    if (y >= r.top) std::memcpy(out + static_cast<size_t>(y - r.top) * r.width * 3, row + from, static_cast<size_t>(r.width) * 3);
  }
  if (whole) {
    while (cinfo.output_scanline < cinfo.output_height) {
      if (jpeg_read_scanlines(&cinfo, &row, 1) != 1) longjmp(err.jump, 1);
    }
    jpeg_finish_decompress(&cinfo);
  }
  const Outcome outcome = err.cutShort ? Outcome::kCutShort : err.warned ? Outcome::kElsewhere : Outcome::kDecoded;
  jpeg_destroy_decompress(&cinfo);  // unless `whole`, the rows below the crop are never decoded
  return outcome;
}

class DecodeWorker : public Napi::AsyncWorker {
 public:
  DecodeWorker(Napi::Env env, Napi::Uint8Array bytes, Napi::Uint8Array out, Request r, int outW, int outH, Filter f)
      : Napi::AsyncWorker(env, "finetorch.decodeJpeg"),
        deferred_(Napi::Promise::Deferred::New(env)),
        bytesRef_(Napi::Persistent(bytes)), outRef_(Napi::Persistent(out)), out_(out.Data()),
        r_(r), outW_(outW), outH_(outH), f_(f) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      const bool whole = !EndsWithEoi(r_.bytes, r_.size);
      const bool resize = outW_ != r_.width || outH_ != r_.height;
      std::vector<uint8_t> crop(resize ? static_cast<size_t>(r_.width) * r_.height * 3 : 0);
      outcome_ = DecodeCrop(r_, whole, resize ? crop.data() : out_);
      if (outcome_ == Outcome::kCutShort) SetError("image file is truncated (the JPEG data ends before the image does)");
      if (outcome_ == Outcome::kDecoded && resize) Resample(crop.data(), r_.width, r_.height, 3, outW_, outH_, f_, out_);
    } catch (const std::exception& e) {
      SetError(std::string("decodeJpeg: ") + e.what());
    }
  }
  void OnOK() override { deferred_.Resolve(outcome_ == Outcome::kDecoded ? outRef_.Value() : Env().Null()); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::Reference<Napi::Uint8Array> bytesRef_, outRef_;  // alive while the pool works on them
  uint8_t* out_;
  Request r_;
  int outW_, outH_;
  Filter f_;
  Outcome outcome_ = Outcome::kElsewhere;
};

}  // namespace

Napi::Value DecodeJpeg(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 8 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(env, "decodeJpeg: expected (bytes: Uint8Array, left, top, width, height, outWidth, outHeight, filter)");
  }
  auto bytes = info[0].As<Napi::Uint8Array>();
  Request r{bytes.Data(), bytes.ElementLength(), WholeArg(info[1], 0, "decodeJpeg", "left"), WholeArg(info[2], 0, "decodeJpeg", "top"),
            WholeArg(info[3], 1, "decodeJpeg", "width"), WholeArg(info[4], 1, "decodeJpeg", "height")};
  const int outW = WholeArg(info[5], 1, "decodeJpeg", "outWidth");
  const int outH = WholeArg(info[6], 1, "decodeJpeg", "outHeight");
  const Filter f = ParseFilter(env, info[7].ToString().Utf8Value());
  auto out = Napi::Uint8Array::New(env, static_cast<size_t>(outW) * outH * 3);
  auto* worker = new DecodeWorker(env, bytes, out, r, outW, outH, f);
  Napi::Promise promise = worker->Promise();
  worker->Queue();  // deletes itself after OnOK/OnError
  return promise;
}

}  // namespace finetorch

#endif  // FINETORCH_JPEG
