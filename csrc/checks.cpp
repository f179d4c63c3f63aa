#include "checks.h"

#include <c10/util/Exception.h>

namespace swa_ops {
namespace {

bool is_float_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16;
}

void check_same_device(const char* op, const char* name, const at::Tensor& t,
                       const char* ref_name, const at::Tensor& ref) {
  SWA_CHECK(t.device() == ref.device(), op, ": ", name, " is on ", t.device(), " but ", ref_name,
            " is on ", ref.device(), "; all tensors must be on one device");
}

// fp8 caches need both scales; scales are float32 scalars on the caches' device. Non-fp8 caches
// ignore any scales passed (serving engines pass 1.0 unconditionally).
void check_scales(const char* op, bool fp8, const char* ref_name, const at::Tensor& ref,
                  const std::optional<at::Tensor>& k_scale,
                  const std::optional<at::Tensor>& v_scale) {
  SWA_CHECK(!fp8 || (k_scale.has_value() && v_scale.has_value()), op,
            ": float8_e4m3fn caches need k_scale and v_scale (float32 scalars)");
  const std::pair<const char*, const std::optional<at::Tensor>*> scales[] = {
      {"k_scale", &k_scale}, {"v_scale", &v_scale}};
  for (const auto& [name, s] : scales) {
    if (!s->has_value()) continue;
    const at::Tensor& t = **s;
    SWA_CHECK(t.scalar_type() == at::kFloat && t.numel() == 1, op, ": ", name,
              " must be a float32 tensor with one element, got ", t.scalar_type(), " of shape ",
              t.sizes());
    check_same_device(op, name, t, ref_name, ref);
  }
}

void check_cache_pair(const char* op, const at::Tensor& key_cache, const at::Tensor& value_cache) {
  SWA_CHECK(key_cache.dim() == 4, op,
            ": key_cache must be [num_blocks, block_size, num_kv_heads, head_size], got shape ",
            key_cache.sizes());
  SWA_CHECK(value_cache.sizes() == key_cache.sizes(), op, ": value_cache shape ",
            value_cache.sizes(), " differs from key_cache shape ", key_cache.sizes());
  SWA_CHECK(value_cache.scalar_type() == key_cache.scalar_type(), op, ": value_cache dtype ",
            value_cache.scalar_type(), " differs from key_cache dtype ", key_cache.scalar_type());
  SWA_CHECK(key_cache.stride(3) == 1 && value_cache.stride(3) == 1, op,
            ": key_cache and value_cache must be contiguous in the head_size dimension");
  SWA_CHECK(key_cache.size(1) > 0, op, ": key_cache block_size must be positive");
  check_same_device(op, "value_cache", value_cache, "key_cache", key_cache);
}

}  // namespace

