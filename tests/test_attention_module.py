"""PagedSWAAttention end to end: multi-step schedules against dense attention over each sequence's
full K/V history, torch.compile (fullgraph, no recompiles as contexts grow), CUDA graphs on the GPU,
a 100,000-token run with bounded memory, and errors.

Two oracles per step: (1) dense windowed attention computed from a contiguous copy of everything each
sequence ever wrote (independent of blocks, tables and recycling: it catches a block recycled too
early or a slot written to the wrong place), which must agree with (2) ``reference.paged_attention``
run on the module's own cache and metadata, which the kernel output must match within the
dtype-relative tolerance of conftest.
"""
from __future__ import annotations

import random
from typing import Dict, List, Optional

import pytest
import torch
import torch._dynamo.testing
from torch.utils._python_dispatch import TorchDispatchMode

import swa_ops  # noqa: F401
from swa_ops import reference
from swa_ops.attention import PagedSWAAttention
from swa_ops.kv_cache import KVCacheManager, cdiv

from conftest import FP8, PagedAttentionCase, assert_attention_close, window_first_block

CUDA = torch.cuda.is_available()
gpu = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, seq_len: int, W: int,
                    scale: float, cap: float = 0.0, sinks: Optional[torch.Tensor] = None):
    """fp32 attention of rows at positions ``seq_len - n .. seq_len - 1`` over contiguous history
    ``k, v [seq_len, kv_heads, D]``, written independently of reference.py (sinks as an extra
    softmax column, as Hugging Face's gpt-oss does)."""
    n, H, D = q.shape
    g = H // k.shape[1]
    first = max(0, seq_len - n - W + 1) if W > 0 else 0
    k = k[first:seq_len].float().repeat_interleave(g, 1)
    v = v[first:seq_len].float().repeat_interleave(g, 1)
    s = scale * torch.einsum("qhd,khd->hqk", q.float(), k)
    if cap > 0:
        s = cap * torch.tanh(s / cap)
    kp = torch.arange(first, seq_len, device=q.device)
    rp = torch.arange(seq_len - n, seq_len, device=q.device)
    vis = kp[None, :] <= rp[:, None]
    if W > 0:
        vis &= kp[None, :] > rp[:, None] - W
    s = s.masked_fill(~vis, float("-inf"))
    if sinks is not None:
        s = torch.cat([s, sinks.float().view(H, 1, 1).expand(H, n, 1)], dim=-1)
    p = torch.softmax(s, dim=-1)[..., :k.shape[0]]
    return torch.einsum("hqk,khd->qhd", p, v)


def case_from_module(attn: PagedSWAAttention, query: torch.Tensor) -> PagedAttentionCase:
    """The paged_attention call the module just made, as a conftest case (for the tolerance)."""
    m = attn.cache_manager
    plan = m.last_plan
    n = len(plan.seq_ids)
    rows = n if m.step_max_query_len == 1 else m.max_num_seqs  # decode: only the batch's rows
    lens = list(plan.seq_lens) + [0] * (rows - n)
    qlens = list(plan.num_new_tokens) + [0] * (rows - n)
    return PagedAttentionCase(
        query=query, key_cache=attn.key_cache, value_cache=attn.value_cache,
        block_tables=m.block_tables[:rows], seq_lens=m.seq_lens[:rows], scale=attn.scale,
        sliding_window=attn.sliding_window, logits_soft_cap=attn.logits_soft_cap, sinks=attn.sinks,
        query_start_loc=m.query_start_loc[:rows + 1], max_query_len=m.step_max_query_len,
        k_scale=attn.k_scale, v_scale=attn.v_scale, seq_lens_list=lens, query_lens_list=qlens,
        first_blocks=[window_first_block(L, q, attn.sliding_window, m.block_size)
                      for L, q in zip(lens, qlens)])


