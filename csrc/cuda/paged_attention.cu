// CUDA launchers of swa_ops' ops and their registration. The only CUDA translation unit that
// includes torch: it validates arguments (csrc/checks.h, metadata only), turns tensors into the
// plain params structs of csrc/include/swa_ops/params.h and calls the torch-free launchers.
// Everything runs on the current stream under a device guard, with no device-to-host sync and a
// launch shape derived from shapes, W and the SM count only, so both ops are graph-capturable.
// c10/cuda's stream and guard headers rather than ATen/cuda/CUDAContext.h: the same current stream
// (at::cuda::getCurrentCUDAStream is c10::cuda's), without pulling cuBLAS/cuSPARSE headers into
// the build.
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdlib>
#include <limits>
#include <string>

#include "checks.h"
#include "swa_ops/dispatch.h"
#include "swa_ops/launch.h"
#if !defined(USE_ROCM) && defined(SWA_OPS_SM90A)
#include "swa_ops/tma_map.h"
#endif

namespace swa_ops {
namespace {

constexpr const char* kAttnOp = "swa_ops.paged_attention (CUDA)";
constexpr const char* kCacheOp = "swa_ops.reshape_and_cache (CUDA)";

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Messages go through SWA_CHECK (csrc/checks.h): numbers are never streamed into TORCH_CHECK.

// Waves of resident CTAs the decode split fills: 0 = choose_decode_split's rule (one wave,
// refilled when it leaves many slots idle); SWA_OPS_WAVES > 0 (read per call, for tuning and A/B
// runs in one process) fills up to that many waves instead.
double split_waves() {
  const char* e = std::getenv("SWA_OPS_WAVES");
  const double w = e ? std::atof(e) : 0.0;
  return w > 0 ? w : 0.0;
}

// Resident decode CTAs per SM for this head size (an occupancy query, cached per device there).
int decode_slots_per_sm(int head_size) {
  int n = 0;
  dispatch_head_size(head_size, [&](auto hd) { n = decode_ctas_per_sm<decltype(hd)::value>(); });
  return n > 0 ? n : 1;
}

// The same for the kv-head-paired kernel over an fp8 (fp8 = true) or a 16-bit cache.
int decode_pair_slots_per_sm(int head_size, bool fp8) {
  int n = 0;
  dispatch_head_size(head_size,
                     [&](auto hd) { n = decode_pair_ctas_per_sm<decltype(hd)::value>(fp8); });
  return n > 0 ? n : 1;
}

// Multiprocessor count of the current device, read once per device.
int sm_count() {
  static int counts[64] = {};
  const int dev = c10::cuda::current_device();
  if (dev < 64 && counts[dev] > 0) return counts[dev];
  int n = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
  if (dev < 64) counts[dev] = n;
  return n;
}

// Multi-token queries (query_start_loc) run in the decode kernel's packed mode when a sequence's
// (token, head) rows per kv head fill at most four of its 16-row MMA tiles (speculative decoding,
// multi-token prediction): each K/V tile is then loaded once for up to 16 rows instead of once per
// query token. More rows go to the prefill kernel (use_prefill_kernel); with that forced off
// (SWA_OPS_PREFILL=never) they run one decode row per token (token_map.h). Host-known values only,
// so the choice, like the launch shape, is fixed for a captured graph.
constexpr int64_t kPackedMaxRows = 4 * 16;
bool use_packed_multi_token(int64_t max_query_len, int group) {
  return max_query_len * group <= kPackedMaxRows;
}

// Which kernel runs multi-token queries. The prefill kernel (prefill_mma.h) shares every K/V tile
// among kPrefillRows packed (token, head) rows and has no split over keys: right once a sequence
// has rows enough to fill its CTAs. Small query groups (speculative steps) stay on the decode
// kernel, whose split fills the GPU from few rows. Host-known values only (max_query_len is a
// documented bound).
// SWA_OPS_PREFILL=always|never overrides the choice (read per call: tests exercise both paths).
bool use_prefill_kernel(int64_t max_query_len, int64_t group) {
  const char* e = std::getenv("SWA_OPS_PREFILL");
  if (e != nullptr && std::string(e) == "always") return true;
  if (e != nullptr && std::string(e) == "never") return false;
  return max_query_len * group > kPackedMaxRows;  // fewer: the packed decode mode
}

// Whether this build has sm_90a code and the current device runs it (compute capability 9.x).
bool hopper_code() {
#ifdef SWA_OPS_SM90A
  static int major[64] = {};
  const int dev = c10::cuda::current_device();
  if (dev < 64 && major[dev] == 0) {
    int m = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&m, cudaDevAttrComputeCapabilityMajor, dev));
    major[dev] = m;
  }
  return dev < 64 && major[dev] == 9;
#else
  return false;
#endif
}

