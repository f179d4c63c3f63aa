// Split-KV paged decode attention on tensor cores (sm_80+; NVIDIA only).
//
// One CTA per (sequence, kv head, chunk of up to 16 query heads of its GQA group, partition).
// The group's query heads sit on the M side of mma.sync m16n8k16, so every K/V byte is loaded
// once for the whole group and the math costs tensor-core cycles rather than FMA cycles
// (a group of g heads does ~g FLOPs per K/V byte; at 3 TB/s, g = 8 would otherwise need most of
// the chip's fp32 rate). Rows past the group's size are zero queries whose results are dropped.
// Single-token groups of <= 8 heads take the swapped tile instead (SWAP, swap_frag.h): keys and
// head dims on the M side, the heads on the 8 N columns, so half the MMAs per tile.
//
// Inside a CTA each warp streams its own 16-token tiles (tile w, w + NW, ...) through a private
// NSTAGE-deep cp.async ring, so warps never wait on each other until the final combine; each keeps
// an fp32 online softmax in log2 units (exp2; log2(e) folded into the scale). A partition covers
// P tokens from the sequence's span origin (split.h); tiles wholly outside [lo, L) are never
// issued, and inside a partial tile the rows outside are zero-filled without a global read, so
// block-table entries before the window are never touched.
//
// Packed multi-token mode (PACKED = true; speculative decoding, multi-token prediction). The M
// side then holds (query token, head) rows of ONE sequence and kv head instead of one token's
// heads: packed row rr = (token rr / group, head rr % group), chunk c of a sequence holds rows
// [16c, 16c + 16) (split.h), so a K/V tile is loaded once for up to 16 rows, e.g. all four tokens
// x four heads of a q_len-4 step at group 4, instead of once per token. The grid is host-known:
// ceil(max_query_len * group / 16) chunks per (sequence, kv head); a chunk past its sequence's
// q_len * group rows exits. Each row r has its own position and window [lo_r, hi_r); the CTA loads
// the union [lo of its first row, hi of its last row), split into partitions as in decode, so
// nothing outside some row's window is loaded. Tiles inside every live row's window
// ([lo of the last row, hi of the first)) take the unmasked path; any other tile masks per row.
// A row may then see no key of a tile, or of a whole partition: its running max stays -inf, and
// the online softmax subtracts 0 instead of -inf (no exp2(-inf - -inf) = NaN) so its sums stay
// exact zeros; such a row leaves the merge's sentinel (max -inf, sum 0) or, unsplit, zeros.
// Rows past the chunk's live rows stay zero queries that see every loaded key, as in decode.
// The merge (merge.h) runs per (sequence, token, head) and reads only that row's partitions;
// query tokens outside every sequence's range are zeroed here (zero_uncovered_tokens).
#pragma once

#include <type_traits>

#include "swa_ops/compat.h"
#include "swa_ops/mma.h"
#include "swa_ops/fp8_frag.h"  // after mma.h: uses its ldmatrix and mma
#include "swa_ops/swap_frag.h"  // after both
#include "swa_ops/ring_layout.h"
#include "swa_ops/params.h"
#include "swa_ops/split.h"
#include "swa_ops/mbarrier.h"  // the fp8 TMA ring (TMA = true)
#include "swa_ops/timeline.h"

namespace swa_ops {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kNegInf = -__builtin_huge_valf();

// Row stride (floats) of the warps' partial outputs in the final combine (red_o): D + 4, so the
// 4 lanes of a quad that store equal d of heads 0, 2, 4, 6 (the swapped tile's O^T) land in 4
// distinct bank groups, and the plain tile's float2 rows r0 = 0..7 cover every bank exactly
// twice; a stride of D put them all on one bank (4- and 8-way conflicts). Multiple of 4: the
// element loop's float4 reads stay aligned.
#ifndef SWA_OPS_COMBINE_PAD  // build-time, for A/B: 0 is the old stride D
#define SWA_OPS_COMBINE_PAD 4
#endif
constexpr int combine_row(int d) { return d + SWA_OPS_COMBINE_PAD; }
// Shared memory of that combine: red_m, red_l and red_o for nw warps, then 32 ints (packed rows'
// token and head).
constexpr size_t combine_smem_bytes(int nw, int d) {
  return sizeof(float) * nw * 16 * (2 + combine_row(d)) + sizeof(int) * 32;
}

// Compile-time shape of the tensor-core decode kernel for head size D.
template <int D>
struct DecodeMmaTraits {
  // Warps per CTA: four, except for D > 128 where two keep a CTA at ~110 KB of shared memory so
  // two CTAs share an SM and one's prologue/epilogue overlaps the other's streaming (with one
  // 211 KB CTA per SM, gemma3's time grew with every extra partition).
  // (One warp per CTA, in 2 or 3 stages, with more partitions: gemma2-softcap 372-385 us against
  // 368, gemma3 100-106 against 95.8, run 133.)
#ifndef SWA_OPS_DECODE_WARPS_BIG  // build-time, for A/B: warps per CTA at D > 128
#define SWA_OPS_DECODE_WARPS_BIG 2
#endif
  static constexpr int kWarps = D <= 128 ? 4 : SWA_OPS_DECODE_WARPS_BIG;
#ifdef USE_ROCM
  // AMD: 64 KB of LDS per work-group, and cp_async16's portable path is synchronous (a
  // deeper ring buys nothing): one stage keeps the ring and Q under 64 KB.
  static constexpr int kStages = 1;
#else
  // Stages per warp ring that shared memory is sized for, and so the CTAs per SM and the split:
  // two CTAs fit an SM's 227 KB at D <= 128 (four at D = 64, which lets gpt-oss's 512 short
  // (sequence, head) pairs all be resident at once) and, with two warps, at D = 192/256; D = 80
  // and 96 have room for a fourth stage at two CTAs per SM (107 KB at 96). The kernel uses only
  // SWA_OPS_DECODE_RING_DEPTH (2) of them: fewer bytes in flight streamed faster (run 83), while
  // a smaller footprint (more CTAs per SM, another split) was slower (run 80).
#ifdef SWA_OPS_DECODE_STAGES  // build-time, for A/B: every head size's ring depth
  static constexpr int kStages = SWA_OPS_DECODE_STAGES;
#else
  static constexpr int kStages = (D == 80 || D == 96) ? 4 : 3;
#endif
#endif
  // Padded smem row: consecutive rows shift by 16 bytes, so the 8 row addresses of an ldmatrix
  // hit 8 distinct bank groups for every D here (row bytes / 16 is odd or 4 mod 8). It sizes the
  // stages; 16-bit rings whose rows are whole 128-byte groups store them dense and swizzled
  // inside the same stages instead (decode_mma_kernel's SWZ, ring_layout.h).
  static constexpr int kRow = D + 8;
  static constexpr int kStageElems = 2 * kTileTokens * kRow;  // K tile then V tile
  // Q lives in registers up to D = 128 (loaded straight from global in fragment order); larger
  // heads re-read it from shared memory each tile to leave room for the D / 2 fp32 accumulators.
  static constexpr bool kQInRegs = D <= 128;
#ifdef USE_ROCM
  static_assert(sizeof(uint16_t) * (kWarps * kStages * kStageElems + kTileTokens * kRow) <= 65536,
                "decode shared memory exceeds the 64 KB of LDS a CDNA work-group has");
#endif

  // Dynamic shared memory: the warps' K/V rings, then (D > 128 only) the Q tile.
  static constexpr size_t smem_bytes() {
    return sizeof(uint16_t) *
           (kWarps * kStages * kStageElems + (kQInRegs ? 0 : kTileTokens * kRow));
  }

