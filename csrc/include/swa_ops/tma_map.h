// Host side of the prefill kernel's TMA copies (prefill_ws.h): a tensor map of a paged K or V
// cache. Torch-free; NVIDIA only (the AMD build never includes it).
//
// The cache [num_blocks, block_size, num_kv_heads, D] (any element strides, D contiguous) is
// described as a 4-D tensor (D, kv head, token, block), innermost first, so a box of
// {128 bytes, 1, 16, 1} is 16 consecutive tokens of one kv head and one block, 128 bytes wide
// (64 16-bit or 128 fp8 elements): with the 128-byte swizzle it lands as 16 rows of 128 bytes,
// chunk c of row r at c ^ (r % 8), i.e. the prefill ring's tile_offset<D, true> layout (64-element
// column blocks) and the decode fp8 TMA ring's rows (decode_mma.h). The kernel copies
// 16-token groups that start at a multiple of 16 of a block of at least 16 tokens, so a box never
// leaves its block.
#pragma once

#ifndef USE_ROCM
#include <cuda.h>
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled_v12000
#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "swa_ops/params.h"

namespace swa_ops {

// cuTensorMapEncodeTiled through the runtime's driver entry point (no link against libcuda);
// nullptr where the driver lacks it. Looked up once.
inline PFN_cuTensorMapEncodeTiled_v12000 tma_encode_fn() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault,
                                         &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess)
      f = nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// The inputs a map is a pure function of: equal keys encode byte-identical maps, so a map found
// under its key is exactly what encoding again would give (a new tensor at a freed one's address
// with the same geometry gets the same map).
struct TmaMapKey {
  const void* base;
  int elem_bytes, head_size, num_kv_heads, block_size;
  int64_t num_blocks, stride_head, stride_tok, stride_block;
  int promo;
  bool operator==(const TmaMapKey& o) const {
    return base == o.base && elem_bytes == o.elem_bytes && head_size == o.head_size &&
           num_kv_heads == o.num_kv_heads && block_size == o.block_size &&
           num_blocks == o.num_blocks && stride_head == o.stride_head &&
           stride_tok == o.stride_tok && stride_block == o.stride_block && promo == o.promo;
  }
};

// The last kTmaMapCacheSize maps encoded (round-robin replacement), so steady-state calls (the
// same caches step after step, K and V of each layer) skip cuTensorMapEncodeTiled on the host.
// Shared by all threads under a mutex; only successful encodes are kept.
constexpr int kTmaMapCacheSize = 64;
struct TmaMapCache {
  std::mutex mu;
  TmaMapKey keys[kTmaMapCacheSize];
  TmaDesc maps[kTmaMapCacheSize];
  int size = 0, next = 0;
  bool find(const TmaMapKey& k, TmaDesc& out) {
    std::lock_guard<std::mutex> g(mu);
    for (int i = 0; i < size; ++i)
      if (keys[i] == k) {
        out = maps[i];
        return true;
      }
    return false;
  }
  void put(const TmaMapKey& k, const TmaDesc& m) {
    std::lock_guard<std::mutex> g(mu);
    keys[next] = k;
    maps[next] = m;
    next = (next + 1) % kTmaMapCacheSize;
    if (size < kTmaMapCacheSize) ++size;
  }
};
inline TmaMapCache& tma_map_cache() {
  static TmaMapCache cache;
  return cache;
}