// The Hopper prefill variant: where hopper_code(); SWA_OPS_WGMMA=0 turns it off (read per call,
// for tests comparing the two variants).
bool use_wgmma() {
  const char* e = std::getenv("SWA_OPS_WGMMA");
  if (e != nullptr && std::string(e) == "0") return false;
  return hopper_code();
}

// Short partitions (decode_mma_kernel's ALLIN variant, split.h): when no partition of the split
// can hold more than 3 tiles per warp, every warp issues all its tiles at once into per-tile
// buffers (a smaller CTA, so the next call's CTAs fit beside this one's), prefetches them into L2
// before its predecessor ends, and the merge lets the next kernel launch before its own wait.
// Host-known values only (the split). Off unless SWA_OPS_SMALL=1 (read per call, for A/B runs
// and tests of both paths): run 25 measured no gain (gptoss 10.5 vs 10.7 us, single-128k 12.4
// vs 12.1, gptoss-sinks 11.2 both; notes/decode.md).
bool use_small_partitions() {
  const char* e = std::getenv("SWA_OPS_SMALL");
  return e != nullptr && std::string(e) == "1";
}

// An int switch read per call: `fallback` when unset, else clamped to [lo, hi].
int env_int(const char* name, int fallback, int lo, int hi) {
  const char* e = std::getenv(name);
  if (e == nullptr) return fallback;
  const int v = std::atoi(e);
  return v < lo ? lo : (v > hi ? hi : v);
}

// Single-token decode with a GQA group of <= 8 heads puts the heads on the N side of the MMAs
// (decode_mma_kernel<..., SWAP = true>, swap_frag.h: half the MMAs and exponentials per tile).
// Default on; SWA_OPS_SWAP=0 keeps the heads on the M side (read per call, for A/B runs and tests
// of both tile layouts).
bool use_swapped_tiles() {
  const char* e = std::getenv("SWA_OPS_SWAP");
  return e == nullptr || std::string(e) != "0";
}

// kv-head pairing (split.h; decode_mma_kernel<..., PAIR = true>): one CTA streams two adjacent
// kv heads of each token (rows of 2 D contiguous elements) on the swapped tile. Default: 16-bit
// caches only (D = 64: 194.2 -> 186.3 us on 32 x 16 kv heads at W 4096, run 43), not fp8, where
// it measured no faster (108.0 unpaired vs 108.1-108.5 paired on mistral-32k-fp8, run 43).
// SWA_OPS_KV_PAIR=1 pairs every shape the kernel supports (fp8 included), 0 none; read per call,
// for A/B runs and tests of both paths. The launcher pairs only what the kernel supports.
bool use_kv_pair(bool fp8) {
  const char* e = std::getenv("SWA_OPS_KV_PAIR");
  if (e == nullptr) return !fp8;
  return std::string(e) == "1";
}

// With the Hopper variant, which kernel (PrefillParams::ws): SWA_OPS_PREFILL_WS=0 prefill_mma.h's
// wgmma variant, 1 (the default) the warp-specialized kernel (prefill_ws.h), 2 that with the
// intra-warpgroup overlap (4-6 % slower than 1 in run 25; after the leaner producer, run 30: 3-4 %
// faster on gemma3-prefill, within 2 % on the other rows: notes/prefill.md). Read per call, to
// A/B them in one build.
int prefill_ws_mode() {
  const char* e = std::getenv("SWA_OPS_PREFILL_WS");
  if (e != nullptr && std::string(e) == "0") return 0;
  if (e != nullptr && std::string(e) == "2") return 2;
  return 1;
}

