"""The CPU kernel of swa_ops::reshape_and_cache against the reference: it only moves (or quantizes)
bytes, so the caches must match bit for bit, and slots of skipped tokens (-1) stay untouched."""
from __future__ import annotations

import pytest
import torch

import swa_ops
from swa_ops import reference

from conftest import FP8, bits, make_reshape_and_cache_case

pytestmark = pytest.mark.skipif(
    not torch._C._dispatch_has_kernel_for_dispatch_key("swa_ops::reshape_and_cache", "CPU"),
    reason="no CPU kernel registered for swa_ops::reshape_and_cache")

# (input dtype, cache dtype): same-dtype caches, and fp8 caches fed from each float dtype.
DTYPE_PAIRS = [(torch.float32, torch.float32), (torch.float16, torch.float16),
               (torch.bfloat16, torch.bfloat16), (torch.float32, FP8), (torch.float16, FP8),
               (torch.bfloat16, FP8)]
BLOCK_SIZES = [1, 3, 16, 48]
HEADS = [(1, 8), (4, 64), (8, 128), (2, 256), (3, 40)]  # (num_kv_heads, head_size)


def _ids(pairs):
    return [f"{str(a)[6:]}->{str(b)[6:]}" for a, b in pairs]


def _run_both(case):
    """Runs the op and the reference on separate copies; returns (op result, reference result)."""
    ours, ref = case.clone(), case.clone()
    swa_ops.reshape_and_cache(*ours.args())
    reference.reshape_and_cache(*ref.args())
    return ours, ref


