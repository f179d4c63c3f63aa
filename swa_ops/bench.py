"""Side-by-side timings: ``python -m swa_ops.bench``.

GPU (default) runs two sections in one process on one device; ``--decode`` or ``--prefill`` runs
one, ``--shapes a,b`` picks rows by name from either.

Decode: each decode shape of DESIGN.md's table plus the model-feature rows (Gemma-2 soft-cap,
gpt-oss sinks, fp8 K/V, a q_len = 4 speculative step), against FlashInfer's
BatchDecodeWithPagedKVCacheWrapper with the full page table and with the table trimmed to the
window (BatchPrefillWithPagedKVCacheWrapper for the multi-token row), a row-specific FlashInfer
alternative ("FI alt": its attention-sink wrapper for the sinks row, its q_len_per_req decode for
the speculative row), and SDPA over the gathered window pages. The floor is the window's K/V bytes
over the device-to-device copy bandwidth measured in the same run; each K/V set is rotated over
several copies ("layers") so the working set exceeds L2. Device time per call: CUDA-graph replay of
a chain of calls, kernel gaps included (swa_ops and every peer whose call captures; a peer that
does not is timed by the profiler's kernel sum, which leaves its launch gaps out and is marked in
the JSON). A spin kernel holds the stream while the host enqueues the timed replays, so the
host's submission latency is not counted as device time. swa(kern) is swa_ops' profiler kernel
sum: with programmatic dependent launch it counts the merge's wait for the decode too.

Prefill: whole-prompt and chunked-prefill steps (query_start_loc, causal + window), against
FlashInfer's BatchPrefillWithPagedKVCacheWrapper (full page table, window_left = W - 1; its
attention-sink wrapper where the row has sinks), SDPA (per sequence and per 2048-row query chunk
over the gathered window keys, GQA expanded, the gather inside the timed call) and FlexAttention
(compiled, sliding-window causal block mask, over contiguous K/V gathered once outside the timed
call). Time per call from CUDA events around back-to-back calls (each is milliseconds, so launch
gaps hide in the queue); TFLOP/s count only unmasked work, 4 * head_size * heads per visible
(query row, key) pair. Errors are max abs differences against fp32 attention on sampled query rows
(the first and last 64 of each sequence, and 64 around the row where the window starts to slide).

A contender off by more than WRONG_ATOL + WRONG_RTOL * |reference| anywhere is marked wrong ("!"
in the tables; the max abs error is printed either way). FlashInfer JIT-compiles each kernel
variant on first use; before timing, every variant the selected rows need is compiled in parallel
subprocesses that share FlashInfer's on-disk cache (and each FlexAttention shape is compiled once
the same way, filling inductor's caches); ``--no-warmup`` skips that, ``--warmup-only`` stops
after it. After a warm-up the rows are timed in a fresh process (this command again, with
``--no-warmup``): a process whose CUDA context sat idle through minutes of warm-up timed seed
1 % slower for the rest of its life (runs 163-164, H100: 95.4 and 95.2 µs against 94.3-94.5 when
the context is made after the wait; device-to-device copies before the rows did not help).

CPU (``--device cpu``): a Mistral-like decode (batch 4, 32/8 heads, head 128, ctx 16384, W 4096,
bf16, block 16) with swa_ops' CPU op and with SDPA over the gathered window pages.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

import swa_ops  # noqa: F401  (registers the ops)

# A contender is marked wrong where some output element is off by more than WRONG_ATOL +
# WRONG_RTOL * |reference|. A correct bf16 kernel is off by a bf16 rounding of the output (2^-9
# relative) plus P rounded to bf16 (about max|v| * 2^-9 absolute: up to ~0.009 for randn values on
# rows that see few keys, e.g. a prompt's first rows); FlashInfer's wrong phi3 decode results were
# 0.17-0.30 off, and a kernel that drops the sinks is off by O(|v|) on early rows.
WRONG_ATOL = 1e-2
WRONG_RTOL = 2e-2
FI_WORKSPACE_BYTES = 256 * 1024 * 1024


@dataclass
class Shape:
    name: str
    batch: int
    heads: int
    kv_heads: int
    head_size: int
    ctx: int
    window: int
    block_size: int = 16
    dtype: torch.dtype = torch.bfloat16
    fp8: bool = False  # fp8 e4m3 K/V caches (per-tensor scales)
    soft_cap: float = 0.0  # > 0: logits soft-capped (Gemma-2)
    sinks: bool = False  # one fp32 sink logit per query head (gpt-oss)
    q_len: int = 1  # query tokens per sequence (> 1: speculative decoding)

    @property
    def visible(self) -> int:
        """Keys a step reads per sequence: the union of its query rows' windows."""
        return min(self.ctx, self.window + self.q_len - 1) if self.window > 0 else self.ctx

    def window_bytes(self) -> int:
        """K and V bytes one decode step must read: the floor's numerator."""
        elem = 1 if self.fp8 else torch.tensor([], dtype=self.dtype).element_size()
        return 2 * self.batch * self.visible * self.kv_heads * self.head_size * elem


SHAPES = [
    Shape("seed", 16, 32, 4, 128, 9216, 8192),
    Shape("mistral-32k", 32, 32, 8, 128, 32768, 4096),
    Shape("mistral-128k", 8, 32, 8, 128, 131072, 4096),
    Shape("mistral-8k", 8, 32, 8, 128, 8192, 4096),  # context independence: vs mistral-128k
    Shape("gemma3", 32, 16, 8, 256, 32768, 1024),
    Shape("gptoss", 64, 64, 8, 64, 8192, 128),
    Shape("nowindow", 32, 32, 8, 128, 4096, 0),
    Shape("single-128k", 1, 32, 8, 128, 131072, 4096),
    Shape("phi3", 16, 32, 32, 96, 8192, 2047),
    Shape("mistral-32k-fp8", 32, 32, 8, 128, 32768, 4096, fp8=True),
    # Model features (issue 4).
    Shape("gemma2-softcap", 32, 16, 8, 256, 8192, 4096, soft_cap=50.0),
    Shape("gptoss-sinks", 64, 64, 8, 64, 8192, 128, sinks=True),
    Shape("mistral-spec4", 32, 32, 8, 128, 32768, 4096, q_len=4),
]

CPU_SHAPE = Shape("mistral-cpu", 4, 32, 8, 128, 16384, 4096)


@dataclass
class PrefillShape:
    """A prefill step: every sequence holds seq_len tokens after it, the last q_len of them new."""
    name: str
    batch: int
    heads: int
    kv_heads: int
    head_size: int
    seq_len: int
    q_len: int
    window: int
    sinks: bool = False
    soft_cap: float = 0.0
    block_size: int = 16
    dtype: torch.dtype = torch.bfloat16


# Batch 8 for every row, as in DESIGN.md's prefill table (where its FlashInfer and FlexAttention
# numbers were measured); --prefill-batch overrides it.
PREFILL_SHAPES = [
    PrefillShape("mistral-prefill", 8, 32, 8, 128, 8192, 8192, 4096),
    PrefillShape("chunked", 8, 32, 8, 128, 32768, 2048, 4096),  # one 2048-token chunk on 32k
    PrefillShape("gemma3-prefill", 8, 16, 8, 256, 8192, 8192, 1024),
    PrefillShape("gptoss-prefill", 8, 64, 8, 64, 8192, 8192, 128, sinks=True),
]


def visible_keys(seq_len: int, q_len: int, window: int) -> int:
    """Sum over a sequence's query rows of the keys each sees: min(pos + 1, W) for the row at
    absolute position pos (pos + 1 without a window)."""
    lo, hi = seq_len - q_len + 1, seq_len  # pos + 1 runs over [lo, hi]
    if window <= 0:
        return (lo + hi) * (hi - lo + 1) // 2
    below = max(0, min(hi, window) - lo + 1)  # rows with pos + 1 <= W see pos + 1 keys
    first = lo
    total = (first + first + below - 1) * below // 2 if below else 0
    return total + (hi - lo + 1 - below) * window


def prefill_flops(s: PrefillShape) -> int:
    """FLOPs of the unmasked work: QK^T and PV, 2 FLOPs per multiply-add each, per visible pair."""
    return 4 * s.head_size * s.heads * s.batch * visible_keys(s.seq_len, s.q_len, s.window)


def check(out: torch.Tensor, ref: torch.Tensor) -> Tuple[float, bool]:
    """(max abs error, wrong?) of an output against its fp32 reference (same shape)."""
    diff = (out.float() - ref).abs()
    wrong = bool(((diff - WRONG_RTOL * ref.abs()).max() > WRONG_ATOL).item())
    return diff.max().item(), wrong


def make_sinks(heads: int, generator: torch.Generator, device) -> torch.Tensor:
    """Sink logits in [2, 6): large enough against ~W logits of O(1) that ignoring them shows as a
    clear error (a sink of 0 would be lost in bf16 noise at W = 128)."""
    return torch.rand(heads, generator=generator, device=device) * 4 + 2


