// Plain parameter structs the launchers fill and the kernels read; torch-free.
#pragma once

#include <stdint.h>

namespace swa_ops {

enum class DType : int { kFloat16 = 0, kBFloat16 = 1 };

// The 128 bytes of a TMA tensor map (CUtensorMap), opaque here so that this header needs no
// driver header: tma_map.h encodes one on the host, prefill_ws.h hands its address to the copies.
struct alignas(64) TmaDesc {
  unsigned long long words[16];
};
// Tokens per TMA box of a K/V map, and the alignment of the TMA-copied tiles' origin.
constexpr int kTmaBoxTokens = 16;
// Floats per consumer thread in a prefill tail piece's record (PrefillParams::tail_ws): its O
// fragment (D / 2 values), two running maxima and two partial sums.
constexpr int tail_record_floats(int head_size) { return head_size / 2 + 4; }
// Consumer threads of the warp-specialized prefill kernel, one record column each.
constexpr int kTailRecordThreads = 256;

// Split partials kept in L2 for the merge and dropped there (compat.h's store_l2_keep and
// discard_l2_line): for rows of whole 128-byte lines (D % 32 == 0) in single-token mode, where
// the merge reads every partition the decode grid wrote (a packed row's merge reads only the
// partitions of its own window, so lines it skips would stay in L2 at evict_last priority).
// Seed's partials are 1 MB a call: written back to DRAM, and re-read from it when the K/V stream
// had evicted them before the merge ran. Kept and dropped: seed 94.4 -> 93.1 us, mistral-128k
// 49.8 -> 49.1 (run 170; with decode_mma.h's evict_first stream, 92.5 and 48.5).
#ifndef SWA_OPS_PART_L2  // build-time, for A/B: 0 stores the partials plainly
#define SWA_OPS_PART_L2 1
#endif
constexpr bool part_rows_kept_in_l2(int head_size, bool packed) {
  return SWA_OPS_PART_L2 && !packed && head_size % 32 == 0;
}

// One decode launch of paged_attention (one query token per sequence, or the packed multi-token
// mode at the end). Strides are in elements.
struct DecodeParams {
  // ---- inputs
  const void* q;            // [num_seqs, num_heads, head_size], dtype `dtype`
  const void* k_cache;      // [num_blocks, block_size, num_kv_heads, head_size], dtype or fp8
  const void* v_cache;      // same shape and strides as k_cache (checked by the launcher)
  const int* block_tables;  // [num_seqs, max_blocks_per_seq] int32
  const int* seq_lens;      // [num_seqs] int32: cached tokens including this step's
  const int* seq_of_token;  // multi-token queries only (else nullptr): then every "sequence" here
                            //   is one query token, seq_of_token[t] its block-table row and
                            //   seq_lens[t] its position + 1 (token_map_kernel builds both)
  const float* sinks;       // [num_heads] fp32 sink logits, or nullptr
  const float* k_scale;     // fp8 only: device scalar dequantization scale of K (else nullptr)
  const float* v_scale;     // fp8 only: device scalar dequantization scale of V (else nullptr)
  // ---- outputs
  void* out;                // [num_seqs, num_heads, head_size], dtype `dtype`, contiguous
  // Split-KV workspace, used only when num_parts > 1 (fp32, written by the decode kernel for
  // live partitions, read by the merge for live partitions only):
  float* part_out;          // [num_seqs, num_heads, num_parts, head_size]: each partition's
                            //   softmax-normalised output
  float* part_max;          // [num_seqs, num_heads, num_parts]: its running max (log2 units)
  float* part_sum;          // [num_seqs, num_heads, num_parts]: its softmax denominator
  // ---- strides (elements)
  int64_t q_stride_tok;     // query.stride(0)
  int64_t q_stride_head;    // query.stride(1)
  int64_t kv_stride_block;  // key_cache.stride(0)
  int64_t kv_stride_tok;    // key_cache.stride(1)
  int64_t kv_stride_head;   // key_cache.stride(2)
  int64_t bt_stride;        // block_tables.stride(0)
  // ---- sizes
  int num_seqs;
  int num_heads;
  int num_kv_heads;
  int head_size;            // D, one of the compiled sizes
  int group;                // num_heads / num_kv_heads (GQA group)
  int head_chunks;          // ceil(group / 16): groups over 16 heads are split over CTAs
                            //   (packed mode: row chunks, below)
  int block_size;           // tokens per cache block, a power of two
  int log2_block_size;
  int max_blocks_per_seq;
  // ---- the split (host-chosen from shapes, W and the SM count only; never from seq_lens)
  int num_parts;            // partitions per (sequence, kv head); grid.y
  int part_tokens;          // P: tokens per partition, a multiple of the tile (16 x warps)
  // ---- semantics
  int window;               // W > 0: attend to keys [max(0, L - W), L); <= 0: all of [0, L)
  float scale_log2;         // softmax scale * log2(e): logits live in log2 units (exp2 softmax)
  float cap_pre;            // soft-cap only: scale / cap
  float cap_post;           // soft-cap only: cap * log2(e); logit = cap_post * tanh(cap_pre * q.k)
  DType dtype;
  bool kv_fp8;              // caches are float8_e4m3fn
  // ---- packed multi-token queries (decode_mma_kernel<..., PACKED = true>; unused otherwise).
  // Then num_seqs counts real sequences, seq_lens is theirs, and head_chunks is the number of
  // 16-row chunks of (token, head) rows per (sequence, kv head): ceil(max_query_len * group / 16).
  // (Last in the struct so the single-token kernels' parameter offsets are unchanged.)
  const int* query_start_loc;  // [num_seqs + 1] int32 prefix sums of query lengths
  int num_tokens;           // query.size(0): out and the workspace hold num_tokens x num_heads rows
  int max_query_len;        // host bound on every query length (the caller's promise)
  // ---- short partitions (decode_mma_kernel<..., ALLIN = true>; SWA_OPS_SMALL, launcher)
  int allin_tiles;          // > 0: every warp issues all its tiles at once into one buffer per
                            //   tile; the most tiles a partition can hold (host-known), which
                            //   sizes shared memory. 0: the per-warp cp.async rings
  int num_blocks;           // key_cache.size(0): bounds the speculative prefetch's block ids
  int prewait_tiles;        // > 0: before griddepcontrol.wait, each warp prefetches its tiles
  int prewait_first;        //   [prewait_first, prewait_tiles) (its own numbering) into L2 from
                            //   a speculative read of seq_lens / block_tables (single-token
                            //   rows; launcher)
  bool early_trigger;       // merge: let the next kernel launch before this one's wait
  // ---- GQA group on the MMAs' N side (decode_mma_kernel<..., SWAP = true>; launcher)
  bool swap_ab;             // single-token rings with group <= 8 (SWA_OPS_SWAP, default on)
  // ---- kv-head pairing (decode_mma_kernel<..., SWAP = true, PAIR = true>; launcher, split.h)
  bool kv_pair;             // with swap_ab, group <= 4, num_kv_heads even, adjacent kv-head rows:
                            //   one CTA per kv-head pair (grid: num_kv_heads / 2 kv units per
                            //   sequence); default 16-bit caches only,
                            //   SWA_OPS_KV_PAIR=1 all, 0 none
  // ---- fp8 TMA ring (decode_mma_kernel<..., TMA = true>; launcher, tma_map.h)
  int kv_tma;               // 1: k_map / v_map describe the fp8 caches (boxes of 128 bytes x 16
                            //   tokens, 128-byte swizzle); the launcher takes the TMA kernel
                            //   where it applies (fp8, D = 128, swapped, unpaired ring)
  TmaDesc k_map, v_map;
#ifdef SWA_OPS_TIMELINE
  unsigned long long* timeline;  // diagnostics only (timeline.h): per-CTA timestamps, or nullptr
#endif
};

// Multi-token queries: per query token, its sequence and its effective length (position + 1).
struct TokenMapParams {
  const int* query_start_loc;  // [num_seqs + 1] int32 prefix sums of query lengths
  const int* seq_lens;         // [num_seqs] int32
  int* seq_of_token;           // [num_tokens] out: the token's sequence (0 for uncovered tokens)
  int* token_lens;             // [num_tokens] out: L - q_len + i + 1, or 0 (sees no key)
  int num_seqs;
  int num_tokens;
};

// reshape_and_cache: writes each token's K/V row into its slot. Strides in elements.
struct CacheWriteParams {
  const void* key;          // [num_tokens, num_kv_heads, head_size], dtype `dtype`
  const void* value;        // same shape as key (own strides)
  void* k_cache;            // [num_blocks, block_size, num_kv_heads, head_size]
  void* v_cache;
  const int64_t* slot_mapping;  // [num_tokens]: block * block_size + offset, -1 = skip
  const float* k_scale;     // fp8 caches: device scalar; x is stored as x / k_scale
  const float* v_scale;
  int64_t key_stride_tok, key_stride_head;
  int64_t value_stride_tok, value_stride_head;
  int64_t cache_stride_block, cache_stride_tok, cache_stride_head;  // same for both caches
  int num_tokens;
  int num_kv_heads;
  int head_size;
  int block_size;
  int elem_bytes;           // bytes of one source element (2 or 4)
  bool src_is_float32;
  DType dtype;              // source dtype when 16-bit
  bool cache_fp8;
};

// Packed (query token, head) rows per prefill CTA, 16 MMA rows per warp. Every CTA reads its rows'
// whole window from L2, so rows per CTA set the L2 traffic: at 64 rows the Mistral prefill moved
// ~5.9 TB/s of K/V through L2 and was bound by it (run 18), hence 128 (eight warps, two
// warpgroups) on NVIDIA. AMD keeps 64: its 64 KB of LDS per work-group holds no larger Q tile.
#ifdef USE_ROCM
constexpr int kPrefillRows = 64;
#else
constexpr int kPrefillRows = 128;
#endif

// One launch of the tensor-core prefill kernel (prefill_mma.h): multi-token queries whose packed
// (query token, head) rows are many, e.g. chunked or whole-prompt prefill. Strides in elements.
struct PrefillParams {
  const void* q;                // [num_tokens, num_heads, head_size], dtype `dtype`
  const void* k_cache;          // [num_blocks, block_size, num_kv_heads, head_size], dtype or fp8
  const void* v_cache;          // same shape and strides as k_cache
  const int* block_tables;      // [num_seqs, max_blocks_per_seq] int32
  const int* seq_lens;          // [num_seqs] int32: cached tokens, this chunk's included
  const int* query_start_loc;   // [num_seqs + 1] int32 prefix sums of query lengths
  const float* sinks;           // [num_heads] fp32 sink logits, or nullptr
  const float* k_scale;         // fp8 only: device scalars (else nullptr)
  const float* v_scale;
  int* cta_start;               // [num_seqs + 1] written by the plan kernel: first CTA of each
                                //   sequence (exclusive prefix sum of its row tiles); last = total
  void* out;                    // [num_tokens, num_heads, head_size], dtype `dtype`, contiguous
  int64_t q_stride_tok, q_stride_head;
  int64_t kv_stride_block, kv_stride_tok, kv_stride_head;
  int64_t bt_stride;
  int num_seqs;
  int num_tokens;
  int num_heads;
  int num_kv_heads;
  int head_size;
  int group;                    // num_heads / num_kv_heads
  int block_size;               // a power of two
  int log2_block_size;
  int max_blocks_per_seq;
  int grid_ctas;                // CTAs per kv head launched (host bound on the plan's total)
  int window;                   // W > 0: row at position p sees [max(0, p - W + 1), p]
  float scale_log2;
  float cap_pre;                // soft-cap only (see DecodeParams)
  float cap_post;
  DType dtype;
  bool kv_fp8;
  bool wgmma;                   // take the Hopper (wgmma) variant where it exists (sm_90a build,
                                //   compute capability 9.x, 16-bit caches, D % 64 == 0)
  int ws;                       // with wgmma: 0 = prefill_mma.h's wgmma variant; 1 (default) =
                                //   the warp-specialized kernel (prefill_ws.h); 2 = that with the
                                //   intra-warpgroup softmax / P V overlap (SWA_OPS_PREFILL_WS)
  int num_sms;                  // warp-specialized kernel only, launcher-side: > 0 = persistent
                                //   grid where compiled (SWA_OPS_PREFILL_PERSIST; D <= 128 by
                                //   default): min(grid_ctas * num_kv_heads,
                                //   num_sms * its resident CTAs per SM) CTAs, each looping over
                                //   (kv head, row tile) items; 0 = one CTA per item
  int kv_tma;                   // 1: k_map / v_map hold tensor maps of the caches and the
                                //   persistent warp-specialized kernel at D = 128 copies the K/V
                                //   tiles wholly inside a key union by TMA (prefill_ws.h,
                                //   SWA_OPS_PREFILL_TMA); 0: cp.async only, the maps unset
  float* tail_ws;               // tail split (prefill_ws.h, SWA_OPS_PREFILL_TAIL_SPLIT): the last
                                //   round's pieces' partial row states, tail_slots records
  int* tail_count;              //   and per leftover item its pieces done (zeroed by the plan
                                //   kernel); tail_slots = 0: no split
  int tail_slots;
  TmaDesc k_map, v_map;         // [num_blocks, block_size, num_kv_heads, D] viewed as
                                //   (D, kv head, token, block), boxes of 64 x 1 x 16 x 1, 128-byte
                                //   swizzle (tma_map.h)
};

}  // namespace swa_ops
