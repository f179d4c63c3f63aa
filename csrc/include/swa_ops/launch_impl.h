// Definition of launch_decode<D>, included once per head size by csrc/cuda/decode_hd<D>.cu.
#pragma once

#include "swa_ops/decode_mma.h"
#include "swa_ops/launch.h"
#include "swa_ops/merge.h"

namespace swa_ops {

// Raises a kernel's dynamic shared-memory limit above the 48 KB default, once per device and
// size: `granted` must be distinct per kernel (kernels of one signature share a pointer type).
template <typename K>
cudaError_t allow_smem(K kernel, size_t bytes, size_t* granted) {
  int dev = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  if (dev < 64 && granted[dev] >= bytes) return cudaSuccess;
  // The const void* overload: HIP has no template one before ROCm 6.
  e = cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel),
                           cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(bytes));
  if (e == cudaSuccess && dev < 64) granted[dev] = bytes;
  return e;
}

template <typename K, typename P>
cudaError_t launch_pdl(K kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                       const P& p) {
#ifdef USE_ROCM
  // HIP has no programmatic dependent launch: a plain launch, stream order alone
  // (pdl_wait() and pdl_launch_dependents() are no-ops there).
  kernel<<<grid, block, smem, stream>>>(p);
#else
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  if (cudaLaunchKernelEx(&cfg, kernel, p) != cudaSuccess) {
    (void)cudaGetLastError();
    kernel<<<grid, block, smem, stream>>>(p);
  }
#endif
  return cudaGetLastError();
}

template <typename T, int D, bool SOFTCAP, bool KV8, bool PACKED>
cudaError_t launch_decode_typed(const DecodeParams& p, cudaStream_t stream) {
  using Tr = DecodeMmaTraits<D>;
  size_t smem = Tr::smem_bytes();
  int threads = Tr::kWarps * 32;
  auto kernel = decode_mma_kernel<T, D, SOFTCAP, KV8, PACKED>;
  static size_t granted[64] = {};  // one per template instance, indexed by device
  size_t* grant = granted;
  if constexpr (!PACKED && !KV8 && Tr::kQInRegs) {
    // Short partitions (p.allin_tiles > 0, chosen by the launcher): the ALLIN variant, with one
    // buffer per tile of the longest partition (never more than the rings: at most 3 per warp).
    static size_t granted_allin[64] = {};
    if (p.allin_tiles > 0) {
      kernel = decode_mma_kernel<T, D, SOFTCAP, false, false, true>;
      smem = Tr::allin_smem_bytes(p.allin_tiles);
      grant = granted_allin;
    }
  }
  if constexpr (!PACKED) {
    // Groups of <= 8 heads on the N side of the MMAs (swap_frag.h; the launcher's choice). Same
    // shared memory and grid as the ring kernel it replaces.
    static size_t granted_swap[64] = {};
    if (p.swap_ab && p.allin_tiles == 0) {
      kernel = decode_mma_kernel<T, D, SOFTCAP, KV8, false, false, true>;
      grant = granted_swap;
    }
  }
  if constexpr (!PACKED && kv_pair_head_size(D, KV8)) {
    // kv-head pairing (the launcher's choice, only with the swapped tile): its own ring
    // geometry (DecodeRingTraits) and a grid of kv-head pairs. Instantiated only for the head
    // sizes and cache kinds split.h pairs.
    static size_t granted_pair[64] = {};
    if (p.kv_pair) {
      kernel = decode_mma_kernel<T, D, SOFTCAP, KV8, false, false, true, true>;
      smem = DecodeRingTraits<D, KV8, true>::smem_bytes();
      grant = granted_pair;
    }
  }
#if !defined(USE_ROCM) && defined(SWA_OPS_SM90A)
  if constexpr (!PACKED && KV8 && D == 128) {
    // The fp8 TMA ring (p.kv_tma, tensor maps from the launcher): the swapped unpaired ring
    // kernel's grid and shared memory, its tiles box-copied.
    static size_t granted_tma[64] = {};
    if (p.kv_tma && p.swap_ab && !p.kv_pair && p.allin_tiles == 0) {
      kernel = decode_mma_kernel<T, D, SOFTCAP, KV8, false, false, true, false, true>;
      threads = decode_kernel_warps<D, true>() * 32;
      grant = granted_tma;
    }
  }
#endif
  cudaError_t e = allow_smem(kernel, smem, grant);
  if (e != cudaSuccess) return e;
  // Both kernels go out as programmatic dependents of their predecessor on the stream: their
  // CTAs can be scheduled while it drains, and each waits (griddepcontrol.wait) for its
  // predecessor's writes before reading anything. Plain launches where the attribute is refused.
  const int kv_units = p.kv_pair ? p.num_kv_heads / 2 : p.num_kv_heads;
  const dim3 grid(p.num_seqs * kv_units * p.head_chunks, p.num_parts);
  e = launch_pdl(kernel, grid, dim3(threads), smem, stream, p);
  if (e != cudaSuccess || p.num_parts == 1) return e;
  // One merge CTA per output row: (sequence, head), or (sequence, token < max_query_len, head).
  const int merge_rows = PACKED ? p.num_seqs * p.max_query_len * p.num_heads
                                : p.num_seqs * p.num_heads;
  return launch_pdl(merge_kernel<T, D, PACKED>, dim3(merge_rows), dim3(kMergeThreads), 0, stream,
                    p);
}