def attend_fp32(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, valid: torch.Tensor,
                scale: float, soft_cap: float = 0.0,
                sinks: Optional[torch.Tensor] = None) -> torch.Tensor:
    """fp32 attention in the order of DESIGN.md's semantics (scale, soft-cap, mask, sinks in the
    denominator). q [B, n, H, D]; k, v [B, K, KVH, D] (already dequantized); valid [n, K] bool.
    Returns [B, n, H, D] float32."""
    b, n, h, d = q.shape
    kvh = k.shape[2]
    g = h // kvh
    qf = q.float().view(b, n, kvh, g, d)
    logits = torch.einsum("bnhgd,bkhd->bhgnk", qf, k.float()) * scale
    if soft_cap > 0:
        logits = soft_cap * torch.tanh(logits / soft_cap)
    logits = logits.masked_fill(~valid, float("-inf"))
    m = logits.amax(dim=-1, keepdim=True)
    sink = None
    if sinks is not None:
        sink = sinks.float().view(1, kvh, g, 1, 1)
        m = torch.maximum(m, sink)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(logits - m)
    denom = p.sum(dim=-1, keepdim=True)
    if sink is not None:
        denom = denom + torch.exp(sink - m)
    o = torch.einsum("bhgnk,bkhd->bnhgd", p, v.float())
    o = o / denom.permute(0, 3, 1, 2, 4).clamp_min(1e-30)
    return o.reshape(b, n, h, d)


# ---------------------------------------------------------------------------------------------
# Decode: problem setup


class Problem:
    """Paged caches holding every block of the full context, `layers` copies of them, a random
    block table, and the query (q_len tokens per sequence). All sequences have length ctx."""

    def __init__(self, s: Shape, layers: int, device: str, seed: int = 0):
        g = torch.Generator(device=device).manual_seed(seed)
        self.s = s
        bps = (s.ctx + s.block_size - 1) // s.block_size
        self.num_blocks = s.batch * bps
        shape = (self.num_blocks, s.block_size, s.kv_heads, s.head_size)
        self.k = [torch.randn(shape, generator=g, device=device).to(s.dtype) for _ in range(layers)]
        self.v = [torch.randn(shape, generator=g, device=device).to(s.dtype) for _ in range(layers)]
        self.k_scale = self.v_scale = None
        if s.fp8:  # stored as x / scale; randn fits 448 * 0.02 comfortably
            self.k_scale = torch.tensor([0.02], device=device)
            self.v_scale = torch.tensor([0.02], device=device)
            self.k = [(t.float() / 0.02).to(torch.float8_e4m3fn) for t in self.k]
            self.v = [(t.float() / 0.02).to(torch.float8_e4m3fn) for t in self.v]
        self.block_tables = torch.randperm(self.num_blocks, generator=g, device=device).int()
        self.block_tables = self.block_tables.view(s.batch, bps)
        self.seq_lens = torch.full((s.batch,), s.ctx, dtype=torch.int32, device=device)
        self.q = torch.randn(s.batch * s.q_len, s.heads, s.head_size, generator=g,
                             device=device).to(s.dtype)
        self.sinks = make_sinks(s.heads, g, device) if s.sinks else None
        self.query_start_loc = None
        if s.q_len > 1:
            self.query_start_loc = (torch.arange(s.batch + 1, device=device) * s.q_len).int()
        self.scale = s.head_size ** -0.5
        self.layers = layers
        # First key any query row sees (the first row's window start), and the blocks from there.
        lo = max(0, s.ctx - s.q_len - s.window + 1) if s.window > 0 else 0
        self.first_block = lo // s.block_size
        self.window_blocks = self.block_tables[:, self.first_block:]
        # Which gathered key each query row sees: [q_len, N].
        pos = self.first_block * s.block_size + torch.arange(
            self.window_blocks.shape[1] * s.block_size, device=device)
        row_pos = s.ctx - s.q_len + torch.arange(s.q_len, device=device)
        valid = pos[None, :] <= row_pos[:, None]
        if s.window > 0:
            valid &= pos[None, :] > row_pos[:, None] - s.window
        self.valid = valid
        self.sdpa_mask = None
        if not s.fp8 and s.soft_cap <= 0:
            self.sdpa_mask = self._sdpa_mask()

    def _sdpa_mask(self) -> torch.Tensor:
        """SDPA's mask, built once per shape (static metadata of a step, shared by its layers).
        With sinks: an additive mask over the gathered keys plus 16 zero keys (16 keeps the mask's
        rows aligned for the fused kernels) whose first carries the head's sink logit as its bias,
        which puts exp(sink) in the denominator and nothing in the numerator, exactly."""
        s = self.s
        if self.sinks is None:
            return self.valid.view(1, 1, s.q_len, -1)
        n = self.valid.shape[1]
        mask = torch.full((1, s.heads, s.q_len, n + 16), float("-inf"), device=self.q.device)
        mask[..., :n] = torch.where(self.valid, 0.0, float("-inf"))
        mask[..., n] = self.sinks.view(s.heads, 1)
        return mask.to(s.dtype)

    def swa(self, i: int) -> torch.Tensor:
        return torch.ops.swa_ops.paged_attention(
            self.q, self.k[i % self.layers], self.v[i % self.layers], self.block_tables,
            self.seq_lens, self.scale, self.s.window, self.s.soft_cap, self.sinks,
            self.query_start_loc, self.s.q_len, self.k_scale, self.v_scale)

    def sdpa(self, i: int) -> torch.Tensor:
        """SDPA over the window's gathered pages (the gather is part of the cost)."""
        s = self.s
        k = self.k[i % self.layers][self.window_blocks].flatten(1, 2)  # [B, N, KVH, D]
        v = self.v[i % self.layers][self.window_blocks].flatten(1, 2)
        if self.sinks is not None:
            pad = k.new_zeros(s.batch, 16, s.kv_heads, s.head_size)
            k, v = torch.cat([k, pad], 1), torch.cat([v, pad], 1)
        q = self.q.view(s.batch, s.q_len, s.heads, s.head_size).transpose(1, 2)
        out = F.scaled_dot_product_attention(
            q, k.transpose(1, 2), v.transpose(1, 2), attn_mask=self.sdpa_mask, scale=self.scale,
            enable_gqa=True)
        return out.transpose(1, 2).reshape(s.batch * s.q_len, s.heads, s.head_size)

    def reference(self, sinks: bool = True) -> torch.Tensor:
        """fp32 attention over the gathered window (batched form of swa_ops.reference);
        sinks=False leaves the sinks out (what a peer without sink support computes)."""
        s = self.s
        k = self.k[0][self.window_blocks].flatten(1, 2).float()
        v = self.v[0][self.window_blocks].flatten(1, 2).float()
        if s.fp8:
            k, v = k * self.k_scale, v * self.v_scale
        q = self.q.view(s.batch, s.q_len, s.heads, s.head_size)
        out = attend_fp32(q, k, v, self.valid, self.scale, s.soft_cap,
                          self.sinks if sinks else None)
        return out.reshape(s.batch * s.q_len, s.heads, s.head_size)


def _fi_pages(table: torch.Tensor, kv_len: int, block_size: int):
    """FlashInfer's CSR page metadata for rows that all hold kv_len tokens in `table`'s pages."""
    rows, pages = table.shape
    assert pages == (kv_len + block_size - 1) // block_size, (pages, kv_len, block_size)
    indptr = torch.arange(rows + 1, dtype=torch.int32, device=table.device) * pages
    indices = table.contiguous().flatten()
    last = torch.full((rows,), kv_len - (pages - 1) * block_size, dtype=torch.int32,
                      device=table.device)
    return indptr, indices, last


def fi_prefill_wrapper(*, q_len: int, table: torch.Tensor, kv_len: int, heads: int, kv_heads: int,
                       head_size: int, block_size: int, window: int, soft_cap: float,
                       dtype: torch.dtype, scale: float, sinks: Optional[torch.Tensor],
                       num_tokens: int):
    """A planned FlashInfer paged prefill (causal, window_left = W - 1) and its run(q, k, v).

    With sinks: BatchAttentionWithAttentionSinkWrapper (the prefill kernel with the AttentionSink
    JIT variant, sinks passed at run). The plain wrapper's run() takes a `sinks` argument but its
    fa2/fa3 paths (the ones an SM90 card gets) drop it without a word, so it never gets sinks.
    Returns (run, info) where info says which wrapper and backend served the row."""
    import flashinfer
    dev = table.device
    ws = torch.empty(FI_WORKSPACE_BYTES, dtype=torch.uint8, device=dev)
    window_left = window - 1 if window > 0 else -1
    # SWA_BENCH_FI_BACKEND (auto | fa2 | fa3) picks the prefill wrapper's backend, SWA_BENCH_FI_SINKS=0
    # runs it without sinks (the row is marked): FlashInfer JIT-compiles its sm90 (fa3) prefill and
    # sink modules in more than 6 minutes per variant on the GPU machine, longer than one device call.
    if os.environ.get("SWA_BENCH_FI_SINKS", "1") == "0" and sinks is not None:
        raise RuntimeError("FlashInfer sinks disabled (SWA_BENCH_FI_SINKS=0)")
    backend = os.environ.get("SWA_BENCH_FI_BACKEND", "auto")
    if sinks is not None:
        wrapper = flashinfer.BatchAttentionWithAttentionSinkWrapper(
            ws, "NHD", q_data_type=dtype, kv_data_type=dtype, head_dim_qk=head_size,
            head_dim_vo=head_size, window_left=window_left)
        kind = "sink-wrapper"
    else:
        wrapper = flashinfer.BatchPrefillWithPagedKVCacheWrapper(ws, "NHD", backend=backend)
        kind = "prefill-wrapper"
    rows = table.shape[0]
    qo_indptr = torch.arange(rows + 1, dtype=torch.int32, device=dev) * q_len
    indptr, indices, last = _fi_pages(table, kv_len, block_size)
    wrapper.plan(qo_indptr, indptr, indices, last, heads, kv_heads, head_size, block_size,
                 causal=True, sm_scale=scale, window_left=window_left,
                 logits_soft_cap=soft_cap if soft_cap > 0 else None, q_data_type=dtype,
                 kv_data_type=dtype)
    out = torch.empty(num_tokens, heads, head_size, dtype=dtype, device=dev)
    extra = (sinks, scale) if sinks is not None else ()

    def run(q, k, v):
        return wrapper.run(q, (k, v), *extra, out=out)

    run.keepalive = (ws, wrapper, qo_indptr, indptr, indices, last, out)
    return run, {"fi_kind": kind, "fi_backend": str(getattr(wrapper, "_backend", "?"))}


