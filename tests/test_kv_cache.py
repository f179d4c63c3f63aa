"""KVCacheManager: block allocation, window recycling, the block-table invariants, one-copy planning.

Host bookkeeping is checked against first principles after every step of random schedules: which
blocks a sequence must hold (exactly those from the block of its first visible key to its last
token), the bound on blocks held, exclusive ownership, -1 everywhere else, and the device metadata
(tables, slot mapping, positions, lengths, query offsets) equal to what the host decided.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from swa_ops.kv_cache import (KVCacheManager, OutOfBlocksError, cdiv, max_blocks_held,
                              query_len_bucket, window_start)

# (block_size, sliding_window, max_query_len): window edges at block boundaries and off them,
# W = 1 (only the query's own key), block size 1, no window, decode-only.
GEOMETRIES = [(4, 8, 5), (16, 128, 64), (16, 0, 16), (1, 1, 3), (8, 17, 1), (4, 13, 16)]


def check_invariants(m: KVCacheManager, lengths: dict, before: dict) -> None:
    """Everything the manager promises, from first principles. ``before[sid]`` is the length of a
    sequence before the last step it took part in (its first visible key decides what it holds)."""
    bs, W = m.block_size, m.sliding_window
    owners = {}
    for sid in m.seq_ids:
        L = lengths[sid]
        assert m.seq_len(sid) == L
        row = m.block_table(sid)
        first = window_start(before[sid], W) // bs
        held_cols = np.nonzero(row >= 0)[0].tolist()
        assert held_cols == list(range(first, cdiv(L, bs))), (sid, held_cols, first, L)
        assert m.num_blocks_held(sid) == len(held_cols) <= m.max_blocks_held
        for b in row[row >= 0].tolist():
            assert b not in owners, f"block {b} held by {owners[b]!r} and {sid!r}"
            owners[b] = sid
    assert len(owners) == m.num_blocks_in_use == m.num_blocks - m.num_free_blocks
    # The device's slot-ordered table mirrors the host table exactly (all rows, -1 included).
    assert torch.equal(m.slot_block_tables.cpu(), torch.from_numpy(m._table))


def check_step_metadata(m: KVCacheManager, plan, lengths_before: dict) -> None:
    """Device metadata of the planned step against the plan."""
    n, S = len(plan.seq_ids), m.max_num_seqs
    seq_lens = m.seq_lens.cpu().tolist()
    qsl = m.query_start_loc.cpu().tolist()
    assert seq_lens[:n] == list(plan.seq_lens) and seq_lens[n:] == [0] * (S - n)
    assert qsl[:n + 1] == list(plan.query_start_loc)
    assert qsl[n + 1:] == [plan.num_tokens] * (S - n), "padding rows must have no query tokens"
    tables = m.block_tables.cpu()
    for i, sid in enumerate(plan.seq_ids):
        assert torch.equal(tables[i], torch.from_numpy(m.block_table(sid)))
        L0, q = lengths_before[sid], plan.num_new_tokens[i]
        assert plan.context_lens[i] == L0
        b, e = plan.query_start_loc[i], plan.query_start_loc[i + 1]
        pos = torch.arange(L0, L0 + q)
        assert torch.equal(m.positions[b:e].cpu(), pos)
        row = torch.from_numpy(m.block_table(sid)).long()
        expect = row[pos // m.block_size] * m.block_size + pos % m.block_size
        assert (expect >= 0).all()
        assert torch.equal(m.slot_mapping[b:e].cpu(), expect)
    assert plan.max_query_len >= max(plan.num_new_tokens)
    assert m.step_max_query_len == plan.max_query_len


@pytest.mark.parametrize("bs,W,mql", GEOMETRIES, ids=[f"bs{b}-W{w}-q{q}" for b, w, q in GEOMETRIES])
def test_random_schedule_keeps_invariants(bs, W, mql):
    rng = random.Random(bs * 1000 + W * 10 + mql)
    max_seq_len = 300
    held = max_blocks_held(W, mql, bs, max_seq_len)
    m = KVCacheManager(block_size=bs, num_blocks=4 * held, max_num_seqs=4, max_seq_len=max_seq_len,
                       sliding_window=W, max_query_len=mql)
    assert m.max_blocks_held == held
    if W > 0:
        assert held == min(cdiv(W + mql - 1, bs) + 1, cdiv(max_seq_len, bs))
    lengths, before, next_id = {}, {}, 0
    for step in range(120):
        # Sometimes release a sequence (or one that ran out of room), sometimes add one.
        live = m.seq_ids
        for sid in live:
            if lengths[sid] + mql > max_seq_len or rng.random() < 0.03:
                m.release_sequence(sid)
                del lengths[sid], before[sid]
        while len(m.seq_ids) < 4 and rng.random() < 0.5:
            m.add_sequence(f"s{next_id}")
            lengths[f"s{next_id}"] = before[f"s{next_id}"] = 0
            next_id += 1
        live = m.seq_ids
        if not live:
            continue
        sched = rng.sample(live, rng.randint(1, len(live)))  # a random subset, in random order
        counts = [rng.choice([1, 1, 1, rng.randint(1, mql)]) for _ in sched]
        lengths_before = dict(lengths)
        plan = m.plan(sched, counts)
        for sid, q in zip(sched, counts):
            before[sid] = lengths[sid]
            lengths[sid] += q
        check_invariants(m, lengths, before)
        check_step_metadata(m, plan, lengths_before)
    assert next_id > 4, "the schedule should have recycled sequence slots"


def test_long_sequence_holds_bounded_blocks_and_reuses_them():
    """A pool of exactly the bound serves a sequence 100x longer than the window."""
    bs, W = 16, 64
    m = KVCacheManager(block_size=bs, num_blocks=max_blocks_held(W, 1, bs, 10_000),
                       max_num_seqs=1, max_seq_len=10_000, sliding_window=W, max_query_len=1)
    assert m.num_blocks == cdiv(W, bs) + 1
    m.add_sequence(0)
    ever_used = set()
    for L in range(6400):
        m.plan([0])
        row = m.block_table(0)
        ever_used |= set(row[row >= 0].tolist())
        assert m.num_blocks_held(0) <= m.num_blocks
    assert ever_used == set(range(m.num_blocks))
    assert m.peak_blocks_in_use <= m.num_blocks


def test_no_window_keeps_every_block():
    m = KVCacheManager(block_size=4, num_blocks=20, max_num_seqs=1, max_seq_len=80,
                       sliding_window=0, max_query_len=8)
    m.add_sequence("a")
    for _ in range(10):
        m.plan(["a"], 8)
    assert m.num_blocks_held("a") == 20 and m.num_free_blocks == 0
    assert (m.block_table("a") >= 0).all()


def test_recycled_block_goes_to_another_sequence_in_the_same_step():
    """A block that left a's window this step is handed to b in the same step (LIFO pool)."""
    bs, W = 4, 4
    m = KVCacheManager(block_size=bs, num_blocks=3, max_num_seqs=2, max_seq_len=64,
                       sliding_window=W, max_query_len=4)
    m.add_sequence("a")
    m.plan(["a"], 4)
    m.plan(["a"], 4)  # a holds blocks 0, 1 (tokens 0..7)
    first_a = m.block_table("a")[0]
    m.add_sequence("b")
    # a's next step starts at 8: window_start(8) = 5, so block 0 (tokens 0..3) is dead. The pool has
    # one free block; a needs one and b needs one: only possible by recycling a's dead block.
    # Frees come first, then allocation in plan order: b (first) gets the block a just freed.
    m.plan(["b", "a"], [4, 4])
    assert m.block_table("a")[0] == -1
    assert first_a in m.block_table("b").tolist()
    assert m.num_free_blocks == 0


