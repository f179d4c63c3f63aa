"""Multi-token queries on CUDA (speculative decoding, multi-token prediction) against
swa_ops.reference: the packed mode of the decode kernel and the per-token path beside it.

The packed mode (used while max_query_len * group <= 64) puts a sequence's (token, head) rows of one
kv head on the 16 rows of the kernel's MMA tile, each row with its own window [max(0, p - W + 1), p]:
a tile or a whole split partition can then hold no key for some rows. The grids below aim at exactly
that: q_len 1..16 mixed with 0- and 1-length sequences and q_len 0, GQA groups 1..16 with
max_query_len * group on both sides of 16 and 64 (and odd groups, whose tokens straddle two 16-row
chunks), windows shorter than q_len, long contexts that split, every feature. Small batches split
the keys over partitions (the split fills the GPU, choose_decode_split); the big-batch cases run
unsplit.

Everything a kernel must not read is poisoned: table entries before the first token's window and
past the context are -1 (conftest), slots outside every row's keys in blocks that hold some are
3e4 (448 in fp8 caches: the largest finite value), and every block of a q_len-0 sequence is NaN.
Tolerance as everywhere in this suite: twice PyTorch's own low-precision error against the fp32
reference, plus twice the output dtype's rounding. Rows that see no key (seq_len 0, a position
< 0, a token outside every query range) must be exact zeros.
"""
from __future__ import annotations

import itertools

import pytest
import torch

import swa_ops
from swa_ops import reference

from conftest import FP8, PagedAttentionCase, make_paged_attention_case, merge_ran, \
    rounding_error, torch_lowp_attention

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

DEVICE = "cuda"
PACKED_MAX_ROWS = 64  # csrc/cuda/paged_attention.cu: packed while max_query_len * group <= 64
FP8_MAX_BYTE, FP8_NAN_BYTE = 0x7E, 0x7F  # float8_e4m3fn 448 and NaN

# One batch: q_len 1..16 mixed, seq_len 0 and 1, q_len 0, lengths around window edges and around
# a block / tile boundary, a token at position 0. q_lens are capped at max_query_len per case.
SEQ_LENS = (1, 5, 200, 1000, 1001, 1200, 4, 300, 0, 17, 16, 129, 7, 2048)
Q_LENS = (1, 5, 16, 4, 1, 16, 2, 0, 3, 16, 16, 9, 7, 13)
WINDOWS = (128, 1000, 0)
GROUPS = (1, 4, 8, 16)


def _bytes_view(t):
    return t.view(torch.uint8) if t.dtype == FP8 else t


