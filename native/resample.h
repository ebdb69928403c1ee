// PIL's resampling (Pillow's Resample.c, 8 bits per channel) on sharp's decoded pixels, off the
// main thread. See resample.cc.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>

namespace finetorch {

enum class Filter { kNearest, kBilinear, kBicubic, kLanczos };

// 'nearest' | 'bilinear' | 'bicubic' | 'lanczos'; throws a RangeError for another name.
Filter ParseFilter(Napi::Env env, const std::string& name);

// A whole-number argument from `min` to 2^24 of the native image function `fn`: throws a TypeError
// or RangeError naming `fn` and the argument otherwise.
int WholeArg(const Napi::Value& v, int min, const char* fn, const char* what);

// Resizes an 8-bit HWC image of C channels from inW x inH to outW x outH into `out`, as Pillow does.
void Resample(const uint8_t* in, int inW, int inH, int C, int outW, int outH, Filter f, uint8_t* out);

// resampleImage(data: Uint8Array (HWC), width, height, channels, outWidth, outHeight,
//               filter: 'nearest' | 'bilinear' | 'bicubic' | 'lanczos'): Promise<Uint8Array>
// The input is only read; the result is a new array. Runs on libuv's threadpool.
Napi::Value ResampleImage(const Napi::CallbackInfo& info);

}  // namespace finetorch
