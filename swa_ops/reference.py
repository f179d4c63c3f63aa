"""Plain-PyTorch semantics of swa_ops' operators: the spec every kernel is tested against.

Written for clarity, not speed: one sequence at a time, blocks gathered explicitly, masks built from
absolute positions, fp32 math. It follows ../DESIGN.md ("The ops") point by point:

* Query row ``i`` of a sequence with query length ``q`` and ``seq_len`` ``L`` sits at absolute position
  ``p = L - q + i`` and attends to keys ``k`` with ``max(0, p - W + 1) <= k <= p`` (W = sliding_window
  when > 0; otherwise plain causal). This is Hugging Face's ``sliding_window=W``, FlashAttention's
  ``window_size=(W - 1, 0)`` and FlashInfer's ``window_left=W - 1``.
* Per logit: ``s = scale * q.k``, then the soft-cap ``cap * tanh(s / cap)`` when cap > 0, then the mask.
* Sinks: one extra logit per head in each row's softmax denominator; it carries no value.
* A row that sees no key outputs zeros.
* Block-table entries of blocks wholly before a sequence's window are never read (they may be -1).
* fp8 (float8_e4m3fn) caches store ``x / scale`` saturated to +-448; reading multiplies by the scale.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0  # largest finite float8_e4m3fn


def quantize_fp8(x: Tensor, scale: Tensor) -> Tensor:
    """``x / scale`` rounded to the nearest float8_e4m3fn, saturating (fp8 e4m3fn has no infinity)."""
    return (x.float() / scale.float()).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)


def dequantize(cache: Tensor, scale: Optional[Tensor]) -> Tensor:
    """fp32 values of a cache slice; fp8 entries are multiplied by their scale."""
    if cache.dtype == FP8_DTYPE:
        return cache.float() * scale.float()
    return cache.float()


def window_start(pos: int, sliding_window: int) -> int:
    """First key position visible from absolute position ``pos``."""
    return max(0, pos - sliding_window + 1) if sliding_window > 0 else 0


def paged_attention(
    query: Tensor,
    key_cache: Tensor,
    value_cache: Tensor,
    block_tables: Tensor,
    seq_lens: Tensor,
    scale: float,
    sliding_window: int = 0,
    logits_soft_cap: float = 0.0,
    sinks: Optional[Tensor] = None,
    query_start_loc: Optional[Tensor] = None,
    max_query_len: int = 1,
    k_scale: Optional[Tensor] = None,
    v_scale: Optional[Tensor] = None,
) -> Tensor:
    """Reference for ``torch.ops.swa_ops.paged_attention``; same arguments, same result."""
    del max_query_len  # a launch hint for kernels; the semantics do not depend on it
    num_tokens, num_heads, head_size = query.shape
    _, block_size, num_kv_heads, _ = key_cache.shape
    group = num_heads // num_kv_heads
    num_seqs = block_tables.shape[0]
    if query_start_loc is None:
        query_start_loc = torch.arange(num_seqs + 1, dtype=torch.int32)
    qsl = query_start_loc.tolist()
    lens = seq_lens.tolist()
    out = torch.zeros(num_tokens, num_heads, head_size, dtype=torch.float32, device=query.device)

    for s in range(num_seqs):
        q_begin, q_end, seq_len = qsl[s], qsl[s + 1], lens[s]
        q_len = q_end - q_begin
        if q_len == 0 or seq_len == 0:
            continue
        # Only blocks from the one holding the earliest visible key onward are touched.
        first_key = window_start(seq_len - q_len, sliding_window)
        first_block = first_key // block_size
        num_blocks_used = (seq_len + block_size - 1) // block_size
        blocks = block_tables[s, first_block:num_blocks_used].long()
        k = dequantize(key_cache[blocks], k_scale).reshape(-1, num_kv_heads, head_size)
        v = dequantize(value_cache[blocks], v_scale).reshape(-1, num_kv_heads, head_size)
        key_pos = torch.arange(first_block * block_size, first_block * block_size + k.shape[0],
                               device=query.device)

        # Head h reads kv head h // group: view the query heads as [kv_head, group].
        q = query[q_begin:q_end].float().view(q_len, num_kv_heads, group, head_size)
        logits = scale * torch.einsum("qngd,knd->ngqk", q, k).reshape(num_heads, q_len, -1)
        if logits_soft_cap > 0:
            logits = logits_soft_cap * torch.tanh(logits / logits_soft_cap)
        row_pos = torch.arange(seq_len - q_len, seq_len, device=query.device)
        visible = key_pos[None, :] <= row_pos[:, None]
        if sliding_window > 0:
            visible &= key_pos[None, :] > row_pos[:, None] - sliding_window
        logits = logits.masked_fill(~visible, float("-inf"))  # mask after the cap

        row_max = logits.amax(dim=-1, keepdim=True)  # [heads, q_len, 1]
        if sinks is not None:
            sink = sinks.float().view(num_heads, 1, 1)
            row_max = torch.maximum(row_max, sink)
        row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
        weights = torch.exp(logits - row_max)
        denom = weights.sum(dim=-1, keepdim=True)
        if sinks is not None:
            denom = denom + torch.exp(sink - row_max)
        o = torch.einsum("ngqk,knd->qngd", weights.view(num_kv_heads, group, q_len, -1), v)
        o = o.reshape(q_len, num_heads, head_size)
        denom = denom.permute(1, 0, 2)  # [q_len, heads, 1]
        out[q_begin:q_end] = torch.where(denom > 0, o / denom.clamp_min(1e-30), torch.zeros_like(o))
    return out.to(query.dtype)


def reshape_and_cache(
    key: Tensor,
    value: Tensor,
    key_cache: Tensor,
    value_cache: Tensor,
    slot_mapping: Tensor,
    k_scale: Optional[Tensor] = None,
    v_scale: Optional[Tensor] = None,
) -> None:
    """Reference for ``torch.ops.swa_ops.reshape_and_cache``: writes in place, returns None."""
    keep = slot_mapping >= 0
    slots = slot_mapping[keep]
    block_size = key_cache.shape[1]
    blocks, offsets = slots // block_size, slots % block_size
    for src, cache, sc in ((key[keep], key_cache, k_scale), (value[keep], value_cache, v_scale)):
        if cache.dtype == FP8_DTYPE:
            src = quantize_fp8(src, sc)
        cache[blocks, offsets] = src.to(cache.dtype)
