"""The oracle itself: swa_ops.reference against a naive per-row, per-head float64 computation on tiny
cases, and DESIGN.md's edge semantics checked with hand-computed numbers.

The edge tests run on the reference and, when the CPU kernel is registered, on the CPU op too: a
semantic corner the reference gets right but the kernel gets wrong must fail somewhere obvious.
"""
from __future__ import annotations

import math

import pytest
import torch

import swa_ops
from swa_ops import reference

from conftest import (FP8, case_id, covering_sample, make_paged_attention_case,
                      make_reshape_and_cache_case, stable_seed)


def _has_cpu_kernel(op_name: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"swa_ops::{op_name}", "CPU")


IMPLS = ["reference", "cpu_op"]


def _paged_attention_impl(name):
    if name == "reference":
        return reference.paged_attention
    if not _has_cpu_kernel("paged_attention"):
        pytest.skip("no CPU kernel registered for swa_ops::paged_attention")
    return swa_ops.paged_attention


# ---------------------------------------------------------------------------------------------
# A naive oracle for the oracle.


def naive_paged_attention(case) -> torch.Tensor:
    """One query row and one head at a time, keys looked up position by position through the block
    table, float64 throughout. Raises if a visible key's table entry is -1."""
    q_all = case.query.double()
    num_tokens, num_heads, head_size = q_all.shape
    _, block_size, num_kv_heads, _ = case.key_cache.shape
    group = num_heads // num_kv_heads
    W = case.sliding_window
    out = torch.zeros(num_tokens, num_heads, head_size, dtype=torch.float64)

    def dequant(x, sc):
        x = x.double()
        return x * sc.double() if sc is not None and case.key_cache.dtype == FP8 else x

    row = 0
    for s, (L, qn) in enumerate(zip(case.seq_lens_list, case.query_lens_list)):
        for i in range(qn):
            p = L - qn + i
            keys = [k for k in range(0, p + 1) if W <= 0 or k >= p - W + 1]
            blocks = [int(case.block_tables[s, k // block_size]) for k in keys]
            assert all(b >= 0 for b in blocks), "a visible key sits in a -1 table entry"
            for h in range(num_heads):
                kvh = h // group
                ks = [dequant(case.key_cache[b, k % block_size, kvh], case.k_scale)
                      for b, k in zip(blocks, keys)]
                vs = [dequant(case.value_cache[b, k % block_size, kvh], case.v_scale)
                      for b, k in zip(blocks, keys)]
                logits = [case.scale * float(q_all[row, h] @ kk) for kk in ks]
                if case.logits_soft_cap > 0:
                    c = case.logits_soft_cap
                    logits = [c * math.tanh(x / c) for x in logits]
                terms = list(logits)
                if case.sinks is not None:
                    terms.append(float(case.sinks[h]))
                if not logits:
                    row_out = torch.zeros(head_size, dtype=torch.float64)
                else:
                    m = max(terms)
                    denom = sum(math.exp(x - m) for x in terms)
                    row_out = sum(math.exp(x - m) / denom * vv for x, vv in zip(logits, vs))
                out[row, h] = row_out
            row += 1
    return out


# Tiny cases: each axis value appears, every pair of values appears together.
REFERENCE_AXES = {
    "dtype": [torch.float32, torch.bfloat16, torch.float16],
    "heads": [(1, 1), (4, 2), (4, 1), (3, 3)],
    "head_size": [8, 16],
    "block_size": [1, 3, 4, 8],
    "window": [0, -1, 1, 2, 5, 9, 64],
    "feature": ["none", "softcap", "sinks", "fp8", "multitoken", "all"],
}
REFERENCE_CASES = covering_sample(REFERENCE_AXES, seed=1)


def _tiny_case(p, seed):
    feature = p["feature"]
    multitoken = feature in ("multitoken", "all")
    seq_lens = [0, 1, 2, 7, 13, 20] if multitoken else [1, 2, 7, 13, 20]
    query_lens = [0, 1, 2, 3, 0, 4] if multitoken else None
    num_heads, num_kv_heads = p["heads"]
    return make_paged_attention_case(
        seq_lens, query_lens=query_lens, num_heads=num_heads, num_kv_heads=num_kv_heads,
        head_size=p["head_size"], block_size=p["block_size"], dtype=p["dtype"],
        cache_dtype=FP8 if feature in ("fp8", "all") else None, sliding_window=p["window"],
        logits_soft_cap=1.5 if feature in ("softcap", "all") else 0.0,
        sinks=feature in ("sinks", "all"), query_scale=3.0, seed=seed)


@pytest.mark.parametrize("p", REFERENCE_CASES, ids=[case_id(p) for p in REFERENCE_CASES])
def test_reference_matches_naive(p):
    case = _tiny_case(p, seed=stable_seed(case_id(p)))
    got = case.reference_fp32()
    want = naive_paged_attention(case)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, atol=2e-5, rtol=2e-5)
    # And in the query's dtype it is the same values, rounded.
    low = reference.paged_attention(**case.kwargs())
    assert low.dtype == case.query.dtype
    torch.testing.assert_close(low, got.to(case.query.dtype), atol=0, rtol=0)


def test_naive_oracle_sees_window_changes():
    """Guards the oracle itself: the window must change the answer on these inputs."""
    p = dict(dtype=torch.float32, heads=(2, 1), head_size=8, block_size=4, window=0,
             feature="none")
    full = naive_paged_attention(_tiny_case(p, 0))
    windowed = naive_paged_attention(_tiny_case(dict(p, window=3), 0))
    assert (full - windowed).abs().max() > 1e-2


# ---------------------------------------------------------------------------------------------
# Edge semantics with hand-computed answers.


def _write_positions(case, seq, fill):
    """Overwrites the K/V cache slot of every readable position of one sequence:
    ``fill(pos) -> (k [kvh, D], v [kvh, D])``."""
    bs = case.key_cache.shape[1]
    for pos in range(case.seq_lens_list[seq]):
        blk = int(case.block_tables[seq, pos // bs])
        if blk >= 0:
            k, v = fill(pos)
            case.key_cache[blk, pos % bs] = k.to(case.key_cache.dtype)
            case.value_cache[blk, pos % bs] = v.to(case.value_cache.dtype)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("query_len", [1, 3])
@pytest.mark.parametrize("window", [1, 2, 3, 4, 5, 7, 18, 19, 20, 21, 0, -1])
def test_window_edges(impl, window, query_len):
    """With all logits equal the output is the mean over the visible positions; position-valued V
    tells which positions were visible, so an off-by-one at either edge shows."""
    fn = _paged_attention_impl(impl)
    L = 20
    case = make_paged_attention_case(
        [L], query_lens=[query_len], use_query_start_loc=True, num_heads=2, num_kv_heads=1,
        head_size=8, block_size=4, dtype=torch.float32, sliding_window=window, seed=window)

    def fill(pos):
        v = torch.zeros(1, 8)
        v[0, 0], v[0, 1] = pos, pos * pos / 100.0
        return torch.zeros(1, 8), v  # K = 0: every logit is 0

    _write_positions(case, 0, fill)
    out = fn(**case.kwargs())
    for i in range(query_len):
        p = L - query_len + i
        lo = max(0, p - window + 1) if window > 0 else 0
        pos = torch.arange(lo, p + 1, dtype=torch.float64)
        want = torch.tensor([pos.mean(), (pos * pos).mean() / 100.0], dtype=torch.float32)
        for h in range(2):
            torch.testing.assert_close(out[i, h, :2], want, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_soft_cap_before_mask(impl):
    """A masked key must get weight exactly 0 even with a soft-cap: capping after masking would turn
    its -inf into -cap and leak its (huge) value."""
    fn = _paged_attention_impl(impl)
    L, W, cap = 12, 3, 1.0
    case = make_paged_attention_case(
        [L], num_heads=1, num_kv_heads=1, head_size=8, block_size=4, dtype=torch.float32,
        sliding_window=W, logits_soft_cap=cap, seed=3)
    # Window is positions 9..11 (block 2); position 8 shares that block but is outside the window.
    g = torch.Generator().manual_seed(5)
    keys = {pos: torch.randn(1, 8, generator=g) * 4 for pos in range(L)}
    vals = {pos: torch.randn(1, 8, generator=g) for pos in range(L)}
    vals[8] = torch.full((1, 8), 1e4)
    keys[8] = case.query[0].clone()
    _write_positions(case, 0, lambda pos: (keys[pos], vals[pos]))
    q = case.query[0, 0].double()
    raw = torch.tensor([case.scale * float(q @ keys[p][0].double()) for p in (9, 10, 11)],
                       dtype=torch.float64)
    capped = cap * torch.tanh(raw / cap)
    v = torch.stack([vals[p][0].double() for p in (9, 10, 11)])
    want = torch.softmax(capped, 0) @ v
    uncapped = torch.softmax(raw, 0) @ v
    assert (want - uncapped).abs().max() > 1e-2, "the cap must matter on these inputs"
    out = fn(**case.kwargs())
    torch.testing.assert_close(out[0, 0].double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_sink_counted_once_per_row(impl):
    """W = 1: each row sees only its own key, so out = v * e^s / (e^s + e^sink), for every row of a
    multi-token query and every head (each with its own sink)."""
    fn = _paged_attention_impl(impl)
    L, qn = 6, 3
    case = make_paged_attention_case(
        [L], query_lens=[qn], num_heads=2, num_kv_heads=1, head_size=8, block_size=4,
        dtype=torch.float32, sliding_window=1, sinks=True, seed=7)
    case.sinks[:] = torch.tensor([0.5, -1.0])
    out = fn(**case.kwargs())
    bs = 4
    for i in range(qn):
        p = L - qn + i
        blk = int(case.block_tables[0, p // bs])
        k = case.key_cache[blk, p % bs, 0].double()
        v = case.value_cache[blk, p % bs, 0].double()
        for h in range(2):
            s = case.scale * float(case.query[i, h].double() @ k)
            sink = float(case.sinks[h])
            want = v * math.exp(s) / (math.exp(s) + math.exp(sink))
            torch.testing.assert_close(out[i, h].double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("sinks", [False, True])
def test_empty_sequence_decode_gives_zeros(impl, sinks):
    """seq_len 0 in a decode batch (e.g. a padded CUDA-graph slot) outputs exact zeros, never NaN,
    with or without sinks and soft-cap, and does not disturb its neighbours."""
    fn = _paged_attention_impl(impl)
    case = make_paged_attention_case(
        [5, 0, 9], num_heads=4, num_kv_heads=2, head_size=16, block_size=4, dtype=torch.float32,
        sliding_window=4, logits_soft_cap=2.0, sinks=sinks, seed=11)
    out = fn(**case.kwargs())
    assert torch.isfinite(out).all()
    assert (out[1] == 0).all()
    torch.testing.assert_close(out[[0, 2]].double(), naive_paged_attention(case)[[0, 2]],
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("sinks", [False, True])
def test_empty_sequences_with_query_start_loc(impl, sinks):
    """seq_len 0 with no query tokens, or with some (padded rows: exact zeros), and zero-length
    queries of non-empty sequences, between ordinary sequences."""
    fn = _paged_attention_impl(impl)
    case = make_paged_attention_case(
        [5, 0, 9, 1, 7, 0], query_lens=[2, 0, 3, 1, 0, 3], num_heads=4, num_kv_heads=2,
        head_size=16, block_size=4, dtype=torch.float32, sliding_window=4, logits_soft_cap=2.0,
        sinks=sinks, seed=11)
    assert case.query_start_loc.tolist() == [0, 2, 2, 5, 6, 6, 9]
    out = fn(**case.kwargs())
    assert out.shape == (9, 4, 16)
    assert torch.isfinite(out).all()
    assert (out[6:] == 0).all()
    torch.testing.assert_close(out.double(), naive_paged_attention(case), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("block_size", [1, 3, 4])
def test_entries_before_window_never_read(impl, block_size):
    """Table entries of blocks wholly before the window point at a NaN block: a read that reaches
    the result shows as NaN, and the answer must equal the one with -1 there."""
    fn = _paged_attention_impl(impl)
    kw = dict(num_heads=2, num_kv_heads=1, head_size=8, block_size=block_size,
              dtype=torch.float32, sliding_window=5, seed=13)
    seq_lens, query_lens = [30, 17, 6], [1, 3, 2]
    poisoned = make_paged_attention_case(seq_lens, query_lens=query_lens,
                                         poison_before_window=True, **kw)
    assert poisoned.first_blocks[0] > 0, "the case must have blocks before the window"
    clean = poisoned.replace(block_tables=poisoned.block_tables.clone())
    for s, fb in enumerate(poisoned.first_blocks):
        assert (poisoned.block_tables[s, :fb] >= 0).all()
        clean.block_tables[s, :fb] = -1
    out = fn(**poisoned.kwargs())
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), naive_paged_attention(poisoned), atol=1e-5, rtol=1e-5)
    assert torch.equal(out, fn(**clean.kwargs()))


def test_max_query_len_is_only_a_hint():
    case = make_paged_attention_case([9, 4], query_lens=[3, 2], num_heads=2, num_kv_heads=1,
                                     head_size=8, block_size=4, dtype=torch.float32,
                                     sliding_window=3, seed=17)
    a = reference.paged_attention(**case.kwargs())
    b = reference.paged_attention(**case.replace(max_query_len=64).kwargs())
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# reshape_and_cache's reference.


@pytest.mark.parametrize("cache_dtype", [torch.float32, torch.bfloat16, torch.float16, FP8])
def test_reference_reshape_and_cache(cache_dtype):
    dtype = torch.bfloat16 if cache_dtype == FP8 else cache_dtype
    case = make_reshape_and_cache_case(23, num_kv_heads=2, head_size=8, block_size=3,
                                       num_blocks=11, dtype=dtype, cache_dtype=cache_dtype,
                                       num_skipped=5, value_range=8.0, seed=19)
    before = case.clone()
    reference.reshape_and_cache(*case.args())
    bs = case.key_cache.shape[1]
    written = set()
    for t, slot in enumerate(case.slot_mapping.tolist()):
        if slot < 0:
            continue
        b, o = divmod(slot, bs)
        written.add((b, o))
        for src, cache, sc in ((case.key, case.key_cache, case.k_scale),
                               (case.value, case.value_cache, case.v_scale)):
            if cache_dtype == FP8:
                want = (src[t].float() / sc).clamp(-448.0, 448.0).to(FP8)
            else:
                want = src[t]
            assert torch.equal(cache[b, o].view(torch.uint8), want.view(torch.uint8))
    for b in range(case.key_cache.shape[0]):
        for o in range(bs):
            if (b, o) not in written:
                assert torch.equal(case.key_cache[b, o].view(torch.uint8),
                                   before.key_cache[b, o].view(torch.uint8))
                assert torch.equal(case.value_cache[b, o].view(torch.uint8),
                                   before.value_cache[b, o].view(torch.uint8))


def test_reference_fp8_saturates_and_round_trips():
    scale = torch.tensor(0.5)
    x = torch.tensor([0.0, 1.0, -3.0, 224.0, 1000.0, -1000.0])
    q = reference.quantize_fp8(x, scale)
    assert q.dtype == FP8
    torch.testing.assert_close(reference.dequantize(q, scale),
                               torch.tensor([0.0, 1.0, -3.0, 224.0, 224.0, -224.0]))
