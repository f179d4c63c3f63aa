// Warp-specialized Hopper prefill (sm_90a, 16-bit caches, D in {64, 128, 192, 256}): the
// FlashAttention-3 structure over the paged cache. Same contract as prefill_mma.h's wgmma variant
// (rows, key union, masks, soft-cap, sinks, zeroed rows, plan kernel, PDL, a grid from host-known
// values). SWA_OPS_PREFILL_WS (read by the launcher) picks 0: prefill_mma.h's variant instead,
// 1 (default): this kernel without the intra-warpgroup overlap, 2: with it (slower in run 25).
//
// Roles. Three warpgroups per CTA (384 threads; one CTA per SM, two at D = 64):
//  - warpgroup 0, the producer, gives registers back (setmaxnreg.dec) and only copies K/V
//    tiles into a ring of kStages shared-memory stages: per tile, wait for the stage's `empty`
//    barrier, cp.async its keys (zero-filled past the union, block-table entries read only inside
//    it), then cp.async.mbarrier.arrive.noinc on the stage's `full` barrier, which completes when
//    every producer thread's copies have landed. (Not TMA: a tile spans blocks of 8..256 tokens
//    at arbitrary offsets, and the union's edges cut blocks, so it is one 16-byte copy per chunk
//    either way; the producer warpgroup takes that address math off the consumers.)
//  - warpgroups 1 and 2, the consumers, take registers (setmaxnreg.inc), own 64 packed rows
//    each, and only run wgmma and the softmax. They never wait for each other's data.
//
// Consumer schedule. Batch 0 is S(0) = Q K(0)^T; batch g in [1, n_tiles) is P V(g - 1) and
// S(g); batch n_tiles is P V(n_tiles - 1). After a batch's P V completes, its stage is released
// (one arrive per warp on `empty`); the softmax of S(g) turns it into P(g) (registers, the A
// operand of the next P V). The O rescale and P's packing come after the wait for the P V in
// flight, so no non-wgmma instruction writes an accumulator or A operand of an asynchronous
// wgmma (ptxas would serialize them, C7515). With the overlap, S(g) and P V(g - 1) are separate
// commit groups and the exponentials of S(g) run while P V(g - 1) is still on the tensor cores.
// Ping-pong: named barrier kBarTurn + w is consumer w's turn to issue; it waits for its turn
// before a batch and hands it to the other consumer right after committing, so one consumer's
// softmax runs while the other's batch occupies the tensor cores.
//
// Barrier phases: tile j lives in stage j % S; the consumers wait for the (j / S)-th completion
// of full[j % S] (parity (j / S) & 1); the producer refills stage j % S for j >= S after the
// (j / S - 1)-th completion of empty[j % S], i.e. once both consumers released tile j - S
// (tools/ws_model.py checks these rules and the turn hand-off on a host model).
#pragma once

#include "swa_ops/compat.h"
#include "swa_ops/decode_mma.h"  // kLog2e, kNegInf
#include "swa_ops/params.h"
#include "swa_ops/prefill_mma.h"  // RowSpan, row_span, tile_offset, mask_tile, online_softmax_tile
#include "swa_ops/wgmma.h"