// The warp-specialized prefill on a persistent grid (PrefillParams::num_sms): as many CTAs as
// fit at once, each looping over (kv head, row tile) items, its producer running ahead into the
// next item's K/V and Q while the consumers finish the current one (notes/prefill.md). Default
// on; the launcher takes it only where prefill_ws.h compiles a persistent instance (D <= 128,
// without the overlap: the prefill-persist branch's runs 37/38 measured it faster there, slower
// at D = 256), elsewhere the plain grid. SWA_OPS_PREFILL_PERSIST=0 never, =1 wherever compiled
// (the default's set); read per call, to A/B both grids in one build. Returns the SM count the
// grid is sized for, 0 for the plain grid. SWA_OPS_PREFILL_PERSIST_SMS=N sizes it for N SMs
// instead (tests: a few CTAs, each looping over hundreds of items).
int prefill_persist_sms() {
  const char* e = std::getenv("SWA_OPS_PREFILL_PERSIST");
  if (e != nullptr && std::string(e) != "1") return 0;
  const char* n = std::getenv("SWA_OPS_PREFILL_PERSIST_SMS");
  const int sms = n != nullptr ? std::atoi(n) : 0;
  return sms > 0 ? sms : sm_count();
}

// TMA copies in the warp-specialized prefill (PrefillParams::kv_tma, prefill_ws.h's kWsTma): the
// K/V tiles wholly inside a key union go as 16-token box copies issued by one producer thread
// instead of 16-byte cp.async from all 128. SWA_OPS_PREFILL_TMA=0 never; unset or 1 wherever
// possible (the Hopper kernel without the overlap at head sizes 64, 128 and 256, 16-bit caches
// with blocks of at least 16 tokens, 16-byte aligned strides); "require": as 1, and an error for
// a prefill launch that cannot take it (tests use it to prove the path ran). Read per call, to
// A/B both in one build.
int prefill_tma_mode() {
  const char* e = std::getenv("SWA_OPS_PREFILL_TMA");
  if (e == nullptr) return 1;
  const std::string v(e);
  return v == "0" ? 0 : v == "require" ? 2 : 1;
}

// The tail split of the persistent warp-specialized prefill at D = 128 (prefill_ws.h,
// kWsTailSplit): the last round's leftover items are cut by keys into pieces run by the CTAs that
// would idle, merged by the last piece of each. Default on; SWA_OPS_PREFILL_TAIL_SPLIT=0 turns it
// off (read per call, for A/B runs and tests of both).
bool prefill_tail_split() {
  const char* e = std::getenv("SWA_OPS_PREFILL_TAIL_SPLIT");
  return e == nullptr || std::string(e) != "0";
}

// The decode kernel's fp8 TMA ring (DecodeParams::kv_tma, decode_mma.h): each 16-token tile of
// K and of V is one box copy from one lane instead of 16-byte cp.async from every lane.
// SWA_OPS_DECODE_TMA=0 turns it off (read per call, for A/B runs and tests of both).
bool use_decode_tma() {
  const char* e = std::getenv("SWA_OPS_DECODE_TMA");
  return e == nullptr || std::string(e) != "0";
}

int32_t checked_int(int64_t v, const char* what) {
  SWA_CHECK(v >= 0 && v <= std::numeric_limits<int32_t>::max(), kAttnOp, ": ", what, " = ", v,
            " exceeds the 32-bit range the kernels index with");
  return static_cast<int32_t>(v);
}

// The fields DecodeParams and PrefillParams share (same names, same meaning): tensors, strides,
// sizes, the window and the logit transform, filled once for either launch.
struct AttentionArgs {
  const at::Tensor& q;
  const at::Tensor& key_cache;
  const at::Tensor& value_cache;
  const at::Tensor& block_tables;
  const at::Tensor& seq_lens;
  const at::Tensor* sinks;  // nullptr: none
  const std::optional<at::Tensor>& k_scale;
  const std::optional<at::Tensor>& v_scale;
  at::Tensor& out;
  const PagedAttentionDims& d;
  int group;
  int window;
  double scale;
  double logits_soft_cap;
};

