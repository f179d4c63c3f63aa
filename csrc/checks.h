// Argument validation shared by every backend's launcher (CPU, CUDA, HIP). These checks read only
// metadata (shapes, dtypes, devices), never tensor data, so they cost no device sync and are safe
// inside CUDA-graph capture. Each failure is a c10::Error (Python: RuntimeError) that names the
// argument. The fake kernels in swa_ops/ops.py state the same rules for tracing.
#pragma once
#include <ATen/core/Tensor.h>

#include <optional>
#include <string>

namespace swa_ops {

// Error messages are built here as one std::string and handed to TORCH_CHECK whole, never by
// streaming numbers into it: on the GPU machine the extension carries parts of libstdc++
// statically, and std::ostream's insertion of an int64 from that copy segfaulted
// (notes/decode.md). With a single std::string argument c10::str returns it as is, no ostream.
namespace msg_detail {
inline std::string piece(const char* s) { return s; }
inline std::string piece(const std::string& s) { return s; }
inline std::string piece(int64_t v) { return std::to_string(v); }
inline std::string piece(c10::ScalarType t) { return c10::toString(t); }
inline std::string piece(const c10::Device& d) { return d.str(); }
inline std::string piece(c10::IntArrayRef a) {
  std::string s = "[";
  for (size_t i = 0; i < a.size(); ++i) s += (i ? ", " : "") + std::to_string(a[i]);
  return s + "]";
}
}  // namespace msg_detail

template <typename... Args>
std::string message(const Args&... args) {
  std::string s;
  ((s += msg_detail::piece(args)), ...);
  return s;
}

}  // namespace swa_ops

// TORCH_CHECK whose message pieces (strings, integers, dtypes, devices, shapes) are joined by
// swa_ops::message; evaluated only when the check fails.
#define SWA_CHECK(cond, ...) TORCH_CHECK(cond, ::swa_ops::message(__VA_ARGS__))

namespace swa_ops {

// Sizes every paged_attention backend needs, read off validated arguments.
struct PagedAttentionDims {
  int64_t num_tokens;          // query.size(0)
  int64_t num_heads;           // query.size(1)
  int64_t head_size;           // query.size(2) == key_cache.size(3)
  int64_t num_blocks;          // key_cache.size(0)
  int64_t block_size;          // key_cache.size(1)
  int64_t num_kv_heads;        // key_cache.size(2); divides num_heads
  int64_t num_seqs;            // block_tables.size(0) == seq_lens.numel()
  int64_t max_blocks_per_seq;  // block_tables.size(1)
  bool fp8;                    // caches are float8_e4m3fn (k_scale/v_scale present)
};

PagedAttentionDims check_paged_attention(
    const at::Tensor& query, const at::Tensor& key_cache, const at::Tensor& value_cache,
    const at::Tensor& block_tables, const at::Tensor& seq_lens,
    const std::optional<at::Tensor>& sinks, const std::optional<at::Tensor>& query_start_loc,
    int64_t max_query_len, const std::optional<at::Tensor>& k_scale,
    const std::optional<at::Tensor>& v_scale);

// Largest head size any backend supports; the CPU path takes every multiple of 8 up to it.
constexpr int64_t kMaxHeadSize = 256;

// Validates reshape_and_cache's arguments; returns true when the caches are fp8.
bool check_reshape_and_cache(
    const at::Tensor& key, const at::Tensor& value, const at::Tensor& key_cache,
    const at::Tensor& value_cache, const at::Tensor& slot_mapping,
    const std::optional<at::Tensor>& k_scale, const std::optional<at::Tensor>& v_scale);

}  // namespace swa_ops