#ifndef USE_ROCM  // NVIDIA Hopper only: AMD builds never see this kernel
namespace swa_ops {

template <int D>
struct PrefillWsTraits {
  static constexpr int kThreads = 384;  // producer warpgroup + two consumer warpgroups
  static constexpr int kBM = kPrefillRows;  // 128: 64 rows per consumer warpgroup
  // Key tile: 128 keys at D = 128 (S m64n128, as FlashAttention-3: half the batches and
  // barriers per key of 64-key tiles); 32 elsewhere. At D = 64 the 32-key S keeps the consumers
  // within the 104 registers two CTAs per SM leave them (64-key tiles made ptxas serialize the
  // wgmma chains there, C7512), and gpt-oss's 143-key unions (W = 128, 16 tokens per CTA) take
  // 160 keys of work instead of 192; above D = 128, O's D / 2 accumulators leave little room.
  static constexpr int kBN = D == 128 ? 128 : 32;
  static constexpr int kStageBytes = 2 * kBN * D * 2;  // K tile then V tile, 16-bit
  static constexpr int kQBytes = kBM * D * 2;
  // CTAs per SM: two at D = 64, where a CTA's work is short (gpt-oss: five 32-key tiles per
  // CTA), so one CTA's prologue and epilogue hide under the other's tiles; one above.
  static constexpr int kCtasPerSm = D == 64 ? 2 : 1;
  // Registers per thread after setmaxnreg (multiples of 8): 128 producer + 256 consumer threads
  // fill the 168 (one CTA) or 80 (two) that __launch_bounds__ gives each: 56 * 128 + 224 * 256
  // = 64512, 32 * 128 + 104 * 256 = 30720.
  static constexpr int kProducerRegs = kCtasPerSm == 1 ? 56 : 32;
  static constexpr int kConsumerRegs = kCtasPerSm == 1 ? 224 : 104;
  // As many stages as fit beside Q (at most 6) in 224 KB, or 96 KB per CTA at two per SM: the
  // producer keeps kStages - 1 tiles (256 keys at D = 128) in flight ahead of the consumers.
  static constexpr int kBudget = kCtasPerSm == 1 ? 229376 : 98304;
  static constexpr int kFit = (kBudget - kQBytes) / kStageBytes;
  static constexpr int kStages = kFit < 6 ? kFit : 6;
  // Three: OVERLAP polls for tile g + 1 before releasing tile g - 1 (tools/ws_model.py).
  static_assert(kStages >= 3, "the ring needs three stages");
  static_assert(D % 64 == 0, "64-element column blocks");
  // Q, the ring, then 2 * kStages mbarriers; 1024 bytes of slack for the swizzle alignment.
  static constexpr size_t smem_bytes() {
    return static_cast<size_t>(kQBytes) + static_cast<size_t>(kStages) * kStageBytes +
           16 * kStages + 1024;
  }
};

// --- Hopper synchronisation primitives (sm_90a only; empty elsewhere) -----------------------
SWA_D uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
SWA_D void mbar_init(uint64_t* bar, uint32_t count) {
#ifdef SWA_OPS_HAS_WGMMA
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count)
               : "memory");
#endif
}
SWA_D void mbar_init_fence() {
#ifdef SWA_OPS_HAS_WGMMA
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
SWA_D void mbar_arrive(uint64_t* bar) {
#ifdef SWA_OPS_HAS_WGMMA
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
#endif
}
// Arrives on `bar` once every cp.async this thread issued so far has completed; .noinc: the
// arrival is one of the count the barrier was initialised with.
SWA_D void mbar_arrive_cp_async(uint64_t* bar) {
#ifdef SWA_OPS_HAS_WGMMA
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(smem_u32(bar))
               : "memory");
#endif
}
// Blocks until the phase with this parity has completed.
SWA_D void mbar_wait(uint64_t* bar, uint32_t parity) {
#ifdef SWA_OPS_HAS_WGMMA
  const uint32_t a = smem_u32(bar);
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(a), "r"(parity)
        : "memory");
  } while (!done);
#endif
}
// Named barrier A (first) or B (!first), both of `threads` threads. The ids are immediates (a
// predicated pair, the predicate uniform per warp): with an id in a register ptxas reserves all
// 16 barriers for the kernel.
template <int A, int B, int THREADS>
SWA_D void named_bar_sync(bool first) {
#ifdef SWA_OPS_HAS_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.u32 p, %0, 0;\n@p bar.sync %1, %3;\n@!p bar.sync %2, %3;\n}\n"
      ::"r"(static_cast<uint32_t>(first)), "n"(A), "n"(B), "n"(THREADS) : "memory");
#endif
}
template <int A, int B, int THREADS>
SWA_D void named_bar_arrive(bool first) {
#ifdef SWA_OPS_HAS_WGMMA
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.u32 p, %0, 0;\n@p bar.arrive %1, %3;\n@!p bar.arrive %2, %3;\n}\n"
      ::"r"(static_cast<uint32_t>(first)), "n"(A), "n"(B), "n"(THREADS) : "memory");
#endif
}
template <int N>
SWA_D void setmaxnreg_inc() {
#ifdef SWA_OPS_HAS_WGMMA
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}
template <int N>
SWA_D void setmaxnreg_dec() {
#ifdef SWA_OPS_HAS_WGMMA
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}

// Descriptor d with its start address moved by `units` 16-byte units: a 32-bit add on the low
// word (the caller keeps the address field from carrying out), the high word left as is.
SWA_D uint64_t desc_plus(uint64_t d, uint32_t units) {
  const uint32_t lo = static_cast<uint32_t>(d) + units;
  return (d & 0xffffffff00000000ull) | lo;
}

