// Merge of split-KV partial results: one warp per (sequence, query head).
//
// Each live partition j left a softmax-normalised output O_j, its max m_j (log2 units) and its
// denominator l_j. The full row is sum_j 2^(m_j - M) l_j O_j / (sum_j 2^(m_j - M) l_j [+ sink]),
// with M the max over the live partitions (and the sink logit). Only live partitions are read:
// their count follows from seq_len exactly as the decode grid derived them (split.h).
#pragma once

#include "swa_ops/compat.h"
#include "swa_ops/params.h"
#include "swa_ops/split.h"

namespace swa_ops {

constexpr int kMergeWarps = 4;

template <typename T, int D>
__global__ void __launch_bounds__(kMergeWarps * 32) merge_kernel(const DecodeParams p) {
  constexpr float kLog2eM = 1.4426950408889634f;
  constexpr float kNegInfM = -__builtin_huge_valf();
  constexpr int V4 = D / 4;                        // float4 columns per row
  constexpr int PER_LANE = (V4 + 31) / 32;
  const int lane = threadIdx.x % 32;
  const int row = blockIdx.x * kMergeWarps + threadIdx.x / 32;  // seq * num_heads + head
  if (row >= p.num_seqs * p.num_heads) return;
  const int seq = row / p.num_heads, head = row % p.num_heads;

  const SeqSpan span = seq_span(clamp_seq_len(p, seq), p.window);
  const int n = min(live_parts(span, p.part_tokens), p.num_parts);
  const int64_t base = static_cast<int64_t>(row) * p.num_parts;

  float mx = kNegInfM;
  for (int j = lane; j < n; j += 32) mx = fmaxf(mx, p.part_max[base + j]);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, shfl_xor(mx, off));
  float sk = kNegInfM;
  if (p.sinks != nullptr) {
    sk = p.sinks[head] * kLog2eM;
    mx = fmaxf(mx, sk);
  }

  float4 acc[PER_LANE];
#pragma unroll
  for (int i = 0; i < PER_LANE; ++i) acc[i] = make_float4(0.f, 0.f, 0.f, 0.f);
  float denom = 0.f;
  if (mx != kNegInfM) {  // else nothing is visible: the output is exactly zero
    for (int j = 0; j < n; ++j) {
      const float lj = p.part_sum[base + j];
      if (!(lj > 0.f)) continue;  // sentinel of an empty partition
      const float f = fast_exp2(p.part_max[base + j] - mx) * lj;
      denom += f;
      const float4* src = reinterpret_cast<const float4*>(p.part_out + (base + j) * D);
#pragma unroll
      for (int i = 0; i < PER_LANE; ++i) {
        const int c = lane + 32 * i;
        if (c < V4) {
          const float4 v = src[c];
          acc[i].x += f * v.x; acc[i].y += f * v.y; acc[i].z += f * v.z; acc[i].w += f * v.w;
        }
      }
    }
    if (p.sinks != nullptr) denom += fast_exp2(sk - mx);
  }
  const float inv = denom > 0.f ? 1.f / denom : 0.f;
  T* out = static_cast<T*>(p.out) + static_cast<int64_t>(row) * D;
#pragma unroll
  for (int i = 0; i < PER_LANE; ++i) {
    const int c = lane + 32 * i;
    if (c < V4) {
      const uint32_t lo = pack2<T>(acc[i].x * inv, acc[i].y * inv);
      const uint32_t hi = pack2<T>(acc[i].z * inv, acc[i].w * inv);
      *reinterpret_cast<uint2*>(out + 4 * c) = make_uint2(lo, hi);
    }
  }
}

}  // namespace swa_ops