def flashinfer_runner(pb: Problem, trimmed: bool) -> Optional[Callable[[int], torch.Tensor]]:
    """FlashInfer over the full page table or the table trimmed to the window: its decode wrapper
    (q_len 1), its paged prefill wrapper (causal, multi-token rows). Sinks are not passed: no
    FlashInfer decode path on SM90 applies them (fa2/fa3 ignore the argument; the backends that do,
    trtllm-gen and cuDNN, are SM100 or need cudnn-frontend), so on a sinks row these time and check
    the attention without sinks (marked no_sinks); the sink wrapper is the row's "alt" contender."""
    try:
        import flashinfer
    except ImportError:
        return None
    s = pb.s
    table = pb.window_blocks if trimmed else pb.block_tables
    kv_len = s.ctx - (pb.first_block * s.block_size if trimmed else 0)
    if s.q_len > 1:
        run, info = fi_prefill_wrapper(
            q_len=s.q_len, table=table, kv_len=kv_len, heads=s.heads, kv_heads=s.kv_heads,
            head_size=s.head_size, block_size=s.block_size, window=s.window,
            soft_cap=s.soft_cap, dtype=s.dtype, scale=pb.scale, sinks=None,
            num_tokens=s.batch * s.q_len)
        runner = lambda i: run(pb.q, pb.k[i % pb.layers], pb.v[i % pb.layers])  # noqa: E731
        runner.keepalive = run
        runner.info = f"{info['fi_kind']} ({info['fi_backend']})"
        return runner
    indptr, indices, last = _fi_pages(table, kv_len, s.block_size)
    ws = torch.empty(FI_WORKSPACE_BYTES, dtype=torch.uint8, device=pb.q.device)
    wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
        ws, "NHD", use_tensor_cores=(s.heads // s.kv_heads) >= 4)
    wrapper.plan(indptr, indices, last, s.heads, s.kv_heads, s.head_size, s.block_size,
                 window_left=(s.window - 1) if s.window > 0 else -1,
                 logits_soft_cap=s.soft_cap if s.soft_cap > 0 else None, q_data_type=s.dtype,
                 kv_data_type=torch.float8_e4m3fn if s.fp8 else s.dtype, sm_scale=pb.scale)
    scales = {"k_scale": 0.02, "v_scale": 0.02} if s.fp8 else {}
    runner = lambda i: wrapper.run(pb.q, (pb.k[i % pb.layers], pb.v[i % pb.layers]),  # noqa: E731
                                   **scales)
    runner.keepalive = (ws, wrapper, indptr, indices, last)
    return runner


def flashinfer_alt_runner(pb: Problem) -> Optional[Tuple[Callable[[int], torch.Tensor], str]]:
    """The row's other FlashInfer path, full page table: the attention-sink wrapper for a sinks
    row (FlashInfer's only sink path on SM90: its prefill kernel, q_len query rows per sequence),
    else the decode wrapper's q_len_per_req (tensor cores) for a multi-token row. None where there
    is none. fi_decode_variants() lists the same choice for the warm-up."""
    try:
        import flashinfer
    except ImportError:
        return None
    s = pb.s
    if s.sinks and not s.fp8:
        run, info = fi_prefill_wrapper(
            q_len=s.q_len, table=pb.block_tables, kv_len=s.ctx, heads=s.heads,
            kv_heads=s.kv_heads, head_size=s.head_size, block_size=s.block_size, window=s.window,
            soft_cap=s.soft_cap, dtype=s.dtype, scale=pb.scale, sinks=pb.sinks,
            num_tokens=s.batch * s.q_len)
        runner = lambda i: run(pb.q, pb.k[i % pb.layers], pb.v[i % pb.layers])  # noqa: E731
        runner.keepalive = run
        return runner, f"FI {info['fi_kind']} ({info['fi_backend']})"
    if s.q_len > 1 and not s.fp8:
        indptr, indices, last = _fi_pages(pb.block_tables, s.ctx, s.block_size)
        ws = torch.empty(FI_WORKSPACE_BYTES, dtype=torch.uint8, device=pb.q.device)
        wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(ws, "NHD", use_tensor_cores=True)
        wrapper.plan(indptr, indices, last, s.heads, s.kv_heads, s.head_size, s.block_size,
                     window_left=(s.window - 1) if s.window > 0 else -1,
                     logits_soft_cap=s.soft_cap if s.soft_cap > 0 else None,
                     q_data_type=s.dtype, kv_data_type=s.dtype, sm_scale=pb.scale,
                     q_len_per_req=s.q_len)
        runner = lambda i: wrapper.run(pb.q, (pb.k[i % pb.layers],  # noqa: E731
                                              pb.v[i % pb.layers]))
        runner.keepalive = (ws, wrapper, indptr, indices, last)
        return runner, f"FI decode q_len_per_req={s.q_len}"
    return None


# ---------------------------------------------------------------------------------------------
# Prefill: problem setup and contenders


class PrefillProblem:
    """Paged caches holding every block of every sequence (random block table), the query chunk
    (the last q_len tokens of each sequence) and query_start_loc. All sequences are alike."""

    SAMPLE = 64  # rows per sampled group

    def __init__(self, s: PrefillShape, device: str, seed: int = 0):
        g = torch.Generator(device=device).manual_seed(seed)
        self.s = s
        bps = (s.seq_len + s.block_size - 1) // s.block_size
        self.bps = bps
        num_blocks = s.batch * bps
        shape = (num_blocks, s.block_size, s.kv_heads, s.head_size)
        self.k = torch.randn(shape, generator=g, device=device).to(s.dtype)
        self.v = torch.randn(shape, generator=g, device=device).to(s.dtype)
        self.block_tables = torch.randperm(num_blocks, generator=g, device=device).int()
        self.block_tables = self.block_tables.view(s.batch, bps)
        self.seq_lens = torch.full((s.batch,), s.seq_len, dtype=torch.int32, device=device)
        self.num_tokens = s.batch * s.q_len
        self.q = torch.randn(self.num_tokens, s.heads, s.head_size, generator=g,
                             device=device).to(s.dtype)
        self.query_start_loc = (torch.arange(s.batch + 1, device=device) * s.q_len).int()
        self.sinks = make_sinks(s.heads, g, device) if s.sinks else None
        self.scale = s.head_size ** -0.5
        self.ctx0 = s.seq_len - s.q_len  # tokens cached before the chunk
        # The block holding the first key any row sees, and that block's first position.
        self.kv_start = flex_kv_start(s)
        self.first_block = self.kv_start // s.block_size

    def swa(self, i: int) -> torch.Tensor:
        s = self.s
        return torch.ops.swa_ops.paged_attention(
            self.q, self.k, self.v, self.block_tables, self.seq_lens, self.scale, s.window,
            s.soft_cap, self.sinks, self.query_start_loc, s.q_len, None, None)

    def keys(self, b: int, lo: int, hi: int) -> Tuple[torch.Tensor, torch.Tensor, int]:
        """Sequence b's K and V from the block holding position `lo` to the end of the block
        holding hi - 1 (whole blocks): ([n, KVH, D], [n, KVH, D], first position)."""
        bs = self.s.block_size
        b0, b1 = lo // bs, (hi + bs - 1) // bs
        ids = self.block_tables[b, b0:b1].long()
        return self.k[ids].flatten(0, 1), self.v[ids].flatten(0, 1), b0 * bs

    def sample_groups(self) -> List[Tuple[int, int]]:
        """Query-row ranges [r0, r1) checked in every sequence: the first and last SAMPLE rows and
        SAMPLE rows around the first row whose window no longer starts at key 0."""
        s, n = self.s, self.SAMPLE
        cuts = [(0, min(n, s.q_len)), (max(0, s.q_len - n), s.q_len)]
        if s.window > 0:
            r = s.window - self.ctx0  # the row at position W is the first to drop key 0
            if 0 < r < s.q_len:
                cuts.append((max(0, r - n // 2), min(s.q_len, r + n // 2)))
        merged: List[Tuple[int, int]] = []
        for r0, r1 in sorted(cuts):
            if merged and r0 <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], r1))
            else:
                merged.append((r0, r1))
        return merged

    def sample_reference(self, sinks: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
        """(token indices, fp32 attention of those rows [S, H, D]) over the paged cache, one
        sampled group at a time (keys from the group's first window start to its last row)."""
        s = self.s
        idx, refs = [], []
        for b in range(s.batch):
            for r0, r1 in self.sample_groups():
                p0, p1 = self.ctx0 + r0, self.ctx0 + r1  # absolute positions of the rows
                klo = max(0, p0 - s.window + 1) if s.window > 0 else 0
                k, v, kpos0 = self.keys(b, klo, p1)
                kpos = kpos0 + torch.arange(k.shape[0], device=k.device)
                rpos = torch.arange(p0, p1, device=k.device)
                valid = kpos[None, :] <= rpos[:, None]
                if s.window > 0:
                    valid &= kpos[None, :] > rpos[:, None] - s.window
                t0 = b * s.q_len
                q = self.q[t0 + r0:t0 + r1].unsqueeze(0)
                refs.append(attend_fp32(q, k.unsqueeze(0), v.unsqueeze(0), valid, self.scale,
                                        s.soft_cap, self.sinks if sinks else None)[0])
                idx.append(torch.arange(t0 + r0, t0 + r1, device=k.device))
        return torch.cat(idx), torch.cat(refs)


class SdpaPrefill:
    """PyTorch SDPA, one call per sequence and 2048-row query chunk, over the keys that chunk's
    rows can see (gathered from the pages inside the call, GQA expanded with repeat_interleave so
    the fused masked kernels apply), with an additive window-causal mask built once per chunk
    geometry. Sinks as in the decode SDPA: 16 extra zero keys, the first biased by the sink."""

    CHUNK = 2048

    def __init__(self, pp: PrefillProblem):
        self.pp = pp
        s = pp.s
        self.out = torch.empty_like(pp.q)
        self.plan = []  # (row0, row1, key lo, key hi, mask key)
        self.masks: Dict[Tuple[int, int, int], torch.Tensor] = {}
        bs = s.block_size
        for r0 in range(0, s.q_len, self.CHUNK):
            r1 = min(s.q_len, r0 + self.CHUNK)
            p0, p1 = pp.ctx0 + r0, pp.ctx0 + r1
            klo = max(0, p0 - s.window + 1) if s.window > 0 else 0
            k0 = klo // bs * bs
            nk = (p1 + bs - 1) // bs * bs - k0
            key = (r1 - r0, nk, p0 - k0)
            if key not in self.masks:
                self.masks[key] = self._mask(*key)
            self.plan.append((r0, r1, klo, p1, key))

    def _mask(self, rows: int, nk: int, q_off: int) -> torch.Tensor:
        s, dev = self.pp.s, self.pp.q.device
        rpos = q_off + torch.arange(rows, device=dev)
        kpos = torch.arange(nk, device=dev)
        valid = kpos[None, :] <= rpos[:, None]
        if s.window > 0:
            valid &= kpos[None, :] > rpos[:, None] - s.window
        bias = torch.where(valid, 0.0, float("-inf"))
        if self.pp.sinks is None:
            return bias.to(s.dtype).view(1, 1, rows, nk)
        mask = torch.full((1, s.heads, rows, nk + 16), float("-inf"), device=dev)
        mask[..., :nk] = bias
        mask[..., nk] = self.pp.sinks.view(s.heads, 1)
        return mask.to(s.dtype)

    def __call__(self, i: int) -> torch.Tensor:
        pp, s = self.pp, self.pp.s
        g = s.heads // s.kv_heads
        for b in range(s.batch):
            t0 = b * s.q_len
            for r0, r1, klo, khi, key in self.plan:
                k, v, _ = pp.keys(b, klo, khi)  # [nk, KVH, D]
                k = k.transpose(0, 1).repeat_interleave(g, dim=0)  # [H, nk, D]
                v = v.transpose(0, 1).repeat_interleave(g, dim=0)
                if pp.sinks is not None:
                    pad = k.new_zeros(s.heads, 16, s.head_size)
                    k, v = torch.cat([k, pad], 1), torch.cat([v, pad], 1)
                q = pp.q[t0 + r0:t0 + r1].transpose(0, 1).unsqueeze(0)  # [1, H, rows, D]
                o = F.scaled_dot_product_attention(q, k.unsqueeze(0), v.unsqueeze(0),
                                                   attn_mask=self.masks[key], scale=pp.scale)
                self.out[t0 + r0:t0 + r1].copy_(o[0].transpose(0, 1))
        return self.out


def flex_inputs(pp: PrefillProblem) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Contiguous q [B, H, q_len, D] and K/V [B, KVH, NK, D] from the first visible block on."""
    s = pp.s
    q = pp.q.view(s.batch, s.q_len, s.heads, s.head_size).transpose(1, 2).contiguous()
    ids = pp.block_tables[:, pp.first_block:].long()  # [B, blocks]
    k = pp.k[ids].flatten(1, 2).transpose(1, 2).contiguous()
    v = pp.v[ids].flatten(1, 2).transpose(1, 2).contiguous()
    return q, k, v


class FlexPrefill:
    """FlexAttention (torch.compile'd once per shape, static shapes) with a sliding-window causal
    block mask over contiguous K/V (gathered once, outside the timed call). Sinks: the output of
    attention without them times sigmoid(lse - sink), exact since the sink only adds exp(sink) to
    the denominator; fused by inductor into the same compiled call."""

    def __init__(self, s: PrefillShape, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 sinks: Optional[torch.Tensor], kv_start: int, compile: bool = True):
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        q_len, nk = q.shape[2], k.shape[2]
        q_off = s.seq_len - q_len - kv_start  # row 0's position relative to gathered key 0
        window = s.window

        def mask_mod(b, h, q_idx, kv_idx):
            q_pos = q_idx + q_off
            causal = kv_idx <= q_pos
            if window > 0:
                return causal & (q_pos - kv_idx < window)
            return causal

        self.block_mask = create_block_mask(mask_mod, None, None, q_len, nk, device=q.device)
        cap, scale = s.soft_cap, s.head_size ** -0.5

        def soft_cap(score, b, h, q_idx, kv_idx):
            return cap * torch.tanh(score / cap)

        score_mod = soft_cap if cap > 0 else None

        def attend(q, k, v, block_mask, sinks):
            if sinks is None:
                return flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask,
                                      scale=scale, enable_gqa=True)
            o, lse = flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask,
                                    scale=scale, enable_gqa=True, return_lse=True)
            w = torch.sigmoid(lse - sinks.view(1, -1, 1)).unsqueeze(-1)
            return (o.float() * w).to(o.dtype)

        self.fn = torch.compile(attend, dynamic=False) if compile else attend
        self.q, self.k, self.v, self.sinks = q, k, v, sinks

    def __call__(self, i: int) -> torch.Tensor:
        return self.fn(self.q, self.k, self.v, self.block_mask, self.sinks)

    @staticmethod
    def to_tokens(out: torch.Tensor) -> torch.Tensor:
        """[B, H, q_len, D] -> [B * q_len, H, D], the order of the other contenders."""
        b, h, n, d = out.shape
        return out.transpose(1, 2).reshape(b * n, h, d)


def fi_prefill_runner(pp: PrefillProblem, sinks: bool = True):
    """FlashInfer paged prefill over the full page table: (run(i), info)."""
    s = pp.s
    run, info = fi_prefill_wrapper(
        q_len=s.q_len, table=pp.block_tables, kv_len=s.seq_len, heads=s.heads,
        kv_heads=s.kv_heads, head_size=s.head_size, block_size=s.block_size, window=s.window,
        soft_cap=s.soft_cap, dtype=s.dtype, scale=pp.scale,
        sinks=pp.sinks if sinks else None, num_tokens=pp.num_tokens)
    runner = lambda i: run(pp.q, pp.k, pp.v)  # noqa: E731
    runner.keepalive = run
    return runner, info


# ---------------------------------------------------------------------------------------------
# Timing


def kernel_times(fn: Callable[[int], object], calls: int) -> Dict[str, float]:
    """Per-call device time of each kernel (and memcpy/memset) the call ran, from the profiler,
    summed by kernel name and divided by the number of calls."""
    for i in range(3):
        fn(i)
    torch.cuda.synchronize()
    from torch.autograd import DeviceType
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for i in range(calls):
            fn(i)
        torch.cuda.synchronize()
    per: Dict[str, float] = {}
    for e in prof.events():
        if e.device_type == DeviceType.CUDA:
            per[e.name] = per.get(e.name, 0.0) + e.time_range.elapsed_us() / calls
    return per


def short_name(kernel: str) -> str:
    for key in ("decode_mma_kernel", "merge_kernel", "cache_write_kernel", "token_map_kernel"):
        if key in kernel:
            return key
    return kernel[:40]


def kernel_time_us(fn: Callable[[int], object], calls: int) -> float:
    """Mean per call of the summed durations of the device kernels (and memcpy/memset) it ran."""
    return sum(kernel_times(fn, calls).values())


# How long a spin kernel holds the stream before each timed batch of graph replays (below).
HOLD_US = 2000.0


def hold_stream(us: float = HOLD_US) -> None:
    """Keeps the current stream busy for about `us` (a one-thread spin on the SM clock; at a
    throttled clock it only lasts longer), so that what the host enqueues next is queued before
    the device reaches it."""
    spin = getattr(torch.cuda, "_sleep", None)  # private in torch, so it may go
    if spin is None:
        if not getattr(hold_stream, "warned", False):
            hold_stream.warned = True
            print("warning: torch.cuda._sleep is gone: graph timings include the host's "
                  "submission latency", flush=True)
        return
    clock_khz = getattr(torch.cuda.get_device_properties(0), "clock_rate", 0) or 1_980_000
    spin(int(us * clock_khz / 1000))


def capture_chain(fn: Callable[[int], object], chain: int) -> "torch.cuda.CUDAGraph":
    """A CUDA graph of fn(0), ..., fn(chain - 1), after three calls on a side stream (lazy
    initialization stays out of the capture), replayed once."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for i in range(3):
            fn(i)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(chain):
            fn(i)
    graph.replay()
    torch.cuda.synchronize()
    return graph


def graph_time_us(fn: Callable[[int], object], layers: int, replays: int = 20) -> float:
    """Per-call time of a CUDA graph holding a chain of calls that rotates over the layers.

    Before each timed batch a spin holds the stream while the host records the start event and
    enqueues the replays: otherwise the device reaches the start event at once and then idles
    until the host has submitted the first replay, and that host latency (0.2 µs per call on
    seed, H100, run 159: 94.3 against 94.1) is counted as device time. Back-to-back replays
    after the first are enqueued far faster than they run, so nothing else of the host's is."""
    chain = max(layers, 8)
    graph = capture_chain(fn, chain)
    times = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        hold_stream()
        a.record()
        for _ in range(replays):
            graph.replay()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) * 1000.0 / (replays * chain))
    del graph
    return statistics.median(times)


def event_times_us(fns: Dict[str, Callable[[int], object]], target_ms: float = 300.0,
                   reps: int = 5, batches: Optional[Dict[str, List[float]]] = None
                   ) -> Dict[str, float]:
    """Per-call time of back-to-back calls on the current stream, for each of `fns`: CUDA events
    around a batch of calls sized to about target_ms (2 to 50 calls), median of `reps` batches.
    For calls of a millisecond or more, host launch gaps hide behind the queued work. At the
    H100's power cap a batch's clock depends on what ran just before it (notes/prefill.md): a
    burst after an idle GPU starts throttled as low as 1380 MHz, then settles. So every
    contender first runs one unmeasured batch (the GPU reaches its sustained power state), and
    with several contenders their measured batches alternate (A B, B A, A B, ...), so none of
    them always follows the same one. `batches`, if given, receives each contender's batch
    times (µs per call, in order)."""
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    calls = {}
    for key, fn in fns.items():
        fn(0)
        torch.cuda.synchronize()
        a.record()
        fn(1)
        b.record()
        b.synchronize()
        calls[key] = max(2, min(50, math.ceil(target_ms / max(a.elapsed_time(b), 1e-3))))
    times: Dict[str, List[float]] = {key: [] for key in fns}
    order = list(fns)
    for rep in range(-1, reps):  # rep -1: the unmeasured warm batches
        for key in (order if rep % 2 == 0 else order[::-1]):
            fn = fns[key]
            a.record()
            for i in range(calls[key]):
                fn(i)
            b.record()
            b.synchronize()
            if rep >= 0:
                times[key].append(a.elapsed_time(b) * 1000.0 / calls[key])
    if batches is not None:
        batches.update(times)
    return {key: statistics.median(t) for key, t in times.items()}


def event_time_us(fn: Callable[[int], object], target_ms: float = 300.0, reps: int = 5,
                  batches: Optional[List[float]] = None) -> float:
    """event_times_us of one contender (its batch times appended to `batches`, if given)."""
    per: Dict[str, List[float]] = {}
    us = event_times_us({"": fn}, target_ms, reps, per)[""]
    if batches is not None:
        batches.extend(per[""])
    return us


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written."""
    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize()
    times = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(10):
            dst.copy_(src)
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1000.0 / 10)
    del src, dst
    return 2 * n / min(times)


# ---------------------------------------------------------------------------------------------
# FlashInfer (and FlexAttention) compile warm-up


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _features(window: int, soft_cap: float) -> str:
    return ("swa" if window > 0 else "full") + ("-cap" if soft_cap > 0 else "")


def fi_decode_variants(s: Shape) -> List[Tuple[str, str]]:
    """(runner kind, JIT-variant key) of each FlashInfer path a decode row runs. The key names
    what picks FlashInfer's compiled module (wrapper path, head size, dtypes, window, soft-cap) so
    rows that share a module share one warm-up process."""
    dt, feat = _dtype_name(s.dtype), _features(s.window, s.soft_cap)
    kv = "fp8" if s.fp8 else dt
    g = s.heads // s.kv_heads
    if s.q_len > 1:
        out = [("fi", f"prefill-d{s.head_size}-{dt}-{feat}")]
    else:
        out = [("fi", f"decode-{'tc' if g >= 4 else 'cuda-core'}-d{s.head_size}-{kv}-{feat}")]
    if s.sinks and not s.fp8:
        out.append(("alt", f"sink-d{s.head_size}-{dt}-{feat}"))
    elif s.q_len > 1 and not s.fp8:
        # The decode wrapper's multi-token path is tensor-core decode: the fa2 prefill module.
        out.append(("alt", f"decode-tc-d{s.head_size}-{kv}-{feat}"))
    return out


def fi_prefill_variant(s: PrefillShape) -> str:
    feat = _features(s.window, s.soft_cap)
    return f"{'sink' if s.sinks else 'prefill'}-d{s.head_size}-{_dtype_name(s.dtype)}-{feat}"


def warmup_tasks(decode: Sequence[Shape], prefill: Sequence[PrefillShape],
                 peers: Sequence[str]) -> List[Tuple[str, str]]:
    """(key, spec) per process: one per distinct FlashInfer JIT variant the rows need, one per
    prefill shape for FlexAttention. spec is what --warm-one takes: section:shape:kind."""
    tasks: Dict[str, str] = {}
    if "flashinfer" in peers:
        for s in decode:
            for kind, key in fi_decode_variants(s):
                tasks.setdefault(key, f"decode:{s.name}:{kind}")
        for p in prefill:
            tasks.setdefault(fi_prefill_variant(p), f"prefill:{p.name}:fi")
    if "flex" in peers:
        for p in prefill:
            tasks.setdefault(f"flex-{p.name}", f"prefill:{p.name}:flex")
    return list(tasks.items())


def _tiny_decode(s: Shape) -> Shape:
    """Same FlashInfer variant (heads, head size, dtypes, window > 0, cap, q_len), tiny sizes."""
    return dataclasses.replace(s, batch=2, ctx=min(s.ctx, 256))


def _tiny_prefill(s: PrefillShape) -> PrefillShape:
    q_len = min(s.q_len, 128)
    return dataclasses.replace(s, batch=2, q_len=q_len,
                               seq_len=q_len + min(s.seq_len - s.q_len, 128))


def warm_one(spec: str, prefill_batch: int) -> None:
    """Compile (and run once) what `spec` names, in this process: a FlashInfer variant on a tiny
    problem of that row, or FlexAttention on the row's full shapes (inductor caches per shape)."""
    section, name, kind = spec.split(":")
    if section == "decode":
        s = next(x for x in SHAPES if x.name == name)
        pb = Problem(_tiny_decode(s), 1, "cuda")
        fn = flashinfer_runner(pb, trimmed=False) if kind == "fi" else flashinfer_alt_runner(pb)[0]
        fn(0)
    else:
        s = next(x for x in prefill_shapes(prefill_batch) if x.name == name)
        if kind == "fi":
            pp = PrefillProblem(_tiny_prefill(s), "cuda")
            try:
                fi_prefill_runner(pp)[0](0)
            except Exception:
                if not s.sinks:
                    raise
                fi_prefill_runner(pp, sinks=False)[0](0)  # what the row falls back to
        else:
            # Only shapes and dtypes matter to the compiled code: random tensors of the real
            # sizes (those of flex_inputs), not the whole problem.
            kv_start = flex_kv_start(s)
            nk = -(-s.seq_len // s.block_size) * s.block_size - kv_start
            q = torch.randn(s.batch, s.heads, s.q_len, s.head_size, device="cuda").to(s.dtype)
            k = torch.randn(s.batch, s.kv_heads, nk, s.head_size, device="cuda").to(s.dtype)
            sinks = torch.zeros(s.heads, device="cuda") if s.sinks else None
            FlexPrefill(s, q, k, torch.randn_like(k), sinks, kv_start)(0)
    torch.cuda.synchronize()


def flex_kv_start(s: PrefillShape) -> int:
    """First position of the block holding the first key any query row sees: where the gathered
    K/V of FlexAttention start (PrefillProblem.kv_start)."""
    ctx0 = s.seq_len - s.q_len
    lo = max(0, ctx0 - s.window + 1) if s.window > 0 else 0
    return lo // s.block_size * s.block_size


def warm_up(tasks: List[Tuple[str, str]], prefill_batch: int, timeout_s: float) -> Dict:
    """Runs every task in its own subprocess at once (FlashInfer's JIT cache is on disk and
    file-locked, inductor's too) and waits; ninja's parallelism in each is capped so that the
    processes together use about the machine's cores (MAX_JOBS, unless already set). Each child
    leads a session of its own, so a late one is stopped with its compilers (its process group)."""
    if not tasks:
        return {}
    env = dict(os.environ)
    cpus = os.cpu_count() or 8
    if "MAX_JOBS" not in env:
        env["MAX_JOBS"] = str(max(2, math.ceil(cpus / len(tasks))))
    logdir = tempfile.mkdtemp(prefix="swa_bench_warm_")
    print(f"warm-up: {len(tasks)} processes (FlashInfer JIT variants, FlexAttention shapes), "
          f"MAX_JOBS={env['MAX_JOBS']} each, logs in {logdir}", flush=True)
    t0 = time.time()
    procs = {}
    status: Dict[str, Dict] = {}

    def stop(p: subprocess.Popen) -> None:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # the child's own group: it and its compilers
        except ProcessLookupError:
            pass
        p.wait()

    try:
        for key, spec in tasks:
            log = open(os.path.join(logdir, key + ".log"), "w")
            cmd = [sys.executable, "-m", "swa_ops.bench", "--warm-one", spec,
                   "--prefill-batch", str(prefill_batch)]
            procs[key] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                           start_new_session=True), log, spec)
        while len(status) < len(procs):
            for key, (p, log, spec) in procs.items():
                if key in status:
                    continue
                rc = p.poll()
                if rc is None and time.time() - t0 <= timeout_s:
                    continue
                if rc is None:
                    stop(p)
                    rc = "timeout"
                log.close()
                status[key] = {"spec": spec, "rc": rc, "s": round(time.time() - t0, 1)}
                print(f"  [{time.time() - t0:6.1f} s] {key}: "
                      f"{'ok' if rc == 0 else f'FAILED ({rc})'}", flush=True)
                if rc != 0:
                    with open(log.name) as f:
                        print("    " + "    ".join(f.readlines()[-15:]), flush=True)
            time.sleep(0.5)
    finally:  # interrupted: leave no compiler running
        for key, (p, log, _) in procs.items():
            if key not in status and p.poll() is None:
                stop(p)
    total = time.time() - t0
    print(f"warm-up done in {total:.1f} s", flush=True)
    return {"seconds": round(total, 1), "tasks": status, "max_jobs": env["MAX_JOBS"]}


