// Decode tile math with the GQA group on the N side of mma.sync m16n8k16 (groups of <= 8 heads).
//
// The plain decode tile puts the group's query heads on the M side: S = Q K^T is 16 heads x 16
// keys, O += P V is 16 heads x D, so a group of g <= 8 heads leaves 16 - g of the 16 rows idle
// (mistral's 4 heads use a quarter of every MMA). Swapped, the keys and head dims take the 16 M
// rows and the heads the 8 N columns:
//
//   S^T [16 keys x 8 heads] = K [16 keys x D] . Q^T [D x 8 heads]      (D / 16 MMAs, was D / 8)
//   O^T [D x 8 heads]      += V^T [D x 16 keys] . P^T [16 keys x 8 heads] (D / 16 MMAs, was D / 8)
//
// Half the MMAs per tile and half the exponentials per lane (a lane holds 2 keys x 2 heads of S^T,
// not 2 heads x 4 keys of S). Lane l (g = l / 4, t = l % 4) holds, in the C layout:
//   S^T: s[0], s[1] = key g, heads 2t and 2t + 1; s[2], s[3] = key g + 8, the same heads.
//   O^T: o[c][0], o[c][1] = head dim row g of M-tile c, heads 2t, 2t + 1; o[c][2], o[c][3] = row
//        g + 8 (swap_out_dim gives each row's d).
// Q^T is the B operand (b0 = d 2t, 2t + 1 of head g; b1 = d 2t + 8, 2t + 9), loaded once into
// registers. P^T is the B operand of the second product: the C layout of S^T has keys on the rows
// and heads on the columns, the B layout wants the transpose, so each 8 x 8 half goes through one
// movmatrix (keys 0..7 -> b0, keys 8..15 -> b1).
//
// fp8 caches: the same products from the raw e4m3 bytes (fp8_frag.h's conversions). K: an
// ldmatrix of the bytes gives the A fragment of a 16-d chunk with the k axis permuted as
// fp8_q_dim says (Q's B fragments follow it). V: ldmatrix.trans of the bytes gives a lane the
// byte pair (d 2g, 2g + 1) of keys (2t, 2t + 1): bytes (0, 2) are the A element of M row "d 2g",
// bytes (1, 3) that of "d 2g + 1", so M-tile c holds chunk c's even d on rows 0..7 and its odd d
// on rows 8..15, i.e. one ldmatrix x2 per MMA and no transpose instruction.
//
// kv-head pairing (decode_mma_kernel's PAIR; split.h says why): a CTA reads kv heads 2c and
// 2c + 1 of a token as one row of 2 D elements (their rows are adjacent in the cache), i.e. a
// virtual kv head of size 2 D. Its 2 g query heads (g <= 4) take N columns 0..2g-1, column n
// being query head 2c g + n, whose kv head is in half n / g of the row; its query occupies
// d' in [D (n / g), D (n / g) + D) of the 2 D k axis and is zero elsewhere (block-diagonal Q^T).
// Then the unchanged products over 2 D (KCH = 2 D / 16 chunks) give
//   S^T [key][n] = K'[key] . Q'[n] = K_{head of n}[key] . q_n   (the zero half adds nothing)
//   O^T [d'][n]  = sum_key V'[key][d'] P^T[key][n]
// and column n's output is rows d' of its own half only (the other half's rows, V of the other
// kv head weighted by n's P, are discarded). Same MMAs and conversions per byte as unpaired,
// half the softmax work per byte, twice the O^T accumulators and Q^T fragments per lane.
//
// Needs ldmatrix_x2/x4(_trans), movmatrix_trans and mma_16816 (mma.h or mma_portable.h) and
// fp8_frag.h declared first. csrc/hip_check/mma_portable_test.cpp checks these layouts on the CPU
// against plain matrix products.
#pragma once

