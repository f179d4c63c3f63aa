// Merge of split-KV partial results: one CTA per (sequence, query head).
//
// Each live partition j left a softmax-normalised output O_j, its max m_j (log2 units) and its
// denominator l_j. The row's output is sum_j w_j O_j / (sum_j w_j [+ 2^(sink - M)]) with
// w_j = 2^(m_j - M) l_j and M the max over live partitions and the sink. Only live partitions are
// read; their count follows from seq_len exactly as the decode grid derived them (split.h).
// Thread slices stream disjoint partitions' rows with an online rescale, so all loads are
// independent and in flight together, then combine through shared memory (a single lane walking
// all partitions one dependent step at a time cost ~20 us on a 65-partition sequence).
//
// The partials were stored at L2 evict_last priority (params.h's part_rows_kept_in_l2); once read
// here their lines are discarded from L2, never written back to DRAM.
//
// Packed multi-token mode (PACKED): one CTA per (sequence, token i < max_query_len, head); the
// row is out's [query_start_loc[seq] + i][head], and it reads only the partitions of its chunk
// that hold keys of its own window (packed_row_parts), so a token whose window starts later than
// its chunk's first token's skips the partitions before it. Tokens i >= q_len exit.
#pragma once

#include "swa_ops/compat.h"
#include "swa_ops/params.h"
#include "swa_ops/split.h"
#include "swa_ops/timeline.h"

namespace swa_ops {

constexpr int kMergeThreads = 128;

// Loads K partitions of a row's float4 column, first, first + stride, ...: each one's max (log2
// units), sum and output; past n a sentinel (max -inf, sum 0) that store_merged_row and the
// sliced fold skip. Every load is issued before any is used: one L2 round trip per batch.
template <int K, int V4>
SWA_D void load_partitions(const DecodeParams& p, int64_t base, const float4* src, int first,
                           int stride, int n, float (&m)[K], float (&l)[K], float4 (&v)[K]) {
#pragma unroll
  for (int b = 0; b < K; ++b) {
    const int j = first + b * stride;
    m[b] = -__builtin_huge_valf();
    l[b] = 0.f;
    v[b] = make_float4(0.f, 0.f, 0.f, 0.f);
    if (j < n) {
      m[b] = p.part_max[base + j];
      l[b] = p.part_sum[base + j];
      v[b] = src[static_cast<int64_t>(j) * V4];
    }
  }
}

// Writes float4 column `col4` of out's row `row` from K pieces, piece k being entry(k, m, l, v):
// its max m (log2 units), its sum l and its output v, normalized (NORMALIZED: a partition's own
// result, weighed by 2^(m - M) l) or not (a slice's running sum, weighed by 2^(m - M)). M is the
// max over the pieces and the sink; the denominator sums 2^(m - M) l and the sink's 2^(sink - M).
// Pieces of sum 0 (an empty partition, a sentinel, a slice with no live partition) count not;
// with nothing visible the row is exact zeros, never exp2(-inf - -inf).
template <typename T, int D, int K, bool NORMALIZED, typename Entry>
SWA_D void store_merged_row(const DecodeParams& p, int head, int64_t row, int col4, Entry entry) {
  constexpr float kLog2eM = 1.4426950408889634f;
  constexpr float kNegInfM = -__builtin_huge_valf();
  float ms[K], ls[K];
  float4 vs[K];
#pragma unroll
  for (int k = 0; k < K; ++k) entry(k, ms[k], ls[k], vs[k]);
  float m_all = p.sinks != nullptr ? p.sinks[head] * kLog2eM : kNegInfM;
#pragma unroll
  for (int k = 0; k < K; ++k)
    if (ls[k] > 0.f) m_all = fmaxf(m_all, ms[k]);
  float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
  float denom = 0.f;
  if (m_all != kNegInfM) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      if (!(ls[k] > 0.f)) continue;
      const float f = fast_exp2(ms[k] - m_all);
      const float w = NORMALIZED ? f * ls[k] : f;
      o.x += w * vs[k].x; o.y += w * vs[k].y; o.z += w * vs[k].z; o.w += w * vs[k].w;
      denom += NORMALIZED ? w : f * ls[k];
    }
    if (p.sinks != nullptr) denom += fast_exp2(p.sinks[head] * kLog2eM - m_all);
  }
  const float inv = denom > 0.f ? 1.f / denom : 0.f;
  T* out = static_cast<T*>(p.out) + row * D;
  *reinterpret_cast<uint2*>(out + 4 * col4) =
      make_uint2(pack2<T>(o.x * inv, o.y * inv), pack2<T>(o.z * inv, o.w * inv));
}

