// Host side of the decode kernels, torch-free: the split choice and the launch entry points.
// The torch launcher (csrc/cuda/paged_attention.cu) fills DecodeParams, sizes the workspace from
// choose_decode_split() and calls launch_decode<D>(); each csrc/cuda/decode_hd<D>.cu instantiates
// launch_decode<D> (with launch_impl.h), so head sizes compile in parallel and torch's headers
// are parsed once.
#pragma once

#include <algorithm>
#include <cmath>

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

// A one-wave split that fills less than this share of the slots is refilled (below).
constexpr double kUnderfilled = 0.9;
// The refill's grid: between these many waves of slots, and partitions of at least this many
// tokens (per-CTA start-up and the merge stay small beside the streaming).
constexpr double kRefillMinWaves = 1.75, kRefillMaxWaves = 3.25;
#ifndef SWA_OPS_REFILL_MIN_PART  // build-time, for A/B
#define SWA_OPS_REFILL_MIN_PART 512
#endif
constexpr int kRefillMinPartTokens = SWA_OPS_REFILL_MIN_PART;

// Chooses the split from host-known values only (shapes, W, SM count, the kernel's occupancy),
// never seq_lens, so the launch is CUDA-graph capturable and one graph serves a sequence as its
// context grows. `slots` is how many decode CTAs the device holds at once (SMs x CTAs per SM).
//
// Partitions multiply the (sequence, head) pairs up to at most one wave of slots. Measured on
// H100: a grid just over one wave is the worst case (its last CTAs run alone, each capped by the
// loads one CTA keeps in flight: mistral-128k took 66.5 us at 1.2 waves against 57-59 us at 0.7
// or 2.2), and extra partitions cost a merge and per-CTA start-up. So: fill up to one wave; pairs
// that already fill it get no split at all.
//
// But a single wave that leaves many slots idle streams well below the bandwidth (each CTA's rate
// is capped by the loads it keeps in flight): mistral-32k's shape at batch 20 / 24 / 28 (160 /
// 192 / 224 CTAs on 264 slots) reached 0.81 / 0.86 / 0.91 of copy bandwidth against 0.956 at
// batch 32 (run 93). Such a grid is refilled: split into 1.75-3.25 waves, the first split whose
// last wave is at least kUnderfilled full, else the fullest (fewest partitions on ties). Run 93
// (SWA_OPS_WAVES sweeps) measured the best of each there: batch 20 at 3 partitions (1.82 waves)
// 0.909, batch 24 at 4 (2.91) 0.928, batch 28 at 3 (2.55) 0.935.
//
// waves > 0 (SWA_OPS_WAVES, for tuning) replaces the rule: up to waves x slots CTAs, no refill.
inline DecodeSplit choose_decode_split(int num_seqs, int num_kv_heads, int head_chunks,
                                       int window, int max_context, int slots, double waves) {
  DecodeSplit s;
  const int span = max_span_tokens(window, max_context);
  const long pairs = static_cast<long>(num_seqs) * num_kv_heads * head_chunks;
  long parts = 1;
  if (span > 0 && pairs > 0) {
    parts = static_cast<long>((waves > 0 ? waves : 1.0) * slots) / pairs;
    const long max_parts = (span + kPartAlign - 1) / kPartAlign;
    if (parts > max_parts) parts = max_parts;
    if (parts < 1) parts = 1;
    if (waves <= 0 && pairs * parts < kUnderfilled * slots) {
      const long cap = std::min<long>(max_parts, span / kRefillMinPartTokens);
      long best = parts;
      double best_fill = 0.0;
      for (long q = parts + 1; q <= cap; ++q) {
        const double w = static_cast<double>(pairs * q) / slots;
        if (w < kRefillMinWaves) continue;
        if (w > kRefillMaxWaves) break;
        const double fill = w / std::ceil(w);  // the last wave's share of its slots
        if (fill >= kUnderfilled) {
          best = q;
          break;
        }
        if (fill > best_fill) {
          best_fill = fill;
          best = q;
        }
      }
      parts = best;
    }
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