  // Short-partition variant (ALLIN, split.h): one K/V buffer per tile of the longest partition,
  // and at least what the warps' combine reuses of it. Its gain needs the CTAs its smaller
  // footprint allows to fit by registers too: 5 per SM at D = 64 (41 KB for gpt-oss's 9 tiles;
  // <= 102 registers, 95 with nvcc 13.0), 3 at D = 128 (70 KB for 8 tiles; <= 168, 160). Not
  // forced with __launch_bounds__: a second argument changes the ring kernels' code as well.
  static size_t allin_smem_bytes(int tiles) {
    const size_t bufs = sizeof(uint16_t) * tiles * kStageElems;
    const size_t comb = combine_smem_bytes(kWarps, D);
    return bufs > comb ? bufs : comb;
  }
};

// The ring geometry of a decode kernel: DecodeMmaTraits<D>'s, except for kv-head pairing (PAIR,
// split.h) over 16-bit caches. Paired fp8 rows (2 D bytes) fit D's own 16-bit ring rows (2 D + 16
// bytes), so there the paired kernel's shared memory, and its occupancy, are the unpaired
// kernel's; paired 16-bit rows are 2 D elements, below.
template <int D, bool KV8, bool PAIR>
struct DecodeRingTraits : DecodeMmaTraits<D> {};

// Paired 16-bit rows: 2 D elements plus the same 16-byte pad (row bytes / 16 odd: 17 at D = 64,
// 25 at D = 96), D's warps. Stages: D = 64 keeps the three that D = 128's rings have (104 KB,
// two CTAs per SM; measured in run 43); D = 96's 400-byte rows fit two at two CTAs per SM
// (102 KB), the depth every 16-bit ring uses anyway (SWA_OPS_DECODE_RING_DEPTH). The query goes
// into registers (pair_q_operands), never shared memory.
template <int D>
struct DecodeRingTraits<D, false, true> {
  static constexpr int kWarps = DecodeMmaTraits<D>::kWarps;
  static constexpr int kStages = D == 64 ? DecodeMmaTraits<2 * D>::kStages
                                         : (DecodeMmaTraits<D>::kStages < 2
                                                ? DecodeMmaTraits<D>::kStages : 2);
  static constexpr int kRow = 2 * D + 8;
  static constexpr int kStageElems = 2 * kTileTokens * kRow;  // K tile then V tile
  static constexpr bool kQInRegs = true;
  static constexpr size_t smem_bytes() {
    return sizeof(uint16_t) * kWarps * kStages * kStageElems;
  }
#ifdef USE_ROCM
  static_assert(smem_bytes() <= 65536, "paired decode rings exceed a CDNA work-group's 64 KB LDS");
#endif
};

// Before pdl_wait(): prefetches into L2 the K/V lines of this warp's tiles warp + NW j for
// first <= j < tiles (what its ring, or the ALLIN variant's buffers, loads first), so that
// the next call's DRAM stream starts while the previous kernel is still draining (this grid's
// CTAs become resident as the predecessor's exit, during its tail). seq_lens and block_tables are
// read speculatively: the predecessor may still be writing them, so nothing read here is used
// after the wait (the real loads read both again). L2 is the coherence point, so a prefetched
// line is never stale: a later write by the predecessor lands in L2. Every address stays inside
// the caches whatever the values read: the length is clamped as clamp_seq_len does, the block
// table is read only inside that length's window (never before it), and block ids outside
// [0, num_blocks) are skipped. Lane l takes row l % 16 of K (l < 16) or V. kv0: the CTA's
// (first) kv head; ROW_ELEMS: the elements a row streams (PAIR: both kv heads'); ELEM_BYTES: the
// cache element's (1 for fp8), the unit of the cache strides.
template <int NW, int ROW_ELEMS, int ELEM_BYTES>
SWA_D void prefetch_first_tiles_l2(const DecodeParams& p, int seq, int kv0, int part, int first,
                                   int tiles) {
  constexpr int ROW_BYTES = ROW_ELEMS * ELEM_BYTES;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  const int cap = p.max_blocks_per_seq << p.log2_block_size;
  int L = ld_speculative(p.seq_lens + seq);
  L = L < cap ? (L > 0 ? L : 0) : cap;
  const SeqSpan sp = seq_span(L, p.window);
  const int begin = sp.origin + part * p.part_tokens;
  const int end = min(begin + p.part_tokens, sp.hi);
  const int* bt = p.block_tables + static_cast<int64_t>(seq) * p.bt_stride;
  const unsigned char* base = static_cast<const unsigned char*>(lane < 16 ? p.k_cache : p.v_cache) +
                              static_cast<int64_t>(kv0) * p.kv_stride_head * ELEM_BYTES;
  for (int j = first; j < tiles; ++j) {
    const int t = begin + (warp + NW * j) * kTileTokens + lane % 16;
    if (t < sp.lo || t >= end) continue;  // also every tile past the partition's last
    const int b = ld_speculative(bt + (t >> p.log2_block_size));
    if (b < 0 || b >= p.num_blocks) continue;
    const unsigned char* row =
        base + paged_token_offset(p, b, t & (p.block_size - 1)) * ELEM_BYTES;
#pragma unroll
    for (int off = 0; off < ROW_BYTES; off += 128) prefetch_l2(row + off);
    if (ROW_BYTES % 128 != 0) prefetch_l2(row + ROW_BYTES - 1);  // a row may end on a new line
  }
}

// fp8 e4m3 K/V: a tile's fp8 rows are copied (half the bytes) into the first D bytes of its
// 16-bit ring rows, and the MMAs read them from there through fp8_frag.h: ldmatrix of the raw
// bytes (transposed for V) and a few integer ops per pair into fp16 operands, all in registers,
// so the tensor cores run on fp16, bf16 queries included (rounded to fp16 once: exact in its
// normal range, saturated at +-65504; P in fp16 is finer than in bf16). k_scale folds into the
// logit scale and v_scale into the output, each with the operands' factor 256. (Widening through
// fp32 to bf16 in shared memory cost ~8 instructions per value: 1.31x over bf16 in run 13;
// widening to fp16 in place in shared memory, 1.49x in run 21; in registers, 1.67-1.73x in runs
// 22-25. Denser fp8 rings with more stages or 6 warps per CTA measured no faster:
// notes/decode.md.)

// Packed mode: query tokens outside every sequence's query range (a CUDA-graph batch's padding
// past query_start_loc[num_seqs], or before query_start_loc[0]) see no key, so their rows are
// zeros, as in the reference. Their number is device data, so every CTA of the grid zeroes a
// strided share (usually nothing); the covered tokens are written by their chunks or the merge.
template <int D>
SWA_D void zero_uncovered_tokens(const DecodeParams& p) {
  const int nt = p.num_tokens;
  const int first = min(max(p.query_start_loc[0], 0), nt);
  const int last = max(min(p.query_start_loc[p.num_seqs], nt), first);
  const int64_t per_tok = static_cast<int64_t>(p.num_heads) * (D / 8);  // 16-byte stores (T 16-bit)
  const int64_t n_head = first * per_tok, n = n_head + (nt - last) * per_tok;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * gridDim.y * blockDim.x;
  unsigned char* out = static_cast<unsigned char*>(p.out);
  const Vec16 zero = {{0u, 0u, 0u, 0u}};
  for (int64_t i = (static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x) * blockDim.x +
                   threadIdx.x;
       i < n; i += stride)
    store16(out + 16 * (i < n_head ? i : i - n_head + last * per_tok), zero);
}

// ALLIN: the short-partition variant (split.h; p.allin_tiles > 0): every warp issues all of its
// at most kAllInMaxMine tiles up front into per-tile buffers, and (p.prewait_tiles) prefetches them
// into L2 before waiting for the predecessor kernel. Single-token, 16-bit caches, D <= 128.
// Diagnostics (compile-time, wrong results, for measuring only; notes/decode.md, run 35):
// SWA_OPS_DIAG_FP8_NOMATH drops the swapped fp8 tile's MMAs and conversions (the copies, waits
// and softmax stay), SWA_OPS_DIAG_FP8_NOCVT (fp8_frag.h) only the conversions,
// SWA_OPS_DIAG_FP8_L2 sets the fp8 rows' L2 fetch span.
// SWAP: groups of <= 8 heads on the N side of the MMAs (swap_frag.h: half the MMAs and
// exponentials per tile); single-token only. The copies, rings, masks' bounds, partitions and the
// combine's arithmetic are the same; only the tile math and the accumulators' layout differ.
// PAIR (with SWAP; p.kv_pair): kv-head pairing (split.h, swap_frag.h): the CTA of kv-head pair
// kvh streams kv heads 2 kvh and 2 kvh + 1 as rows of DV = 2 D elements and runs the swapped tile
// over them with its 2 g query heads' block-diagonal queries; the grid has num_kv_heads / 2 kv
// units per sequence. Copies, masks, softmax and the combine are the same code over DV-wide rows;
// the combine writes each head's own D outputs, so the workspace and the merge are unchanged.
// TMA (p.kv_tma; fp8, D = 128, the swapped unpaired ring, blocks of >= 16 tokens): each warp's
// ring holds NSTAGE 4 KB stages from a 1024-byte aligned base (K then V: 16 rows of 128 bytes,
// 128-byte swizzle: chunk c of row r at c ^ (r % 8), as the tensor map's boxes land), with one
// mbarrier per stage. A tile wholly inside the visible span is two box copies (K, V) issued by
// lane 0 and completed on the stage's barrier by bytes; an edge tile is the usual zero-filling
// cp.async, into the same swizzled rows. The tile math reads the rows through that swizzle.
#ifndef SWA_OPS_DECODE_TMA_FENCE  // build-time, for A/B: 0 drops the proxy fence before a box copy
#define SWA_OPS_DECODE_TMA_FENCE 1
#endif
// Stages of the fp8 TMA ring (4 KB each; build-time, for A/B). Two: one tile in flight per warp
// while it computes the other. Fewer bytes in flight stream faster here: mistral-32k-fp8 99.1-100.0
// us with 2 stages against 103.6-104.9 with 3 (runs 79-80), and 3 warps x 2 stages, 6 or 8 warps
// per CTA, or 4-6 stages were all slower (notes/decode.md).
#ifndef SWA_OPS_DECODE_TMA_STAGES
#define SWA_OPS_DECODE_TMA_STAGES 2
#endif
#ifndef SWA_OPS_DECODE_RING_DEPTH  // build-time, for A/B: stages the cp.async rings use
#define SWA_OPS_DECODE_RING_DEPTH 2
#endif
#ifndef SWA_OPS_DECODE_TMA_WARPS  // build-time, for A/B: warps per CTA of the fp8 TMA ring kernel
#define SWA_OPS_DECODE_TMA_WARPS 4
#endif
// Warps per CTA of a decode kernel: the ring traits', or SWA_OPS_DECODE_TMA_WARPS for the fp8 TMA
// ring, whose 4 KB stages would leave room for more in the same shared memory (6 and 8 were
// slower, run 78). The launcher's block size comes from here too.
template <int D, bool TMA>
constexpr int decode_kernel_warps() {
  return TMA ? SWA_OPS_DECODE_TMA_WARPS : DecodeMmaTraits<D>::kWarps;
}
template <typename T, int D, bool SOFTCAP, bool KV8 = false, bool PACKED = false,
          bool ALLIN = false, bool SWAP = false, bool PAIR = false, bool TMA = false>
__global__ void __launch_bounds__((decode_kernel_warps<D, TMA>() * 32))
    decode_mma_kernel(const SWA_GRID_CONSTANT DecodeParams p) {
  using Tr = DecodeRingTraits<D, KV8, PAIR>;
  static_assert(!PAIR || (SWAP && kv_pair_head_size(D, KV8) &&
                          Tr::kWarps == DecodeMmaTraits<D>::kWarps),
                "kv-head pairing: the swapped single-token tile, head sizes of split.h");
  // Elements per streamed row: one kv head's D, or (PAIR) the pair's 2 D.
  constexpr int DV = PAIR ? 2 * D : D;
  constexpr int HKCH = D / 16;  // PAIR: k-chunks (M-tiles of O^T) per kv head
  // Tensor-core operand type: fp16 for fp8 caches (fp8_frag.h), else the query's.
  using MT = std::conditional_t<KV8, fp16_t, T>;
  // The query's 16-bit pairs as MT pairs (bf16 -> fp16 for fp8 caches; else unchanged).
  auto qcv = [](uint32_t v) -> uint32_t {
    if constexpr (KV8 && std::is_same_v<T, bf16_t>) return bf16x2_to_half2_bits(v);
    else return v;
  };
  // ALLIN: NSTAGE - 1 = kAllInMaxMine tiles go out in the prologue, i.e. all of a warp's.
  // Stages of the ring used (at most the kStages that size its shared memory, and so the CTAs per
  // SM and the split): one tile in flight per warp while it computes the other streams faster than
  // two (run 83: every 16-bit row 0.3-2.4 % faster at the same occupancy; the fp8 TMA ring's own
  // depth says the same).
  constexpr int kRingDepth = SWA_OPS_DECODE_RING_DEPTH < Tr::kStages ? SWA_OPS_DECODE_RING_DEPTH
                                                                     : Tr::kStages;
  constexpr int NW = decode_kernel_warps<D, TMA>(),
                NSTAGE = ALLIN ? kAllInMaxMine + 1 : (TMA ? SWA_OPS_DECODE_TMA_STAGES : kRingDepth);
  constexpr int ROW = Tr::kRow;
  // 16-bit ring tiles whose rows are whole groups of eight 16-byte chunks (D = 64, 128, 192, 256,
  // and the paired rows) are stored dense and swizzled (ring_layout.h says why); other rows
  // (D = 80, 96 unpaired) and fp8 rows keep the padding. Stages, and so shared memory, keep
  // ROW's size either way.
#ifndef SWA_OPS_RING_SWIZZLE  // build-time, for A/B: 0 keeps every ring row padded
#define SWA_OPS_RING_SWIZZLE 1
#endif
  constexpr bool SWZ = SWA_OPS_RING_SWIZZLE && !KV8 && ring_rows_swizzle(DV * 2);
  constexpr int RROW = SWZ ? DV : ROW;  // a ring tile's row stride, elements
  static_assert(!ALLIN || (!PACKED && !KV8 && Tr::kQInRegs && NW == kAllInWarps),
                "the short-partition variant is single-token, 16-bit, D <= 128");
  static_assert(!SWAP || (!PACKED && !ALLIN), "the swapped tile is single-token, ring kernels");
  static_assert(ALLIN || combine_smem_bytes(NW, D) <= Tr::smem_bytes(),
                "the warps' combine reuses the rings' shared memory");
  constexpr int CPR = DV / 8;                      // 16-byte chunks per row
  constexpr int KCH = DV / 16;                     // k-chunks of QK^T, column pairs of PV
  constexpr int NT = DV / 8;                       // n-tiles of the output
  constexpr int LOADS = kTileTokens * CPR / 32;    // 16-byte copies per lane per tile and tensor
  static_assert(D % 16 == 0 && (kTileTokens * CPR) % 32 == 0, "head size must be a multiple of 16");
  constexpr int kL2Wide = l2_span_for_rows(DV * sizeof(T));  // L2 fetch span per copy

  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* kv_s = reinterpret_cast<T*>(smem_raw);       // [NW][NSTAGE][K|V][16][ROW]
  T* q_s = kv_s + NW * NSTAGE * Tr::kStageElems;  // [16][ROW], D > 128 only

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int chunk = blockIdx.x % p.head_chunks;
  // PAIR: the grid's kv units are kv-head pairs (head_chunks is 1: groups of <= 4).
  const int kv_units = PAIR ? p.num_kv_heads >> 1 : p.num_kv_heads;
  const int kvh = (blockIdx.x / p.head_chunks) % kv_units;
  const int seq = blockIdx.x / (p.head_chunks * kv_units);
  const int part = blockIdx.y;
  const int kv0 = PAIR ? 2 * kvh : kvh;  // the CTA's (first) kv head
  const int head0 = kv0 * p.group + chunk * 16;  // single-token mode: the chunk's first head
  // single-token mode: live rows of the M tile (SWAP: columns; PAIR: both kv heads' groups)
  const int gc_heads = PAIR ? 2 * p.group : min(16, p.group - chunk * 16);
  SWA_OPS_TL_DECL(tl_marks);
  SWA_OPS_TL_MARK(tl_marks, start);

  // Launched as a programmatic dependent of whatever precedes it on the stream, this grid's CTAs
  // may be scheduled before that kernel ends; nothing is read before the wait (but the
  // speculative pre-wait prefetch, p.prewait_tiles > 0), which returns once the predecessor has
  // finished and its writes (the cache, this step's query) are visible. No prefetch for packed
  // chunks (their span depends on query_start_loc) nor per-token rows (their block-table row
  // comes from a map the predecessor writes).
  if constexpr (!PACKED) {
    if (p.prewait_tiles > 0 && p.seq_of_token == nullptr)
      prefetch_first_tiles_l2<NW, DV, KV8 ? 1 : static_cast<int>(sizeof(T))>(
          p, seq, kv0, part, p.prewait_first, p.prewait_tiles);
  }
  pdl_wait();
  SWA_OPS_TL_MARK(tl_marks, waited);
  // fp8 caches: k_scale scales every logit, v_scale every output (both device scalars).
  // (The fp8 operands hold the values / kFp8OperandScale: fp8_frag.h.)
  const float k_sc = KV8 ? *p.k_scale * kFp8OperandScale : 1.f;
  const float v_sc = KV8 ? *p.v_scale * kFp8OperandScale : 1.f;
  const float scale_log2 = p.scale_log2 * k_sc, cap_pre = p.cap_pre * k_sc;
  // Packed mode: this CTA's rows are packed rows [16 chunk, 16 chunk + gc) of sequence seq.
  PackedSeq ps{0, 0, 0};
  if constexpr (PACKED) {
    ps = packed_seq(p, seq);  // its loads first: the zeroing's go out beside them, not after
    zero_uncovered_tokens<D>(p);
  }
  const int gc = PACKED ? min(16, ps.q_len * p.group - chunk * 16) : gc_heads;  // live rows
  if (PACKED && gc <= 0) return;  // a chunk past its sequence's rows (q_len < max_query_len)
  const SeqSpan span = PACKED ? packed_span(ps, chunk * 16, gc, p.group, p.window)
                              : seq_span(clamp_seq_len(p, seq), p.window);
  const int begin = span.origin + part * p.part_tokens;
  const int end = min(begin + p.part_tokens, span.hi);
  // Packed mode: row r's [token][head] row of out (and of the workspace), its head and its query.
  auto packed_head = [&](int r) { return kvh * p.group + (chunk * 16 + r) % p.group; };
  auto packed_tok = [&](int r) { return ps.q_begin + (chunk * 16 + r) / p.group; };
  auto packed_slot = [&](int r) {
    return static_cast<int64_t>(packed_tok(r)) * p.num_heads + packed_head(r);
  };

  if (begin >= end) {
    // Nothing visible in this partition. With a single partition this is L == 0 (packed mode:
    // hi == 0, every token of the chunk at a position < 0 or L == 0): exact zeros. Otherwise
    // leave the sentinel (max -inf, sum 0) that the merge skips.
    if constexpr (PACKED) {
      if (p.num_parts == 1) {
        for (int i = threadIdx.x; i < gc * D; i += NW * 32)
          static_cast<T*>(p.out)[packed_slot(i / D) * D + i % D] = from_float<T>(0.f);
      } else if (static_cast<int>(threadIdx.x) < gc) {
        const int64_t idx = packed_slot(threadIdx.x) * p.num_parts + part;
        p.part_max[idx] = kNegInf;
        p.part_sum[idx] = 0.f;
      }
    } else if (p.num_parts == 1) {
      T* o = static_cast<T*>(p.out) + (static_cast<int64_t>(seq) * p.num_heads + head0) * D;
      for (int i = threadIdx.x; i < gc * D; i += NW * 32) o[i] = from_float<T>(0.f);
    } else if (threadIdx.x < gc) {
      const int64_t idx = (static_cast<int64_t>(seq) * p.num_heads + head0 + threadIdx.x) *
                              p.num_parts + part;
      p.part_max[idx] = kNegInf;
      p.part_sum[idx] = 0.f;
    }
    return;
  }
  // Multi-token queries on the per-token path run each query token as its own decode row
  // (seq_of_token maps it to its sequence's block-table row; seq_lens then holds the token's
  // position + 1). The packed mode leaves seq_of_token null: seq is the sequence.
  const int bt_row = p.seq_of_token != nullptr ? p.seq_of_token[seq] : seq;
  const int* bt = p.block_tables + static_cast<int64_t>(bt_row) * p.bt_stride;
  // The merge, launched as a programmatic dependent, may be scheduled as soon as every CTA of this
  // grid has started: its CTAs then sit at griddepcontrol.wait (which returns once this whole
  // grid has finished and its writes are visible) instead of paying a launch gap afterwards.
  // Triggering only once all CTAs are resident means they can never crowd this grid out.
  pdl_launch_dependents();

  // This lane's fixed share of each tile copy: LOADS (row, 16-byte column) slots, and where each
  // lands in a ring tile (SWZ: its chunk swizzled).
  int ld_row[LOADS], ld_col[LOADS], ld_dst[LOADS];
#pragma unroll
  for (int i = 0; i < LOADS; ++i) {
    ld_row[i] = (lane + 32 * i) / CPR;
    ld_col[i] = ((lane + 32 * i) % CPR) * 8;
    ld_dst[i] = ring_chunk_offset(ld_row[i], ld_col[i] / 8, RROW * 2, SWZ) / 2;
  }
  const T* k_base = static_cast<const T*>(p.k_cache) + kv0 * p.kv_stride_head;
  const T* v_base = static_cast<const T*>(p.v_cache) + kv0 * p.kv_stride_head;
  const int bs_mask = p.block_size - 1;
  T* ring = kv_s + warp * NSTAGE * Tr::kStageElems;

  // TMA: this warp's swizzled ring and its stages' barriers (tphase bit s: the parity of stage
  // s's next completion), inside the rings' shared memory.
  static_assert(!TMA || (KV8 && SWAP && !PAIR && !ALLIN && !PACKED && D == 128),
                "the fp8 TMA ring: fp8, D = 128, swapped, unpaired");
  constexpr int kTmaStage = 4096, kTmaHalf = 2048;
  static_assert(!TMA || (1024 + NW * NSTAGE * (kTmaStage + 8) <= Tr::smem_bytes() &&
                         combine_smem_bytes(NW, D) <= Tr::smem_bytes()),
                "the TMA rings and barriers, and the warps' combine, fit the rings' shared memory");
  unsigned char* tring = nullptr;
  uint64_t* tbar = nullptr;
  uint32_t tphase = 0;
  if constexpr (TMA) {
    unsigned char* b = reinterpret_cast<unsigned char*>(kv_s);
    b += (1024u - (smem_u32(b) & 1023u)) & 1023u;
    tring = b + warp * NSTAGE * kTmaStage;
    tbar = reinterpret_cast<uint64_t*>(b + NW * NSTAGE * kTmaStage) + warp * NSTAGE;
    if (lane == 0) {
      for (int s = 0; s < NSTAGE; ++s) mbar_init(&tbar[s], 1);
      mbar_init_fence();
    }
    warp_sync();
  }

  // Tiles start at multiples of 16 from a 16-aligned origin and block sizes are powers of two, so
  // a tile's rows lie in one block (block_size >= 16) or in two halves (block_size 8). Block ids
  // are looked up per tile (broadcast loads, L1 hits after the first), which needs no shared
  // staging and no barrier before the first copy. A half with no visible row is not looked up:
  // its entry may be -1. Blocks under 8 tokens look up every row (issue()).
  struct TileBlocks {
    int a, b;
  };
  auto tile_blocks = [&](int tile) {
    const int tb = begin + tile * kTileTokens;
    TileBlocks r{0, 0};
    if (p.block_size >= kTileTokens) {
      r.a = r.b = __ldg(bt + (tb >> p.log2_block_size));
    } else if (p.block_size == 8) {
      if (tb + 8 > span.lo) r.a = __ldg(bt + (tb >> 3));
      if (tb + 8 < end) r.b = __ldg(bt + ((tb + 8) >> 3));
    }
    return r;
  };

  // Per-lane row offsets within a block, for the fast path (32-bit: a block is small).
  int row_off[LOADS];
#pragma unroll
  for (int i = 0; i < LOADS; ++i)
    row_off[i] = ld_row[i] * static_cast<int>(p.kv_stride_tok) + ld_col[i];
  const bool one_block_tiles = p.block_size >= kTileTokens;
  // A tile of kTileTokens tokens from TB lies wholly inside [span.lo, end) and in one block: the
  // fast copy path, and on the fp8 TMA ring the box-copied tiles. One test for the copies and for
  // the TMA wait, so they cannot disagree. A macro, not a function or lambda: either changed the
  // code ptxas emits for every decode kernel (SASS compared), and these kernels' timings were
  // measured with this code.
#define SWA_OPS_WHOLE_TILE(TB) (one_block_tiles && (TB) >= span.lo && (TB) + kTileTokens <= end)
  // fp8 rows: 16-byte chunks (CH8 per row) of the tile, this lane's LOADS8 of them: the byte
  // offsets in a block (src8) and in the ring's 16-bit rows (dst8).
  constexpr int CH8 = DV / 16;
  constexpr int LOADS8 = KV8 ? (kTileTokens * CH8 + 31) / 32 : 1;
#ifdef SWA_OPS_DIAG_FP8_L2  // diagnostics: another L2 fetch span for fp8 rows
  constexpr int kL2Wide8 = SWA_OPS_DIAG_FP8_L2;
#else
  constexpr int kL2Wide8 = l2_span_for_rows(DV);
#endif
  int src8[LOADS8], dst8[LOADS8];
  const unsigned char* kb8 = static_cast<const unsigned char*>(p.k_cache) + kv0 * p.kv_stride_head;
  const unsigned char* vb8 = static_cast<const unsigned char*>(p.v_cache) + kv0 * p.kv_stride_head;
#pragma unroll
  for (int i = 0; i < LOADS8; ++i) {
    const int idx = lane + 32 * i, row = idx / CH8, c = idx % CH8;
    src8[i] = row * static_cast<int>(p.kv_stride_tok) + c * 16;
    dst8[i] = TMA ? ring_chunk_offset(row, c, 128, true) : row * ROW * 2 + c * 16;
  }

  // K/V tiles stream through L2 at evict_first priority (copies of 256-byte spans and the fp8
  // TMA boxes; compat.h says why not the others): a single-token row's keys are read by one CTA,
  // once per call, so they should be L2's first victims, not the split's partials, the block
  // tables or whatever the model keeps there. Run 170: seed 94.4 -> 93.0 us, mistral-128k 49.8 ->
  // 48.6, single-128k 9.7 -> 9.1 alone; with the partials kept in L2 too (params.h), 92.5 and
  // 48.5. Run 171, both against neither: mistral-32k-fp8 97.0 -> 95.1, gemma3 92.5 -> 91.6,
  // mistral-32k and nowindow 179.9 -> 178.9. Multi-token rows keep the normal priority: on the
  // per-token path every token of a sequence is a CTA reading mostly the same keys, and that
  // reuse goes through L2.
#ifndef SWA_OPS_KV_EVICT_FIRST  // build-time, for A/B: 0 streams them at normal priority
#define SWA_OPS_KV_EVICT_FIRST 1
#endif
  constexpr bool kKvHint = SWA_OPS_KV_EVICT_FIRST && !PACKED;
  const uint64_t kv_policy = !kKvHint ? 0
                             : p.seq_of_token == nullptr ? l2_policy<L2Priority::kEvictFirst>()
                                                         : l2_policy<L2Priority::kEvictUnchanged>();
  auto issue = [&](int tile, int stage, TileBlocks blk) {
    const int tb = begin + tile * kTileTokens;
    // Stage `stage`: slot of this warp's ring, or (ALLIN) the buffer of its stage-th tile,
    // warp + NW stage (shared memory holds every tile a partition can have). if constexpr, so
    // the ring kernels' lambda captures nothing new (an extra capture alone changed their code).
    T* ks = ring + stage * Tr::kStageElems;
    if constexpr (ALLIN) ks = kv_s + (warp + NW * stage) * Tr::kStageElems;
    T* vs = ks + kTileTokens * ROW;
    if constexpr (KV8) {
      // fp8 rows (DV bytes = DV / 16 chunks) into bytes [0, DV) of each 16-bit row (PAIR:
      // DV = 2 D bytes fill a D-element row but its 16 padding bytes).
      unsigned char* ks8 = reinterpret_cast<unsigned char*>(ks);
      unsigned char* vs8 = reinterpret_cast<unsigned char*>(vs);
      if constexpr (TMA) {
        ks8 = tring + stage * kTmaStage;
        vs8 = ks8 + kTmaHalf;
        if (SWA_OPS_WHOLE_TILE(tb)) {
          // Two box copies by lane 0 (the tile lies in one block: 16-aligned, blocks >= 16), after
          // the warp's reads of the stage (the warp_sync ending the last tile's math; the proxy
          // fence orders those generic reads before these async-proxy writes).
          if (lane == 0) {
            if (SWA_OPS_DECODE_TMA_FENCE) fence_proxy_async_smem();
            mbar_expect_tx<true>(&tbar[stage], 2 * kTmaHalf);
            const int tok = tb & bs_mask;
            if constexpr (kKvHint) {
              tma_load_4d_hinted(ks8, &p.k_map, 0, kv0, tok, blk.a, &tbar[stage], kv_policy);
              tma_load_4d_hinted(vs8, &p.v_map, 0, kv0, tok, blk.a, &tbar[stage], kv_policy);
            } else {
              tma_load_4d(ks8, &p.k_map, 0, kv0, tok, blk.a, &tbar[stage]);
              tma_load_4d(vs8, &p.v_map, 0, kv0, tok, blk.a, &tbar[stage]);
            }
          }
          return;
        }
      }
      if (SWA_OPS_WHOLE_TILE(tb)) {
        // Fast path, as for 16-bit rows below: one 64-bit base per tile, fixed per-lane offsets.
        const int64_t base = paged_token_offset(p, blk.a, tb & bs_mask);
#pragma unroll
        for (int i = 0; i < LOADS8; ++i) {
          if (kTileTokens * CH8 % 32 != 0 && lane + 32 * i >= kTileTokens * CH8) continue;
          cp_async16<kL2Wide8, kKvHint>(ks8 + dst8[i], kb8 + base + src8[i], true, kv_policy);
          cp_async16<kL2Wide8, kKvHint>(vs8 + dst8[i], vb8 + base + src8[i], true, kv_policy);
        }
        return;
      }
#pragma unroll
      for (int i = 0; i < LOADS8; ++i) {
        const int idx = lane + 32 * i;
        if (idx >= kTileTokens * CH8) continue;
        const int row = idx / CH8, c = idx % CH8;
        const int t = tb + row;
        const bool valid = t >= span.lo && t < end;
        int64_t off = 0;
        if (valid) {
          const int b = p.block_size >= 8 ? (row < 8 ? blk.a : blk.b)
                                          : __ldg(bt + (t >> p.log2_block_size));
          off = paged_token_offset(p, b, t & bs_mask) + c * 16;
        }
        cp_async16<kL2Wide8, kKvHint>(ks8 + dst8[i], kb8 + off, valid, kv_policy);
        cp_async16<kL2Wide8, kKvHint>(vs8 + dst8[i], vb8 + off, valid, kv_policy);
      }
      return;
    }
    if (SWA_OPS_WHOLE_TILE(tb)) {
      // Fast path (every tile but a partition's edge tiles): all 16 rows visible, one block, so
      // one 64-bit base per tile and a fixed per-lane offset per row.
      const int64_t base = paged_token_offset(p, blk.a, tb & bs_mask);
      const T* kb = k_base + base;
      const T* vb = v_base + base;
#pragma unroll
      for (int i = 0; i < LOADS; ++i) {
        cp_async16<kL2Wide, kKvHint>(ks + ld_dst[i], kb + row_off[i], true, kv_policy);
        cp_async16<kL2Wide, kKvHint>(vs + ld_dst[i], vb + row_off[i], true, kv_policy);
      }
      return;
    }
#pragma unroll
    for (int i = 0; i < LOADS; ++i) {
      const int t = tb + ld_row[i];
      const bool valid = t >= span.lo && t < end;
      int64_t off = 0;
      if (valid) {
        const int b = p.block_size >= 8 ? (ld_row[i] < 8 ? blk.a : blk.b)
                                        : __ldg(bt + (t >> p.log2_block_size));
        off = paged_token_offset(p, b, t & bs_mask) + ld_col[i];
      }
      cp_async16<kL2Wide, kKvHint>(ks + ld_dst[i], k_base + off, valid, kv_policy);
      cp_async16<kL2Wide, kKvHint>(vs + ld_dst[i], v_base + off, valid, kv_policy);
    }
  };

  const int n_tiles = (end - begin + kTileTokens - 1) / kTileTokens;
  const int n_mine = warp < n_tiles ? (n_tiles - warp + NW - 1) / NW : 0;

  // Rows lane/4 and lane/4 + 8 (SWAP: heads 2 (lane % 4) and 2 (lane % 4) + 1).
  float m0 = kNegInf, m1 = kNegInf, l0 = 0.f, l1 = 0.f;
  constexpr int NO = SWAP ? KCH : NT;  // SWAP: DV / 16 M-tiles of O^T, else D / 8 n-tiles of O
  float o[NO][4];
#pragma unroll
  for (int nt = 0; nt < NO; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;

  // Prologue: the first NSTAGE - 1 tiles' copies go out before anything else, Q included.
  {
    TileBlocks first[NSTAGE > 1 ? NSTAGE - 1 : 1];  // (a ring of one stage issues nothing here)
#pragma unroll
    for (int j = 0; j < NSTAGE - 1; ++j)
      if (j < n_mine) first[j] = tile_blocks(warp + NW * j);
#pragma unroll
    for (int j = 0; j < NSTAGE - 1; ++j) {
      if (j < n_mine) issue(warp + NW * j, j, first[j]);
      cp_async_commit();  // empty groups keep the wait count uniform
    }
  }
  TileBlocks next_blk{0, 0};  // block ids of the next tile to issue, fetched one step early
  if (!ALLIN && NSTAGE - 1 < n_mine) next_blk = tile_blocks(warp + NW * (NSTAGE - 1));

  // Q rows of the group chunk (rows >= gc are zero queries), as MMA A fragments.
  const T* q_g = static_cast<const T*>(p.q) + static_cast<int64_t>(seq) * p.q_stride_tok;
  auto packed_q = [&](int r) {  // packed mode: row r's query
    return static_cast<const T*>(p.q) + static_cast<int64_t>(packed_tok(r)) * p.q_stride_tok +
           static_cast<int64_t>(packed_head(r)) * p.q_stride_head;
  };
  uint32_t q_frag[Tr::kQInRegs && !SWAP ? KCH : 1][4];
  uint32_t qb[SWAP ? KCH : 1][2];  // SWAP: Q^T's B fragments, every D (they take half the room)
  const int a_row = (lane & 7) + ((lane >> 3) & 1) * 8, a_col = (lane >> 4) * 8;
  if constexpr (PAIR) {
    // Column g = lane / 4 is head head0 + g (g >= gc: a zero query), whose kv head is in half
    // g >= group of the paired row: its query goes into that half's k-chunks (swap_frag.h).
    const int g = lane >> 2;
    const uint32_t* q_h = reinterpret_cast<const uint32_t*>(
        q_g + static_cast<int64_t>(head0 + (g < gc ? g : 0)) * p.q_stride_head);
    pair_q_operands<HKCH, KV8>(qb, lane, g < gc ? (g >= p.group ? 1 : 0) : -1,
                               [&](int w) { return qcv(__ldg(q_h + w)); });
  } else if constexpr (SWAP) {
    // b0 = d (2t, 2t + 1) and b1 = d (2t + 8, 2t + 9) of head g = lane / 4 (heads >= gc: zero
    // queries); fp8 caches: the fp8_q_dim order, as below.
    const int g = lane >> 2, c = (lane & 3) * 2;
    const uint32_t* q_h = reinterpret_cast<const uint32_t*>(
        q_g + static_cast<int64_t>(head0 + (g < gc ? g : 0)) * p.q_stride_head);
#pragma unroll
    for (int kc = 0; kc < KCH; ++kc) {
      if constexpr (KV8) {
        const int w = (kc * 16 + 2 * c) / 2;
        const uint32_t w0 = g < gc ? qcv(__ldg(q_h + w)) : 0u;
        const uint32_t w1 = g < gc ? qcv(__ldg(q_h + w + 1)) : 0u;
        fp8_split_pairs(w0, w1, qb[kc][0], qb[kc][1]);
      } else {
        qb[kc][0] = g < gc ? qcv(__ldg(q_h + (kc * 16 + c) / 2)) : 0u;
        qb[kc][1] = g < gc ? qcv(__ldg(q_h + (kc * 16 + c + 8) / 2)) : 0u;
      }
    }
  } else if constexpr (Tr::kQInRegs) {
    // Straight from global in fragment order: a[0] = (r, c..c+1), a[1] = (r+8, c..),
    // a[2] = (r, c+8..), a[3] = (r+8, c+8..) with r = lane / 4, c = 2 (lane % 4); for fp8
    // caches the k pairs c and c + 8 are d (2c, 2c + 2) and (2c + 1, 2c + 3) (fp8_q_dim).
    const int r = lane >> 2, c = (lane & 3) * 2;
    const uint32_t* q_lo = reinterpret_cast<const uint32_t*>(
        PACKED ? packed_q(r) : q_g + static_cast<int64_t>(head0 + r) * p.q_stride_head);
    const uint32_t* q_hi = reinterpret_cast<const uint32_t*>(
        PACKED ? packed_q(r + 8) : q_g + static_cast<int64_t>(head0 + r + 8) * p.q_stride_head);
#pragma unroll
    for (int kc = 0; kc < KCH; ++kc) {
      if constexpr (KV8) {
        const int w = (kc * 16 + 2 * c) / 2;  // the words of d 2c..2c+3
        const uint32_t l0 = r < gc ? qcv(__ldg(q_lo + w)) : 0u;
        const uint32_t l1 = r < gc ? qcv(__ldg(q_lo + w + 1)) : 0u;
        const uint32_t h0 = r + 8 < gc ? qcv(__ldg(q_hi + w)) : 0u;
        const uint32_t h1 = r + 8 < gc ? qcv(__ldg(q_hi + w + 1)) : 0u;
        fp8_split_pairs(l0, l1, q_frag[kc][0], q_frag[kc][2]);
        fp8_split_pairs(h0, h1, q_frag[kc][1], q_frag[kc][3]);
      } else {
        q_frag[kc][0] = r < gc ? qcv(__ldg(q_lo + (kc * 16 + c) / 2)) : 0u;
        q_frag[kc][1] = r + 8 < gc ? qcv(__ldg(q_hi + (kc * 16 + c) / 2)) : 0u;
        q_frag[kc][2] = r < gc ? qcv(__ldg(q_lo + (kc * 16 + c + 8) / 2)) : 0u;
        q_frag[kc][3] = r + 8 < gc ? qcv(__ldg(q_hi + (kc * 16 + c + 8) / 2)) : 0u;
      }
    }
  } else {
    for (int i = threadIdx.x; i < kTileTokens * CPR; i += NW * 32) {
      const int r = i / CPR, c = i % CPR;
      Vec16 v = {{0u, 0u, 0u, 0u}};
      if (r < gc)
        v = load16((PACKED ? packed_q(r) : q_g + static_cast<int64_t>(head0 + r) * p.q_stride_head) +
                   c * 8);
#pragma unroll
      for (int w = 0; w < 4; ++w) v.w[w] = qcv(v.w[w]);
      if constexpr (KV8) {
        // Columns in fp8_q_dim order: a 16-wide chunk's even d, then its odd d. This lane holds
        // d 8h..8h+7 of its chunk (h = c % 2): columns 4h.. of each half.
        uint32_t e0, o0, e1, o1;
        fp8_split_pairs(v.w[0], v.w[1], e0, o0);
        fp8_split_pairs(v.w[2], v.w[3], e1, o1);
        T* dst = q_s + r * ROW + (c & ~1) * 8 + (c & 1) * 4;
        *reinterpret_cast<uint2*>(dst) = make_uint2(e0, e1);
        *reinterpret_cast<uint2*>(dst + 8) = make_uint2(o0, o1);
      } else {
        store16(q_s + r * ROW + c * 8, v);
      }
    }
    __syncthreads();
  }

  // ldmatrix lane roles: K as the col-major B of QK^T (tokens x d), V transposed as the B of PV.
  // (Their 8-element columns: (lane >> 3) & 1 for K, lane >> 4 for V; tile_at takes them.)
  const int k_row = (lane & 7) + (lane >> 4) * 8;
  const int v_row = (lane & 7) + ((lane >> 3) & 1) * 8;
  const int quad_col = (lane & 3) * 2;
  // fp8 caches: ldmatrix rows of the raw tile, key f8_row of 16-byte chunk (kc + f8_hi).
  const int f8_row = (lane & 7) + ((lane >> 3) & 1) * 8, f8_hi = lane >> 4;

  // Packed mode: the keys [row_lo[k], row_hi[k]) that this lane's C-fragment rows lane / 4 + 8k
  // see; rows past gc (zero queries, dropped) see every loaded key, so their max stays finite as
  // in decode. Keys [all_lo, all_hi) are seen by every live row: tiles inside need no mask.
  constexpr int kAll = 0x7fffffff;
  int row_lo[2] = {-kAll, -kAll}, row_hi[2] = {kAll, kAll}, all_lo = 0, all_hi = 0;
  if constexpr (PACKED) {
#pragma unroll
    for (int k = 0; k < 2; ++k) {
      const int r = (lane >> 2) + 8 * k;
      if (r < gc) {
        const int n = packed_token_len(ps, (chunk * 16 + r) / p.group);
        row_lo[k] = seq_span(n, p.window).lo;
        row_hi[k] = n;
      }
    }
    all_lo = seq_span(span.hi, p.window).lo;  // the last live row's window start
    all_hi = packed_token_len(ps, chunk * 16 / p.group);  // the first row's end
  }

  for (int j = 0; j < n_mine; ++j) {
    const int jn = j + NSTAGE - 1;
    if (!ALLIN && jn < n_mine) {  // ALLIN: n_mine <= NSTAGE - 1, all issued in the prologue
      issue(warp + NW * jn, jn % NSTAGE, next_blk);
      if (jn + 1 < n_mine) next_blk = tile_blocks(warp + NW * (jn + 1));
    }
    cp_async_commit();
    cp_async_wait<NSTAGE - 1>();
    warp_sync();
    if constexpr (TMA) {
      // A box-copied tile (issue()'s test) completes on its stage's barrier.
      const int tbj = begin + (warp + NW * j) * kTileTokens;
      if (SWA_OPS_WHOLE_TILE(tbj)) {
        const int st = j % NSTAGE;
        mbar_wait(&tbar[st], (tphase >> st) & 1u);
        tphase ^= 1u << st;
      }
    }

    const T* ks = ring + (j % NSTAGE) * Tr::kStageElems;
    if constexpr (ALLIN) ks = kv_s + (warp + NW * j) * Tr::kStageElems;
    const T* vs = ks + kTileTokens * ROW;
    const unsigned char* ks8 = reinterpret_cast<const unsigned char*>(ks);  // fp8 caches
    const unsigned char* vs8 = reinterpret_cast<const unsigned char*>(vs);
    if constexpr (TMA) {
      ks8 = tring + (j % NSTAGE) * kTmaStage;
      vs8 = ks8 + kTmaHalf;
    }
    // 16-bit tiles: this lane's ldmatrix address of 16-byte chunk 2 i + h of row r of tile t.
    auto tile_at = [&](const T* t, int r, int h) {
      const auto base = smem_addr(t);
      return [=](int i) { return base + ring_chunk_offset(r, 2 * i + h, RROW * 2, SWZ); };
    };
    // TMA: this lane's ldmatrix address of chunk c + f8_hi of its row in a swizzled tile.
    auto swizzled = [&](const unsigned char* t) {
      const auto base = smem_addr(t);
      return [=](int c) { return base + ring_chunk_offset(f8_row, c + f8_hi, 128, true); };
    };

    if constexpr (SWAP) {
      // S^T = K Q^T: keys lane / 4 and lane / 4 + 8 by heads 2t, 2t + 1 (swap_frag.h).
      float s[1][4] = {{0.f, 0.f, 0.f, 0.f}};
#ifdef SWA_OPS_DIAG_FP8_NOMATH  // diagnostics only (wrong results): loads and softmax, no MMAs
      if constexpr (KV8)
        s[0][0] = static_cast<float>(*reinterpret_cast<const volatile unsigned char*>(ks8 + lane));
      else
#else
      if constexpr (KV8 && TMA)
        fp8_qk_swap_at<KCH>(s[0], swizzled(ks8), qb);
      else if constexpr (KV8)
        fp8_qk_swap<KCH>(s[0], smem_addr(ks8 + f8_row * (ROW * 2) + f8_hi * 16), qb);
      else
#endif
        swap_qk_at<MT, KCH>(s[0], tile_at(ks, a_row, lane >> 4), qb);
      scale_logits<SOFTCAP>(s, scale_log2, cap_pre, p.cap_post);
      const int tb = begin + (warp + NW * j) * kTileTokens;
      if (tb < span.lo || tb + kTileTokens > end) {
        const int k0 = tb + (lane >> 2), k1 = k0 + 8;
        if (k0 < span.lo || k0 >= end) s[0][0] = s[0][1] = kNegInf;
        if (k1 < span.lo || k1 >= end) s[0][2] = s[0][3] = kNegInf;
      }
      // Online softmax per head (column): the max over the tile's 16 keys is over this lane's
      // two and the lanes with the same lane % 4. Every issued tile holds a visible key.
      float mx0 = fmaxf(s[0][0], s[0][2]), mx1 = fmaxf(s[0][1], s[0][3]);
#pragma unroll
      for (int x = 4; x < 32; x *= 2) {
        mx0 = fmaxf(mx0, shfl_xor(mx0, x));
        mx1 = fmaxf(mx1, shfl_xor(mx1, x));
      }
      const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
      const float al0 = fast_exp2(m0 - mn0), al1 = fast_exp2(m1 - mn1);  // exp2(-inf) = 0
      m0 = mn0;
      m1 = mn1;
      s[0][0] = fast_exp2(s[0][0] - mn0);
      s[0][1] = fast_exp2(s[0][1] - mn1);
      s[0][2] = fast_exp2(s[0][2] - mn0);
      s[0][3] = fast_exp2(s[0][3] - mn1);
      l0 = l0 * al0 + (s[0][0] + s[0][2]);  // this lane's keys; summed over lanes at the end
      l1 = l1 * al1 + (s[0][1] + s[0][3]);
      if (warp_any(al0 != 1.f || al1 != 1.f)) {
#pragma unroll
        for (int c = 0; c < NO; ++c) {
          o[c][0] *= al0; o[c][1] *= al1; o[c][2] *= al0; o[c][3] *= al1;
        }
      }
      uint32_t pb0, pb1;
      swap_p_operands<MT>(s[0], pb0, pb1);
#ifdef SWA_OPS_DIAG_FP8_NOMATH
      if constexpr (KV8)
        o[0][0] += __uint_as_float(pb0 ^ pb1) +
                   static_cast<float>(*reinterpret_cast<const volatile unsigned char*>(vs8 + lane));
      else
#else
      if constexpr (KV8 && TMA)
        fp8_pv_swap_at<KCH>(o, swizzled(vs8), pb0, pb1);
      else if constexpr (KV8)
        fp8_pv_swap<KCH>(o, smem_addr(vs8 + f8_row * (ROW * 2) + f8_hi * 16), pb0, pb1);
      else
#endif
        swap_pv_at<MT, KCH>(o, tile_at(vs, k_row, (lane >> 3) & 1), pb0, pb1);
      warp_sync();  // every lane is done reading this stage before it is refilled
    } else {
      // S = Q K^T for 16 rows x 16 tokens.
      float s[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
      auto q_operand = [&](int kc, uint32_t (&a)[4]) {
        if constexpr (Tr::kQInRegs) {
          a[0] = q_frag[kc][0]; a[1] = q_frag[kc][1]; a[2] = q_frag[kc][2]; a[3] = q_frag[kc][3];
        } else {
          ldmatrix_x4(smem_addr(q_s + a_row * ROW + kc * 16 + a_col), a[0], a[1], a[2], a[3]);
        }
      };
      if constexpr (KV8) {
        fp8_qk<KCH>(s, smem_addr(ks8 + f8_row * (ROW * 2) + f8_hi * 16), q_operand);
      } else {
        const auto k_at = tile_at(ks, k_row, (lane >> 3) & 1);
#pragma unroll
        for (int kc = 0; kc < KCH; ++kc) {
          uint32_t a[4];
          q_operand(kc, a);
          uint32_t b0, b1, b2, b3;
          ldmatrix_x4(k_at(kc), b0, b1, b2, b3);
          mma_16816<MT>(s[0], a, b0, b1);
          mma_16816<MT>(s[1], a, b2, b3);
        }
      }

      // Logits in log2 units; soft-cap before the mask so a masked key weighs exactly 0.
      scale_logits<SOFTCAP>(s, scale_log2, cap_pre, p.cap_post);
      const int tb = begin + (warp + NW * j) * kTileTokens;
      if constexpr (PACKED) {
        // Per row. A tile's keys lie in [begin, begin + P), so a key at or past `end` is at or
        // past span.hi, past every row's hi: the row bounds cover the partition's edges too.
        if (tb < all_lo || tb + kTileTokens > all_hi) {
#pragma unroll
          for (int n = 0; n < 2; ++n)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int t = tb + n * 8 + quad_col + (e & 1);
              if (t < row_lo[e >> 1] || t >= row_hi[e >> 1]) s[n][e] = kNegInf;
            }
        }
      } else if (tb < span.lo || tb + kTileTokens > end) {
#pragma unroll
        for (int n = 0; n < 2; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int t = tb + n * 8 + quad_col + (e & 1);
            if (t < span.lo || t >= end) s[n][e] = kNegInf;
          }
      }

      // Online softmax. Every issued tile holds a visible key, so the new max is finite (packed
      // mode: for some row; see below).
      float mx0 = fmaxf(fmaxf(s[0][0], s[0][1]), fmaxf(s[1][0], s[1][1]));
      float mx1 = fmaxf(fmaxf(s[0][2], s[0][3]), fmaxf(s[1][2], s[1][3]));
      mx0 = fmaxf(mx0, shfl_xor(mx0, 1));
      mx0 = fmaxf(mx0, shfl_xor(mx0, 2));
      mx1 = fmaxf(mx1, shfl_xor(mx1, 1));
      mx1 = fmaxf(mx1, shfl_xor(mx1, 2));
      const float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
      float al0, al1, sub0 = mn0, sub1 = mn1;
      if constexpr (PACKED) {
        // A row that has seen no key yet (its window starts past this tile, or its position comes
        // before it) still has max -inf: subtract 0 (exp2(-inf - 0) = 0, its P stays 0) and keep
        // its zero sums (factor 1, so no rescale is triggered), never exp2(-inf - -inf) = NaN.
        al0 = m0 == mn0 ? 1.f : fast_exp2(m0 - mn0);  // m0 = -inf < mn0: exp2(-inf) = 0
        al1 = m1 == mn1 ? 1.f : fast_exp2(m1 - mn1);
        sub0 = mn0 == kNegInf ? 0.f : mn0;
        sub1 = mn1 == kNegInf ? 0.f : mn1;
      } else {
        al0 = fast_exp2(m0 - mn0);  // exp2(-inf) = 0
        al1 = fast_exp2(m1 - mn1);
      }
      m0 = mn0;
      m1 = mn1;
#pragma unroll
      for (int n = 0; n < 2; ++n) {
        s[n][0] = fast_exp2(s[n][0] - sub0);
        s[n][1] = fast_exp2(s[n][1] - sub0);
        s[n][2] = fast_exp2(s[n][2] - sub1);
        s[n][3] = fast_exp2(s[n][3] - sub1);
      }
      l0 = l0 * al0 + (s[0][0] + s[0][1] + s[1][0] + s[1][1]);
      l1 = l1 * al1 + (s[0][2] + s[0][3] + s[1][2] + s[1][3]);
      // The running max rarely moves after the first tiles: rescale the D/2 accumulators only
      // when some row's did (a warp-uniform branch).
      if (warp_any(al0 != 1.f || al1 != 1.f)) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          o[nt][0] *= al0; o[nt][1] *= al0; o[nt][2] *= al1; o[nt][3] *= al1;
        }
      }

      // O += P V: the S accumulators are already in the A layout of the next MMA.
      const uint32_t pa[4] = {pack2<MT>(s[0][0], s[0][1]), pack2<MT>(s[0][2], s[0][3]),
                              pack2<MT>(s[1][0], s[1][1]), pack2<MT>(s[1][2], s[1][3])};
      if constexpr (KV8) {
        fp8_pv<KCH>(o, pa, smem_addr(vs8 + f8_row * (ROW * 2) + f8_hi * 16));
      } else {
        const auto v_at = tile_at(vs, v_row, lane >> 4);
#pragma unroll
        for (int dp = 0; dp < KCH; ++dp) {
          uint32_t b0, b1, b2, b3;
          ldmatrix_x4_trans(v_at(dp), b0, b1, b2, b3);
          mma_16816<MT>(o[2 * dp], pa, b0, b1);
          mma_16816<MT>(o[2 * dp + 1], pa, b2, b3);
        }
      }
      warp_sync();  // every lane is done reading this stage before it is refilled
    }
  }
  cp_async_wait<0>();
  SWA_OPS_TL_MARK(tl_marks, looped);