class Harness:
    """Drives layers sharing one manager with random q/k/v and keeps each sequence's history."""

    def __init__(self, layers: List[PagedSWAAttention], seed: int = 0, max_len: int = 4096):
        self.layers = layers
        self.m = layers[0].cache_manager
        self.g = torch.Generator().manual_seed(seed)
        self.max_len = max_len
        self.hist: Dict = {}  # seq_id -> per layer [k_hist, v_hist] (stored values, fp32)
        self.lens: Dict = {}

    def add(self, sid):
        self.m.add_sequence(sid)
        a = self.layers[0]
        dev = a.key_cache.device
        self.hist[sid] = [[torch.zeros(self.max_len, l.num_kv_heads, l.head_size, device=dev)
                           for _ in range(2)] for l in self.layers]
        self.lens[sid] = 0

    def release(self, sid):
        self.m.release_sequence(sid)
        del self.hist[sid], self.lens[sid]

    def stored(self, layer, x, which):
        """What the cache holds for ``x``, in fp32 (fp8: quantized then dequantized)."""
        if layer.fp8:
            sc = layer.k_scale if which == 0 else layer.v_scale
            return reference.dequantize(reference.quantize_fp8(x, sc), sc)
        return x.float()

    def step(self, sids, counts, check=True, query_scale=1.0):
        plan = self.m.plan(sids, counts)
        n = plan.num_tokens
        outs = []
        for li, layer in enumerate(self.layers):
            dev, dt = layer.key_cache.device, layer.dtype

            def rnd(h):
                return torch.randn(n, h, layer.head_size, generator=self.g).to(dev, dt)
            q, k, v = rnd(layer.num_heads) * query_scale, rnd(layer.num_kv_heads), rnd(layer.num_kv_heads)
            out = layer(q, k, v)
            outs.append(out)
            dense = torch.zeros(n, layer.num_heads, layer.head_size, device=dev)
            for i, sid in enumerate(plan.seq_ids):
                b, e = plan.query_start_loc[i], plan.query_start_loc[i + 1]
                L0, L = plan.context_lens[i], plan.seq_lens[i]
                kh, vh = self.hist[sid][li]
                kh[L0:L] = self.stored(layer, k[b:e], 0)
                vh[L0:L] = self.stored(layer, v[b:e], 1)
                dense[b:e] = dense_attention(q[b:e], kh, vh, L, layer.sliding_window, layer.scale,
                                             layer.logits_soft_cap, layer.sinks)
            if check == "dense":  # kernel against the history directly (fp32 runs)
                torch.testing.assert_close(out.float(), dense, atol=1e-5, rtol=1e-5)
            elif check:
                case = case_from_module(layer, q)
                ref32 = case.reference_fp32()
                # The cache holds exactly the history (same stored values, fp32 math both sides).
                torch.testing.assert_close(ref32, dense, atol=2e-5, rtol=2e-5)
                assert_attention_close(out, case, ref32)
        for sid, L in zip(plan.seq_ids, plan.seq_lens):
            self.lens[sid] = L
        return outs


def make_attention(num_heads=4, num_kv_heads=2, head_size=32, *, W=16, block_size=4,
                   dtype=torch.float32, device="cpu", **kw):
    return PagedSWAAttention(num_heads, num_kv_heads, head_size, sliding_window=W,
                             block_size=block_size, device=device, dtype=dtype, **kw)


MODULE_CASES = [
    # (name, dtype, heads, head_size, W, block_size, extra constructor args)
    ("fp32-gqa2", torch.float32, (4, 2), 32, 16, 4, {}),
    ("bf16-gqa8-bs16", torch.bfloat16, (8, 1), 64, 33, 16, {}),
    ("fp16-nowindow", torch.float16, (4, 4), 16, 0, 8, {}),
    ("fp32-softcap", torch.float32, (4, 2), 32, 9, 4, {"logits_soft_cap": 1.5}),
    ("bf16-sinks", torch.bfloat16, (4, 1), 32, 12, 8, {"sinks": "random"}),
    ("fp32-fp8cache", torch.float32, (4, 2), 32, 16, 4,
     {"kv_cache_dtype": "fp8_e4m3", "k_scale": 0.02, "v_scale": 0.03}),
    ("bf16-fp8cache-sinks-cap", torch.bfloat16, (8, 2), 16, 7, 4,
     {"kv_cache_dtype": "fp8_e4m3", "k_scale": 0.015, "v_scale": 0.025, "sinks": "random",
      "logits_soft_cap": 2.0}),
]


def _resolve(extra, num_heads, seed):
    extra = dict(extra)
    if extra.get("sinks") == "random":
        g = torch.Generator().manual_seed(seed)
        extra["sinks"] = torch.rand(num_heads, generator=g) * 5.0 - 2.0
    return extra


@pytest.mark.parametrize("name,dtype,heads,D,W,bs,extra", MODULE_CASES,
                         ids=[c[0] for c in MODULE_CASES])
