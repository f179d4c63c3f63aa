// Definition of launch_prefill<D>, included once per head size by csrc/cuda/prefill_hd<D>.cu.
#pragma once

#include "swa_ops/launch.h"
#include "swa_ops/launch_impl.h"
#include "swa_ops/prefill_mma.h"
#if !defined(USE_ROCM) && defined(SWA_OPS_SM90A)
#include "swa_ops/prefill_ws.h"
#endif

namespace swa_ops {

// The plan kernel, then `kernel` (`threads` per CTA, `smem` bytes of dynamic shared memory;
// `granted`: the kernel instance's per-device record for allow_smem). Both go out as programmatic
// dependents: each waits for its predecessor's writes before reading anything (the cache write of
// this chunk, then the plan). The grid: p.grid_ctas x num_kv_heads, one CTA per (row tile, kv
// head) item; or, where the kernel loops over items (`resident` non-null: its per-device record
// of resident CTAs per SM) and p.num_sms > 0, a persistent grid of at most one CTA per slot.
// Both from host-known values only (shapes, the SM count, the kernel's occupancy): a captured
// graph replays with any query_start_loc and seq_lens the bound covers.
template <typename Kernel>
cudaError_t launch_plan_and_prefill(Kernel kernel, size_t smem, int threads, size_t* granted,
                                    const PrefillParams& p, cudaStream_t stream,
                                    int* resident = nullptr) {
  cudaError_t e = allow_smem(kernel, smem, granted);
  if (e != cudaSuccess) return e;
  e = launch_pdl(prefill_plan_kernel<kPrefillRows>, dim3(1), dim3(kPlanThreads), 0, stream, p);
  if (e != cudaSuccess || p.grid_ctas == 0) return e;
  dim3 grid(p.grid_ctas, p.num_kv_heads);
#ifndef USE_ROCM  // only the Hopper kernel loops over items
  if (resident != nullptr && p.num_sms > 0) {
    int dev = 0;
    e = cudaGetDevice(&dev);
    if (e != cudaSuccess) return e;
    int per_sm = dev < 64 ? resident[dev] : 0;
    if (per_sm == 0) {  // once per device: a query, no stream work (fine under capture)
      e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem);
      if (e != cudaSuccess) return e;
      per_sm = per_sm > 0 ? per_sm : 1;
      if (dev < 64) resident[dev] = per_sm;
    }
    const long items = static_cast<long>(p.grid_ctas) * p.num_kv_heads;
    const long slots = static_cast<long>(p.num_sms) * per_sm;
    grid = dim3(static_cast<unsigned>(items < slots ? items : slots), 1);
  }
#else
  (void)resident;
#endif
  return launch_pdl(kernel, grid, dim3(threads), smem, stream, p);
}

template <typename T, int D, bool SOFTCAP, bool KV8, bool WG>
cudaError_t launch_prefill_typed(const PrefillParams& p, cudaStream_t stream) {
  using Tr = PrefillTraits<D, WG>;
  static size_t granted[64] = {};  // one per template instance, indexed by device
  return launch_plan_and_prefill(prefill_mma_kernel<T, D, SOFTCAP, KV8, WG>, Tr::smem_bytes(),
                                 Tr::kThreads, granted, p, stream);
}

#if !defined(USE_ROCM) && defined(SWA_OPS_SM90A)
// The warp-specialized Hopper kernel (prefill_ws.h): same plan kernel, 384 threads per CTA. Its
// persistent instance where one is compiled (kWsPersistent) and p.num_sms > 0; the plain one
// otherwise, with the plain grid.
template <typename T, int D, bool SOFTCAP, bool OVERLAP>
cudaError_t launch_prefill_ws(const PrefillParams& p, cudaStream_t stream) {
  using Tr = PrefillWsTraits<D>;
  if constexpr (kWsPersistent<D, OVERLAP>) {
    if (p.num_sms > 0) {
      static size_t granted[64] = {};  // one per template instance, indexed by device
      static int resident[64] = {};     // CTAs per SM, likewise (the persistent grid's size)
      return launch_plan_and_prefill(prefill_ws_kernel<T, D, SOFTCAP, OVERLAP, true>,
                                     Tr::smem_bytes(true), Tr::kThreads, granted, p, stream,
                                     resident);
    }
  }
  static size_t granted[64] = {};  // one per template instance, indexed by device
  return launch_plan_and_prefill(prefill_ws_kernel<T, D, SOFTCAP, OVERLAP, false>,
                                 Tr::smem_bytes(), Tr::kThreads, granted, p, stream);
}
#endif

template <typename T, int D>
cudaError_t launch_prefill_t(const PrefillParams& p, cudaStream_t stream) {
  const bool cap = p.cap_post > 0.f;
  if (p.kv_fp8)
    return cap ? launch_prefill_typed<T, D, true, true, false>(p, stream)
               : launch_prefill_typed<T, D, false, true, false>(p, stream);
#if !defined(USE_ROCM) && defined(SWA_OPS_SM90A)
  if constexpr (D % 64 == 0) {
    if (p.wgmma && p.ws == 2)
      return cap ? launch_prefill_ws<T, D, true, true>(p, stream)
                 : launch_prefill_ws<T, D, false, true>(p, stream);
    if (p.wgmma && p.ws == 1)
      return cap ? launch_prefill_ws<T, D, true, false>(p, stream)
                 : launch_prefill_ws<T, D, false, false>(p, stream);
    if (p.wgmma)
      return cap ? launch_prefill_typed<T, D, true, false, true>(p, stream)
                 : launch_prefill_typed<T, D, false, false, true>(p, stream);
  }
#endif
  return cap ? launch_prefill_typed<T, D, true, false, false>(p, stream)
             : launch_prefill_typed<T, D, false, false, false>(p, stream);
}

template <int D>
cudaError_t launch_prefill(const PrefillParams& p, cudaStream_t stream) {
  return p.dtype == DType::kBFloat16 ? launch_prefill_t<bf16_t, D>(p, stream)
                                     : launch_prefill_t<fp16_t, D>(p, stream);
}

}  // namespace swa_ops

// One line per head-size translation unit.
#define SWA_OPS_INSTANTIATE_PREFILL(D) \
  template cudaError_t swa_ops::launch_prefill<D>(const swa_ops::PrefillParams&, cudaStream_t);
