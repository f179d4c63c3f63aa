// fp8 e4m3 K/V tiles read straight from shared memory into fp16 tensor-core operands (decode).
//
// Widening whole tiles to fp16 in shared memory first cost an extra round trip through shared
// memory per tile (run 21: fp8 at 1.49x the bf16 speed). Instead the raw bytes go through ldmatrix
// and become MMA operands in registers. ldmatrix moves b16 elements, i.e. byte pairs; the byte
// layout a lane receives decides the operand layout:
//
// - K, the B operand of S = Q K^T (n = key, k = d). Plain ldmatrix over fp8 rows gives lane l
//   (g = l / 4, t = l % 4) bytes 4t..4t+3 of a 16-byte chunk of key row g. Bytes 0 and 2 become
//   the fp16 pair of k slots (2t, 2t+1), bytes 1 and 3 that of (2t+8, 2t+9). That permutes the
//   chunk's k axis, logical k -> d: 2t+e -> 4t+2e and 2t+8+e -> 4t+1+2e, i.e. the first eight k
//   slots are the chunk's even d and the last eight its odd d (fp8_q_dim). Q's A fragments are
//   loaded in that order (fp8_split_pairs); a dot product does not depend on the order of terms.
// - V, the B operand of O += P V (k = key, n = d). ldmatrix .trans over fp8 rows gives lane l the
//   byte pair (d 2g, 2g+1) of keys 2t and 2t+1: bytes V[2t][2g], V[2t][2g+1], V[2t+1][2g],
//   V[2t+1][2g+1]. Bytes 0 and 2 are keys (2t, 2t+1) of column d = 2g, bytes 1 and 3 the same
//   keys of d = 2g+1: two B fragments, one for an n-tile of the chunk's even d and one for its odd
//   d. So a 16-d chunk c feeds n-tiles 2c (even d) and 2c+1 (odd d), and lane l's accumulator
//   pair of n-tile 2c + h holds d = 16c + 4t + h and 16c + 4t + h + 2 (fp8_out_col).
//
// Both need "bytes 1 and 3 of a word -> an fp16 pair" (bytes 0 and 2: the word shifted left by 8).
// By default that is a few integer ops on the bit pattern (sign stays, the 7 exponent and mantissa
// bits move down one place), which yields the e4m3 value times 2^-8 exactly, subnormals included
// (kFp8OperandScale undoes it through the logit and output scales). e4m3's NaN codes (0x7f, 0xff)
// come out finite (+-480) instead of NaN; reshape_and_cache never writes them (it saturates at
// +-448). SWA_OPS_FP8_CVT=1 uses the cvt.rn.f16x2.e4m3x2 instruction instead (exact values, NaN
// kept, no factor): 110.1 against 108.7-108.8 us on mistral-32k-fp8 in run 23.
//
// Needs e4m3x2_to_half2_bits (compat.h) and ldmatrix_x2/x4(_trans) and mma_16816 (mma.h or
// mma_portable.h) declared first; csrc/hip_check/mma_portable_test.cpp checks these layouts on the
// CPU through the portable primitives, against a plain matrix product.
#pragma once

#ifndef SWA_OPS_FP8_CVT
#define SWA_OPS_FP8_CVT 0
#endif