template <typename P>
void fill_shared_params(P& p, const AttentionArgs& a) {
  constexpr double kLog2e = 1.4426950408889634;
  p.q = a.q.data_ptr();
  p.k_cache = a.key_cache.data_ptr();
  p.v_cache = a.value_cache.data_ptr();
  p.block_tables = a.block_tables.data_ptr<int>();
  p.seq_lens = a.seq_lens.data_ptr<int>();
  p.sinks = a.sinks != nullptr ? a.sinks->data_ptr<float>() : nullptr;
  if (a.d.fp8) {  // checked present, float32 scalars on this device (check_paged_attention)
    p.k_scale = a.k_scale->data_ptr<float>();
    p.v_scale = a.v_scale->data_ptr<float>();
  }
  p.out = a.out.data_ptr();
  p.q_stride_tok = a.q.stride(0);
  p.q_stride_head = a.q.stride(1);
  p.kv_stride_block = a.key_cache.stride(0);
  p.kv_stride_tok = a.key_cache.stride(1);
  p.kv_stride_head = a.key_cache.stride(2);
  p.bt_stride = a.block_tables.stride(0);
  p.num_heads = checked_int(a.d.num_heads, "num_heads");
  p.num_kv_heads = static_cast<int>(a.d.num_kv_heads);
  p.head_size = static_cast<int>(a.d.head_size);
  p.group = a.group;
  p.block_size = static_cast<int>(a.d.block_size);
  p.log2_block_size = 0;
  while ((1 << p.log2_block_size) < p.block_size) ++p.log2_block_size;
  p.max_blocks_per_seq = checked_int(a.d.max_blocks_per_seq, "max_blocks_per_seq");
  p.window = a.window;
  p.scale_log2 = static_cast<float>(a.scale * kLog2e);
  if (a.logits_soft_cap > 0) {
    p.cap_pre = static_cast<float>(a.scale / a.logits_soft_cap);
    p.cap_post = static_cast<float>(a.logits_soft_cap * kLog2e);
  }
  p.dtype = a.q.scalar_type() == at::kBFloat16 ? DType::kBFloat16 : DType::kFloat16;
  p.kv_fp8 = a.d.fp8;
}

