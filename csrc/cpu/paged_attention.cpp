// CPU launcher for swa_ops::paged_attention: validates arguments (including the data checks only
// the CPU can afford without a device sync), builds the work list and runs it with at::parallel_for.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "checks.h"
#include "cpu/attention_cpu.h"

namespace swa_ops {
namespace {

// Query rows per work item for multi-token queries: bounds the scratch and lets long chunks split
// across threads, while each K/V tile still serves chunk x group rows.
constexpr int kRowChunk = 16;

// Reads the int32 metadata once, rejects what would make the kernel read outside its tensors, and
// returns the work list.
std::vector<cpu::WorkItem> plan(const PagedAttentionDims& d, const at::Tensor& block_tables,
                                const at::Tensor& seq_lens, const at::Tensor& qsl,
                                int64_t max_query_len, int64_t sliding_window) {
  constexpr const char* op = "swa_ops.paged_attention";
  const int32_t* bt = block_tables.data_ptr<int32_t>();
  const int32_t* lens = seq_lens.data_ptr<int32_t>();
  const int32_t* starts = qsl.data_ptr<int32_t>();
  SWA_CHECK(starts[0] == 0, op, ": query_start_loc[0] must be 0, got ", starts[0]);
  SWA_CHECK(starts[d.num_seqs] == d.num_tokens, op, ": query_start_loc[-1] = ",
            starts[d.num_seqs], " must equal num_tokens = ", d.num_tokens);
  std::vector<cpu::WorkItem> items;
  for (int64_t s = 0; s < d.num_seqs; ++s) {
    const int64_t q_len = int64_t(starts[s + 1]) - starts[s];
    const int64_t len = lens[s];
    SWA_CHECK(q_len >= 0, op, ": query_start_loc must be non-decreasing, but entry ", s + 1,
              " (", starts[s + 1], ") < entry ", s, " (", starts[s], ")");
    SWA_CHECK(q_len <= max_query_len, op, ": sequence ", s, " has ", q_len,
              " query tokens, more than max_query_len = ", max_query_len);
    SWA_CHECK(len >= 0, op, ": seq_lens[", s, "] = ", len, " is negative");
    SWA_CHECK(len <= d.max_blocks_per_seq * d.block_size, op, ": seq_lens[", s, "] = ", len,
              " exceeds what block_tables can hold (", d.max_blocks_per_seq, " blocks of ",
              d.block_size, " tokens)");
    if (q_len == 0) continue;
    // seq_len 0 is a padded slot (its rows see no key and output zeros); otherwise the cached
    // tokens include this step's, so fewer than q_len of them means inconsistent metadata.
    SWA_CHECK(len == 0 || q_len <= len, op, ": sequence ", s, " has ", q_len,
              " query tokens but seq_lens[", s, "] = ", len,
              "; seq_lens must include this step's tokens");
    // Only the blocks the kernel will read: from the first row's window start to the end.
    const int64_t first_block =
        cpu::window_start(len - q_len, int(sliding_window)) / d.block_size;
    const int64_t end_block = (len + d.block_size - 1) / d.block_size;
    for (int64_t b = first_block; b < end_block; ++b) {
      const int32_t id = bt[s * block_tables.stride(0) + b];
      SWA_CHECK(id >= 0 && id < d.num_blocks, op, ": block_tables[", s, ", ", b, "] = ", id,
                " is out of range [0, ", d.num_blocks, ") for a block inside the window");
    }
    const int chunk = q_len == 1 ? 1 : kRowChunk;
    for (int64_t r = 0; r < q_len; r += chunk)
      for (int64_t h = 0; h < d.num_kv_heads; ++h)
        items.push_back({int(s), int(h), int(r), int(std::min<int64_t>(r + chunk, q_len))});
  }
  return items;
}

at::Tensor paged_attention_cpu(
    const at::Tensor& query, const at::Tensor& key_cache, const at::Tensor& value_cache,
    const at::Tensor& block_tables, const at::Tensor& seq_lens, double scale,
    int64_t sliding_window, double logits_soft_cap, const std::optional<at::Tensor>& sinks,
    const std::optional<at::Tensor>& query_start_loc, int64_t max_query_len,
    const std::optional<at::Tensor>& k_scale, const std::optional<at::Tensor>& v_scale) {
  const PagedAttentionDims d = check_paged_attention(query, key_cache, value_cache, block_tables,
                                                     seq_lens, sinks, query_start_loc,
                                                     max_query_len, k_scale, v_scale);
  const at::Tensor bt = block_tables.contiguous();
  const at::Tensor lens = seq_lens.contiguous();
  const at::Tensor qsl = query_start_loc.has_value()
                             ? query_start_loc->contiguous()
                             : at::arange(d.num_seqs + 1, seq_lens.options());
  const at::Tensor sink = sinks.has_value() ? sinks->contiguous() : at::Tensor();
  const std::vector<cpu::WorkItem> items =
      plan(d, bt, lens, qsl, max_query_len, sliding_window);

  at::Tensor out = at::empty({d.num_tokens, d.num_heads, d.head_size}, query.options());
  if (d.num_tokens == 0) return out;

  cpu::AttentionParams p{};
  p.query = query.data_ptr();
  p.key_cache = key_cache.data_ptr();
  p.value_cache = value_cache.data_ptr();
  p.out = out.data_ptr();
  p.block_tables = bt.data_ptr<int32_t>();
  p.seq_lens = lens.data_ptr<int32_t>();
  p.query_start_loc = qsl.data_ptr<int32_t>();
  p.sinks = sink.defined() ? sink.data_ptr<float>() : nullptr;
  p.q_stride_t = query.stride(0);
  p.q_stride_h = query.stride(1);
  p.k_stride_b = key_cache.stride(0);
  p.k_stride_t = key_cache.stride(1);
  p.k_stride_h = key_cache.stride(2);
  p.v_stride_b = value_cache.stride(0);
  p.v_stride_t = value_cache.stride(1);
  p.v_stride_h = value_cache.stride(2);
  p.bt_stride = bt.stride(0);
  p.num_heads = int(d.num_heads);
  p.num_kv_heads = int(d.num_kv_heads);
  p.head_size = int(d.head_size);
  p.block_size = int(d.block_size);
  p.scale = float(scale);
  p.sliding_window = int(std::max<int64_t>(sliding_window, 0));
  p.soft_cap = float(std::max(logits_soft_cap, 0.0));
  p.k_scale = d.fp8 ? k_scale->item<float>() : 1.f;
  p.v_scale = d.fp8 ? v_scale->item<float>() : 1.f;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, query.scalar_type(),
                                  "swa_ops_paged_attention_cpu", [&] {
    auto run = [&](auto kv_tag) {
      using KV = decltype(kv_tag);
      at::parallel_for(0, int64_t(items.size()), 1, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) cpu::attend<scalar_t, KV>(p, items[i]);
      });
    };
    if (d.fp8) run(c10::Float8_e4m3fn());
    else run(scalar_t());
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(swa_ops, CPU, m) {
  m.impl("paged_attention", &paged_attention_cpu);
}

}  // namespace swa_ops
