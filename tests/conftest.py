"""Shared test helpers: random paged-KV cases, dtype-relative tolerances, sampling of grids, opcheck.

Everything here is device-agnostic: random data is drawn on the CPU from a seeded generator and then
moved to ``device``, so a CPU test and a GPU test with the same seed see the same numbers.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import random
import re
import unittest.mock
import zlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest
import torch
from torch import Tensor

import swa_ops  # noqa: F401  (registers torch.ops.swa_ops.*)
from swa_ops import reference

FP8 = torch.float8_e4m3fn

# The full set of torch.library.opcheck checks (its default test_utils, spelled out so a change of
# torch's default cannot silently shrink what we test).
OPCHECK_UTILS = ("test_schema", "test_autograd_registration", "test_faketensor",
                 "test_aot_dispatch_dynamic")


# ---------------------------------------------------------------------------------------------
# Grid sampling


def covering_sample(axes: Dict[str, Sequence[Any]], seed: int = 0,
                    candidates: int = 40) -> List[Dict[str, Any]]:
    """A deterministic pairwise covering of the cross product of ``axes``.

    Every pair of values of every two axes appears together in at least one returned case (so every
    value of every axis appears too), with far fewer cases than the full product. Greedy: each new
    case is the best of ``candidates`` random completions of a still-uncovered pair.
    """
    names = list(axes)
    sizes = [len(axes[n]) for n in names]
    assert all(sizes), "every axis needs at least one value"
    rng = random.Random(seed)

    def pairs_of(case):
        return {((i, case[i]), (j, case[j])) for i, j in itertools.combinations(range(len(case)), 2)}

    uncovered = set()
    for i, j in itertools.combinations(range(len(names)), 2):
        uncovered |= {((i, a), (j, b)) for a in range(sizes[i]) for b in range(sizes[j])}
    if len(names) == 1:  # no pairs: one case per value
        return [{names[0]: v} for v in axes[names[0]]]

    chosen = []
    while uncovered:
        pool = sorted(uncovered)
        best, best_gain = None, -1
        for _ in range(candidates):
            (i, a), (j, b) = rng.choice(pool)
            case = [rng.randrange(n) for n in sizes]
            case[i], case[j] = a, b
            gain = len(pairs_of(case) & uncovered)
            if gain > best_gain:
                best, best_gain = case, gain
        chosen.append(best)
        uncovered -= pairs_of(best)
    return [{n: axes[n][k] for n, k in zip(names, case)} for case in chosen]


def stable_seed(*parts: Any) -> int:
    """A seed derived from a case's description, the same in every process (unlike ``hash``)."""
    return zlib.crc32(repr(parts).encode()) % (1 << 30)


def case_id(params: Dict[str, Any]) -> str:
    """A short readable pytest id for one sampled case."""
    def fmt(v):
        if isinstance(v, torch.dtype):
            return str(v).replace("torch.", "")
        if isinstance(v, (tuple, list)):
            return "x".join(fmt(x) for x in v)
        return str(v)
    return "-".join(f"{k}={fmt(v)}" for k, v in params.items())


# ---------------------------------------------------------------------------------------------
# Random paged-attention cases


