{
  "targets": [
    {
      "target_name": "finetorch",
      "sources": [
        "native/addon.cc", "native/amp.cc", "native/blas.cc", "native/code_check.cc", "native/collate.cc", "native/common.cc", "native/cpu_kernels.cc", "native/ddp.cc", "native/device.cc", "native/distributed.cc", "native/executor.cc", "native/fused_adamw.cc", "native/generic_step.cc", "native/jpeg.cc", "native/lora.cc", "native/malloc_tuning.cc", "native/memory_stats.cc", "native/optimizer.cc", "native/predictor.cc", "native/resample.cc", "native/runtime.cc", "native/script_module.cc", "native/tensor.cc", "native/tensor_ops.cc", "native/train_step.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "<!@(node scripts/find-libtorch --include)",
        "native/shim"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS", "NODE_ADDON_API_CPP_EXCEPTIONS_ALL", "<!@(node scripts/find-libjpeg --defines)"],
      "cflags!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti", "-std=gnu++17", "-std=gnu++20"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-frtti", "-fopenmp", "-ffp-contract=off", "-Wno-unused-parameter", "-Wno-missing-field-initializers", "<!@(node scripts/find-libtorch --cxxflags)"],
      "ldflags": [
        "-Wl,--no-as-needed",
        "-L<!(node scripts/find-libtorch --libdir)",
        "-Wl,-rpath,<!(node scripts/find-libtorch --libdir)"
      ],
      "libraries": ["<!@(node scripts/find-libtorch --libs)", "<!@(node scripts/find-libjpeg --libs)"]
    }
  ]
}
