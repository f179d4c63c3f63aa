// Warp-specialized Hopper prefill (sm_90a, 16-bit caches, D in {64, 128, 192, 256}): the
// FlashAttention-3 structure over the paged cache. Same contract as prefill_mma.h's wgmma variant
// (rows, key union, masks, soft-cap, sinks, zeroed rows, plan kernel, PDL, a grid from host-known
// values). SWA_OPS_PREFILL_WS (read by the launcher) picks 0: prefill_mma.h's variant instead,
// 1 (default): this kernel without the intra-warpgroup overlap, 2: with it (slower in run 25).
//
// Work items. An item is one (kv head, 128-row tile) pair. With PERSIST = false the grid has one
// CTA per item (blockIdx = (row tile, kv head)). With PERSIST = true (instantiated at D <= 128,
// without OVERLAP; the launcher's default there, SWA_OPS_PREFILL_PERSIST) the grid holds only the
// CTAs resident at once and CTA b loops over items b, b + gridDim, ...: per-item start-up (Q
// load, first K/V tiles, block-table reads) overlaps the previous item's last batches and
// epilogue instead of costing a CTA launch (notes/prefill.md, "Persistent grid"). PERSIST = false
// is the kernel as it was before the persistent grid (same PTX): the branch's one-kernel-for-both
// grids made the plain grid slower (Q behind the producer's tile 0), and at D = 256 the
// persistent grid itself lost to it, so that path keeps its own code wherever they differ.
//
// Roles. Three warpgroups per CTA (384 threads; one CTA per SM, two at D = 64):
//  - warpgroup 0, the producer, gives registers back (setmaxnreg.dec) and only copies K/V
//    tiles into a ring of kStages shared-memory stages: per tile, wait for the stage's `empty`
//    barrier, cp.async its keys (zero-filled past the union, block-table entries read only inside
//    it), then cp.async.mbarrier.arrive.noinc on the stage's `full` barrier, which completes when
//    every producer thread's copies have landed. PERSIST: also each item's Q tile, after the
//    item's tile 0 and the `q_empty` barrier; it completes `q_full` the same way. (Not TMA: a
//    tile spans blocks of 8..256 tokens at arbitrary offsets, and the union's edges cut blocks,
//    so it is one 16-byte copy per chunk either way; the producer warpgroup takes that address
//    math off the consumers.)
//  - warpgroups 1 and 2, the consumers, take registers (setmaxnreg.inc), own 64 packed rows
//    each, and only run wgmma and the softmax (plain grid: each loads its own 64 Q rows first).
//    They never wait for each other's data.
//
// Consumer schedule, per item. Batch 0 is S(0) = Q K(0)^T; batch g in [1, n_tiles) is
// P V(g - 1) and S(g); batch n_tiles is P V(n_tiles - 1). After a batch's P V completes, its
// stage is released (one arrive per warp on `empty`); the softmax of S(g) turns it into P(g)
// (registers, the A operand of the next P V). The O rescale and P's packing come after the wait
// for the P V in flight, so no non-wgmma instruction writes an accumulator or A operand of an
// asynchronous wgmma (ptxas would serialize them, C7515). With the overlap, S(g) and P V(g - 1)
// are separate commit groups and the exponentials of S(g) run while P V(g - 1) is still on the
// tensor cores. Ping-pong: named barrier kBarTurn + w is consumer w's turn to issue; it waits for
// its turn before a batch and hands it to the other consumer right after committing, so one
// consumer's softmax runs while the other's batch occupies the tensor cores (PERSIST: the turns
// alternate across items). PERSIST: after the item's last S, Q is released (one arrive per warp
// on `q_empty`; below SWA_OPS_WS_STAGED_EPILOGUE_MIN_D O goes out from registers, so nothing
// reads Q after that S).
//
// Barrier phases: tiles are numbered J by their position in the CTA's stream of tiles (across
// items with PERSIST; the item's tile index otherwise); tile J lives in stage J % S; the
// consumers wait for the (J / S)-th completion of full[J % S] (parity (J / S) & 1); the producer
// refills stage J % S for J >= S after the (J / S - 1)-th completion of empty[J % S], i.e. once
// both consumers released tile J - S. PERSIST, Q of the n-th item with tiles: the consumers wait
// for q_full's n-th completion, the producer loads it (n > 0) after q_empty's (n - 1)-th. Items
// without tiles take neither. (tools/ws_model.py checks these rules, the Q hand-off and the turns
// on a host model of one and of several items per CTA.)
#pragma once

#include "swa_ops/compat.h"
#include "swa_ops/decode_mma.h"  // kLog2e, kNegInf
#include "swa_ops/mbarrier.h"
#include "swa_ops/params.h"
#include "swa_ops/prefill_mma.h"  // RowSpan, row_span, tile_offset, mask_tile, online_softmax_tile
#include "swa_ops/wgmma.h"

#include <type_traits>

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
  // Q, the ring, then 2 * kStages mbarriers (the ring's full / empty) and, on the persistent
  // grid, 2 more (Q's full / empty); 1024 bytes of slack for the swizzle alignment.
  static constexpr size_t smem_bytes(bool persist = false) {
    return static_cast<size_t>(kQBytes) + static_cast<size_t>(kStages) * kStageBytes +
           16 * kStages + (persist ? 16 : 0) + 1024;
  }
};

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
// The persistent loop's form: a descriptor kept as its low word (start address, LBO), with the
// high word make_smem_desc gives every tile here (SBO 1024 bytes, 128-byte swizzle) as a
// constant, so moving it is a 32-bit add (the callers keep the address field from carrying out):
// with the 64-bit descriptors living across the item loop, ptxas turned the moves into 64-bit adds.
constexpr uint32_t kDescHi1024 = (1024 >> 4) | (1u << 30);
SWA_D uint64_t desc_at(uint32_t lo) { return (static_cast<uint64_t>(kDescHi1024) << 32) | lo; }

// Hides a value's origin from the optimizer (no instruction): it cannot re-derive it at the uses.
template <typename V>
SWA_D void opaque(V& v) {
  static_assert(sizeof(V) == 8, "64-bit values");
  asm volatile("" : "+l"(v));
}

// Which instances have a persistent form: D <= 128 without the overlap. On the prefill-persist
// branch (H100, bench batch 8, runs 37/38) the persistent grid won at D = 64 and 128 and lost at
// D = 256 (gemma3-prefill 2985-3030 us against 2827-2876 on the plain grid); the overlap kernel
// is not the default (slower in run 25), so it keeps the plain grid and the compile time.
template <int D, bool OVERLAP>
constexpr bool kWsPersistent = D <= 128 && !OVERLAP;

