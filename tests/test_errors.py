"""Every argument check raises a RuntimeError that names the offending argument, both in the CPU op
(csrc/checks.cpp plus the CPU data checks) and in the fake kernels (swa_ops/ops.py, run here on meta
tensors; torch._check raises RuntimeError).

Each case starts from valid arguments, which are asserted to run, and breaks exactly one thing.
"""
from __future__ import annotations

import pytest
import torch

from conftest import FP8, make_paged_attention_case, make_reshape_and_cache_case

PA = torch.ops.swa_ops.paged_attention.default
RC = torch.ops.swa_ops.reshape_and_cache.default
CPU_KEYS = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)


def _has_cpu_kernel(op):
    return torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "CPU")


def _meta_like(t):
    """A meta tensor with t's shape, strides and dtype (``.to("meta")`` would densify a slice)."""
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")


def _to_meta(kwargs):
    return {k: (_meta_like(v) if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}


# ---------------------------------------------------------------------------------------------
# paged_attention


def _pa_base():
    """Valid: two sequences, multi-token (3 + 2 rows), window 8, sinks, bf16."""
    return make_paged_attention_case(
        [20, 7], query_lens=[3, 2], num_heads=8, num_kv_heads=2, head_size=64, block_size=4,
        dtype=torch.bfloat16, sliding_window=8, sinks=True, seed=0)


def _pa_fp8():
    c = _pa_base()
    return c.replace(key_cache=c.key_cache.to(FP8), value_cache=c.value_cache.to(FP8),
                     k_scale=torch.tensor(0.5), v_scale=torch.tensor(0.25))


def _heads(c, num_heads):
    return c.replace(query=torch.randn(c.query.shape[0], num_heads, 64).to(c.query.dtype),
                     sinks=None)


def _head_size(c, d):
    nb, bs, kvh, _ = c.key_cache.shape
    return c.replace(query=torch.randn(c.query.shape[0], c.query.shape[1], d).to(torch.bfloat16),
                     key_cache=torch.randn(nb, bs, kvh, d).to(torch.bfloat16),
                     value_cache=torch.randn(nb, bs, kvh, d).to(torch.bfloat16))


def _decode(c):
    """The same batch as decode-only (one token per sequence, no query_start_loc)."""
    return c.replace(query=c.query[:2].contiguous(), query_start_loc=None, max_query_len=1)


# Checks of metadata only: shapes, dtypes, strides, counts. (name, make bad args, match)
PA_METADATA_ERRORS = [
    ("block_tables_int64", lambda c: c.replace(block_tables=c.block_tables.long()), "block_tables"),
    ("block_tables_1d", lambda c: c.replace(block_tables=c.block_tables[0]), "block_tables"),
    ("seq_lens_int64", lambda c: c.replace(seq_lens=c.seq_lens.long()), "seq_lens"),
    ("seq_lens_2d", lambda c: c.replace(seq_lens=c.seq_lens[None]), "seq_lens"),
    ("seq_lens_count", lambda c: c.replace(seq_lens=torch.tensor([20, 7, 7], dtype=torch.int32)),
     "seq_lens"),
    ("query_int32", lambda c: c.replace(query=c.query.to(torch.int32)), "query must be"),
    ("query_float64", lambda c: c.replace(query=c.query.double()), "query must be"),
    ("query_2d", lambda c: c.replace(query=c.query[:, 0]), "query"),
    ("query_last_dim_strided",
     lambda c: c.replace(query=torch.randn(5, 8, 128).bfloat16()[..., ::2]), "query"),
    ("query_cache_dtype_mismatch", lambda c: c.replace(query=c.query.half()), "key_cache"),
    ("heads_not_multiple_of_kv_heads", lambda c: _heads(c, 7), "num_kv_heads"),
    ("head_size_mismatch", lambda c: c.replace(query=c.query[..., :32].contiguous()), "key_cache"),
    ("head_size_12", lambda c: _head_size(c, 12), "head_size"),
    ("head_size_264", lambda c: _head_size(c, 264), "head_size"),
    ("key_cache_3d", lambda c: c.replace(key_cache=c.key_cache[0], value_cache=c.value_cache[0]),
     "key_cache"),
    ("value_cache_shape", lambda c: c.replace(value_cache=c.value_cache[:-1]), "value_cache"),
    ("value_cache_dtype", lambda c: c.replace(value_cache=c.value_cache.half()), "value_cache"),
    ("cache_last_dim_strided",
     lambda c: c.replace(key_cache=c.key_cache.transpose(2, 3).contiguous().transpose(2, 3)),
     "key_cache"),
    ("query_start_loc_too_short", lambda c: c.replace(query_start_loc=c.query_start_loc[:-1]),
     "query_start_loc"),
    ("query_start_loc_too_long",
     lambda c: c.replace(query_start_loc=torch.tensor([0, 3, 5, 5], dtype=torch.int32)),
     "query_start_loc"),
    ("query_start_loc_int64",
     lambda c: c.replace(query_start_loc=c.query_start_loc.long()), "query_start_loc"),
    ("multi_token_without_query_start_loc", lambda c: c.replace(query_start_loc=None),
     "query_start_loc"),
    ("sinks_wrong_length", lambda c: c.replace(sinks=c.sinks[:7]), "sinks"),
    ("sinks_2d", lambda c: c.replace(sinks=c.sinks[None]), "sinks"),
    ("sinks_bf16", lambda c: c.replace(sinks=c.sinks.bfloat16()), "sinks"),
    ("max_query_len_0", lambda c: c.replace(max_query_len=0), "max_query_len"),
    ("fp8_without_scales", lambda c: _pa_fp8().replace(k_scale=None, v_scale=None), "k_scale"),
    ("fp8_without_v_scale", lambda c: _pa_fp8().replace(v_scale=None), "v_scale"),
    ("k_scale_float16", lambda c: _pa_fp8().replace(k_scale=torch.tensor(0.5).half()), "k_scale"),
    ("v_scale_two_elements", lambda c: _pa_fp8().replace(v_scale=torch.ones(2)), "v_scale"),
]

# Checks that read the int32 metadata: the CPU op only (the fake kernel never reads data).
PA_DATA_ERRORS = [
    ("block_id_too_large_in_window",
     lambda c: _set(c, "block_tables", (0, 4), c.key_cache.shape[0]), "block_tables"),
    ("block_id_minus_one_in_window", lambda c: _set(c, "block_tables", (1, 1), -1), "block_tables"),
    ("block_id_negative_in_window", lambda c: _set(c, "block_tables", (0, 3), -7), "block_tables"),
    ("seq_len_beyond_table", lambda c: _set(c, "seq_lens", 0, c.block_tables.shape[1] * 4 + 1),
     "seq_lens"),
    ("seq_len_negative", lambda c: _set(c, "seq_lens", 1, -1).replace(
        query_start_loc=torch.tensor([0, 5, 5], dtype=torch.int32), max_query_len=5), "seq_lens"),
    ("query_longer_than_seq_len", lambda c: _set(c, "seq_lens", 1, 1), "seq_lens"),
    ("query_start_loc_not_from_0",
     lambda c: c.replace(query_start_loc=torch.tensor([1, 3, 5], dtype=torch.int32)),
     "query_start_loc"),
    ("query_start_loc_end_not_num_tokens",
     lambda c: c.replace(query_start_loc=torch.tensor([0, 3, 4], dtype=torch.int32)),
     "query_start_loc"),
    ("query_start_loc_decreasing",
     lambda c: _set(c, "block_tables", (0, slice(0, 2)), 0).replace(
         query_start_loc=torch.tensor([0, 6, 5], dtype=torch.int32), max_query_len=8),
     "query_start_loc"),
    ("query_longer_than_max_query_len", lambda c: c.replace(max_query_len=2), "max_query_len"),
    ("decode_block_id_out_of_range",
     lambda c: _set(_decode(c), "block_tables", (1, 1), 10_000), "block_tables"),
]

# One tensor on another device (meta), the rest on the CPU.
PA_DEVICE_ERRORS = [
    (name, (lambda n: lambda c: _on_meta(c, n))(name), name)
    for name in ("value_cache", "block_tables", "seq_lens", "query_start_loc", "sinks")
] + [(name, (lambda n: lambda c: _on_meta(_pa_fp8(), n))(name), name)
     for name in ("k_scale", "v_scale")]


def _set(c, name, index, value):
    t = getattr(c, name).clone()
    t[index] = value
    return c.replace(**{name: t})


def _on_meta(c, name):
    return c.replace(**{name: getattr(c, name).to("meta")})


def _ids(table):
    return [name for name, _, _ in table]


def test_pa_base_is_valid():
    """The starting points run, so each error below comes from the one thing broken."""
    for c in (_pa_base(), _pa_fp8(), _decode(_pa_base())):
        assert PA(**_to_meta(c.kwargs())).shape == c.query.shape
        if _has_cpu_kernel(PA):
            assert PA(**c.kwargs()).shape == c.query.shape


@pytest.mark.parametrize("name,make,match", PA_METADATA_ERRORS, ids=_ids(PA_METADATA_ERRORS))
def test_pa_metadata_error_fake(name, make, match):
    bad = make(_pa_base())
    with pytest.raises(RuntimeError, match=match):
        PA(**_to_meta(bad.kwargs()))


@pytest.mark.parametrize("name,make,match", PA_METADATA_ERRORS, ids=_ids(PA_METADATA_ERRORS))
def test_pa_metadata_error_cpu(name, make, match):
    if not _has_cpu_kernel(PA):
        pytest.skip("no CPU kernel")
    bad = make(_pa_base())
    with pytest.raises(RuntimeError, match=match):
        PA(**bad.kwargs())


@pytest.mark.parametrize("name,make,match", PA_DATA_ERRORS, ids=_ids(PA_DATA_ERRORS))
def test_pa_data_error_cpu(name, make, match):
    if not _has_cpu_kernel(PA):
        pytest.skip("no CPU kernel")
    bad = make(_pa_base())
    with pytest.raises(RuntimeError, match=match):
        PA(**bad.kwargs())


@pytest.mark.parametrize("name,make,match", PA_DEVICE_ERRORS, ids=_ids(PA_DEVICE_ERRORS))
def test_pa_device_mismatch_fake(name, make, match):
    # Mixed meta/CPU arguments dispatch to the Meta key, i.e. the fake kernel.
    with pytest.raises(RuntimeError, match=f"{match} is on meta"):
        PA(**make(_pa_base()).kwargs())


@pytest.mark.parametrize("name,make,match", PA_DEVICE_ERRORS, ids=_ids(PA_DEVICE_ERRORS))
def test_pa_device_mismatch_cpu(name, make, match):
    # The dispatcher would route mixed arguments to the fake kernel; redispatch straight to the CPU
    # kernel to exercise its own device check (it must fire before any data is read).
    if not _has_cpu_kernel(PA):
        pytest.skip("no CPU kernel")
    bad = make(_pa_base())
    with pytest.raises(RuntimeError, match=f"{match} is on meta"):
        PA.redispatch(CPU_KEYS, *bad.args())


def test_pa_data_checks_accept_minus_one_before_window():
    """The block-id check covers only the window: -1 before it (and in the tail) is valid."""
    c = make_paged_attention_case([100], num_heads=2, num_kv_heads=1, head_size=8, block_size=4,
                                  dtype=torch.float32, sliding_window=8, seed=1)
    assert (c.block_tables[0, :c.first_blocks[0]] == -1).all() and c.first_blocks[0] > 10
    if _has_cpu_kernel(PA):
        assert torch.isfinite(PA(**c.kwargs())).all()
    # One more key of window pulls the -1 just before the window into it: now an error.
    if _has_cpu_kernel(PA):
        wider = c.replace(sliding_window=8 + 4)
        with pytest.raises(RuntimeError, match="block_tables"):
            PA(**wider.kwargs())


# ---------------------------------------------------------------------------------------------
# reshape_and_cache


def _rc_base():
    return make_reshape_and_cache_case(10, num_kv_heads=2, head_size=64, block_size=4,
                                       num_blocks=5, dtype=torch.bfloat16, num_skipped=2, seed=0)


def _rc_fp8():
    c = _rc_base()
    return c.replace(key_cache=c.key_cache.to(FP8), value_cache=c.value_cache.to(FP8),
                     k_scale=torch.tensor(0.5), v_scale=torch.tensor(0.25))


RC_METADATA_ERRORS = [
    ("slot_mapping_int32", lambda c: c.replace(slot_mapping=c.slot_mapping.int()), "slot_mapping"),
    ("slot_mapping_2d", lambda c: c.replace(slot_mapping=c.slot_mapping[None]), "slot_mapping"),
    ("slot_mapping_length", lambda c: c.replace(slot_mapping=c.slot_mapping[:-1]), "slot_mapping"),
    ("key_int32", lambda c: c.replace(key=c.key.int(), value=c.value.int()), "key"),
    ("key_value_dtype_differ", lambda c: c.replace(value=c.value.half()), "value"),
    ("key_2d", lambda c: c.replace(key=c.key[:, 0], value=c.value[:, 0]), "key"),
    ("value_shape", lambda c: c.replace(value=c.value[:-1]), "value"),
    ("key_last_dim_strided",
     lambda c: c.replace(key=c.key.transpose(1, 2).contiguous().transpose(1, 2)), "key"),
    ("num_kv_heads_mismatch",
     lambda c: c.replace(key=c.key[:, :1].contiguous(), value=c.value[:, :1].contiguous()),
     "key_cache"),
    ("head_size_mismatch",
     lambda c: c.replace(key=c.key[..., :32].contiguous(), value=c.value[..., :32].contiguous()),
     "key_cache"),
    ("cache_dtype_mismatch",
     lambda c: c.replace(key_cache=c.key_cache.half(), value_cache=c.value_cache.half()),
     "key_cache"),
    ("key_cache_3d", lambda c: c.replace(key_cache=c.key_cache[0], value_cache=c.value_cache[0]),
     "key_cache"),
    ("value_cache_shape", lambda c: c.replace(value_cache=c.value_cache[:-1]), "value_cache"),
    ("value_cache_dtype", lambda c: c.replace(value_cache=c.value_cache.half()), "value_cache"),
    ("fp8_without_scales", lambda c: _rc_fp8().replace(k_scale=None, v_scale=None), "k_scale"),
    ("fp8_without_v_scale", lambda c: _rc_fp8().replace(v_scale=None), "v_scale"),
    ("k_scale_float64", lambda c: _rc_fp8().replace(k_scale=torch.tensor(0.5).double()), "k_scale"),
    ("v_scale_two_elements", lambda c: _rc_fp8().replace(v_scale=torch.ones(2)), "v_scale"),
]

RC_DATA_ERRORS = [
    ("slot_past_the_cache", lambda c: _set(c, "slot_mapping", 3, 5 * 4), "slot_mapping"),
    ("slot_below_minus_one", lambda c: _set(c, "slot_mapping", 0, -2), "slot_mapping"),
]

RC_DEVICE_ERRORS = [
    (name, (lambda n: lambda c: _on_meta(c, n))(name), name)
    for name in ("value", "slot_mapping")
] + [("value_cache", lambda c: c.replace(value_cache=c.value_cache.to("meta")), "value_cache")] + [
    (name, (lambda n: lambda c: _on_meta(_rc_fp8(), n))(name), name) for name in ("k_scale", "v_scale")]


def test_rc_base_is_valid():
    for c in (_rc_base(), _rc_fp8()):
        RC(**_to_meta(c.kwargs()))
        if _has_cpu_kernel(RC):
            RC(**c.kwargs())


@pytest.mark.parametrize("name,make,match", RC_METADATA_ERRORS, ids=_ids(RC_METADATA_ERRORS))
def test_rc_metadata_error_fake(name, make, match):
    with pytest.raises(RuntimeError, match=match):
        RC(**_to_meta(make(_rc_base()).kwargs()))


@pytest.mark.parametrize("name,make,match", RC_METADATA_ERRORS + RC_DATA_ERRORS,
                         ids=_ids(RC_METADATA_ERRORS + RC_DATA_ERRORS))
def test_rc_error_cpu_leaves_caches_untouched(name, make, match):
    if not _has_cpu_kernel(RC):
        pytest.skip("no CPU kernel")
    bad = make(_rc_base())
    before_k, before_v = bad.key_cache.clone(), bad.value_cache.clone()
    with pytest.raises(RuntimeError, match=match):
        RC(**bad.kwargs())
    # Validation happens before the first write.
    assert torch.equal(bad.key_cache.view(torch.uint8), before_k.view(torch.uint8))
    assert torch.equal(bad.value_cache.view(torch.uint8), before_v.view(torch.uint8))


@pytest.mark.parametrize("name,make,match", RC_DEVICE_ERRORS, ids=_ids(RC_DEVICE_ERRORS))
def test_rc_device_mismatch_fake(name, make, match):
    with pytest.raises(RuntimeError, match=f"{match} is on "):
        RC(**make(_rc_base()).kwargs())


@pytest.mark.parametrize("name,make,match", RC_DEVICE_ERRORS, ids=_ids(RC_DEVICE_ERRORS))
def test_rc_device_mismatch_cpu(name, make, match):
    if not _has_cpu_kernel(RC):
        pytest.skip("no CPU kernel")
    with pytest.raises(RuntimeError, match=f"{match} is on "):
        RC.redispatch(CPU_KEYS, *make(_rc_base()).args())