@dataclasses.dataclass
class PagedAttentionCase:
    """The arguments of one ``paged_attention`` call plus the facts they were built from."""

    query: Tensor
    key_cache: Tensor
    value_cache: Tensor
    block_tables: Tensor
    seq_lens: Tensor
    scale: float
    sliding_window: int = 0
    logits_soft_cap: float = 0.0
    sinks: Optional[Tensor] = None
    query_start_loc: Optional[Tensor] = None
    max_query_len: int = 1
    k_scale: Optional[Tensor] = None
    v_scale: Optional[Tensor] = None
    # Python-side facts, for tests that reason about positions.
    seq_lens_list: List[int] = dataclasses.field(default_factory=list)
    query_lens_list: List[int] = dataclasses.field(default_factory=list)
    first_blocks: List[int] = dataclasses.field(default_factory=list)  # first block read per seq

    ARG_NAMES = ("query", "key_cache", "value_cache", "block_tables", "seq_lens", "scale",
                 "sliding_window", "logits_soft_cap", "sinks", "query_start_loc", "max_query_len",
                 "k_scale", "v_scale")

    def args(self) -> Tuple[Any, ...]:
        """All thirteen arguments, positionally, in schema order."""
        return tuple(getattr(self, n) for n in self.ARG_NAMES)

    def kwargs(self) -> Dict[str, Any]:
        return {n: getattr(self, n) for n in self.ARG_NAMES}

    def replace(self, **changes) -> "PagedAttentionCase":
        return dataclasses.replace(self, **changes)

    def to(self, device) -> "PagedAttentionCase":
        moved = {n: (v.to(device) if isinstance(v, Tensor) else v)
                 for n, v in self.kwargs().items()}
        return self.replace(**moved)

    def run(self) -> Tensor:
        """The op under test (whatever backend the tensors' device selects)."""
        return swa_ops.paged_attention(**self.kwargs())

    def reference_fp32(self) -> Tensor:
        """The reference computed in fp32 from the same (possibly low-precision) inputs."""
        kw = self.kwargs()
        kw["query"] = self.query.float()
        return reference.paged_attention(**kw)


def window_first_block(seq_len: int, query_len: int, sliding_window: int, block_size: int) -> int:
    """Index (in the block table row) of the first block a sequence's queries can see."""
    if seq_len == 0:
        return 0
    return reference.window_start(seq_len - query_len, sliding_window) // block_size