# ---------------------------------------------------------------------------------------------
# Decode section


def run_decode(args, shapes: Sequence[Shape], peers: Sequence[str], device: str = "cuda",
               on_row: Optional[Callable[..., None]] = None) -> Dict:
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    bw = copy_bandwidth()
    print(f"decode: copy bandwidth {bw / 1e12:.3f} TB/s (read + write); L2 {l2 >> 20} MB",
          flush=True)
    rows = []
    for s in shapes:
        layers = max(1, min(8, math.ceil(4 * l2 / s.window_bytes())))
        pb = Problem(s, layers, device)
        floor = s.window_bytes() / bw * 1e6
        row = {"shape": s.name, "batch": s.batch, "heads": f"{s.heads}/{s.kv_heads}",
               "head_size": s.head_size, "ctx": s.ctx, "window": s.window, "q_len": s.q_len,
               "soft_cap": s.soft_cap, "sinks": s.sinks, "fp8": s.fp8, "layers": layers,
               "floor_us": floor}
        notes = []
        ref = pb.reference()
        ref_nosink = pb.reference(sinks=False) if s.sinks else ref
        out = pb.swa(0)
        row["swa_err"], wrong = check(out, ref)
        if wrong:
            row["swa_wrong"] = True
            notes.append("swa_ops WRONG")
        per = kernel_times(pb.swa, args.calls)
        row["swa_kernel_us"] = sum(per.values())
        row["swa_kernels_us"] = {short_name(k): v for k, v in per.items()}
        row["swa_us"] = graph_time_us(pb.swa, layers)
        # Each peer: CUDA-graph replay where its call captures, else the profiler's kernel sum
        # (which leaves out launch gaps, so it can only flatter the peer). "_how" says which.
        peers_us = {}
        runners = []
        if "flashinfer" in peers:
            for trimmed in (False, True):
                key = "fi_trim" if trimmed else "fi_full"
                try:
                    fn = flashinfer_runner(pb, trimmed)
                except Exception as e:  # a peer failing must not hide our numbers
                    print(f"  {s.name}: FlashInfer ({key}) setup failed: {type(e).__name__}: {e}")
                    fn = None
                if fn is not None:
                    runners.append((key, fn))
                    if hasattr(fn, "info") and not trimmed:
                        notes.append(f"FI full/trim = {fn.info}")
            try:
                alt = flashinfer_alt_runner(pb)
            except Exception as e:
                print(f"  {s.name}: FlashInfer (fi_alt) setup failed: {type(e).__name__}: {e}")
                alt = None
            if alt is not None:
                runners.append(("fi_alt", alt[0]))
                row["fi_alt_kind"] = alt[1]
                notes.append(f"FI alt = {alt[1]}")
            if s.sinks and any(k in ("fi_full", "fi_trim") for k, _ in runners):
                # No FlashInfer decode path on SM90 applies sinks: checked against attention
                # without them, kept out of "vs best".
                row["fi_full_no_sinks"] = row["fi_trim_no_sinks"] = True
                notes.append("FI full/trim without sinks (no SM90 decode support; not in vs best)")
        if "sdpa" in peers:
            if pb.sdpa_mask is not None:
                runners.append(("sdpa", pb.sdpa))
            else:
                notes.append("SDPA n/a (" + ("fp8" if s.fp8 else "no soft-cap") + ")")
        for key, fn in runners:
            try:
                expect = ref_nosink if row.get(key + "_no_sinks") else ref
                row[key + "_err"], wrong = check(fn(0), expect)
                if wrong:
                    row[key + "_wrong"] = True
                    notes.append(f"{key} WRONG")
                row[key + "_kernel_us"] = kernel_time_us(fn, args.calls)
                try:
                    peers_us[key] = graph_time_us(fn, layers)
                    row[key + "_how"] = "graph"
                except Exception as e:
                    print(f"  {s.name}: {key} graph capture failed ({type(e).__name__}); "
                          "using its profiler kernel time")
                    torch.cuda.synchronize()
                    peers_us[key] = row[key + "_kernel_us"]
                    row[key + "_how"] = "kernels"
            except Exception as e:
                print(f"  {s.name}: {key} failed: {type(e).__name__}: {e}")
        del runners
        row.update({k + "_us": v for k, v in peers_us.items()})
        row["frac_copy_bw"] = floor / row["swa_us"]
        same = {k: v for k, v in peers_us.items() if not row.get(k + "_no_sinks")}
        if same:
            best = min(same.values())
            row["best_peer_us"] = best
            row["speedup"] = best / row["swa_us"]
        row["notes"] = "; ".join(notes)
        rows.append(row)
        print_row(row, header=len(rows) == 1)
        if on_row is not None:
            on_row("rows", rows, {"copy_bandwidth_Bps": bw, "l2_bytes": l2})
        if args.breakdown:
            print("      " + "; ".join(f"{k}: {v:.1f}" for k, v in row["swa_kernels_us"].items()))
        del pb, ref, ref_nosink, out
        torch.cuda.empty_cache()
    if any(r.get("notes") for r in rows):
        print("notes:")
        for r in rows:
            if r.get("notes"):
                print(f"  {r['shape']}: {r['notes']}")
    return {"copy_bandwidth_Bps": bw, "l2_bytes": l2, "rows": rows}


