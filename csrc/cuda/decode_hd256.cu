// Decode kernels for head size 256 (bf16, fp16; with and without soft-cap). Torch-free.
#include "swa_ops/dispatch.h"
#ifdef SWA_OPS_WANT_HEAD_256
#include "swa_ops/launch_impl.h"
SWA_OPS_INSTANTIATE_DECODE(256)
#endif
