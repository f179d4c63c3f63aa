// Tensor-core prefill over the paged cache with sliding windows (mma.sync m16n8k16; sm_80+, and
// HIP through mma_portable.h).
//
// Rows. A sequence's query rows are packed as (query token, head of the GQA group) pairs, head
// fastest: packed row R is token i = R / group of the chunk, head kvh * group + R % group. A CTA
// takes BM = kPrefillRows (128; 64 on AMD) consecutive packed rows of one (sequence, kv head);
// each warp owns 16 of them on the M side of the MMA. Every K/V tile a CTA loads therefore serves
// all heads of the group and all of its tokens at once, and packing by head first keeps a CTA's
// tokens few (BM / group), so the union of its rows' windows is barely wider than W: with W = 128
// and group 8 a CTA's 16 tokens span 143 keys, where a 128-token tile of one head would span 255.
//
// Keys. Row R at position p = L - q_len + i sees [max(0, p - W + 1), p]. The CTA walks BN-key
// tiles over the union [lo of its first row, hi of its last row) only: key tiles outside every
// row's window are never loaded and their block-table entries never read (rows of a tile outside
// the union are zero-filled without a global read). Tiles inside every row's window of a warp skip
// the mask; a warp whose rows see nothing in a tile skips its math for it.
//
// Pipeline. All warps share each K/V tile: the block copies tile j + 1 (cp.async) while every warp
// computes tile j; fp32 online softmax per row in log2 units, as the decode kernel. No split over
// keys: a prefill has query tiles enough to fill the GPU, and the work of a CTA is bounded by
// BM / group + W keys, never by the context.
#pragma once

#include "swa_ops/compat.h"
#include "swa_ops/decode_mma.h"  // kLog2e, kNegInf
#include "swa_ops/mma.h"
#include "swa_ops/params.h"
#include "swa_ops/wgmma.h"