template <typename T, int D, bool PACKED = false>
__global__ void __launch_bounds__(kMergeThreads) merge_kernel(const DecodeParams p) {
  constexpr float kNegInfM = -__builtin_huge_valf();
  constexpr int V4 = D / 4;                   // float4 columns per row
  constexpr int SLICES = kMergeThreads / V4;  // threads per column, each over its own partitions
  static_assert(V4 <= kMergeThreads, "head size too large for one merge CTA");
  __shared__ float4 acc_s[SLICES][V4];
  __shared__ float max_s[SLICES], sum_s[SLICES];

  const int tid = threadIdx.x;
  SWA_OPS_TL_DECL(tl_marks);
  SWA_OPS_TL_MARK(tl_marks, start);
  int64_t row;  // out's row: seq * num_heads + head (packed mode: token * num_heads + head)
  int head, j0 = 0, n;  // the partitions [j0, n) to read
  bool live = true;
  if constexpr (PACKED) {
    head = blockIdx.x % p.num_heads;
    const int si = blockIdx.x / p.num_heads;  // seq * max_query_len + i
    const int seq = si / p.max_query_len, i = si % p.max_query_len;
    const PackedSeq ps = packed_seq(p, seq);
    live = i < ps.q_len;
    row = static_cast<int64_t>(ps.q_begin + i) * p.num_heads + head;
    const PartRange pr = packed_row_parts(ps, i, head % p.group, p.group, p.window,
                                          p.part_tokens, p.num_parts);
    j0 = pr.first;
    n = pr.end;
  } else {
    const int rs = blockIdx.x;  // seq * num_heads + head
    const int seq = rs / p.num_heads;
    head = rs % p.num_heads;
    row = rs;
    const SeqSpan span = seq_span(clamp_seq_len(p, seq), p.window);
    n = min(live_parts(span, p.part_tokens), p.num_parts);
  }
  const int64_t base = row * p.num_parts;
  const int c = tid % V4, slice = tid / V4;

  // Everything above read only inputs; the partials come from the decode grid, which this
  // launch may overlap (programmatic dependent launch): wait for it here, and let whatever
  // follows on the stream be scheduled already (it waits for this grid in turn). A CTA with no
  // row (packed mode: a token past its sequence's q_len) waits too, so this grid never completes
  // before the decode grid does: whatever follows relies on that. With p.early_trigger (short
  // partitions) the next kernel may launch even before this wait: this grid's CTAs are all
  // resident once they reach it, so the next one's can only take what the decode grid frees, and
  // the next decode's speculative L2 prefetch then overlaps this merge and the decode's tail.
  if (p.early_trigger) pdl_launch_dependents();
  pdl_wait();
  if (!p.early_trigger) pdl_launch_dependents();
  SWA_OPS_TL_MARK(tl_marks, waited);
  if (!live) return;

  constexpr int kBatch = 8;
#ifndef SWA_OPS_MERGE_DIRECT  // build-time, for A/B: the most partitions the direct path takes
#define SWA_OPS_MERGE_DIRECT 8
#endif
  static_assert(SWA_OPS_MERGE_DIRECT <= kBatch, "the direct path loads one batch");
  if (n - j0 <= SWA_OPS_MERGE_DIRECT) {
    // Few partitions (seed's and mistral-128k's 4): thread c < V4 loads every one of its column's
    // at once and writes the row itself; no slices, so no shared memory and no barrier on the
    // path from the decode grid's end to this row's output.
    if (tid >= V4) return;
    const float4* src = reinterpret_cast<const float4*>(p.part_out + base * D) + tid;
    float mjs[kBatch], ljs[kBatch];
    float4 vs[kBatch];
    load_partitions<kBatch, V4>(p, base, src, j0, 1, n, mjs, ljs, vs);
    store_merged_row<T, D, kBatch, true>(p, head, row, tid, [&](int b, float& m, float& l,
                                                                 float4& v) {
      m = mjs[b];
      l = ljs[b];
      v = vs[b];
    });
    if constexpr (part_rows_kept_in_l2(D, PACKED)) {
      // Every lane of this warp holds its columns' values now: the first lane of each 128-byte
      // line drops it from L2 (never written back; the next call rewrites it).
      const int warp_base = tid & ~31;
      warp_sync_lanes(V4 - warp_base >= 32 ? 0xffffffffu : (1u << (V4 - warp_base)) - 1u);
      if (tid % 8 == 0)
        for (int j = j0; j < n; ++j) discard_l2_line(src + static_cast<int64_t>(j) * V4);
    }
    SWA_OPS_TL_WRITE(p, kTimelineMergeBase + static_cast<int64_t>(blockIdx.x), tl_marks, 2);
    return;
  }

  // One pass, online over this slice's partitions, kBatch at a time: a batch's loads are issued
  // together before any is used (one L2 round trip per batch), then folded in one step.
  // (single-128k's grid has 33 partitions, but its window starts on a tile boundary, so 32 are
  // live: one batch over 4 slices. Batches of 9, meant for the 33rd, measured no faster there and
  // slower on seed, run 129: 80 registers instead of 72, so fewer merge CTAs fit beside the
  // decode grid.)
  float mx = kNegInfM, sum = 0.f;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  if (slice < SLICES) {
    const float4* src = reinterpret_cast<const float4*>(p.part_out + base * D) + c;
    for (int jb = j0 + slice; jb < n; jb += kBatch * SLICES) {
      float mjs[kBatch], ljs[kBatch];
      float4 vs[kBatch];
      load_partitions<kBatch, V4>(p, base, src, jb, SLICES, n, mjs, ljs, vs);
      // One online step per batch: its max first, then the partitions' weights independently
      // (no chain of rescales through the batch). Sentinels (sum 0: empty, or past n) count not.
      float bm = kNegInfM;
#pragma unroll
      for (int b = 0; b < kBatch; ++b)
        if (ljs[b] > 0.f) bm = fmaxf(bm, mjs[b]);
      if (bm != kNegInfM) {
        const float mn = fmaxf(mx, bm);
        const float a = fast_exp2(mx - mn);  // mx = -inf at first: 0, and acc is 0 anyway
        acc.x *= a; acc.y *= a; acc.z *= a; acc.w *= a;
        sum *= a;
#pragma unroll
        for (int b = 0; b < kBatch; ++b) {
          if (!(ljs[b] > 0.f)) continue;
          const float w = fast_exp2(mjs[b] - mn) * ljs[b];
          acc.x += w * vs[b].x; acc.y += w * vs[b].y; acc.z += w * vs[b].z; acc.w += w * vs[b].w;
          sum += w;
        }
        mx = mn;
      }
    }
    acc_s[slice][c] = acc;
    if (c == 0) {
      max_s[slice] = mx;
      sum_s[slice] = sum;
    }
  }
  __syncthreads();
  if (tid < V4) {
    store_merged_row<T, D, SLICES, false>(p, head, row, tid, [&](int k, float& m, float& l,
                                                                  float4& v) {
      m = max_s[k];
      l = sum_s[k];
      v = acc_s[k][tid];
    });
  }
  if constexpr (part_rows_kept_in_l2(D, PACKED)) {
    // Every partition row has been read (the barrier above): drop their lines from L2, as the
    // direct path does, after the row's output went out.
    constexpr int kLines = D / 32;  // 128-byte lines per partition row
    for (int i = tid; i < (n - j0) * kLines; i += kMergeThreads)
      discard_l2_line(p.part_out + (base + j0 + i / kLines) * D + (i % kLines) * 32);
  }
  SWA_OPS_TL_WRITE(p, kTimelineMergeBase + static_cast<int64_t>(blockIdx.x), tl_marks, 2);
}

}  // namespace swa_ops