def snapshot(m: KVCacheManager):
    return (m._table.copy(), m.slot_block_tables.clone(), m.block_tables.clone(), m._dev.clone(),
            m.allocator.num_free, list(m.allocator._free), {s: m.seq_len(s) for s in m.seq_ids},
            {s: m.num_blocks_held(s) for s in m.seq_ids}, m.num_tokens, m.step_max_query_len)


def assert_same_state(a, b):
    for x, y in zip(a, b):
        if isinstance(x, np.ndarray):
            assert np.array_equal(x, y)
        elif isinstance(x, torch.Tensor):
            assert torch.equal(x, y)
        else:
            assert x == y


def test_out_of_blocks_raises_and_changes_nothing():
    m = KVCacheManager(block_size=4, num_blocks=6, max_num_seqs=3, max_seq_len=64,
                       sliding_window=8, max_query_len=16)
    m.add_sequence("a")
    m.add_sequence("b")
    m.plan(["a", "b"], [8, 4])  # 3 blocks used, 3 free
    before = snapshot(m)
    with pytest.raises(OutOfBlocksError, match=r"out of KV cache blocks: this step needs 4 new "
                                                r"blocks but only 3 are free \(\+0 recycled.*"
                                                r"num_blocks = 6"):
        m.plan(["b", "a"], [12, 4])  # b needs 3 (4 -> 16 tokens), a needs 1 (8 -> 12)
    assert_same_state(before, snapshot(m))
    m.plan(["a", "b"], [4, 4])  # a smaller step still fits, and the manager works on
    assert m.seq_len("a") == 12 and m.seq_len("b") == 8


def test_release_returns_all_blocks_and_clears_the_row():
    m = KVCacheManager(block_size=4, num_blocks=12, max_num_seqs=2, max_seq_len=64,
                       sliding_window=0, max_query_len=16)
    slot_a = m.add_sequence("a")
    m.add_sequence("b")
    m.plan(["a", "b"], [16, 5])
    assert m.num_free_blocks == 12 - 4 - 2
    m.release_sequence("a")
    assert m.num_free_blocks == 12 - 2
    assert (m._table[slot_a] == -1).all()
    with pytest.raises(ValueError, match=r"seq_id 'a' is not an active sequence"):
        m.seq_len("a")
    # The device row of the released slot reads -1 after the next plan, and the slot is reused.
    m.plan(["b"], 1)
    assert (m.slot_block_tables[slot_a] == -1).all()
    assert m.add_sequence("c") == slot_a
    m.plan(["c"], 3)
    assert (m.block_table("c")[1:] == -1).all() and m.block_table("c")[0] >= 0
    m.release_sequence("c")
    m.add_sequence("d")
    m.plan(["d", "b"], [2, 1])  # release + re-add of one slot between two plans
    assert torch.equal(m.slot_block_tables.cpu(), torch.from_numpy(m._table))