def poison(case: PagedAttentionCase) -> PagedAttentionCase:
    """Poison what no row may read (in place; returns the case).

    Slots of table blocks outside [first row's window start, seq_len) get a huge finite value (the
    reference reads whole blocks and masks, so it cannot take NaN there); blocks of a sequence with
    no query token are NaN (no one reads them).
    """
    bs = case.key_cache.shape[1]
    bt = case.block_tables.cpu()
    fp8 = case.key_cache.dtype == FP8
    huge = FP8_MAX_BYTE if fp8 else 3e4
    nan = FP8_NAN_BYTE if fp8 else float("nan")
    huge_slots, nan_blocks = [], []
    for s, (L, q) in enumerate(zip(case.seq_lens_list, case.query_lens_list)):
        if L == 0:
            continue
        used = (L + bs - 1) // bs
        first = case.first_blocks[s]
        if q == 0:
            nan_blocks += [int(b) for b in bt[s, first:used]]
            continue
        lo = reference.window_start(L - q if L >= q else 0, case.sliding_window)
        for pos in itertools.chain(range(first * bs, lo), range(L, used * bs)):
            huge_slots.append((int(bt[s, pos // bs]), pos % bs))
    for cache in (case.key_cache, case.value_cache):
        raw = _bytes_view(cache)
        if huge_slots:
            blk, off = (torch.tensor(x, device=cache.device) for x in zip(*huge_slots))
            raw[blk, off] = huge
        if nan_blocks:
            raw[torch.tensor(nan_blocks, device=cache.device)] = nan
    return case


def make_case(seq_lens, q_lens, *, group, num_kv_heads=2, head_size=128, block_size=16,
              window=0, dtype=torch.bfloat16, cache_dtype=None, soft_cap=0.0, sinks=False,
              max_query_len=None, seed=0) -> PagedAttentionCase:
    case = make_paged_attention_case(
        seq_lens, num_heads=group * num_kv_heads, num_kv_heads=num_kv_heads,
        head_size=head_size, block_size=block_size, dtype=dtype, query_lens=q_lens,
        cache_dtype=cache_dtype, sliding_window=window, logits_soft_cap=soft_cap, sinks=sinks,
        use_query_start_loc=True, max_query_len=max_query_len, device=DEVICE, seed=seed)
    return poison(case)


def empty_rows(case: PagedAttentionCase) -> list:
    """Query tokens that see no key: seq_len 0 or a position < 0."""
    rows, t = [], int(case.query_start_loc[0])
    for L, q in zip(case.seq_lens_list, case.query_lens_list):
        rows += [t + i for i in range(q) if L - q + i < 0]
        t += q
    return rows


def check(case: PagedAttentionCase, out=None, zero_rows=()) -> torch.Tensor:
    """The op (or `out`) against the fp32 reference with the dtype-relative tolerance; rows that
    see no key, and `zero_rows`, exactly zero."""
    if out is None:
        out = case.run()
    assert out.shape == case.query.shape and out.dtype == case.query.dtype
    assert torch.isfinite(out).all(), "non-finite output: a poisoned slot or -1 entry was read"
    ref = case.reference_fp32().float()
    zero = sorted(set(empty_rows(case)) | set(zero_rows))
    if zero:
        assert (out[zero] == 0).all(), "a row that sees no key must be exactly zero"
        assert (ref[zero] == 0).all()
    # Plain PyTorch's softmax of a row with no visible key is NaN; the spec says zeros.
    lowp = torch_lowp_attention(case).float().nan_to_num(0.0)
    tol = 2 * (lowp - ref).abs().max().item() + 2 * rounding_error(ref, case.query.dtype)
    err = (out.float() - ref).abs().max().item()
    assert err <= tol, f"max abs error {err:.3e} > tolerance {tol:.3e}"
    return out


def capped(q_lens, max_query_len):
    return [min(q, max_query_len) for q in q_lens]


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("group", GROUPS)
def test_speculative_mixed_batch(window, group):
    """q_len 1..16 (as far as the packed mode's 64 rows allow at this group) in one batch."""
    mql = min(16, PACKED_MAX_ROWS // group)
    check(make_case(SEQ_LENS, capped(Q_LENS, mql), group=group, window=window,
                    seed=window + group))


@pytest.mark.parametrize("window", (128, 0))
@pytest.mark.parametrize("group,max_query_len", [
    (1, 1), (1, 16), (1, 17), (1, 64),   # 1, 16, 17, 64 rows
    (16, 1), (4, 4), (4, 5),             # 16 (one chunk), 16, 20
    (4, 16), (8, 8), (16, 4),            # 64: four chunks
    (3, 21), (5, 12), (6, 10),           # tokens straddling chunk boundaries (63, 60, 60 rows)
    (16, 5), (2, 33), (8, 16),           # over 64 rows: the per-token path
], ids=lambda v: str(v))
def test_rows_per_sequence_boundaries(window, group, max_query_len):
    seq_lens = [max_query_len + 300, 700, max_query_len, 1, 0, 40, 3000]
    q_lens = [max_query_len, max(1, max_query_len // 2), max_query_len, 1, 2, 0, 3]
    check(make_case(seq_lens, capped(q_lens, max_query_len), group=group, window=window,
                    max_query_len=max_query_len, seed=group * 100 + max_query_len))


@pytest.mark.parametrize("max_query_len", (4, 16))
def test_max_query_len_above_longest(max_query_len):
    """max_query_len is a bound (a bucket): chunks past a sequence's rows do nothing."""
    check(make_case([900, 33, 5, 0], [3, 1, 2, 1], group=4, window=256,
                    max_query_len=max_query_len, seed=max_query_len))


@pytest.mark.parametrize("head_size", (64, 80, 96, 128, 192, 256))
@pytest.mark.parametrize("block_size", (8, 16, 64))
def test_head_and_block_sizes(head_size, block_size):
    check(make_case([700, 33, 129, 0, 2000], [4, 8, 3, 2, 16], group=4, head_size=head_size,
                    block_size=block_size, window=256, dtype=torch.float16,
                    seed=head_size + block_size))


@pytest.mark.parametrize("window", (1, 3, 8, 20, 128, 0))
@pytest.mark.parametrize("group", (1, 4))
def test_partition_and_tile_edges(window, group):
    """Sixteen consecutive contexts for a 16-token query: every alignment of the rows' windows
    against 16-token tiles and 64-token partitions, windows shorter than q_len included (rows
    then share few or no keys). One sequence: the keys split over partitions."""
    for L in range(1000, 1017):
        check(make_case([L], [16], group=group, window=window, seed=L))
        check(make_case([L, L + 5], [16, 9], group=group, window=window, block_size=8,
                        seed=L + 1))


@pytest.mark.parametrize("window", (128, 8192, 0))
@pytest.mark.parametrize("group", (1, 8))
def test_long_contexts_split(window, group):
    """Few sequences with long contexts: many partitions, and rows whose window starts in a later
    partition than their chunk's first row's."""
    mql = min(16, PACKED_MAX_ROWS // group)
    check(make_case([20000, 9000], [mql, 1], group=group, window=window, seed=window))
    check(make_case([20000], [mql], group=group, num_kv_heads=1, window=window,
                    sinks=True, seed=window + 1))


@pytest.mark.parametrize("window", (128, 0))
def test_many_sequences_unsplit(window):
    """Enough (sequence, kv head, chunk) triples to fill the GPU: one partition, so the decode
    kernel writes the output itself (zeros for rows that see nothing). 64 sequences: 512 triples
    on an H100's 264 D = 128 slots (1.94 waves, not refilled: choose_decode_split), 1024 (two
    chunks of 8 x 4 rows) on its 528 D = 64 slots."""
    seq_lens = [(37 * s) % 1500 for s in range(64)]
    q_lens = [s % 5 for s in range(64)]
    split = merge_ran(lambda: check(make_case(seq_lens, q_lens, group=4, num_kv_heads=8,
                                              window=window, seed=window)))
    assert split in (None, False)
    split = merge_ran(lambda: check(make_case(seq_lens, q_lens, group=8, num_kv_heads=8,
                                              head_size=64, window=window, seed=window + 1)))
    assert split in (None, False)


def test_positions_before_zero():
    """q_len > seq_len (a position < 0 sees nothing): those rows are zeros, the others normal.
    The CPU op rejects such metadata on the host; the CUDA op cannot look without a sync, so it
    must stay in bounds and give the reference's zeros."""
    case = make_case([2, 3, 40], [4, 16, 5], group=4, window=0, seed=3)
    assert empty_rows(case)
    check(case)


@pytest.mark.parametrize("cap", (50.0, 5.0))
@pytest.mark.parametrize("head_size,group,num_kv_heads", ((256, 2, 8), (256, 2, 4), (128, 4, 8)))
def test_soft_cap(cap, head_size, group, num_kv_heads):
    check(make_case([4200, 64, 0, 1, 5000], [4, 3, 2, 1, 16 // group * 2], group=group,
                    num_kv_heads=num_kv_heads, head_size=head_size, window=4096, soft_cap=cap,
                    seed=int(cap)))


@pytest.mark.parametrize("window", (128, 0))
@pytest.mark.parametrize("batch", ("split", "unsplit"))
def test_sinks(window, batch):
    """gpt-oss-like: 64 q / 8 kv heads, head 64. The sink counts once per row, in the merge when
    split, in the kernel when not."""
    if batch == "split":
        seq_lens, q_lens = [8192, 130, 1, 0, 64], [4, 8, 1, 2, 3]
    else:  # 64 x 8 x 2 triples: 1.94 waves of an H100's 528 D = 64 slots, not refilled
        seq_lens = [(91 * s) % 3000 + 1 for s in range(64)]
        q_lens = [1 + s % 4 for s in range(64)]
    split = merge_ran(lambda: check(make_case(seq_lens, q_lens, group=8, num_kv_heads=8,
                                              head_size=64, window=window, sinks=True,
                                              seed=window)))
    assert split in (None, batch == "split")


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16), ids=str)
@pytest.mark.parametrize("head_size", (64, 96, 128, 256))
@pytest.mark.parametrize("window", (128, 0))
def test_fp8_cache(dtype, head_size, window):
    check(make_case([window + 300, 5000, 1, 0, 4097, 20], [4, 16, 1, 3, 2, 8], group=4,
                    head_size=head_size, window=window, dtype=dtype, cache_dtype=FP8,
                    seed=head_size + window))


def test_fp8_soft_cap_sinks_blocks():
    check(make_case([4200, 64], [4, 3], group=2, num_kv_heads=8, head_size=256, window=4096,
                    cache_dtype=FP8, soft_cap=50.0, block_size=8, seed=1))
    check(make_case([300, 9, 7000], [16, 2, 5], group=4, num_kv_heads=8, head_size=64,
                    window=128, cache_dtype=FP8, sinks=True, block_size=32, seed=2))


@pytest.mark.parametrize("group", (1, 3, 4, 8))
@pytest.mark.parametrize("window", (1, 5, 64, 1000, 0))
def test_row_window_edges_exact(group, window):
    """Each row's own edges, made decisive: for token i at position p_i, the first key of its
    window and the key p_i carry logit c for row i, while the key just before its window and the
    key just after p_i carry 2c for it (c = 24: all other keys weigh e^-24). An off-by-one at any
    row's bound moves that row's output by O(1)."""
    q_len, D, bs = 16, 64, 16
    for L in (40, 1000, 1007):
        case = make_case([L], [q_len], group=group, num_kv_heads=2, head_size=D, block_size=bs,
                         window=window, seed=L)
        bt = case.block_tables.cpu()
        k = torch.zeros(L, D)
        q = torch.zeros(q_len, D)
        c = 24.0
        for i in range(q_len):
            pos = L - q_len + i
            lo = reference.window_start(pos, window)
            q[i, i] = q[i, 16 + i] = c
            k[lo, i] += 1.0
            if lo >= 1:
                k[lo - 1, i] += 2.0
            k[pos, 16 + i] += 1.0
            if pos + 1 < L:
                k[pos + 1, 16 + i] += 2.0
        lo_all = reference.window_start(L - q_len, window)
        pos = torch.arange(lo_all, L)
        blk, off = bt[0, pos // bs].long().to(DEVICE), (pos % bs).to(DEVICE)
        case.key_cache[blk, off] = k[lo_all:].to(case.key_cache.dtype).to(DEVICE)[:, None, :]
        case.query.copy_(q[:, None, :].expand(q_len, case.query.shape[1], D))
        case.scale = 1.0
        check(case)


def test_uncovered_tokens_are_zero():
    """Tokens outside every query range (before query_start_loc[0], after query_start_loc[-1],
    as a CUDA-graph batch's padding) give exact zeros, whatever the output buffer held, as in the
    reference. (The CPU op rejects such metadata on the host; the CUDA op cannot look.)"""
    for seq_lens, q_lens, nkv in (([500, 3, 0, 77], [4, 2, 1, 3], 2),  # split
                                  ([(53 * s) % 900 for s in range(48)], [2] * 48, 8)):  # unsplit
        base = make_case(seq_lens, q_lens, group=4, num_kv_heads=nkv, window=128, seed=5)
        lead, trail, n = 3, 7, base.query.shape[0]
        extra = torch.randn(lead + trail, *base.query.shape[1:], device=DEVICE)
        query = torch.cat([extra[:lead].to(base.query.dtype), base.query,
                           extra[lead:].to(base.query.dtype)])
        case = base.replace(query=query, query_start_loc=base.query_start_loc + lead)
        # Leave NaN in the memory the output is likely to get.
        junk = torch.full_like(query, float("nan"))
        del junk
        out = case.run()
        assert (out[:lead] == 0).all() and (out[lead + n:] == 0).all()
        check(base, out=out[lead:lead + n])


@pytest.mark.parametrize("window,cache_dtype", ((512, None), (0, None), (512, FP8)),
                         ids=("w512", "nowindow", "w512-fp8"))
def test_cuda_graph_speculative_step(window, cache_dtype):
    """A speculative step (up to 4 tokens per sequence, 4 padding tokens) captured once, replayed
    as contexts grow and query lengths change; the launch depends only on shapes."""
    S, Q, PAD = 6, 4, 4
    seq_lens = [10, 400, 2000, 4, 64, 3000]
    case = make_case([L + 700 for L in seq_lens], [Q] * S, group=4, num_kv_heads=8, window=0,
                     cache_dtype=cache_dtype, seed=7)
    # One table and cache that hold every context of every replay (entries before the window
    # stay valid here: the contexts move).
    q = torch.zeros(S * Q + PAD, *case.query.shape[1:], dtype=case.query.dtype, device="cuda")
    lens = torch.tensor(seq_lens, dtype=torch.int32, device="cuda")
    qsl = torch.zeros(S + 1, dtype=torch.int32, device="cuda")
    args = dict(key_cache=case.key_cache, value_cache=case.value_cache,
                block_tables=case.block_tables, scale=case.scale, sliding_window=window,
                k_scale=case.k_scale, v_scale=case.v_scale)

    def step(q_lens, ctx):
        qsl.copy_(torch.tensor([0] + list(itertools.accumulate(q_lens)), dtype=torch.int32))
        lens.copy_(torch.tensor(ctx, dtype=torch.int32))
        q.copy_(torch.randn(q.shape, generator=g).to(q.dtype))

    def run():
        return swa_ops.paged_attention(q, seq_lens=lens, query_start_loc=qsl, max_query_len=Q,
                                       **args)

    g = torch.Generator().manual_seed(0)
    step([Q] * S, seq_lens)
    run()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = run()
    rng = torch.Generator().manual_seed(1)
    for grow in range(0, 700, 97):
        q_lens = torch.randint(0, Q + 1, (S,), generator=rng).tolist()
        ctx = [L + grow for L in seq_lens]
        step(q_lens, ctx)
        graph.replay()
        cur = case.replace(query=q.clone(), seq_lens=lens.clone(), query_start_loc=qsl.clone(),
                           max_query_len=Q, sliding_window=window, seq_lens_list=ctx,
                           query_lens_list=q_lens,
                           first_blocks=[0] * S)  # the table is whole: reference reads from 0
        covered = sum(q_lens)
        check(cur, out=out.clone(), zero_rows=range(covered, q.shape[0]))