  // Combine the warps' partial softmaxes through shared memory (the rings are free now). A row's
  // (SWAP: a head's) sum is spread over the 4 lanes of a quad (SWAP: the 8 lanes of equal t).
  if constexpr (SWAP) {
#pragma unroll
    for (int x = 4; x < 32; x *= 2) {
      l0 += shfl_xor(l0, x);
      l1 += shfl_xor(l1, x);
    }
  } else {
    l0 += shfl_xor(l0, 1);
    l0 += shfl_xor(l0, 2);
    l1 += shfl_xor(l1, 1);
    l1 += shfl_xor(l1, 2);
  }
  __syncthreads();
  SWA_OPS_TL_MARK(tl_marks, synced);
  float* red_m = reinterpret_cast<float*>(kv_s);  // [NW][16]
  float* red_l = red_m + NW * 16;                 // [NW][16]
  constexpr int RS = combine_row(D);
  float* red_o = red_l + NW * 16;                 // [NW][16][RS]
  int* row_tok = reinterpret_cast<int*>(red_o + NW * 16 * RS);  // [16] packed mode: row's token
  int* row_head = row_tok + 16;                                // [16] and head
  if (PACKED && threadIdx.x < 16) {  // per row, once (integer divisions by the group)
    row_tok[threadIdx.x] = packed_tok(threadIdx.x);
    row_head[threadIdx.x] = packed_head(threadIdx.x);
  }
  const int r0 = lane >> 2;
  const int h0 = 2 * (lane & 3);  // SWAP: this lane's heads h0 and h0 + 1
  if constexpr (SWAP) {
    if (lane < 4) {
      red_m[warp * 16 + h0] = m0;
      red_m[warp * 16 + h0 + 1] = m1;
      red_l[warp * 16 + h0] = l0;
      red_l[warp * 16 + h0 + 1] = l1;
    }
  } else if ((lane & 3) == 0) {
    red_m[warp * 16 + r0] = m0;
    red_m[warp * 16 + r0 + 8] = m1;
    red_l[warp * 16 + r0] = l0;
    red_l[warp * 16 + r0 + 8] = l1;
  }
  if constexpr (PAIR) {
    // Column h's outputs are the M-tiles of its own half (h >= group) of the paired row, as its
    // head's dims (swap_frag.h); the other half's rows are discarded.
    const int half0 = h0 >= p.group ? 1 : 0, half1 = h0 + 1 >= p.group ? 1 : 0;
#pragma unroll
    for (int c = 0; c < NO; ++c) {
      const int d_lo = pair_out_dim<HKCH>(c, r0, KV8), d_hi = pair_out_dim<HKCH>(c, r0 + 8, KV8);
      if (h0 < gc && pair_half<HKCH>(c) == half0) {
        red_o[(warp * 16 + h0) * RS + d_lo] = o[c][0];
        red_o[(warp * 16 + h0) * RS + d_hi] = o[c][2];
      }
      if (h0 + 1 < gc && pair_half<HKCH>(c) == half1) {
        red_o[(warp * 16 + h0 + 1) * RS + d_lo] = o[c][1];
        red_o[(warp * 16 + h0 + 1) * RS + d_hi] = o[c][3];
      }
    }
  } else if constexpr (SWAP) {
#pragma unroll
    for (int c = 0; c < NO; ++c) {
      const int d_lo = swap_out_dim(c, r0, KV8), d_hi = swap_out_dim(c, r0 + 8, KV8);
      if (h0 < gc) {
        red_o[(warp * 16 + h0) * RS + d_lo] = o[c][0];
        red_o[(warp * 16 + h0) * RS + d_hi] = o[c][2];
      }
      if (h0 + 1 < gc) {
        red_o[(warp * 16 + h0 + 1) * RS + d_lo] = o[c][1];
        red_o[(warp * 16 + h0 + 1) * RS + d_hi] = o[c][3];
      }
    }
  } else if constexpr (KV8) {
    // n-tiles 2c and 2c + 1 hold columns 16c + 4t + {0, 2} and {1, 3} (fp8_out_col).
#pragma unroll
    for (int nt = 0; nt < NT; nt += 2) {
      const int col = fp8_out_col(nt, lane);
      if (r0 < gc)
        *reinterpret_cast<float4*>(red_o + (warp * 16 + r0) * RS + col) =
            make_float4(o[nt][0], o[nt + 1][0], o[nt][1], o[nt + 1][1]);
      if (r0 + 8 < gc)
        *reinterpret_cast<float4*>(red_o + (warp * 16 + r0 + 8) * RS + col) =
            make_float4(o[nt][2], o[nt + 1][2], o[nt][3], o[nt + 1][3]);
    }
  } else {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int col = nt * 8 + quad_col;
      if (r0 < gc)
        *reinterpret_cast<float2*>(red_o + (warp * 16 + r0) * RS + col) =
            make_float2(o[nt][0], o[nt][1]);
      if (r0 + 8 < gc)
        *reinterpret_cast<float2*>(red_o + (warp * 16 + r0 + 8) * RS + col) =
            make_float2(o[nt][2], o[nt][3]);
    }
  }
  __syncthreads();
  SWA_OPS_TL_MARK(tl_marks, stored);

  // Each output element: its row's warp weights exp2(m_w - mx) (0 for a warp with no tile, where
  // exp2(-inf - -inf) would be NaN), then NW FMAs, then one factor: v_scale, unsplit with sinks
  // the sink's rescale to max(mx, sink), and 1 / sum (0 for sum 0: no visible key). Every thread
  // computes the weights of its own rows (a few exponentials), so no barrier waits for one thread
  // per row to publish them; the thread of a row's first elements sends out, split, its (max,
  // sum). Four elements a thread at a time. (The combine is on the critical path of each grid's
  // last CTAs: weights and division per element cost every row 0.2-2 % of its time, run 123; one
  // thread per row publishing the weights behind a third barrier, with red_o rows D floats apart,
  // 0.1-0.4 us more on seed, gptoss and single-128k, run 132.) A live partition has sum >= 1; a
  // packed row that sees none of its keys sends out the sentinel max -inf, sum 0, as an empty
  // partition does.
  constexpr int D4 = D / 4;
  constexpr bool kKeepParts = part_rows_kept_in_l2(D, PACKED);
  const uint64_t keep_policy =
      kKeepParts && p.num_parts > 1 ? l2_policy<L2Priority::kEvictLast>() : 0;
  for (int i = threadIdx.x; i < gc * D4; i += NW * 32) {
    const int r = i / D4, d = (i % D4) * 4;
    float mx = kNegInf;
#pragma unroll
    for (int w = 0; w < NW; ++w) mx = fmaxf(mx, red_m[w * 16 + r]);
    float sum = 0.f;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int w = 0; w < NW; ++w) {
      const float mw = red_m[w * 16 + r];
      const float f = mw == kNegInf ? 0.f : fast_exp2(mw - mx);
      sum += f * red_l[w * 16 + r];
      const float4 v = *reinterpret_cast<const float4*>(red_o + (w * 16 + r) * RS + d);
      acc.x += f * v.x; acc.y += f * v.y; acc.z += f * v.z; acc.w += f * v.w;
    }
    const int head = PACKED ? row_head[r] : head0 + r;
    const int tok = PACKED ? row_tok[r] : seq;  // out / workspace row: [seq or token][head]
    const int64_t row = static_cast<int64_t>(tok) * p.num_heads + head;
    float g = v_sc;  // the row's common factor
    if (p.num_parts == 1) {
      if (p.sinks != nullptr) {
        // The sink joins the denominator once per row: rescale to max(mx, sink).
        const float sk = p.sinks[head] * kLog2e;
        const float mx2 = fmaxf(mx, sk);
        const float fs = fast_exp2(mx - mx2);
        g *= fs;
        sum = sum * fs + fast_exp2(sk - mx2);
      }
    } else if (d == 0) {
      p.part_max[row * p.num_parts + part] = mx;
      p.part_sum[row * p.num_parts + part] = sum;
    }
    g *= sum > 0.f ? 1.f / sum : 0.f;
    acc.x *= g; acc.y *= g; acc.z *= g; acc.w *= g;
    if (p.num_parts == 1) {
      T* o_out = static_cast<T*>(p.out) + row * D + d;
      *reinterpret_cast<uint2*>(o_out) = make_uint2(pack2<T>(acc.x, acc.y), pack2<T>(acc.z, acc.w));
    } else {
      float4* dst = reinterpret_cast<float4*>(p.part_out + (row * p.num_parts + part) * D + d);
      if constexpr (kKeepParts) store_l2_keep(dst, acc, keep_policy);
      else *dst = acc;
    }
  }
  SWA_OPS_TL_WRITE(p, static_cast<int64_t>(blockIdx.y) * gridDim.x + blockIdx.x, tl_marks, 1);
}
#undef SWA_OPS_WHOLE_TILE

}  // namespace swa_ops
