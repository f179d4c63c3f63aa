// Where a sequence's visible keys lie and how partitions tile them. Shared by the decode kernel,
// the merge kernel and the host-side split choice so the three can never disagree.
#pragma once

#include "swa_ops/compat.h"
#include "swa_ops/decode_split.h"
#include "swa_ops/params.h"

namespace swa_ops {

// Tiles of kTileTokens (decode_split.h) keys; partitions and their origin are aligned to them.
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

// Offset (elements; bytes for fp8 caches) of token `tok` (its index within the block; block sizes
// are powers of two) of cache block `block`, kv-head offset excluded. DecodeParams and
// PrefillParams name the cache strides alike; every K/V copy of the decode and prefill kernels
// addresses the paged cache through this.
template <typename P>
SWA_HD int64_t paged_token_offset(const P& p, int block, int tok) {
  return static_cast<int64_t>(block) * p.kv_stride_block +
         static_cast<int64_t>(tok) * p.kv_stride_tok;
}

// Live partitions of a sequence: those that hold at least one visible key.
SWA_HD int live_parts(const SeqSpan& s, int part_tokens) {
  const int n = s.hi - s.origin;
  return n > 0 ? (n + part_tokens - 1) / part_tokens : 0;
}

// ---- Short partitions (decode_mma_kernel<..., ALLIN = true>, chosen by the launcher)
//
// When no partition can hold more than kAllInWarps * kAllInMaxMine tiles, each warp issues every
// tile it owns (tiles w, w + 4, w + 8) at once into a buffer of its own: no ring slot is reused,
// so no tile waits for another's arrival, and shared memory is one buffer per tile a partition can
// hold instead of warps x stages (gpt-oss: 9 buffers, 41 KB, instead of 12; more CTAs per SM).
constexpr int kAllInWarps = 4;    // the decode CTA's warps at head sizes up to 128
constexpr int kAllInMaxMine = 3;  // tiles per warp

// The most tiles a partition of part_tokens can hold when spans are at most max_span tokens
// (decode_split.h's partition_max_tiles), if the ALLIN variant can take them all at once; else 0.
SWA_HD int allin_max_tiles(int part_tokens, int max_span) {
  const int tiles = partition_max_tiles(part_tokens, max_span);
  return tiles > 0 && tiles <= kAllInWarps * kAllInMaxMine ? tiles : 0;
}

// ---- kv-head pairing (decode_mma_kernel<..., SWAP = true, PAIR = true>, chosen by the launcher)
//
// One CTA reads kv heads 2c and 2c + 1 of each token: one contiguous row of 2 D elements instead
// of two rows of D at a kv-head stride, as a virtual kv head of size 2 D whose 2 g query heads
// (2c g .. 2c g + 2g - 1, contiguous) fill the swapped tile's 8 N columns with block-diagonal
// queries (swap_frag.h). Why: the fp8 mistral row (128-byte rows at a 1 KB token stride) is
// bound by that access pattern, not by its tile math (notes/decode.md, runs 34-42: bf16 with the
// same layout reaches 0.861 of copy bandwidth, bf16 with 256-byte rows 0.955).
constexpr int kMaxPairGroup = 4;  // 2 g query heads on the 8 N columns of m16n8k16

// Head sizes whose kv heads pair. fp8: D <= 128 (paired rows of 2 D <= 256 bytes fit the 16-bit
// ring rows of D, 2 D + 16 bytes: the ring, its shared memory and occupancy are the unpaired
// kernel's; fp8 rows of 256 bytes or more, D >= 256, already stream like bf16's). 16-bit: D = 64
// (paired rows of 256 bytes in D = 128's rings, 104 KB per CTA, two CTAs per SM) and D = 96
// (rows of 384 bytes in two-stage rings, 102 KB, two CTAs per SM: Phi-3's 32 kv heads of 192-byte
// rows at a 6 KB token stride, 512 CTAs in two waves unpaired, become 256 in one). D = 80 is not
// paired (measured slower: run 101); rows of 256 bytes or more (D >= 128) need no pairing.
SWA_HD constexpr bool kv_pair_head_size(int head_size, bool fp8) {
  return fp8 ? (head_size == 64 || head_size == 80 || head_size == 96 || head_size == 128)
             : (head_size == 64 || head_size == 96);
}

// ---- Packed multi-token queries (decode_mma_kernel<..., PACKED = true>, merge_kernel<..., true>)
//
// A sequence with q_len query tokens has q_len * group query rows per kv head (group = the GQA
// group). Packed row rr is (token rr / group, head rr % group): token-major, so a 16-row chunk
// (the MMA's M) holds whole tokens when group divides 16 and consecutive tokens always. Token i
// sits at position L - q_len + i, so it sees what a decode step of a sequence of length
// L - q_len + i + 1 sees (seq_span of that length). A chunk's CTA loads the union of its rows'
// windows, [lo of its first token, position + 1 of its last), which is contiguous (consecutive
// tokens' windows overlap) and at most W + (last - first) keys long; partitions tile it from its
// own 16-aligned origin exactly as they tile a decode span.
constexpr int kPackedRows = 16;  // rows per chunk: the M of mma.sync m16n8k16

// The sequence side of the packed mode, from query_start_loc and seq_lens.
struct PackedSeq {
  int q_begin;  // the sequence's first query token (row of query / out)
  int q_len;    // its query tokens (0 for an empty or out-of-range query range)
  int len0;     // L - q_len + 1: token i's decode length is len0 + i (<= 0: it sees nothing)
};

// Decode length of token i (its position + 1), 0 for a token at a negative position (q_len > L).
SWA_HD int packed_token_len(const PackedSeq& s, int i) {
  const int n = s.len0 + i;
  return n > 0 ? n : 0;
}

// Keys of the chunk of packed rows [row0, row0 + rows) (rows >= 1): lo/origin from its first
// token's window, hi one past its last token's position.
SWA_HD SeqSpan packed_span(const PackedSeq& s, int row0, int rows, int group, int window) {
  SeqSpan sp = seq_span(packed_token_len(s, row0 / group), window);
  sp.hi = packed_token_len(s, (row0 + rows - 1) / group);
  return sp;
}

// The window bound the host's split sizing (max_span_tokens) uses in packed mode: a chunk's span
// is its first token's window plus up to max_query_len - 1 later positions.
SWA_HD int packed_split_window(int window, int max_query_len) {
  return window > 0 ? window + max_query_len - 1 : window;
}

// seq_lens[seq], clamped to what its block-table row can address: a seq_len past
// max_blocks_per_seq * block_size is invalid input, and clamping keeps every block-table read in
// bounds (the op cannot check data on the host without a sync).
SWA_D int clamp_seq_len(const DecodeParams& p, int seq) {
  const int cap = p.max_blocks_per_seq << p.log2_block_size;
  const int L = p.seq_lens[seq];
  return L < cap ? (L > 0 ? L : 0) : cap;
}

// Sequence seq's query range and length for the packed mode. Ranges outside [0, num_tokens)
// (invalid input: query_start_loc is not checked on the host) are clipped, so nothing is read or
// written out of bounds.
SWA_D PackedSeq packed_seq(const DecodeParams& p, int seq) {
  PackedSeq s;
  const int b = p.query_start_loc[seq], e = min(p.query_start_loc[seq + 1], p.num_tokens);
  s.q_begin = b;
  s.q_len = b >= 0 && e > b ? e - b : 0;
  s.len0 = clamp_seq_len(p, seq) - s.q_len + 1;
  return s;
}

// The partitions [first, end) of a packed row's chunk that hold keys the row sees (token i,
// head h of the group): what the merge reads. The decode grid wrote every one of them.
struct PartRange {
  int first, end;
};
SWA_HD PartRange packed_row_parts(const PackedSeq& s, int i, int h, int group, int window,
                                  int part_tokens, int num_parts) {
  const int rr = i * group + h;
  const int row0 = rr - rr % kPackedRows;
  const int rows = s.q_len * group - row0 < kPackedRows ? s.q_len * group - row0 : kPackedRows;
  const SeqSpan chunk = packed_span(s, row0, rows, group, window);
  const SeqSpan own = seq_span(packed_token_len(s, i), window);
  PartRange r{0, 0};
  if (own.hi > own.lo) {
    r.first = (own.lo - chunk.origin) / part_tokens;
    r.end = (own.hi - 1 - chunk.origin) / part_tokens + 1;
    if (r.end > num_parts) r.end = num_parts;  // cannot happen for a valid split; stays in bounds
  }
  return r;
}

}  // namespace swa_ops
