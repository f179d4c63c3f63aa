// CPU launcher for swa_ops::reshape_and_cache: copies (or quantizes to fp8) each token's key and
// value into its cache slot; slot -1 means "skip this token" (padding, or a token not cached).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "checks.h"

namespace swa_ops {
namespace {

// fp8 e4m3fn has no infinity: values are saturated to its largest finite magnitude, matching
// swa_ops.reference.quantize_fp8 bit for bit (fp32 division, then round-to-nearest-even).
constexpr float kFp8Max = 448.f;

template <typename T, typename C>
void copy_row(const T* src, C* dst, int64_t n, float scale) {
  if constexpr (std::is_same_v<C, c10::Float8_e4m3fn>) {
    for (int64_t d = 0; d < n; ++d)
      dst[d] = C(std::clamp(static_cast<float>(src[d]) / scale, -kFp8Max, kFp8Max));
  } else {
    std::copy(src, src + n, dst);
  }
}

void reshape_and_cache_cpu(const at::Tensor& key, const at::Tensor& value, at::Tensor& key_cache,
                           at::Tensor& value_cache, const at::Tensor& slot_mapping,
                           const std::optional<at::Tensor>& k_scale,
                           const std::optional<at::Tensor>& v_scale) {
  constexpr const char* op = "swa_ops.reshape_and_cache";
  const bool fp8 =
      check_reshape_and_cache(key, value, key_cache, value_cache, slot_mapping, k_scale, v_scale);
  const at::Tensor slots = slot_mapping.contiguous();
  const int64_t* slot = slots.data_ptr<int64_t>();
  const int64_t num_tokens = key.size(0), num_heads = key.size(1), head_size = key.size(2);
  const int64_t block_size = key_cache.size(1);
  const int64_t num_slots = key_cache.size(0) * block_size;
  for (int64_t t = 0; t < num_tokens; ++t)
    SWA_CHECK(slot[t] >= -1 && slot[t] < num_slots, op, ": slot_mapping[", t, "] = ", slot[t],
              " is out of range [-1, ", num_slots, ")");
  const float ks = fp8 ? k_scale->item<float>() : 1.f;
  const float vs = fp8 ? v_scale->item<float>() : 1.f;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, key.scalar_type(),
                                  "swa_ops_reshape_and_cache_cpu", [&] {
    auto run = [&](auto cache_tag) {
      using C = decltype(cache_tag);
      const scalar_t* k = key.data_ptr<scalar_t>();
      const scalar_t* v = value.data_ptr<scalar_t>();
      C* kc = static_cast<C*>(key_cache.data_ptr());
      C* vc = static_cast<C*>(value_cache.data_ptr());
      at::parallel_for(0, num_tokens, 16, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          if (slot[t] < 0) continue;
          const int64_t b = slot[t] / block_size, off = slot[t] % block_size;
          for (int64_t h = 0; h < num_heads; ++h) {
            copy_row(k + t * key.stride(0) + h * key.stride(1),
                     kc + b * key_cache.stride(0) + off * key_cache.stride(1) +
                         h * key_cache.stride(2),
                     head_size, ks);
            copy_row(v + t * value.stride(0) + h * value.stride(1),
                     vc + b * value_cache.stride(0) + off * value_cache.stride(1) +
                         h * value_cache.stride(2),
                     head_size, vs);
          }
        }
      });
    };
    if (fp8) run(c10::Float8_e4m3fn());
    else run(scalar_t());
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(swa_ops, CPU, m) {
  m.impl("reshape_and_cache", &reshape_and_cache_cpu);
}

}  // namespace swa_ops
