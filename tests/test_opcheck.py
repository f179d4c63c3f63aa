"""torch.library.opcheck (all of its checks: schema, autograd registration, fake tensor, AOT dispatch
with dynamic shapes) on a representative set of calls of both ops, and the op schemas pinned."""
from __future__ import annotations

import expecttest
import pytest
import torch

from conftest import FP8, make_paged_attention_case, make_reshape_and_cache_case, opcheck

PA = torch.ops.swa_ops.paged_attention.default
RC = torch.ops.swa_ops.reshape_and_cache.default

needs_cpu_kernels = pytest.mark.skipif(
    not all(torch._C._dispatch_has_kernel_for_dispatch_key(f"swa_ops::{n}", "CPU")
            for n in ("paged_attention", "reshape_and_cache")),
    reason="no CPU kernels registered")

PA_OPCHECK_CASES = {
    "decode_window": dict(seq_lens=[40, 1, 17], num_heads=8, num_kv_heads=2, head_size=64,
                          block_size=16, dtype=torch.bfloat16, sliding_window=16),
    "decode_full_causal_mha": dict(seq_lens=[9, 30], num_heads=4, num_kv_heads=4, head_size=32,
                                   block_size=3, dtype=torch.float16, sliding_window=0),
    "multi_token_sinks_softcap": dict(seq_lens=[0, 25, 12, 6], query_lens=[0, 5, 0, 3],
                                      num_heads=8, num_kv_heads=2, head_size=64, block_size=4,
                                      dtype=torch.float32, sliding_window=7, sinks=True,
                                      logits_soft_cap=4.0, query_scale=3.0),
    "fp8_multi_token": dict(seq_lens=[33, 64], query_lens=[2, 4], num_heads=4, num_kv_heads=1,
                            head_size=128, block_size=16, dtype=torch.bfloat16, cache_dtype=FP8,
                            sliding_window=20, sinks=True),
    "fp8_decode_fp16": dict(seq_lens=[48, 5], num_heads=4, num_kv_heads=2, head_size=96,
                            block_size=48, dtype=torch.float16, cache_dtype=FP8),
}

RC_OPCHECK_CASES = {
    "bf16": dict(num_tokens=12, num_kv_heads=2, head_size=64, block_size=4, num_blocks=6,
                 dtype=torch.bfloat16, num_skipped=3),
    "fp32_block1": dict(num_tokens=5, num_kv_heads=1, head_size=8, block_size=1, num_blocks=9,
                        dtype=torch.float32, num_skipped=1),
    "fp8": dict(num_tokens=9, num_kv_heads=2, head_size=128, block_size=16, num_blocks=2,
                dtype=torch.float16, cache_dtype=FP8, num_skipped=2),
}


@needs_cpu_kernels
@pytest.mark.parametrize("name", list(PA_OPCHECK_CASES))
def test_opcheck_paged_attention(name):
    params = dict(PA_OPCHECK_CASES[name])
    case = make_paged_attention_case(params.pop("seq_lens"), seed=1, **params)
    opcheck(PA, case.args())


@needs_cpu_kernels
@pytest.mark.parametrize("name", list(RC_OPCHECK_CASES))
def test_opcheck_reshape_and_cache(name):
    params = dict(RC_OPCHECK_CASES[name])
    case = make_reshape_and_cache_case(params.pop("num_tokens"), seed=2, **params)
    opcheck(RC, case.args())


class TestSchemas(expecttest.TestCase):
    """The op contract of DESIGN.md; a change here is an API change and must be deliberate."""

    def test_paged_attention_schema(self):
        self.assertExpectedInline(str(PA._schema), """\
swa_ops::paged_attention(Tensor query, Tensor key_cache, Tensor value_cache, Tensor block_tables, Tensor seq_lens, float scale, int sliding_window=0, float logits_soft_cap=0., Tensor? sinks=None, Tensor? query_start_loc=None, int max_query_len=1, Tensor? k_scale=None, Tensor? v_scale=None) -> Tensor""")  # noqa: E501

    def test_reshape_and_cache_schema(self):
        self.assertExpectedInline(str(RC._schema), """\
swa_ops::reshape_and_cache(Tensor key, Tensor value, Tensor(a!) key_cache, Tensor(b!) value_cache, Tensor slot_mapping, Tensor? k_scale=None, Tensor? v_scale=None) -> ()""")  # noqa: E501

    def test_only_these_ops(self):
        ops = sorted(n for n in dir(torch.ops.swa_ops) if not n.startswith("_") and
                     isinstance(getattr(torch.ops.swa_ops, n), torch._ops.OpOverloadPacket))
        self.assertEqual(ops, ["paged_attention", "reshape_and_cache"])

    def test_tags_and_mutation(self):
        self.assertFalse(PA._schema.is_mutable)
        self.assertTrue(RC._schema.is_mutable)
        mutated = [a.name for a in RC._schema.arguments if a.alias_info and a.alias_info.is_write]
        self.assertEqual(mutated, ["key_cache", "value_cache"])
