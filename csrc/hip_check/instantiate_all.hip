// HIP compile check (issue 7): every kernel template the library dispatches, compiled for AMD.
//
// Torch-free and never run: .ci/hip_check.sh compiles this file with hipcc -DUSE_ROCM for one
// Instinct target. It reaches the kernels the way the CUDA launchers do, through the same headers,
// so what they add is covered here without an edit to this file:
//   - decode (+ merge): launch_decode<D> for every head size D that dispatch.h's
//     dispatch_head_size() switches to (the list csrc/cuda/paged_attention.cu dispatches over);
//     launch_decode<D> (launch_impl.h) instantiates each dtype x feature variant of the kernels;
//   - prefill (+ its plan kernel): launch_prefill<D> (prefill_launch.h) for the same head sizes,
//     each dtype x feature variant;
//   - csrc/cuda/cache_write.cu itself (torch-free): reshape_and_cache for every source dtype x
//     cache kind, and the token map of multi-token queries.
// .ci/hip_check.sh then fails if a kernel the headers define for ROCm is not in the code object,
// so a kernel whose launcher lives elsewhere must be reached from here.
// Functions are referenced by address, not called, so a change to a launcher's parameters needs
// no change here.
#include "swa_ops/dispatch.h"
#include "swa_ops/launch_impl.h"
#include "swa_ops/prefill_launch.h"

#include "../cuda/cache_write.cu"

// External linkage and a volatile sink: both compiler passes keep, and code-generate, everything.
void swa_ops_hip_check_instantiate_all(int head_size) {
  swa_ops::dispatch_head_size(head_size, [](auto d) {
    volatile auto decode = &swa_ops::launch_decode<decltype(d)::value>;
    (void)decode;
    volatile auto prefill = &swa_ops::launch_prefill<decltype(d)::value>;
    (void)prefill;
  });
  volatile auto cache_write = &swa_ops::launch_cache_write;
  (void)cache_write;
}
