// CPU test of the portable ldmatrix / mma.sync path that HIP builds use
// (csrc/include/swa_ops/mma_portable.h), run by .ci/hip_check.sh: CI has no AMD GPU, so this is
// where that code runs at all. It also runs the fp8 decode tile math (fp8_frag.h: raw e4m3 bytes
// into fp16 operands, a permuted k axis for Q K^T, V read transposed in byte pairs) on top of
// those primitives, which checks that scheme's layout algebra against a plain matrix product.
//
// 32 threads play the 32 lanes of a warp; a shuffle publishes each lane's value into a slot
// between two barriers. The header's code is used as is; only the primitives it needs (compat.h's
// lane32, shfl32, unpack2 on ROCm) are provided here. Expected results follow the PTX ISA's
// fragment layouts for ldmatrix .x4 (plain and .trans) and mma.sync.m16n8k16 (row.col), which the
// NVIDIA path gets from the hardware. Inputs are small multiples of 1/2, so every product and sum
// is exact in fp32 and results must match bit for bit.
//
//   g++ -std=c++20 -O1 -pthread -I csrc/include csrc/hip_check/mma_portable_test.cpp && ./a.out
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#define SWA_D inline
#define SWA_HD inline

namespace swa_ops {

struct fp16_t {};  // element-type tags: only unpack2<T> looks at them here
struct bf16_t {};

using smem_addr_t = const unsigned char*;

thread_local int g_lane = 0;
std::barrier<> g_warp(32);
uint64_t g_slot[32];

int lane32() { return g_lane; }
uint64_t shfl64(uint64_t v, int src) {
  g_slot[g_lane] = v;
  g_warp.arrive_and_wait();
  const uint64_t r = g_slot[src & 31];
  g_warp.arrive_and_wait();
  return r;
}
uint32_t shfl32(uint32_t v, int src) { return static_cast<uint32_t>(shfl64(v, src)); }
smem_addr_t shfl32(smem_addr_t p, int src) {
  return reinterpret_cast<smem_addr_t>(shfl64(reinterpret_cast<uintptr_t>(p), src));
}

float half_to_float(uint16_t h) {
  const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  float v = e == 0 ? std::ldexp(static_cast<float>(m), -24)
                   : std::ldexp(static_cast<float>(m | 0x400), e - 25);
  return (h & 0x8000) ? -v : v;
}
float bf16_to_float(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

template <typename T>
void unpack2(uint32_t r, float& a, float& b);
template <>
void unpack2<fp16_t>(uint32_t r, float& a, float& b) {
  a = half_to_float(r & 0xffff);
  b = half_to_float(r >> 16);
}
template <>
void unpack2<bf16_t>(uint32_t r, float& a, float& b) {
  a = bf16_to_float(r & 0xffff);
  b = bf16_to_float(r >> 16);
}

float e4m3_to_float(uint8_t b) {  // e4m3fn: bias 7, no infinities (0x7f / 0xff, NaN, unused)
  const int e = (b >> 3) & 0xf, m = b & 7;
  const float v = e == 0 ? std::ldexp(static_cast<float>(m), -9)
                         : std::ldexp(static_cast<float>(8 + m), e - 10);
  return (b & 0x80) ? -v : v;
}
uint16_t fp16_bits(float v);  // below: bits of an fp16 that represents v exactly
template <typename T>
uint32_t pack2(float lo, float hi);  // below: exact values only
uint32_t e4m3x2_to_half2_bits(uint32_t pair) {
  return fp16_bits(e4m3_to_float(pair & 0xff)) |
         (static_cast<uint32_t>(fp16_bits(e4m3_to_float((pair >> 8) & 0xff))) << 16);
}

}  // namespace swa_ops

#include "swa_ops/mma_portable.h"
#include "swa_ops/fp8_frag.h"
#include "swa_ops/swap_frag.h"
#include "swa_ops/ring_layout.h"

namespace {

using namespace swa_ops;

// Bits of an fp16 / bf16 that represents v exactly (v: 0 or a normal multiple of 1/2 below 8).
uint16_t bits_of(float v, bool bf16) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  if (bf16) return static_cast<uint16_t>(u >> 16);
  if (v == 0.f) return 0;
  const uint32_t sign = (u >> 16) & 0x8000, exp = ((u >> 23) & 0xff) - 127 + 15;
  return static_cast<uint16_t>(sign | (exp << 10) | ((u >> 13) & 0x3ff));
}
uint32_t pack(float lo, float hi, bool bf16) {
  return bits_of(lo, bf16) | (static_cast<uint32_t>(bits_of(hi, bf16)) << 16);
}

// Runs f(lane) on 32 threads, one per lane of the warp.
template <typename F>
void warp_run(F f) {
  std::vector<std::thread> lanes;
  for (int l = 0; l < 32; ++l)
    lanes.emplace_back([&f, l] {
      g_lane = l;
      f(l);
    });
  for (auto& t : lanes) t.join();
}

}  // namespace
namespace swa_ops {
// Normal fp16 values (every nonzero e4m3 value is one) and 0.
uint16_t fp16_bits(float v) { return bits_of(v, false); }
template <>
uint32_t pack2<fp16_t>(float lo, float hi) { return pack(lo, hi, false); }
template <>
uint32_t pack2<bf16_t>(float lo, float hi) { return pack(lo, hi, true); }
}  // namespace swa_ops
namespace {

int g_failures = 0;
bool g_quiet = false;  // mutation runs: count mismatches, print none
void expect(bool ok, const char* what, int lane, int reg) {
  if (!ok && ++g_failures <= 10 && !g_quiet)
    std::printf("FAIL %s: lane %d register %d\n", what, lane, reg);
}

void test_ldmatrix(std::mt19937& rng) {
  // Four 8x8 matrices of distinct b16 values; their 32 rows sit in shuffled slots of a padded
  // buffer, so only the addresses the lanes pass can find them.
  constexpr int kStride = 24;
  std::vector<int> slot(32);
  for (int i = 0; i < 32; ++i) slot[i] = i;
  std::shuffle(slot.begin(), slot.end(), rng);
  std::vector<uint16_t> buf(32 * kStride, 0xdead);
  auto elem = [](int m, int r, int c) { return static_cast<uint16_t>(m * 64 + r * 8 + c + 1); };
  for (int m = 0; m < 4; ++m)
    for (int r = 0; r < 8; ++r)
      for (int c = 0; c < 8; ++c) buf[slot[m * 8 + r] * kStride + c] = elem(m, r, c);
  auto word = [](uint16_t lo, uint16_t hi) { return lo | (static_cast<uint32_t>(hi) << 16); };

  warp_run([&](int l) {
    // Lanes 8m..8m+7 give the rows of matrix m.
    const smem_addr_t addr = smem_addr(buf.data() + slot[l] * kStride);
    uint32_t r[4], t[4];
    ldmatrix_x4(addr, r[0], r[1], r[2], r[3]);
    ldmatrix_x4_trans(addr, t[0], t[1], t[2], t[3]);
    for (int i = 0; i < 4; ++i) {
      // Plain: row l/4, columns 2(l%4), 2(l%4)+1. Transposed: column l/4, rows 2(l%4), 2(l%4)+1.
      expect(r[i] == word(elem(i, l / 4, 2 * (l % 4)), elem(i, l / 4, 2 * (l % 4) + 1)),
             "ldmatrix_x4", l, i);
      expect(t[i] == word(elem(i, 2 * (l % 4), l / 4), elem(i, 2 * (l % 4) + 1, l / 4)),
             "ldmatrix_x4_trans", l, i);
    }
  });
}

void test_ldmatrix_x2(std::mt19937& rng) {
  // ldmatrix_x2 and ldmatrix_x2_trans of two 8x8 matrices (rows in shuffled slots).
  constexpr int kStride = 24;
  std::vector<int> slot(16);
  for (int i = 0; i < 16; ++i) slot[i] = i;
  std::shuffle(slot.begin(), slot.end(), rng);
  std::vector<uint16_t> buf(16 * kStride, 0xdead);
  auto elem = [](int m, int r, int c) { return static_cast<uint16_t>(m * 64 + r * 8 + c + 1); };
  for (int m = 0; m < 2; ++m)
    for (int r = 0; r < 8; ++r)
      for (int c = 0; c < 8; ++c) buf[slot[m * 8 + r] * kStride + c] = elem(m, r, c);
  auto word = [](uint16_t lo, uint16_t hi) { return lo | (static_cast<uint32_t>(hi) << 16); };
  warp_run([&](int l) {
    // Lanes 16..31 pass addresses too (ignored by .x2): a slot of garbage.
    const smem_addr_t addr = smem_addr(buf.data() + (l < 16 ? slot[l] : 0) * kStride + (l < 16 ? 0 : 16));
    uint32_t r[2];
    ldmatrix_x2(addr, r[0], r[1]);
    uint32_t t[2];
    ldmatrix_x2_trans(addr, t[0], t[1]);
    for (int i = 0; i < 2; ++i) {
      expect(t[i] == word(elem(i, 2 * (l % 4), l / 4), elem(i, 2 * (l % 4) + 1, l / 4)),
             "ldmatrix_x2_trans", l, i);
      expect(r[i] == word(elem(i, l / 4, 2 * (l % 4)), elem(i, l / 4, 2 * (l % 4) + 1)),
             "ldmatrix_x2", l, i);
    }
  });
}

// One decode tile of an fp8 cache through fp8_frag.h: S = Q K^T and O = P V for 16 rows, 16 keys
// and D = 48 (three 16-d chunks: an ldmatrix x4 and an x2, as D = 80 has), against plain loops
// (divided by kFp8OperandScale, the factor the operands carry). Codes include e4m3 subnormals.
void test_fp8_tile(std::mt19937& rng) {
  constexpr int D = 48, KCH = D / 16, kRowBytes = 2 * D + 16;  // the decode ring's 16-bit rows
  std::uniform_int_distribution<int> half_steps(-6, 6), exp(0, 10), man(0, 7), coin(0, 1);
  auto e4m3 = [&]() -> uint8_t {  // 0 or +-(1 + m/8) 2^(e-7) (e = 0: m/8 2^-6): exact products
    if (coin(rng) && coin(rng)) return 0;
    return static_cast<uint8_t>((coin(rng) << 7) | (exp(rng) << 3) | man(rng));
  };
  float Q[16][D], P[16][16], K[16][D], V[16][D];
  std::vector<uint8_t> ks(16 * kRowBytes, 0x7f), vs(16 * kRowBytes, 0x7f);  // 0x7f: NaN filler
  for (auto& row : Q) for (float& v : row) v = half_steps(rng) * 0.5f;
  for (auto& row : P) for (float& v : row) v = half_steps(rng) * 0.5f;
  for (int k = 0; k < 16; ++k)
    for (int d = 0; d < D; ++d) {
      ks[k * kRowBytes + d] = e4m3();
      vs[k * kRowBytes + d] = e4m3();
      K[k][d] = e4m3_to_float(ks[k * kRowBytes + d]);
      V[k][d] = e4m3_to_float(vs[k * kRowBytes + d]);
    }
  float S_ref[16][16], O_ref[16][D];
  for (int m = 0; m < 16; ++m) {
    for (int n = 0; n < 16; ++n) {
      float acc = 0.f;
      for (int d = 0; d < D; ++d) acc += Q[m][d] * K[n][d];
      S_ref[m][n] = acc / kFp8OperandScale;
    }
    for (int d = 0; d < D; ++d) {
      float acc = 0.f;
      for (int n = 0; n < 16; ++n) acc += P[m][n] * V[n][d];
      O_ref[m][d] = acc / kFp8OperandScale;
    }
  }
  warp_run([&](int l) {
    const int g = l / 4, t = l % 4, c0 = 2 * t;
    // Q's A fragments in fp8_q_dim order, as the decode kernel loads them.
    auto q_operand = [&](int kc, uint32_t (&a)[4]) {  // as the kernel: words, then split
      const int d = kc * 16 + 4 * t;
      for (int h = 0; h < 2; ++h) {
        const float* q = Q[g + 8 * h];
        fp8_split_pairs(pack(q[d], q[d + 1], false), pack(q[d + 2], q[d + 3], false), a[h],
                        a[h + 2]);
      }
    };
    for (int k = 0; k < 16; ++k)  // the permutation the kernel's Q staging (D > 128) follows
      expect(fp8_q_dim(k) == (k < 8 ? 2 * k : 2 * (k - 8) + 1), "fp8_q_dim", l, k);
    const int row = (l & 7) + ((l >> 3) & 1) * 8, hi16 = l >> 4;
    float s[2][4] = {};
    fp8_qk<KCH>(s, smem_addr(ks.data() + row * kRowBytes + hi16 * 16), q_operand);
    for (int n = 0; n < 2; ++n) {
      expect(s[n][0] == S_ref[g][8 * n + c0], "fp8_qk", l, 4 * n);
      expect(s[n][1] == S_ref[g][8 * n + c0 + 1], "fp8_qk", l, 4 * n + 1);
      expect(s[n][2] == S_ref[g + 8][8 * n + c0], "fp8_qk", l, 4 * n + 2);
      expect(s[n][3] == S_ref[g + 8][8 * n + c0 + 1], "fp8_qk", l, 4 * n + 3);
    }
    // P in the A layout the S accumulators give (keys in natural order).
    const uint32_t pa[4] = {pack(P[g][c0], P[g][c0 + 1], false), pack(P[g + 8][c0], P[g + 8][c0 + 1], false),
                            pack(P[g][c0 + 8], P[g][c0 + 9], false),
                            pack(P[g + 8][c0 + 8], P[g + 8][c0 + 9], false)};
    float o[2 * KCH][4] = {};
    fp8_pv<KCH>(o, pa, smem_addr(vs.data() + row * kRowBytes + hi16 * 16));
    for (int nt = 0; nt < 2 * KCH; ++nt) {
      const int col = fp8_out_col(nt, l);
      expect(o[nt][0] == O_ref[g][col], "fp8_pv", l, 4 * nt);
      expect(o[nt][1] == O_ref[g][col + 2], "fp8_pv", l, 4 * nt + 1);
      expect(o[nt][2] == O_ref[g + 8][col], "fp8_pv", l, 4 * nt + 2);
      expect(o[nt][3] == O_ref[g + 8][col + 2], "fp8_pv", l, 4 * nt + 3);
    }
  });
}

void test_movmatrix(std::mt19937& rng) {
  uint16_t X[8][8];
  std::uniform_int_distribution<int> v(0, 0xffff);
  for (auto& row : X) for (uint16_t& e : row) e = static_cast<uint16_t>(v(rng));
  warp_run([&](int l) {
    const int g = l / 4, t = l % 4;
    const uint32_t x = X[g][2 * t] | (static_cast<uint32_t>(X[g][2 * t + 1]) << 16);
    const uint32_t want = X[2 * t][g] | (static_cast<uint32_t>(X[2 * t + 1][g]) << 16);
    expect(movmatrix_trans(x) == want, "movmatrix_trans", l, 0);
  });
}

// One swapped decode tile (swap_frag.h): S^T = K Q^T for 16 keys x 8 heads and O^T = V^T P^T,
// from the ring's padded or swizzled rows (16-bit caches; ring_layout.h) or the raw e4m3 bytes in
// padded rows (fp8), for D = 48 (an ldmatrix x4 and an x2 on the fp8 path) and D = 128, against
// plain loops. Lanes' P^T operands come from the S^T accumulator layout through swap_p_operands,
// as in the kernel.
// Lane l (g = l / 4, t = l % 4) of the swapped tile over a 16-key K / V tile of rows kRowBytes
// apart, through the kernel's ldmatrix address patterns (decode_mma.h; READ_SWZ: the swizzled
// rows' addresses): S^T = K Q^T, checked against S_ref [key][column], then O^T = V^T P^T from
// P [key][column] in S^T's layout.
template <typename MT, bool FP8, int KCH, int kRowBytes, bool READ_SWZ = false>
void swap_lane_tile(int l, std::vector<uint8_t>& ks, std::vector<uint8_t>& vs,
                    const uint32_t (&qb)[KCH][2], const float (&S_ref)[16][8],
                    const float (&P)[16][8], float (&o)[KCH][4], const char* name) {
  const int g = l / 4, t = l % 4, row = (l & 7) + ((l >> 3) & 1) * 8;
  float s[4] = {};
  if constexpr (FP8) {
    fp8_qk_swap<KCH>(s, smem_addr(ks.data() + row * kRowBytes + (l >> 4) * 16), qb);
  } else {
    const smem_addr_t kb = smem_addr(ks.data());
    swap_qk_at<MT, KCH>(
        s,
        [&](int kc) { return kb + ring_chunk_offset(row, 2 * kc + (l >> 4), kRowBytes, READ_SWZ); },
        qb);
  }
  expect(s[0] == S_ref[g][2 * t], name, l, 0);
  expect(s[1] == S_ref[g][2 * t + 1], name, l, 1);
  expect(s[2] == S_ref[g + 8][2 * t], name, l, 2);
  expect(s[3] == S_ref[g + 8][2 * t + 1], name, l, 3);
  const float p_acc[4] = {P[g][2 * t], P[g][2 * t + 1], P[g + 8][2 * t], P[g + 8][2 * t + 1]};
  uint32_t pb0, pb1;
  swap_p_operands<MT>(p_acc, pb0, pb1);
  if constexpr (FP8) {
    fp8_pv_swap<KCH>(o, smem_addr(vs.data() + row * kRowBytes + (l >> 4) * 16), pb0, pb1);
  } else {
    const int vrow = (l & 7) + (l >> 4) * 8, h = (l >> 3) & 1;
    const smem_addr_t vb = smem_addr(vs.data());
    swap_pv_at<MT, KCH>(
        o, [&](int c) { return vb + ring_chunk_offset(vrow, 2 * c + h, kRowBytes, READ_SWZ); },
        pb0, pb1);
  }
}

// SWZ: the 16-bit tile is stored swizzled (D * 2 a multiple of 128); mutate: it is read as the
// other layout (must fail).
template <typename MT, bool FP8, int D = 48, bool SWZ = false>
void test_swap_tile(std::mt19937& rng, const char* name, bool mutate = false) {
  constexpr bool kBf16 = std::is_same<MT, bf16_t>::value;
  constexpr int KCH = D / 16;
  static_assert(!SWZ || (!FP8 && ring_rows_swizzle(2 * D)), "swizzled rows: 16-bit, D % 64 == 0");
  // the decode ring's padded 16-bit rows, or its swizzled dense ones
  constexpr int kRow = SWZ ? D : D + 8, kRowBytes = 2 * kRow;
  std::uniform_int_distribution<int> half_steps(-6, 6), exp(0, 10), man(0, 7), coin(0, 1);
  auto e4m3 = [&]() -> uint8_t {
    if (coin(rng) && coin(rng)) return 0;
    return static_cast<uint8_t>((coin(rng) << 7) | (exp(rng) << 3) | man(rng));
  };
  float Q[8][D], P[16][8], K[16][D], V[16][D];  // P: keys x heads, as S^T
  std::vector<uint8_t> ks(16 * kRowBytes, 0x7f), vs(16 * kRowBytes, 0x7f);
  for (auto& row : Q) for (float& v : row) v = half_steps(rng) * 0.5f;
  for (auto& row : P) for (float& v : row) v = half_steps(rng) * 0.5f;
  for (int k = 0; k < 16; ++k)
    for (int d = 0; d < D; ++d) {
      if constexpr (FP8) {
        ks[k * kRowBytes + d] = e4m3();
        vs[k * kRowBytes + d] = e4m3();
        K[k][d] = e4m3_to_float(ks[k * kRowBytes + d]);
        V[k][d] = e4m3_to_float(vs[k * kRowBytes + d]);
      } else {
        K[k][d] = half_steps(rng) * 0.5f;
        V[k][d] = half_steps(rng) * 0.5f;
        const uint16_t kb = bits_of(K[k][d], kBf16), vb = bits_of(V[k][d], kBf16);
        const int at = ring_chunk_offset(k, d / 8, kRowBytes, SWZ) + 2 * (d % 8);
        std::memcpy(&ks[at], &kb, 2);
        std::memcpy(&vs[at], &vb, 2);
      }
    }
  const float f = FP8 ? kFp8OperandScale : 1.f;
  float S_ref[16][8], O_ref[D][8];
  for (int k = 0; k < 16; ++k)
    for (int h = 0; h < 8; ++h) {
      float acc = 0.f;
      for (int d = 0; d < D; ++d) acc += Q[h][d] * K[k][d];
      S_ref[k][h] = acc / f;
    }
  for (int d = 0; d < D; ++d)
    for (int h = 0; h < 8; ++h) {
      float acc = 0.f;
      for (int k = 0; k < 16; ++k) acc += V[k][d] * P[k][h];
      O_ref[d][h] = acc / f;
    }
  warp_run([&](int l) {
    const int g = l / 4, t = l % 4;
    uint32_t qb[KCH][2];  // Q^T's B fragments, as the kernel loads them
    for (int kc = 0; kc < KCH; ++kc) {
      const float* q = Q[g];
      if constexpr (FP8) {
        const int d = kc * 16 + 4 * t;
        fp8_split_pairs(pack(q[d], q[d + 1], false), pack(q[d + 2], q[d + 3], false), qb[kc][0],
                        qb[kc][1]);
      } else {
        const int d = kc * 16 + 2 * t;
        qb[kc][0] = pack(q[d], q[d + 1], kBf16);
        qb[kc][1] = pack(q[d + 8], q[d + 9], kBf16);
      }
    }
    float o[KCH][4] = {};
    if (mutate) swap_lane_tile<MT, FP8, KCH, kRowBytes, !SWZ>(l, ks, vs, qb, S_ref, P, o, name);
    else swap_lane_tile<MT, FP8, KCH, kRowBytes, SWZ>(l, ks, vs, qb, S_ref, P, o, name);
    for (int c = 0; c < KCH; ++c) {
      const int d_lo = swap_out_dim(c, g, FP8), d_hi = swap_out_dim(c, g + 8, FP8);
      expect(o[c][0] == O_ref[d_lo][2 * t], name, l, 4 * c);
      expect(o[c][1] == O_ref[d_lo][2 * t + 1], name, l, 4 * c + 1);
      expect(o[c][2] == O_ref[d_hi][2 * t], name, l, 4 * c + 2);
      expect(o[c][3] == O_ref[d_hi][2 * t + 1], name, l, 4 * c + 3);
    }
  });
}

// kv-head pairing (swap_frag.h; decode_mma_kernel's PAIR): one swapped tile over paired rows of
// 2 D elements (kv head a's D, then b's: the cache's adjacent kv-head rows) in the ring's rows
// (16-bit: 2 D + 8 elements, as D' = 2 D's ring; fp8: 2 D bytes in D's 16-bit rows of 2 D + 16
// bytes), a random group g <= 4: columns 0..g-1 are kv head a's query heads, g..2g-1 b's, the rest
// dead. Q'^T's fragments come from pair_q_operands and the outputs are picked from O^T's M-tiles
// as the kernel's combine picks them (pair_half, pair_out_dim); both are compared with plain
// per-head products over each head's own K and V, every (column, d) written exactly once. D = 48
// per head (2 D = 96: six k-chunks, three ldmatrix x4 on the fp8 path). mutate = 1 puts each
// column's query in the other half, 2 picks the other half's outputs: both must fail.
template <typename MT, bool FP8>
void test_pair_tile(std::mt19937& rng, const char* name, int mutate = 0) {
  constexpr bool kBf16 = std::is_same<MT, bf16_t>::value;
  constexpr int D = 48, HKCH = D / 16, DV = 2 * D, KCH = DV / 16;
  constexpr int kRowBytes = FP8 ? 2 * (D + 8) : 2 * (DV + 8);
  std::uniform_int_distribution<int> half_steps(-6, 6), exp(0, 10), man(0, 7), coin(0, 1),
      group_of(1, 4);
  auto e4m3 = [&]() -> uint8_t {
    if (coin(rng) && coin(rng)) return 0;
    return static_cast<uint8_t>((coin(rng) << 7) | (exp(rng) << 3) | man(rng));
  };
  const int group = group_of(rng), gc = 2 * group;
  float Q[8][D] = {}, P[16][8], K[2][16][D], V[2][16][D];  // K, V: [kv head of the pair]
  std::vector<uint8_t> ks(16 * kRowBytes, 0x7f), vs(16 * kRowBytes, 0x7f);  // 0x7f: filler
  for (int n = 0; n < gc; ++n) for (float& v : Q[n]) v = half_steps(rng) * 0.5f;
  for (auto& row : P) for (float& v : row) v = half_steps(rng) * 0.5f;
  for (int k = 0; k < 16; ++k)
    for (int h = 0; h < 2; ++h)
      for (int d = 0; d < D; ++d) {
        const int dp = h * D + d;  // position in the paired row
        if constexpr (FP8) {
          ks[k * kRowBytes + dp] = e4m3();
          vs[k * kRowBytes + dp] = e4m3();
          K[h][k][d] = e4m3_to_float(ks[k * kRowBytes + dp]);
          V[h][k][d] = e4m3_to_float(vs[k * kRowBytes + dp]);
        } else {
          K[h][k][d] = half_steps(rng) * 0.5f;
          V[h][k][d] = half_steps(rng) * 0.5f;
          const uint16_t kb = bits_of(K[h][k][d], kBf16), vb = bits_of(V[h][k][d], kBf16);
          std::memcpy(&ks[k * kRowBytes + 2 * dp], &kb, 2);
          std::memcpy(&vs[k * kRowBytes + 2 * dp], &vb, 2);
        }
      }
  const float f = FP8 ? kFp8OperandScale : 1.f;
  auto half_of = [&](int n) { return n < gc ? (n >= group ? 1 : 0) : -1; };
  float S_ref[16][8], O_ref[8][D];  // dead columns: zero queries, so zero logits
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < 8; ++n) {
      float acc = 0.f;
      for (int d = 0; d < D; ++d) acc += n < gc ? Q[n][d] * K[half_of(n)][k][d] : 0.f;
      S_ref[k][n] = acc / f;
    }
  for (int n = 0; n < gc; ++n)
    for (int d = 0; d < D; ++d) {
      float acc = 0.f;
      for (int k = 0; k < 16; ++k) acc += V[half_of(n)][k][d] * P[k][n];
      O_ref[n][d] = acc / f;
    }
  float out[8][D] = {};
  int written[8][D] = {};
  warp_run([&](int l) {
    const int g = l / 4, t = l % 4;
    int qhalf = half_of(g);
    if (mutate == 1 && qhalf >= 0) qhalf ^= 1;
    uint32_t qb[KCH][2];
    pair_q_operands<HKCH, FP8>(qb, l, qhalf, [&](int w) {
      const float* q = Q[g];
      return pack(q[2 * w], q[2 * w + 1], FP8 ? false : kBf16);  // fp8: fp16 operands
    });
    float o[KCH][4] = {};
    swap_lane_tile<MT, FP8, KCH, kRowBytes>(l, ks, vs, qb, S_ref, P, o, name);
    // The combine's pick (decode_mma.h, PAIR): columns h0 = 2t and h0 + 1, rows g and g + 8.
    const int h0 = 2 * t;
    for (int c = 0; c < KCH; ++c) {
      const int d_lo = pair_out_dim<HKCH>(c, g, FP8), d_hi = pair_out_dim<HKCH>(c, g + 8, FP8);
      for (int e = 0; e < 2; ++e) {
        const int h = h0 + e;
        int half = half_of(h);
        if (mutate == 2 && half >= 0) half ^= 1;
        if (h < gc && pair_half<HKCH>(c) == half) {
          out[h][d_lo] = o[c][e];  // lanes write disjoint (column, d): checked below
          out[h][d_hi] = o[c][2 + e];
          __atomic_add_fetch(&written[h][d_lo], 1, __ATOMIC_RELAXED);
          __atomic_add_fetch(&written[h][d_hi], 1, __ATOMIC_RELAXED);
        }
      }
    }
  });
  for (int n = 0; n < gc; ++n)
    for (int d = 0; d < D; ++d) {
      expect(written[n][d] == 1, name, n, d);
      expect(out[n][d] == O_ref[n][d], name, n, d);
    }
}