COLS = [("shape", "shape", "{:>15}"), ("floor_us", "floor", "{:>7.1f}"),
        ("swa_us", "swa_ops", "{:>8.1f}"), ("swa_kernel_us", "swa(kern)", "{:>9.1f}"),
        ("fi_full_us", "FI full", "{:>8.1f}"), ("fi_trim_us", "FI trim", "{:>8.1f}"),
        ("fi_alt_us", "FI alt", "{:>8.1f}"), ("sdpa_us", "SDPA", "{:>8.1f}"),
        ("frac_copy_bw", "x copyBW", "{:>8.3f}"), ("speedup", "vs best", "{:>8.2f}"),
        ("swa_err", "swa err", "{:>8.1e}"), ("fi_full_err", "FI err", "{:>8.1e}"),
        ("fi_alt_err", "alt err", "{:>8.1e}")]


def _width(fmt: str) -> int:
    return len(fmt.format(0)) if ("f" in fmt or "e" in fmt) else int(fmt[3:-1])


def print_row(row: Dict, header: bool) -> None:
    """One decode row; '!' after a contender's time marks it wrong (see check()) and
    '*' marks a FlashInfer time without sinks on a sinks row."""
    if header:
        print(" ".join(f"{name:>{_width(fmt)}}" for _, name, fmt in COLS))
    cells = []
    for key, _, fmt in COLS:
        v = row.get(key)
        cell = fmt.format(v) if v is not None else "-".rjust(_width(fmt))
        base = key[:-3] if key.endswith("_us") else None
        if base and row.get(base + "_wrong"):
            cell = cell[1:] + "!"
        elif base and row.get(base + "_no_sinks"):
            cell = cell[1:] + "*"
        cells.append(cell)
    print(" ".join(cells), flush=True)


