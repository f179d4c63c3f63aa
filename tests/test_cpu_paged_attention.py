"""The CPU kernel of swa_ops::paged_attention against the reference.

Grids are sampled with a pairwise covering design (conftest.covering_sample): every value of every
axis, and every pair of values of any two axes, appears in at least one case, at a fraction of the
cross product's cost. Tolerances are relative to the dtype (conftest.assert_attention_close).
"""
from __future__ import annotations

import random

import pytest
import torch

import swa_ops
from swa_ops import reference

from conftest import (FP8, assert_attention_close, attention_tolerance, case_id,
                      covering_sample, make_paged_attention_case, oracle, stable_seed)

pytestmark = pytest.mark.skipif(
    not torch._C._dispatch_has_kernel_for_dispatch_key("swa_ops::paged_attention", "CPU"),
    reason="no CPU kernel registered for swa_ops::paged_attention")

# ---------------------------------------------------------------------------------------------
# The published aiter SWA test grid (decode), sampled pairwise.

AITER_DTYPES = [torch.bfloat16, torch.float16]
AITER_NUM_SEQS = [1, 8, 16]
AITER_HEADS = [(8, 1), (16, 4), (32, 4)]
AITER_HEAD_SIZES = [64, 128]
AITER_BLOCK_SIZES = [16, 32]
AITER_CTX_WINDOW = [(128, 512), (512, 512), (513, 512), (768, 512), (2048, 512), (2048, 1024),
                    (4097, 2048), (9216, 8192), (256, 4096), (1024, -1), (4096, 0)]
AITER_CASES = covering_sample({
    "dtype": AITER_DTYPES, "num_seqs": AITER_NUM_SEQS, "heads": AITER_HEADS,
    "head_size": AITER_HEAD_SIZES, "block_size": AITER_BLOCK_SIZES, "ctx_window": AITER_CTX_WINDOW,
}, seed=0)


@pytest.mark.parametrize("p", AITER_CASES, ids=[case_id(p) for p in AITER_CASES])
def test_aiter_grid(p):
    ctx, window = p["ctx_window"]
    rng = random.Random(case_id(p))
    # The first sequence sits exactly at ctx; the others end a little earlier, at varied offsets
    # inside their last block.
    seq_lens = [ctx] + [ctx - rng.randrange(0, 2 * p["block_size"]) for _ in range(p["num_seqs"] - 1)]
    num_heads, num_kv_heads = p["heads"]
    case = make_paged_attention_case(
        seq_lens, num_heads=num_heads, num_kv_heads=num_kv_heads, head_size=p["head_size"],
        block_size=p["block_size"], dtype=p["dtype"], sliding_window=window, seed=rng.randrange(1 << 30))
    if reference.window_start(ctx - 1, window) >= p["block_size"]:  # some blocks before the window
        assert case.first_blocks[0] > 0
        assert (case.block_tables[0, :case.first_blocks[0]] == -1).all()
    assert_attention_close(case.run(), case)


def test_aiter_grid_covers_every_value():
    for axis, values in (("dtype", AITER_DTYPES), ("num_seqs", AITER_NUM_SEQS),
                         ("heads", AITER_HEADS), ("head_size", AITER_HEAD_SIZES),
                         ("block_size", AITER_BLOCK_SIZES), ("ctx_window", AITER_CTX_WINDOW)):
        assert {repr(c[axis]) for c in AITER_CASES} == {repr(v) for v in values}, axis


# ---------------------------------------------------------------------------------------------
# Beyond aiter: more head sizes, MHA, fp32, odd block sizes, variable lengths, every feature.

EXTENDED_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
EXTENDED_HEADS = [(32, 32), (8, 1), (16, 4), (6, 2)]
EXTENDED_HEAD_SIZES = [8, 40, 64, 96, 128, 256]
EXTENDED_BLOCK_SIZES = [1, 3, 16, 48]
EXTENDED_WINDOWS = [0, -1, 1, 2, 17, 64, 300]
EXTENDED_FEATURES = ["none", "softcap", "sinks", "fp8", "multitoken", "all"]
# Variable lengths in one batch: 0 (a padded slot: its rows output zeros), 1, around block and window
# edges, long. Multi-token batches mix query lengths, including 0 and a whole sequence.
EXTENDED_SEQ_LENS = [0, 1, 2, 17, 48, 65, 300, 301, 700]
EXTENDED_QUERY_LENS = [3, 1, 2, 17, 1, 0, 2, 40, 5]
EXTENDED_CASES = covering_sample({
    "dtype": EXTENDED_DTYPES, "heads": EXTENDED_HEADS, "head_size": EXTENDED_HEAD_SIZES,
    "block_size": EXTENDED_BLOCK_SIZES, "window": EXTENDED_WINDOWS, "feature": EXTENDED_FEATURES,
}, seed=1)


