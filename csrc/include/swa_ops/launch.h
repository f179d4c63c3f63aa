// Host side of the decode kernels, torch-free: the split choice and the launch entry points.
// The torch launcher (csrc/cuda/paged_attention.cu) fills DecodeParams, sizes the workspace from
// choose_decode_split() and calls launch_decode<D>(); each csrc/cuda/decode_hd<D>.cu instantiates
// launch_decode<D> (with launch_impl.h), so head sizes compile in parallel and torch's headers
// are parsed once.
#pragma once

#include "swa_ops/compat.h"
#include "swa_ops/params.h"
#include "swa_ops/split.h"

namespace swa_ops {

struct DecodeSplit {
  int num_parts;    // partitions per (sequence, kv head, head chunk)
  int part_tokens;  // P
};

// Partitions are whole multiples of this many tokens (four 16-token tiles).
constexpr int kPartAlign = 64;

// Chooses the split from host-known values only (shapes, W, SM count, the kernel's occupancy),
// never seq_lens, so the launch is CUDA-graph capturable and one graph serves a sequence as its
// context grows. `slots` is how many decode CTAs the device holds at once (SMs x CTAs per SM).
//
// Partitions multiply the (sequence, head) pairs up to at most `waves` x slots CTAs. Measured on
// H100: a grid just over one wave is the worst case (its last CTAs run alone, each capped by the
// loads one CTA keeps in flight: mistral-128k took 66.5 us at 1.2 waves against 57-59 us at 0.7
// or 2.2), and extra partitions cost a merge and per-CTA start-up. So: fill up to one wave; pairs
// that already fill it get no split at all.
inline DecodeSplit choose_decode_split(int num_seqs, int num_kv_heads, int head_chunks,
                                       int window, int max_context, int slots, double waves) {
  DecodeSplit s;
  const int span = max_span_tokens(window, max_context);
  const long pairs = static_cast<long>(num_seqs) * num_kv_heads * head_chunks;
  long parts = 1;
  if (span > 0 && pairs > 0) {
    parts = static_cast<long>(waves * slots) / pairs;
    const long max_parts = (span + kPartAlign - 1) / kPartAlign;
    if (parts > max_parts) parts = max_parts;
    if (parts < 1) parts = 1;
  }
  int p = span > 0 ? static_cast<int>((span + parts - 1) / parts) : kPartAlign;
  p = (p + kPartAlign - 1) / kPartAlign * kPartAlign;
  s.part_tokens = p;
  s.num_parts = span > 0 ? (span + p - 1) / p : 1;
  return s;
}

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