# ---------------------------------------------------------------------------------------------
# Prefill section


PREFILL_CONTENDERS = [("swa", "swa_ops"), ("fi", "FlashInfer"), ("sdpa", "SDPA"),
                      ("flex", "Flex")]


def prefill_shapes(batch: int = 0) -> List[PrefillShape]:
    return [dataclasses.replace(s, batch=batch) if batch > 0 else s for s in PREFILL_SHAPES]


def run_prefill(args, shapes: Sequence[PrefillShape], peers: Sequence[str],
                device: str = "cuda", on_row: Optional[Callable[..., None]] = None) -> List[Dict]:
    print("prefill: causal + window, bf16, block 16; device µs per call (TFLOP/s of the unmasked "
          "work); max abs error vs fp32 on sampled rows", flush=True)
    rows = []
    for s in shapes:
        row = prefill_row(args, s, peers, device)  # everything it allocated is freed on return
        torch.cuda.empty_cache()
        rows.append(row)
        print_prefill_row(row, header=len(rows) == 1)
        if on_row is not None:
            on_row("prefill_rows", rows, {})
        if args.breakdown and "swa_kernels_us" in row:
            print("      " + "; ".join(f"{k}: {v:.1f}" for k, v in row["swa_kernels_us"].items()))
    if any(r.get("notes") for r in rows):
        print("notes:")
        for r in rows:
            if r.get("notes"):
                print(f"  {r['shape']}: {r['notes']}")
    return rows


