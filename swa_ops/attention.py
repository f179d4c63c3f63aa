"""``PagedSWAAttention``: the module model code calls.

It owns one layer's K/V cache (allocated once; addresses never change) and shares a
:class:`~swa_ops.kv_cache.KVCacheManager` (block pool, block tables, sequence lengths) with the other
layers of the same window. A step has two halves, as in serving engines:

1. ``plan(seq_ids, num_new_tokens)`` on the host, once per step for all layers: recycles blocks that
   left the window, allocates blocks for the new tokens and copies the step's metadata to the device
   in one copy;
2. ``forward(query, key, value)`` per layer: ``reshape_and_cache`` then ``paged_attention`` on
   persistent buffers. No host value is read and no Python branch depends on data, so it compiles
   with ``fullgraph=True``, does not recompile as contexts grow, and can be captured in a CUDA graph.
"""
from __future__ import annotations

from typing import Hashable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from . import ops
from .kv_cache import (KVCacheManager, StepPlan, canonical_device, check_positive_ints,
                       max_blocks_held)

_KV_CACHE_DTYPES = ("auto", "fp8_e4m3")


class PagedSWAAttention(nn.Module):
    """Sliding-window attention over a paged KV cache that this module owns.

    Args:
        num_heads, num_kv_heads: query and K/V heads of this module (with tensor parallelism, the
            heads local to this rank); ``num_heads`` must be a multiple of ``num_kv_heads``.
        head_size: a multiple of 8 up to 256.
        sliding_window: ``W > 0`` attends to the last W keys including the query's own position
            and recycles blocks that fall wholly before the window; ``<= 0`` is full causal.
        logits_soft_cap: ``> 0`` applies ``cap * tanh(s / cap)`` to each logit (Gemma-2).
        sinks: ``[num_heads]`` sink logits (gpt-oss), kept as a float32 buffer.
        scale: softmax scale (default ``head_size ** -0.5``).
        kv_cache_dtype: ``"auto"`` (the module's ``dtype``) or ``"fp8_e4m3"`` (float8_e4m3fn,
            storing ``x / k_scale`` and ``x / v_scale``).
        k_scale, v_scale: fp8 dequantization scales.
        block_size, num_blocks, max_num_seqs, max_seq_len, max_query_len, max_num_batched_tokens:
            cache geometry (see :class:`KVCacheManager`); ``num_blocks`` defaults to enough blocks for
            ``max_num_seqs`` sequences at their bound (``cdiv(W + max_query_len - 1, block_size) + 1``
            with a window).
        device, dtype: of the query/key/value this module accepts.
        cache_manager: share the block pool and tables of another layer (layers of one model with
            the same window share one manager; its geometry then wins over the arguments above).

    Use::

        attn = PagedSWAAttention(32, 8, 128, sliding_window=4096, max_seq_len=131072, device="cuda",
                                 dtype=torch.bfloat16)
        attn.add_sequence("a"); attn.add_sequence("b")
        attn.plan(["a", "b"], [100, 7])          # prefill: 107 tokens
        out = attn(q, k, v)                      # q: [107, 32, 128], k/v: [107, 8, 128]
        attn.plan(["a", "b"])                    # decode: one token each
        out = attn(q1, k1, v1)                   # q1: [2, 32, 128]
        attn.release_sequence("a")
    """

    def __init__(
        self,
        num_heads: int,
        num_kv_heads: int,
        head_size: int,
        *,
        sliding_window: int = 0,
        logits_soft_cap: Optional[float] = None,
        sinks: Optional[Tensor] = None,
        scale: Optional[float] = None,
        kv_cache_dtype: str = "auto",
        k_scale: float = 1.0,
        v_scale: float = 1.0,
        block_size: int = 16,
        num_blocks: Optional[int] = None,
        max_num_seqs: int = 8,
        max_seq_len: int = 8192,
        max_query_len: int = 256,
        max_num_batched_tokens: Optional[int] = None,
        device: Union[torch.device, str, None] = None,
        dtype: torch.dtype = torch.float32,
        cache_manager: Optional[KVCacheManager] = None,
    ):
        super().__init__()
        check_positive_ints(num_heads=num_heads, num_kv_heads=num_kv_heads, head_size=head_size)
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads "
                             f"({num_kv_heads})")
        if head_size % 8 or head_size > ops.MAX_HEAD_SIZE:
            raise ValueError(f"head_size must be a multiple of 8 up to {ops.MAX_HEAD_SIZE}, "
                             f"got {head_size}")
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
        if kv_cache_dtype not in _KV_CACHE_DTYPES:
            raise ValueError(f"kv_cache_dtype must be one of {_KV_CACHE_DTYPES}, got "
                             f"{kv_cache_dtype!r}")
        for name, value in (("k_scale", k_scale), ("v_scale", v_scale)):
            if not float(value) > 0:
                raise ValueError(f"{name} must be a positive float, got {value!r}")
        if logits_soft_cap is not None and logits_soft_cap < 0:
            raise ValueError(f"logits_soft_cap must be >= 0 (0 or None: off), got {logits_soft_cap}")
        device = canonical_device(device)

        if cache_manager is None:
            if num_blocks is None:
                check_positive_ints(block_size=block_size, max_num_seqs=max_num_seqs,
                                    max_seq_len=max_seq_len, max_query_len=max_query_len)
                held = max_blocks_held(max(sliding_window, 0), min(max_query_len, max_seq_len),
                                       block_size, max_seq_len)
                num_blocks = max_num_seqs * held
            cache_manager = KVCacheManager(
                block_size=block_size, num_blocks=num_blocks, max_num_seqs=max_num_seqs,
                max_seq_len=max_seq_len, sliding_window=sliding_window,
                max_query_len=max_query_len, max_num_batched_tokens=max_num_batched_tokens,
                device=device)
        elif cache_manager.sliding_window != max(sliding_window, 0):
            raise ValueError(f"sliding_window ({sliding_window}) differs from the shared "
                             f"cache_manager's ({cache_manager.sliding_window}): layers with "
                             "different windows need different managers")
        elif cache_manager.device != device:
            raise ValueError(f"device ({device}) differs from the shared cache_manager's "
                             f"({cache_manager.device})")
        self.cache_manager = cache_manager

        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_size = head_size
        self.sliding_window = max(sliding_window, 0)
        self.logits_soft_cap = float(logits_soft_cap or 0.0)
        self.scale = float(scale) if scale is not None else head_size ** -0.5
        self.kv_cache_dtype = kv_cache_dtype
        self.dtype = dtype
        self.fp8 = kv_cache_dtype == "fp8_e4m3"

        if sinks is not None:
            sinks = torch.as_tensor(sinks)
            if sinks.shape != (num_heads,):
                raise ValueError(f"sinks must have shape [num_heads] = [{num_heads}], got "
                                 f"{tuple(sinks.shape)}")
            sinks = sinks.detach().to(device=device, dtype=torch.float32).clone()
        self.register_buffer("sinks", sinks)

        cache_dtype = torch.float8_e4m3fn if self.fp8 else dtype
        m = cache_manager
        shape = (m.num_blocks, m.block_size, num_kv_heads, head_size)
        # Allocated once; non-persistent: the cache is state of a generation, not of the model.
        self.register_buffer("key_cache", torch.zeros(shape, dtype=cache_dtype, device=device),
                             persistent=False)
        self.register_buffer("value_cache", torch.zeros(shape, dtype=cache_dtype, device=device),
                             persistent=False)
        if self.fp8:
            self.register_buffer("k_scale", torch.tensor(float(k_scale), device=device),
                                 persistent=False)
            self.register_buffer("v_scale", torch.tensor(float(v_scale), device=device),
                                 persistent=False)
        else:
            self.register_buffer("k_scale", None)
            self.register_buffer("v_scale", None)
        for t in (self.key_cache, self.value_cache):
            torch._dynamo.mark_static_address(t)

    def _apply(self, fn, recurse=True):
        # The cache stays where and as it was built: `model.to(dtype)` must not turn an fp8 cache
        # or the float32 sinks into another dtype, and no move may give the buffers new addresses
        # (captured CUDA graphs hold them; the shared manager's metadata would not follow). A
        # module on the wrong device fails in forward with a message naming the tensor.
        return self

    # ------------------------------------------------------------------ host side (per step)

    def add_sequence(self, seq_id: Hashable) -> int:
        """Registers an empty sequence (in the shared manager: once for all layers)."""
        return self.cache_manager.add_sequence(seq_id)

    def release_sequence(self, seq_id: Hashable) -> None:
        """Returns all blocks of ``seq_id`` to the pool."""
        self.cache_manager.release_sequence(seq_id)

    def plan(self, seq_ids: Sequence[Hashable],
             num_new_tokens: Union[int, Sequence[int]] = 1) -> StepPlan:
        """Plans the next step for every layer sharing the manager; see ``KVCacheManager.plan``."""
        return self.cache_manager.plan(seq_ids, num_new_tokens)

    @property
    def cache_bytes(self) -> int:
        """Bytes of this layer's K and V caches."""
        return 2 * self.key_cache.numel() * self.key_cache.element_size()

    # ------------------------------------------------------------------ device side

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        """Caches ``key``/``value`` at the planned slots and attends ``query`` over the cache.

        Args:
            query: ``[num_tokens, num_heads, head_size]`` (or ``[num_tokens, num_heads * head_size]``).
            key, value: ``[num_tokens, num_kv_heads, head_size]`` (or flattened likewise).
            Rows are grouped by sequence in the order given to :meth:`plan`; ``num_tokens`` is the
            planned step's token count.

        Returns:
            The attention output, shaped like ``query``.
        """
        flat = query.dim() == 2
        if flat:
            query = query.view(query.shape[0], self.num_heads, self.head_size)
            key = key.view(key.shape[0], self.num_kv_heads, self.head_size)
            value = value.view(value.shape[0], self.num_kv_heads, self.head_size)
        if not torch.compiler.is_compiling():
            self._check_inputs(query, key, value)  # eager: clear errors; compiled: trusted
        m = self.cache_manager
        n = query.shape[0]
        ops.reshape_and_cache(key, value, self.key_cache, self.value_cache, m.slot_mapping[:n],
                              self.k_scale, self.v_scale)
        if m.step_max_query_len == 1:
            # Decode (one token per sequence, so n sequences): the kernels' decode form, rows
            # 0..n-1 of the tables and no query_start_loc. The branch reads a plan-time Python int
            # that takes one value per step kind, never device data.
            block_tables, seq_lens, qsl = m.block_tables[:n], m.seq_lens[:n], None
        else:
            # Mixed/prefill: all max_num_seqs rows (fixed shapes); padding rows have no tokens.
            block_tables, seq_lens, qsl = m.block_tables, m.seq_lens, m.query_start_loc
        out = ops.paged_attention(
            query, self.key_cache, self.value_cache, block_tables, seq_lens, self.scale,
            self.sliding_window, self.logits_soft_cap, self.sinks, qsl, m.step_max_query_len,
            self.k_scale, self.v_scale)
        return out.flatten(1) if flat else out

    def _check_inputs(self, query: Tensor, key: Tensor, value: Tensor) -> None:
        m = self.cache_manager
        if m.num_tokens is None:
            raise RuntimeError("PagedSWAAttention.forward called before plan(): plan the step "
                               "(which sequences, how many new tokens each) first")
        for name, t, heads in (("query", query, self.num_heads), ("key", key, self.num_kv_heads),
                               ("value", value, self.num_kv_heads)):
            if t.dim() != 3 or t.shape[1:] != (heads, self.head_size):
                raise ValueError(f"{name} must be [num_tokens, {heads}, {self.head_size}] "
                                 f"([num_tokens, {'num_heads' if name == 'query' else 'num_kv_heads'}"
                                 f", head_size]), got shape {tuple(t.shape)}")
            if t.shape[0] != m.num_tokens:
                raise ValueError(f"{name} has {t.shape[0]} tokens but the planned step has "
                                 f"{m.num_tokens} (num_new_tokens summed over seq_ids)")
            if t.dtype != self.dtype:
                raise ValueError(f"{name} dtype {t.dtype} differs from the module's dtype "
                                 f"{self.dtype}")
            if t.device != self.key_cache.device:
                raise ValueError(f"{name} is on {t.device} but the cache is on "
                                 f"{self.key_cache.device}")

    def extra_repr(self) -> str:
        m = self.cache_manager
        s = (f"num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, "
             f"head_size={self.head_size}, sliding_window={self.sliding_window}, "
             f"block_size={m.block_size}, num_blocks={m.num_blocks}, "
             f"kv_cache_dtype={self.kv_cache_dtype}")
        if self.logits_soft_cap:
            s += f", logits_soft_cap={self.logits_soft_cap}"
        if self.sinks is not None:
            s += ", sinks=True"
        return s
