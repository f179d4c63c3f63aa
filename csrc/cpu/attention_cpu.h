// Torch-free CPU attention over a paged KV cache (the CPU half of swa_ops::paged_attention).
//
// One work item = (sequence, kv head, chunk of query rows). It loads each visible K/V row once,
// converts it to fp32, and uses it for every query head of the GQA group and every row of the
// chunk, with an fp32 online softmax. Keys are visited only inside the chunk's window
// [window_start(first row), last row], so block-table entries before the window are never read
// and the cost is O(rows x W), never O(context).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace swa_ops::cpu {

// Everything the CPU kernel needs; pointers are raw, strides in elements.
struct AttentionParams {
  const void* query;        // [num_tokens, num_heads, head_size], q_stride_t / q_stride_h
  const void* key_cache;    // [num_blocks, block_size, num_kv_heads, head_size]
  const void* value_cache;  // same shape as key_cache (own strides)
  void* out;                // [num_tokens, num_heads, head_size], contiguous
  const int32_t* block_tables;  // [num_seqs, max_blocks_per_seq], row stride bt_stride
  const int32_t* seq_lens;      // [num_seqs]
  const int32_t* query_start_loc;  // [num_seqs + 1]
  const float* sinks;       // [num_heads] or nullptr
  int64_t q_stride_t, q_stride_h;
  int64_t k_stride_b, k_stride_t, k_stride_h;  // key_cache strides
  int64_t v_stride_b, v_stride_t, v_stride_h;  // value_cache strides
  int64_t bt_stride;
  int num_heads, num_kv_heads, head_size, block_size;
  float scale;
  int sliding_window;       // > 0: window of W keys; <= 0: full causal
  float soft_cap;           // > 0: cap * tanh(s / cap)
  float k_scale, v_scale;   // fp8 dequantization (1 for other caches)
};

// One unit of parallel work.
struct WorkItem {
  int seq;
  int kv_head;
  int row_begin, row_end;  // query rows of the sequence, [begin, end)
};

inline int64_t window_start(int64_t pos, int window) {
  return window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
}

// Scalar conversion to fp32; the cache element types provide `operator float` (c10 types) or are
// float already. fp8 values are multiplied by their scale by the caller.
template <typename T>
inline float to_float(T x) { return static_cast<float>(x); }