namespace swa_ops {

constexpr int kPrefillWarps = kPrefillRows / 16;  // kPrefillRows (params.h): BM

// WG: the Hopper variant (sm_90a, D = 64/128/192/256, 16-bit caches). Each four warps are a
// warpgroup with 64 of the rows: S = Q K^T is one wgmma m64nBNk16 chain with Q and K read from
// shared memory, and O += P V one wgmma m64nDk16 chain with P from the S registers and V read
// transposed from shared memory. Its tiles are stored unpadded with the 128-byte swizzle wgmma
// reads (rows of 64-element column blocks, 16-byte chunk c of row r at chunk c ^ (r % 8)), which
// is also conflict-free for the cp.async writes. The accumulator layouts equal the mma.sync ones,
// so masking, softmax and the epilogue are shared.
template <int D, bool WG = false>
struct PrefillTraits {
  static constexpr int kThreads = kPrefillWarps * 32;
#ifdef USE_ROCM
  // 64 KB of LDS per work-group and a synchronous cp_async16: one stage, narrower key tiles.
  static constexpr int kStages = 1;
  static constexpr int kBN = D <= 128 ? 32 : 16;
#else
  // Two stages of 64-key tiles (32 above D = 128). Since 128 rows per CTA (256 threads at ~160
  // registers), one CTA per SM fits by registers whatever the shared memory would allow.
  static constexpr int kStages = 2;
  static constexpr int kBN = D <= 128 ? 64 : 32;
#endif
  // mma.sync: padded smem rows (conflict-free ldmatrix, as decode_mma.h); wgmma: swizzled.
  static constexpr int kRow = WG ? D : D + 8;
  static constexpr int kStageElems = 2 * kBN * kRow;  // K tile then V tile
  // Q fragments live in registers up to D = 128; above, they are re-read from shared memory.
  static constexpr bool kQInRegs = !WG && D <= 128;
  // wgmma's swizzle is a function of the address: tiles start at 1024-byte boundaries (the
  // dynamic allocation is rounded up in the kernel, hence the slack).
  static size_t smem_bytes() {
    return sizeof(uint16_t) * (kPrefillRows * kRow + kStages * kStageElems) + (WG ? 1024 : 0);
  }
  static_assert(!WG || D % 64 == 0, "the wgmma variant tiles D in 64-element column blocks");
#ifdef USE_ROCM
  static_assert(sizeof(uint16_t) * (kPrefillRows * kRow + kStages * kStageElems) <= 65536,
                "prefill shared memory exceeds the 64 KB of LDS a CDNA work-group has");
#endif
};

// First visible key and one past the last of a packed row; empty (lo >= hi) when the row is past
// the sequence's query rows or sits before position 0 (L < q_len).
struct RowSpan {
  int lo, hi;
};

SWA_D RowSpan row_span(int R, int rows, int group, int L, int q_len, int window) {
  RowSpan s{0, 0};
  if (R >= rows) return s;
  const int pos = L - q_len + R / group;
  if (pos < 0) return s;
  s.hi = pos + 1;
  s.lo = window > 0 ? max(0, pos - window + 1) : 0;
  return s;
}

// Element offset of (row r, element c, a multiple of 8) in a tile of `rows` rows: padded rows for
// mma.sync; for wgmma, 64-element column blocks of `rows` x 128 bytes with the 128-byte swizzle.
template <int D, bool WG>
SWA_D int tile_offset(int r, int c, int rows) {
  if constexpr (WG) {
    return (c >> 6) * rows * 64 + r * 64 + ((((c >> 3) & 7) ^ (r & 7)) << 3);
  } else {
    return r * PrefillTraits<D, WG>::kRow + c;
  }
}

// The S accumulators of a tile (SNT 8-key chunks from key t0; lane's keys t0 + 8n + quad_col +
// (e & 1), rows ra for e < 2, rb for e >= 2) set to -inf outside each row's window.
template <int SNT>
SWA_D void mask_tile(float (&s)[SNT][4], int t0, int quad_col, const RowSpan& ra,
                     const RowSpan& rb) {
#pragma unroll
  for (int n = 0; n < SNT; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int t = t0 + n * 8 + quad_col + (e & 1);
      const RowSpan& rs = e < 2 ? ra : rb;
      if (t < rs.lo || t >= rs.hi) s[n][e] = kNegInf;
    }
}

// One online-softmax step over a tile's logits (log2 units) for the lane's two rows: updates the
// running maxima m0/m1 and sums l0/l1, turns s into the tile's weights and returns the factors
// (al0, al1) the rows' earlier output must be scaled by. A row may see no key of this tile (its
// max stays -inf): it exponentiates against 0 then, so its weights are exactly 0, never NaN.
// SCALED (prefill_ws.h): the logit scale folded into the exponentials, as FlashAttention-3 does:
// s holds the logits divided by sc > 0 (the raw Q K^T), the max is taken on those and scaled once
// per row, and each weight is exp2(s * sc - max), one FFMA and one ex2; m0/m1 stay in log2 units.
// There, SWA_OPS_WS_RESCALE_SLACK (log2 units; default 8, 0: off) keeps a row's running max until
// a tile's exceeds it by more than that, as FlashAttention-4 does: weights then reach up to
// 2^SLACK (fine in 16 bits and fp32 sums), and most tiles skip O's rescale (al == 1 on every row
// of the warp). The normalisation uses the same max, so the result differs from the exact online
// update only by rounding. Default since run 56 (H100, the bench's prefill rows, sustained, two
// interleaved rounds): mistral-prefill -1.2 %, chunked -0.3 %, gemma3 -4 %, gpt-oss -1.2 %.
#ifndef SWA_OPS_WS_RESCALE_SLACK
#define SWA_OPS_WS_RESCALE_SLACK 8
#endif
template <int SNT, bool SCALED = false>
SWA_D float2 online_softmax_tile(float (&s)[SNT][4], float& m0, float& m1, float& l0, float& l1,
                                 float sc = 1.f) {
  float mx0 = kNegInf, mx1 = kNegInf;
#pragma unroll
  for (int n = 0; n < SNT; ++n) {
    mx0 = fmaxf(mx0, fmaxf(s[n][0], s[n][1]));
    mx1 = fmaxf(mx1, fmaxf(s[n][2], s[n][3]));
  }
  mx0 = fmaxf(mx0, shfl_xor(mx0, 1));
  mx0 = fmaxf(mx0, shfl_xor(mx0, 2));
  mx1 = fmaxf(mx1, shfl_xor(mx1, 1));
  mx1 = fmaxf(mx1, shfl_xor(mx1, 2));
  if constexpr (SCALED) {
    mx0 *= sc;  // -inf stays -inf (sc > 0)
    mx1 *= sc;
  }
  float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
#if SWA_OPS_WS_RESCALE_SLACK > 0
  if constexpr (SCALED) {
    // m = -inf takes any finite max; a max of -inf (no key yet) never replaces m.
    mn0 = mx0 > m0 + float(SWA_OPS_WS_RESCALE_SLACK) ? mx0 : m0;
    mn1 = mx1 > m1 + float(SWA_OPS_WS_RESCALE_SLACK) ? mx1 : m1;
  }
#endif
  const float ms0 = mn0 == kNegInf ? 0.f : mn0, ms1 = mn1 == kNegInf ? 0.f : mn1;
  const float al0 = fast_exp2(m0 - ms0), al1 = fast_exp2(m1 - ms1);
  m0 = mn0;
  m1 = mn1;
  // The exponent of a logit x against the row's max ms.
  auto arg = [sc](float x, float ms) { return SCALED ? fmaf(x, sc, -ms) : x - ms; };
  float rs0 = 0.f, rs1 = 0.f;
#pragma unroll
  for (int n = 0; n < SNT; ++n) {
    s[n][0] = fast_exp2(arg(s[n][0], ms0));
    s[n][1] = fast_exp2(arg(s[n][1], ms0));
    s[n][2] = fast_exp2(arg(s[n][2], ms1));
    s[n][3] = fast_exp2(arg(s[n][3], ms1));
    rs0 += s[n][0] + s[n][1];
    rs1 += s[n][2] + s[n][3];
  }
  l0 = l0 * al0 + rs0;
  l1 = l1 * al1 + rs1;
  return make_float2(al0, al1);
}

// Epilogue statistics of a lane's two rows (packed rows R and R + 8 of the CTA's sequence and kv
// head): the quad's partial sums added up, then, with sinks, each live row's sink once: its sum
// and outputs rescaled to max(row max, sink) and exp2(sink - that) added to the sum.
template <int ONT>
SWA_D void finish_row_sums(const PrefillParams& p, int kvh, int R, int rows, float m0, float m1,
                           float& l0, float& l1, float (&o)[ONT][4]) {
  l0 += shfl_xor(l0, 1);
  l0 += shfl_xor(l0, 2);
  l1 += shfl_xor(l1, 1);
  l1 += shfl_xor(l1, 2);
  if (p.sinks == nullptr) return;
  auto add_sink = [&](int r, float m, float& l, int e) {  // e: the row's accumulator pair
    if (r >= rows) return;
    const float sk = p.sinks[kvh * p.group + r % p.group] * kLog2e;
    const float mx2 = fmaxf(m, sk), f = fast_exp2(m - mx2);
    l = l * f + fast_exp2(sk - mx2);
#pragma unroll
    for (int nt = 0; nt < ONT; ++nt) { o[nt][e] *= f; o[nt][e + 1] *= f; }
  };
  add_sink(R, m0, l0, 0);
  add_sink(R + 8, m1, l1, 2);
}

// Where CTA x (below the plan's total) sits: its sequence, the last s with cta_start[s] <= x
// (empty sequences repeat a value; the last of a run owns x), that sequence's query rows, the
// CTA's BM-row tile of them (later tiles first: without a window they see the most keys, so they
// start earliest), and the sequence's length clamped to what its block-table row addresses.
struct PrefillCta {
  int seq, q_begin, q_len, rows, row0, L;
};


// One 16-byte chunk (elements c..c + 7) of key t's K and V rows into row r of a stage's K and V
// tiles (ROWS rows, tile_offset's layout): a valid key through its block-table entry, any other
// zero-filled without reading that entry. The 16-bit K/V copies of prefill_mma.h and of
// prefill_ws.h's D = 192 producer.
template <typename T, int D, bool WG, int ROWS>
SWA_D void copy_kv_chunk(const PrefillParams& p, const int* bt, int bs_mask, const T* k_base,
                         const T* v_base, T* ks, T* vs, int r, int c, int t, bool valid) {
  constexpr int kL2Wide = l2_span_for_rows(D * sizeof(T));  // L2 fetch span per copy
  int64_t off = 0;
  if (valid) off = paged_token_offset(p, __ldg(bt + (t >> p.log2_block_size)), t & bs_mask) + c;
  const int so = tile_offset<D, WG>(r, c, ROWS);
  cp_async16<kL2Wide>(ks + so, k_base + off, valid);
  cp_async16<kL2Wide>(vs + so, v_base + off, valid);
}

// P's A fragments (16-bit) from the S accumulators of a 16-row strip after the exponentials:
// n-tiles 2k and 2k + 1 (keys 16k..16k + 15) give k-chunk k.
template <typename T, int SNT, int KCH>
SWA_D void pack_p_fragments(const float (&s)[SNT][4], uint32_t (&pa)[KCH][4]) {
  static_assert(SNT == 2 * KCH, "two 8-key n-tiles per 16-key chunk");
#pragma unroll
  for (int k = 0; k < KCH; ++k) {
    pa[k][0] = pack2<T>(s[2 * k][0], s[2 * k][1]);
    pa[k][1] = pack2<T>(s[2 * k][2], s[2 * k][3]);
    pa[k][2] = pack2<T>(s[2 * k + 1][0], s[2 * k + 1][1]);
    pa[k][3] = pack2<T>(s[2 * k + 1][2], s[2 * k + 1][3]);
  }
}

// 16 bytes (elements c..c + 7) of packed query row R of a sequence whose query tokens start at
// q_begin, kv head kvh (row R is token R / group, head kvh * group + R % group), copied to dst;
// rows at or past `rows` are zero queries (zero-filled, nothing read). The Q copies of
// prefill_mma.h and of prefill_ws.h's plain and persistent grids.
template <typename T>
SWA_D void copy_q_chunk(const PrefillParams& p, T* dst, int q_begin, int kvh, int rows, int R,
                        int c) {
  const bool valid = R < rows;
  int64_t off = 0;
  if (valid)
    off = static_cast<int64_t>(q_begin + R / p.group) * p.q_stride_tok +
          static_cast<int64_t>(kvh * p.group + R % p.group) * p.q_stride_head + c;
  cp_async16(dst, static_cast<const T*>(p.q) + off, valid);
}

template <int BM>
SWA_D PrefillCta locate_prefill_cta(const PrefillParams& p, int x) {
  int s_lo = 0, s_hi = p.num_seqs;
  while (s_hi - s_lo > 1) {
    const int mid = (s_lo + s_hi) / 2;
    if (p.cta_start[mid] <= x) s_lo = mid; else s_hi = mid;
  }
  PrefillCta c;
  c.seq = s_lo;
  c.q_begin = p.query_start_loc[c.seq];
  c.q_len = max(0, p.query_start_loc[c.seq + 1] - c.q_begin);
  const int n_row_tiles = p.cta_start[c.seq + 1] - p.cta_start[c.seq];
  const int tile = n_row_tiles - 1 - (x - p.cta_start[c.seq]);
  c.rows = c.q_len * p.group;
  c.row0 = tile * BM;
  const int cap = p.max_blocks_per_seq << p.log2_block_size;
  c.L = min(max(p.seq_lens[c.seq], 0), cap);
  return c;
}

// A warp's 16 staged output rows (packed rows wr0..wr0 + 15; staged(r, c) points at element c of
// staging row r) out to the output as 16-byte stores, skipping rows past the sequence's.
template <typename T, int D, typename Staged>
SWA_D void store_warp_rows(const PrefillParams& p, int q_begin, int kvh, int wr0, int rows,
                           int lane, Staged&& staged) {
  constexpr int CPR = D / 8;  // 16-byte chunks per row
  T* out = static_cast<T*>(p.out);
  for (int i = lane; i < 16 * CPR; i += 32) {
    const int r = i / CPR, c = (i % CPR) * 8;
    const int R = wr0 + r;
    if (R >= rows) continue;
    const int64_t orow = static_cast<int64_t>(q_begin + R / p.group) * p.num_heads +
                         kvh * p.group + R % p.group;
    store16(out + orow * D + c, load16(staged(r, c)));
  }
}

template <typename T, int D, bool SOFTCAP, bool KV8, bool WG = false>
__global__ void __launch_bounds__(kPrefillWarps * 32)
    prefill_mma_kernel(const PrefillParams p) {
  using Tr = PrefillTraits<D, WG>;
  static_assert(!(WG && KV8), "fp8 caches take the mma.sync variant");
  constexpr int NT = Tr::kThreads, BM = kPrefillRows, BN = Tr::kBN, NSTAGE = Tr::kStages;
  constexpr int ROW = Tr::kRow;
  constexpr int CPR = D / 8;    // 16-byte chunks per 16-bit row
  constexpr int KCH = D / 16;   // k-chunks of QK^T, column pairs of PV
  constexpr int ONT = D / 8;    // n-tiles of the output
  constexpr int SNT = BN / 8;   // n-tiles of S
  static_assert(D % 16 == 0 && BN % 16 == 0, "head size and key tile must be multiples of 16");

  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* smem_base = smem_raw;
#ifndef USE_ROCM
  if constexpr (WG)
    smem_base += (1024 - static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw)) % 1024) % 1024;