def prefill_row(args, s: PrefillShape, peers: Sequence[str], device: str) -> Dict:
    """One prefill row: each contender built in turn (so only one holds its buffers), checked on
    the sampled rows, then timed."""
    pp = PrefillProblem(s, device)
    flops = prefill_flops(s)
    row = {"shape": s.name, "batch": s.batch, "heads": f"{s.heads}/{s.kv_heads}",
           "head_size": s.head_size, "seq_len": s.seq_len, "q_len": s.q_len, "window": s.window,
           "sinks": s.sinks, "soft_cap": s.soft_cap, "flops": flops}
    notes = []
    idx, ref = pp.sample_reference()
    ref_nosink = pp.sample_reference(sinks=False)[1] if s.sinks else ref
    row["checked_rows"] = int(idx.numel())

    def fi_factory():
        try:
            return fi_prefill_runner(pp)
        except Exception as e:
            if not s.sinks:
                raise
            # No sink path here: FlashInfer without sinks, checked against that.
            print(f"  {s.name}: FlashInfer sink wrapper failed ({type(e).__name__}: {e}); "
                  "running FlashInfer without sinks")
            fn, info = fi_prefill_runner(pp, sinks=False)
            return fn, dict(info, fi_no_sinks=True)

    def build_and_check(key: str, factory: Callable) -> Callable:
        fn, info = factory()
        row.update(info)
        to_tokens = FlexPrefill.to_tokens if key == "flex" else (lambda t: t)
        expect = ref_nosink if row.get(key + "_no_sinks") else ref
        t0 = time.time()
        out = to_tokens(fn(0))  # the first call compiles where there is compiling to do
        row[key + "_first_call_s"] = round(time.time() - t0, 2)
        row[key + "_err"], wrong = check(out[idx], expect)
        del out
        if wrong:
            row[key + "_wrong"] = True
            notes.append(f"{key} WRONG")
        if key == "swa" and args.breakdown:
            per = kernel_times(fn, 3)
            row["swa_kernels_us"] = {short_name(k): v for k, v in per.items()}
        return fn

    def record_time(key: str, us: float, batches: Sequence[float] = ()) -> None:
        row[key + "_us"] = us
        row[key + "_tflops"] = flops / us / 1e6
        if batches:  # every measured batch, in order (the spread behind the median)
            row[key + "_batches_us"] = [round(t, 1) for t in batches]

    def measure(key: str, factory: Callable) -> None:
        batches: List[float] = []
        us = event_time_us(build_and_check(key, factory), args.target_ms, batches=batches)
        record_time(key, us, batches)

    factories: List[Tuple[str, Callable]] = [("swa", lambda: (pp.swa, {}))]
    if "flashinfer" in peers:
        factories.append(("fi", fi_factory))
    if "sdpa" in peers:
        factories.append(("sdpa", lambda: (SdpaPrefill(pp), {})))
    if "flex" in peers:
        factories.append(("flex", lambda: (FlexPrefill(s, *flex_inputs(pp), pp.sinks,
                                                       pp.kv_start), {})))
    def failed(key: str, e: Exception) -> None:  # a contender failing must not hide the others
        msg = f"{type(e).__name__}: {str(e)[:300]}"
        print(f"  {s.name}: {key} failed: {msg}")
        row[key + "_failed"] = msg

    # swa_ops and FlashInfer (both thin: they share the problem's tensors) are timed together,
    # their batches alternating (event_times_us); the others one at a time, each built in turn.
    paired = {}
    for key, factory in factories:
        if key in ("swa", "fi"):
            try:
                paired[key] = build_and_check(key, factory)
            except Exception as e:
                failed(key, e)
    try:
        per: Dict[str, List[float]] = {}
        for key, us in event_times_us(paired, args.target_ms, batches=per).items():
            record_time(key, us, per.get(key, ()))
    except Exception as e:
        for key in paired:
            failed(key, e)
    del paired
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    for key, factory in factories:
        if key in ("swa", "fi"):
            continue
        try:
            measure(key, factory)
        except Exception as e:  # (or OOM)
            failed(key, e)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    if row.get("fi_no_sinks"):
        notes.append("FI without sinks (not in vs best)")
    if "fi_kind" in row:
        notes.append(f"FI = {row['fi_kind']} ({row.get('fi_backend')})")
    peer_us = {k: row[k + "_us"] for k, _ in PREFILL_CONTENDERS[1:]
               if k + "_us" in row and not row.get(k + "_no_sinks")}
    if peer_us and "swa_us" in row:
        row["best_peer_us"] = min(peer_us.values())
        row["speedup"] = row["best_peer_us"] / row["swa_us"]
    row["notes"] = "; ".join(notes)
    return row


def print_prefill_row(row: Dict, header: bool) -> None:
    """One prefill row: µs (TFLOP/s) per contender, '!' = wrong, '*' = FlashInfer without sinks."""
    if header:
        head = (f"{'shape':>15} {'B':>2} {'q/kv':>5} {'D':>3} {'ctx':>6} {'new':>6} {'W':>5} "
                f"{'TFLOP':>6} |")
        head += "".join(f"{name:>16}" for _, name in PREFILL_CONTENDERS)
        head += f" {'vs best':>7} | " + " ".join(f"{n[:7]:>7}" for _, n in PREFILL_CONTENDERS)
        print(head + "  (max abs err)")
    line = (f"{row['shape']:>15} {row['batch']:>2} {row['heads']:>5} {row['head_size']:>3} "
            f"{row['seq_len']:>6} {row['q_len']:>6} {row['window']:>5} "
            f"{row['flops'] / 1e12:>6.2f} |")
    for key, _ in PREFILL_CONTENDERS:
        if key + "_us" in row:
            mark = "!" if row.get(key + "_wrong") else ("*" if row.get(key + "_no_sinks") else " ")
            line += f"{row[key + '_us']:>9.1f} ({row[key + '_tflops']:>3.0f}){mark}"
        else:
            line += f"{'-':>16}"
    line += f" {row['speedup']:>7.2f} |" if "speedup" in row else f" {'-':>7} |"
    for key, _ in PREFILL_CONTENDERS:
        line += f" {row[key + '_err']:>7.1e}" if key + "_err" in row else f" {'-':>7}"
    print(line, flush=True)


# ---------------------------------------------------------------------------------------------


