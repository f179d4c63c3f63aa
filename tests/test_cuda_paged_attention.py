"""CUDA kernels of swa_ops.paged_attention / reshape_and_cache against swa_ops.reference.

The whole published aiter sliding-window grid (792 cases), then head sizes, windows, block sizes,
GQA ratios, variable lengths (0 and 1 included), soft-cap, sinks, and CUDA-graph replay across
growing contexts. Every case poisons what must not be read: blocks with no visible key hold NaN,
invisible slots of partly visible blocks hold 3e4, and block-table entries before the window (and past the context) are -1,
so a read of either shows up as NaN or a fault.

The oracle for the big grids is a batched form of reference.paged_attention for decode (one
gather, one masked softmax), itself checked against reference.paged_attention below.
Tolerance, FlashAttention-style: the kernel's max error against the fp32 oracle may be at most
twice that of the same attention computed by PyTorch in the input dtype (bf16/fp16 logits and
probabilities, fp32 softmax), plus a tiny absolute floor for cases where PyTorch happens to be
exact.
"""
from __future__ import annotations

import itertools

import pytest
import torch

import swa_ops
from swa_ops import reference

from conftest import kernels_launched, merge_ran, template_bools

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DTYPES = (torch.bfloat16, torch.float16)

# aiter's sliding-window decode grid.
AITER_NUM_SEQS = (1, 8, 16)
AITER_HEADS = ((8, 1), (16, 4), (32, 4))
AITER_HEAD_SIZES = (64, 128)
AITER_BLOCK_SIZES = (16, 32)
AITER_CTX_WINDOW = ((128, 512), (512, 512), (513, 512), (768, 512), (2048, 512), (2048, 1024),
                    (4097, 2048), (9216, 8192), (256, 4096), (1024, -1), (4096, 0))

ATOL_FLOOR = 1e-5