// Hides a value's origin from the optimizer (no instruction): it cannot re-derive it at the uses.
template <typename V>
SWA_D void opaque(V& v) {
  static_assert(sizeof(V) == 8, "64-bit values");
  asm volatile("" : "+l"(v));
}

// Named barriers (0 is __syncthreads): the two consumers' turns, and each consumer's own sync.
constexpr int kBarTurn = 1;   // kBarTurn + w: consumer w may issue its wgmma batch (256 threads)
constexpr int kBarWg = 3;     // kBarWg + w: consumer w's 128 threads

template <typename T, int D, bool SOFTCAP, bool OVERLAP>
__global__ void __launch_bounds__(384, PrefillWsTraits<D>::kCtasPerSm)
    prefill_ws_kernel(const PrefillParams p) {
  using Tr = PrefillWsTraits<D>;
  constexpr int BM = Tr::kBM, BN = Tr::kBN, NST = Tr::kStages;
  constexpr int CPR = D / 8;   // 16-byte chunks per row
  constexpr int KCH = D / 16;  // k-steps of Q K^T
  constexpr int ONT = D / 8;   // 8-column chunks of O
  constexpr int SNT = BN / 8;  // 8-column chunks of S
  constexpr int TILE = BN * D;  // elements of one K (or V) tile
  constexpr int kL2Wide = l2_span_for_rows(D * sizeof(T));  // L2 fetch span per copy

  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* smem_base =
      smem_raw + (1024 - static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw)) % 1024) % 1024;
  T* q_s = reinterpret_cast<T*>(smem_base);  // [BM x D] swizzled: Q, then the output staging
  T* kv_s = q_s + BM * D;                    // [NST][K | V][BN x D] swizzled
  uint64_t* full = reinterpret_cast<uint64_t*>(kv_s + NST * 2 * TILE);
  uint64_t* empty = full + NST;

#if defined(__CUDA_ARCH__) && !defined(SWA_OPS_HAS_WGMMA)
  __trap();  // compiled without sm_90a: the host never dispatches here
