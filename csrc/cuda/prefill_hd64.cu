// Prefill kernels for head size 64 (bf16, fp16; soft-cap; fp8 K/V). Torch-free.
#include "swa_ops/dispatch.h"
#ifdef SWA_OPS_WANT_HEAD_64
#include "swa_ops/prefill_launch.h"
SWA_OPS_INSTANTIATE_PREFILL(64)
#endif