def test_module_matches_dense_attention_over_a_schedule(name, dtype, heads, D, W, bs, extra):
    """Prefills of mixed lengths (shorter and longer than the window), chunked steps, decodes,
    sequences joining and leaving, a subset scheduled in shuffled order: every step's output
    matches, and the cache never holds more than the bound."""
    attn = make_attention(*heads, D, W=W, block_size=bs, dtype=dtype, max_num_seqs=4,
                          max_seq_len=256, max_query_len=40, **_resolve(extra, heads[0], 1))
    h = Harness([attn], seed=2)
    m = attn.cache_manager
    for sid in ("a", "b", "c"):
        h.add(sid)
    rng = random.Random(3)
    h.step(["a", "b", "c"], [1, 40, 23])  # prefill: 1 token, > window, about the window
    for step in range(24):
        if step == 8:
            h.release("b")
            h.add("d")
            h.step(["d"], [37])
        live = list(h.lens)
        rng.shuffle(live)
        sched = live[:rng.randint(1, len(live))]
        counts = [1 if rng.random() < 0.7 else rng.randint(2, 12) for _ in sched]
        h.step(sched, counts)
        for sid in h.lens:
            assert m.num_blocks_held(sid) <= m.max_blocks_held
    if W > 0:
        assert m.max_blocks_held == cdiv(W + 40 - 1, bs) + 1


def test_layers_sharing_a_manager():
    """Two layers (different head counts, one with sinks) share blocks and tables but not K/V."""
    m = KVCacheManager(block_size=4, num_blocks=40, max_num_seqs=3, max_seq_len=200,
                       sliding_window=10, max_query_len=16)
    l0 = PagedSWAAttention(4, 2, 16, sliding_window=10, cache_manager=m)
    l1 = PagedSWAAttention(6, 3, 32, sliding_window=10, cache_manager=m,
                           sinks=torch.linspace(-1, 2, 6))
    assert l0.key_cache.shape[:2] == l1.key_cache.shape[:2] == (40, 4)
    h = Harness([l0, l1], seed=5)
    h.add(0)
    h.add(1)
    h.step([0, 1], [16, 5])
    for _ in range(30):
        h.step([1, 0], 1)
    with pytest.raises(ValueError, match=r"sliding_window \(0\) differs from the shared "
                                         r"cache_manager's \(10\)"):
        PagedSWAAttention(4, 2, 16, sliding_window=0, cache_manager=m)


def test_flat_inputs_match_3d():
    outs = []
    for flat in (False, True):
        attn = make_attention(max_num_seqs=2, max_seq_len=64, max_query_len=8)
        attn.add_sequence("s")
        g = torch.Generator().manual_seed(0)
        res = []
        for q_len in (8, 1, 1, 5):
            attn.plan(["s"], q_len)
            q = torch.randn(q_len, 4, 32, generator=g)
            k, v = torch.randn(2, q_len, 2, 32, generator=g)
            if flat:
                out = attn(q.flatten(1), k.flatten(1), v.flatten(1))
                assert out.shape == (q_len, 4 * 32)
                out = out.view(q_len, 4, 32)
            else:
                out = attn(q, k, v)
            res.append(out)
        outs.append(torch.cat(res))
    assert torch.equal(outs[0], outs[1])


class _RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def test_forward_reads_no_host_values():
    """forward issues the two ops on persistent buffers and nothing that syncs (.item(), .tolist(),
    nonzero, host copies)."""
    attn = make_attention(max_num_seqs=2, max_seq_len=64, max_query_len=8)
    attn.add_sequence(0)
    attn.add_sequence(1)
    attn.plan([0, 1], [8, 3])
    q, k, v = torch.randn(11, 4, 32), torch.randn(11, 2, 32), torch.randn(11, 2, 32)
    with _RecordOps() as rec:
        attn(q, k, v)
    assert [n for n in rec.names if n.startswith("swa_ops.")] == [
        "swa_ops.reshape_and_cache.default", "swa_ops.paged_attention.default"]
    assert set(rec.names) <= {"swa_ops.reshape_and_cache.default",
                              "swa_ops.paged_attention.default", "aten.slice.Tensor"}, rec.names