namespace swa_ops {

// Head dim of row `row` (0..15) of output M-tile c: natural order for 16-bit caches, chunk c's
// even d then its odd d for fp8 caches.
SWA_HD constexpr int swap_out_dim(int c, int row, bool fp8) {
  return fp8 ? c * 16 + (row & 7) * 2 + (row >> 3) : c * 16 + row;
}

// kv-head pairing: M-tile c (of 2 HKCH, HKCH = D / 16) of O^T, and k-chunk c of Q^T, belong to
// the kv head in half c / HKCH of the paired row, as that head's chunk c % HKCH.
template <int HKCH>
SWA_HD constexpr int pair_half(int c) { return c / HKCH; }
template <int HKCH>
SWA_HD constexpr int pair_out_dim(int c, int row, bool fp8) {
  return swap_out_dim(c % HKCH, row, fp8);
}

// kv-head pairing: Q'^T's B fragments (as the unpaired tile's: b0 = k (2t, 2t + 1) and
// b1 = (2t + 8, 2t + 9) of column n = lane / 4; fp8: in fp8_q_dim order) over the 2 HKCH chunks of
// a paired row. Column n's query goes into the chunks of its half `half` (0 or 1; < 0: a dead
// column, all zero), zeros into the other half's. word(i) reads 32-bit word i (d 2i, 2i + 1) of
// column n's own D-element query (already converted to the operand type); only live words are
// read.
template <int HKCH, bool FP8, typename Word>
SWA_D void pair_q_operands(uint32_t (&qb)[2 * HKCH][2], int lane, int half, Word&& word) {
  const int c = (lane & 3) * 2;
#pragma unroll
  for (int kc = 0; kc < 2 * HKCH; ++kc) {
    const int kd = kc % HKCH;
    const bool live = pair_half<HKCH>(kc) == half;
    if constexpr (FP8) {
      const int w = (kd * 16 + 2 * c) / 2;  // the words of d 2c..2c+3 of the head's chunk kd
      const uint32_t w0 = live ? word(w) : 0u, w1 = live ? word(w + 1) : 0u;
      fp8_split_pairs(w0, w1, qb[kc][0], qb[kc][1]);
    } else {
      qb[kc][0] = live ? word((kd * 16 + c) / 2) : 0u;
      qb[kc][1] = live ? word((kd * 16 + c + 8) / 2) : 0u;
    }
  }
}

// S^T += K Q^T over a 16-bit K tile. at(kc): this lane's ldmatrix address of k-chunk kc, i.e.
// of 16-byte chunk 2 kc + (l >> 4) of key (l & 7) + 8 ((l >> 3) & 1) (the A-operand ldmatrix
// pattern; the tile's rows may be padded or swizzled, decode_mma.h). Two accumulator chains (even
// and odd chunks) halve the dependent MMA latency; their sum is returned in s.
template <typename MT, int KCH, typename At>
SWA_D void swap_qk_at(float (&s)[4], At at, const uint32_t (&qb)[KCH][2]) {
  float s2[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int kc = 0; kc < KCH; ++kc) {
    uint32_t a[4];
    ldmatrix_x4(at(kc), a[0], a[1], a[2], a[3]);
    mma_16816<MT>(kc % 2 ? s2 : s, a, qb[kc][0], qb[kc][1]);
  }
#pragma unroll
  for (int e = 0; e < 4; ++e) s[e] += s2[e];
}

// O^T += V^T P^T over a 16-bit V tile of 16 keys. at(c): this lane's ldmatrix address of M-tile
// c, i.e. of 16-byte chunk 2 c + ((l >> 3) & 1) of key (l & 7) + 8 (l >> 4) (ldmatrix.trans of V
// gives V^T's A fragments).
template <typename MT, int KCH, typename At>
SWA_D void swap_pv_at(float (&o)[KCH][4], At at, uint32_t pb0, uint32_t pb1) {
#pragma unroll
  for (int c = 0; c < KCH; ++c) {
    uint32_t a[4];
    ldmatrix_x4_trans(at(c), a[0], a[1], a[2], a[3]);
    mma_16816<MT>(o[c], a, pb0, pb1);
  }
}

// P^T's B fragments from the S^T accumulators (after the exponentials): keys 0..7 and 8..15.
template <typename MT>
SWA_D void swap_p_operands(const float (&s)[4], uint32_t& pb0, uint32_t& pb1) {
  pb0 = movmatrix_trans(pack2<MT>(s[0], s[1]));
  pb1 = movmatrix_trans(pack2<MT>(s[2], s[3]));
}

// fp8: S^T += K Q^T over the raw K tile; at(kc): this lane's ldmatrix address for the chunk
// pair from kc (fp8_qk's rows: key (l & 7) + 8 ((l >> 3) & 1), chunk kc + 1 for lanes 16..31),
// qb in fp8_q_dim order. fp8_qk_swap: rows at `row` + 16 kc (padded rows; `row` as fp8_qk's).
template <int KCH, typename At>
SWA_D void fp8_qk_swap_at(float (&s)[4], At at, const uint32_t (&qb)[KCH][2]) {
  float s2[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
  for (int kc = 0; kc < KCH; kc += 2) {
    uint32_t r[4], a[4];
    if (kc + 1 < KCH) ldmatrix_x4(at(kc), r[0], r[1], r[2], r[3]);
    else ldmatrix_x2(at(kc), r[0], r[1]);
    fp8_operands(r[0], a[0], a[2]);  // key g: k slots 2t.. (even d), 2t + 8.. (odd d)
    fp8_operands(r[1], a[1], a[3]);  // key g + 8
    mma_16816<fp16_t>(s, a, qb[kc][0], qb[kc][1]);
    if (kc + 1 < KCH) {
      fp8_operands(r[2], a[0], a[2]);
      fp8_operands(r[3], a[1], a[3]);
      mma_16816<fp16_t>(s2, a, qb[kc + 1][0], qb[kc + 1][1]);
    }
  }
#pragma unroll
  for (int e = 0; e < 4; ++e) s[e] += s2[e];
}
template <int KCH, typename Addr>
SWA_D void fp8_qk_swap(float (&s)[4], Addr row, const uint32_t (&qb)[KCH][2]) {
  fp8_qk_swap_at<KCH>(s, [row](int kc) { return row + kc * 16; }, qb);
}

// fp8: O^T += V^T P^T over the raw V tile of 16 keys; `row` as fp8_pv's. M-tile c: rows 0..7 are
// chunk c's even d, rows 8..15 its odd d (swap_out_dim).
// at(c): as fp8_qk_swap_at's, over V; fp8_pv_swap: rows at `row` + 16 c.
template <int KCH, typename At>
SWA_D void fp8_pv_swap_at(float (&o)[KCH][4], At at, uint32_t pb0, uint32_t pb1) {
#pragma unroll
  for (int c = 0; c < KCH; c += 2) {
    uint32_t r[4], a[4];
    if (c + 1 < KCH) ldmatrix_x4_trans(at(c), r[0], r[1], r[2], r[3]);
    else ldmatrix_x2_trans(at(c), r[0], r[1]);
    fp8_operands(r[0], a[0], a[1]);  // keys 2t, 2t + 1: d 2g (row g), d 2g + 1 (row g + 8)
    fp8_operands(r[1], a[2], a[3]);  // keys 2t + 8, 2t + 9
    mma_16816<fp16_t>(o[c], a, pb0, pb1);
    if (c + 1 < KCH) {
      fp8_operands(r[2], a[0], a[1]);
      fp8_operands(r[3], a[2], a[3]);
      mma_16816<fp16_t>(o[c + 1], a, pb0, pb1);
    }
  }
}

template <int KCH, typename Addr>
SWA_D void fp8_pv_swap(float (&o)[KCH][4], Addr row, uint32_t pb0, uint32_t pb1) {
  fp8_pv_swap_at<KCH>(o, [row](int c) { return row + c * 16; }, pb0, pb1);
}

}  // namespace swa_ops
