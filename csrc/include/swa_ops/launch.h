// Host side of the decode kernels, torch-free: the split choice and the launch entry points.
// The torch launcher (csrc/cuda/paged_attention.cu) fills DecodeParams, sizes the workspace from
// choose_decode_split() and calls launch_decode<D>(); each csrc/cuda/decode_hd<D>.cu instantiates
// launch_decode<D> (with launch_impl.h), so head sizes compile in parallel and torch's headers
// are parsed once.
#pragma once

#include "swa_ops/compat.h"
#include "swa_ops/params.h"
#include "swa_ops/split.h"

namespace swa_ops {

struct DecodeSplit {
  int num_parts;    // partitions per (sequence, kv head, head chunk)
  int part_tokens;  // P
};

// Partitions are whole multiples of this many tokens (16-token tiles x 4 warps).
constexpr int kPartAlign = 64;

// Chooses the split from host-known values only (shapes, W, SM count), never seq_lens, so the
// launch is CUDA-graph capturable and one graph serves a sequence as its context grows.
// `ctas_per_sm` sets how many CTAs the grid aims for per SM (the launcher's default, or the
// SWA_OPS_CTAS_PER_SM environment variable while tuning).
inline DecodeSplit choose_decode_split(int num_seqs, int num_kv_heads, int head_chunks,
                                       int window, int max_context, int num_sms,
                                       int ctas_per_sm) {
  DecodeSplit s;
  const int span = max_span_tokens(window, max_context);
  const long pairs = static_cast<long>(num_seqs) * num_kv_heads * head_chunks;
  int parts = 1;
  if (span > 0 && pairs > 0) {
    const long target = static_cast<long>(ctas_per_sm) * num_sms;
    long want = (target + pairs - 1) / pairs;
    const long max_parts = (span + kPartAlign - 1) / kPartAlign;
    if (want > max_parts) want = max_parts;
    // Short spans whose (sequence, head) pairs already fill the chip: a merge launch would cost
    // more than the extra parallelism buys (gpt-oss: W = 128, 512 pairs).
    if (span <= 512 && pairs >= 2L * num_sms) want = 1;
    parts = static_cast<int>(want < 1 ? 1 : want);
  }
  int p = span > 0 ? (span + parts - 1) / parts : kPartAlign;
  p = (p + kPartAlign - 1) / kPartAlign * kPartAlign;
  s.part_tokens = p;
  s.num_parts = span > 0 ? (span + p - 1) / p : 1;
  return s;
}

// Launches the decode kernel (and the merge when num_parts > 1) for head size D on `stream`.
// p.dtype picks bf16/fp16; p.cap_* > 0 picks the soft-cap variant. Returns the launch error.
template <int D>
cudaError_t launch_decode(const DecodeParams& p, cudaStream_t stream);

// reshape_and_cache's kernel for every source dtype and cache kind (csrc/cuda/cache_write.cu).
cudaError_t launch_cache_write(const CacheWriteParams& p, cudaStream_t stream);

}  // namespace swa_ops
