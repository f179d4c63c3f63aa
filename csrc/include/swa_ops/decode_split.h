// The decode split, host side: how many partitions of which length tile each (sequence, kv head)
// pair's window. Plain C++ (no CUDA or torch header), so the rule can be compiled and checked on
// any host (tests/test_decode_split.py); split.h, the kernels' side, includes it for the tile
// size and the span bound.
#pragma once

#include <algorithm>
#include <cmath>

namespace swa_ops {

// Keys are processed in tiles of kTileTokens tokens; partitions and their origin are aligned to it.
constexpr int kTileTokens = 16;

// The most tokens [origin, L) can span for any L the block table allows: what the host sizes the
// grid with. Depends on shapes and W only, so one CUDA graph serves every step of a sequence.
constexpr int max_span_tokens(int window, int max_context) {
  if (window <= 0) return max_context;
  const int w = window + kTileTokens - 1;
  return w < max_context ? w : max_context;
}

struct DecodeSplit {
  int num_parts;    // partitions per (sequence, kv head, head chunk)
  int part_tokens;  // P
};

// The most tiles a partition of part_tokens can hold when spans are at most max_span tokens
// (max_span_tokens): a partition covers [begin, min(begin + P, L)) with begin >= origin, so it
// has at most min(P, L - origin) keys, and L - origin <= max_span for every L the block table
// allows.
constexpr int partition_max_tiles(int part_tokens, int max_span) {
  return ((part_tokens < max_span ? part_tokens : max_span) + kTileTokens - 1) / kTileTokens;
}

// Partitions are whole multiples of this many tokens (four 16-token tiles).
constexpr int kPartAlign = 64;

// A grid whose last wave fills less than this share of the slots is refilled (below).
constexpr double kUnderfilled = 0.9;
// Refill only grids of fewer waves than this: from 1.7 waves up the split's own costs outweighed
// the tail it saves (run 97).
constexpr double kRefillBelowWaves = 1.5;
// The refill's grid: between these many waves of slots, and partitions of at least
// SWA_OPS_REFILL_MIN_PART tokens (per-CTA start-up and the merge stay small beside the streaming;
// 256 gained nothing on W = 1024 rows in run 95).
constexpr double kRefillMinWaves = 1.75, kRefillMaxWaves = 5.25;
#ifndef SWA_OPS_REFILL_MIN_PART  // build-time, for A/B
#define SWA_OPS_REFILL_MIN_PART 512
#endif
constexpr int kRefillMinPartTokens = SWA_OPS_REFILL_MIN_PART;

// Chooses the split from host-known values only (shapes, W, SM count, the kernel's occupancy),
// never seq_lens, so the launch is CUDA-graph capturable and one graph serves a sequence as its
// context grows. `slots` is how many decode CTAs the device holds at once (SMs x CTAs per SM).
//
// Partitions multiply the (sequence, head) pairs up to at most one wave of slots. Measured on
// H100: a grid just over one wave is the worst case (its last CTAs run alone, each capped by the
// loads one CTA keeps in flight: mistral-128k took 66.5 us at 1.2 waves against 57-59 us at 0.7
// or 2.2), and extra partitions cost a merge and per-CTA start-up. So: fill up to one wave; pairs
// that already fill it get no split at all.
//
// But a wave that leaves many slots idle streams well below the bandwidth (each CTA's rate is
// capped by the loads it keeps in flight): mistral-32k's shape at batch 20 / 24 / 28 (160 / 192 /
// 224 CTAs on 264 slots, one partition each) reached 0.81 / 0.86 / 0.91 of copy bandwidth against
// 0.956 at batch 32 (run 93), and at batch 40 / 48 (1.21 / 1.45 waves, the last one's CTAs
// running alone) 0.84-0.87 / 0.90-0.95 (runs 96-97). Such a grid (fewer than kRefillBelowWaves
// waves, its last under kUnderfilled full) is refilled: split into 1.75-5.25 waves, the first
// split whose last wave is at least kUnderfilled full, else the fullest (fewest partitions on
// ties). Against SWA_OPS_WAVES sweeps it picks the best split measured at batch 20 (3 partitions,
// 1.82 waves: 0.909), 24 (4: 0.928), 28 (3: 0.935) and 48 (2: 0.951), and the second best at 40
// (3: 0.926; 4 gave 0.937). Run 97, against the one-wave rule: batch 20 138.0 -> 122.9 us, 28
// 172.4 -> 167.8, 40 266.3 -> 238.0, 48 284.5 -> 281.3, gemma3's shape at batch 40 132.5 ->
// 124.3; but batch 56 (1.70 waves) 329.2 -> 334.5 and 72 (2.18) 411.5 -> 421.5, hence the bound.
//
// waves > 0 (SWA_OPS_WAVES, for tuning) replaces the rule: up to waves x slots CTAs, no refill.
inline DecodeSplit choose_decode_split(int num_seqs, int num_kv_heads, int head_chunks,
                                       int window, int max_context, int slots, double waves) {
  DecodeSplit s;
  const int span = max_span_tokens(window, max_context);
  const long pairs = static_cast<long>(num_seqs) * num_kv_heads * head_chunks;
  long parts = 1;
  if (span > 0 && pairs > 0) {
    parts = static_cast<long>((waves > 0 ? waves : 1.0) * slots) / pairs;
    const long max_parts = (span + kPartAlign - 1) / kPartAlign;
    if (parts > max_parts) parts = max_parts;
    if (parts < 1) parts = 1;
    const double w1 = static_cast<double>(pairs * parts) / slots;
    if (waves <= 0 && w1 < kRefillBelowWaves && w1 / std::ceil(w1) < kUnderfilled) {
      const long cap = std::min<long>(max_parts, span / kRefillMinPartTokens);
      long best = parts;
      double best_fill = 0.0;
      for (long q = parts + 1; q <= cap; ++q) {
        const double w = static_cast<double>(pairs * q) / slots;
        if (w < kRefillMinWaves) continue;
        if (w > kRefillMaxWaves) break;
        const double fill = w / std::ceil(w);  // the last wave's share of its slots
        if (fill >= kUnderfilled) {
          best = q;
          break;
        }
        if (fill > best_fill) {
          best_fill = fill;
          best = q;
        }
      }
      parts = best;
    }
  }
  int p = span > 0 ? static_cast<int>((span + parts - 1) / parts) : kPartAlign;
  p = (p + kPartAlign - 1) / kPartAlign * kPartAlign;
  s.part_tokens = p;
  s.num_parts = span > 0 ? (span + p - 1) / p : 1;
  return s;
}

// ---- The pre-wait L2 prefetch (decode_mma.h, prefetch_first_tiles_l2; single-token ring kernels)
//
// Before griddepcontrol.wait, each warp may prefetch the K/V lines of its tiles [first, tiles)
// into L2, so that the next call's CTAs, resident as this grid's exit, start their DRAM stream
// during its tail. It only pays where every CTA of the grid is resident at once (one wave): a
// later wave's CTAs start long after the wait is satisfied and read their prefetched lines at
// once, as if from DRAM twice. Measured (runs 110-113, H100, graph replay, against none, twice):
// - one-wave grids with no merge whose partitions are short (at most kPrewaitShortTiles tiles:
//   gpt-oss's W = 128 spans 9) or whose caches are fp8: each warp's first kPrewaitTiles tiles.
//   gptoss 9.65 -> 8.85 us, gptoss-sinks 10.0 -> 9.15, mistral-32k-fp8 99.85 -> 98.45 (run 113);
//   but 9-tile partitions at D = 128 in two waves (64 x 8 CTAs) 17.3 -> 17.65 (run 112).
// - one-wave 16-bit split grids of at most kPrewaitSplitTiles tiles per partition (single-128k:
//   33 x 128 tokens, two tiles per warp): only each warp's second tile, and the merge triggers the
//   next kernel before its own wait (its CTAs can then start during this decode's tail):
//   single-128k 10.7 / 10.6 -> 10.3 / 10.4 (run 111), 10.8 -> 10.55 (run 113). Its first tile
//   too: 10.8 against 10.65 (run 110); without the early trigger 11.45, the early trigger alone
//   10.9 (runs 112, 115). 12-tile partitions (8 x 8 pairs x 3 of 192 tokens) 11.2 -> 11.3.
// - nothing elsewhere: every 16-bit row with long partitions lost 0.2-1.4 % with 2 tiles (phi3
//   142.8 -> 144.8, 4 tiles: 149.1; mistral-128k, split, 52.2 -> 52.7 even from the second tile);
//   prefetching only the block-table entries moved no row by more than 0.2 % (run 111).
// SWA_OPS_PREWAIT=k, SWA_OPS_PREWAIT_FIRST=j and SWA_OPS_MERGE_EARLY=0/1 replace the rule's values
// (the launcher; read per call).
struct PrewaitChoice {
  int tiles;   // each warp prefetches its tiles [first, tiles) (0: none)
  int first;
  bool early;  // the merge triggers the next kernel before its own wait
};
constexpr int kPrewaitTiles = 2;
constexpr int kPrewaitShortTiles = 12;
constexpr int kPrewaitSplitTiles = 8;

// pairs: the grid's (sequence, kv unit, head chunk) pairs, as choose_decode_split counts them (so
// it has pairs x s.num_parts CTAs); slots as there; max_span: max_span_tokens (it bounds every
// partition); fp8: the caches are fp8.
inline PrewaitChoice choose_prewait(const DecodeSplit& s, long pairs, int slots, int max_span,
                                    bool fp8) {
  PrewaitChoice c{0, 0, false};
  const int part_tiles = partition_max_tiles(s.part_tokens, max_span);
  if (pairs * s.num_parts > slots) return c;  // more than one wave
  if (s.num_parts == 1 && (fp8 || part_tiles <= kPrewaitShortTiles)) {
    c.tiles = kPrewaitTiles;
  } else if (s.num_parts > 1 && !fp8 && part_tiles <= kPrewaitSplitTiles) {
    c.tiles = kPrewaitTiles;
    c.first = 1;
    c.early = true;
  }
  return c;
}

}  // namespace swa_ops