def make_case(seq_lens, num_heads, num_kv_heads, head_size, block_size, window, dtype,
              seed=0, extra_blocks_per_seq=1, device="cuda"):
    """Random decode inputs; everything a kernel must not read is NaN or -1.

    Blocks come from a random permutation; table entries of blocks wholly before a sequence's
    window and past its context are -1; cache slots outside every visible window are NaN.
    """
    g = torch.Generator(device=device).manual_seed(seed)
    num_seqs = len(seq_lens)
    max_ctx = max(max(seq_lens), 1)
    max_blocks = (max_ctx + block_size - 1) // block_size + extra_blocks_per_seq
    used = [(L + block_size - 1) // block_size for L in seq_lens]
    num_blocks = sum(used) + 3
    perm = torch.randperm(num_blocks, generator=g, device=device).int()
    shape = (num_blocks, block_size, num_kv_heads, head_size)
    k_cache = torch.randn(shape, generator=g, device=device).to(dtype)
    v_cache = torch.randn(shape, generator=g, device=device).to(dtype)
    block_tables = torch.full((num_seqs, max_blocks), -1, dtype=torch.int32, device=device)
    visible = torch.zeros(num_blocks * block_size, dtype=torch.bool, device=device)
    nxt = 0
    for s, L in enumerate(seq_lens):
        blocks = perm[nxt:nxt + used[s]]
        nxt += used[s]
        if L == 0:
            continue
        lo = reference.window_start(L - 1, window)
        first = lo // block_size  # blocks before it stay -1 in the table
        block_tables[s, first:used[s]] = blocks[first:]
        pos = torch.arange(lo, L, device=device)
        visible[blocks.long()[pos // block_size] * block_size + pos % block_size] = True
    # Invisible slots of blocks that hold visible keys get a huge finite value (the reference reads
    # whole blocks and masks, so it cannot take NaN there); blocks with no visible key get NaN.
    visible = visible.view(num_blocks, block_size)
    hidden = ~visible
    k_cache[hidden] = 3e4
    v_cache[hidden] = 3e4
    untouched = ~visible.any(dim=1)
    k_cache[untouched] = float("nan")
    v_cache[untouched] = float("nan")
    query = torch.randn(num_seqs, num_heads, head_size, generator=g, device=device).to(dtype)
    lens = torch.tensor(seq_lens, dtype=torch.int32, device=device)
    return query, k_cache, v_cache, block_tables, lens


def batched_decode_ref(query, k_cache, v_cache, block_tables, seq_lens, scale, window,
                       soft_cap=0.0, sinks=None, compute_dtype=torch.float32):
    """reference.paged_attention for decode, batched. compute_dtype=fp32: the oracle; the input
    dtype: PyTorch's own low-precision attention (logits and P in that dtype, softmax in fp32)."""
    num_seqs, num_heads, head_size = query.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    group = num_heads // num_kv_heads
    L = seq_lens.long()
    lo = (L - window).clamp_min(0) if window > 0 else torch.zeros_like(L)
    n = max(int((L - lo).max().item()), 1)
    pos = lo[:, None] + torch.arange(n, device=query.device)[None, :]  # [S, N]
    valid = pos < L[:, None]
    bidx = (pos // block_size).clamp(max=block_tables.shape[1] - 1)
    blk = torch.where(valid, block_tables.long().gather(1, bidx), torch.zeros_like(bidx))
    off = pos % block_size
    k = k_cache[blk, off]  # [S, N, KVH, D]
    v = v_cache[blk, off]
    zero = torch.zeros((), dtype=k.dtype, device=k.device)
    k = torch.where(valid[:, :, None, None], k, zero).to(compute_dtype)
    v = torch.where(valid[:, :, None, None], v, zero).to(compute_dtype)
    q = query.view(num_seqs, num_kv_heads, group, head_size).to(compute_dtype)
    logits = torch.einsum("shgd,snhd->shgn", q, k).float() * scale
    if soft_cap > 0:
        logits = soft_cap * torch.tanh(logits / soft_cap)
    logits = logits.masked_fill(~valid[:, None, None, :], float("-inf"))
    row_max = logits.amax(-1, keepdim=True)
    if sinks is not None:
        sk = sinks.float().view(1, num_kv_heads, group, 1)
        row_max = torch.maximum(row_max, sk)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    w = torch.exp(logits - row_max)
    denom = w.sum(-1, keepdim=True)
    if sinks is not None:
        denom = denom + torch.exp(sk - row_max)
    p = torch.where(denom > 0, w / denom.clamp_min(1e-30), torch.zeros_like(w))
    out = torch.einsum("shgn,snhd->shgd", p.to(compute_dtype), v).float()
    return out.reshape(num_seqs, num_heads, head_size)


def check_case(seq_lens, num_heads, num_kv_heads, head_size, block_size, window, dtype, seed=0,
               soft_cap=0.0, use_sinks=False):
    query, k_cache, v_cache, bt, lens = make_case(seq_lens, num_heads, num_kv_heads, head_size,
                                                  block_size, window, dtype, seed)
    scale = head_size ** -0.5
    sinks = None
    if use_sinks:
        sinks = torch.randn(num_heads, generator=torch.Generator().manual_seed(seed + 1)).cuda()
    out = torch.ops.swa_ops.paged_attention(query, k_cache, v_cache, bt, lens, scale, window,
                                            soft_cap, sinks)
    assert out.dtype == dtype and out.shape == query.shape
    ref = batched_decode_ref(query, k_cache, v_cache, bt, lens, scale, window, soft_cap, sinks)
    pt = batched_decode_ref(query, k_cache, v_cache, bt, lens, scale, window, soft_cap, sinks,
                            compute_dtype=dtype)
    assert not out.isnan().any(), "NaN in the output: a poisoned slot or -1 block was read"
    err = (out.float() - ref).abs().max().item()
    pt_err = (pt.float() - ref).abs().max().item()
    assert err <= 2 * pt_err + ATOL_FLOOR, f"max err {err:.3g} > 2 x PyTorch's {pt_err:.3g}"
    zero_rows = (lens == 0).nonzero().flatten()
    if len(zero_rows):
        assert (out[zero_rows] == 0).all(), "seq_len == 0 must give exact zeros"
    return out


# ---------------------------------------------------------------------------------------------


def test_batched_oracle_matches_reference():
    """The batched oracle used below is reference.paged_attention, case for case."""
    cases = [([37, 0, 1, 300], 8, 2, 64, 16, 128, 0.0, False),
             ([513, 512, 2], 4, 4, 96, 8, 512, 0.0, True),
             ([1000, 17], 16, 2, 128, 32, 0, 30.0, True),
             ([129], 8, 1, 80, 64, 2047, 0.0, False)]
    for seq_lens, h, kvh, d, bs, w, cap, use_sinks in cases:
        q, kc, vc, bt, lens = make_case(seq_lens, h, kvh, d, bs, w, torch.bfloat16, seed=3)
        sinks = torch.randn(h, device="cuda") if use_sinks else None
        want = reference.paged_attention(q, kc, vc, bt, lens, d ** -0.5, w, cap, sinks).float()
        got = batched_decode_ref(q, kc, vc, bt, lens, d ** -0.5, w, cap, sinks)
        torch.testing.assert_close(got, want, atol=2e-2, rtol=2e-2)  # want is rounded to bf16


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("num_seqs", AITER_NUM_SEQS)
@pytest.mark.parametrize("heads", AITER_HEADS, ids=lambda h: f"h{h[0]}-{h[1]}")
@pytest.mark.parametrize("head_size", AITER_HEAD_SIZES)
@pytest.mark.parametrize("block_size", AITER_BLOCK_SIZES)
@pytest.mark.parametrize("ctx_window", AITER_CTX_WINDOW, ids=lambda c: f"ctx{c[0]}-w{c[1]}")
def test_aiter_grid(dtype, num_seqs, heads, head_size, block_size, ctx_window):
    ctx, window = ctx_window
    check_case([ctx] * num_seqs, heads[0], heads[1], head_size, block_size, window, dtype,
               seed=ctx + num_seqs)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("head_size", (64, 80, 96, 128, 192, 256))
@pytest.mark.parametrize("window", (128, 1024, 2047, 4096, 0))
def test_head_sizes_and_windows(dtype, head_size, window):
    seq_lens = [window + 300, max(window - 5, 1), 5000, 1, 0, 4097]
    check_case(seq_lens, 16, 4, head_size, 16, window, dtype, seed=head_size + window)


@pytest.mark.parametrize("block_size", (8, 16, 64, 128, 256))
@pytest.mark.parametrize("window", (128, 1000, 0))
def test_block_sizes(block_size, window):
    seq_lens = [1, 2, 127, 128, 129, 1999, 3000, 0]
    check_case(seq_lens, 8, 2, 128, block_size, window, torch.bfloat16, seed=block_size)


@pytest.mark.parametrize("group", (1, 2, 3, 4, 8, 16, 20, 32))
@pytest.mark.parametrize("head_size", (64, 128))
def test_gqa_ratios(group, head_size):
    check_case([700, 2500, 33, 0, 1], 2 * group, 2, head_size, 16, 1024, torch.float16, seed=group)


def test_variable_lengths_with_long_and_short():
    # One long sequence among short ones, including 0 and 1; edge lengths around the window.
    seq_lens = [0, 1, 2, 15, 16, 17, 4095, 4096, 4097, 4111, 4112, 60000, 3, 0]
    check_case(seq_lens, 32, 8, 128, 16, 4096, torch.bfloat16, seed=7)


def test_single_long_sequence_fills_gpu():
    for window in (4096, 0):
        check_case([131072 if window else 20000], 32, 8, 128, 16, window, torch.bfloat16, seed=9)


def test_window_edges_exact():
    """The key at L - W is visible and L - W - 1 is not: give it an overwhelming logit."""
    W, L, D = 64, 200, 64
    q, kc, vc, bt, lens = make_case([L], 1, 1, D, 16, W, torch.float32, seed=1, device="cpu")
    bs = 16
    q = torch.ones(1, 1, D)
    # every visible key gets logit 0 except the first visible one, which gets a huge logit
    for pos in range(L - W, L):
        blk = bt[0, pos // bs]
        kc[blk, pos % bs] = 0.0
        vc[blk, pos % bs] = 0.0
    first = L - W
    kc[bt[0, first // bs], first % bs] = 4.0
    vc[bt[0, first // bs], first % bs] = 1.0
    dev = [t.cuda().to(torch.bfloat16) if t.is_floating_point() else t.cuda()
           for t in (q, kc, vc)]
    out = torch.ops.swa_ops.paged_attention(dev[0], dev[1], dev[2], bt.cuda(), lens.cuda(), 1.0, W)
    assert out.float().min().item() > 0.99  # the first visible key dominates
    # One step later it has left the window: the output must drop to the uniform mix (zeros).
    lens2 = torch.tensor([L + 1], dtype=torch.int32)
    blk = bt[0, L // bs]
    kc2, vc2 = dev[1].clone(), dev[2].clone()
    kc2[blk, L % bs] = 0
    vc2[blk, L % bs] = 0
    out2 = torch.ops.swa_ops.paged_attention(dev[0], kc2, vc2, bt.cuda(), lens2.cuda(), 1.0, W)
    assert out2.abs().max().item() == 0.0


@pytest.mark.parametrize("cap", (50.0, 5.0))
@pytest.mark.parametrize("head_size,heads", ((256, (16, 8)), (256, (8, 4)), (128, (32, 8))))
def test_soft_cap(cap, head_size, heads):
    check_case([4097, 5000, 12, 0], heads[0], heads[1], head_size, 16, 4096, torch.bfloat16,
               seed=11, soft_cap=cap)


@pytest.mark.parametrize("window", (128, 0))
def test_sinks(window):
    check_case([8192, 130, 1, 0, 64], 64, 8, 64, 16, window, torch.bfloat16, seed=12,
               use_sinks=True)


def test_sinks_with_split():
    # A long window forces several partitions: the sink must count once, in the merge.
    check_case([30000], 16, 2, 128, 16, 8192, torch.bfloat16, seed=13, use_sinks=True)


def test_cuda_graph_replay_growing_context():
    torch.manual_seed(0)
    H, KVH, D, bs, W, S = 32, 8, 128, 16, 1024, 4
    max_ctx = 4096
    max_blocks = max_ctx // bs
    num_blocks = S * max_blocks
    dt = torch.bfloat16
    k_cache = torch.randn(num_blocks, bs, KVH, D, device="cuda", dtype=dt)
    v_cache = torch.randn(num_blocks, bs, KVH, D, device="cuda", dtype=dt)
    bt = torch.randperm(num_blocks, device="cuda").int().view(S, max_blocks)
    lens = torch.tensor([1, 100, 1000, 3000], dtype=torch.int32, device="cuda")
    q = torch.randn(S, H, D, device="cuda", dtype=dt)
    for window in (W, 0):
        torch.ops.swa_ops.paged_attention(q, k_cache, v_cache, bt, lens, D ** -0.5, window)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = torch.ops.swa_ops.paged_attention(q, k_cache, v_cache, bt, lens, D ** -0.5,
                                                    window)
        for step in range(0, 1000, 97):
            lens.copy_(torch.tensor([1 + step, 100 + step, 1000 + step, 3000 + step],
                                    dtype=torch.int32))
            q.copy_(torch.randn(S, H, D, dtype=dt))
            graph.replay()
            ref = batched_decode_ref(q, k_cache, v_cache, bt, lens, D ** -0.5, window)
            pt = batched_decode_ref(q, k_cache, v_cache, bt, lens, D ** -0.5, window,
                                    compute_dtype=dt)
            err = (out.float() - ref).abs().max().item()
            assert err <= 2 * (pt.float() - ref).abs().max().item() + ATOL_FLOOR


@pytest.mark.parametrize("shape", [
    ([9216] * 16, 32, 4, 128, 8192),      # seed's shape: 4 partitions, the merge's direct path
    ([131072], 32, 8, 128, 4096),         # 33 partitions (32 live): the merge's sliced path
    ([30000, 4100, 12, 0], 16, 2, 80, 8192),  # D = 80: partial rows are not whole L2 lines
], ids=("direct", "sliced", "d80"))
def test_split_partials_fresh_every_replay(shape):
    """The split's partials are stored at L2 evict_last priority and the merge discards their
    lines after reading them (SWA_OPS_PART_L2): each replay of one graph, alternating two cases'
    inputs in the same buffers, must merge its own partials, never a previous replay's or the
    indeterminate contents of a dropped line."""
    seq_lens, H, KVH, D, W = shape
    dt = torch.bfloat16
    cases = [make_case(seq_lens, H, KVH, D, 16, W, dt, seed=s) for s in (21, 22)]
    bufs = [t.clone() for t in cases[0]]
    q, kc, vc, bt, lens = bufs
    scale = D ** -0.5
    split = merge_ran(lambda: torch.ops.swa_ops.paged_attention(q, kc, vc, bt, lens, scale, W))
    assert split in (None, True)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = torch.ops.swa_ops.paged_attention(q, kc, vc, bt, lens, scale, W)
    for i in range(5):
        case = cases[i % 2]
        for buf, src in zip(bufs, case):
            buf.copy_(src)
        graph.replay()
        ref = batched_decode_ref(*case, scale, W)
        pt = batched_decode_ref(*case, scale, W, compute_dtype=dt)
        assert not out.isnan().any(), f"replay {i}: NaN in the output"
        err = (out.float() - ref).abs().max().item()
        assert err <= 2 * (pt.float() - ref).abs().max().item() + ATOL_FLOOR, f"replay {i}: {err}"


# Short partitions (the decode kernel's ALLIN variant, SWA_OPS_SMALL): gpt-oss-like and
# single-128k-like shapes, window starts on and off a tile boundary (8 and 9 tiles), small blocks;
# both paths against the reference.
@pytest.mark.parametrize("small", ("1", "0"))
@pytest.mark.parametrize("shape", [
    # 64 x 8 (sequence, kv head) pairs fill the GPU: no split, 192-token partitions (9 tiles).
    ([8192, 8191, 8185, 130, 129, 128, 127, 16, 1, 0, 8180, 4097, 2000, 511, 8177, 8178] * 4,
     64, 8, 64, 16, 128),
    ([8192, 8191, 8185, 300, 17, 1, 0], 64, 8, 64, 8, 128),
    ([131072], 32, 8, 128, 16, 4096),
    ([131065], 32, 8, 128, 32, 4096),
    ([5000, 4097, 70, 0], 16, 4, 96, 16, 100),
])
def test_short_partitions(monkeypatch, small, shape):
    monkeypatch.setenv("SWA_OPS_SMALL", small)
    seq_lens, h, kvh, d, bs, w = shape
    check_case(seq_lens, h, kvh, d, bs, w, torch.bfloat16, seed=21)


def decode_kernels_launched(fn):
    """Names of the decode kernels `fn` launched (profiler), or None where it records none."""
    return kernels_launched(fn, "decode_mma_kernel")


def template_flags(name):
    """decode_mma_kernel<T, D, SOFTCAP, KV8, PACKED, ALLIN, SWAP, PAIR, TMA>'s seven bool
    arguments."""
    return template_bools(name, "decode_mma_kernel", 7)


def swap_flag(name):
    """Whether the decode kernel `name` is the swapped tile (SWAP)."""
    return template_flags(name)[4]


def pair_flag(name):
    """Whether the decode kernel `name` is the kv-head-paired swapped tile (PAIR)."""
    return template_flags(name)[5]


def tma_flag(name):
    """Whether the decode kernel `name` is the fp8 TMA ring (TMA)."""
    return template_flags(name)[6]


# Both tile layouts of the single-token decode kernel (SWA_OPS_SWAP): groups of <= 8 heads run
# on the N side of the MMAs by default (swap_frag.h); "0" keeps them on the M side. Every group
# size up to 8 (odd ones leave dead columns), every head size, splits, windows on and off tile
# boundaries, block size 8 (two blocks per tile), soft-cap, sinks, fp8.
@pytest.mark.parametrize("swap", ("1", "0"))
@pytest.mark.parametrize("head_size", (64, 80, 96, 128, 192, 256))
@pytest.mark.parametrize("group", (1, 3, 4, 8))
def test_swapped_tiles(monkeypatch, swap, head_size, group):
    monkeypatch.setenv("SWA_OPS_SWAP", swap)
    seed = head_size + group
    names = decode_kernels_launched(
        lambda: check_case([5000, 4097, 300, 17, 1, 0], 2 * group, 2, head_size, 16, 1000,
                           torch.bfloat16, seed=seed))
    if names is not None:  # the layout the switch asks for is the one that ran
        assert all(swap_flag(n) == (swap == "1") for n in names), names
    check_case([20000, 129], group, 1, head_size, 8, 0, torch.float16, seed=seed + 1,
               soft_cap=30.0, use_sinks=True)
    check_fp8([4100, 700, 1, 0], 2 * group, 2, head_size, 16, 2047, seed=seed + 2,
              use_sinks=group == 8)


# The pre-wait L2 prefetch (DecodeParams::prewait_tiles): the default rule (decode_split.h:
# here on for 64 sequences at W = 128, kv-head paired, one unsplit wave; and for one sequence at
# W = 4096, 33 partitions of 8 tiles, and 8 sequences at W = 128, 3 partitions of 4 tiles: from
# each warp's second tile, with the merge's early trigger), the ALLIN variant's
# (SWA_OPS_SMALL=1), the ring kernels' forced on (SWA_OPS_PREWAIT, SWA_OPS_PREWAIT_FIRST, with
# and without the merge's early trigger), and none.
PREWAIT_MODES = {
    "default": {},
    "none": {"SWA_OPS_PREWAIT": "0"},
    "ring-from1-early": {"SWA_OPS_PREWAIT": "2", "SWA_OPS_PREWAIT_FIRST": "1",
                         "SWA_OPS_MERGE_EARLY": "1"},
    "allin": {"SWA_OPS_SMALL": "1"},
    "ring2": {"SWA_OPS_PREWAIT": "2"},
    "ring3-early": {"SWA_OPS_PREWAIT": "3", "SWA_OPS_MERGE_EARLY": "1"},
}


@pytest.mark.parametrize("mode", sorted(PREWAIT_MODES))
@pytest.mark.parametrize("S,H,D,W", [(64, 32, 64, 128), (8, 64, 64, 128), (1, 32, 128, 4096),
                                     (8, 32, 64, 4096), (8, 64, 128, 4096), (8, 64, 128, 512),
                                     (8, 32, 96, 2047)])
def test_prewait_prefetch_graph_with_writer_before(monkeypatch, mode, S, H, D, W):
    # The kernel just before the attention rewrites seq_lens (and the query) inside the graph, so
    # the speculative pre-wait reads may see the old lengths: only the L2 prefetch may depend on
    # them, never the result. W = 4096 splits (8 sequences x 8 kv heads), so the merge runs and,
    # with the early trigger, lets the next kernel launch before its own wait. Groups of 4 at
    # D = 64 / 96 take the kv-head-paired kernel.
    for var in ("SWA_OPS_SMALL", "SWA_OPS_PREWAIT", "SWA_OPS_PREWAIT_FIRST",
                "SWA_OPS_MERGE_EARLY"):
        monkeypatch.delenv(var, raising=False)
    for var, val in PREWAIT_MODES[mode].items():
        monkeypatch.setenv(var, val)
    torch.manual_seed(1)
    KVH, bs = 8, 16
    max_blocks = 8192 // bs
    dt = torch.bfloat16
    k_cache = torch.randn(S * max_blocks, bs, KVH, D, device="cuda", dtype=dt)
    v_cache = torch.randn(S * max_blocks, bs, KVH, D, device="cuda", dtype=dt)
    bt = torch.randperm(S * max_blocks, device="cuda").int().view(S, max_blocks)
    lens0 = ([1, 127, 128, 129, 1000, 4095, 8000, 8100] * max(1, S // 8))[-S:]
    base = torch.tensor(lens0, dtype=torch.int32, device="cuda")
    lens = base.clone()
    step_t = torch.zeros(1, dtype=torch.int32, device="cuda")
    q = torch.randn(S, H, D, device="cuda", dtype=dt)
    torch.ops.swa_ops.paged_attention(q, k_cache, v_cache, bt, lens, D ** -0.5, W)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        torch.add(base, step_t, out=lens)  # the predecessor kernel writes seq_lens
        out = torch.ops.swa_ops.paged_attention(q, k_cache, v_cache, bt, lens, D ** -0.5, W)
    for step in (0, 1, 5, 16, 33, 90):
        step_t.fill_(step)
        q.copy_(torch.randn(S, H, D, dtype=dt))
        graph.replay()
        torch.cuda.synchronize()
        assert (lens == base + step).all()
        ref = batched_decode_ref(q, k_cache, v_cache, bt, lens, D ** -0.5, W)
        pt = batched_decode_ref(q, k_cache, v_cache, bt, lens, D ** -0.5, W, compute_dtype=dt)
        err = (out.float() - ref).abs().max().item()
        assert err <= 2 * (pt.float() - ref).abs().max().item() + ATOL_FLOOR


# ---------------------------------------------------------------------------------------------
# reshape_and_cache: moves bytes, so exact equality with the reference.


@pytest.mark.parametrize("src_dtype,cache_dtype",
                         [(torch.bfloat16, torch.bfloat16), (torch.float16, torch.float16),
                          (torch.float32, torch.float32), (torch.bfloat16, torch.float8_e4m3fn),
                          (torch.float16, torch.float8_e4m3fn),
                          (torch.float32, torch.float8_e4m3fn)])
@pytest.mark.parametrize("head_size", (64, 96, 128, 256, 8))
def test_reshape_and_cache_exact(src_dtype, cache_dtype, head_size):
    g = torch.Generator().manual_seed(head_size)
    T, KVH, nb, bs = 37, 4, 20, 16
    key = (torch.randn(T, KVH, head_size, generator=g) * 300).to(src_dtype).cuda()
    value = (torch.randn(T, KVH, head_size, generator=g) * 3).to(src_dtype).cuda()
    key[0, 0, :4] = torch.tensor([1e6, -1e6, 448.0 * 0.37, 1e-9])  # saturation and subnormals
    slots = torch.randperm(nb * bs, generator=g)[:T]
    slots[::5] = -1
    slots = slots.cuda()
    fp8 = cache_dtype == torch.float8_e4m3fn
    k_scale = torch.tensor([0.37], device="cuda") if fp8 else None
    v_scale = torch.tensor([0.011], device="cuda") if fp8 else None
    kc = torch.zeros(nb, bs, KVH, head_size, device="cuda").to(cache_dtype)
    vc = torch.zeros_like(kc)
    kc_ref, vc_ref = kc.clone(), vc.clone()
    torch.ops.swa_ops.reshape_and_cache(key, value, kc, vc, slots, k_scale, v_scale)
    reference.reshape_and_cache(key, value, kc_ref, vc_ref, slots, k_scale, v_scale)
    if fp8:
        kc, vc, kc_ref, vc_ref = (t.view(torch.uint8) for t in (kc, vc, kc_ref, vc_ref))
    assert torch.equal(kc, kc_ref) and torch.equal(vc, vc_ref)


def test_reshape_and_cache_strided_source():
    # A [T, 2, KVH, D] fused kv tensor split into views: strided, still exact.
    kv = torch.randn(9, 2, 4, 128, device="cuda", dtype=torch.bfloat16)
    key, value = kv[:, 0], kv[:, 1]
    kc = torch.zeros(4, 16, 4, 128, device="cuda", dtype=torch.bfloat16)
    vc = torch.zeros_like(kc)
    slots = torch.arange(9, device="cuda") * 3
    torch.ops.swa_ops.reshape_and_cache(key, value, kc, vc, slots)
    kc_ref, vc_ref = torch.zeros_like(kc), torch.zeros_like(vc)
    reference.reshape_and_cache(key, value, kc_ref, vc_ref, slots)
    assert torch.equal(kc, kc_ref) and torch.equal(vc, vc_ref)


# ---------------------------------------------------------------------------------------------
# What the CUDA path does not do yet fails loudly, naming the argument.


def _small():
    q, kc, vc, bt, lens = make_case([20, 5], 8, 2, 64, 16, 0, torch.bfloat16)
    return q, kc, vc, bt, lens


# ---------------------------------------------------------------------------------------------
# Multi-token queries (speculative decoding, multi-token prediction, chunked prefill): checked
# against reference.paged_attention itself, per-row window bounds included.


def token_rows(seq_lens, q_lens, block_tables):
    """The decode row each query token is: its sequence's block-table row and position + 1."""
    rows, lens = [], []
    for s, (L, q) in enumerate(zip(seq_lens, q_lens)):
        for i in range(q):
            rows.append(s)
            lens.append(max(L - q + i + 1, 0))
    return (block_tables[torch.tensor(rows, dtype=torch.long, device=block_tables.device)],
            torch.tensor(lens, dtype=torch.int32, device=block_tables.device))


def check_multi_token(seq_lens, q_lens, num_heads, num_kv_heads, head_size, block_size, window,
                      dtype=torch.bfloat16, seed=0, soft_cap=0.0, use_sinks=False):
    g = torch.Generator(device="cuda").manual_seed(seed)
    used = [(L + block_size - 1) // block_size for L in seq_lens]
    max_blocks = max(used + [1]) + 1
    num_blocks = sum(used) + 2
    shape = (num_blocks, block_size, num_kv_heads, head_size)
    k_cache = torch.randn(shape, generator=g, device="cuda").to(dtype)
    v_cache = torch.randn(shape, generator=g, device="cuda").to(dtype)
    perm = torch.randperm(num_blocks, generator=g, device="cuda").int()
    bt = torch.full((len(seq_lens), max_blocks), -1, dtype=torch.int32, device="cuda")
    nxt = 0
    for s, (L, q) in enumerate(zip(seq_lens, q_lens)):
        blocks = perm[nxt:nxt + used[s]]
        nxt += used[s]
        # -1 before the *first* query row's window: no row may read those entries.
        first = reference.window_start(max(L - q, 0), window) // block_size if L else 0
        bt[s, first:used[s]] = blocks[first:]
    qsl = torch.tensor([0] + list(itertools.accumulate(q_lens)), dtype=torch.int32,
                       device="cuda")
    num_tokens = int(qsl[-1])
    query = torch.randn(num_tokens, num_heads, head_size, generator=g, device="cuda").to(dtype)
    lens = torch.tensor(seq_lens, dtype=torch.int32, device="cuda")
    scale = head_size ** -0.5
    sinks = torch.randn(num_heads, generator=g, device="cuda") if use_sinks else None
    out = torch.ops.swa_ops.paged_attention(query, k_cache, v_cache, bt, lens, scale, window,
                                            soft_cap, sinks, qsl, max(q_lens + [1]))
    ref = reference.paged_attention(query.float(), k_cache.float(), v_cache.float(), bt, lens,
                                    scale, window, soft_cap, sinks, qsl, max(q_lens + [1]))
    # PyTorch's low-precision attention over the same rows (bf16/fp16 logits and P), as in
    # check_case: each query token as the decode row it is.
    bt_rows, len_rows = token_rows(seq_lens, q_lens, bt)
    pt = batched_decode_ref(query, k_cache, v_cache, bt_rows, len_rows, scale, window, soft_cap,
                            sinks, compute_dtype=dtype)
    assert not out.isnan().any()
    err = (out.float() - ref).abs().max().item()
    pt_err = (pt.float() - ref).abs().max().item()
    assert err <= 2 * pt_err + ATOL_FLOOR, f"max err {err:.3g} > 2 x PyTorch's {pt_err:.3g}"
    return out


@pytest.mark.parametrize("window", (128, 1000, 0))
@pytest.mark.parametrize("heads", ((32, 8), (8, 8), (16, 1)), ids=lambda h: f"h{h[0]}-{h[1]}")
def test_multi_token_speculative(window, heads):
    # 1..16 tokens per sequence, mixed in one batch, lengths around the window edges, 0 and 1.
    seq_lens = [1, 5, 200, 1000, 1001, 1200, 4, 300, 0]
    q_lens = [1, 5, 16, 4, 1, 16, 2, 0, 0]
    check_multi_token(seq_lens, q_lens, heads[0], heads[1], 128, 16, window, seed=window)


@pytest.mark.parametrize("head_size", (64, 96, 128, 256))
@pytest.mark.parametrize("block_size", (8, 16, 64))
def test_multi_token_head_and_block_sizes(head_size, block_size):
    check_multi_token([700, 33, 129], [4, 8, 3], 16, 4, head_size, block_size, 256,
                      dtype=torch.float16, seed=head_size + block_size)


def test_multi_token_chunked_prefill():
    # A 300-token chunk after 900 cached tokens, and a whole 500-token prompt, with W = 256.
    check_multi_token([1200, 500], [300, 500], 32, 8, 128, 16, 256, seed=5)
    check_multi_token([1200, 500], [300, 500], 8, 2, 64, 16, 0, seed=6)


def test_multi_token_soft_cap_and_sinks():
    check_multi_token([4200, 64], [4, 3], 16, 8, 256, 16, 4096, seed=8, soft_cap=50.0)
    check_multi_token([300, 9], [16, 2], 64, 8, 64, 16, 128, seed=9, use_sinks=True)


def test_multi_token_cuda_graph():
    """A speculative step (4 tokens per sequence) captured once, replayed as contexts grow."""
    torch.manual_seed(1)
    H, KVH, D, bs, W, S, Q = 32, 8, 128, 16, 512, 3, 4
    max_blocks = 256
    dt = torch.bfloat16
    k_cache = torch.randn(S * max_blocks, bs, KVH, D, device="cuda", dtype=dt)
    v_cache = torch.randn_like(k_cache)
    bt = torch.randperm(S * max_blocks, device="cuda").int().view(S, max_blocks)
    lens = torch.tensor([10, 400, 2000], dtype=torch.int32, device="cuda")
    qsl = torch.arange(0, S * Q + 1, Q, dtype=torch.int32, device="cuda")
    q = torch.randn(S * Q, H, D, device="cuda", dtype=dt)
    torch.ops.swa_ops.paged_attention(q, k_cache, v_cache, bt, lens, D ** -0.5, W, 0.0, None,
                                      qsl, Q)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = torch.ops.swa_ops.paged_attention(q, k_cache, v_cache, bt, lens, D ** -0.5, W, 0.0,
                                                None, qsl, Q)
    for step in range(0, 600, 150):
        lens.copy_(torch.tensor([10 + step, 400 + step, 2000 + step], dtype=torch.int32))
        q.copy_(torch.randn(S * Q, H, D, dtype=dt))
        graph.replay()
        ref = reference.paged_attention(q.float(), k_cache.float(), v_cache.float(), bt, lens,
                                        D ** -0.5, W, 0.0, None, qsl, Q)
        cur = [10 + step, 400 + step, 2000 + step]
        bt_rows, len_rows = token_rows(cur, [Q] * S, bt)
        pt = batched_decode_ref(q, k_cache, v_cache, bt_rows, len_rows, D ** -0.5, W,
                                compute_dtype=dt)
        err = (out.float() - ref).abs().max().item()
        assert err <= 2 * (pt.float() - ref).abs().max().item() + ATOL_FLOOR


# ---------------------------------------------------------------------------------------------
# fp8 e4m3 K/V caches (per-tensor scales): the kernel widens fp8 exactly and applies the scales
# in fp32, so PyTorch's baseline is the same attention over the fp8 values as 16-bit numbers
# with scale * k_scale and a final * v_scale.


def check_fp8(seq_lens, num_heads, num_kv_heads, head_size, block_size, window, dtype=torch.bfloat16,
              seed=0, soft_cap=0.0, use_sinks=False, q_lens=None):
    q, kc, vc, bt, lens = make_case(seq_lens, num_heads, num_kv_heads, head_size, block_size,
                                    window, dtype, seed)
    ks = torch.tensor([0.02], device="cuda")
    vs = torch.tensor([0.015], device="cuda")
    kc8 = reference.quantize_fp8(kc, ks)
    vc8 = reference.quantize_fp8(vc, vs)
    scale = head_size ** -0.5
    sinks = torch.randn(num_heads, device="cuda") if use_sinks else None
    out = torch.ops.swa_ops.paged_attention(q, kc8, vc8, bt, lens, scale, window, soft_cap, sinks,
                                            None, 1, ks, vs)
    ref = reference.paged_attention(q.float(), kc8, vc8, bt, lens, scale, window, soft_cap,
                                    sinks, None, 1, ks, vs).float()
    # (rounded to the output dtype, as any bf16/fp16 attention's output is)
    pt = (batched_decode_ref(q, kc8.to(dtype), vc8.to(dtype), bt, lens, scale * ks.item(), window,
                             soft_cap, sinks, compute_dtype=dtype) * vs.item()).to(dtype)
    assert not out.isnan().any()
    err = (out.float() - ref).abs().max().item()
    pt_err = (pt.float() - ref).abs().max().item()
    assert err <= 2 * pt_err + ATOL_FLOOR, f"max err {err:.3g} > 2 x PyTorch's {pt_err:.3g}"
    zero_rows = (lens == 0).nonzero().flatten()
    if len(zero_rows):
        assert (out[zero_rows] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).replace("torch.", ""))
@pytest.mark.parametrize("head_size", (64, 80, 96, 128, 192, 256))
@pytest.mark.parametrize("window", (128, 2047, 0))
def test_fp8_cache(dtype, head_size, window):
    check_fp8([window + 300, 5000, 1, 0, 4097], 16, 4, head_size, 16, window, dtype,
              seed=head_size + window)


@pytest.mark.parametrize("block_size", (8, 32))
def test_fp8_cache_blocks_gqa_softcap_sinks(block_size):
    check_fp8([3000, 17, 0], 32, 8, 128, block_size, 1024, seed=block_size)
    check_fp8([4200, 64], 16, 8, 256, block_size, 4096, seed=3, soft_cap=50.0)
    check_fp8([300, 9], 64, 8, 64, block_size, 128, seed=4, use_sinks=True)


def test_fp8_error_against_bf16():
    """How far fp8 storage moves the output from the bf16-cache output (reported, bounded)."""
    q, kc, vc, bt, lens = make_case([4096] * 8, 32, 8, 128, 16, 4096, torch.bfloat16, seed=2)
    ks = (kc.float().nan_to_num().abs().amax() / 448).reshape(1)
    vs = (vc.float().nan_to_num().abs().amax() / 448).reshape(1)
    out8 = torch.ops.swa_ops.paged_attention(q, reference.quantize_fp8(kc, ks),
                                             reference.quantize_fp8(vc, vs), bt, lens, 128 ** -0.5,
                                             4096, 0.0, None, None, 1, ks, vs)
    ref16 = reference.paged_attention(q, kc, vc, bt, lens, 128 ** -0.5, 4096).float()
    rel = ((out8.float() - ref16).norm() / ref16.norm()).item()
    print(f"fp8 KV vs bf16 reference: relative error {rel:.3%}")
    assert rel < 0.1


@pytest.mark.parametrize("head_size", (80, 128, 256))
def test_fp8_subnormal_codes(head_size):
    """Caches holding only e4m3 subnormals (codes 1-7, both signs). The kernel turns e4m3 bytes
    into fp16 operands worth the value / 256 (fp8_frag.h), so these become fp16 subnormals, which
    the tensor cores must keep rather than flush: flushed, every logit would be 0 and every output
    exactly 0."""
    q, kc, vc, bt, lens = make_case([700, 129, 37], 16, 4, head_size, 16, 0, torch.bfloat16,
                                    seed=head_size)
    g = torch.Generator(device="cuda").manual_seed(head_size)

    def subnormals(like):
        codes = torch.randint(1, 8, like.shape, generator=g, device="cuda", dtype=torch.uint8)
        signs = torch.randint(0, 2, like.shape, generator=g, device="cuda", dtype=torch.uint8)
        return (codes | (signs << 7)).view(torch.float8_e4m3fn)

    kc8, vc8 = subnormals(kc), subnormals(vc)
    # e4m3 subnormals are m * 2^-9: scaled to m / 4 (keys) and m / 8 (values).
    ks = torch.tensor([2.0 ** 7], device="cuda")
    vs = torch.tensor([2.0 ** 6], device="cuda")
    scale = head_size ** -0.5
    out = torch.ops.swa_ops.paged_attention(q, kc8, vc8, bt, lens, scale, 0, 0.0, None, None, 1,
                                            ks, vs)
    ref = reference.paged_attention(q.float(), kc8, vc8, bt, lens, scale, 0, 0.0, None, None, 1,
                                    ks, vs).float()
    assert ref.abs().max() > 0.05  # the case is not trivially zero
    err = (out.float() - ref).abs().max().item()
    assert err <= 0.02 * ref.abs().max().item(), f"max err {err:.3g}"


def test_rejects_float32_query():
    q, kc, vc, bt, lens = _small()
    with pytest.raises(RuntimeError, match="float16 or bfloat16"):
        torch.ops.swa_ops.paged_attention(q.float(), kc.float(), vc.float(), bt, lens, 0.1)


def test_rejects_uncompiled_head_size():
    q, kc, vc, bt, lens = make_case([20], 8, 2, 72, 16, 0, torch.bfloat16)
    with pytest.raises(RuntimeError, match="head_size"):
        torch.ops.swa_ops.paged_attention(q, kc, vc, bt, lens, 0.1)


# ---------------------------------------------------------------------------------------------
# The split's refill (decode_split.h choose_decode_split): a grid of under 1.5 waves whose last
# wave leaves many slots idle is split into 1.75-5.25 waves instead. 80 sequences x 2 kv heads =
# 160 pairs with a 2047-token window: on an H100 (132 SMs, two D = 128 decode CTAs per SM: 264
# slots) one partition each would fill 61 % of the slots, so they take three, and the merge runs.
def test_underfilled_grid_refill():
    lens = [2047, 2048, 2063, 3000, 4100, 17, 1, 0] * 10
    split = merge_ran(lambda: check_case(lens, 8, 2, 128, 16, 2047, torch.bfloat16, seed=11))
    assert split in (None, True)  # split: the refill took it
    # The same through fp16, soft-cap and sinks (the merge folds the sink once).
    check_case(lens, 8, 2, 128, 16, 2047, torch.float16, seed=12, soft_cap=30.0, use_sinks=True)


# ---------------------------------------------------------------------------------------------
# kv-head pairing (SWA_OPS_KV_PAIR=1; decode_mma_kernel's PAIR, split.h): one CTA streams kv heads
# 2c and 2c + 1 as rows of 2 D elements on the swapped tile, for groups <= 4, fp8 caches at
# D = 64-128 and 16-bit caches at D = 64 and 96. Both settings of the switch, every group it
# pairs, every head size it pairs, an odd kv-head count (which must run unpaired), splits (few
# long sequences), windows on and off tile boundaries, block sizes 8/16/64, seq_len 0 and 1,
# sinks, soft-cap; the profiler says which kernel ran.
PAIR_CASES = [("fp8", d) for d in (64, 80, 96, 128)] + [
    (kind, d) for kind in ("bf16", "fp16") for d in (64, 96)]


def check_pair_case(kind, seq_lens, num_heads, num_kv_heads, head_size, block_size, window, seed,
                    soft_cap=0.0, use_sinks=False):
    """One decode call through check_case / check_fp8; the decode kernels it launched."""
    if kind == "fp8":
        fn = lambda: check_fp8(seq_lens, num_heads, num_kv_heads, head_size, block_size, window,
                               seed=seed, soft_cap=soft_cap, use_sinks=use_sinks)
    else:
        dt = torch.bfloat16 if kind == "bf16" else torch.float16
        fn = lambda: check_case(seq_lens, num_heads, num_kv_heads, head_size, block_size, window,
                                dt, seed=seed, soft_cap=soft_cap, use_sinks=use_sinks)
    return decode_kernels_launched(fn)


def assert_paired(names, want):
    if names is not None:  # the profiler recorded the launch: the asked-for kernel ran
        assert all(pair_flag(n) == want for n in names), names
        assert all(swap_flag(n) for n in names), names


@pytest.mark.parametrize("pair", ("1", "0"))
@pytest.mark.parametrize("kind,head_size", PAIR_CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("group", (1, 2, 3, 4))
def test_kv_pair(monkeypatch, pair, kind, head_size, group):
    monkeypatch.setenv("SWA_OPS_KV_PAIR", pair)
    monkeypatch.delenv("SWA_OPS_SWAP", raising=False)
    monkeypatch.delenv("SWA_OPS_SMALL", raising=False)
    on = pair == "1"
    seed = 100 * head_size + group
    # Two pairs, window 1000 (starts off tile boundaries), partitions of the long rows, 0 and 1.
    names = check_pair_case(kind, [5000, 4097, 300, 17, 1, 0], 4 * group, 4, head_size, 16, 1000,
                            seed)
    assert_paired(names, on)
    # One pair, block 8 (two blocks per tile), no window, soft-cap and sinks.
    names = check_pair_case(kind, [2000, 129, 1, 0], 2 * group, 2, head_size, 8, 0, seed + 1,
                            soft_cap=30.0, use_sinks=True)
    assert_paired(names, on)
    # Block 64, a window on a tile boundary, lengths around it.
    names = check_pair_case(kind, [4160, 65, 64, 63, 16], 6 * group, 6, head_size, 64, 64,
                            seed + 2)
    assert_paired(names, on)
    # One long sequence: split into many partitions, sinks through the merge.
    names = check_pair_case(kind, [60000], 2 * group, 2, head_size, 16, 0, seed + 3,
                            use_sinks=True)
    assert_paired(names, on)
    # An odd number of kv heads never pairs.
    names = check_pair_case(kind, [3000, 17, 0], 3 * group, 3, head_size, 16, 2047, seed + 4)
    assert_paired(names, False)


@pytest.mark.parametrize("kind,head_size", [("bf16", 64), ("fp16", 64), ("bf16", 96), ("fp8", 64),
                                            ("fp8", 128)], ids=lambda v: str(v))
def test_kv_pair_default(monkeypatch, kind, head_size):
    # With SWA_OPS_KV_PAIR unset, 16-bit caches pair (measured faster at D = 64 and 96) and fp8
    # caches do not (measured no faster); the results are right either way.
    monkeypatch.delenv("SWA_OPS_KV_PAIR", raising=False)
    monkeypatch.delenv("SWA_OPS_SWAP", raising=False)
    monkeypatch.delenv("SWA_OPS_SMALL", raising=False)
    names = check_pair_case(kind, [5000, 4097, 300, 1, 0], 16, 4, head_size, 16, 1000, seed=7)
    assert_paired(names, kind != "fp8")


@pytest.mark.parametrize("kind,head_size", [("fp8", 128), ("fp8", 96), ("bf16", 128),
                                            ("fp8", 256), ("bf16", 96), ("bf16", 80)],
                         ids=lambda v: str(v))
def test_kv_pair_not_for_unpaired_shapes(monkeypatch, kind, head_size):
    # Head sizes the kernel does not pair, groups over 4, and a kv-head stride other than
    # head_size (the two rows not adjacent) run unpaired even with the switch on.
    monkeypatch.setenv("SWA_OPS_KV_PAIR", "1")
    monkeypatch.delenv("SWA_OPS_SWAP", raising=False)
    paired_size = (kind == "fp8" and head_size <= 128) or head_size in (64, 96)
    names = check_pair_case(kind, [3000, 1, 0], 16, 2, head_size, 16, 1024, seed=head_size)
    assert_paired(names, False)  # group 8
    if not paired_size:
        names = check_pair_case(kind, [3000, 1, 0], 8, 2, head_size, 16, 1024, seed=head_size)
        assert_paired(names, False)


def test_kv_pair_strided_heads(monkeypatch):
    # kv heads whose rows are not adjacent (a cache sliced out of a wider one): unpaired, correct.
    monkeypatch.setenv("SWA_OPS_KV_PAIR", "1")
    monkeypatch.delenv("SWA_OPS_SWAP", raising=False)
    q, kc, vc, bt, lens = make_case([3000, 129, 1, 0], 16, 8, 64, 16, 1000, torch.bfloat16, seed=5)
    kc4, vc4 = kc[:, :, ::2], vc[:, :, ::2]  # kv heads 0, 2, 4, 6: head stride 2 D
    q4 = q.view(4, 8, 2, 64)[:, ::2].reshape(4, 8, 64).contiguous()
    names = decode_kernels_launched(lambda: torch.ops.swa_ops.paged_attention(
        q4, kc4, vc4, bt, lens, 0.125, 1000))
    assert_paired(names, False)
    out = torch.ops.swa_ops.paged_attention(q4, kc4, vc4, bt, lens, 0.125, 1000)
    ref = batched_decode_ref(q4, kc4, vc4, bt, lens, 0.125, 1000)
    pt = batched_decode_ref(q4, kc4, vc4, bt, lens, 0.125, 1000, compute_dtype=torch.bfloat16)
    err = (out.float() - ref).abs().max().item()
    assert err <= 2 * (pt.float() - ref).abs().max().item() + ATOL_FLOOR


@pytest.mark.parametrize("kind", ("fp8", "bf16"))
def test_kv_pair_mistral_like(monkeypatch, kind):
    # The shape pairing is for: 32 / 8 heads, windows 4096 (fp8: D = 128; bf16: D = 64, the fp8
    # row's memory layout), lengths around the window edge, both switch settings.
    D = 128 if kind == "fp8" else 64
    for pair in ("1", "0"):
        monkeypatch.setenv("SWA_OPS_KV_PAIR", pair)
        names = check_pair_case(kind, [4096, 4097, 4111, 4112, 8191, 60000, 1, 0], 32, 8, D, 16,
                                4096, seed=42)
        assert_paired(names, pair == "1")


@pytest.mark.parametrize("kind", ("bf16", "fp16"))
def test_kv_pair_phi3_like(monkeypatch, kind):
    # Phi-3's shape, which pairing at D = 96 is for: 32 / 32 heads (group 1), window 2047 (off tile
    # boundaries), lengths around its edge, a split row (60000 with few sequences), both switch
    # settings.
    for pair in ("1", "0"):
        monkeypatch.setenv("SWA_OPS_KV_PAIR", pair)
        names = check_pair_case(kind, [2047, 2048, 2063, 2064, 8192, 60000, 1, 0], 32, 32, 96, 16,
                                2047, seed=96)
        assert_paired(names, pair == "1")


@pytest.mark.parametrize("kind,D", [("fp8", 128), ("bf16", 64), ("bf16", 96)],
                         ids=lambda v: str(v))
def test_kv_pair_cuda_graph_replay(monkeypatch, kind, D):
    # Captured with the switch on, replayed over growing contexts: the paired grid and its split
    # come from shapes only, so one graph serves every step.
    monkeypatch.setenv("SWA_OPS_KV_PAIR", "1")
    torch.manual_seed(3)
    H, KVH, bs, W, S = 32, 8, 16, 1024, 4
    max_blocks = 4096 // bs
    dt = torch.bfloat16
    k_cache = torch.randn(S * max_blocks, bs, KVH, D, device="cuda", dtype=dt)
    v_cache = torch.randn(S * max_blocks, bs, KVH, D, device="cuda", dtype=dt)
    extra = ()
    if kind == "fp8":
        ks = torch.tensor([0.02], device="cuda")
        vs = torch.tensor([0.015], device="cuda")
        k_cache, v_cache = reference.quantize_fp8(k_cache, ks), reference.quantize_fp8(v_cache, vs)
        extra = (None, 1, ks, vs)
    bt = torch.randperm(S * max_blocks, device="cuda").int().view(S, max_blocks)
    lens = torch.tensor([1, 100, 1000, 3000], dtype=torch.int32, device="cuda")
    q = torch.randn(S, H, D, device="cuda", dtype=dt)
    call = lambda: torch.ops.swa_ops.paged_attention(q, k_cache, v_cache, bt, lens, D ** -0.5, W,
                                                     0.0, None, *extra)
    assert_paired(decode_kernels_launched(call), True)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = call()
    for step in range(0, 1000, 97):
        lens.copy_(torch.tensor([1 + step, 100 + step, 1000 + step, 3000 + step],
                                dtype=torch.int32))
        q.copy_(torch.randn(S, H, D, dtype=dt))
        graph.replay()
        if kind == "fp8":
            ref = reference.paged_attention(q.float(), k_cache, v_cache, bt, lens, D ** -0.5, W,
                                            0.0, None, None, 1, ks, vs).float()
            pt = (batched_decode_ref(q, k_cache.to(dt), v_cache.to(dt), bt, lens,
                                     D ** -0.5 * ks.item(), W, compute_dtype=dt) * vs.item())
        else:
            ref = batched_decode_ref(q, k_cache, v_cache, bt, lens, D ** -0.5, W)
            pt = batched_decode_ref(q, k_cache, v_cache, bt, lens, D ** -0.5, W, compute_dtype=dt)
        err = (out.float() - ref).abs().max().item()
        assert err <= 2 * (pt.float().to(dt).float() - ref).abs().max().item() + ATOL_FLOOR


# The fp8 TMA ring (SWA_OPS_DECODE_TMA; decode_mma_kernel's TMA): fp8 caches at head size 128 on
# the swapped, unpaired ring copy each 16-token tile wholly inside the visible span as two
# tensor-map boxes (K, V) into swizzled rows, edge tiles by zero-filling cp.async into the same
# rows. On by default where it applies (blocks of >= 16 tokens); "0" runs the same inputs on the
# padded cp.async ring. The profiler says which kernel ran. Groups 1-8, windows on and off tile
# boundaries, partitions (a long row), seq_len 0 and 1, soft-cap, sinks, both query dtypes.
@pytest.mark.parametrize("tma", ("unset", "0"))
@pytest.mark.parametrize("block_size", (8, 16, 32, 256))
def test_fp8_tma(monkeypatch, tma, block_size):
    for var in ("SWA_OPS_SWAP", "SWA_OPS_KV_PAIR", "SWA_OPS_SMALL"):
        monkeypatch.delenv(var, raising=False)
    if tma == "unset":
        monkeypatch.delenv("SWA_OPS_DECODE_TMA", raising=False)
    else:
        monkeypatch.setenv("SWA_OPS_DECODE_TMA", tma)
    want = tma == "unset" and block_size >= 16
    seed = block_size
    for group, kvh in ((4, 8), (1, 2), (8, 2), (3, 3)):
        names = decode_kernels_launched(
            lambda: check_fp8([5000, 4097, 300, 17, 1, 0], group * kvh, kvh, 128, block_size,
                              1000, seed=seed + group))
        if names is not None:  # the asked-for ring ran
            assert all(tma_flag(n) == want for n in names), names
    check_fp8([60000], 16, 2, 128, block_size, 0, torch.float16, seed=seed + 10, use_sinks=True)
    check_fp8([4100, 700, 1, 0], 8, 2, 128, block_size, 2047, seed=seed + 11, soft_cap=30.0)
    check_fp8([4160, 65, 64, 63, 16], 24, 6, 128, block_size, 64, seed=seed + 12)


def test_fp8_tma_not_for_other_kernels(monkeypatch):
    """The TMA ring is fp8 D = 128 on the swapped unpaired ring only: paired, unswapped (M-side
    heads) and other head sizes keep their own rings, with the switch unset."""
    monkeypatch.delenv("SWA_OPS_DECODE_TMA", raising=False)
    monkeypatch.delenv("SWA_OPS_SMALL", raising=False)
    cases = (("SWA_OPS_KV_PAIR", "1", 128), ("SWA_OPS_SWAP", "0", 128), (None, None, 64),
             (None, None, 256))
    for var, value, head_size in cases:
        for v in ("SWA_OPS_KV_PAIR", "SWA_OPS_SWAP"):
            monkeypatch.delenv(v, raising=False)
        if var is not None:
            monkeypatch.setenv(var, value)
        names = decode_kernels_launched(
            lambda: check_fp8([3000, 700, 1, 0], 16, 4, head_size, 16, 1000, seed=head_size))
        if names is not None:
            assert not any(tma_flag(n) for n in names), (var, head_size, names)

