// JPEG decoding by libjpeg-turbo, the library PIL decodes with, straight into a crop (and PIL's
// resize of it) on libuv's threadpool. See jpeg.cc.
#pragma once

#include <napi.h>

namespace finetorch {

// decodeJpeg(bytes: Uint8Array, left, top, width, height, outWidth, outHeight, filter):
//   Promise<Uint8Array | null>: the crop [left, top, width, height] of the decoded image as 8-bit
//   RGB (HWC), resized to outWidth x outHeight with PIL's filter when those differ from the crop's
//   size. null when the file is one libjpeg does not decode cleanly here (CMYK, a warning): the
//   caller then decodes it another way (sharp), which reports what is wrong. Rejected when the
//   data ends before the image does (PIL's "image file is truncated"), whatever the crop.
// Absent when finetorch was built without libjpeg's headers.
Napi::Value DecodeJpeg(const Napi::CallbackInfo& info);

}  // namespace finetorch