// One cache's map into `out`; false (out untouched) when TMA cannot describe it: the driver
// lacks the entry point, the base or a stride is not a multiple of 16 bytes, or the encoder
// refuses. Elements of elem_bytes (2: bf16 / fp16, 1: fp8), strides in elements; boxes of 128
// bytes of a row (64 16-bit or 128 fp8 elements) x 16 tokens.
inline bool encode_kv_map(TmaDesc& out, const void* base, int elem_bytes, int head_size,
                          int num_kv_heads, int block_size, int64_t num_blocks,
                          int64_t stride_head, int64_t stride_tok, int64_t stride_block,
                          CUtensorMapL2promotion promo) {
  static_assert(sizeof(TmaDesc) == sizeof(CUtensorMap), "TmaDesc holds a CUtensorMap");
  const PFN_cuTensorMapEncodeTiled_v12000 encode = tma_encode_fn();
  if (encode == nullptr || num_blocks <= 0 || block_size < kTmaBoxTokens) return false;
  if (reinterpret_cast<uintptr_t>(base) % 16 != 0) return false;
  const cuuint64_t dims[4] = {static_cast<cuuint64_t>(head_size),
                              static_cast<cuuint64_t>(num_kv_heads),
                              static_cast<cuuint64_t>(block_size),
                              static_cast<cuuint64_t>(num_blocks)};
  const cuuint64_t strides[3] = {static_cast<cuuint64_t>(stride_head) * elem_bytes,
                                 static_cast<cuuint64_t>(stride_tok) * elem_bytes,
                                 static_cast<cuuint64_t>(stride_block) * elem_bytes};
  for (const cuuint64_t s : strides)
    if (s % 16 != 0 || s == 0) return false;
  const cuuint32_t box[4] = {static_cast<cuuint32_t>(128 / elem_bytes), 1, kTmaBoxTokens, 1};
  const cuuint32_t elem_strides[4] = {1, 1, 1, 1};
  // L2 promotion of the boxes' reads: the caller's unless SWA_OPS_TMA_L2_PROMOTION says none,
  // 64, 128 or 256 (read per call; for measurements).
  if (const char* e = std::getenv("SWA_OPS_TMA_L2_PROMOTION")) {
    const std::string v(e);
    promo = v == "none" ? CU_TENSOR_MAP_L2_PROMOTION_NONE
          : v == "64"   ? CU_TENSOR_MAP_L2_PROMOTION_L2_64B
          : v == "128"  ? CU_TENSOR_MAP_L2_PROMOTION_L2_128B
                        : CU_TENSOR_MAP_L2_PROMOTION_L2_256B;
  }
  TmaMapKey key;
  key.base = base;
  key.elem_bytes = elem_bytes;
  key.head_size = head_size;
  key.num_kv_heads = num_kv_heads;
  key.block_size = block_size;
  key.num_blocks = num_blocks;
  key.stride_head = stride_head;
  key.stride_tok = stride_tok;
  key.stride_block = stride_block;
  key.promo = static_cast<int>(promo);
  if (tma_map_cache().find(key, out)) return true;
  CUtensorMap map;
  // Unsigned integers of the element's width: the copy moves bits, so one data type serves
  // bf16 and fp16 (and e4m3 bytes).
  const CUresult r = encode(
      &map, elem_bytes == 2 ? CU_TENSOR_MAP_DATA_TYPE_UINT16 : CU_TENSOR_MAP_DATA_TYPE_UINT8, 4,
      const_cast<void*>(base), dims, strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
      CU_TENSOR_MAP_SWIZZLE_128B, promo, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) return false;
  std::memcpy(&out, &map, sizeof(map));
  tma_map_cache().put(key, out);
  return true;
}

// Both caches' maps into p.k_map / p.v_map and p.kv_tma = 1, from p's pointers, strides and
// sizes (PrefillParams or DecodeParams); false (p unchanged) when either cannot be described.
// promo: L2 promotion (the prefill's 16-bit boxes were measured with 256 bytes, the decode's fp8
// boxes faster with 128: run 71).
template <typename P>
inline bool encode_kv_maps(P& p, int elem_bytes, int64_t num_blocks,
                           CUtensorMapL2promotion promo) {
  TmaDesc k, v;
  if (!encode_kv_map(k, p.k_cache, elem_bytes, p.head_size, p.num_kv_heads, p.block_size,
                     num_blocks, p.kv_stride_head, p.kv_stride_tok, p.kv_stride_block, promo) ||
      !encode_kv_map(v, p.v_cache, elem_bytes, p.head_size, p.num_kv_heads, p.block_size,
                     num_blocks, p.kv_stride_head, p.kv_stride_tok, p.kv_stride_block, promo))
    return false;
  p.k_map = k;
  p.v_map = v;
  p.kv_tma = 1;
  return true;
}

}  // namespace swa_ops
#endif  // USE_ROCM