def _decode_run(attn, g, steps, compiled=None, device="cpu", prefill=True):
    """Two sequences: a prefill step ([5, 20] tokens) then ``steps`` decode steps; or, with
    ``prefill=False``, decode only from empty sequences, "y" joining at step 10 (the CUDA decode
    kernel's form). Returns every step's output."""
    fn = attn if compiled is None else compiled
    H, KV, D = attn.num_heads, attn.num_kv_heads, attn.head_size
    outs = []
    attn.add_sequence("x")
    if prefill:
        attn.add_sequence("y")
    for i in range(steps + 1):
        if not prefill and i == 10:
            attn.add_sequence("y")
        if prefill:
            sids, counts = ["x", "y"], ([5, 20] if i == 0 else [1, 1])
        else:
            sids = ["x", "y"] if i >= 10 else ["x"]
            counts = [1] * len(sids)
        attn.plan(sids, counts)
        n = sum(counts)
        q = torch.randn(n, H, D, generator=g).to(device, attn.dtype)
        k = torch.randn(n, KV, D, generator=g).to(device, attn.dtype)
        v = torch.randn(n, KV, D, generator=g).to(device, attn.dtype)
        outs.append(fn(q, k, v).clone())
    return outs


def test_compile_fullgraph_does_not_recompile_as_contexts_grow():
    """One graph for the prefill step, one for decode, then none however long the contexts get
    (blocks recycled, tables rewritten, lengths growing: all data, no guards)."""
    torch._dynamo.reset()
    eager = make_attention(W=8, max_num_seqs=2, max_seq_len=128, max_query_len=32)
    comp = make_attention(W=8, max_num_seqs=2, max_seq_len=128, max_query_len=32)
    counter = torch._dynamo.testing.CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(comp, backend=counter, fullgraph=True)
    want = _decode_run(eager, torch.Generator().manual_seed(0), steps=60)
    got = _decode_run(comp, torch.Generator().manual_seed(0), steps=60, compiled=compiled)
    assert counter.frame_count == 2, f"{counter.frame_count} compiles"
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    assert comp.cache_manager.seq_len("y") == 80  # 10x the window, blocks recycled many times


def test_compile_inductor_matches_eager():
    torch._dynamo.reset()
    eager = make_attention(W=8, max_num_seqs=2, max_seq_len=64, max_query_len=32)
    comp = make_attention(W=8, max_num_seqs=2, max_seq_len=64, max_query_len=32)
    compiled = torch.compile(comp, fullgraph=True)
    want = _decode_run(eager, torch.Generator().manual_seed(1), steps=12)
    got = _decode_run(comp, torch.Generator().manual_seed(1), steps=12, compiled=compiled)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


@gpu
@pytest.mark.gpu
def test_cuda_reduce_overhead_equals_eager_without_recompiles():
    """torch.compile(mode="reduce-overhead") replays CUDA graphs (none skipped for mutated inputs:
    the caches are static addresses) and equals eager at every step; contexts grow to 3x the
    window without new graphs (one per batch size)."""
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    kw = dict(num_heads=8, num_kv_heads=2, head_size=64, W=64, block_size=16, max_num_seqs=2,
              max_seq_len=1024, max_query_len=32, dtype=torch.bfloat16, device="cuda")
    eager, comp = make_attention(**kw), make_attention(**kw)
    compiled = torch.compile(comp, mode="reduce-overhead", fullgraph=True)
    run = dict(steps=200, device="cuda", prefill=False)
    want = _decode_run(eager, torch.Generator().manual_seed(0), **run)
    got = _decode_run(comp, torch.Generator().manual_seed(0), compiled=compiled, **run)
    for i, (a, b) in enumerate(zip(got, want)):
        assert torch.equal(a, b), f"step {i}: max diff {(a.float() - b.float()).abs().max()}"
    assert counters["inductor"]["cudagraph_skips"] == 0, dict(counters["inductor"])
    assert counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])


@gpu
@pytest.mark.gpu
def test_one_cuda_graph_serves_every_decode_step():
    """Capture forward once; replay it after each plan(): the metadata lives at fixed addresses, so
    the same graph is right for every step, recycled blocks and growing contexts included."""
    kw = dict(num_heads=8, num_kv_heads=2, head_size=64, W=48, block_size=16, max_num_seqs=3,
              max_seq_len=2048, max_query_len=16, dtype=torch.bfloat16, device="cuda")
    graphed, eager = make_attention(**kw), make_attention(**kw)
    g = torch.Generator().manual_seed(0)
    rnd = lambda *s: torch.randn(*s, generator=g).to("cuda", torch.bfloat16)  # noqa: E731
    sq, sk, sv = rnd(3, 8, 64), rnd(3, 2, 64), rnd(3, 2, 64)
    for a in (graphed, eager):
        for sid in range(3):
            a.add_sequence(sid)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up off the capture, as torch.cuda.graphs recommends
        for _ in range(3):
            graphed.plan([0, 1, 2])
            graphed(sq, sk, sv)
    torch.cuda.current_stream().wait_stream(s)
    for _ in range(3):
        eager.plan([0, 1, 2])
        eager(sq, sk, sv)
    cg = torch.cuda.CUDAGraph()
    graphed.plan([0, 1, 2])
    eager.plan([0, 1, 2])
    with torch.cuda.graph(cg):
        sout = graphed(sq, sk, sv)  # any host sync here would fail the capture
    for step in range(300):
        if step:
            graphed.plan([0, 1, 2])
            eager.plan([0, 1, 2])
        sq.copy_(rnd(3, 8, 64))
        sk.copy_(rnd(3, 2, 64))
        sv.copy_(rnd(3, 2, 64))
        cg.replay()
        want = eager(sq, sk, sv)
        assert torch.equal(sout, want), f"step {step}"
    assert graphed.cache_manager.seq_len(0) > 6 * 48