def make_paged_attention_case(
    seq_lens: Sequence[int],
    *,
    num_heads: int,
    num_kv_heads: int,
    head_size: int,
    block_size: int,
    dtype: torch.dtype,
    query_lens: Optional[Sequence[int]] = None,
    cache_dtype: Optional[torch.dtype] = None,
    sliding_window: int = 0,
    logits_soft_cap: float = 0.0,
    sinks: bool = False,
    use_query_start_loc: Optional[bool] = None,
    max_query_len: Optional[int] = None,
    query_scale: float = 1.0,
    tail_blocks: int = 2,
    spare_blocks: int = 2,
    poison_before_window: bool = False,
    device: Any = "cpu",
    seed: int = 0,
) -> PagedAttentionCase:
    """Random inputs for ``paged_attention``.

    * ``query_lens`` (default: 1 per sequence, decode) may mix lengths, including 0; a
      ``query_start_loc`` is built whenever any length differs from 1 (or when asked).
    * The cache holds only the blocks each sequence can see; they are handed out in a random
      permutation, so neighbouring table entries are never neighbouring blocks. Every table entry of
      a block wholly before a sequence's window is -1, and so is every unused tail entry
      (``tail_blocks`` extra columns). With ``poison_before_window`` the before-window entries point
      instead at an extra block full of NaN, so a kernel that reads one (and uses it) yields NaN.
    * ``spare_blocks`` random blocks belong to no sequence. Every cache slot holds random data,
      including slots past ``seq_len`` in a sequence's last block.
    * ``cache_dtype=torch.float8_e4m3fn`` stores ``x / scale`` with random per-cache scales.
    """
    g = torch.Generator().manual_seed(seed)
    num_seqs = len(seq_lens)
    seq_lens = [int(x) for x in seq_lens]
    query_lens = [1] * num_seqs if query_lens is None else [int(x) for x in query_lens]
    assert len(query_lens) == num_seqs
    cache_dtype = dtype if cache_dtype is None else cache_dtype

    # Which table entries each sequence needs.
    used = [(L + block_size - 1) // block_size for L in seq_lens]
    first = [window_first_block(L, q, sliding_window, block_size) for L, q in zip(seq_lens, query_lens)]
    needed = [max(0, u - f) for u, f in zip(used, first)]
    max_blocks_per_seq = max(used, default=0) + tail_blocks
    num_blocks = sum(needed) + spare_blocks + (1 if poison_before_window else 0)
    num_blocks = max(num_blocks, 1)

    perm = torch.randperm(num_blocks, generator=g).tolist()
    poison = perm.pop() if poison_before_window else -1
    block_tables = torch.full((num_seqs, max(max_blocks_per_seq, 1)), -1, dtype=torch.int32)
    for s in range(num_seqs):
        for b in range(first[s]):
            block_tables[s, b] = poison
        for b in range(first[s], used[s]):
            block_tables[s, b] = perm.pop()

    shape = (num_blocks, block_size, num_kv_heads, head_size)
    k_float = torch.randn(shape, generator=g)
    v_float = torch.randn(shape, generator=g)
    if poison_before_window:
        k_float[poison] = float("nan")
        v_float[poison] = float("nan")
    k_scale = v_scale = None
    if cache_dtype == FP8:
        # Distinct, non-unit scales: swapping or dropping one changes the result.
        k_scale = (0.01 + 0.02 * torch.rand((), generator=g)).to(torch.float32)
        v_scale = (0.01 + 0.02 * torch.rand((), generator=g)).to(torch.float32)
        key_cache = reference.quantize_fp8(k_float, k_scale)
        value_cache = reference.quantize_fp8(v_float, v_scale)
    else:
        key_cache = k_float.to(cache_dtype)
        value_cache = v_float.to(cache_dtype)

    num_tokens = sum(query_lens)
    query = (torch.randn((num_tokens, num_heads, head_size), generator=g) * query_scale).to(dtype)
    sink_t = None
    if sinks:
        # Spread so that some heads' sinks are negligible and some dominate a long window.
        sink_t = (torch.rand((num_heads,), generator=g) * 10.0 - 2.0).to(torch.float32)
    if use_query_start_loc is None:
        use_query_start_loc = any(q != 1 for q in query_lens)
    qsl = None
    if use_query_start_loc:
        qsl = torch.tensor([0] + list(itertools.accumulate(query_lens)), dtype=torch.int32)
    else:
        assert all(q == 1 for q in query_lens), "decode without query_start_loc needs length 1"
    if max_query_len is None:
        max_query_len = max(query_lens + [1])

    case = PagedAttentionCase(
        query=query, key_cache=key_cache, value_cache=value_cache, block_tables=block_tables,
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32), scale=head_size ** -0.5,
        sliding_window=sliding_window, logits_soft_cap=logits_soft_cap, sinks=sink_t,
        query_start_loc=qsl, max_query_len=max_query_len, k_scale=k_scale, v_scale=v_scale,
        seq_lens_list=seq_lens, query_lens_list=query_lens, first_blocks=first)
    return case.to(device)


# ---------------------------------------------------------------------------------------------
# Tolerances