at::Tensor paged_attention_cuda(const at::Tensor& query, const at::Tensor& key_cache,
                                const at::Tensor& value_cache, const at::Tensor& block_tables,
                                const at::Tensor& seq_lens, double scale, int64_t sliding_window,
                                double logits_soft_cap, const std::optional<at::Tensor>& sinks,
                                const std::optional<at::Tensor>& query_start_loc,
                                int64_t max_query_len, const std::optional<at::Tensor>& k_scale,
                                const std::optional<at::Tensor>& v_scale) {
  const PagedAttentionDims d =
      check_paged_attention(query, key_cache, value_cache, block_tables, seq_lens, sinks,
                            query_start_loc, max_query_len, k_scale, v_scale);
  // Features the CUDA path does not implement fail loudly, naming the argument, rather than
  // computing something else. Multi-token queries (query_start_loc) take the packed decode mode
  // or the prefill kernel (use_packed_multi_token / use_prefill_kernel below).
  const auto dt = query.scalar_type();
  SWA_CHECK(dt == at::kHalf || dt == at::kBFloat16, kAttnOp,
            ": query must be float16 or bfloat16 on CUDA, got ", dt);
  SWA_CHECK(value_cache.strides() == key_cache.strides(), kAttnOp,
            ": value_cache strides ", value_cache.strides(),
            " must equal key_cache strides ", key_cache.strides());
  const int64_t vec = d.fp8 ? 16 : 8;  // elements per 16-byte copy
  SWA_CHECK(aligned16(key_cache.data_ptr()) && aligned16(value_cache.data_ptr()) &&
                key_cache.stride(0) % vec == 0 && key_cache.stride(1) % vec == 0 &&
                key_cache.stride(2) % vec == 0,
            kAttnOp, ": key_cache/value_cache rows must be 16-byte aligned (strides ",
            key_cache.strides(), ")");
  SWA_CHECK((d.block_size & (d.block_size - 1)) == 0, kAttnOp,
            ": block_size must be a power of two on CUDA, got ", d.block_size);

  SWA_CHECK(dispatch_head_size(static_cast<int>(d.head_size), [](auto) {}), kAttnOp,
            ": head_size ", d.head_size, " is not compiled into this build (compiled:",
            compiled_head_sizes(), ")");

  c10::cuda::CUDAGuard guard(query.device());
  at::Tensor out = at::empty({d.num_tokens, d.num_heads, d.head_size}, query.options());
  const bool multi = query_start_loc.has_value();
  const int64_t rows = multi ? d.num_tokens : d.num_seqs;  // output rows (x num_heads)
  if (rows == 0 || d.num_heads == 0) return out;
  if (multi && d.num_seqs == 0) return out.zero_();  // no sequence: no token sees a key

  // Small tensors are made contiguous/aligned here (no copy when they already are); the caches
  // are never copied.
  at::Tensor q = query;
  if (!aligned16(q.data_ptr()) || q.stride(0) % 8 != 0 || q.stride(1) % 8 != 0)
    q = query.contiguous();
  const at::Tensor bt = block_tables.stride(1) == 1 ? block_tables : block_tables.contiguous();
  const at::Tensor lens = seq_lens.contiguous();
  at::Tensor sink_t;
  if (sinks.has_value()) sink_t = sinks->contiguous();

  // W > 0 limits each query to its last W keys; anything <= 0 means plain causal. Windows past
  // 2^30 tokens behave as no window at all (no cache is that long).
  const int window =
      sliding_window > 0 ? static_cast<int>(std::min<int64_t>(sliding_window, 1 << 30)) : 0;
  const int group = static_cast<int>(d.num_heads / d.num_kv_heads);
  const AttentionArgs args{q, key_cache, value_cache, bt, lens,
                           sinks.has_value() ? &sink_t : nullptr, k_scale, v_scale, out, d,
                           group, window, scale, logits_soft_cap};
  if (multi && use_prefill_kernel(max_query_len, group)) {
    const int64_t grid = prefill_grid_ctas(d.num_tokens, d.num_seqs, group);
    checked_int(d.num_tokens * d.num_heads, "num_tokens * num_heads");
    const at::Tensor qsl = query_start_loc->contiguous();
    at::Tensor cta_start = at::empty({d.num_seqs + 1}, lens.options());
    PrefillParams pp{};
    pp.num_seqs = checked_int(d.num_seqs, "num_seqs");
    pp.num_tokens = checked_int(d.num_tokens, "num_tokens");
    fill_shared_params(pp, args);
    checked_int(d.max_blocks_per_seq * d.block_size, "max_blocks_per_seq * block_size");
    pp.query_start_loc = qsl.data_ptr<int>();
    pp.cta_start = cta_start.data_ptr<int>();
    pp.grid_ctas = checked_int(grid, "prefill CTAs per kv head");
    pp.wgmma = use_wgmma();
    pp.ws = prefill_ws_mode();
    pp.num_sms = pp.wgmma && pp.ws != 0 ? prefill_persist_sms() : 0;
    const int tma_mode = prefill_tma_mode();
    bool tma = false;
#if !defined(USE_ROCM) && defined(SWA_OPS_SM90A)
    // The instances that copy by TMA: the warp-specialized kernel at D = 64, 128, 256
    // (prefill_ws.h: kWsTma), 16-bit caches; the maps need blocks of at least 16 tokens.
    const bool tma_d = pp.head_size == 64 || pp.head_size == 128 || pp.head_size == 256;
    if (tma_mode != 0 && pp.wgmma && pp.ws == 1 && tma_d && !pp.kv_fp8 &&
        pp.block_size >= kTmaBoxTokens)
      tma = encode_kv_maps(pp, 2, d.num_blocks, CU_TENSOR_MAP_L2_PROMOTION_L2_256B);
#endif
    // The tail split's records and counters: one per CTA of the D = 128 persistent grid (one
    // CTA per SM there), sized from the SM count the grid is sized from.
    at::Tensor tail_ws, tail_count;
    if (prefill_tail_split() && pp.wgmma && pp.ws == 1 && pp.num_sms > 0 &&
        pp.head_size == 128 && !pp.kv_fp8) {
      const int64_t slots = pp.num_sms;
      tail_ws = at::empty({slots * tail_record_floats(pp.head_size) * kTailRecordThreads},
                          lens.options().dtype(at::kFloat));
      tail_count = at::empty({slots}, lens.options());
      pp.tail_ws = tail_ws.data_ptr<float>();
      pp.tail_count = tail_count.data_ptr<int>();
      pp.tail_slots = static_cast<int>(slots);
    }
    SWA_CHECK(tma || tma_mode != 2, kAttnOp,
              ": SWA_OPS_PREFILL_TMA=require, but this prefill launch cannot copy by TMA (it needs "
              "the Hopper warp-specialized kernel without the overlap, head_size 64, 128 or 256, "
              "a 16-bit cache with block_size >= 16 and 16-byte aligned strides; head_size = ",
              std::to_string(pp.head_size), ", block_size = ", std::to_string(pp.block_size), ")");
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    cudaError_t err = cudaSuccess;
    dispatch_head_size(pp.head_size, [&](auto hd) {  // compiled: checked on entry
      err = launch_prefill<decltype(hd)::value>(pp, stream);
    });
    C10_CUDA_CHECK(err);
    return out;
  }
  const int num_sms = sm_count();
  const int64_t max_context = d.max_blocks_per_seq * d.block_size;
  const int head_chunks = (group + 15) / 16;
  // Packed multi-token mode: the grid runs over (sequence, kv head, 16-row chunk of its
  // ceil(max_query_len * group / 16)), and a chunk's keys span up to max_query_len - 1 more than a
  // window. Otherwise over (decode row, kv head, head chunk), a decode row being a sequence or,
  // for multi-token queries, a query token.
  const bool packed = multi && use_packed_multi_token(max_query_len, group);
  const int64_t grid_rows = packed ? d.num_seqs : rows;
  const int grid_chunks =
      packed ? static_cast<int>((max_query_len * group + 15) / 16) : head_chunks;
  // The short-partition variant (SWA_OPS_SMALL=1, 16-bit caches, D <= 128) replaces the ring
  // kernels it applies to; pairing is not combined with it.
  const bool small = !packed && !d.fp8 && d.head_size <= 128 && use_small_partitions();
  // kv-head pairing: single-token rows on the swapped tile (per-token multi-token rows too),
  // groups of <= 4 (2 g columns of 8), an even number of kv heads (odd counts run unpaired), the
  // two kv heads' rows adjacent in the cache (kv-head stride = head_size; value_cache's strides
  // equal key_cache's, checked above), head sizes the kernel pairs (split.h). Host-known only.
  const bool kv_pair = !packed && !small && group <= kMaxPairGroup && d.num_kv_heads % 2 == 0 &&
                       key_cache.stride(2) == d.head_size &&
                       kv_pair_head_size(static_cast<int>(d.head_size), d.fp8) &&
                       use_swapped_tiles() && use_kv_pair(d.fp8);
  // The split is sized from the grid as launched (kv-head pairs when paired) and from that
  // kernel's own occupancy.
  const int kv_units = checked_int(kv_pair ? d.num_kv_heads / 2 : d.num_kv_heads, "num_kv_heads");
  const int slots = num_sms * (kv_pair ? decode_pair_slots_per_sm(static_cast<int>(d.head_size),
                                                                   d.fp8)
                                       : decode_slots_per_sm(static_cast<int>(d.head_size)));
  const int max_ctx = checked_int(max_context, "max_blocks_per_seq * block_size");
  const DecodeSplit split = choose_decode_split(
      checked_int(grid_rows, packed ? "num_seqs" : multi ? "num_tokens" : "num_seqs"), kv_units,
      grid_chunks, packed ? packed_split_window(window, static_cast<int>(max_query_len)) : window,
      max_ctx, slots, split_waves());

  DecodeParams p{};
  fill_shared_params(p, args);
  at::Tensor ws;
  if (split.num_parts > 1) {
    // Workspace sized from host-known values: [rows * parts] x (D outputs + max + sum).
    const int64_t slots = rows * d.num_heads * split.num_parts;
    ws = at::empty({slots * (d.head_size + 2)}, query.options().dtype(at::kFloat));
    p.part_out = ws.data_ptr<float>();
    p.part_max = p.part_out + slots * d.head_size;
    p.part_sum = p.part_max + slots;
  }
  p.num_seqs = static_cast<int>(grid_rows);
  p.head_chunks = grid_chunks;
  p.num_parts = split.num_parts;
  p.part_tokens = split.part_tokens;
  p.num_blocks = checked_int(key_cache.size(0), "num_blocks");
  // The longest span, which bounds every partition (split.h).
  const int max_span = max_span_tokens(window, max_ctx);
  if (small) {
    // The most tiles a partition holds: min(P, the longest span) over 16 (split.h).
    p.allin_tiles = allin_max_tiles(split.part_tokens, max_span);
    // The speculative prefetch reads seq_lens and the block table before the predecessor ends;
    // per-token multi-token rows read a token map the predecessor writes: no prefetch there.
    p.prewait_tiles = p.allin_tiles > 0 && !multi ? kAllInMaxMine : 0;
    p.early_trigger = p.allin_tiles > 0;
  } else if (!packed && !multi) {
    // The pre-wait L2 prefetch (decode_split.h's rule; SWA_OPS_PREWAIT / _FIRST /
    // SWA_OPS_MERGE_EARLY replace its values, for A/B runs and tests).
    const PrewaitChoice pw =
        choose_prewait(split, static_cast<long>(grid_rows) * kv_units * grid_chunks, slots,
                       max_span, d.fp8);
    p.prewait_tiles = env_int("SWA_OPS_PREWAIT", pw.tiles, 0, 8);
    p.prewait_first = env_int("SWA_OPS_PREWAIT_FIRST", pw.first, 0, 8);
    p.early_trigger = p.prewait_tiles > 0 && env_int("SWA_OPS_MERGE_EARLY", pw.early, 0, 1) == 1;
  }
  p.swap_ab = !packed && p.allin_tiles == 0 && group <= 8 && use_swapped_tiles();
#ifdef SWA_OPS_TIMELINE  // diagnostics build only (timeline.h): the record buffer's address
  const char* tl = std::getenv("SWA_OPS_TIMELINE_PTR");
  p.timeline = tl != nullptr ? reinterpret_cast<unsigned long long*>(std::strtoull(tl, nullptr, 0))
                             : nullptr;
#endif
  p.kv_pair = kv_pair && p.swap_ab;  // (kv_pair implies swap_ab: group <= 4, no ALLIN)
#if !defined(USE_ROCM) && defined(SWA_OPS_SM90A)
  // The fp8 TMA ring (decode_mma_kernel<..., TMA = true>): fp8 caches at head size 128 on the
  // swapped, unpaired ring, blocks of at least 16 tokens, on compute capability 9.x.
  if (d.fp8 && d.head_size == 128 && p.swap_ab && !p.kv_pair && d.block_size >= kTmaBoxTokens &&
      use_decode_tma() && hopper_code())
    encode_kv_maps(p, 1, d.num_blocks, CU_TENSOR_MAP_L2_PROMOTION_L2_128B);
#endif

  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor token_map, packed_qsl;
  if (packed) {
    packed_qsl = query_start_loc->contiguous();
    p.query_start_loc = packed_qsl.data_ptr<int>();
    p.num_tokens = checked_int(d.num_tokens, "num_tokens");
    p.max_query_len = static_cast<int>(max_query_len);
    checked_int(d.num_seqs * max_query_len * d.num_heads,
                "num_seqs * max_query_len * num_heads");  // the merge's grid
  } else if (multi) {
    // Per token: its sequence and position + 1, computed on the device (no host sync).
    const at::Tensor qsl = query_start_loc->contiguous();
    token_map = at::empty({2, d.num_tokens}, lens.options());
    TokenMapParams tp{};
    tp.query_start_loc = qsl.data_ptr<int>();
    tp.seq_lens = lens.data_ptr<int>();
    tp.seq_of_token = token_map.data_ptr<int>();
    tp.token_lens = tp.seq_of_token + d.num_tokens;
    tp.num_seqs = static_cast<int>(d.num_seqs);
    tp.num_tokens = static_cast<int>(d.num_tokens);
    C10_CUDA_CHECK(launch_token_map(tp, stream));
    p.seq_of_token = tp.seq_of_token;
    p.seq_lens = tp.token_lens;
  }
  cudaError_t err = cudaSuccess;
  dispatch_head_size(p.head_size, [&](auto hd) {  // compiled: checked on entry
    err = launch_decode<decltype(hd)::value>(p, stream);
  });
  C10_CUDA_CHECK(err);
  return out;
}