# ---------------------------------------------------------------------------------------------
# A long run: memory bounded, outputs right.

def test_long_run_100k_tokens_bounded_memory():
    """100,000 tokens through one sequence with W = 128 (plus a companion sequence that keeps
    leaving and rejoining, so freed blocks change owners): chunked prefill steps and decode steps,
    every step checked against dense attention over the full history; the pool never grows and no
    sequence ever holds more than cdiv(W + max_query_len - 1, block_size) + 1 blocks."""
    W, bs, mql, total = 128, 16, 1000, 100_000
    attn = PagedSWAAttention(2, 1, 16, sliding_window=W, block_size=bs, max_num_seqs=2,
                             max_seq_len=total, max_query_len=mql, dtype=torch.float32)
    m = attn.cache_manager
    bound = cdiv(W + mql - 1, bs) + 1
    assert m.max_blocks_held == bound and m.num_blocks == 2 * bound
    cache_ptr, cache_shape = attn.key_cache.data_ptr(), attn.key_cache.shape
    h = Harness([attn], seed=7, max_len=total)
    h.add("long")
    rng = random.Random(0)
    side, side_len, steps = 0, 0, 0
    h.add(f"side{side}")
    while h.lens["long"] < total:
        L = h.lens["long"]
        q = min(total - L, rng.choice([1, 1, 1, 7, 129, 500, 999, 1000]))
        sq = rng.choice([1, 1, 16, 64])
        if side_len + sq > 400:  # the companion leaves and a new one joins
            h.release(f"side{side}")
            side += 1
            side_len = 0
            h.add(f"side{side}")
        order = ["long", f"side{side}"] if steps % 2 else [f"side{side}", "long"]
        counts = [q, sq] if order[0] == "long" else [sq, q]
        h.step(order, counts, check="dense")
        side_len += sq
        steps += 1
        assert m.num_blocks_held("long") <= bound
        assert m.num_blocks_held(f"side{side}") <= bound
        assert m.num_blocks_in_use <= m.num_blocks == 2 * bound
    assert h.lens["long"] == total and steps > 200 and side > 10
    assert attn.key_cache.data_ptr() == cache_ptr and attn.key_cache.shape == cache_shape
    # What a cache without recycling would have needed for the long sequence alone:
    assert m.peak_blocks_in_use * 40 < cdiv(total, bs)


# ---------------------------------------------------------------------------------------------
# Errors name the argument.

@pytest.mark.parametrize("kwargs,match", [
    (dict(num_heads=6, num_kv_heads=4), r"num_heads \(6\) must be a multiple of num_kv_heads \(4\)"),
    (dict(num_heads=0), r"num_heads must be a positive int"),
    (dict(head_size=20), r"head_size must be a multiple of 8 up to 256, got 20"),
    (dict(head_size=264), r"head_size must be a multiple of 8 up to 256, got 264"),
    (dict(dtype=torch.float64), r"dtype must be float32, float16 or bfloat16"),
    (dict(kv_cache_dtype="fp8"), r"kv_cache_dtype must be one of \('auto', 'fp8_e4m3'\)"),
    (dict(kv_cache_dtype="fp8_e4m3", k_scale=0.0), r"k_scale must be a positive float"),
    (dict(v_scale=-1.0), r"v_scale must be a positive float"),
    (dict(sinks=torch.zeros(3)), r"sinks must have shape \[num_heads\] = \[4\], got \(3,\)"),
    (dict(logits_soft_cap=-1.0), r"logits_soft_cap must be >= 0"),
    (dict(block_size=0), r"block_size must be a positive int"),
    (dict(max_seq_len=0), r"max_seq_len must be a positive int"),
])
def test_constructor_errors(kwargs, match):
    args = dict(num_heads=4, num_kv_heads=2, head_size=32)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        PagedSWAAttention(args.pop("num_heads"), args.pop("num_kv_heads"), args.pop("head_size"),
                          **args)