// Which instances copy K/V tiles by TMA where the launcher provides tensor maps (p.kv_tma): head
// sizes whose producer threads keep one column chunk (D = 64, 128, 256; both grids). A tile is
// BN / 16 16-token groups x D / 64 column blocks x K and V box copies from one thread (D = 128:
// 32, instead of 32 cp.async and their addresses from each of 128 threads). Tiles wholly inside
// the item's key union go by TMA; a union's edge tiles (rows outside it must be zeros: a cache's
// unused slots may hold NaN, and 0 x NaN in P V is NaN) keep the cp.async path with its
// zero-fill.
template <int D, bool PERSIST>
constexpr bool kWsTma = D == 64 || D == 128 || D == 256;
// Tail split (kWsTailSplit, p.tail_slots > 0): on the persistent grid CTA b takes items b,
// b + G, ... (G CTAs), so when the item count is not a multiple of G the last round runs the
// `left` leftover items on `left` CTAs while the others idle: chunked prefill (4,096 equal items
// on 132 SMs: 31.03 per CTA) spends ~3 % of its time there (notes/prefill.md, runs 52-54).
// Instead, the last round cuts each leftover item's key tiles into up to `pieces` ranges (at most
// G / left, kTailMaxPieces), one per CTA. A piece runs the item's rows over its tiles only and
// writes its rows' unnormalized state (O, running max, partial sums: registers in fragment order)
// to tail_ws; the piece that completes its item's count last (tail_count, zeroed by the plan
// kernel) merges the others' states into its own and stores the rows as a whole item would
// (sinks and 1 / sum there, once). No CTA waits for another. Persistent D = 128 only: the
// register epilogue (nothing staged through Q) and the rows that need it.
template <int D, bool PERSIST>
constexpr bool kWsTailSplit = PERSIST && D == 128;
constexpr int kTailMaxPieces = 8;

struct WsTail {
  int limit;   // units below run whole items (all items when nothing is split)
  int pieces;  // pieces per leftover item; 1: no split
};

// From the item count, the grid and the workspace's records: the same on every CTA and role.
SWA_D WsTail ws_tail_plan(int n_items, int grid, int slots) {
  WsTail t{n_items, 1};
  const int rounds = n_items / grid, left = n_items - rounds * grid;
  if (left == 0) return t;
  const int pieces = min(grid / left, kTailMaxPieces);
  if (pieces < 2 || left * pieces > slots) return t;
  t.limit = rounds * grid;
  t.pieces = pieces;
  return t;
}

// What stride position u (item0, item0 + G, ...) of a CTA runs: item `item`, whole (piece -1) or
// its piece `piece`; false past the CTA's work.
struct WsUnit {
  int item, piece;
};
SWA_D bool ws_unit(const WsTail& t, int n_items, int u, WsUnit& unit) {
  if (u < t.limit) {
    unit = WsUnit{u, -1};
    return true;
  }
  const int v = u - t.limit;  // the piece's record slot
  if (t.pieces < 2 || v >= (n_items - t.limit) * t.pieces) return false;
  unit = WsUnit{t.limit + v / t.pieces, v % t.pieces};
  return true;
}

// A unit's tiles [j0, j1) of an item of n_tiles; np: 1 for a whole item (n_tiles may be 0: its
// rows are zeros), >= 2 for one of np pieces, 0 for a piece with nothing to do (items with fewer
// tiles than pieces have fewer pieces; one with at most one tile is not split).
struct WsRange {
  int j0, j1, np;
};
SWA_D WsRange ws_unit_range(int n_tiles, int piece, int pieces) {
  if (piece < 0) return WsRange{0, n_tiles, 1};
  const int np = min(pieces, n_tiles);
  if (np < 2) return piece == 0 ? WsRange{0, n_tiles, 1} : WsRange{0, 0, 0};
  if (piece >= np) return WsRange{0, 0, 0};
  return WsRange{piece * n_tiles / np, (piece + 1) * n_tiles / np, np};
}

// Barrier `ID` of THREADS threads that also ORs `v` over them.
template <int ID, int THREADS>
SWA_D int named_bar_or(int v) {
#ifdef SWA_OPS_HAS_WGMMA
  uint32_t r;
  asm volatile(
      "{\n.reg .pred a, b;\nsetp.ne.u32 a, %1, 0;\nbar.red.or.pred b, %2, %3, a;\n"
      "selp.u32 %0, 1, 0, b;\n}\n"
      : "=r"(r)
      : "r"(static_cast<uint32_t>(v)), "n"(ID), "n"(THREADS)
      : "memory");
  return static_cast<int>(r);
#else
  return v;
#endif
}

// 1: the consumers fence every tile as for cp.async ones (build-time, for A/B; the TMA tiles need
// no proxy fence).
#ifndef SWA_OPS_WS_TMA_FENCE_ALL
#define SWA_OPS_WS_TMA_FENCE_ALL 0
#endif

// Named barriers (0 is __syncthreads): the two consumers' turns, and (staged epilogue) each
// consumer's own sync.
constexpr int kBarTurn = 1;   // kBarTurn + w: consumer w may issue its wgmma batch (256 threads)
constexpr int kBarWg = 3;     // kBarWg + w: consumer w's 128 threads
constexpr int kBarTail = 5;   // both consumers (256 threads): a tail piece's merge hand-off

// PERSIST: the epilogue of an item with keys stages O in the warp's own rows of Q's tile (16-byte
// coalesced stores; Q is released only after it) at head sizes from this one up; below, O goes
// out straight from registers and Q is released right after the last S, so the next item's Q
// loads under the last P V. Run 3 of the prefill-persist branch (H100, bench batch 8): the
// register stores cost gemma3-prefill (D = 256, W = 1024: short items, twice D = 128's output
// bytes per item) ~5 % against the staged stores, while the D = 64 and 128 rows gained. Only
// D <= 128 is instantiated persistent; overridable at build, for A/B. The plain grid always stages.
#ifndef SWA_OPS_WS_STAGED_EPILOGUE_MIN_D
#define SWA_OPS_WS_STAGED_EPILOGUE_MIN_D 192
#endif

// One work item: a (kv head, 128-row tile) pair, and its key union [kv_lo, kv_hi) in n_tiles
// tiles of BN keys from key t_org on. Tiles start at kv_lo itself (a key's cp.async copy is one
// 16-byte chunk per row either way, so the union takes ceil(span / BN) tiles), or, where the
// kernel copies by TMA (kWsTma, p.kv_tma), at kv_lo rounded down to a multiple of 16, so that
// every tile's 16-token groups lie in one block each (the keys before kv_lo are zero-filled and
// masked like any key outside a row's window). first / last: the tile's first and last live
// rows' windows (the CTA-uniform mask test). On the persistent grid both roles locate every item
// the same way, so they agree on its tiles without exchanging anything.
struct WsItem {
  PrefillCta c;
  int kvh, kv_lo, kv_hi, t_org, n_tiles;
  RowSpan first, last;
};