def torch_lowp_attention(case: PagedAttentionCase, compute_dtype: Optional[torch.dtype] = None
                         ) -> Tensor:
    """The same attention written with plain PyTorch ops *in the query's dtype* (matmul, softmax).

    Its distance from the oracle is "PyTorch's own low-precision error", the yardstick of the
    tolerance (FlashAttention's test method). fp8 caches are dequantized into the compute dtype.
    With ``compute_dtype=torch.float64`` it is the high-precision oracle used for fp32 inputs.
    """
    q_all = case.query
    dt = q_all.dtype if compute_dtype is None else compute_dtype
    num_tokens, num_heads, head_size = q_all.shape
    _, block_size, num_kv_heads, _ = case.key_cache.shape
    group = num_heads // num_kv_heads
    out = torch.zeros(q_all.shape, dtype=dt, device=q_all.device)
    starts = [0] + list(itertools.accumulate(case.query_lens_list))
    for s, (L, qn) in enumerate(zip(case.seq_lens_list, case.query_lens_list)):
        if L == 0 or qn == 0:
            continue
        fb = case.first_blocks[s]
        used = (L + block_size - 1) // block_size
        blocks = case.block_tables[s, fb:used].long()

        def gather(cache, sc):
            x = cache[blocks]
            x = (x.to(dt) * sc.to(dt)) if cache.dtype == FP8 else x.to(dt)
            return x.reshape(-1, num_kv_heads, head_size).permute(1, 0, 2)  # [kvh, keys, D]

        k, v = gather(case.key_cache, case.k_scale), gather(case.value_cache, case.v_scale)
        q = q_all[starts[s]:starts[s + 1]].to(dt).view(qn, num_kv_heads, group, head_size)
        q = q.permute(1, 2, 0, 3)  # [kvh, g, qn, D]
        # The group's heads and rows share each kv head's keys: one [g*qn, D] x [D, keys] product.
        logits = torch.bmm(q.reshape(num_kv_heads, group * qn, head_size), k.transpose(-1, -2))
        logits = logits.view(num_kv_heads, group, qn, -1) * case.scale  # [kvh, g, qn, keys]
        if case.logits_soft_cap > 0:
            cap = case.logits_soft_cap
            logits = torch.tanh(logits / cap) * cap
        key_pos = torch.arange(fb * block_size, fb * block_size + k.shape[1], device=q.device)
        row_pos = torch.arange(L - qn, L, device=q.device)
        visible = key_pos[None, :] <= row_pos[:, None]
        if case.sliding_window > 0:
            visible &= key_pos[None, :] > row_pos[:, None] - case.sliding_window
        logits = logits.masked_fill(~visible, float("-inf"))
        if case.sinks is not None:
            sink = case.sinks.to(dt).view(num_kv_heads, group, 1, 1).expand(-1, -1, qn, 1)
            p = torch.softmax(torch.cat([logits, sink], dim=-1), dim=-1)[..., :-1]
        else:
            p = torch.softmax(logits, dim=-1)
        o = torch.bmm(p.reshape(num_kv_heads, group * qn, -1), v)
        o = o.view(num_kv_heads, group, qn, head_size)
        out[starts[s]:starts[s + 1]] = o.permute(2, 0, 1, 3).reshape(qn, num_heads, head_size)
    return out


def rounding_error(ref32: Tensor, dtype: torch.dtype) -> float:
    """What merely storing values of ref's magnitude in ``dtype`` costs (FlashAttention's
    ``out_ref + 0.3 - 0.3 - out_ref``)."""
    r = ref32.to(dtype)
    return (r + 0.3 - 0.3 - r).abs().max().item() if r.numel() else 0.0


def oracle(case: PagedAttentionCase) -> Tensor:
    """What an output is measured against: the reference computed in fp32 from the (low-precision)
    inputs. For fp32 inputs fp32 math is no more precise than the kernel's own, so the oracle is the
    same attention in float64 (itself checked against the fp32 reference in assert_attention_close).
    """
    if case.query.dtype == torch.float32:
        return torch_lowp_attention(case, torch.float64)
    return case.reference_fp32()


def attention_tolerance(case: PagedAttentionCase, ref: Tensor) -> float:
    """Max abs error allowed against ``ref = oracle(case)``: twice PyTorch's own error on the same
    inputs in the query's dtype, plus twice the rounding error of the output dtype."""
    lowp = torch_lowp_attention(case)
    lowp_err = (lowp.to(ref.dtype) - ref).abs().max().item() if ref.numel() else 0.0
    return 2 * lowp_err + 2 * rounding_error(ref, case.query.dtype)


