"""torch.compile(fullgraph=True) of one serving step -- reshape_and_cache, then paged_attention --
matches eager bit for bit (outputs and the in-place cache writes), has no graph break, and is not
recompiled when the number of tokens changes from step to step."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch._dynamo
import torch._dynamo.testing
from torch._dynamo.utils import counters

import swa_ops

pytestmark = pytest.mark.skipif(
    not all(torch._C._dispatch_has_kernel_for_dispatch_key(f"swa_ops::{n}", "CPU")
            for n in ("paged_attention", "reshape_and_cache")),
    reason="no CPU kernels registered")

NUM_HEADS, NUM_KV_HEADS, HEAD_SIZE, BLOCK_SIZE = 8, 2, 64, 16
WINDOW, SOFT_CAP, MAX_QUERY_LEN = 24, 30.0, 16
SCALE = HEAD_SIZE ** -0.5
# Query tokens per sequence at each step (3 sequences): chunked prefill, then mixed decode; every
# step has a different total (>= 2, so no 0/1 specialization), and some sequences idle (0).
STEPS = [(9, 4, 1), (1, 1, 1), (6, 0, 5), (1, 12, 0), (2, 1, 1)]


def step(query, key, value, key_cache, value_cache, slot_mapping, block_tables, seq_lens,
         query_start_loc, sinks):
    swa_ops.reshape_and_cache(key, value, key_cache, value_cache, slot_mapping)
    return swa_ops.paged_attention(query, key_cache, value_cache, block_tables, seq_lens, SCALE,
                                   sliding_window=WINDOW, logits_soft_cap=SOFT_CAP, sinks=sinks,
                                   query_start_loc=query_start_loc, max_query_len=MAX_QUERY_LEN)


class Server:
    """A tiny cache owner: a randomly permuted block table per sequence and the step inputs."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.g = g
        num_seqs = len(STEPS[0])
        total = [sum(s[i] for s in STEPS) for i in range(num_seqs)]
        blocks_per_seq = max((t + BLOCK_SIZE - 1) // BLOCK_SIZE for t in total) + 1
        num_blocks = num_seqs * blocks_per_seq
        perm = torch.randperm(num_blocks, generator=g).to(torch.int32)
        self.block_tables = perm.view(num_seqs, blocks_per_seq).contiguous()
        shape = (num_blocks, BLOCK_SIZE, NUM_KV_HEADS, HEAD_SIZE)
        self.key_cache = torch.randn(shape, generator=g).to(torch.bfloat16)
        self.value_cache = torch.randn(shape, generator=g).to(torch.bfloat16)
        self.sinks = torch.randn(NUM_HEADS, generator=g)
        self.lens = [0] * num_seqs

    def inputs(self, query_lens):
        n = sum(query_lens)
        slots = []
        for s, q in enumerate(query_lens):
            for pos in range(self.lens[s], self.lens[s] + q):
                slots.append(int(self.block_tables[s, pos // BLOCK_SIZE]) * BLOCK_SIZE
                             + pos % BLOCK_SIZE)
            self.lens[s] += q
        rnd = lambda *shape: torch.randn(shape, generator=self.g).to(torch.bfloat16)  # noqa: E731
        return dict(
            query=rnd(n, NUM_HEADS, HEAD_SIZE), key=rnd(n, NUM_KV_HEADS, HEAD_SIZE),
            value=rnd(n, NUM_KV_HEADS, HEAD_SIZE),
            slot_mapping=torch.tensor(slots, dtype=torch.int64),
            block_tables=self.block_tables, seq_lens=torch.tensor(self.lens, dtype=torch.int32),
            query_start_loc=torch.tensor([0] + list(itertools.accumulate(query_lens)),
                                         dtype=torch.int32),
            sinks=self.sinks)


def _run_steps(backend, mark_dynamic):
    """Runs STEPS eagerly and compiled on identical copies; returns the compile counter."""
    torch._dynamo.reset()
    counters.clear()
    counter = torch._dynamo.testing.CompileCounterWithBackend(backend)
    compiled = torch.compile(step, backend=counter, fullgraph=True)
    eager_srv, comp_srv = Server(), Server()
    for i, query_lens in enumerate(STEPS):
        e_in, c_in = eager_srv.inputs(query_lens), comp_srv.inputs(query_lens)
        if mark_dynamic and i == 0:
            for name in ("query", "key", "value", "slot_mapping"):
                torch._dynamo.mark_dynamic(c_in[name], 0)
        want = step(key_cache=eager_srv.key_cache, value_cache=eager_srv.value_cache, **e_in)
        got = compiled(key_cache=comp_srv.key_cache, value_cache=comp_srv.value_cache, **c_in)
        assert got.shape == want.shape == (sum(query_lens), NUM_HEADS, HEAD_SIZE)
        assert torch.isfinite(want).all()
        assert torch.equal(got, want), f"step {i}: compiled output differs from eager"
        # The in-place cache writes happened, identically, in the caller's tensors.
        assert torch.equal(comp_srv.key_cache, eager_srv.key_cache), f"step {i}: key_cache"
        assert torch.equal(comp_srv.value_cache, eager_srv.value_cache), f"step {i}: value_cache"
    written = eager_srv.key_cache.view(-1, NUM_KV_HEADS, HEAD_SIZE)[e_in["slot_mapping"]]
    assert torch.equal(written, e_in["key"]), "the last step's keys are in the cache"
    assert not counters["graph_break"], dict(counters["graph_break"])
    return counter


def test_compile_matches_eager_one_compile_with_mark_dynamic():
    """Token dims marked dynamic on the first step: exactly one compilation for every step."""
    counter = _run_steps("inductor", mark_dynamic=True)
    assert counter.frame_count == 1, counter.frame_count
    assert counter.op_count >= 2  # both ops are in the graph


def test_compile_automatic_dynamic_recompiles_once_at_most():
    """Default automatic dynamic shapes: a static first compile, one dynamic recompile on the
    first change of token count, and none after, however the count keeps changing."""
    counter = _run_steps("inductor", mark_dynamic=False)
    assert counter.frame_count == 2, counter.frame_count


def test_compiled_graph_contains_both_ops_in_order():
    torch._dynamo.reset()
    backend = torch._dynamo.testing.EagerAndRecordGraphs()
    srv = Server()
    torch.compile(step, backend=backend, fullgraph=True)(
        key_cache=srv.key_cache, value_cache=srv.value_cache, **srv.inputs(STEPS[0]))
    assert len(backend.graphs) == 1
    targets = [str(n.target) for n in backend.graphs[0].graph.nodes if n.op == "call_function"]
    rc = [i for i, t in enumerate(targets) if "reshape_and_cache" in t]
    pa = [i for i, t in enumerate(targets) if "paged_attention" in t]
    # One call each, the cache write first: attention must read this step's K/V.
    assert len(rc) == 1 and len(pa) == 1 and rc[0] < pa[0], targets