#endif
  T* q_s = reinterpret_cast<T*>(smem_base);  // [BM][ROW]: Q, then the output staging
  T* kv_s = q_s + BM * ROW;                 // [NSTAGE][K|V][BN][ROW]

#if defined(__CUDA_ARCH__) && !defined(SWA_OPS_HAS_WGMMA)
  if constexpr (WG) __trap();  // compiled without sm_90a: the host never dispatches here
#endif
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int kvh = blockIdx.y;
  const int x = blockIdx.x;

  // Everything read below may come from the plan kernel or the predecessor (the cache write of
  // this chunk): launched as a programmatic dependent, wait for them first.
  pdl_wait();
  if (x >= p.cta_start[p.num_seqs]) return;  // the whole CTA, before any barrier
  const PrefillCta cta = locate_prefill_cta<BM>(p, x);
  const int seq = cta.seq, q_begin = cta.q_begin, q_len = cta.q_len, rows = cta.rows;
  const int row0 = cta.row0, L = cta.L;
  pdl_launch_dependents();

  // This lane's two rows (lane / 4 and lane / 4 + 8 of its warp) and the CTA's key union.
  const int wr0 = row0 + warp * 16;
  const RowSpan ra = row_span(wr0 + (lane >> 2), rows, p.group, L, q_len, p.window);
  const RowSpan rb = row_span(wr0 + (lane >> 2) + 8, rows, p.group, L, q_len, p.window);
  const int last_row = min(row0 + BM, rows) - 1;
  const RowSpan first = row_span(row0, rows, p.group, L, q_len, p.window);
  const RowSpan last = row_span(last_row, rows, p.group, L, q_len, p.window);
  // Positions grow with R, so the first row with a position >= 0 has the lowest lo: when the
  // first row sits before position 0, lo is 0 (the window of the first live row starts there).
  const int kv_hi = last.hi;
  const int kv_lo = first.hi > first.lo ? first.lo : 0;
  const int origin = kv_lo & ~(BN - 1);
  const int n_tiles = kv_hi > kv_lo ? (kv_hi - origin + BN - 1) / BN : 0;
  // The warp's own union, for skipping tiles none of its rows sees.
  int w_lo = ra.hi > ra.lo ? ra.lo : INT32_MAX, w_hi = ra.hi > ra.lo ? ra.hi : 0;
  if (rb.hi > rb.lo) {
    w_lo = min(w_lo, rb.lo);
    w_hi = max(w_hi, rb.hi);
  }