#endif
  const int tid = threadIdx.x, lane = tid % 32;
  const int kvh = blockIdx.y;
  const int x = blockIdx.x;

  pdl_wait();
  if (x >= p.cta_start[p.num_seqs]) return;  // the whole CTA, before any barrier
  const PrefillCta cta = locate_prefill_cta<BM>(p, x);
  const int seq = cta.seq, q_begin = cta.q_begin, q_len = cta.q_len, rows = cta.rows;
  const int row0 = cta.row0, L = cta.L;
  pdl_launch_dependents();

  // The CTA's key union, as prefill_mma.h. Tiles start at kv_lo itself (no alignment: a key's
  // copy is one 16-byte chunk per row either way), so the union takes ceil(span / BN) tiles.
  const int last_row = min(row0 + BM, rows) - 1;
  const RowSpan first = row_span(row0, rows, p.group, L, q_len, p.window);
  const RowSpan last = row_span(last_row, rows, p.group, L, q_len, p.window);
  const int kv_hi = last.hi;
  const int kv_lo = first.hi > first.lo ? first.lo : 0;
  const int n_tiles = kv_hi > kv_lo ? (kv_hi - kv_lo + BN - 1) / BN : 0;

  if (tid == 0) {
    for (int s = 0; s < NST; ++s) {
      mbar_init(&full[s], 128);  // one cp.async arrival per producer thread
      mbar_init(&empty[s], 8);   // one arrival per consumer warp
    }
    mbar_init_fence();
  }
  __syncthreads();  // the last CTA-wide barrier: the roles never meet again

  // Broadcast from lane 0 (as CUTLASS's canonical_warp_group_idx): the compiler then knows it is
  // warp-uniform, so what derives from it (the consumer's Q descriptors) can live in uniform
  // registers instead of being moved into them (R2UR) before every wgmma.
  const int wg = __shfl_sync(0xffffffffu, tid / 128, 0);
  if (wg == 0) {
    // ---------------- producer ----------------
    setmaxnreg_dec<Tr::kProducerRegs>();
    const unsigned pt = tid;  // 0..127 (unsigned: its / and % are shifts)
    const int* bt = p.block_tables + static_cast<int64_t>(seq) * p.bt_stride;
    const int bs_mask = p.block_size - 1;
    const T* k_base = static_cast<const T*>(p.k_cache) + kvh * p.kv_stride_head;
    const T* v_base = static_cast<const T*>(p.v_cache) + kvh * p.kv_stride_head;
    // The fixed-chunk path below: this thread's column chunk, strides in bytes.
    const char* k_col = reinterpret_cast<const char*>(k_base + (pt % CPR) * 8);
    const char* v_col = reinterpret_cast<const char*>(v_base + (pt % CPR) * 8);
    uint64_t sb_bytes = static_cast<uint64_t>(p.kv_stride_block) * sizeof(T);
    uint64_t st_bytes = static_cast<uint64_t>(p.kv_stride_tok) * sizeof(T);
    // Opaque to the compiler, which otherwise folds them back into the per-round sums (factoring
    // out sizeof(T) and the sequence's table row: extra 64-bit shifts and adds per round).
    opaque(bt);
    opaque(k_col);
    opaque(v_col);
    opaque(sb_bytes);
    opaque(st_bytes);
    for (int j = 0; j < n_tiles; ++j) {
      const int stage = j % NST;
      const int t0 = kv_lo + j * BN;
      T* ks = kv_s + stage * 2 * TILE;
      T* vs = ks + TILE;
      static_assert(BN * CPR % 128 == 0, "whole rounds of 16-byte chunks per producer thread");
      if constexpr (128 % CPR == 0) {
        // D = 64, 128, 256: a thread keeps one 16-byte column chunk cc of rows rw + RPR k, so
        // per round only the row's block-table entry and offset change, and its shared-memory
        // offset is a constant step (the swizzle term (cc ^ r) & 7 only flips by RPR k & 7).
        // The block-table entries of all rounds are read first, before the wait for the stage
        // (one exposed load latency per tile, hidden under that wait, instead of one per round),
        // clamped into the union so the reads stay inside it and no branch splits the rounds.
        constexpr int RPR = 128 / CPR;  // rows per round
        constexpr int NR = BN / RPR;    // rounds
        static_assert((RPR & (RPR - 1)) == 0, "rows per round a power of two");
        const int rw = pt / CPR, cc = pt % CPR;
        const int so0 = (cc >> 3) * BN * 64 + rw * 64;  // tile_offset(rw, 8 cc) without swizzle
        const int sw0 = (cc & 7) ^ (rw & 7);
        int blk[NR];
#pragma unroll
        for (int k = 0; k < NR; ++k) {
          const unsigned tc = min(t0 + rw + RPR * k, kv_hi - 1);  // >= kv_lo >= 0
          blk[k] = __ldg(bt + (tc >> p.log2_block_size));
        }
        if (j >= NST) mbar_wait(&empty[stage], ((j / NST) - 1) & 1);
#pragma unroll
        for (int k = 0; k < NR; ++k) {
          const int t = t0 + rw + RPR * k;
          // (rw + RPR k) & 7 == (rw & 7) ^ (RPR k & 7): rw < RPR, both powers of two.
          const int so = so0 + RPR * k * 64 + ((sw0 ^ ((RPR * k) & 7)) << 3);
          // Byte offset; entries inside the union are real blocks (>= 0): unsigned products.
          const uint64_t off = static_cast<uint32_t>(blk[k]) * sb_bytes +
                               static_cast<uint32_t>(t & bs_mask) * st_bytes;
          cp_async16<kL2Wide>(ks + so, k_col + off, t < kv_hi);
          cp_async16<kL2Wide>(vs + so, v_col + off, t < kv_hi);
        }
      } else {
        // D = 192 (24 chunks per row): a thread's chunk moves from round to round.
        if (j >= NST) mbar_wait(&empty[stage], ((j / NST) - 1) & 1);
#pragma unroll 4
        for (int k = 0; k < BN * CPR / 128; ++k) {
          const int i = pt + k * 128;
          const int r = i / CPR, c = (i % CPR) * 8;
          const int t = t0 + r;
          const bool valid = t < kv_hi;  // t >= kv_lo: tiles start there
          int64_t off = 0;
          if (valid)
            off = static_cast<int64_t>(__ldg(bt + (t >> p.log2_block_size))) * p.kv_stride_block +
                  static_cast<int64_t>(t & bs_mask) * p.kv_stride_tok + c;
          const int so = tile_offset<D, true>(r, c, BN);
          cp_async16<kL2Wide>(ks + so, k_base + off, valid);
          cp_async16<kL2Wide>(vs + so, v_base + off, valid);
        }
      }
      mbar_arrive_cp_async(&full[stage]);
    }
    cp_async_commit();  // the copies went out uncommitted (the barriers track them): commit
    cp_async_wait<0>();  // and wait, so nothing of this thread's is in flight when it exits
    return;
  }

  // ---------------- consumers ----------------
  setmaxnreg_inc<Tr::kConsumerRegs>();
  const int cw = wg - 1;              // consumer 0 or 1: rows cw * 64 .. + 63
  const int ct = tid - 128 * wg;      // thread within the warpgroup
  const int warp = tid / 32 - 4;      // consumer warp 0..7: rows warp * 16 .. + 15
  const int wr0 = row0 + warp * 16;
  const RowSpan ra = row_span(wr0 + (lane >> 2), rows, p.group, L, q_len, p.window);
  const RowSpan rb = row_span(wr0 + (lane >> 2) + 8, rows, p.group, L, q_len, p.window);

  // This warpgroup's 64 Q rows (rows past the sequence's are zero queries).
  {
    const T* qg = static_cast<const T*>(p.q);
    for (int i = ct; i < 64 * CPR; i += 128) {
      const int r = cw * 64 + i / CPR, c = (i % CPR) * 8;
      const int R = row0 + r;
      const bool valid = R < rows;
      int64_t off = 0;
      if (valid)
        off = static_cast<int64_t>(q_begin + R / p.group) * p.q_stride_tok +
              static_cast<int64_t>(kvh * p.group + R % p.group) * p.q_stride_head + c;
      cp_async16(q_s + tile_offset<D, true>(r, c, BM), qg + off, valid);
    }
    cp_async_commit();
    cp_async_wait<0>();
    fence_proxy_async_smem();  // the writers' fence, before wgmma reads Q
    named_bar_sync<kBarWg, kBarWg + 1, 128>(cw == 0);
  }

  const float scale_log2 = p.scale_log2, cap_pre = p.cap_pre;
  // Without soft-cap the logit scale goes into the exponentials' FFMA (online_softmax_tile's
  // SCALED form) instead of a multiply per logit; that takes the max on the raw products, which is
  // the max of the scaled ones only for a positive scale (any other, never used in practice, is
  // applied up front as before).
  const bool fuse_scale = !SOFTCAP && scale_log2 > 0.f;
  const float exp_scale = fuse_scale ? scale_log2 : 1.f;
  const int quad_col = (lane & 3) * 2;
  float m0 = kNegInf, m1 = kNegInf, l0 = 0.f, l1 = 0.f;
  float o[ONT][4];