// The key union of w.c's rows (as prefill_mma.h); ALIGN: the TMA origin (above).
template <int BM, int BN>
SWA_D void ws_item_union(const PrefillParams& p, WsItem& w, bool align = false) {
  const int last_row = min(w.c.row0 + BM, w.c.rows) - 1;
  w.first = row_span(w.c.row0, w.c.rows, p.group, w.c.L, w.c.q_len, p.window);
  w.last = row_span(last_row, w.c.rows, p.group, w.c.L, w.c.q_len, p.window);
  w.kv_hi = w.last.hi;
  w.kv_lo = w.first.hi > w.first.lo ? w.first.lo : 0;
  w.t_org = align ? w.kv_lo & ~(kTmaBoxTokens - 1) : w.kv_lo;
  w.n_tiles = w.kv_hi > w.kv_lo ? (w.kv_hi - w.t_org + BN - 1) / BN : 0;
}

// Item `item` of the persistent grid: kv head major (item = kvh * tiles_per_head + row tile).
template <int BM, int BN>
SWA_D WsItem locate_ws_item(const PrefillParams& p, int item, int tiles_per_head,
                            bool align = false) {
  WsItem w;
  w.kvh = item / tiles_per_head;
  w.c = locate_prefill_cta<BM>(p, item - w.kvh * tiles_per_head);
  ws_item_union<BM, BN>(p, w, align);
  return w;
}

// The work at stride position u of a CTA: its unit, the item and the unit's tiles; false past the
// CTA's work. Both roles take their work from here, so they cannot disagree on it.
struct WsWork {
  WsUnit un;
  WsItem w;
  WsRange rg;
};
template <int BM, int BN>
SWA_D bool ws_work(const PrefillParams& p, const WsTail& t, int n_items, int tiles_per_head,
                   bool align, int u, WsWork& wk) {
  if (!ws_unit(t, n_items, u, wk.un)) return false;
  wk.w = locate_ws_item<BM, BN>(p, wk.un.item, tiles_per_head, align);
  wk.rg = ws_unit_range(wk.w.n_tiles, wk.un.piece, t.pieces);
  return true;
}

// The consumers' wgmma batches of one ring stage (st: its offset in 16-byte units; move(d, u): the
// descriptor d moved by u units). S = Q K^T into the first N / 8 chunks of sc: K-major Q and K,
// k-step kc is 32 bytes into its 128-byte swizzle row of column block kc / 4; 8-row groups 1024
// bytes apart (SBO).
template <typename T, int N, int KCH, int BM, int BN, typename Move, typename Desc>
SWA_D void ws_issue_s(float* sc, const Move& move, Desc dq0, Desc dk0, uint32_t st) {
#pragma unroll
  for (int kc = 0; kc < KCH; ++kc) {
    const uint64_t da = move(dq0, ((kc >> 2) * BM * 64 + (kc & 3) * 16) * sizeof(T) / 16);
    const uint64_t db = move(dk0, st + ((kc >> 2) * BN * 64 + (kc & 3) * 16) * sizeof(T) / 16);
    wgmma_ss<T, N>(sc, da, db, kc > 0 ? 1 : 0);
  }
}
// O += P V over the stage's first 16 KSTEPS keys: V as the MN-major (transposed) B, keys 16 kc2..
// are rows of each 64-column block; column blocks BN * 128 bytes apart (LBO, in dv0), 8-key groups
// 1024 bytes (SBO).
template <typename T, int D, int KSTEPS, typename Move, typename Desc>
SWA_D void ws_issue_pv(float* o, const uint32_t (*pa)[4], const Move& move, Desc dv0,
                       uint32_t st) {
#pragma unroll
  for (int kc2 = 0; kc2 < KSTEPS; ++kc2)
    wgmma_rs_tb<T, D>(o, pa[kc2], move(dv0, st + kc2 * 16 * 64 * sizeof(T) / 16), 1);
}