PagedAttentionDims check_paged_attention(
    const at::Tensor& query, const at::Tensor& key_cache, const at::Tensor& value_cache,
    const at::Tensor& block_tables, const at::Tensor& seq_lens,
    const std::optional<at::Tensor>& sinks, const std::optional<at::Tensor>& query_start_loc,
    int64_t max_query_len, const std::optional<at::Tensor>& k_scale,
    const std::optional<at::Tensor>& v_scale) {
  constexpr const char* op = "swa_ops.paged_attention";
  SWA_CHECK(query.dim() == 3, op, ": query must be [num_tokens, num_heads, head_size], got shape ",
            query.sizes());
  SWA_CHECK(is_float_dtype(query.scalar_type()), op,
            ": query must be float32, float16 or bfloat16, got ", query.scalar_type());
  SWA_CHECK(query.stride(2) == 1, op, ": query must be contiguous in the head_size dimension");
  check_cache_pair(op, key_cache, value_cache);
  check_same_device(op, "key_cache", key_cache, "query", query);

  PagedAttentionDims d;
  d.num_tokens = query.size(0);
  d.num_heads = query.size(1);
  d.head_size = query.size(2);
  d.num_blocks = key_cache.size(0);
  d.block_size = key_cache.size(1);
  d.num_kv_heads = key_cache.size(2);

  const auto cache_t = key_cache.scalar_type();
  d.fp8 = cache_t == at::kFloat8_e4m3fn;
  SWA_CHECK(d.fp8 || cache_t == query.scalar_type(), op, ": key_cache dtype ", cache_t,
            " must equal query dtype ", query.scalar_type(), " or be float8_e4m3fn");
  SWA_CHECK(key_cache.size(3) == d.head_size, op, ": head size mismatch: query has ",
            d.head_size, ", key_cache/value_cache have ", key_cache.size(3));
  SWA_CHECK(d.head_size > 0 && d.head_size % 8 == 0 && d.head_size <= kMaxHeadSize, op,
            ": unsupported head_size ", d.head_size, " (a multiple of 8 up to ", kMaxHeadSize,
            ")");
  SWA_CHECK(d.num_kv_heads > 0 && d.num_heads % d.num_kv_heads == 0, op, ": num_heads (",
            d.num_heads, ") must be a multiple of num_kv_heads (", d.num_kv_heads, ")");

  SWA_CHECK(block_tables.dim() == 2 && block_tables.scalar_type() == at::kInt, op,
            ": block_tables must be a 2-D int32 tensor [num_seqs, max_blocks_per_seq], got ",
            block_tables.scalar_type(), " of shape ", block_tables.sizes());
  SWA_CHECK(seq_lens.dim() == 1 && seq_lens.scalar_type() == at::kInt, op,
            ": seq_lens must be a 1-D int32 tensor [num_seqs], got ", seq_lens.scalar_type(),
            " of shape ", seq_lens.sizes());
  d.num_seqs = block_tables.size(0);
  d.max_blocks_per_seq = block_tables.size(1);
  SWA_CHECK(seq_lens.size(0) == d.num_seqs, op, ": seq_lens has ", seq_lens.size(0),
            " entries but block_tables has ", d.num_seqs, " rows (num_seqs)");
  check_same_device(op, "block_tables", block_tables, "query", query);
  check_same_device(op, "seq_lens", seq_lens, "query", query);

  SWA_CHECK(max_query_len >= 1, op, ": max_query_len must be >= 1, got ", max_query_len);
  if (query_start_loc.has_value()) {
    const at::Tensor& qsl = *query_start_loc;
    SWA_CHECK(qsl.dim() == 1 && qsl.scalar_type() == at::kInt, op,
              ": query_start_loc must be a 1-D int32 tensor [num_seqs + 1], got ",
              qsl.scalar_type(), " of shape ", qsl.sizes());
    SWA_CHECK(qsl.size(0) == d.num_seqs + 1, op, ": query_start_loc has ", qsl.size(0),
              " entries, expected num_seqs + 1 = ", d.num_seqs + 1);
    check_same_device(op, "query_start_loc", qsl, "query", query);
  } else {
    SWA_CHECK(d.num_tokens == d.num_seqs, op,
              ": without query_start_loc each sequence has one query token, but query has ",
              d.num_tokens, " tokens and there are ", d.num_seqs,
              " sequences; pass query_start_loc for multi-token queries");
  }
  if (sinks.has_value()) {
    const at::Tensor& s = *sinks;
    SWA_CHECK(s.dim() == 1 && s.size(0) == d.num_heads && s.scalar_type() == at::kFloat, op,
              ": sinks must be a float32 tensor [num_heads] = [", d.num_heads, "], got ",
              s.scalar_type(), " of shape ", s.sizes());
    check_same_device(op, "sinks", s, "query", query);
  }
  check_scales(op, d.fp8, "query", query, k_scale, v_scale);
  return d;
}

bool check_reshape_and_cache(
    const at::Tensor& key, const at::Tensor& value, const at::Tensor& key_cache,
    const at::Tensor& value_cache, const at::Tensor& slot_mapping,
    const std::optional<at::Tensor>& k_scale, const std::optional<at::Tensor>& v_scale) {
  constexpr const char* op = "swa_ops.reshape_and_cache";
  SWA_CHECK(key.dim() == 3, op, ": key must be [num_tokens, num_kv_heads, head_size], got shape ",
            key.sizes());
  SWA_CHECK(value.sizes() == key.sizes(), op, ": value shape ", value.sizes(),
            " differs from key shape ", key.sizes());
  SWA_CHECK(is_float_dtype(key.scalar_type()) && value.scalar_type() == key.scalar_type(), op,
            ": key and value must share a dtype among float32, float16 and bfloat16, got ",
            key.scalar_type(), " and ", value.scalar_type());
  SWA_CHECK(key.stride(2) == 1 && value.stride(2) == 1, op,
            ": key and value must be contiguous in the head_size dimension");
  check_cache_pair(op, key_cache, value_cache);
  check_same_device(op, "value", value, "key", key);
  check_same_device(op, "key_cache", key_cache, "key", key);
  SWA_CHECK(key_cache.size(2) == key.size(1), op, ": num_kv_heads mismatch: key has ",
            key.size(1), ", key_cache has ", key_cache.size(2));
  SWA_CHECK(key_cache.size(3) == key.size(2), op, ": head size mismatch: key has ", key.size(2),
            ", key_cache/value_cache have ", key_cache.size(3));
  const auto cache_t = key_cache.scalar_type();
  const bool fp8 = cache_t == at::kFloat8_e4m3fn;
  SWA_CHECK(fp8 || cache_t == key.scalar_type(), op, ": key_cache dtype ", cache_t,
            " must equal key dtype ", key.scalar_type(), " or be float8_e4m3fn");
  SWA_CHECK(slot_mapping.dim() == 1 && slot_mapping.scalar_type() == at::kLong, op,
            ": slot_mapping must be a 1-D int64 tensor [num_tokens], got ",
            slot_mapping.scalar_type(), " of shape ", slot_mapping.sizes());
  SWA_CHECK(slot_mapping.size(0) == key.size(0), op, ": slot_mapping has ", slot_mapping.size(0),
            " entries but key has ", key.size(0), " tokens");
  check_same_device(op, "slot_mapping", slot_mapping, "key", key);
  check_scales(op, fp8, "key", key, k_scale, v_scale);
  return fp8;
}

}  // namespace swa_ops
