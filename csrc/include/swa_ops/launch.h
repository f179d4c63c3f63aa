// Host side of the decode kernels, torch-free: the launch entry points (the split choice is in
// decode_split.h). The torch launcher (csrc/cuda/paged_attention.cu) fills DecodeParams, sizes the
// workspace from choose_decode_split() and calls launch_decode<D>(); each
// csrc/cuda/decode_hd<D>.cu instantiates launch_decode<D> (with launch_impl.h), so head sizes
// compile in parallel and torch's headers are parsed once.
#pragma once

#include "swa_ops/compat.h"
#include "swa_ops/decode_split.h"
#include "swa_ops/params.h"
#include "swa_ops/split.h"

namespace swa_ops {

// Decode CTAs one SM holds at once for head size D (occupancy of the kernel as launched).
template <int D>
int decode_ctas_per_sm();

// The same for the kv-head-paired kernel (split.h) over an fp8 or a 16-bit cache.
template <int D>
int decode_pair_ctas_per_sm(bool fp8);

// Launches the decode kernel (and the merge when num_parts > 1) for head size D on `stream`.
// p.dtype picks bf16/fp16; p.cap_* > 0 picks the soft-cap variant; p.query_start_loc != nullptr
// the packed multi-token mode (p.num_tokens, p.max_query_len; head_chunks counts row chunks).
// Returns the launch error.
template <int D>
cudaError_t launch_decode(const DecodeParams& p, cudaStream_t stream);

// Multi-token queries on the tensor-core prefill kernel (prefill_mma.h) for head size D: the plan
// kernel (row tiles per sequence, on the device) then the prefill grid of p.grid_ctas x
// num_kv_heads CTAs, both on `stream`. Returns the launch error.
template <int D>
cudaError_t launch_prefill(const PrefillParams& p, cudaStream_t stream);

// CTAs per kv head that cover any batch: every sequence's q_len * group packed rows in tiles of
// kPrefillRows, bounded from the token count alone (sum of q_len <= num_tokens), so the grid never
// depends on query_start_loc's contents.
inline long prefill_grid_ctas(long num_tokens, long num_seqs, long group) {
  return (num_tokens * group + kPrefillRows - 1) / kPrefillRows + num_seqs;
}

// Per query token: its sequence and effective length (token_map.h; csrc/cuda/cache_write.cu).
cudaError_t launch_token_map(const TokenMapParams& p, cudaStream_t stream);

// reshape_and_cache's kernel for every source dtype and cache kind (csrc/cuda/cache_write.cu).
cudaError_t launch_cache_write(const CacheWriteParams& p, cudaStream_t stream);

}  // namespace swa_ops