@pytest.mark.parametrize("mql,expected", [(1, 1), (2, 16), (16, 16), (17, 32), (200, 256),
                                          (300, 256)])
def test_query_len_bucket(mql, expected):
    assert query_len_bucket(mql, 256) == expected


def test_plan_copies_to_the_device_once():
    """All of a step's metadata crosses host->device in one copy; the rest is device-side index
    ops (reset rows, apply the changed entries, gather the batch's rows)."""
    m = KVCacheManager(block_size=4, num_blocks=32, max_num_seqs=4, max_seq_len=128,
                       sliding_window=8, max_query_len=16)
    for s in "abc":
        m.add_sequence(s)
    m.plan(["a", "b", "c"], [16, 3, 9])
    m.release_sequence("c")
    m.add_sequence("d")

    class Record(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append((func, args))
            return func(*args, **(kwargs or {}))

    with Record() as rec:
        m.plan(["b", "d", "a"], [1, 5, 16])
    copies = [args for func, args in rec.ops if func is torch.ops.aten.copy_.default]
    assert len(copies) == 1
    dst, src = copies[0][:2]
    assert src.untyped_storage().data_ptr() == m._staging.untyped_storage().data_ptr()
    assert dst.untyped_storage().data_ptr() == m._dev.untyped_storage().data_ptr()
    names = {str(func) for func, _ in rec.ops}
    assert "aten._local_scalar_dense.default" not in names  # no device value read back


# ---------------------------------------------------------------------------------------------
# Errors name the argument and change nothing.

def _manager():
    m = KVCacheManager(block_size=4, num_blocks=16, max_num_seqs=2, max_seq_len=20,
                       sliding_window=8, max_query_len=6, max_num_batched_tokens=10)
    m.add_sequence("a")
    m.add_sequence("b")
    m.plan(["a"], 4)
    return m


@pytest.mark.parametrize("call,exc,match", [
    (lambda m: m.plan(["zz"]), ValueError, r"seq_id 'zz' is not an active sequence"),
    (lambda m: m.plan([]), ValueError, r"seq_ids is empty"),
    (lambda m: m.plan(["a", "a"]), ValueError, r"seq_id 'a' appears twice in seq_ids"),
    (lambda m: m.plan(["a", "b"], [1]), ValueError, r"num_new_tokens has 1 entries but seq_ids has 2"),
    (lambda m: m.plan(["a"], 0), ValueError, r"num_new_tokens for seq_id 'a' must be a positive int"),
    (lambda m: m.plan(["a"], 2.0), ValueError, r"num_new_tokens for seq_id 'a' must be a positive int"),
    (lambda m: m.plan(["a"], 7), ValueError, r"num_new_tokens for seq_id 'a' is 7, more than "
                                             r"max_query_len = 6"),
    (lambda m: m.plan(["a", "b"], [5, 6]), ValueError, r"11 new tokens, more than "
                                                       r"max_num_batched_tokens = 10"),
    (lambda m: [m.plan(["a"], 6) for _ in range(3)], ValueError,
     r"seq_id 'a' would reach 22 tokens, more than max_seq_len = 20"),
    (lambda m: m.add_sequence("a"), ValueError, r"seq_id 'a' is already an active sequence"),
    (lambda m: m.add_sequence("c"), RuntimeError, r"max_num_seqs = 2 sequences are already active"),
    (lambda m: m.release_sequence("c"), ValueError, r"seq_id 'c' is not an active sequence"),
    (lambda m: m.plan([["a"]]), ValueError, r"is not an active sequence"),
])
def test_plan_errors(call, exc, match):
    m = _manager()
    with pytest.raises(exc, match=match):
        call(m)
    if "max_seq_len" not in match:  # that one planned twice before failing
        assert m.seq_len("a") == 4 and m.seq_len("b") == 0 and m.num_tokens == 4


@pytest.mark.parametrize("kwargs,match", [
    (dict(block_size=0), r"block_size must be a positive int, got 0"),
    (dict(num_blocks=-1), r"num_blocks must be a positive int"),
    (dict(max_num_seqs=1.5), r"max_num_seqs must be a positive int"),
    (dict(max_seq_len=0), r"max_seq_len must be a positive int"),
    (dict(max_query_len=0), r"max_query_len must be a positive int"),
    (dict(sliding_window=4.0), r"sliding_window must be an int"),
    (dict(max_num_batched_tokens=0), r"max_num_batched_tokens must be a positive int"),
])
def test_constructor_errors(kwargs, match):
    args = dict(block_size=4, num_blocks=8, max_num_seqs=2, max_seq_len=32)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        KVCacheManager(**args)