#pragma unroll
  for (int m = 4; m < 32; m <<= 1) {
    w_lo = min(w_lo, shfl_xor(w_lo, m));
    w_hi = max(w_hi, shfl_xor(w_hi, m));
  }
#pragma unroll
  for (int m = 1; m < 4; m <<= 1) {  // lanes of a quad share rows; keep the reduction uniform
    w_lo = min(w_lo, shfl_xor(w_lo, m));
    w_hi = max(w_hi, shfl_xor(w_hi, m));
  }

  const int* bt = p.block_tables + static_cast<int64_t>(seq) * p.bt_stride;
  const int bs_mask = p.block_size - 1;

  // Q rows of this CTA into shared memory (rows past the sequence's rows are zero queries).
  {
    for (int i = tid; i < BM * CPR; i += NT) {
      const int r = i / CPR, c = (i % CPR) * 8;
      copy_q_chunk(p, q_s + tile_offset<D, WG>(r, c, BM), q_begin, kvh, rows, row0 + r, c);
    }
    cp_async_commit();
  }

  // One K/V tile (keys [t0, t0 + BN)) into `stage`, block-wide; keys outside [kv_lo, kv_hi) are
  // zero-filled without touching their block-table entries.
  const T* k_base = static_cast<const T*>(p.k_cache) + kvh * p.kv_stride_head;
  const T* v_base = static_cast<const T*>(p.v_cache) + kvh * p.kv_stride_head;
  auto issue = [&](int j, int stage) {
    const int t0 = origin + j * BN;
    T* ks = kv_s + stage * Tr::kStageElems;
    T* vs = ks + BN * ROW;
    if constexpr (KV8) {
      constexpr int CH = D / 16;  // 16-byte fp8 chunks per row, into bytes [D, 2D) of the row
      const unsigned char* kb8 =
          static_cast<const unsigned char*>(p.k_cache) + kvh * p.kv_stride_head;
      const unsigned char* vb8 =
          static_cast<const unsigned char*>(p.v_cache) + kvh * p.kv_stride_head;
      for (int i = tid; i < BN * CH; i += NT) {
        const int r = i / CH, c = i % CH;
        const int t = t0 + r;
        const bool valid = t >= kv_lo && t < kv_hi;
        int64_t off = 0;
        if (valid)
          off = paged_token_offset(p, __ldg(bt + (t >> p.log2_block_size)), t & bs_mask) + c * 16;
        const int dst = r * ROW * 2 + D + c * 16;
        cp_async16(reinterpret_cast<unsigned char*>(ks) + dst, kb8 + off, valid);
        cp_async16(reinterpret_cast<unsigned char*>(vs) + dst, vb8 + off, valid);
      }
    } else {
#pragma unroll
      for (int k = 0; k < (BN * CPR + NT - 1) / NT; ++k) {
        const int i = tid + k * NT;
        if (BN * CPR % NT != 0 && i >= BN * CPR) break;
        const int r = i / CPR, c = (i % CPR) * 8;
        const int t = t0 + r;
        copy_kv_chunk<T, D, WG, BN>(p, bt, bs_mask, k_base, v_base, ks, vs, r, c, t,
                                    t >= kv_lo && t < kv_hi);
      }
    }
  };

  // fp8: widen a stage's K and V rows in place (read everything, barrier, write: a row's 16-bit
  // chunks overlap other threads' fp8 source bytes).
  auto widen = [&](int stage) {
    constexpr int CH = D / 16;
    constexpr int PER = (2 * BN * CH + NT - 1) / NT;
    unsigned char* base = reinterpret_cast<unsigned char*>(kv_s + stage * Tr::kStageElems);
    Vec16 raw[PER];
#pragma unroll
    for (int k = 0; k < PER; ++k) {
      const int i = tid + k * NT;
      if (i < 2 * BN * CH) raw[k] = load16(base + (i / CH) * ROW * 2 + D + (i % CH) * 16);
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < PER; ++k) {
      const int i = tid + k * NT;
      if (i >= 2 * BN * CH) continue;
      Vec16 o2[2];
#pragma unroll
      for (int w = 0; w < 4; ++w) {
        float f[4];
#pragma unroll
        for (int b = 0; b < 4; ++b)
          f[b] = fp8_e4m3_to_float(static_cast<uint8_t>(raw[k].w[w] >> (8 * b)));
        o2[w / 2].w[(w % 2) * 2] = pack2<T>(f[0], f[1]);
        o2[w / 2].w[(w % 2) * 2 + 1] = pack2<T>(f[2], f[3]);
      }
      unsigned char* dst = base + (i / CH) * ROW * 2 + (i % CH) * 32;
      store16(dst, o2[0]);
      store16(dst + 16, o2[1]);
    }
    __syncthreads();
  };

  const float k_sc = KV8 ? *p.k_scale : 1.f, v_sc = KV8 ? *p.v_scale : 1.f;
  const float scale_log2 = p.scale_log2 * k_sc, cap_pre = p.cap_pre * k_sc;