namespace swa_ops {

// fp8 operands hold the cache's e4m3 values divided by this.
constexpr float kFp8OperandScale = SWA_OPS_FP8_CVT ? 1.f : 256.f;

// e4m3 bytes 1 and 3 of x -> an fp16 pair (low half from byte 1), each e4m3 value divided by
// kFp8OperandScale.
SWA_D uint32_t fp8_pair_b13(uint32_t x) {
#if SWA_OPS_FP8_CVT
  return e4m3x2_to_half2_bits(((x >> 8) & 0xffu) | ((x >> 16) & 0xff00u));
#else
  // e4m3 s.eeee.mmm in bits 15..8 -> fp16 s.0eeee.mmm0000000: the fp16 exponent bias (15) is 8
  // more than e4m3's (7), so this reads as the value times 2^-8, normal or subnormal.
  return (x & 0x80008000u) | ((x >> 1) & 0x3f803f80u);
#endif
}

// x's bytes (0, 2) in the low half and (1, 3) in the high half, low byte first in each.
SWA_D uint32_t fp8_bytes_0213(uint32_t x) {
#if !defined(USE_ROCM) && defined(__CUDA_ARCH__)
  return __byte_perm(x, 0u, 0x3120u);  // one PRMT
#else
  return (x & 0xffu) | ((x >> 8) & 0xff00u) | ((x << 8) & 0xff0000u) | (x & 0xff000000u);
#endif
}

// One ldmatrix register of fp8 bytes -> the fp16 pairs of its bytes (0, 2) and (1, 3).
SWA_D void fp8_operands(uint32_t r, uint32_t& even, uint32_t& odd) {
#ifdef SWA_OPS_DIAG_FP8_NOCVT  // diagnostics only (wrong results): the tile without conversions
  even = r;
  odd = r ^ 0x1u;
#elif SWA_OPS_FP8_CVT
  const uint32_t p = fp8_bytes_0213(r);
  even = e4m3x2_to_half2_bits(p);
  odd = e4m3x2_to_half2_bits(p >> 16);
#else
  even = fp8_pair_b13(r << 8);
  odd = fp8_pair_b13(r);
#endif
}

// d (within a 16-wide chunk) of logical k of the permuted QK^T k axis: even d first, then odd.
SWA_HD constexpr int fp8_q_dim(int k) { return (k & 7) * 2 + (k >> 3); }

// Q for fp8 caches: two words of consecutive 16-bit values (d, d+1) and (d+2, d+3) -> the pairs
// (d, d+2) and (d+1, d+3), i.e. the k pairs fp8_q_dim puts them in.
SWA_D void fp8_split_pairs(uint32_t w0, uint32_t w1, uint32_t& even, uint32_t& odd) {
  even = (w0 & 0xffffu) | (w1 << 16);
  odd = (w0 >> 16) | (w1 & 0xffff0000u);
}

// S[16 rows x 16 keys] += Q K^T over the KCH 16-d chunks of an fp8 K tile in shared memory.
// `row` is this lane's ldmatrix row address, chunk 0: key (l & 7) + 8 ((l >> 3) & 1), plus 16
// bytes for lanes 16..31 (matrices 0..3 of an x4 are keys 0-7 / 8-15 of chunk kc, then of chunk
// kc + 1; an x2 takes an odd last chunk). q_operand(kc, a) gives Q's A fragment of chunk kc,
// loaded in fp8_q_dim order. s[0] holds keys 0..7, s[1] keys 8..15, in the C layout.
template <int KCH, typename Addr, typename QOperand>
SWA_D void fp8_qk(float (&s)[2][4], Addr row, QOperand&& q_operand) {
#pragma unroll
  for (int kc = 0; kc < KCH; kc += 2) {
    uint32_t a[4], r[4], b0, b1;
    if (kc + 1 < KCH) ldmatrix_x4(row + kc * 16, r[0], r[1], r[2], r[3]);
    else ldmatrix_x2(row + kc * 16, r[0], r[1]);
    q_operand(kc, a);
    fp8_operands(r[0], b0, b1);
    mma_16816<fp16_t>(s[0], a, b0, b1);
    fp8_operands(r[1], b0, b1);
    mma_16816<fp16_t>(s[1], a, b0, b1);
    if (kc + 1 < KCH) {
      q_operand(kc + 1, a);
      fp8_operands(r[2], b0, b1);
      mma_16816<fp16_t>(s[0], a, b0, b1);
      fp8_operands(r[3], b0, b1);
      mma_16816<fp16_t>(s[1], a, b0, b1);
    }
  }
}

// O[16 rows x 16 KCH columns] += P V over an fp8 V tile of 16 keys; `row` as in fp8_qk, over V
// (read transposed). pa is P's A fragment (keys in natural order); n-tile nt of o holds the
// columns fp8_out_col gives.
template <int KCH, typename Addr>
SWA_D void fp8_pv(float (&o)[2 * KCH][4], const uint32_t (&pa)[4], Addr row) {
#pragma unroll
  for (int dc = 0; dc < KCH; dc += 2) {
    uint32_t r[4], ev0, od0, ev1, od1;
    if (dc + 1 < KCH) ldmatrix_x4_trans(row + dc * 16, r[0], r[1], r[2], r[3]);
    else ldmatrix_x2_trans(row + dc * 16, r[0], r[1]);
    fp8_operands(r[0], ev0, od0);  // keys 0..7
    fp8_operands(r[1], ev1, od1);  // keys 8..15
    mma_16816<fp16_t>(o[2 * dc], pa, ev0, ev1);
    mma_16816<fp16_t>(o[2 * dc + 1], pa, od0, od1);
    if (dc + 1 < KCH) {
      fp8_operands(r[2], ev0, od0);
      fp8_operands(r[3], ev1, od1);
      mma_16816<fp16_t>(o[2 * dc + 2], pa, ev0, ev1);
      mma_16816<fp16_t>(o[2 * dc + 3], pa, od0, od1);
    }
  }
}

// Output column of lane `lane`'s accumulators 0 and 2 of n-tile nt (rows l/4 and l/4 + 8);
// accumulators 1 and 3 are two columns further on.
SWA_HD constexpr int fp8_out_col(int nt, int lane) {
  return (nt >> 1) * 16 + (lane & 3) * 4 + (nt & 1);
}

}  // namespace swa_ops