def assert_attention_close(out: Tensor, case: PagedAttentionCase,
                           ref: Optional[Tensor] = None) -> None:
    """``out`` (the op's result) against the oracle with the dtype-relative tolerance."""
    if ref is None:
        ref = oracle(case)
    assert out.shape == case.query.shape, (out.shape, case.query.shape)
    assert out.dtype == case.query.dtype, (out.dtype, case.query.dtype)
    assert out.device == case.query.device
    assert torch.isfinite(out).all(), "non-finite values in the output"
    ref = ref.to(out.device)
    # Rows of empty sequences must be exactly zero, never merely close.
    starts = [0] + list(itertools.accumulate(case.query_lens_list))
    for s, L in enumerate(case.seq_lens_list):
        if L == 0 and case.query_lens_list[s] > 0:
            rows = out[starts[s]:starts[s + 1]]
            assert (rows == 0).all(), f"sequence {s} has seq_len 0 but non-zero output"
    if out.numel() == 0:
        return
    tol = attention_tolerance(case, ref)
    if ref.dtype == torch.float64:  # the float64 oracle must agree with the spec
        spec_err = (case.reference_fp32().to(ref) - ref).abs().max().item()
        assert spec_err <= tol, f"reference vs float64 oracle: {spec_err:.3e} > {tol:.3e}"
    err = (out.to(ref.dtype) - ref).abs().max().item()
    assert err <= tol, f"max abs error {err:.3e} > tolerance {tol:.3e} ({out.dtype})"


# ---------------------------------------------------------------------------------------------
# reshape_and_cache inputs


@dataclasses.dataclass
class ReshapeAndCacheCase:
    key: Tensor
    value: Tensor
    key_cache: Tensor
    value_cache: Tensor
    slot_mapping: Tensor
    k_scale: Optional[Tensor] = None
    v_scale: Optional[Tensor] = None

    ARG_NAMES = ("key", "value", "key_cache", "value_cache", "slot_mapping", "k_scale", "v_scale")

    def args(self) -> Tuple[Any, ...]:
        return tuple(getattr(self, n) for n in self.ARG_NAMES)

    def kwargs(self) -> Dict[str, Any]:
        return {n: getattr(self, n) for n in self.ARG_NAMES}

    def replace(self, **changes) -> "ReshapeAndCacheCase":
        return dataclasses.replace(self, **changes)

    def clone(self) -> "ReshapeAndCacheCase":
        return self.replace(key_cache=self.key_cache.clone(), value_cache=self.value_cache.clone())

    def to(self, device) -> "ReshapeAndCacheCase":
        return self.replace(**{n: (v.to(device) if isinstance(v, Tensor) else v)
                               for n, v in self.kwargs().items()})


def make_reshape_and_cache_case(
    num_tokens: int,
    *,
    num_kv_heads: int,
    head_size: int,
    block_size: int,
    num_blocks: int,
    dtype: torch.dtype,
    cache_dtype: Optional[torch.dtype] = None,
    num_skipped: int = 0,
    value_range: float = 1.0,
    device: Any = "cpu",
    seed: int = 0,
) -> ReshapeAndCacheCase:
    """Random keys/values, caches pre-filled with random data (so untouched slots are visible), and
    distinct random slots with ``num_skipped`` of them set to -1."""
    g = torch.Generator().manual_seed(seed)
    cache_dtype = dtype if cache_dtype is None else cache_dtype
    assert num_tokens <= num_blocks * block_size
    key = (torch.randn((num_tokens, num_kv_heads, head_size), generator=g) * value_range).to(dtype)
    value = (torch.randn((num_tokens, num_kv_heads, head_size), generator=g) * value_range).to(dtype)
    shape = (num_blocks, block_size, num_kv_heads, head_size)
    k_scale = v_scale = None
    if cache_dtype == FP8:
        k_scale = (0.01 + 0.02 * torch.rand((), generator=g)).to(torch.float32)
        v_scale = (0.01 + 0.02 * torch.rand((), generator=g)).to(torch.float32)
        key_cache = reference.quantize_fp8(torch.randn(shape, generator=g), k_scale)
        value_cache = reference.quantize_fp8(torch.randn(shape, generator=g), v_scale)
    else:
        key_cache = torch.randn(shape, generator=g).to(cache_dtype)
        value_cache = torch.randn(shape, generator=g).to(cache_dtype)
    slots = torch.randperm(num_blocks * block_size, generator=g)[:num_tokens]
    skipped = torch.randperm(num_tokens, generator=g)[:num_skipped]
    slots[skipped] = -1
    return ReshapeAndCacheCase(key, value, key_cache, value_cache, slots.to(torch.int64),
                               k_scale, v_scale).to(device)