// Resident CTAs per SM of `kernel` with `threads` and `smem` bytes, queried once per device into
// cached[dev] (granted: the instance's allow_smem record); 1 where the query fails. Sizes the
// decode splits, so the grid stays a function of host-known values.
template <typename K>
int resident_ctas_per_sm(K kernel, int threads, size_t smem, int* cached, size_t* granted) {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 1;
  if (dev < 64 && cached[dev] > 0) return cached[dev];
  int n = 0;
  if (allow_smem(kernel, smem, granted) != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, smem) != cudaSuccess ||
      n < 1) {
    (void)cudaGetLastError();
    return 1;
  }
  if (dev < 64) cached[dev] = n;
  return n;
}

template <int D>
int decode_ctas_per_sm() {
  using Tr = DecodeMmaTraits<D>;
  static int cached[64] = {};
  static size_t granted[64] = {};
  // Every variant has the same footprint.
  return resident_ctas_per_sm(decode_mma_kernel<bf16_t, D, false>, Tr::kWarps * 32,
                              Tr::smem_bytes(), cached, granted);
}

// Occupancy of the kv-head-paired kernel (fp8 or 16-bit cache), which sizes the paired grid's
// split; the unpaired kernels' for head sizes that do not pair (never asked for: the launcher
// pairs only what kv_pair_head_size allows).
template <int D, bool KV8>
int decode_pair_ctas_per_sm_of() {
  if constexpr (!kv_pair_head_size(D, KV8)) {
    return decode_ctas_per_sm<D>();
  } else {
    static int cached[64] = {};
    static size_t granted[64] = {};
    return resident_ctas_per_sm(decode_mma_kernel<bf16_t, D, false, KV8, false, false, true, true>,
                                DecodeMmaTraits<D>::kWarps * 32,
                                DecodeRingTraits<D, KV8, true>::smem_bytes(), cached, granted);
  }
}

template <int D>
int decode_pair_ctas_per_sm(bool fp8) {
  return fp8 ? decode_pair_ctas_per_sm_of<D, true>() : decode_pair_ctas_per_sm_of<D, false>();
}

template <typename T, int D, bool PACKED>
cudaError_t launch_decode_f(const DecodeParams& p, cudaStream_t stream) {
  const bool cap = p.cap_post > 0.f;
  if (p.kv_fp8)
    return cap ? launch_decode_typed<T, D, true, true, PACKED>(p, stream)
               : launch_decode_typed<T, D, false, true, PACKED>(p, stream);
  return cap ? launch_decode_typed<T, D, true, false, PACKED>(p, stream)
             : launch_decode_typed<T, D, false, false, PACKED>(p, stream);
}

// p.query_start_loc set: the packed multi-token mode (decode_mma.h).
template <typename T, int D>
cudaError_t launch_decode_t(const DecodeParams& p, cudaStream_t stream) {
  return p.query_start_loc != nullptr ? launch_decode_f<T, D, true>(p, stream)
                                      : launch_decode_f<T, D, false>(p, stream);
}

template <int D>
cudaError_t launch_decode(const DecodeParams& p, cudaStream_t stream) {
  return p.dtype == DType::kBFloat16 ? launch_decode_t<bf16_t, D>(p, stream)
                                     : launch_decode_t<fp16_t, D>(p, stream);
}

}  // namespace swa_ops

// One line per head-size translation unit.
#define SWA_OPS_INSTANTIATE_DECODE(D)                                                      \
  template cudaError_t swa_ops::launch_decode<D>(const swa_ops::DecodeParams&, cudaStream_t); \
  template int swa_ops::decode_ctas_per_sm<D>();                                             \
  template int swa_ops::decode_pair_ctas_per_sm<D>(bool);