#pragma unroll
  for (int j = 0; j < NSTAGE - 1; ++j) {
    if (j < n_tiles) issue(j, j);
    cp_async_commit();
  }

  // ldmatrix lane roles (decode_mma.h): A rows/cols, K as the col-major B, V transposed.
  const int a_row = (lane & 7) + ((lane >> 3) & 1) * 8, a_col = (lane >> 4) * 8;
  const int k_row = (lane & 7) + (lane >> 4) * 8, k_col = ((lane >> 3) & 1) * 8;
  const int v_row = (lane & 7) + ((lane >> 3) & 1) * 8, v_col = (lane >> 4) * 8;
  const int quad_col = (lane & 3) * 2;
  const T* q_w = q_s + warp * 16 * ROW;

  uint32_t q_frag[Tr::kQInRegs ? KCH : 1][4];
  float m0 = kNegInf, m1 = kNegInf, l0 = 0.f, l1 = 0.f;  // rows a (lane / 4) and b (+ 8)
  float o[ONT][4];
#pragma unroll
  for (int nt = 0; nt < ONT; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;

  // Logits of one tile -> unnormalised probabilities in place, with the running max / sum and
  // the O rescale. Shared by both variants: their accumulator layouts agree.
  auto softmax_tile = [&](float (&s)[SNT][4], int t0) {
    // Logits in log2 units; soft-cap before the mask so a masked key weighs exactly 0.
    scale_logits<SOFTCAP>(s, scale_log2, cap_pre, p.cap_post);
    // Mask unless the whole tile is inside both of this lane's rows' windows, on every lane.
    const bool inside = t0 >= ra.lo && t0 + BN <= ra.hi && t0 >= rb.lo && t0 + BN <= rb.hi;
    if (warp_any(!inside)) mask_tile<SNT>(s, t0, quad_col, ra, rb);

    // Online softmax.
    const float2 al = online_softmax_tile<SNT>(s, m0, m1, l0, l1);
    const float al0 = al.x, al1 = al.y;
    if (warp_any(al0 != 1.f || al1 != 1.f)) {
#pragma unroll
      for (int nt = 0; nt < ONT; ++nt) {
        o[nt][0] *= al0; o[nt][1] *= al0; o[nt][2] *= al1; o[nt][3] *= al1;
      }
    }
  };

  if (n_tiles == 0) {  // no row sees a key (L == 0 or every position < 0): zeros below
    cp_async_wait<0>();
    __syncthreads();
  }
  if constexpr (WG) {
    static_assert(NSTAGE == 2, "the wgmma pipeline below is written for two stages");
    // Per tile j, in each warpgroup: softmax(j) on S(j); O += P(j) V(j); then wait for tile
    // j + 1's copies, issue S(j + 1) = Q K(j + 1)^T and, while it runs, the copies of tile j + 2
    // into the stage P V(j) used: the barrier before S(j + 1) is what makes that stage free, as
    // every warpgroup waits for its own P V(j) before reaching it. The two warpgroups of a CTA
    // interleave their softmax with each other's wgmma chains.
    float s[SNT][4];
    auto issue_s = [&](int stage) {
      const T* ks = kv_s + stage * Tr::kStageElems;
      // K-major operands: k-step kc is 32 bytes into its 128-byte swizzle row of column block
      // kc / 4; 8-row groups 1024 bytes apart (SBO); LBO unused with this swizzle.
      reg_fence<SNT * 4>(&s[0][0]);
      wgmma_fence();
#pragma unroll
      for (int kc = 0; kc < KCH; ++kc) {
        const uint64_t da = make_smem_desc(
            q_s + (kc >> 2) * BM * 64 + (warp >> 2) * 64 * 64 + (kc & 3) * 16, 16, 1024);
        const uint64_t db = make_smem_desc(ks + (kc >> 2) * BN * 64 + (kc & 3) * 16, 16, 1024);
        wgmma_ss<T, BN>(&s[0][0], da, db, kc > 0 ? 1 : 0);
      }
      wgmma_commit();
      reg_fence<SNT * 4>(&s[0][0]);
    };
    if (n_tiles > 0) {
      cp_async_wait<0>();  // Q and tile 0
      fence_proxy_async_smem();
      __syncthreads();
      issue_s(0);
      if (1 < n_tiles) issue(1, 1);
      cp_async_commit();
    }
    for (int j = 0; j < n_tiles; ++j) {
      const int stage = j & 1;
      wgmma_wait<0>();  // S(j)
      reg_fence<SNT * 4>(&s[0][0]);
      reg_fence<ONT * 4>(&o[0][0]);
      softmax_tile(s, origin + j * BN);
      // Every P fragment is packed before the chain is issued.
      uint32_t pa[BN / 16][4];
      pack_p_fragments<T>(s, pa);
      const T* vs = kv_s + stage * Tr::kStageElems + BN * ROW;
      reg_fence<ONT * 4>(&o[0][0]);
      wgmma_fence();
#pragma unroll
      for (int kc2 = 0; kc2 < BN / 16; ++kc2) {
        // V as the MN-major (transposed) B: keys kc2 * 16.. are rows 16 kc2.. of each column
        // block; column blocks BN * 128 bytes apart (LBO), 8-key groups 1024 bytes (SBO).
        const uint64_t dv = make_smem_desc(vs + kc2 * 16 * 64, BN * 128, 1024);
        wgmma_rs_tb<T, D>(&o[0][0], pa[kc2], dv, 1);
      }
      wgmma_commit();
      // Waiting here costs less than overlapping P V(j) with S(j + 1): with both in flight,
      // ptxas serializes the chains (C7515) and run 4 measured 10 % slower.
      wgmma_wait<0>();
      reg_fence<ONT * 4>(&o[0][0]);
      if (j + 1 < n_tiles) {
        cp_async_wait<0>();  // tile j + 1, every thread's share
        fence_proxy_async_smem();
        __syncthreads();
        issue_s((j + 1) & 1);
        // P V(j) is done, so its stage is free: the copies of tile j + 2 go out under S(j + 1).
        if (j + 2 < n_tiles) issue(j + 2, stage);
        cp_async_commit();
      }
    }
    wgmma_wait<0>();
    reg_fence<ONT * 4>(&o[0][0]);
  } else {
    for (int j = 0; j < n_tiles; ++j) {
      if (j + NSTAGE - 1 < n_tiles) issue(j + NSTAGE - 1, (j + NSTAGE - 1) % NSTAGE);
      cp_async_commit();
      cp_async_wait<NSTAGE - 1>();
      __syncthreads();
      const int stage = j % NSTAGE;
      if constexpr (KV8) widen(stage);
      if constexpr (Tr::kQInRegs) {
        if (j == 0) {
#pragma unroll
          for (int kc = 0; kc < KCH; ++kc)
            ldmatrix_x4(smem_addr(q_w + a_row * ROW + kc * 16 + a_col), q_frag[kc][0],
                        q_frag[kc][1], q_frag[kc][2], q_frag[kc][3]);
        }
      }
      const T* ks = kv_s + stage * Tr::kStageElems;
      const T* vs = ks + BN * ROW;
      const int t0 = origin + j * BN;
      if (t0 < w_hi && t0 + BN > w_lo) {  // some row of this warp sees a key of the tile
        float s[SNT][4];
#pragma unroll
        for (int n = 0; n < SNT; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
        for (int kc = 0; kc < KCH; ++kc) {
          uint32_t a[4];
          if constexpr (Tr::kQInRegs) {
            a[0] = q_frag[kc][0]; a[1] = q_frag[kc][1]; a[2] = q_frag[kc][2]; a[3] = q_frag[kc][3];
          } else {
            ldmatrix_x4(smem_addr(q_w + a_row * ROW + kc * 16 + a_col), a[0], a[1], a[2], a[3]);
          }
#pragma unroll
          for (int np = 0; np < BN / 16; ++np) {
            uint32_t b0, b1, b2, b3;
            ldmatrix_x4(smem_addr(ks + (np * 16 + k_row) * ROW + kc * 16 + k_col), b0, b1, b2,
                        b3);
            mma_16816<T>(s[2 * np], a, b0, b1);
            mma_16816<T>(s[2 * np + 1], a, b2, b3);
          }
        }
        softmax_tile(s, t0);
        // O += P V, P straight from the S accumulators (already the A layout).
#pragma unroll
        for (int kc2 = 0; kc2 < BN / 16; ++kc2) {
          const uint32_t pa[4] = {pack2<T>(s[2 * kc2][0], s[2 * kc2][1]),
                                  pack2<T>(s[2 * kc2][2], s[2 * kc2][3]),
                                  pack2<T>(s[2 * kc2 + 1][0], s[2 * kc2 + 1][1]),
                                  pack2<T>(s[2 * kc2 + 1][2], s[2 * kc2 + 1][3])};
#pragma unroll
          for (int dp = 0; dp < KCH; ++dp) {
            uint32_t b0, b1, b2, b3;
            ldmatrix_x4_trans(smem_addr(vs + (kc2 * 16 + v_row) * ROW + dp * 16 + v_col), b0, b1,
                              b2, b3);
            mma_16816<T>(o[2 * dp], pa, b0, b1);
            mma_16816<T>(o[2 * dp + 1], pa, b2, b3);
          }
        }
      }
      __syncthreads();  // every warp is done with this stage before it is refilled
    }
  }
  cp_async_wait<0>();

  // Epilogue: the row sums, the sink (once per row), 1 / sum, then the rows through this warp's
  // own 16 rows of q_s (no other warp reads them any more) and out as 16-byte stores.
  finish_row_sums<ONT>(p, kvh, wr0 + (lane >> 2), rows, m0, m1, l0, l1, o);
  const float inv0 = l0 > 0.f ? v_sc / l0 : 0.f, inv1 = l1 > 0.f ? v_sc / l1 : 0.f;
  // Unpadded rows of D in the wgmma variant. Above D = 64 a warp's staging rows cut across the
  // swizzled Q tile's column blocks, i.e. across the other warpgroup's Q rows, which that
  // warpgroup's last S chain (issued after the loop's last __syncthreads) may still be reading:
  // wait for every warp first. (D = 64, and the mma.sync variant's padded rows: a warp's own Q
  // rows, which no one else reads.)
  if constexpr (WG && D > 64) __syncthreads();
  warp_sync();
  constexpr int OROW = WG ? D : ROW;
  T* stage_o = q_s + warp * 16 * OROW;
#pragma unroll
  for (int nt = 0; nt < ONT; ++nt) {
    const int col = nt * 8 + quad_col;
    *reinterpret_cast<uint32_t*>(stage_o + (lane >> 2) * OROW + col) =
        pack2<T>(o[nt][0] * inv0, o[nt][1] * inv0);
    *reinterpret_cast<uint32_t*>(stage_o + ((lane >> 2) + 8) * OROW + col) =
        pack2<T>(o[nt][2] * inv1, o[nt][3] * inv1);
  }
  warp_sync();
  store_warp_rows<T, D>(p, q_begin, kvh, wr0, rows, lane,
                        [&](int r, int c) { return stage_o + r * OROW + c; });
}

// Per sequence, how many CTAs (64-row tiles of its q_len * group packed rows) it gets, as an
// exclusive prefix sum over sequences in one block; cta_start[num_seqs] is the total. It also
// zeroes the output rows no sequence covers (tokens before query_start_loc[0] or from
// query_start_loc[num_seqs] on), as the reference leaves them.
constexpr int kPlanThreads = 256;

template <int BM>
__global__ void __launch_bounds__(kPlanThreads) prefill_plan_kernel(const PrefillParams p) {
  __shared__ int scan[kPlanThreads];
  __shared__ int carry;
  const int tid = threadIdx.x;
  pdl_wait();
  if (tid == 0) carry = 0;
  __syncthreads();
  for (int base = 0; base < p.num_seqs; base += kPlanThreads) {
    const int s = base + tid;
    int v = 0;
    if (s < p.num_seqs) {
      const int q_len = max(0, p.query_start_loc[s + 1] - p.query_start_loc[s]);
      v = (q_len * p.group + BM - 1) / BM;
    }
    scan[tid] = v;
    __syncthreads();
    for (int off = 1; off < kPlanThreads; off <<= 1) {  // Hillis-Steele inclusive scan
      const int add = tid >= off ? scan[tid - off] : 0;
      __syncthreads();
      scan[tid] += add;
      __syncthreads();
    }
    if (s < p.num_seqs) p.cta_start[s] = carry + scan[tid] - v;
    __syncthreads();
    if (tid == 0) carry += scan[kPlanThreads - 1];
    __syncthreads();
  }
  if (tid == 0) p.cta_start[p.num_seqs] = carry;
  // The tail split's counters start at zero (prefill_ws.h); written after the wait above, so the
  // previous launch, which may use them, has finished.
  for (int i = tid; i < p.tail_slots; i += kPlanThreads) p.tail_count[i] = 0;
  pdl_launch_dependents();

  // Uncovered output rows: zeros (16-byte stores; a row is num_heads * head_size 16-bit values,
  // a multiple of 8 since head sizes are).
  const int cov_lo = min(max(p.query_start_loc[0], 0), p.num_tokens);
  const int cov_hi = min(max(p.query_start_loc[p.num_seqs], cov_lo), p.num_tokens);
  const int64_t row_vecs = static_cast<int64_t>(p.num_heads) * p.head_size / 8;
  Vec16* out = static_cast<Vec16*>(p.out);
  const Vec16 zero = {{0u, 0u, 0u, 0u}};
  for (int64_t i = tid; i < cov_lo * row_vecs; i += kPlanThreads) out[i] = zero;
  for (int64_t i = cov_hi * row_vecs + tid; i < p.num_tokens * row_vecs; i += kPlanThreads)
    out[i] = zero;
}

}  // namespace swa_ops