void reshape_and_cache_cuda(const at::Tensor& key, const at::Tensor& value, at::Tensor& key_cache,
                            at::Tensor& value_cache, const at::Tensor& slot_mapping,
                            const std::optional<at::Tensor>& k_scale,
                            const std::optional<at::Tensor>& v_scale) {
  const bool fp8 =
      check_reshape_and_cache(key, value, key_cache, value_cache, slot_mapping, k_scale, v_scale);
  SWA_CHECK(value_cache.strides() == key_cache.strides(), kCacheOp, ": value_cache strides ",
            value_cache.strides(), " must equal key_cache strides ",
            key_cache.strides());
  SWA_CHECK(key.size(0) <= std::numeric_limits<int32_t>::max(), kCacheOp,
            ": too many tokens for one launch: ", key.size(0));
  c10::cuda::CUDAGuard guard(key.device());
  if (key.size(0) == 0 || key.numel() == 0) return;
  const at::Tensor slots = slot_mapping.contiguous();

  CacheWriteParams p{};
  p.key = key.data_ptr();
  p.value = value.data_ptr();
  p.k_cache = key_cache.data_ptr();
  p.v_cache = value_cache.data_ptr();
  p.slot_mapping = slots.data_ptr<int64_t>();
  p.k_scale = fp8 ? k_scale->data_ptr<float>() : nullptr;
  p.v_scale = fp8 ? v_scale->data_ptr<float>() : nullptr;
  p.key_stride_tok = key.stride(0);
  p.key_stride_head = key.stride(1);
  p.value_stride_tok = value.stride(0);
  p.value_stride_head = value.stride(1);
  p.cache_stride_block = key_cache.stride(0);
  p.cache_stride_tok = key_cache.stride(1);
  p.cache_stride_head = key_cache.stride(2);
  p.num_tokens = static_cast<int>(key.size(0));
  p.num_kv_heads = static_cast<int>(key.size(1));
  p.head_size = static_cast<int>(key.size(2));
  p.block_size = static_cast<int>(key_cache.size(1));
  p.src_is_float32 = key.scalar_type() == at::kFloat;
  p.elem_bytes = static_cast<int>(key.element_size());
  p.dtype = key.scalar_type() == at::kBFloat16 ? DType::kBFloat16 : DType::kFloat16;
  p.cache_fp8 = fp8;
  C10_CUDA_CHECK(launch_cache_write(p, c10::cuda::getCurrentCUDAStream()));
}

}  // namespace
}  // namespace swa_ops

TORCH_LIBRARY_IMPL(swa_ops, CUDA, m) {
  m.impl("paged_attention", &swa_ops::paged_attention_cuda);
  m.impl("reshape_and_cache", &swa_ops::reshape_and_cache_cuda);
}