template <typename T>
void test_mma(std::mt19937& rng, const char* name) {
  constexpr bool kBf16 = std::is_same<T, bf16_t>::value;
  std::uniform_int_distribution<int> d(-6, 6);
  float A[16][16], B[16][8], C[16][8];
  for (auto& row : A) for (float& v : row) v = d(rng) * 0.5f;
  for (auto& row : B) for (float& v : row) v = d(rng) * 0.5f;
  for (auto& row : C) for (float& v : row) v = d(rng) * 0.25f;
  float want[16][8];
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      float s = C[m][n];
      for (int k = 0; k < 16; ++k) s += A[m][k] * B[k][n];
      want[m][n] = s;
    }

  warp_run([&](int l) {
    const int g = l / 4, t = l % 4, c0 = 2 * t;
    // PTX m16n8k16 fragments (.row.col): A 16x16, B 16x8 (k x n), C 16x8.
    const uint32_t a[4] = {pack(A[g][c0], A[g][c0 + 1], kBf16),
                           pack(A[g + 8][c0], A[g + 8][c0 + 1], kBf16),
                           pack(A[g][c0 + 8], A[g][c0 + 9], kBf16),
                           pack(A[g + 8][c0 + 8], A[g + 8][c0 + 9], kBf16)};
    const uint32_t b0 = pack(B[c0][g], B[c0 + 1][g], kBf16);
    const uint32_t b1 = pack(B[c0 + 8][g], B[c0 + 9][g], kBf16);
    float c[4] = {C[g][c0], C[g][c0 + 1], C[g + 8][c0], C[g + 8][c0 + 1]};
    mma_16816<T>(c, a, b0, b1);
    const float w[4] = {want[g][c0], want[g][c0 + 1], want[g + 8][c0], want[g + 8][c0 + 1]};
    for (int i = 0; i < 4; ++i) expect(c[i] == w[i], name, l, i);
  });
}

}  // namespace