def _feature_case(feature, *, dtype, heads, head_size, block_size, window, seed):
    multitoken = feature in ("multitoken", "all")
    seq_lens = list(EXTENDED_SEQ_LENS)
    query_lens = None
    if multitoken:
        query_lens = [q if L == 0 else min(q, L) for q, L in zip(EXTENDED_QUERY_LENS, seq_lens)]
    num_heads, num_kv_heads = heads
    return make_paged_attention_case(
        seq_lens, query_lens=query_lens, num_heads=num_heads, num_kv_heads=num_kv_heads,
        head_size=head_size, block_size=block_size, dtype=dtype,
        cache_dtype=FP8 if feature in ("fp8", "all") else None, sliding_window=window,
        logits_soft_cap=3.0 if feature in ("softcap", "all") else 0.0,
        sinks=feature in ("sinks", "all"),
        # Larger logits so the soft-cap bites and the softmax is not nearly uniform.
        query_scale=4.0, seed=seed)


@pytest.mark.parametrize("p", EXTENDED_CASES, ids=[case_id(p) for p in EXTENDED_CASES])
def test_extended_grid(p):
    case = _feature_case(p["feature"], dtype=p["dtype"], heads=p["heads"],
                         head_size=p["head_size"], block_size=p["block_size"], window=p["window"],
                         seed=stable_seed(case_id(p)))
    assert_attention_close(case.run(), case)


# Each feature alone (window 0) and combined with a window, in every dtype.
FEATURES = ["softcap", "sinks", "fp8", "multitoken", "block1", "block3", "block48", "all"]
FEATURE_WINDOWS = [0, 37]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("window", FEATURE_WINDOWS)
@pytest.mark.parametrize("feature", FEATURES)
def test_feature(feature, window, dtype):
    block_size = {"block1": 1, "block3": 3, "block48": 48}.get(feature, 16)
    case = _feature_case(feature if not feature.startswith("block") else "none", dtype=dtype,
                         heads=(8, 2), head_size=64, block_size=block_size, window=window,
                         seed=stable_seed(feature, window, str(dtype)))
    out = case.run()
    assert_attention_close(out, case)
    # The feature must change the answer beyond the tolerance, or this test would prove nothing.
    if feature in ("softcap", "sinks", "all"):
        plain = case.replace(logits_soft_cap=0.0, sinks=None)
        ref = oracle(case)
        assert (oracle(plain) - ref).abs().max() > attention_tolerance(case, ref)


@pytest.mark.parametrize("head_size", list(range(8, 257, 8)))
def test_every_head_size(head_size):
    case = make_paged_attention_case(
        [1, 19, 40], query_lens=[1, 4, 2], num_heads=4, num_kv_heads=2, head_size=head_size,
        block_size=8, dtype=torch.bfloat16, sliding_window=11, sinks=True, seed=head_size)
    assert_attention_close(case.run(), case)