#pragma unroll
  for (int nt = 0; nt < ONT; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;
  float s[SNT][4];
#pragma unroll
  for (int n = 0; n < SNT; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
  uint32_t pa[BN / 16][4];
#pragma unroll
  for (int k = 0; k < BN / 16; ++k) pa[k][0] = pa[k][1] = pa[k][2] = pa[k][3] = 0u;

  // wgmma descriptors (make_smem_desc) of different k-steps and stages differ only in the start
  // address field, bits 0-13 of the low word (address >> 4; shared addresses stay below 2^18,
  // so the sums never carry out of it): built once here, then one 32-bit add per wgmma instead
  // of the address-to-descriptor math (~5 uniform instructions) per wgmma.
  const uint64_t dq0 = make_smem_desc(q_s + cw * 64 * 64, 16, 1024);
  const uint64_t dk0 = make_smem_desc(kv_s, 16, 1024);
  // V's: K's moved one tile on, with the LBO (bits 16-29) of the transposed layout, derived from
  // dk0 so that it stays in uniform registers as dk0 does.
  const uint64_t dv0 = desc_plus(dk0 + (static_cast<uint64_t>((BN * 128 - 16) >> 4) << 16),
                                 TILE * sizeof(T) / 16);
  constexpr uint32_t kStageStep = 2 * TILE * sizeof(T) / 16;  // one stage, in 16-byte units
  // One wgmma batch: wait for the turn, issue, hand the turn over, wait for the batch.
  auto issue_pv = [&](int j) {
    // V as the MN-major (transposed) B: keys 16 kc2.. are rows of each 64-column block; column
    // blocks BN * 128 bytes apart (LBO), 8-key groups 1024 bytes (SBO).
    const uint32_t st = static_cast<uint32_t>(j % NST) * kStageStep;
#pragma unroll
    for (int kc2 = 0; kc2 < BN / 16; ++kc2) {
      const uint64_t dv = desc_plus(dv0, st + kc2 * 16 * 64 * sizeof(T) / 16);
      wgmma_rs_tb<T, D>(&o[0][0], pa[kc2], dv, 1);
    }
  };
  auto issue_s = [&](int j, float (&sc)[SNT][4]) {
    // K-major Q and K: k-step kc is 32 bytes into its 128-byte swizzle row of column block
    // kc / 4; 8-row groups 1024 bytes apart (SBO).
    const uint32_t st = static_cast<uint32_t>(j % NST) * kStageStep;
#pragma unroll
    for (int kc = 0; kc < KCH; ++kc) {
      const uint64_t da = desc_plus(dq0, ((kc >> 2) * BM * 64 + (kc & 3) * 16) * sizeof(T) / 16);
      const uint64_t db =
          desc_plus(dk0, st + ((kc >> 2) * BN * 64 + (kc & 3) * 16) * sizeof(T) / 16);
      wgmma_ss<T, BN>(&sc[0][0], da, db, kc > 0 ? 1 : 0);
    }
  };
  auto wait_full = [&](int j) {
    mbar_wait(&full[j % NST], (j / NST) & 1);
    fence_proxy_async_smem();  // the cp.async writes it observed, before wgmma reads them
  };
  auto batch_begin = [&]() {
    named_bar_sync<kBarTurn, kBarTurn + 1, 256>(cw == 0);
    reg_fence<SNT * 4>(&s[0][0]);
    reg_fence<ONT * 4>(&o[0][0]);
    wgmma_fence();
  };
  // Consumer 0 syncs on its turn n_tiles + 1 times; consumer 1 arrives there once up front and
  // after each of its batches but the last (which would have no taker).
  auto batch_end = [&](bool last) {
    wgmma_commit();
    if (cw == 0 || !last) named_bar_arrive<kBarTurn, kBarTurn + 1, 256>(cw == 1);
    wgmma_wait<0>();
    reg_fence<SNT * 4>(&s[0][0]);
    reg_fence<ONT * 4>(&o[0][0]);
  };
  auto release = [&](int j) {
    if (lane == 0) mbar_arrive(&empty[j % NST]);  // this warp's wgmma reads of tile j are done
  };

  // Softmax of S(j): logits in log2 units, soft-cap before the mask, online max and sum, the
  // probabilities in place in s. Returns the two rows' rescale factors of O. Writes nothing a
  // P V in flight reads or accumulates into.
  auto softmax_probs = [&](int j, float (&s)[SNT][4]) -> float2 {
    const int t0 = kv_lo + j * BN;
    if (!fuse_scale) scale_logits<SOFTCAP>(s, scale_log2, cap_pre, p.cap_post);
    // Mask unless the tile is inside every live row's window: a CTA-uniform test (lo grows
    // and hi >= lo with the row, so the last live row has the highest lo and the first the
    // lowest hi; a first row before position 0 has hi = 0 and forces the mask). Rows past the
    // sequence's are never stored. Uniform, it is no divergent branch to ptxas, which would
    // otherwise wait for the P V in flight at its reconvergence point.
    if (!(t0 >= last.lo && t0 + BN <= first.hi)) mask_tile<SNT>(s, t0, quad_col, ra, rb);
    return online_softmax_tile<SNT, true>(s, m0, m1, l0, l1, exp_scale);
  };
  // Then O's rescale and P(j) into the A fragments of the next P V: both wait for the P V in
  // flight (they write its accumulators and its A operand).
  auto softmax_finish = [&](float2 al, float (&s)[SNT][4]) {
    if (warp_any(al.x != 1.f || al.y != 1.f)) {
#pragma unroll
      for (int nt = 0; nt < ONT; ++nt) {
        o[nt][0] *= al.x; o[nt][1] *= al.x; o[nt][2] *= al.y; o[nt][3] *= al.y;
      }
    }
#pragma unroll
    for (int kc2 = 0; kc2 < BN / 16; ++kc2) {
      pa[kc2][0] = pack2<T>(s[2 * kc2][0], s[2 * kc2][1]);
      pa[kc2][1] = pack2<T>(s[2 * kc2][2], s[2 * kc2][3]);
      pa[kc2][2] = pack2<T>(s[2 * kc2 + 1][0], s[2 * kc2 + 1][1]);
      pa[kc2][3] = pack2<T>(s[2 * kc2 + 1][2], s[2 * kc2 + 1][3]);
    }
  };

  // n_tiles == 0 (no row sees a key): no batch at all, zeros below. Otherwise batch 0 is S(0)
  // alone, batch g in [1, n_tiles) is P V(g - 1) and S(g), and batch n_tiles is P V(n_tiles - 1)
  // alone: peeled, so every wgmma sits on a straight path (a wgmma under a condition makes ptxas
  // serialize them, C7520).
  if (n_tiles > 0) {
    // Consumer 0 takes the tensor cores first.
    if (cw == 1) named_bar_arrive<kBarTurn, kBarTurn + 1, 256>(true);
    wait_full(0);
    batch_begin();
    issue_s(0, s);
    batch_end(false);
    softmax_finish(softmax_probs(0, s), s);
#pragma unroll 1
    for (int g = 1; g < n_tiles; ++g) {
      wait_full(g);
      batch_begin();
      if constexpr (OVERLAP) {
        // S(g) first, in its own commit group, then P V(g - 1): the softmax of S(g) runs while
        // P V(g - 1) is still on the tensor cores (FlashAttention-3's intra-warpgroup overlap).
        issue_s(g, s);
        wgmma_commit();
        issue_pv(g - 1);
        wgmma_commit();
        named_bar_arrive<kBarTurn, kBarTurn + 1, 256>(cw == 1);
        wgmma_wait<1>();  // S(g)
        reg_fence<SNT * 4>(&s[0][0]);
        float2 al = softmax_probs(g, s);
        // Pin the softmax before the wait: the compiler would otherwise sink the exponentials
        // (plain asm, no memory effects) past it, and nothing would overlap.
        reg_fence<SNT * 4>(&s[0][0]);
        reg_fence<1>(&al.x);
        reg_fence<1>(&al.y);
        reg_fence<1>(&l0);
        reg_fence<1>(&l1);
        // Poll for the next tile before waiting for P V(g - 1): its own use is small (the next
        // wait_full passes at once), but the loop is a basic-block boundary, and ptxas otherwise
        // hoists the wait within its block to before the exponentials.
        if (g + 1 < n_tiles) mbar_wait(&full[(g + 1) % NST], ((g + 1) / NST) & 1);
        wgmma_wait<0>();  // P V(g - 1)
        reg_fence<ONT * 4>(&o[0][0]);
        release(g - 1);
        softmax_finish(al, s);
      } else {
        issue_pv(g - 1);
        issue_s(g, s);
        batch_end(false);
        release(g - 1);
        softmax_finish(softmax_probs(g, s), s);
      }
    }
    batch_begin();
    issue_pv(n_tiles - 1);
    batch_end(true);
    release(n_tiles - 1);
  }

  // Epilogue, as prefill_mma.h: row sums, the sink, 1 / sum. The rows are staged in this warp's
  // own rows of the swizzled Q tile: only this warpgroup's S chains read those, and the barrier
  // below makes sure all of its warps are past their last wait (the other consumer may still be
  // running S chains over its own Q rows, so the unswizzled staging of prefill_mma.h, which
  // spans both warpgroups' rows, would race here).
  finish_row_sums<ONT>(p, kvh, wr0 + (lane >> 2), rows, m0, m1, l0, l1, o);
  const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
  named_bar_sync<kBarWg, kBarWg + 1, 128>(cw == 0);
  const int lr = warp * 16 + (lane >> 2);  // row within the CTA tile
#pragma unroll
  for (int nt = 0; nt < ONT; ++nt) {
    *reinterpret_cast<uint32_t*>(q_s + tile_offset<D, true>(lr, nt * 8, BM) + quad_col) =
        pack2<T>(o[nt][0] * inv0, o[nt][1] * inv0);
    *reinterpret_cast<uint32_t*>(q_s + tile_offset<D, true>(lr + 8, nt * 8, BM) + quad_col) =
        pack2<T>(o[nt][2] * inv1, o[nt][3] * inv1);
  }
  warp_sync();
  store_warp_rows<T, D>(p, q_begin, kvh, wr0, rows, lane, [&](int r, int c) {
    return q_s + tile_offset<D, true>(warp * 16 + r, c, BM);
  });
}

}  // namespace swa_ops
#endif  // USE_ROCM