def plot(result: Dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = []
    if result.get("rows"):
        panels.append(("decode", result["rows"],
                       [("floor_us", "floor"), ("swa_us", "swa_ops"),
                        ("fi_full_us", "FlashInfer full"), ("fi_trim_us", "FlashInfer trimmed"),
                        ("fi_alt_us", "FlashInfer alt"), ("sdpa_us", "SDPA gathered")]))
    if result.get("prefill_rows"):
        panels.append(("prefill", result["prefill_rows"],
                       [(k + "_tflops", n) for k, n in PREFILL_CONTENDERS]))
    if not panels:
        return
    width_in = max(8, 1.3 * max(len(rows) for _, rows, _ in panels))
    fig, axes = plt.subplots(len(panels), 1, figsize=(width_in, 4.5 * len(panels)), squeeze=False)
    for ax, (kind, rows, series) in zip(axes[:, 0], panels):
        series = [(k, n) for k, n in series if any(k in r for r in rows)]
        width = 0.8 / max(1, len(series))
        for j, (key, name) in enumerate(series):
            xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(rows))]
            bars = ax.bar(xs, [r.get(key, 0) for r in rows], width, label=name)
            base = key.rsplit("_", 1)[0]
            for bar, r in zip(bars, rows):  # mark wrong results and FlashInfer without sinks
                tag = "!" if r.get(base + "_wrong") else ("*" if r.get(base + "_no_sinks") else "")
                if tag and r.get(key):
                    ax.annotate(tag, (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                                ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([r["shape"] for r in rows], rotation=20)
        if kind == "decode":
            ax.set_yscale("log")
            ax.set_ylabel("device µs per decode call (log)")
            ax.set_title(f"paged SWA decode — {result['device']}  (* FI without sinks, ! wrong)")
        else:
            ax.set_ylabel("TFLOP/s (unmasked work; higher is better)")
            ax.set_title(f"paged SWA prefill, causal + window — {result['device']}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run_cache_write(args) -> Dict:
    """reshape_and_cache against the PyTorch index_put it replaces (with the same fp8 quantization
    as swa_ops.reference.quantize_fp8), graph replay, Mistral-like caches."""
    from swa_ops.reference import quantize_fp8
    rows = []
    kvh, d, bs = 8, 128, 16
    num_blocks = 65536
    for cache_dtype in (torch.bfloat16, torch.float8_e4m3fn):
        kc = torch.zeros(num_blocks, bs, kvh, d, device="cuda").to(cache_dtype)
        vc = torch.zeros_like(kc)
        for tokens in (32, 8192):
            key = torch.randn(tokens, kvh, d, device="cuda", dtype=torch.bfloat16)
            value = torch.randn_like(key)
            slots = torch.randperm(num_blocks * bs, device="cuda")[:tokens]
            fp8 = cache_dtype == torch.float8_e4m3fn
            ks = torch.tensor([0.05], device="cuda") if fp8 else None
            vs = torch.tensor([0.05], device="cuda") if fp8 else None
            blk, off = slots // bs, slots % bs

            def ours(i):
                torch.ops.swa_ops.reshape_and_cache(key, value, kc, vc, slots, ks, vs)

            def torch_index_put(i):
                kk, vv = (quantize_fp8(key, ks), quantize_fp8(value, vs)) if fp8 else (key, value)
                kc[blk, off] = kk
                vc[blk, off] = vv

            moved = 2 * tokens * kvh * d * (key.element_size() + kc.element_size())
            row = {"cache": str(cache_dtype).replace("torch.", ""), "tokens": tokens,
                   "swa_us": graph_time_us(ours, 1), "torch_us": graph_time_us(torch_index_put, 1),
                   "bytes": moved}
            row["speedup"] = row["torch_us"] / row["swa_us"]
            rows.append(row)
            print(f"reshape_and_cache {row['cache']:>14} {tokens:>5} tokens: swa_ops "
                  f"{row['swa_us']:7.2f} us, index_put {row['torch_us']:7.2f} us "
                  f"({row['speedup']:.2f}x); {moved / row['swa_us'] / 1e6:.2f} TB/s moved",
                  flush=True)
        del kc, vc
    return {"device": torch.cuda.get_device_name(), "rows": rows}


def run_cpu(args) -> Dict:
    s = CPU_SHAPE
    pb = Problem(s, 1, "cpu")
    ref = pb.reference()

    def wall_us(fn, reps):
        fn(0)
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn(0)
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts) * 1e6

    out = pb.swa(0)
    res = {"shape": asdict(s) | {"dtype": str(s.dtype)}, "threads": torch.get_num_threads(),
           "swa_err": (out.float() - ref).abs().max().item(),
           "sdpa_err": (pb.sdpa(0).float() - ref).abs().max().item(),
           "swa_us": wall_us(pb.swa, args.reps), "sdpa_us": wall_us(pb.sdpa, args.reps)}
    print(f"CPU decode, {s.batch} x {s.heads}/{s.kv_heads} heads, head {s.head_size}, "
          f"ctx {s.ctx}, W {s.window}, bf16, block {s.block_size}, "
          f"{res['threads']} threads (median wall time of {args.reps}):")
    print(f"  swa_ops CPU op          {res['swa_us'] / 1000:9.2f} ms   max err {res['swa_err']:.1e}")
    print(f"  SDPA over window pages  {res['sdpa_us'] / 1000:9.2f} ms   max err {res['sdpa_err']:.1e}")
    print(f"  speedup {res['sdpa_us'] / res['swa_us']:.2f}x")
    return {"device": "cpu", "rows": [res]}


def select_shapes(args) -> Tuple[List[Shape], List[PrefillShape]]:
    """The decode and prefill rows the arguments pick (--decode / --prefill, --shapes)."""
    pre = prefill_shapes(args.prefill_batch)
    names = [n for n in args.shapes.split(",") if n]
    known = {s.name for s in SHAPES} | {s.name for s in pre}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown shape(s) {', '.join(unknown)}; decode: "
                         f"{', '.join(s.name for s in SHAPES)}; prefill: "
                         f"{', '.join(s.name for s in pre)}")
    decode = [] if args.prefill and not args.decode else SHAPES
    prefill = [] if args.decode and not args.prefill else pre
    if names:
        decode = [s for s in decode if s.name in names]
        prefill = [s for s in prefill if s.name in names]
    return list(decode), list(prefill)


def parse_peers(text: str) -> List[str]:
    known = ("flashinfer", "sdpa", "flex")
    peers = [p for p in text.split(",") if p and p != "none"]
    bad = [p for p in peers if p not in known]
    if bad:
        raise SystemExit(f"unknown peer(s) {', '.join(bad)}; known: {', '.join(known)}, none")
    return peers


def _findable(module: str) -> bool:
    """Whether `module` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except ValueError:  # in sys.modules without a spec
        return module in sys.modules


def warm_up_then_time(args, argv: List[str]) -> int:
    """The warm-up, in a process that never makes a CUDA context (FlashInfer is looked up, not
    imported), then the rows timed by this command again in a fresh process with --no-warmup
    (its exit status returned); it records the warm-up in the JSON. With --warmup-only, only
    the warm-up."""
    decode, prefill = select_shapes(args)
    peers = parse_peers(args.peers)
    if "flashinfer" in peers and not _findable("flashinfer"):
        peers = [p for p in peers if p != "flashinfer"]  # the timing process says so
    record = warm_up(warmup_tasks(decode, prefill, peers), args.prefill_batch,
                     args.warmup_timeout)
    if args.warmup_only:
        if args.json:
            write_json(args.json, {"warmup": record})
        return 0
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="swa_bench_warm_",
                                     delete=False) as f:
        json.dump(record, f)
    try:
        cmd = [sys.executable, "-m", "swa_ops.bench", *argv, "--no-warmup",
               "--warmup-record", f.name]
        return subprocess.call(cmd)
    finally:
        os.unlink(f.name)


def run_gpu(args) -> Dict:
    dev = torch.cuda.get_device_name()
    decode, prefill = select_shapes(args)
    peers = parse_peers(args.peers)
    result: Dict = {"device": dev, "torch": torch.__version__, "rows": [], "prefill_rows": []}
    print(f"device: {dev}; torch {torch.__version__}", flush=True)
    if "flashinfer" in peers:
        try:
            import flashinfer
            result["flashinfer"] = getattr(flashinfer, "__version__", "?")
        except ImportError:
            print("flashinfer is not importable: its columns stay empty", flush=True)
            peers = [p for p in peers if p != "flashinfer"]
    if args.warmup_record:  # the warm-up ran in the process that started this one
        with open(args.warmup_record) as f:
            result["warmup"] = json.load(f)

    def save_partial(key: str, rows: List[Dict], extra: Dict) -> None:
        # Every finished row reaches the JSON at once (marked partial until the run ends), so a
        # run cut short by a time limit keeps what it measured.
        result.update(extra)
        result[key] = list(rows)
        if args.json:
            write_json(args.json, dict(result, partial=True))

    if decode:
        result.update(run_decode(args, decode, peers, on_row=save_partial))
    if prefill:
        result["prefill_rows"] = run_prefill(args, prefill, peers, on_row=save_partial)
    return result


def write_json(path: str, result: Dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1)
    os.replace(tmp, path)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache-write", action="store_true",
                    help="time reshape_and_cache against PyTorch index_put instead (GPU)")
    ap.add_argument("--device", choices=("cuda", "cpu"),
                    default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--decode", action="store_true", help="run only the decode section")
    ap.add_argument("--prefill", action="store_true", help="run only the prefill section")
    ap.add_argument("--shapes", default="",
                    help="comma list of shape names from either section (default: all)")
    ap.add_argument("--peers", default="flashinfer,sdpa,flex",
                    help="comma list: flashinfer,sdpa,flex (flex: prefill only), or none")
    ap.add_argument("--prefill-batch", type=int, default=0,
                    help="batch of every prefill row (default: each row's own, 8)")
    ap.add_argument("--target-ms", type=float, default=300.0,
                    help="prefill: device time per timed batch of calls")
    ap.add_argument("--no-warmup", action="store_true",
                    help="skip the parallel FlashInfer JIT / FlexAttention compile warm-up")
    ap.add_argument("--warmup-only", action="store_true",
                    help="run the warm-up for the selected rows and stop")
    ap.add_argument("--warmup-timeout", type=float, default=360.0,
                    help="seconds before unfinished warm-up processes are killed")
    ap.add_argument("--warm-one", default="", help=argparse.SUPPRESS)  # a warm-up child
    ap.add_argument("--warmup-record", default="", help=argparse.SUPPRESS)  # the timing child
    ap.add_argument("--calls", type=int, default=30, help="profiled calls per measurement")
    ap.add_argument("--reps", type=int, default=10, help="CPU mode: timed repetitions")
    ap.add_argument("--breakdown", action="store_true",
                    help="print swa_ops' per-kernel profiler times (with PDL a dependent kernel's "
                         "time includes its wait for the one before)")
    ap.add_argument("--json", default="", help="write results to this JSON file")
    ap.add_argument("--plot", default="", help="draw a bar chart to this PNG file")
    return ap


def main(argv: Optional[List[str]] = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.warmup_only and args.no_warmup:
        parser.error("--warmup-only and --no-warmup contradict each other")
    if args.warm_one:
        warm_one(args.warm_one, args.prefill_batch)
        return
    if args.device == "cuda" and not args.cache_write and not args.no_warmup:
        rc = warm_up_then_time(args, list(sys.argv[1:] if argv is None else argv))
        if rc:
            raise SystemExit(rc)
        return
    if args.cache_write:
        result = run_cache_write(args)
    else:
        result = run_gpu(args) if args.device == "cuda" else run_cpu(args)
    if args.json:
        write_json(args.json, result)
    if args.plot and args.device == "cuda" and not args.cache_write:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