@pytest.mark.parametrize("query_dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("window", [0, 100])
def test_fp8_cache_any_query_dtype(query_dtype, window):
    case = make_paged_attention_case(
        [1, 150, 333], query_lens=[1, 7, 3], num_heads=8, num_kv_heads=2, head_size=128,
        block_size=16, dtype=query_dtype, cache_dtype=FP8, sliding_window=window, seed=window)
    assert case.key_cache.dtype == FP8
    out = case.run()
    assert_attention_close(out, case)
    # The scales are used: doubling v_scale doubles the output.
    doubled = case.replace(v_scale=case.v_scale * 2).run()
    assert_attention_close(doubled, case.replace(v_scale=case.v_scale * 2))
    # Scaling by a power of two is exact at every step, so the bits follow (except for fp16
    # outputs, whose small values are subnormal and lose bits when halved).
    if query_dtype != torch.float16:
        assert torch.equal(doubled, 2 * out)


def test_scales_ignored_for_non_fp8_caches():
    case = make_paged_attention_case([20, 9], num_heads=4, num_kv_heads=2, head_size=32,
                                     block_size=4, dtype=torch.bfloat16, sliding_window=5, seed=2)
    with_scales = case.replace(k_scale=torch.tensor(3.0), v_scale=torch.tensor(0.25))
    assert torch.equal(case.run(), with_scales.run())


def test_long_multi_token_prefill_with_window():
    """A long chunk (more rows than one work item holds) on top of a long context."""
    case = make_paged_attention_case(
        [1000, 70], query_lens=[150, 70], num_heads=8, num_kv_heads=2, head_size=64,
        block_size=16, dtype=torch.bfloat16, sliding_window=64, sinks=True, logits_soft_cap=5.0,
        query_scale=3.0, seed=4)
    assert_attention_close(case.run(), case)


def test_window_at_least_context_equals_full_causal():
    case = make_paged_attention_case([1, 30, 64], query_lens=[1, 5, 3], num_heads=4,
                                     num_kv_heads=1, head_size=16, block_size=8,
                                     dtype=torch.float32, sliding_window=64, seed=5)
    full = case.replace(sliding_window=0).run()
    assert torch.equal(case.run(), full)
    assert torch.equal(case.replace(sliding_window=-7).run(), full)


def test_window_one_returns_own_value():
    case = make_paged_attention_case([5, 12], query_lens=[2, 3], num_heads=2, num_kv_heads=1,
                                     head_size=8, block_size=4, dtype=torch.float32,
                                     sliding_window=1, seed=6)
    out = case.run()
    row = 0
    for s, (L, qn) in enumerate(zip(case.seq_lens_list, case.query_lens_list)):
        for i in range(qn):
            p = L - qn + i
            v = case.value_cache[int(case.block_tables[s, p // 4]), p % 4, 0]
            for h in range(2):
                torch.testing.assert_close(out[row, h], v, atol=1e-6, rtol=1e-6)
            row += 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_entries_before_window_never_read(dtype):
    """Before-window table entries pointing at a NaN block must not change anything."""
    case = make_paged_attention_case(
        [900, 513, 64, 1], query_lens=[1, 9, 2, 1], num_heads=8, num_kv_heads=2, head_size=64,
        block_size=16, dtype=dtype, sliding_window=100, poison_before_window=True, seed=8)
    assert (case.block_tables[0, :case.first_blocks[0]] >= 0).all()
    assert_attention_close(case.run(), case)


def test_non_contiguous_query_and_caches():
    """query as a slice of a fused qkv tensor; caches as halves of one kv tensor, and a cache stored
    head-major ([blocks, heads, block_size, D]) viewed as [blocks, block_size, heads, D]."""
    case = make_paged_attention_case([40, 7, 100], query_lens=[3, 1, 2], num_heads=8,
                                     num_kv_heads=2, head_size=32, block_size=8,
                                     dtype=torch.float16, sliding_window=20, sinks=True, seed=9)
    qkv = torch.randn(case.query.shape[0], 12, 32).to(torch.float16)
    qkv[:, :8] = case.query
    query = qkv[:, :8]
    assert not query.is_contiguous()
    kv = torch.stack([case.key_cache, case.value_cache], dim=1)  # [blocks, 2, bs, kvh, D]
    split = case.replace(query=query, key_cache=kv[:, 0], value_cache=kv[:, 1])
    assert not split.key_cache.is_contiguous()
    head_major = case.replace(
        key_cache=case.key_cache.transpose(1, 2).contiguous().transpose(1, 2),
        value_cache=case.value_cache.transpose(1, 2).contiguous().transpose(1, 2))
    assert not head_major.key_cache.is_contiguous()
    want = case.run()
    assert_attention_close(want, case)
    assert torch.equal(split.run(), want)
    assert torch.equal(head_major.run(), want)


def test_empty_batch():
    case = make_paged_attention_case([], num_heads=4, num_kv_heads=2, head_size=16,
                                     block_size=4, dtype=torch.bfloat16, seed=10)
    out = case.run()
    assert out.shape == (0, 4, 16) and out.dtype == torch.bfloat16


def test_same_bits_with_one_thread():
    """Parallelism must not change the result (no races, no thread-count-dependent reductions)."""
    case = make_paged_attention_case(
        [700, 33, 256, 1, 90], query_lens=[20, 1, 5, 1, 33], num_heads=16, num_kv_heads=4,
        head_size=64, block_size=16, dtype=torch.bfloat16, sliding_window=128, sinks=True, seed=12)
    many = case.run()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = case.run()
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(many, one)


def test_tolerance_is_not_vacuous():
    """A window off by one, or a missing scale, lands outside the tolerance on a grid-like case."""
    case = make_paged_attention_case([600, 300], num_heads=8, num_kv_heads=2, head_size=64,
                                     block_size=16, dtype=torch.bfloat16, sliding_window=40, seed=13)
    ref = case.reference_fp32()
    tol = attention_tolerance(case, ref)
    off_by_one = case.replace(sliding_window=41).reference_fp32()
    assert (off_by_one - ref).abs().max() > tol
    with pytest.raises(AssertionError):
        assert_attention_close(off_by_one.to(case.query.dtype), case)
    # And the kernel itself is within it.
    assert_attention_close(case.run(), case, ref)


def test_wrapper_and_op_agree():
    case = make_paged_attention_case([10, 3], num_heads=4, num_kv_heads=2, head_size=16,
                                     block_size=4, dtype=torch.bfloat16, sliding_window=4, seed=14)
    a = swa_ops.paged_attention(*case.args())
    b = torch.ops.swa_ops.paged_attention(*case.args())
    assert torch.equal(a, b)
    assert torch.equal(reference.paged_attention(*case.args()).float(),
                       case.reference_fp32().to(torch.bfloat16).float())
