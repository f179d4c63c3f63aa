// Merge of split-KV partial results: one CTA per (sequence, query head).
//
// Each live partition j left a softmax-normalised output O_j, its max m_j (log2 units) and its
// denominator l_j. The row's output is sum_j w_j O_j / (sum_j w_j [+ 2^(sink - M)]) with
// w_j = 2^(m_j - M) l_j and M the max over live partitions and the sink. Only live partitions are
// read; their count follows from seq_len exactly as the decode grid derived them (split.h).
// The weights go to shared memory first; then thread slices stream disjoint partitions' rows so
// their loads are independent and in flight together (a single lane walking all partitions one
// dependent step at a time cost ~20 us on a 65-partition sequence).
#pragma once

#include "swa_ops/compat.h"
#include "swa_ops/params.h"
#include "swa_ops/split.h"

namespace swa_ops {

constexpr int kMergeThreads = 128;

template <typename T, int D>
__global__ void __launch_bounds__(kMergeThreads) merge_kernel(const DecodeParams p) {
  constexpr float kLog2eM = 1.4426950408889634f;
  constexpr float kNegInfM = -__builtin_huge_valf();
  constexpr int V4 = D / 4;                       // float4 columns per row
  constexpr int SLICES = kMergeThreads / V4;      // threads per column, over partitions
  constexpr int NWARP = kMergeThreads / 32;
  static_assert(V4 <= kMergeThreads, "head size too large for one merge CTA");
  extern __shared__ float w_s[];                  // [num_parts] weights w_j
  __shared__ float red[NWARP];
  __shared__ float4 acc_s[SLICES][V4];

  const int tid = threadIdx.x, lane = tid % 32, wid = tid / 32;
  const int row = blockIdx.x;  // seq * num_heads + head
  const int seq = row / p.num_heads, head = row % p.num_heads;
  const SeqSpan span = seq_span(clamp_seq_len(p, seq), p.window);
  const int n = min(live_parts(span, p.part_tokens), p.num_parts);
  const int64_t base = static_cast<int64_t>(row) * p.num_parts;
  float sk = kNegInfM;
  if (p.sinks != nullptr) sk = p.sinks[head] * kLog2eM;

  // Everything above read only inputs; the partials come from the decode grid, which this
  // launch may overlap (programmatic dependent launch): wait for it here.
  pdl_wait();

  float mx = kNegInfM;
  for (int j = tid; j < n; j += kMergeThreads) mx = fmaxf(mx, p.part_max[base + j]);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, shfl_xor(mx, off));
  if (lane == 0) red[wid] = mx;
  __syncthreads();
  mx = red[0];
#pragma unroll
  for (int w = 1; w < NWARP; ++w) mx = fmaxf(mx, red[w]);
  mx = fmaxf(mx, sk);
  __syncthreads();  // red is reused below

  // Sentinels (sum 0) and an all-empty row (mx = -inf) get weight 0, never exp2(-inf - -inf).
  float dsum = 0.f;
  for (int j = tid; j < n; j += kMergeThreads) {
    const float lj = p.part_sum[base + j];
    const float wj = lj > 0.f ? fast_exp2(p.part_max[base + j] - mx) * lj : 0.f;
    w_s[j] = wj;
    dsum += wj;
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) dsum += shfl_xor(dsum, off);
  if (lane == 0) red[wid] = dsum;
  __syncthreads();
  float denom = 0.f;
#pragma unroll
  for (int w = 0; w < NWARP; ++w) denom += red[w];
  if (sk != kNegInfM) denom += fast_exp2(sk - mx);

  const int c = tid % V4, slice = tid / V4;
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
  if (slice < SLICES) {
    const float4* src = reinterpret_cast<const float4*>(p.part_out + base * D) + c;
#pragma unroll 4
    for (int j = slice; j < n; j += SLICES) {
      const float wj = w_s[j];
      const float4 v = src[static_cast<int64_t>(j) * V4];
      acc.x += wj * v.x; acc.y += wj * v.y; acc.z += wj * v.z; acc.w += wj * v.w;
    }
    acc_s[slice][c] = acc;
  }
  __syncthreads();
  if (tid < V4) {
#pragma unroll
    for (int s = 1; s < SLICES; ++s) {
      const float4 v = acc_s[s][tid];
      acc.x += v.x; acc.y += v.y; acc.z += v.z; acc.w += v.w;
    }
    const float inv = denom > 0.f ? 1.f / denom : 0.f;
    const uint32_t lo = pack2<T>(acc.x * inv, acc.y * inv);
    const uint32_t hi = pack2<T>(acc.z * inv, acc.w * inv);
    T* out = static_cast<T*>(p.out) + static_cast<int64_t>(row) * D;
    *reinterpret_cast<uint2*>(out + 4 * tid) = make_uint2(lo, hi);
  }
}

}  // namespace swa_ops
