// Multi-token queries on the decode kernel: each query token becomes one decode row.
//
// Query row i of a sequence with query length q and seq_len L sits at position L - q + i and sees
// keys [max(0, pos - W + 1), pos], which is exactly a decode step of a sequence of length pos + 1
// on the same block table. So the token map gives every token its sequence (for the block-table
// row) and that length, on the device (no host sync, graph-capturable), and the decode kernel
// runs over num_tokens rows. Each token re-reads its own window: correct for any query length, but
// K/V tiles are not shared across a sequence's query rows. The launcher uses this path only when
// max_query_len * group > 64; shorter queries take the decode kernel's packed mode
// (decode_mma.h), which shares each K/V tile among up to 16 (token, head) rows.
#pragma once

#include "swa_ops/compat.h"
#include "swa_ops/params.h"

namespace swa_ops {

__global__ void token_map_kernel(const TokenMapParams p) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= p.num_tokens) return;
  // Last sequence whose query range starts at or before t (query_start_loc is non-decreasing).
  int lo = 0, hi = p.num_seqs;  // answer in [0, num_seqs)
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (p.query_start_loc[mid] <= t) lo = mid; else hi = mid;
  }
  const int q_begin = p.query_start_loc[lo], q_end = p.query_start_loc[lo + 1];
  int len = 0;
  if (t >= q_begin && t < q_end) {
    const int pos = p.seq_lens[lo] - (q_end - q_begin) + (t - q_begin);  // this row's position
    len = pos >= 0 ? pos + 1 : 0;
  }
  p.seq_of_token[t] = lo;
  p.token_lens[t] = len;  // tokens outside every query range see nothing: zeros, as the reference
}

}  // namespace swa_ops