int main() {
  std::mt19937 rng(7);
  for (int rep = 0; rep < 20; ++rep) {
    test_ldmatrix(rng);
    test_ldmatrix_x2(rng);
    test_mma<fp16_t>(rng, "mma_16816<fp16>");
    test_mma<bf16_t>(rng, "mma_16816<bf16>");
    test_fp8_tile(rng);
    test_movmatrix(rng);
    test_swap_tile<bf16_t, false>(rng, "swap tile bf16");
    test_swap_tile<fp16_t, false>(rng, "swap tile fp16");
    test_swap_tile<fp16_t, true>(rng, "swap tile fp8");
    test_swap_tile<bf16_t, false, 128, true>(rng, "swap tile bf16, swizzled rows");
    test_swap_tile<fp16_t, false, 128, true>(rng, "swap tile fp16, swizzled rows");
    test_swap_tile<bf16_t, false, 128, false>(rng, "swap tile bf16, D = 128 padded rows");
    test_pair_tile<bf16_t, false>(rng, "paired swap tile bf16");
    test_pair_tile<fp16_t, false>(rng, "paired swap tile fp16");
    test_pair_tile<fp16_t, true>(rng, "paired swap tile fp8");
  }
  // The paired tile's two index rules must matter: each mutation has to be caught.
  if (g_failures == 0) {
    g_quiet = true;
    const char* kMutation[3] = {"", "query in the other half", "outputs of the other half"};
    for (int m = 1; m <= 2; ++m) {
      int caught = 0;
      for (int rep = 0; rep < 3; ++rep) {
        const int before = g_failures;
        test_pair_tile<bf16_t, false>(rng, "mutated", m);
        test_pair_tile<fp16_t, true>(rng, "mutated", m);
        caught += g_failures > before;
        g_failures = before;
      }
      if (caught < 3) {
        std::printf("FAIL paired swap tile: mutation '%s' not caught\n", kMutation[m]);
        ++g_failures;
      }
    }
    // Swizzled rows read at the padded rows' addresses (and the reverse) must fail.
    for (int m = 0; m < 2; ++m) {
      const int before = g_failures;
      if (m == 0) test_swap_tile<bf16_t, false, 128, true>(rng, "mutated", true);
      else test_swap_tile<fp16_t, false, 128, false>(rng, "mutated", true);
      const bool caught = g_failures > before;
      g_failures = before;
      if (!caught) {
        std::printf("FAIL swapped tile: %s rows read as %s not caught\n", m ? "padded" : "swizzled",
                    m ? "swizzled" : "padded");
        ++g_failures;
      }
    }
    g_quiet = false;
  }
  if (g_failures) {
    std::printf("mma_portable_test: %d mismatches\n", g_failures);
    return 1;
  }
  std::printf("mma_portable_test: ldmatrix_x4, ldmatrix_x4_trans, ldmatrix_x2(_trans), "
              "mma_16816<fp16|bf16>, fp8 decode tile (fp8_qk, fp8_pv), movmatrix_trans, swapped "
              "decode tile (bf16, fp16, fp8; padded and swizzled rows), kv-head-paired swapped "
              "tile (bf16, fp16, fp8; groups 1-4): 20 random cases each, all lanes exact; 2 "
              "paired-tile and 2 row-layout mutations caught\n");
  return 0;
}
