// Where a sequence's visible keys lie and how partitions tile them. Shared by the decode kernel,
// the merge kernel and the host-side split choice so the three can never disagree.
#pragma once

#include "swa_ops/compat.h"
#include "swa_ops/params.h"

namespace swa_ops {

// Keys are processed in tiles of kTileTokens tokens; partitions and their origin are aligned to it.
constexpr int kTileTokens = 16;

struct SeqSpan {
  int lo;      // first visible key: max(0, L - W) with a window, else 0
  int hi;      // one past the last visible key: L
  int origin;  // first partition's first token: lo rounded down to a tile boundary
};

// The visible keys of a decode query at position L - 1 are [max(0, L - W), L) (W > 0), else
// [0, L). Partitions start at `origin` = align_down(lo, 16) rather than at a multiple of P, so
// every partition but the last is full and a span of W + 15 tokens needs ceil((W + 15) / P) of
// them; nothing before `lo` is ever loaded either way.
SWA_HD SeqSpan seq_span(int seq_len, int window) {
  SeqSpan s;
  s.hi = seq_len;
  s.lo = window > 0 ? (seq_len > window ? seq_len - window : 0) : 0;
  s.origin = s.lo & ~(kTileTokens - 1);
  return s;
}

// Live partitions of a sequence: those that hold at least one visible key.
SWA_HD int live_parts(const SeqSpan& s, int part_tokens) {
  const int n = s.hi - s.origin;
  return n > 0 ? (n + part_tokens - 1) / part_tokens : 0;
}

// The most tokens [origin, L) can span for any L the block table allows: what the host sizes the
// grid with. Depends on shapes and W only, so one CUDA graph serves every step of a sequence.
SWA_HD int max_span_tokens(int window, int max_context) {
  if (window <= 0) return max_context;
  const int w = window + kTileTokens - 1;
  return w < max_context ? w : max_context;
}

// seq_lens[seq], clamped to what its block-table row can address: a seq_len past
// max_blocks_per_seq * block_size is invalid input, and clamping keeps every block-table read in
// bounds (the op cannot check data on the host without a sync).
SWA_D int clamp_seq_len(const DecodeParams& p, int seq) {
  const int cap = p.max_blocks_per_seq << p.log2_block_size;
  const int L = p.seq_lens[seq];
  return L < cap ? (L > 0 ? L : 0) : cap;
}

}  // namespace swa_ops