@pytest.mark.parametrize("heads", HEADS, ids=[f"kvh{h}-d{d}" for h, d in HEADS])
@pytest.mark.parametrize("block_size", BLOCK_SIZES)
@pytest.mark.parametrize("dtypes", DTYPE_PAIRS, ids=_ids(DTYPE_PAIRS))
def test_matches_reference_exactly(dtypes, block_size, heads):
    dtype, cache_dtype = dtypes
    num_kv_heads, head_size = heads
    num_blocks = 7
    num_tokens = min(40, num_blocks * block_size)
    case = make_reshape_and_cache_case(
        num_tokens, num_kv_heads=num_kv_heads, head_size=head_size, block_size=block_size,
        num_blocks=num_blocks, dtype=dtype, cache_dtype=cache_dtype,
        num_skipped=num_tokens // 4, value_range=3.0, seed=block_size * 1000 + head_size)
    ours, ref = _run_both(case)
    assert torch.equal(bits(ours.key_cache), bits(ref.key_cache))
    assert torch.equal(bits(ours.value_cache), bits(ref.value_cache))
    # The op wrote something (the test would be vacuous otherwise) ...
    assert not torch.equal(bits(ours.key_cache), bits(case.key_cache))
    # ... and nothing but the mapped slots.
    slots = case.slot_mapping[case.slot_mapping >= 0]
    untouched = torch.ones(num_blocks * block_size, dtype=torch.bool)
    untouched[slots] = False
    flat = lambda t: bits(t).view(num_blocks * block_size, -1)  # noqa: E731
    for new, old in ((ours.key_cache, case.key_cache), (ours.value_cache, case.value_cache)):
        assert torch.equal(flat(new)[untouched], flat(old)[untouched])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_fp8_saturates_and_rounds_like_reference(dtype):
    """Values far outside the fp8 range saturate to +-448 (no NaN), small ones round to nearest."""
    case = make_reshape_and_cache_case(32, num_kv_heads=2, head_size=16, block_size=8,
                                       num_blocks=4, dtype=dtype, cache_dtype=FP8,
                                       value_range=50.0, seed=3)
    assert (case.key.float().abs() / case.k_scale).max() > 448, "must exercise saturation"
    ours, ref = _run_both(case)
    assert torch.equal(bits(ours.key_cache), bits(ref.key_cache))
    assert torch.equal(bits(ours.value_cache), bits(ref.value_cache))
    written = ours.key_cache.view(-1, 2, 16)[case.slot_mapping]
    assert not torch.isnan(written.float()).any()
    assert written.float().abs().max() == 448.0
    # Dequantized values are close to the inputs where no saturation happened.
    deq = written.float() * case.k_scale
    ok = case.key.float().abs() / case.k_scale < 448
    torch.testing.assert_close(deq[ok], case.key.float()[ok], rtol=0.07, atol=case.k_scale.item())


def test_all_tokens_skipped_leaves_caches_untouched():
    case = make_reshape_and_cache_case(12, num_kv_heads=2, head_size=32, block_size=4,
                                       num_blocks=5, dtype=torch.bfloat16, num_skipped=12, seed=4)
    assert (case.slot_mapping == -1).all()
    ours, _ = _run_both(case)
    assert torch.equal(bits(ours.key_cache), bits(case.key_cache))
    assert torch.equal(bits(ours.value_cache), bits(case.value_cache))


def test_zero_tokens():
    case = make_reshape_and_cache_case(0, num_kv_heads=2, head_size=32, block_size=4,
                                       num_blocks=5, dtype=torch.float16, seed=5)
    ours, _ = _run_both(case)
    assert torch.equal(bits(ours.key_cache), bits(case.key_cache))


def test_scales_ignored_for_non_fp8_caches():
    case = make_reshape_and_cache_case(20, num_kv_heads=2, head_size=32, block_size=4,
                                       num_blocks=6, dtype=torch.bfloat16, num_skipped=3, seed=6)
    plain, _ = _run_both(case)
    scaled, _ = _run_both(case.replace(k_scale=torch.tensor(4.0), v_scale=torch.tensor(0.5)))
    assert torch.equal(bits(plain.key_cache), bits(scaled.key_cache))
    assert torch.equal(bits(plain.value_cache), bits(scaled.value_cache))


@pytest.mark.parametrize("cache_dtype", [torch.bfloat16, FP8])
def test_strided_inputs_and_caches(cache_dtype):
    """key/value as slices of a fused qkv tensor, caches as halves of one kv tensor: only the last
    dimension has to be contiguous."""
    case = make_reshape_and_cache_case(25, num_kv_heads=2, head_size=64, block_size=16,
                                       num_blocks=4, dtype=torch.bfloat16, cache_dtype=cache_dtype,
                                       num_skipped=5, seed=7)
    qkv = torch.randn(25, 8 + 2 + 2, 64).to(torch.bfloat16)
    qkv[:, 8:10], qkv[:, 10:12] = case.key, case.value
    kv = torch.stack([case.key_cache, case.value_cache], dim=1)  # [blocks, 2, bs, kvh, D]
    strided = case.replace(key=qkv[:, 8:10], value=qkv[:, 10:12], key_cache=kv[:, 0],
                           value_cache=kv[:, 1])
    assert not strided.key.is_contiguous() and not strided.key_cache.is_contiguous()
    swa_ops.reshape_and_cache(*strided.args())
    _, ref = _run_both(case)
    assert torch.equal(bits(kv[:, 0]), bits(ref.key_cache))
    assert torch.equal(bits(kv[:, 1]), bits(ref.value_cache))


def test_then_paged_attention_reads_what_was_written():
    """One decode step end to end: write this step's K/V, then attend over it."""
    from conftest import assert_attention_close, make_paged_attention_case

    case = make_paged_attention_case([33, 5, 80], num_heads=8, num_kv_heads=2, head_size=64,
                                     block_size=16, dtype=torch.bfloat16, sliding_window=24,
                                     seed=8)
    bs = 16
    slots = torch.tensor([int(case.block_tables[s, (L - 1) // bs]) * bs + (L - 1) % bs
                          for s, L in enumerate(case.seq_lens_list)], dtype=torch.int64)
    key = torch.randn(3, 2, 64).to(torch.bfloat16)
    value = torch.randn(3, 2, 64).to(torch.bfloat16)
    swa_ops.reshape_and_cache(key, value, case.key_cache, case.value_cache, slots)
    assert torch.equal(case.key_cache.view(-1, 2, 64)[slots], key)
    assert torch.equal(case.value_cache.view(-1, 2, 64)[slots], value)
    assert_attention_close(case.run(), case)