template <typename T, int D, bool SOFTCAP, bool OVERLAP, bool PERSIST>
__global__ void __launch_bounds__(384, PrefillWsTraits<D>::kCtasPerSm)
    prefill_ws_kernel(const __grid_constant__ PrefillParams p) {
  static_assert(!(PERSIST && OVERLAP), "the persistent grid is instantiated without the overlap");
  using Tr = PrefillWsTraits<D>;
  constexpr int BM = Tr::kBM, BN = Tr::kBN, NST = Tr::kStages;
  constexpr int CPR = D / 8;   // 16-byte chunks per row
  constexpr int KCH = D / 16;  // k-steps of Q K^T
  constexpr int ONT = D / 8;   // 8-column chunks of O
  constexpr int SNT = BN / 8;  // 8-column chunks of S
  constexpr int TILE = BN * D;  // elements of one K (or V) tile
  constexpr int kL2Wide = l2_span_for_rows(D * sizeof(T));  // L2 fetch span per copy
  // The epilogue's stores: staged through Q's tile (always on the plain grid) or from registers.
  constexpr bool kStaged = !PERSIST || D >= SWA_OPS_WS_STAGED_EPILOGUE_MIN_D;
  // A tile's ring position: the item's tile index on the plain grid (int, as it always was); the
  // CTA's running tile count on the persistent one (unsigned: / and % by NST are shifts or cheap).
  using Pos = std::conditional_t<PERSIST, uint32_t, int>;
  // wgmma descriptors as built (64 bits) on the plain grid, as their low word when persistent
  // (desc_at).
  using Desc = std::conditional_t<PERSIST, uint32_t, uint64_t>;
  // TMA copies of interior tiles (kWsTma): the items' tiles then start 16-aligned (WsItem).
  constexpr bool kTma = kWsTma<D, PERSIST>;
  const bool tma = kTma && p.kv_tma != 0;
  // An item whose last key tile holds at most kShortKeys keys of its union runs S and P V of
  // that tile over those keys only (run_item). 128-key tiles only (D = 128: at BN = 32 there is
  // nothing to trim), and not with the overlap, whose loop pairs S(g) and P V(g - 1) otherwise.
  // SWA_OPS_WS_SHORT_LAST=0 (build time) turns it off for A/B runs.
#ifndef SWA_OPS_WS_SHORT_LAST
#define SWA_OPS_WS_SHORT_LAST 1
#endif
  constexpr bool kShortLast = SWA_OPS_WS_SHORT_LAST && BN == 128 && !OVERLAP;
  constexpr int kShortKeys = 32;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* smem_base =
      smem_raw + (1024 - static_cast<uint32_t>(__cvta_generic_to_shared(smem_raw)) % 1024) % 1024;
  T* q_s = reinterpret_cast<T*>(smem_base);  // [BM x D] swizzled: Q, then the output staging
  T* kv_s = q_s + BM * D;                    // [NST][K | V][BN x D] swizzled
  uint64_t* full = reinterpret_cast<uint64_t*>(kv_s + NST * 2 * TILE);
  uint64_t* empty = full + NST;
  uint64_t* q_full = empty + NST;  // PERSIST: the item's Q has landed (the producer's 128 copies)
  uint64_t* q_empty = q_full + 1;  // PERSIST: both consumers are done with the item's Q (8 warps)

#if defined(__CUDA_ARCH__) && !defined(SWA_OPS_HAS_WGMMA)
  __trap();  // compiled without sm_90a: the host never dispatches here
#endif
  const int tid = threadIdx.x, lane = tid % 32;

  WsItem w0;  // the plain grid's one item (unused when persistent: each role locates its own)
  int tiles_per_head = 0, n_items = 0, item_stride = 0, item0 = 0;
  WsTail tail{0, 1};  // PERSIST: which units split the last round (kWsTailSplit)
  if constexpr (PERSIST) {
    w0 = WsItem{};  // never read (what derives from it is dead code here)
    // Items kv head major: the order the plain grid's CTAs (x fastest) are dispatched in, so the
    // items in flight at any moment share windows in L2 as they did. CTA b takes items b,
    // b + stride, ... (static striding): no counter to reset, nothing exchanged between CTAs;
    // within a sequence the heaviest row tiles come first (locate_prefill_cta), and consecutive
    // items of one CTA are `stride` apart, so every CTA samples all sequences and positions
    // alike. Everything read below may come from the plan kernel or the predecessor: wait first.
    pdl_wait();
    tiles_per_head = p.cta_start[p.num_seqs];
    n_items = tiles_per_head * p.num_kv_heads;
    item_stride = gridDim.x * gridDim.y;
    item0 = blockIdx.y * gridDim.x + blockIdx.x;
    if (item0 >= n_items) return;  // the whole CTA, before any barrier
    tail = WsTail{n_items, 1};
    if constexpr (kWsTailSplit<D, PERSIST>)
      if (p.tail_slots > 0) tail = ws_tail_plan(n_items, item_stride, p.tail_slots);
    // As the plain grid: every CTA triggers once, after the wait, so dependents launch once every
    // CTA of this grid is resident (they wait for its completion before reading).
    pdl_launch_dependents();
  } else {
    w0.kvh = blockIdx.y;
    const int x = blockIdx.x;
    pdl_wait();
    if (x >= p.cta_start[p.num_seqs]) return;  // the whole CTA, before any barrier
    w0.c = locate_prefill_cta<BM>(p, x);
    pdl_launch_dependents();
    ws_item_union<BM, BN>(p, w0, tma);
  }

  if (tid == 0) {
    for (int s = 0; s < NST; ++s) {
      mbar_init(&full[s], 128);  // one cp.async arrival per producer thread
      mbar_init(&empty[s], 8);   // one arrival per consumer warp
    }
    if constexpr (PERSIST) {
      mbar_init(q_full, 128);
      mbar_init(q_empty, 8);
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
    // The fixed-chunk path's block-table entries of one tile (below). Declared here, not in the
    // lambda: a local of an inlined lambda lands after the kernel's own locals, and that order
    // decides the order they are promoted to registers in, hence the PTX's register numbers
    // (the plain kernel's PTX stays identical to what it was before the lambda).
    int blk[128 % CPR == 0 ? BN / (128 / CPR) : 1];
    // Tile j of an item (ring position jg) into its stage; j0: the first tile of the item's range
    // (a tail piece's). bt: the sequence's block-table row; k_col / v_col: this thread's column
    // chunk of the kv head (the fixed-chunk path), strides in bytes.
    auto copy_tile = [&](Pos jg, int j, int j0, int kv_lo, int kv_hi, int t_org, int kvh,
                         const int* bt, const T* k_base, const T* v_base, const char* k_col,
                         const char* v_col, int bs_mask, uint64_t sb_bytes, uint64_t st_bytes) {
      const int stage = jg % NST;
      const int t0 = t_org + j * BN;
      // A short last tile (the consumers' test in run_item: the range's last tile, not its only
      // one, with at most kShortKeys keys of the union): the consumers read its first kShortKeys
      // rows only, so the others are neither copied nor zero-filled.
      const bool trim = kShortLast && j > j0 && kv_hi - t0 <= kShortKeys;
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
        static_assert(sizeof(blk) == NR * sizeof(int), "blk holds one entry per round");
#pragma unroll
        for (int k = 0; k < NR; ++k) {
          // Clamped into the union (kTma: tiles may start up to 15 keys before it; those rows'
          // block is kv_lo's, blocks holding at least 16 tokens there).
          int tc = min(t0 + rw + RPR * k, kv_hi - 1);  // >= kv_lo >= 0 without kTma
          if constexpr (kTma) tc = max(tc, kv_lo);
          blk[k] = __ldg(bt + (static_cast<unsigned>(tc) >> p.log2_block_size));
        }
        if (jg >= NST) mbar_wait(&empty[stage], ((jg / NST) - 1) & 1);
        if constexpr (kTma) {
          if (tma && t0 >= kv_lo && t0 + BN <= kv_hi) {
            // Interior tile: thread 0 copies its 16-token groups (one block each: the origin is
            // 16-aligned and blocks hold at least 16 tokens) by TMA, completing `full` by bytes;
            // every thread still arrives once (the barrier counts 128), after its own earlier
            // cp.async copies, as below. Thread 0's round k covers row RPR k, so its blk[GR g] is
            // group g's block.
            constexpr int GR = kTmaBoxTokens / RPR;
            static_assert(kTmaBoxTokens % RPR == 0 && BN % kTmaBoxTokens == 0 && D % 64 == 0,
                          "thread 0's rounds GR g start the 16-token groups");
            if (pt == 0) {
              mbar_expect_tx(&full[stage], 2 * TILE * sizeof(T));
#pragma unroll
              for (int g = 0; g < BN / kTmaBoxTokens; ++g) {
                const int tok = (t0 + g * kTmaBoxTokens) & bs_mask;
#pragma unroll
                for (int h = 0; h < D / 64; ++h) {
                  const int so = h * BN * 64 + g * kTmaBoxTokens * 64;  // tile_offset's rows
                  tma_load_4d(ks + so, &p.k_map, h * 64, kvh, tok, blk[GR * g], &full[stage]);
                  tma_load_4d(vs + so, &p.v_map, h * 64, kvh, tok, blk[GR * g], &full[stage]);
                }
              }
            }
            mbar_arrive_cp_async(&full[stage]);
            return;
          }
        }
#pragma unroll
        for (int k = 0; k < NR; ++k) {
          if (RPR * k >= kShortKeys && trim) break;  // rounds RPR k.. hold rows >= kShortKeys
          const int t = t0 + rw + RPR * k;
          // (rw + RPR k) & 7 == (rw & 7) ^ (RPR k & 7): rw < RPR, both powers of two.
          const int so = so0 + RPR * k * 64 + ((sw0 ^ ((RPR * k) & 7)) << 3);
          // Byte offset; entries inside the union are real blocks (>= 0): unsigned products.
          const uint64_t off = static_cast<uint32_t>(blk[k]) * sb_bytes +
                               static_cast<uint32_t>(t & bs_mask) * st_bytes;
          // kTma: rows before kv_lo (a 16-aligned origin) are zero-filled as rows past kv_hi.
          const bool valid = kTma ? (t >= kv_lo && t < kv_hi) : t < kv_hi;
          cp_async16<kL2Wide>(ks + so, k_col + off, valid);
          cp_async16<kL2Wide>(vs + so, v_col + off, valid);
        }
      } else {
        // D = 192 (24 chunks per row): a thread's chunk moves from round to round.
        if (jg >= NST) mbar_wait(&empty[stage], ((jg / NST) - 1) & 1);
#pragma unroll 4
        for (int k = 0; k < BN * CPR / 128; ++k) {
          const int i = pt + k * 128;
          const int r = i / CPR, c = (i % CPR) * 8;
          const int t = t0 + r;  // t >= kv_lo: tiles start there
          copy_kv_chunk<T, D, true, BN>(p, bt, bs_mask, k_base, v_base, ks, vs, r, c, t, t < kv_hi);
        }
      }
      mbar_arrive_cp_async(&full[stage]);
    };
    if constexpr (!PERSIST) {
      const int* bt = p.block_tables + static_cast<int64_t>(w0.c.seq) * p.bt_stride;
      const int bs_mask = p.block_size - 1;
      const T* k_base = static_cast<const T*>(p.k_cache) + w0.kvh * p.kv_stride_head;
      const T* v_base = static_cast<const T*>(p.v_cache) + w0.kvh * p.kv_stride_head;
      const char* k_col = reinterpret_cast<const char*>(k_base + (pt % CPR) * 8);
      const char* v_col = reinterpret_cast<const char*>(v_base + (pt % CPR) * 8);
      uint64_t sb_bytes = static_cast<uint64_t>(p.kv_stride_block) * sizeof(T);
      uint64_t st_bytes = static_cast<uint64_t>(p.kv_stride_tok) * sizeof(T);
      // Opaque to the compiler, which otherwise folds them back into the per-round sums
      // (factoring out sizeof(T) and the sequence's table row: extra 64-bit shifts and adds).
      opaque(bt);
      opaque(k_col);
      opaque(v_col);
      opaque(sb_bytes);
      opaque(st_bytes);
      for (int j = 0; j < w0.n_tiles; ++j)
        copy_tile(j, j, 0, w0.kv_lo, w0.kv_hi, w0.t_org, w0.kvh, bt, k_base, v_base, k_col,
                  v_col, bs_mask, sb_bytes, st_bytes);
    } else {
      const int bs_mask = p.block_size - 1;
      uint64_t sb_bytes = static_cast<uint64_t>(p.kv_stride_block) * sizeof(T);
      uint64_t st_bytes = static_cast<uint64_t>(p.kv_stride_tok) * sizeof(T);
      opaque(sb_bytes);
      opaque(st_bytes);
      // Ring position: tiles issued so far by this CTA. The ring's barrier phases run on across
      // items (tile J lives in stage J % NST), so the next item's first tiles go out as soon as
      // stages free up, while the consumers still finish this item's last batches and epilogue.
      uint32_t jt = 0;
      uint32_t qn = 0;  // items whose Q was loaded: q_full / q_empty phases
#pragma unroll 1
      for (int u = item0;; u += item_stride) {
        WsWork wk;
        if (!ws_work<BM, BN>(p, tail, n_items, tiles_per_head, tma, u, wk)) break;
        const WsItem& w = wk.w;
        const WsRange& rg = wk.rg;
        // No tile (no row sees a key, or a piece with nothing to do): no copy, no Q (the
        // consumers skip too).
        if (rg.j1 <= rg.j0) continue;
        const int* bt = p.block_tables + static_cast<int64_t>(w.c.seq) * p.bt_stride;
        const T* k_base = static_cast<const T*>(p.k_cache) + w.kvh * p.kv_stride_head;
        const T* v_base = static_cast<const T*>(p.v_cache) + w.kvh * p.kv_stride_head;
        const char* k_col = reinterpret_cast<const char*>(k_base + (pt % CPR) * 8);
        const char* v_col = reinterpret_cast<const char*>(v_base + (pt % CPR) * 8);
        opaque(bt);
        opaque(k_col);
        opaque(v_col);
#pragma unroll 1
        for (int j = rg.j0; j < rg.j1; ++j) {
          copy_tile(jt + (j - rg.j0), j, rg.j0, w.kv_lo, w.kv_hi, w.t_org, w.kvh, bt, k_base,
                    v_base, k_col, v_col, bs_mask, sb_bytes, st_bytes);
          if (j == rg.j0) {
            // The item's Q (rows past the sequence's are zero queries), after its tile 0: that
            // tile's stage frees a batch before Q does (tile J needs tile J - NST released, i.e.
            // batch J - NST + 1 done; Q needs the previous item's last S, one batch later), so
            // the order keeps the ring one tile further ahead. q_empty: both consumers are done
            // with the previous item's Q (its last S, or its staged epilogue).
            if (qn > 0) mbar_wait(q_empty, (qn - 1) & 1);
            const int q_begin = w.c.q_begin, rows = w.c.rows, row0 = w.c.row0;
#pragma unroll 1
            for (int i = pt; i < BM * CPR; i += 128) {
              const int r = i / CPR, c = (i % CPR) * 8;
              copy_q_chunk(p, q_s + tile_offset<D, true>(r, c, BM), q_begin, w.kvh, rows, row0 + r,
                           c);
            }
            mbar_arrive_cp_async(q_full);  // completes once every producer thread's Q landed
            ++qn;
          }
        }
        jt += rg.j1 - rg.j0;
      }
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
  // The plain grid's rows (the persistent loop derives its own per item; these are unused there).
  const int wr0 = w0.c.row0 + warp * 16;
  const RowSpan ra = row_span(wr0 + (lane >> 2), w0.c.rows, p.group, w0.c.L, w0.c.q_len, p.window);
  const RowSpan rb =
      row_span(wr0 + (lane >> 2) + 8, w0.c.rows, p.group, w0.c.L, w0.c.q_len, p.window);

  if constexpr (!PERSIST) {
    // This warpgroup's 64 Q rows (rows past the sequence's are zero queries).
    for (int i = ct; i < 64 * CPR; i += 128) {
      const int r = cw * 64 + i / CPR, c = (i % CPR) * 8;
      copy_q_chunk(p, q_s + tile_offset<D, true>(r, c, BM), w0.c.q_begin, w0.kvh, w0.c.rows,
                   w0.c.row0 + r, c);
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
  float m0 = kNegInf, m1 = kNegInf, l0 = 0.f, l1 = 0.f;  // PERSIST: reset per item
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
  const Desc dq0 = static_cast<Desc>(make_smem_desc(q_s + cw * 64 * 64, 16, 1024));
  const Desc dk0 = static_cast<Desc>(make_smem_desc(kv_s, 16, 1024));
  // V's: K's moved one tile on, with the LBO (bits 16-29) of the transposed layout, derived from
  // dk0 so that it stays in uniform registers as dk0 does.
  const Desc dv0 = [&]() -> Desc {
    if constexpr (PERSIST)
      return dk0 + (((BN * 128 - 16) >> 4) << 16) + TILE * sizeof(T) / 16;
    else
      return desc_plus(dk0 + (static_cast<uint64_t>((BN * 128 - 16) >> 4) << 16),
                       TILE * sizeof(T) / 16);
  }();
  // A descriptor moved by `units` 16-byte units, as a full descriptor.
  auto desc_move = [](Desc d, uint32_t units) -> uint64_t {
    if constexpr (PERSIST)
      return desc_at(d + units);
    else
      return desc_plus(d, units);
  };
  const uint32_t full_at = smem_u32(full), empty_at = smem_u32(empty);  // PERSIST's barriers
  constexpr uint32_t kStageStep = 2 * TILE * sizeof(T) / 16;  // one stage, in 16-byte units
  // Tiles are named by their ring position J (as the producer's).
  auto stage_at = [](Pos J) { return static_cast<uint32_t>(J % NST) * kStageStep; };
  auto issue_pv = [&](Pos J) {
    ws_issue_pv<T, D, BN / 16>(&o[0][0], pa, desc_move, dv0, stage_at(J));
  };
  auto issue_s = [&](Pos J, float (&sc)[SNT][4]) {
    ws_issue_s<T, BN, KCH, BM, BN>(&sc[0][0], desc_move, dq0, dk0, stage_at(J));
  };
  // The short last tile (kShortLast): S over its first kShortKeys keys only (the first
  // kShortKeys / 8 chunks of s), and P V over those keys.
  auto issue_s_short = [&](Pos J) {
    ws_issue_s<T, kShortKeys, KCH, BM, BN>(&s[0][0], desc_move, dq0, dk0, stage_at(J));
  };
  auto issue_pv_short = [&](Pos J) {
    ws_issue_pv<T, D, kShortKeys / 16>(&o[0][0], pa, desc_move, dv0, stage_at(J));
  };
  auto poll_full = [&](Pos J) {
    if constexpr (PERSIST)
      mbar_wait_at(full_at + (J % NST) * 8, (J / NST) & 1);
    else
      mbar_wait(&full[J % NST], (J / NST) & 1);
  };
  // fence: the tile (or, with tile 0, the item's Q) was written by cp.async, i.e. through the
  // generic proxy, which wgmma (the async proxy) sees only after this fence; TMA writes are
  // async-proxy writes already, and their completion on the barrier is all wgmma needs.
  auto wait_full = [&](Pos J, bool fence = true) {
    poll_full(J);
    if (fence) fence_proxy_async_smem();
  };
  auto batch_begin = [&]() {
    named_bar_sync<kBarTurn, kBarTurn + 1, 256>(cw == 0);
    reg_fence<SNT * 4>(&s[0][0]);
    reg_fence<ONT * 4>(&o[0][0]);
    wgmma_fence();
  };
  // Plain grid: consumer 0 syncs on its turn n_tiles + 1 times; consumer 1 arrives there once up
  // front and after each of its batches but the last (which would have no taker). Persistent:
  // the turns alternate across items; consumer 1 grants consumer 0 one turn up front and one
  // after each of its batches, consumer 0 grants one after each of its own, and consumer 0 takes
  // the spare grant after its last item (so no named barrier is left with arrivals).
  auto batch_end = [&](bool last) {
    wgmma_commit();
    if (PERSIST || cw == 0 || !last) named_bar_arrive<kBarTurn, kBarTurn + 1, 256>(cw == 1);
    wgmma_wait<0>();
    reg_fence<SNT * 4>(&s[0][0]);
    reg_fence<ONT * 4>(&o[0][0]);
  };
  auto release = [&](Pos J) {
    if (lane == 0) {  // this warp's wgmma reads of tile J are done
      if constexpr (PERSIST)
        mbar_arrive_at(empty_at + (J % NST) * 8);
      else
        mbar_arrive(&empty[J % NST]);
    }
  };

  Pos jt = 0;       // ring position of the item's tile 0 (0 on the plain grid)
  uint32_t qn = 0;  // PERSIST: items with tiles so far, q_full's phase
  // The item's batches (ra, rb: this thread's two rows' windows).
  // The item's tiles [j0, j1) (all of them but in a tail piece).
  auto run_item = [&](const WsItem& w, const RowSpan& ra, const RowSpan& rb, int j0, int j1) {
    const int n_tiles = j1 - j0, t_org = w.t_org + j0 * BN;
    // Softmax of S(j) (j: the tile within the item): logits in log2 units, soft-cap before the
    // mask, online max and sum, the probabilities in place in s. Returns the two rows' rescale
    // factors of O. Writes nothing a P V in flight reads or accumulates into.
    auto softmax_probs = [&](int j, float (&s)[SNT][4]) -> float2 {
      const int t0 = t_org + j * BN;
      if (!fuse_scale) scale_logits<SOFTCAP>(s, scale_log2, cap_pre, p.cap_post);
      // Mask unless the tile is inside every live row's window: a CTA-uniform test (lo grows
      // and hi >= lo with the row, so the last live row has the highest lo and the first the
      // lowest hi; a first row before position 0 has hi = 0 and forces the mask). Rows past the
      // sequence's are never stored. Uniform, it is no divergent branch to ptxas, which would
      // otherwise wait for the P V in flight at its reconvergence point.
      if (!(t0 >= w.last.lo && t0 + BN <= w.first.hi)) mask_tile<SNT>(s, t0, quad_col, ra, rb);
      return online_softmax_tile<SNT, true>(s, m0, m1, l0, l1, exp_scale);
    };
    // O's rescale by a softmax step's factors (skipped when no row of the warp needs it).
    auto rescale_o = [&](float2 al) {
      if (warp_any(al.x != 1.f || al.y != 1.f)) {
#pragma unroll
        for (int nt = 0; nt < ONT; ++nt) {
          o[nt][0] *= al.x; o[nt][1] *= al.x; o[nt][2] *= al.y; o[nt][3] *= al.y;
        }
      }
    };
    // Then O's rescale and P(j) into the A fragments of the next P V: both wait for the P V in
    // flight (they write its accumulators and its A operand).
    auto softmax_finish = [&](float2 al, float (&s)[SNT][4]) {
      rescale_o(al);
      pack_p_fragments<T>(s, pa);
    };

    // n_tiles == 0 (no row sees a key): no batch at all, zeros below. Otherwise batch 0 is S(0)
    // alone, batch g in [1, n_tiles) is P V(g - 1) and S(g), and batch n_tiles is
    // P V(n_tiles - 1) alone: peeled, so every wgmma sits on a straight path (a wgmma under a
    // condition makes ptxas serialize them, C7520).
    if (n_tiles > 0) {
      if constexpr (PERSIST)
        mbar_wait(q_full, qn & 1);  // this item's Q (wait_full's fence covers it too)
      else if (cw == 1)
        named_bar_arrive<kBarTurn, kBarTurn + 1, 256>(true);  // consumer 0 goes first
      wait_full(jt);
      batch_begin();
      issue_s(jt, s);
      batch_end(false);
      softmax_finish(softmax_probs(0, s), s);
      // The short last tile: chunked prefill at W = 4096 has 33 tiles of 128 keys for a union of
      // 4127 (32 rows of 4 heads), the last holding 31 or 32 of them; its S and P V then cost a
      // quarter. Not for a tail piece that ends inside its item (its last tile is whole) nor for
      // a one-tile item (its S is batch 0's).
      const bool short_last =
          kShortLast && n_tiles >= 2 && w.kv_hi - (t_org + (n_tiles - 1) * BN) <= kShortKeys;
#pragma unroll 1
      for (int g = 1; g < n_tiles - (short_last ? 1 : 0); ++g) {
        const Pos J = jt + g;
        // Tile g >= 1 starts past kv_lo (t_org > kv_lo - 16), so it went by TMA iff it ends
        // inside the union (the producer's test).
        wait_full(J, SWA_OPS_WS_TMA_FENCE_ALL || !(tma && t_org + (g + 1) * BN <= w.kv_hi));
        batch_begin();
        if constexpr (OVERLAP) {
          // S(g) first, in its own commit group, then P V(g - 1): the softmax of S(g) runs while
          // P V(g - 1) is still on the tensor cores (FlashAttention-3's intra-warpgroup overlap).
          issue_s(J, s);
          wgmma_commit();
          issue_pv(J - 1);
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
          // wait_full passes at once), but the loop is a basic-block boundary, and ptxas
          // otherwise hoists the wait within its block to before the exponentials.
          if (g + 1 < n_tiles) poll_full(J + 1);
          wgmma_wait<0>();  // P V(g - 1)
          reg_fence<ONT * 4>(&o[0][0]);
          release(J - 1);
          softmax_finish(al, s);
        } else {
          issue_pv(J - 1);
          issue_s(J, s);
          batch_end(false);
          release(J - 1);
          softmax_finish(softmax_probs(g, s), s);
        }
      }
      if constexpr (kShortLast) {
        if (short_last) {
          // The short tile's batch, peeled (a wgmma under a condition inside a batch would make
          // ptxas serialize them). An edge tile: copied by cp.async, never by TMA, so fenced.
          // Its softmax runs over the first kShortKeys / 8 chunks of s: the others hold no
          // logit of this tile, and the P V below reads only the packed fragments of those.
          const Pos J = jt + n_tiles - 1;
          wait_full(J);
          batch_begin();
          issue_pv(J - 1);
          issue_s_short(J);
          batch_end(false);
          release(J - 1);
          auto& ss = reinterpret_cast<float(&)[kShortKeys / 8][4]>(s);
          const int t0 = t_org + (n_tiles - 1) * BN;
          if (!fuse_scale) scale_logits<SOFTCAP>(ss, scale_log2, cap_pre, p.cap_post);
          mask_tile<kShortKeys / 8>(ss, t0, quad_col, ra, rb);  // never inside every window
          rescale_o(online_softmax_tile<kShortKeys / 8, true>(ss, m0, m1, l0, l1, exp_scale));
          pack_p_fragments<T>(ss, reinterpret_cast<uint32_t(&)[kShortKeys / 16][4]>(pa));
        }
      }
      // PERSIST, register epilogue: every S of the item is complete (waited above), so Q may
      // take the next item's rows (the staged epilogue releases it after its stores instead).
      if constexpr (PERSIST && !kStaged)
        if (lane == 0) mbar_arrive(q_empty);
      if (kShortLast && short_last) {
        batch_begin();
        issue_pv_short(jt + n_tiles - 1);
        batch_end(true);
      } else {
        batch_begin();
        issue_pv(jt + n_tiles - 1);
        batch_end(true);
      }
      release(jt + n_tiles - 1);
      if constexpr (PERSIST) {
        jt += n_tiles;
        ++qn;
      }
    }
  };

  // Epilogue, as prefill_mma.h: row sums, the sink, 1 / sum, then the stores.
  auto epilogue = [&](const WsItem& w, int wr0) {
    finish_row_sums<ONT>(p, w.kvh, wr0 + (lane >> 2), w.c.rows, m0, m1, l0, l1, o);
    const float inv0 = l0 > 0.f ? 1.f / l0 : 0.f, inv1 = l1 > 0.f ? 1.f / l1 : 0.f;
    if (kStaged && (!PERSIST || w.n_tiles > 0)) {
      // Staged in this warp's own rows of the swizzled Q tile: only this warpgroup's S chains
      // read those, and the barrier below makes sure all of its warps are past their last wait
      // (the other consumer may still be running S chains over its own Q rows, so the
      // unswizzled staging of prefill_mma.h, which spans both warpgroups' rows, would race
      // here). PERSIST: an item without keys has no Q of its own (its tile may be filling with
      // the next item's), so it takes the register stores below.
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
      store_warp_rows<T, D>(p, w.c.q_begin, w.kvh, wr0, w.c.rows, lane, [&](int r, int c) {
        return q_s + tile_offset<D, true>(warp * 16 + r, c, BM);
      });
      if constexpr (PERSIST) {
        warp_sync();  // every lane's reads of the staged rows are done
        if (lane == 0) mbar_arrive(q_empty);  // the producer may load the next item's Q
      }
      return;
    }
    if constexpr (PERSIST) {
      // From registers (4-byte stores, a quad's 16 contiguous bytes per row and 8-column chunk):
      // Q's tile is the only room beside the ring, and it already holds (or is being loaded
      // with) the next item's rows.
      T* out = static_cast<T*>(p.out);
      auto out_row = [&](int R) {
        const int64_t orow = static_cast<int64_t>(w.c.q_begin + R / p.group) * p.num_heads +
                             w.kvh * p.group + R % p.group;
        return out + orow * D + quad_col;
      };
      const int Ra = wr0 + (lane >> 2);
      if (Ra < w.c.rows) {
        T* dst = out_row(Ra);
#pragma unroll
        for (int nt = 0; nt < ONT; ++nt)
          *reinterpret_cast<uint32_t*>(dst + nt * 8) = pack2<T>(o[nt][0] * inv0, o[nt][1] * inv0);
      }
      if (Ra + 8 < w.c.rows) {
        T* dst = out_row(Ra + 8);
#pragma unroll
        for (int nt = 0; nt < ONT; ++nt)
          *reinterpret_cast<uint32_t*>(dst + nt * 8) = pack2<T>(o[nt][2] * inv1, o[nt][3] * inv1);
      }
    }
  };

  // A tail piece's rows (tail split): its state goes to record `slot` of tail_ws (fragment order,
  // one float per consumer thread per value: coalesced), then the piece that completes its item
  // (count `counter` reaches np) merges the item's other records `first` .. `first` + np - 1 into
  // its registers and returns true: the caller stores the rows as for a whole item. The other
  // pieces return false. Writers: stores, fence, barrier, then one atomic; the last: the atomic,
  // barrier, fence, then L2 loads (the threadfence-reduction pattern).
  auto tail_merge = [&](int slot, int first, int np, int counter) -> bool {
    constexpr int kRec = tail_record_floats(D);
    static_assert(kRec == ONT * 4 + 4 && kTailRecordThreads == 256, "O, 2 maxima, 2 sums");
    const int t = tid - 128;
    float* rec = p.tail_ws + static_cast<int64_t>(slot) * kRec * 256 + t;
#pragma unroll
    for (int nt = 0; nt < ONT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) __stcg(rec + (nt * 4 + e) * 256, o[nt][e]);
    __stcg(rec + (ONT * 4 + 0) * 256, m0);
    __stcg(rec + (ONT * 4 + 1) * 256, m1);
    __stcg(rec + (ONT * 4 + 2) * 256, l0);
    __stcg(rec + (ONT * 4 + 3) * 256, l1);
    __threadfence();
    named_bar_sync<kBarTail, kBarTail, 256>(true);
    int last = 0;
    if (t == 0) last = atomicAdd(p.tail_count + counter, 1) == np - 1;
    if (!named_bar_or<kBarTail, 256>(last)) return false;
    __threadfence();
    // Running maxima are in log2 units (online_softmax_tile); a row with no key in a piece has
    // max -inf and zero sums there, and weighs 0.
    auto weight = [](float m, float mx) { return m == kNegInf ? 0.f : fast_exp2(m - mx); };
#ifndef SWA_OPS_WS_TAIL_MUTANT  // build-time test of the tests: merge nothing (wrong results)
#pragma unroll 1
    for (int q = 0; q < np; ++q) {
      if (first + q == slot) continue;
      const float* r = p.tail_ws + static_cast<int64_t>(first + q) * kRec * 256 + t;
      const float qm0 = __ldcg(r + (ONT * 4 + 0) * 256), qm1 = __ldcg(r + (ONT * 4 + 1) * 256);
      const float nm0 = fmaxf(m0, qm0), nm1 = fmaxf(m1, qm1);
      const float a0 = weight(m0, nm0), b0 = weight(qm0, nm0);
      const float a1 = weight(m1, nm1), b1 = weight(qm1, nm1);
      l0 = l0 * a0 + __ldcg(r + (ONT * 4 + 2) * 256) * b0;
      l1 = l1 * a1 + __ldcg(r + (ONT * 4 + 3) * 256) * b1;
#pragma unroll
      for (int nt = 0; nt < ONT; ++nt) {
        o[nt][0] = o[nt][0] * a0 + __ldcg(r + (nt * 4 + 0) * 256) * b0;
        o[nt][1] = o[nt][1] * a0 + __ldcg(r + (nt * 4 + 1) * 256) * b0;
        o[nt][2] = o[nt][2] * a1 + __ldcg(r + (nt * 4 + 2) * 256) * b1;
        o[nt][3] = o[nt][3] * a1 + __ldcg(r + (nt * 4 + 3) * 256) * b1;
      }
      m0 = nm0;
      m1 = nm1;
    }
#else
    (void)first;
    (void)weight;
#endif
    return true;
  };

  if constexpr (!PERSIST) {
    run_item(w0, ra, rb, 0, w0.n_tiles);
    epilogue(w0, wr0);
  } else {
    if (cw == 1) named_bar_arrive<kBarTurn, kBarTurn + 1, 256>(true);  // consumer 0 goes first
#pragma unroll 1
    for (int u = item0;; u += item_stride) {
      WsWork wk;
      if (!ws_work<BM, BN>(p, tail, n_items, tiles_per_head, tma, u, wk)) break;
      const WsUnit& un = wk.un;
      const WsItem& w = wk.w;
      const WsRange& rg = wk.rg;
      if (rg.np == 0) continue;  // a piece with nothing to do (the producer skips it too)
      const int iwr0 = w.c.row0 + warp * 16;
      const RowSpan ira = row_span(iwr0 + (lane >> 2), w.c.rows, p.group, w.c.L, w.c.q_len,
                                   p.window);
      const RowSpan irb = row_span(iwr0 + (lane >> 2) + 8, w.c.rows, p.group, w.c.L, w.c.q_len,
                                   p.window);
      // Clean per-item state: running maxima, sums, O.
      m0 = m1 = kNegInf;
      l0 = l1 = 0.f;
#pragma unroll
      for (int nt = 0; nt < ONT; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;
      run_item(w, ira, irb, rg.j0, rg.j1);
      if (rg.np >= 2) {
        static_assert(!kWsTailSplit<D, PERSIST> || !kStaged, "pieces store from registers");
        const int v = u - tail.limit;  // the piece's record; its item's first is v - piece
        if (!tail_merge(v, v - un.piece, rg.np, un.item - tail.limit)) continue;
      }
      epilogue(w, iwr0);
    }
    // The spare grant: consumer 1 arrived once more than consumer 0 has synced.
    if (cw == 0) named_bar_sync<kBarTurn, kBarTurn + 1, 256>(true);
  }
}

}  // namespace swa_ops
#endif  // USE_ROCM