def _planned():
    attn = make_attention(max_num_seqs=2, max_seq_len=64, max_query_len=8)
    attn.add_sequence("s")
    attn.plan(["s"], 3)
    return attn


@pytest.mark.parametrize("q,k,v,exc,match", [
    ((3, 4, 16), (3, 2, 32), (3, 2, 32), ValueError,
     r"query must be \[num_tokens, 4, 32\] .*got shape \(3, 4, 16\)"),
    ((3, 2, 32), (3, 2, 32), (3, 2, 32), ValueError, r"query must be \[num_tokens, 4, 32\]"),
    ((3, 4, 32), (3, 4, 32), (3, 2, 32), ValueError,
     r"key must be \[num_tokens, 2, 32\] \(\[num_tokens, num_kv_heads, head_size\]\)"),
    ((3, 4, 32), (3, 2, 32), (3, 2, 8), ValueError, r"value must be \[num_tokens, 2, 32\]"),
    ((4, 4, 32), (4, 2, 32), (4, 2, 32), ValueError,
     r"query has 4 tokens but the planned step has 3"),
    ((3, 4, 32), (2, 2, 32), (2, 2, 32), ValueError, r"key has 2 tokens but the planned step has 3"),
])
def test_forward_shape_errors(q, k, v, exc, match):
    attn = _planned()
    with pytest.raises(exc, match=match):
        attn(torch.randn(q), torch.randn(k), torch.randn(v))


def test_forward_dtype_and_plan_errors():
    attn = _planned()
    with pytest.raises(ValueError, match=r"query dtype torch.bfloat16 differs from the module's "
                                         r"dtype torch.float32"):
        attn(torch.randn(3, 4, 32, dtype=torch.bfloat16), torch.randn(3, 2, 32),
             torch.randn(3, 2, 32))
    fresh = make_attention()
    fresh.add_sequence(0)
    with pytest.raises(RuntimeError, match=r"forward called before plan\(\)"):
        fresh(torch.randn(1, 4, 32), torch.randn(1, 2, 32), torch.randn(1, 2, 32))
    with pytest.raises(ValueError, match=r"seq_id 1 is not an active sequence"):
        fresh.plan([1])
    for _ in range(32):
        fresh.plan([0], 256)
    with pytest.raises(ValueError, match=r"seq_id 0 would reach 8193 tokens, more than "
                                         r"max_seq_len = 8192"):
        fresh.plan([0], 1)


def test_module_to_keeps_the_cache_in_place():
    """`model.to(dtype)` / `.half()` must not convert the fp8 cache or the float32 sinks, nor give
    the cache new addresses (captured graphs and the shared manager rely on them)."""
    attn = make_attention(kv_cache_dtype="fp8_e4m3", sinks=torch.zeros(4))
    ptr = attn.key_cache.data_ptr()
    model = torch.nn.Sequential(attn).to(torch.bfloat16)
    model.half()
    assert attn.key_cache.dtype == FP8 and attn.key_cache.data_ptr() == ptr
    assert attn.sinks.dtype == torch.float32 and attn.k_scale.dtype == torch.float32


def test_demo_runs_and_checks_itself(capsys):
    from swa_ops.__main__ import main
    rc = main(["--device", "cpu", "--batch", "3", "--prompt", "120", "--new-tokens", "40",
               "--window", "32", "--layers", "2", "--heads", "4", "--kv-heads", "2",
               "--head-size", "16", "--prefill-chunk", "16"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "tokens/s" in out and "without recycling" in out and "not read" in out
    assert ": OK" in out


def test_docs_example_runs(capsys):
    """The module's example in README.md runs as written and prints what its comment says."""
    import pathlib
    import re
    readme = pathlib.Path(__file__).resolve().parent.parent / "README.md"
    section = readme.read_text().split("## The module: `PagedSWAAttention`", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    scope: dict = {}
    exec(compile(code, str(readme), "exec"), scope)
    assert capsys.readouterr().out.split() == ["1200", "8", "25"]
    assert scope["out"].shape == (2, 8, 64) and torch.isfinite(scope["out"]).all()
