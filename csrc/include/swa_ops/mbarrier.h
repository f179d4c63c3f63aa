// mbarrier and TMA primitives shared by the Hopper prefill kernel (prefill_ws.h) and the decode
// kernel's fp8 TMA ring (decode_mma.h). sm_90a only: elsewhere (other NVIDIA targets, AMD) they
// compile to nothing, and the kernels never reach them there.
#pragma once

#include "swa_ops/compat.h"
#include "swa_ops/params.h"  // TmaDesc
#include "swa_ops/wgmma.h"   // SWA_OPS_HAS_WGMMA

namespace swa_ops {

// --- Hopper synchronisation primitives (sm_90a only; empty elsewhere) -----------------------
// The empty forms name their arguments here (no unused-parameter warnings on AMD).
template <typename... A>
SWA_D void ignore_args(const A&...) {}
SWA_D uint32_t smem_u32(const void* p) {
#ifdef USE_ROCM
  (void)p;
  return 0;  // never called on AMD (the kernels that do are NVIDIA-only)
#else
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
#endif
}
SWA_D void mbar_init(uint64_t* bar, uint32_t count) {
#ifdef SWA_OPS_HAS_WGMMA
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count)
               : "memory");
#else
  ignore_args(bar, count);
#endif
}
SWA_D void mbar_init_fence() {
#ifdef SWA_OPS_HAS_WGMMA
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
// Barrier operations by shared-memory address (32 bits; the persistent loop's form): a base
// taken once plus 8 bytes per barrier stays in uniform registers, where a generic pointer is
// converted again per use once the ring position runs across items.
SWA_D void mbar_arrive_at(uint32_t a) {
#ifdef SWA_OPS_HAS_WGMMA
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(a) : "memory");
#else
  ignore_args(a);
#endif
}
SWA_D void mbar_arrive(uint64_t* bar) { mbar_arrive_at(smem_u32(bar)); }
// Arrives on `bar` once every cp.async this thread issued so far has completed; .noinc: the
// arrival is one of the count the barrier was initialised with.
SWA_D void mbar_arrive_cp_async(uint64_t* bar) {
#ifdef SWA_OPS_HAS_WGMMA
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(smem_u32(bar))
               : "memory");
#else
  ignore_args(bar);
#endif
}
// Blocks until the phase with this parity has completed.
SWA_D void mbar_wait_at(uint32_t a, uint32_t parity) {
#ifdef SWA_OPS_HAS_WGMMA
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(a), "r"(parity)
        : "memory");
  } while (!done);
#else
  ignore_args(a, parity);
#endif
}
SWA_D void mbar_wait(uint64_t* bar, uint32_t parity) { mbar_wait_at(smem_u32(bar), parity); }
// Adds `bytes` to the transaction count `bar`'s current phase waits for; ARRIVE: and arrives on
// it, in the same instruction (no arrival otherwise).
template <bool ARRIVE = false>
SWA_D void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
#ifdef SWA_OPS_HAS_WGMMA
  if constexpr (ARRIVE)
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)),
                 "r"(bytes)
                 : "memory");
  else
    asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)),
                 "r"(bytes)
                 : "memory");
#else
  ignore_args(bar, bytes);
#endif
}
// TMA: the box at coordinates (c0, c1, c2, c3) of the 4-D tensor map `map` (the generic address
// of a __grid_constant__ parameter) into shared memory at dst; its bytes count against `bar`'s
// transaction count when they land.
SWA_D void tma_load_4d(void* dst, const TmaDesc* map, int c0, int c1, int c2, int c3,
                       uint64_t* bar) {
#ifdef SWA_OPS_HAS_WGMMA
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(smem_u32(bar))
      : "memory");
#else
  ignore_args(dst, map, c0, c1, c2, c3, bar);
#endif
}

// The same with the L2 cache policy `pol` (compat.h's l2_policy: the decode's K/V stream).
SWA_D void tma_load_4d_hinted(void* dst, const TmaDesc* map, int c0, int c1, int c2, int c3,
                              uint64_t* bar, uint64_t pol) {
#ifdef SWA_OPS_HAS_WGMMA
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      ".L2::cache_hint [%0], [%1, {%2, %3, %4, %5}], [%6], %7;\n" ::"r"(smem_u32(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(smem_u32(bar)),
      "l"(pol)
      : "memory");
#else
  ignore_args(dst, map, c0, c1, c2, c3, bar, pol);
#endif
}

}  // namespace swa_ops
