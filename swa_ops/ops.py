"""Typed Python wrappers over ``torch.ops.swa_ops.*`` and their fake (meta) kernels.

The fake kernels let the ops trace under ``torch.compile`` and ``torch.export``: they check shapes,
dtypes and devices with ``torch._check`` (messages name the argument, as the C++ checks in
``csrc/checks.cpp`` do) and never read tensor data.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

_FLOATS = (torch.float32, torch.float16, torch.bfloat16)
_FP8 = torch.float8_e4m3fn
MAX_HEAD_SIZE = 256


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
    """Attention over a paged KV cache with an optional sliding window.

    Args:
        query: ``[num_tokens, num_heads, head_size]``, float32/float16/bfloat16.
        key_cache, value_cache: ``[num_blocks, block_size, num_kv_heads, head_size]``, the query's
            dtype or ``float8_e4m3fn`` (then ``k_scale``/``v_scale`` are required).
        block_tables: ``[num_seqs, max_blocks_per_seq]`` int32 block ids; entries of blocks wholly
            before a sequence's window are never read and may be -1.
        seq_lens: ``[num_seqs]`` int32, cached tokens per sequence including this step's.
        scale: softmax scale, usually ``head_size ** -0.5``.
        sliding_window: ``W > 0`` attends to the last W keys including the query's own position;
            ``<= 0`` is plain causal attention.
        logits_soft_cap: ``> 0`` applies ``cap * tanh(s / cap)`` to each logit before the mask.
        sinks: ``[num_heads]`` float32 sink logits, one extra softmax term per head.
        query_start_loc: ``[num_seqs + 1]`` int32 prefix sums of query lengths; ``None`` means one
            query token per sequence (decode).
        max_query_len: upper bound of the query lengths (a launch hint; must not be exceeded).
        k_scale, v_scale: float32 scalar tensors, dequantization scales of fp8 caches.

    Returns:
        ``[num_tokens, num_heads, head_size]`` in the query's dtype.
    """
    return torch.ops.swa_ops.paged_attention.default(
        query, key_cache, value_cache, block_tables, seq_lens, scale, sliding_window,
        logits_soft_cap, sinks, query_start_loc, max_query_len, k_scale, v_scale)


def reshape_and_cache(
    key: Tensor,
    value: Tensor,
    key_cache: Tensor,
    value_cache: Tensor,
    slot_mapping: Tensor,
    k_scale: Optional[Tensor] = None,
    v_scale: Optional[Tensor] = None,
) -> None:
    """Writes ``key``/``value`` (``[num_tokens, num_kv_heads, head_size]``) into the caches in place.

    ``slot_mapping`` (int64 ``[num_tokens]``) holds ``block_id * block_size + offset`` per token;
    ``-1`` skips the token. fp8 caches store ``x / scale`` saturated to the fp8 range.
    """
    torch.ops.swa_ops.reshape_and_cache.default(
        key, value, key_cache, value_cache, slot_mapping, k_scale, v_scale)


# ---------------------------------------------------------------------------------------------
# Fake kernels: the same metadata rules as csrc/checks.cpp.

def _check_same_device(op: str, name: str, t: Tensor, ref_name: str, ref: Tensor) -> None:
    torch._check(t.device == ref.device,
                 lambda: f"{op}: {name} is on {t.device} but {ref_name} is on {ref.device}; "
                         "all tensors must be on one device")


def _check_scales(op: str, fp8: bool, ref_name: str, ref: Tensor, k_scale: Optional[Tensor],
                  v_scale: Optional[Tensor]) -> None:
    torch._check(not fp8 or (k_scale is not None and v_scale is not None),
                 lambda: f"{op}: float8_e4m3fn caches need k_scale and v_scale (float32 scalars)")
    for name, s in (("k_scale", k_scale), ("v_scale", v_scale)):
        if s is None:
            continue
        torch._check(s.dtype == torch.float32 and s.numel() == 1,
                     lambda: f"{op}: {name} must be a float32 tensor with one element, "
                             f"got {s.dtype} of shape {tuple(s.shape)}")
        _check_same_device(op, name, s, ref_name, ref)


def _check_cache_pair(op: str, key_cache: Tensor, value_cache: Tensor) -> None:
    torch._check(key_cache.dim() == 4,
                 lambda: f"{op}: key_cache must be [num_blocks, block_size, num_kv_heads, "
                         f"head_size], got shape {tuple(key_cache.shape)}")
    torch._check(value_cache.shape == key_cache.shape,
                 lambda: f"{op}: value_cache shape {tuple(value_cache.shape)} differs from "
                         f"key_cache shape {tuple(key_cache.shape)}")
    torch._check(value_cache.dtype == key_cache.dtype,
                 lambda: f"{op}: value_cache dtype {value_cache.dtype} differs from key_cache "
                         f"dtype {key_cache.dtype}")
    torch._check(key_cache.stride(3) == 1 and value_cache.stride(3) == 1,
                 lambda: f"{op}: key_cache and value_cache must be contiguous in the head_size "
                         "dimension")
    torch._check(key_cache.shape[1] > 0, lambda: f"{op}: key_cache block_size must be positive")
    _check_same_device(op, "value_cache", value_cache, "key_cache", key_cache)


@torch.library.register_fake("swa_ops::paged_attention")
def _paged_attention_fake(query, key_cache, value_cache, block_tables, seq_lens, scale,
                          sliding_window=0, logits_soft_cap=0.0, sinks=None, query_start_loc=None,
                          max_query_len=1, k_scale=None, v_scale=None):
    op = "swa_ops.paged_attention"
    torch._check(query.dim() == 3,
                 lambda: f"{op}: query must be [num_tokens, num_heads, head_size], "
                         f"got shape {tuple(query.shape)}")
    torch._check(query.dtype in _FLOATS,
                 lambda: f"{op}: query must be float32, float16 or bfloat16, got {query.dtype}")
    torch._check(query.stride(2) == 1,
                 lambda: f"{op}: query must be contiguous in the head_size dimension")
    _check_cache_pair(op, key_cache, value_cache)
    _check_same_device(op, "key_cache", key_cache, "query", query)
    num_tokens, num_heads, head_size = query.shape
    num_kv_heads = key_cache.shape[2]
    fp8 = key_cache.dtype == _FP8
    torch._check(fp8 or key_cache.dtype == query.dtype,
                 lambda: f"{op}: key_cache dtype {key_cache.dtype} must equal query dtype "
                         f"{query.dtype} or be float8_e4m3fn")
    torch._check(key_cache.shape[3] == head_size,
                 lambda: f"{op}: head size mismatch: query has {head_size}, "
                         f"key_cache/value_cache have {key_cache.shape[3]}")
    torch._check(head_size > 0 and head_size % 8 == 0 and head_size <= MAX_HEAD_SIZE,
                 lambda: f"{op}: unsupported head_size {head_size} (a multiple of 8 up to "
                         f"{MAX_HEAD_SIZE})")
    torch._check(num_kv_heads > 0 and num_heads % num_kv_heads == 0,
                 lambda: f"{op}: num_heads ({num_heads}) must be a multiple of num_kv_heads "
                         f"({num_kv_heads})")
    torch._check(block_tables.dim() == 2 and block_tables.dtype == torch.int32,
                 lambda: f"{op}: block_tables must be a 2-D int32 tensor [num_seqs, "
                         f"max_blocks_per_seq], got {block_tables.dtype} of shape "
                         f"{tuple(block_tables.shape)}")
    torch._check(seq_lens.dim() == 1 and seq_lens.dtype == torch.int32,
                 lambda: f"{op}: seq_lens must be a 1-D int32 tensor [num_seqs], got "
                         f"{seq_lens.dtype} of shape {tuple(seq_lens.shape)}")
    num_seqs = block_tables.shape[0]
    torch._check(seq_lens.shape[0] == num_seqs,
                 lambda: f"{op}: seq_lens has {seq_lens.shape[0]} entries but block_tables has "
                         f"{num_seqs} rows (num_seqs)")
    _check_same_device(op, "block_tables", block_tables, "query", query)
    _check_same_device(op, "seq_lens", seq_lens, "query", query)
    torch._check(max_query_len >= 1,
                 lambda: f"{op}: max_query_len must be >= 1, got {max_query_len}")
    if query_start_loc is not None:
        qsl = query_start_loc
        torch._check(qsl.dim() == 1 and qsl.dtype == torch.int32,
                     lambda: f"{op}: query_start_loc must be a 1-D int32 tensor [num_seqs + 1], "
                             f"got {qsl.dtype} of shape {tuple(qsl.shape)}")
        torch._check(qsl.shape[0] == num_seqs + 1,
                     lambda: f"{op}: query_start_loc has {qsl.shape[0]} entries, expected "
                             f"num_seqs + 1 = {num_seqs + 1}")
        _check_same_device(op, "query_start_loc", qsl, "query", query)
    else:
        torch._check(num_tokens == num_seqs,
                     lambda: f"{op}: without query_start_loc each sequence has one query token, "
                             f"but query has {num_tokens} tokens and there are {num_seqs} "
                             "sequences; pass query_start_loc for multi-token queries")
    if sinks is not None:
        torch._check(sinks.dim() == 1 and sinks.shape[0] == num_heads
                     and sinks.dtype == torch.float32,
                     lambda: f"{op}: sinks must be a float32 tensor [num_heads] = [{num_heads}], "
                             f"got {sinks.dtype} of shape {tuple(sinks.shape)}")
        _check_same_device(op, "sinks", sinks, "query", query)
    _check_scales(op, fp8, "query", query, k_scale, v_scale)
    return query.new_empty((num_tokens, num_heads, head_size))


@torch.library.register_fake("swa_ops::reshape_and_cache")
def _reshape_and_cache_fake(key, value, key_cache, value_cache, slot_mapping, k_scale=None,
                            v_scale=None):
    op = "swa_ops.reshape_and_cache"
    torch._check(key.dim() == 3,
                 lambda: f"{op}: key must be [num_tokens, num_kv_heads, head_size], "
                         f"got shape {tuple(key.shape)}")
    torch._check(value.shape == key.shape,
                 lambda: f"{op}: value shape {tuple(value.shape)} differs from key shape "
                         f"{tuple(key.shape)}")
    torch._check(key.dtype in _FLOATS and value.dtype == key.dtype,
                 lambda: f"{op}: key and value must share a dtype among float32, float16 and "
                         f"bfloat16, got {key.dtype} and {value.dtype}")
    torch._check(key.stride(2) == 1 and value.stride(2) == 1,
                 lambda: f"{op}: key and value must be contiguous in the head_size dimension")
    _check_cache_pair(op, key_cache, value_cache)
    _check_same_device(op, "value", value, "key", key)
    _check_same_device(op, "key_cache", key_cache, "key", key)
    torch._check(key_cache.shape[2] == key.shape[1],
                 lambda: f"{op}: num_kv_heads mismatch: key has {key.shape[1]}, key_cache has "
                         f"{key_cache.shape[2]}")
    torch._check(key_cache.shape[3] == key.shape[2],
                 lambda: f"{op}: head size mismatch: key has {key.shape[2]}, "
                         f"key_cache/value_cache have {key_cache.shape[3]}")
    fp8 = key_cache.dtype == _FP8
    torch._check(fp8 or key_cache.dtype == key.dtype,
                 lambda: f"{op}: key_cache dtype {key_cache.dtype} must equal key dtype "
                         f"{key.dtype} or be float8_e4m3fn")
    torch._check(slot_mapping.dim() == 1 and slot_mapping.dtype == torch.int64,
                 lambda: f"{op}: slot_mapping must be a 1-D int64 tensor [num_tokens], got "
                         f"{slot_mapping.dtype} of shape {tuple(slot_mapping.shape)}")
    torch._check(slot_mapping.shape[0] == key.shape[0],
                 lambda: f"{op}: slot_mapping has {slot_mapping.shape[0]} entries but key has "
                         f"{key.shape[0]} tokens")
    _check_same_device(op, "slot_mapping", slot_mapping, "key", key)
    _check_scales(op, fp8, "key", key, k_scale, v_scale)
    return None
