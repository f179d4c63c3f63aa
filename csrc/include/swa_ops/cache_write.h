// reshape_and_cache: scatter each token's K/V rows into its cache slot, optionally quantizing to
// fp8 e4m3fn. One CTA per token; each thread moves one 8-element chunk of K and of V per step.
#pragma once

#include "swa_ops/compat.h"
#include "swa_ops/params.h"

namespace swa_ops {

constexpr int kCacheWriteThreads = 128;

template <typename S>
SWA_D float src_to_float(S v);
template <>
SWA_D float src_to_float<float>(float v) { return v; }
template <>
SWA_D float src_to_float<fp16_t>(fp16_t v) { return to_float(v); }
template <>
SWA_D float src_to_float<bf16_t>(bf16_t v) { return to_float(v); }

// 8 consecutive source elements as floats; 16-byte loads when `vec` (aligned rows).
template <typename S>
SWA_D void load8(const S* src, bool vec, float* x) {
  if (vec) {
    if constexpr (sizeof(S) == 4) {
      const Vec16 a = load16(src), b = load16(src + 4);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        x[i] = __uint_as_float(a.w[i]);
        x[4 + i] = __uint_as_float(b.w[i]);
      }
    } else {
      const Vec16 a = load16(src);
#pragma unroll
      for (int i = 0; i < 4; ++i) unpack2<S>(a.w[i], x[2 * i], x[2 * i + 1]);
    }
  } else {
#pragma unroll
    for (int i = 0; i < 8; ++i) x[i] = src_to_float(src[i]);
  }
}

// Cache element type C: the source type S itself (a pure copy, bit-exact) or uint8_t for fp8.
template <typename S, typename C>
SWA_D void store8(C* dst, const S* src, bool vec, const float* scale) {
  if constexpr (sizeof(C) == 1) {
    float x[8];
    load8(src, vec, x);
    const float s = *scale;
    uint32_t w[2] = {0u, 0u};
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      // Exactly swa_ops.reference.quantize_fp8: IEEE fp32 division (not the fast-math
      // approximation), clamp to +-448, round to nearest even.
      const float d = __fdiv_rn(x[i], s);
      const float q = d != d ? d : fminf(fmaxf(d, -448.f), 448.f);  // clamp keeps NaN, as torch's
      w[i / 4] |= static_cast<uint32_t>(float_to_e4m3(q)) << (8 * (i % 4));
    }
    if (vec) {
      *reinterpret_cast<uint2*>(dst) = make_uint2(w[0], w[1]);
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) dst[i] = static_cast<uint8_t>(w[i / 4] >> (8 * (i % 4)));
    }
  } else {
    if (vec) {
      if constexpr (sizeof(S) == 4) {
        store16(dst, load16(src));
        store16(dst + 4, load16(src + 4));
      } else {
        store16(dst, load16(src));
      }
    } else {
#pragma unroll
      for (int i = 0; i < 8; ++i) dst[i] = src[i];
    }
  }
}

template <typename S, typename C>
__global__ void __launch_bounds__(kCacheWriteThreads) cache_write_kernel(const CacheWriteParams p,
                                                                         bool vec) {
  const int tok = blockIdx.x;
  const int64_t slot = p.slot_mapping[tok];
  if (slot < 0) return;  // padding token: nothing is written
  const int64_t blk = slot / p.block_size, off = slot % p.block_size;
  const int chunks_per_head = p.head_size / 8;
  const int n = p.num_kv_heads * chunks_per_head;
  const S* key = static_cast<const S*>(p.key) + tok * p.key_stride_tok;
  const S* value = static_cast<const S*>(p.value) + tok * p.value_stride_tok;
  const int64_t dst_base = blk * p.cache_stride_block + off * p.cache_stride_tok;
  C* kc = static_cast<C*>(p.k_cache) + dst_base;
  C* vc = static_cast<C*>(p.v_cache) + dst_base;
  for (int i = threadIdx.x; i < n; i += kCacheWriteThreads) {
    const int h = i / chunks_per_head, c = (i % chunks_per_head) * 8;
    store8<S, C>(kc + h * p.cache_stride_head + c, key + h * p.key_stride_head + c, vec, p.k_scale);
    store8<S, C>(vc + h * p.cache_stride_head + c, value + h * p.value_stride_head + c, vec,
                 p.v_scale);
  }
}

}  // namespace swa_ops
