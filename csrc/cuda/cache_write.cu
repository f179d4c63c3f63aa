// reshape_and_cache kernels for every (source dtype, cache kind) pair. Torch-free.
// Also the token map of multi-token queries (a tiny kernel, kept out of the torch unit).
#include "swa_ops/cache_write.h"
#include "swa_ops/launch.h"
#include "swa_ops/token_map.h"

namespace swa_ops {
namespace {

template <typename S, typename C>
cudaError_t launch_typed(const CacheWriteParams& p, cudaStream_t stream) {
  if (p.num_tokens == 0) return cudaSuccess;
  // 16-byte vector accesses need 16-byte aligned rows and head offsets on both sides.
  // (fp8 caches take 8-byte stores: 8 elements).
  const auto aligned = [](const void* ptr, int bytes) {
    return reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
  };
  const int src_vec = 16 / static_cast<int>(sizeof(S));
  const int dst_vec = sizeof(C) == 1 ? 8 : 16 / static_cast<int>(sizeof(C));
  const int dst_bytes = dst_vec * static_cast<int>(sizeof(C));
  const bool vec = aligned(p.key, 16) && aligned(p.value, 16) && aligned(p.k_cache, dst_bytes) &&
                   aligned(p.v_cache, dst_bytes) && p.key_stride_tok % src_vec == 0 &&
                   p.key_stride_head % src_vec == 0 && p.value_stride_tok % src_vec == 0 &&
                   p.value_stride_head % src_vec == 0 && p.cache_stride_block % dst_vec == 0 &&
                   p.cache_stride_tok % dst_vec == 0 && p.cache_stride_head % dst_vec == 0;
  cache_write_kernel<S, C><<<p.num_tokens, kCacheWriteThreads, 0, stream>>>(p, vec);
  return cudaGetLastError();
}

template <typename S>
cudaError_t launch_src(const CacheWriteParams& p, cudaStream_t stream) {
  return p.cache_fp8 ? launch_typed<S, uint8_t>(p, stream) : launch_typed<S, S>(p, stream);
}

}  // namespace

cudaError_t launch_cache_write(const CacheWriteParams& p, cudaStream_t stream) {
  if (p.src_is_float32) return launch_src<float>(p, stream);
  if (p.dtype == DType::kBFloat16) return launch_src<bf16_t>(p, stream);
  return launch_src<fp16_t>(p, stream);
}

cudaError_t launch_token_map(const TokenMapParams& p, cudaStream_t stream) {
  if (p.num_tokens == 0 || p.num_seqs == 0) return cudaSuccess;
  token_map_kernel<<<(p.num_tokens + 255) / 256, 256, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace swa_ops
