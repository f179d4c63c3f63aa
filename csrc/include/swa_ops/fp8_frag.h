// fp8 e4m3 K/V tiles read straight from shared memory into fp16 tensor-core operands (decode).
//
// ldmatrix moves b16 pairs, so over a row of fp8 bytes it gives lane l (g = l / 4, t = l % 4) the
// four bytes 4t..4t+3 of one 16-byte chunk of row g. mma.sync m16n8k16 wants each lane to hold
// k-adjacent pairs. Rather than widening whole tiles to fp16 in shared memory first (run 21: that
// extra round trip through shared memory held fp8 at 1.49x the bf16 speed), the operands are built
// in registers, one cvt per pair:
//
// - K, the B operand of S = Q K^T (n = key, k = d): the four bytes widen to two fp16 pairs that
//   serve as the k pairs (2t, 2t+1) and (2t+8, 2t+9). That permutes the chunk's k axis,
//   logical k -> d: 2t+e -> 4t+e and 2t+8+e -> 4t+2+e (fp8_q_dim). Q's A fragments are loaded
//   with the same permutation; a dot product does not depend on the order of its terms.
// - V, the B operand of O += P V (k = key, n = d): the lane's bytes run along d, but the MMA
//   wants them along keys. Widened, the low pairs of 8 keys form an 8x8 b16 matrix (row = key,
//   column j = d 4(j/2) + j%2) and the high pairs another (the same d + 2); movmatrix transposes
//   each in registers, which gives lane l keys 2t and 2t+1 of column g, exactly a B fragment.
//   A 16-d chunk c thus yields two n-tiles of the output, 2c (low pairs) and 2c + 1 (high pairs),
//   whose columns are d = 16c + 4(n/2) + n%2 (+ 2): lane l's accumulator pair of n-tile 2c + h
//   holds d = 16c + 4t + 2h + {0, 1} (fp8_out_col).
//
// Needs e4m3x2_to_half2_bits (compat.h) and ldmatrix_x2/x4, movmatrix_trans and mma_16816 (mma.h
// or mma_portable.h) declared first; csrc/hip_check/mma_portable_test.cpp checks these layouts on the CPU through the portable
// primitives.
#pragma once

namespace swa_ops {

// d (within a 16-wide chunk) of logical k of the permuted QK^T k axis.
SWA_HD constexpr int fp8_q_dim(int k) { return ((k & 7) >> 1) * 4 + (k >> 3) * 2 + (k & 1); }

// One ldmatrix register of an fp8 K tile (key row l / 4, bytes 4t..4t+3 of a 16-d chunk) -> the
// two B registers of QK^T for that chunk and the 8 keys of the matrix.
SWA_D void fp8_k_operands(uint32_t r, uint32_t& b0, uint32_t& b1) {
  b0 = e4m3x2_to_half2_bits(r);
  b1 = e4m3x2_to_half2_bits(r >> 16);
}

// Two ldmatrix registers of an fp8 V tile, the same 16-d chunk of keys 0..7 (r_k0) and 8..15
// (r_k8) -> the B registers of P V for the chunk's two n-tiles (lo: d 4(n/2) + n%2, hi: + 2).
SWA_D void fp8_v_operands(uint32_t r_k0, uint32_t r_k8, uint32_t (&b_lo)[2], uint32_t (&b_hi)[2]) {
  b_lo[0] = movmatrix_trans(e4m3x2_to_half2_bits(r_k0));
  b_lo[1] = movmatrix_trans(e4m3x2_to_half2_bits(r_k8));
  b_hi[0] = movmatrix_trans(e4m3x2_to_half2_bits(r_k0 >> 16));
  b_hi[1] = movmatrix_trans(e4m3x2_to_half2_bits(r_k8 >> 16));
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
    fp8_k_operands(r[0], b0, b1);
    mma_16816<fp16_t>(s[0], a, b0, b1);
    fp8_k_operands(r[1], b0, b1);
    mma_16816<fp16_t>(s[1], a, b0, b1);
    if (kc + 1 < KCH) {
      q_operand(kc + 1, a);
      fp8_k_operands(r[2], b0, b1);
      mma_16816<fp16_t>(s[0], a, b0, b1);
      fp8_k_operands(r[3], b0, b1);
      mma_16816<fp16_t>(s[1], a, b0, b1);
    }
  }
}

// O[16 rows x 16 KCH columns] += P V over an fp8 V tile of 16 keys; `row` as in fp8_qk, over V.
// pa is P's A fragment (keys in natural order); o's n-tile nt holds columns fp8_out_col(nt, l).
template <int KCH, typename Addr>
SWA_D void fp8_pv(float (&o)[2 * KCH][4], const uint32_t (&pa)[4], Addr row) {
#pragma unroll
  for (int dc = 0; dc < KCH; dc += 2) {
    uint32_t r[4], b_lo[2], b_hi[2];
    if (dc + 1 < KCH) ldmatrix_x4(row + dc * 16, r[0], r[1], r[2], r[3]);
    else ldmatrix_x2(row + dc * 16, r[0], r[1]);
    fp8_v_operands(r[0], r[1], b_lo, b_hi);
    mma_16816<fp16_t>(o[2 * dc], pa, b_lo[0], b_lo[1]);
    mma_16816<fp16_t>(o[2 * dc + 1], pa, b_hi[0], b_hi[1]);
    if (dc + 1 < KCH) {
      fp8_v_operands(r[2], r[3], b_lo, b_hi);
      mma_16816<fp16_t>(o[2 * dc + 2], pa, b_lo[0], b_lo[1]);
      mma_16816<fp16_t>(o[2 * dc + 3], pa, b_hi[0], b_hi[1]);
    }
  }
}

// Output column of lane `lane`'s first accumulator of n-tile nt (the second is the next column).
SWA_HD constexpr int fp8_out_col(int nt, int lane) {
  return (nt >> 1) * 16 + (lane & 3) * 4 + (nt & 1) * 2;
}

}  // namespace swa_ops