// Scores of one query row against keys [lo, hi) of a converted tile. Four keys at a time, each
// with 8 independent partial sums: four independent FMA chains hide latency, and no single
// reduction has to be reassociated for the compiler to vectorize it (no -ffast-math needed).
inline float hsum8(const float* a) {
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

inline void row_scores(const float* __restrict__ q, const float* __restrict__ k, int D, int lo,
                       int hi, float* __restrict__ s) {
  int j = lo;
  for (; j + 4 <= hi; j += 4) {
    const float* k0 = k + size_t(j) * D;
    const float* k1 = k0 + D;
    const float* k2 = k1 + D;
    const float* k3 = k2 + D;
    float a0[8] = {}, a1[8] = {}, a2[8] = {}, a3[8] = {};
    for (int d = 0; d < D; d += 8)
      for (int l = 0; l < 8; ++l) {
        const float x = q[d + l];
        a0[l] += x * k0[d + l];
        a1[l] += x * k1[d + l];
        a2[l] += x * k2[d + l];
        a3[l] += x * k3[d + l];
      }
    s[j] = hsum8(a0);
    s[j + 1] = hsum8(a1);
    s[j + 2] = hsum8(a2);
    s[j + 3] = hsum8(a3);
  }
  for (; j < hi; ++j) {
    const float* kj = k + size_t(j) * D;
    float a[8] = {};
    for (int d = 0; d < D; d += 8)
      for (int l = 0; l < 8; ++l) a[l] += q[d + l] * kj[d + l];
    s[j] = hsum8(a);
  }
}

// acc[0:D] += sum_j p[j] * v[j, 0:D] over [lo, hi), four keys per pass so each load/store of the
// accumulator row carries four FMAs.
inline void accumulate_pv(float* __restrict__ acc, const float* __restrict__ p,
                          const float* __restrict__ v, int D, int lo, int hi) {
  int j = lo;
  for (; j + 4 <= hi; j += 4) {
    const float* v0 = v + size_t(j) * D;
    const float* v1 = v0 + D;
    const float* v2 = v1 + D;
    const float* v3 = v2 + D;
    const float p0 = p[j], p1 = p[j + 1], p2 = p[j + 2], p3 = p[j + 3];
    for (int d = 0; d < D; ++d) acc[d] += p0 * v0[d] + p1 * v1[d] + p2 * v2[d] + p3 * v3[d];
  }
  for (; j < hi; ++j) {
    const float* vj = v + size_t(j) * D;
    const float pj = p[j];
    for (int d = 0; d < D; ++d) acc[d] += pj * vj[d];
  }
}

// Keys per tile: enough to amortize the online-softmax rescale, small enough to stay in L1/L2.
constexpr int kKeyTile = 64;

// Runs one work item. `Q` is the query/output element type, `KV` the cache element type.
template <typename Q, typename KV>
void attend(const AttentionParams& p, const WorkItem& w) {
  const int D = p.head_size;
  const int group = p.num_heads / p.num_kv_heads;
  const int q_begin = p.query_start_loc[w.seq];
  const int q_len = p.query_start_loc[w.seq + 1] - q_begin;
  const int64_t seq_len = p.seq_lens[w.seq];
  const int chunk = w.row_end - w.row_begin;
  const int R = chunk * group;  // rows of this work item: (query row, head in group)

  // Absolute position of query row i is seq_len - q_len + i.
  const int64_t first_pos = seq_len - q_len + w.row_begin;
  const int64_t last_pos = seq_len - q_len + w.row_end - 1;
  const int64_t key_lo = window_start(first_pos, p.sliding_window);
  const int64_t key_hi = std::min<int64_t>(last_pos + 1, seq_len);  // exclusive

  // Scratch in one allocation: q [R, D] (pre-scaled), acc [R, D], k/v tiles [kKeyTile, D],
  // scores [kKeyTile], row max and row sum [R].
  thread_local std::vector<float> scratch;
  const size_t need = size_t(R) * D * 2 + size_t(kKeyTile) * D * 2 + kKeyTile + 2 * size_t(R);
  if (scratch.size() < need) scratch.resize(need);
  float* qf = scratch.data();
  float* acc = qf + size_t(R) * D;
  float* kt = acc + size_t(R) * D;
  float* vt = kt + size_t(kKeyTile) * D;
  float* s = vt + size_t(kKeyTile) * D;
  float* m = s + kKeyTile;
  float* l = m + R;

  const Q* query = static_cast<const Q*>(p.query);
  for (int i = 0; i < chunk; ++i) {
    for (int g = 0; g < group; ++g) {
      const int r = i * group + g;
      const int h = w.kv_head * group + g;
      const Q* src = query + (q_begin + w.row_begin + i) * p.q_stride_t + h * p.q_stride_h;
      // Without a soft-cap the scale can be folded into q; with one, tanh needs the true logit,
      // which scale * (q.k) and (scale * q).k give up to rounding alike.
      for (int d = 0; d < D; ++d) qf[size_t(r) * D + d] = to_float(src[d]) * p.scale;
      std::fill(acc + size_t(r) * D, acc + size_t(r + 1) * D, 0.f);
      m[r] = -std::numeric_limits<float>::infinity();
      l[r] = 0.f;
    }
  }

  const KV* kc = static_cast<const KV*>(p.key_cache);
  const KV* vc = static_cast<const KV*>(p.value_cache);
  const int32_t* table = p.block_tables + int64_t(w.seq) * p.bt_stride;
  for (int64_t t0 = key_lo; t0 < key_hi; t0 += kKeyTile) {
    const int n = int(std::min<int64_t>(kKeyTile, key_hi - t0));
    // Gather and convert the tile once for all R rows.
    for (int j = 0; j < n; ++j) {
      const int64_t pos = t0 + j;
      const int64_t block = table[pos / p.block_size];
      const int64_t off = pos % p.block_size;
      const KV* ks = kc + block * p.k_stride_b + off * p.k_stride_t + w.kv_head * p.k_stride_h;
      const KV* vs = vc + block * p.v_stride_b + off * p.v_stride_t + w.kv_head * p.v_stride_h;
      float* kd = kt + size_t(j) * D;
      float* vd = vt + size_t(j) * D;
      for (int d = 0; d < D; ++d) kd[d] = to_float(ks[d]) * p.k_scale;
      for (int d = 0; d < D; ++d) vd[d] = to_float(vs[d]) * p.v_scale;
    }
    for (int i = 0; i < chunk; ++i) {
      const int64_t pos = first_pos + i;
      // Visible keys of this row inside the tile: [lo, hi).
      const int lo = int(std::max<int64_t>(window_start(pos, p.sliding_window) - t0, 0));
      const int hi = int(std::min<int64_t>(pos + 1 - t0, n));
      if (lo >= hi) continue;
      for (int g = 0; g < group; ++g) {
        const int r = i * group + g;
        const float* qr = qf + size_t(r) * D;
        row_scores(qr, kt, D, lo, hi, s);
        float tile_max = -std::numeric_limits<float>::infinity();
        for (int j = lo; j < hi; ++j) {
          if (p.soft_cap > 0.f) s[j] = p.soft_cap * std::tanh(s[j] / p.soft_cap);
          tile_max = std::max(tile_max, s[j]);
        }
        const float m_new = std::max(m[r], tile_max);
        // m[r] == -inf only before the row's first visible key, when acc and l are still 0.
        const float alpha = std::exp(m[r] - m_new);
        float* ar = acc + size_t(r) * D;
        float sum = 0.f;
        if (alpha != 1.f)
          for (int d = 0; d < D; ++d) ar[d] *= alpha;
        for (int j = lo; j < hi; ++j) {
          s[j] = std::exp(s[j] - m_new);  // scores become probabilities in place
          sum += s[j];
        }
        accumulate_pv(ar, s, vt, D, lo, hi);
        l[r] = l[r] * alpha + sum;
        m[r] = m_new;
      }
    }
  }

  Q* out = static_cast<Q*>(p.out);
  for (int i = 0; i < chunk; ++i) {
    for (int g = 0; g < group; ++g) {
      const int r = i * group + g;
      const int h = w.kv_head * group + g;
      float denom = l[r];
      float norm = 1.f;
      if (p.sinks != nullptr) {
        // The sink joins the softmax denominator once per row and carries no value.
        const float sink = p.sinks[h];
        const float m_fin = std::max(m[r], sink);
        norm = std::exp(m[r] - m_fin);  // 0 when the row saw no key (m = -inf)
        denom = denom * norm + std::exp(sink - m_fin);
      }
      // A row that saw no key has acc = 0 and l = 0: it outputs zeros, never NaN.
      const float inv = denom > 0.f ? norm / denom : 0.f;
      Q* dst = out + ((int64_t(q_begin) + w.row_begin + i) * p.num_heads + h) * D;
      const float* ar = acc + size_t(r) * D;
      for (int d = 0; d < D; ++d) dst[d] = static_cast<Q>(ar[d] * inv);
    }
  }
}

}  // namespace swa_ops::cpu