def bits(t: Tensor) -> Tensor:
    """The raw bytes of a tensor, for exact (bitwise, NaN-safe) comparisons."""
    return t.contiguous().view(torch.uint8)


# ---------------------------------------------------------------------------------------------
# opcheck


def _allclose_fp8_aware(allclose):
    """torch.allclose that compares float8 tensors bit for bit (torch has no fp8 allclose on CPU)."""
    def wrapped(a, b, *args, **kwargs):
        if isinstance(a, Tensor) and a.dtype == FP8 and isinstance(b, Tensor) and b.dtype == FP8:
            return a.shape == b.shape and torch.equal(a.view(torch.uint8), b.view(torch.uint8))
        return allclose(a, b, *args, **kwargs)
    return wrapped


def opcheck(op, args: Tuple[Any, ...], kwargs: Optional[Dict[str, Any]] = None) -> None:
    """``torch.library.opcheck`` with every one of its checks; fails on any that does not pass.

    opcheck's test_schema compares every argument before and after the call with torch.allclose,
    which PyTorch does not implement for float8_e4m3fn on the CPU (pytorch/pytorch#135998). For fp8
    arguments that comparison is made bitwise instead -- what test_schema means by "not mutated" --
    so fp8 calls get the full set of checks too.
    """
    flat = list(args) + list((kwargs or {}).values())
    patch = contextlib.nullcontext()
    if any(isinstance(a, Tensor) and a.dtype == FP8 for a in flat):
        patch = unittest.mock.patch.object(torch, "allclose", _allclose_fp8_aware(torch.allclose))
    with patch:
        result = torch.library.opcheck(op, args, kwargs, test_utils=OPCHECK_UTILS)
    assert set(result) == set(OPCHECK_UTILS), result
    assert all(v == "SUCCESS" for v in result.values()), result


@pytest.fixture(autouse=True)
def _deterministic_seed():
    """Tests draw from explicit generators; this only pins anything that uses the global RNG."""
    torch.manual_seed(0)
    yield


# ---------------------------------------------------------------------------------------------
# Which CUDA kernel ran


def kernels_launched(fn, kernel: str) -> Optional[List[str]]:
    """Names of the CUDA kernels whose name contains ``kernel`` that ``fn`` launched (profiler), or
    None where it records none."""
    from torch.autograd import DeviceType
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names = [e.name for e in prof.events()
             if e.device_type == DeviceType.CUDA and kernel in e.name]
    return names or None


def merge_ran(fn) -> Optional[bool]:
    """Whether ``fn`` launched the decode merge kernel (a split grid); None where the profiler
    records no kernel or the device is not an H100-like 132-SM Hopper, whose slots the tests'
    comments count (the split depends on SM count and occupancy)."""
    names = kernels_launched(fn, "_kernel")
    props = torch.cuda.get_device_properties(0)
    if names is None or props.major != 9 or props.multi_processor_count != 132:
        return None
    assert any("decode_mma_kernel" in n for n in names), names
    return any("merge_kernel" in n for n in names)


def template_bools(name: str, kernel: str, count: int) -> List[bool]:
    """The last ``count`` (bool) template arguments of ``kernel``<T, D, ...> from a demangled
    ("true", "(bool)1") or mangled ("Lb1E") kernel name."""
    m = re.search(kernel + r"<(.*)>", name)
    if m:
        args = m.group(1).replace(" ", "").split(",")[2:]
        assert len(args) == count, name
        return [a in ("true", "(bool)1", "1") for a in args]
    flags = re.findall(r"Lb([01])E", name)
    assert len(flags) == count, name
    return [f == "1" for f in flags]
