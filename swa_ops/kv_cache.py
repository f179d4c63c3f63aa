"""Host-side bookkeeping of a paged KV cache with sliding windows.

:class:`KVCacheManager` owns everything about a cache except the K/V memory itself (which lives in
each :class:`~swa_ops.PagedSWAAttention` layer, so that several layers share one manager):

* a fixed pool of ``num_blocks`` block ids (:class:`BlockAllocator`);
* the sequences: each has a *slot* (a row of the block table, fixed for its lifetime), a length and
  the contiguous run of logical blocks it still holds;
* the device metadata the ops read, in persistent buffers whose addresses never change (so a CUDA
  graph captured once serves every later step).

**Recycling.** With a window ``W > 0`` a query at position ``p`` reads keys ``>= p - W + 1`` only, so
when a step starts at position ``L`` (the sequence's length before the step) every block that ends at
or before ``window_start(L) = max(0, L - W + 1)`` is dead for this and every later step: :meth:`plan`
returns those blocks to the pool before it allocates new ones, and writes -1 into their block-table
entries (the kernels never read them; DESIGN.md, "The ops"). A block freed this way may be handed to
another sequence in the same step: the owner does not read it, and the new owner's writes run after
every earlier step's reads (one stream). A sequence therefore holds at most
``cdiv(W + max_query_len - 1, block_size) + 1`` blocks however long it runs.

**One copy per step.** :meth:`plan` fills a host staging buffer (pinned on CUDA) with the step's slot
mapping, positions, sequence lengths, query offsets and the block-table entries that changed, then
issues one ``non_blocking`` host-to-device copy into a device buffer of the same layout. The tensors
the ops read are views into that buffer (or persistent tables updated from it by device-side
index ops), so the forward pass needs no host value and never synchronizes.

**Fixed shapes.** The block table, ``seq_lens`` and ``query_start_loc`` always have ``max_num_seqs``
rows: the step's sequences fill rows ``0..n-1`` in the order given to :meth:`plan` and the remaining
rows have zero length and zero query tokens (the kernels skip them). A decode step (one token per
sequence) passes rows ``0..num_tokens-1`` and no ``query_start_loc``, the kernels' decode form. Only
``num_tokens`` varies, and ``max_query_len`` takes few values (1 for decode, else a power of two
>= 16, capped), so a compiled forward does not recompile as contexts grow.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Hashable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

MIN_QUERY_LEN_BUCKET = 16  # smallest multi-token max_query_len handed to the kernels


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def window_start(pos: int, sliding_window: int) -> int:
    """First key position visible from absolute position ``pos`` (same rule as reference.py)."""
    return max(0, pos - sliding_window + 1) if sliding_window > 0 else 0


def max_blocks_held(sliding_window: int, max_query_len: int, block_size: int,
                    max_seq_len: int) -> int:
    """Most blocks one sequence can hold: the window plus one step's new tokens, over blocks.

    A step that appends ``q`` tokens to a sequence of length ``L`` needs keys from
    ``window_start(L)`` to ``L + q - 1``: ``W + q - 1`` positions, which touch at most
    ``cdiv(W + q - 1, block_size) + 1`` blocks (one more when the run is not block-aligned).
    """
    full = cdiv(max_seq_len, block_size)
    if sliding_window <= 0:
        return full
    return min(full, cdiv(sliding_window + max_query_len - 1, block_size) + 1)


def query_len_bucket(max_len: int, cap: int) -> int:
    """The ``max_query_len`` passed to the kernels for a step whose longest query is ``max_len``.

    Few distinct values (1; then powers of two from 16, capped at ``cap``) keep recompiles and CUDA
    graphs bounded while multi-token launches stay close to the real size.
    """
    if max_len <= 1:
        return 1
    bucket = MIN_QUERY_LEN_BUCKET
    while bucket < max_len:
        bucket *= 2
    return min(bucket, cap)


def canonical_device(device) -> torch.device:
    """``device`` with its index filled in ("cuda" -> "cuda:0"), so devices compare reliably."""
    if device is None:
        return torch.device("cpu")
    return torch.empty(0, device=device).device


def check_positive_ints(**values) -> None:
    """Raises ValueError naming the first argument that is not a positive int."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


class OutOfBlocksError(RuntimeError):
    """Raised by :meth:`KVCacheManager.plan` when the pool cannot hold a step; nothing changed."""


class BlockAllocator:
    """A fixed pool of block ids ``0..num_blocks-1`` with a LIFO free list.

    LIFO hands out the most recently freed block first (still warm in caches); allocation order is
    deterministic, which keeps tests reproducible.
    """

    def __init__(self, num_blocks: int):
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        self.num_blocks = num_blocks
        self._free: List[int] = list(range(num_blocks - 1, -1, -1))  # pop() yields 0, 1, 2, ...
        self._is_free = np.ones(num_blocks, dtype=bool)

    @property
    def num_free(self) -> int:
        return len(self._free)

    def allocate(self, n: int) -> List[int]:
        if n > len(self._free):
            raise OutOfBlocksError(f"out of KV cache blocks: need {n}, {len(self._free)} free "
                                   f"of num_blocks = {self.num_blocks}")
        out = [self._free.pop() for _ in range(n)]
        self._is_free[out] = False
        return out

    def free(self, blocks: Sequence[int]) -> None:
        for b in blocks:
            if self._is_free[b]:
                raise RuntimeError(f"block {b} freed twice (allocator bookkeeping bug)")
            self._is_free[b] = True
            self._free.append(b)


@dataclass
class _Sequence:
    slot: int          # row of the slot-ordered block table, fixed while the sequence lives
    length: int = 0    # tokens cached (after the last planned step)
    first_block: int = 0  # logical index of the first block still held
    # physical ids of logical blocks first_block, first_block + 1, ...
    blocks: List[int] = field(default_factory=list)


@dataclass(frozen=True)
class StepPlan:
    """What :meth:`KVCacheManager.plan` decided for one step (host values, for the caller)."""

    seq_ids: Tuple[Hashable, ...]
    num_new_tokens: Tuple[int, ...]
    query_start_loc: Tuple[int, ...]  # len(seq_ids) + 1 prefix sums: tokens of seq i are [qsl[i], qsl[i+1])
    context_lens: Tuple[int, ...]  # length of each sequence before the step (= position of its first token)
    seq_lens: Tuple[int, ...]  # length of each sequence after the step
    num_tokens: int
    max_query_len: int  # the bucket handed to the kernels (>= the longest query)


class _Layout:
    """Byte offsets of the sections shared by the host staging buffer and the device buffer."""

    def __init__(self, sections: Sequence[Tuple[str, torch.dtype, Tuple[int, ...]]]):
        self.sections: Dict[str, Tuple[int, torch.dtype, Tuple[int, ...]]] = {}
        off = 0
        for name, dtype, shape in sections:
            itemsize = torch.empty((), dtype=dtype).element_size()
            off = cdiv(off, 16) * 16  # 16-byte aligned sections: any dtype view is legal
            self.sections[name] = (off, dtype, shape)
            off += itemsize * int(np.prod(shape))
        self.nbytes = cdiv(off, 16) * 16

    def view(self, buf: Tensor, name: str) -> Tensor:
        off, dtype, shape = self.sections[name]
        itemsize = torch.empty((), dtype=dtype).element_size()
        n = int(np.prod(shape))
        return buf[off:off + n * itemsize].view(dtype).view(shape)

    def end_of(self, name: str, rows: int) -> int:
        """Byte offset just past the first ``rows`` rows of section ``name``."""
        off, dtype, shape = self.sections[name]
        row_bytes = torch.empty((), dtype=dtype).element_size() * int(np.prod(shape[1:]))
        return off + rows * row_bytes


class KVCacheManager:
    """Block pool, block tables, slot mapping and window recycling for paged K/V caches.

    Args:
        block_size: tokens per block.
        num_blocks: blocks in the pool (shared by all sequences; every layer using this manager
            allocates ``num_blocks`` blocks of K and of V).
        max_num_seqs: most sequences alive at once (rows of the block table).
        max_seq_len: longest sequence, in tokens (columns of the block table are
            ``cdiv(max_seq_len, block_size)``; with a window only the last few are ever set).
        sliding_window: ``W > 0`` recycles blocks that fall wholly before the window; ``<= 0`` keeps
            every block (full causal attention).
        max_query_len: most new tokens of one sequence in one step (prefills longer than this are
            chunked by the caller).
        max_num_batched_tokens: most new tokens in one step over all sequences (default
            ``max_num_seqs * max_query_len``).
        device: where the metadata the ops read lives.
    """

    def __init__(self, *, block_size: int, num_blocks: int, max_num_seqs: int, max_seq_len: int,
                 sliding_window: int = 0, max_query_len: int = 256,
                 max_num_batched_tokens: Optional[int] = None,
                 device: Union[torch.device, str, None] = None):
        check_positive_ints(block_size=block_size, num_blocks=num_blocks,
                            max_num_seqs=max_num_seqs, max_seq_len=max_seq_len,
                            max_query_len=max_query_len)
        if not isinstance(sliding_window, int):
            raise ValueError(f"sliding_window must be an int, got {sliding_window!r}")
        if max_num_batched_tokens is None:
            max_num_batched_tokens = max_num_seqs * max_query_len
        if not isinstance(max_num_batched_tokens, int) or max_num_batched_tokens < 1:
            raise ValueError(f"max_num_batched_tokens must be a positive int, got "
                             f"{max_num_batched_tokens!r}")
        self.block_size = block_size
        self.num_blocks = num_blocks
        self.max_num_seqs = max_num_seqs
        self.max_seq_len = max_seq_len
        self.sliding_window = max(sliding_window, 0)
        self.max_query_len = min(max_query_len, max_seq_len)
        self.max_num_batched_tokens = max_num_batched_tokens
        self.device = canonical_device(device)
        self.max_blocks_per_seq = cdiv(max_seq_len, block_size)  # block-table columns
        self.max_blocks_held = max_blocks_held(self.sliding_window, self.max_query_len, block_size,
                                               max_seq_len)

        self.allocator = BlockAllocator(num_blocks)
        self._seqs: Dict[Hashable, _Sequence] = {}
        self._free_slots: List[int] = list(range(max_num_seqs - 1, -1, -1))
        # Host truth of the slot-ordered block table; -1 where no block is held.
        self._table = np.full((max_num_seqs, self.max_blocks_per_seq), -1, dtype=np.int32)
        self._pending_resets: set = set()  # slots released since the last plan
        self.peak_blocks_in_use = 0

        # Per step each sequence frees <= cdiv(max_query_len, bs) + 1 blocks and allocates as many,
        # so this bounds the block-table entries one plan can change.
        self._max_updates = max_num_seqs * 2 * (cdiv(self.max_query_len, block_size) + 1)
        T, S = max_num_batched_tokens, max_num_seqs
        self._layout = _Layout([
            ("slot_mapping", torch.int64, (T,)),
            ("positions", torch.int64, (T,)),
            ("batch_slots", torch.int64, (S,)),
            ("reset_slots", torch.int64, (S,)),
            ("seq_lens", torch.int32, (S,)),
            ("query_start_loc", torch.int32, (S + 1,)),
            ("updates", torch.int32, (self._max_updates, 2)),  # (flat table index, block id)
        ])
        on_cuda = self.device.type == "cuda"
        self._staging = torch.zeros(self._layout.nbytes, dtype=torch.uint8, pin_memory=on_cuda)
        self._host = {name: self._layout.view(self._staging, name).numpy()
                      for name in self._layout.sections}
        self._dev = torch.zeros(self._layout.nbytes, dtype=torch.uint8, device=self.device)
        self._copy_done = None  # CUDA event after the last staging copy

        # What the ops read. Addresses are fixed for the manager's lifetime.
        self.slot_mapping = self._layout.view(self._dev, "slot_mapping")
        self.positions = self._layout.view(self._dev, "positions")
        self.seq_lens = self._layout.view(self._dev, "seq_lens")
        self.query_start_loc = self._layout.view(self._dev, "query_start_loc")
        self._batch_slots = self._layout.view(self._dev, "batch_slots")
        self._reset_slots = self._layout.view(self._dev, "reset_slots")
        self._updates = self._layout.view(self._dev, "updates")
        self.slot_block_tables = torch.full((S, self.max_blocks_per_seq), -1, dtype=torch.int32,
                                            device=self.device)
        self.block_tables = torch.full_like(self.slot_block_tables, -1)  # batch-ordered rows
        for t in (self.slot_mapping, self.positions, self.seq_lens, self.query_start_loc,
                  self.block_tables):
            torch._dynamo.mark_static_address(t)

        self.num_tokens: Optional[int] = None  # of the last planned step
        self.step_max_query_len: int = 1
        self.last_plan: Optional[StepPlan] = None

    # ------------------------------------------------------------------ sequences

    def add_sequence(self, seq_id: Hashable) -> int:
        """Registers a new, empty sequence; returns its slot (block-table row)."""
        if seq_id in self._seqs:
            raise ValueError(f"seq_id {seq_id!r} is already an active sequence")
        if not self._free_slots:
            raise RuntimeError(f"cannot add seq_id {seq_id!r}: max_num_seqs = {self.max_num_seqs} "
                               "sequences are already active; release one first")
        slot = self._free_slots.pop()
        self._seqs[seq_id] = _Sequence(slot=slot)
        return slot

    def release_sequence(self, seq_id: Hashable) -> None:
        """Returns all blocks of ``seq_id`` to the pool and forgets it.

        Its block-table row reads -1 on the host at once and on the device from the next
        :meth:`plan` (a step already planned may still run: its blocks are untouched until then).
        """
        seq = self._get(seq_id)
        self.allocator.free(seq.blocks)
        self._table[seq.slot, :] = -1
        self._pending_resets.add(seq.slot)
        self._free_slots.append(seq.slot)
        del self._seqs[seq_id]

    def _get(self, seq_id: Hashable) -> _Sequence:
        try:
            return self._seqs[seq_id]
        except (KeyError, TypeError):
            raise ValueError(f"seq_id {seq_id!r} is not an active sequence "
                             f"(active: {list(self._seqs)})") from None

    @property
    def seq_ids(self) -> List[Hashable]:
        return list(self._seqs)

    def seq_len(self, seq_id: Hashable) -> int:
        return self._get(seq_id).length

    def num_blocks_held(self, seq_id: Hashable) -> int:
        return len(self._get(seq_id).blocks)

    def block_table(self, seq_id: Hashable) -> np.ndarray:
        """A copy of the host block-table row of ``seq_id`` (-1 where no block is held)."""
        return self._table[self._get(seq_id).slot].copy()

    @property
    def num_free_blocks(self) -> int:
        return self.allocator.num_free

    @property
    def num_blocks_in_use(self) -> int:
        return self.num_blocks - self.allocator.num_free

    # ------------------------------------------------------------------ planning

    def plan(self, seq_ids: Sequence[Hashable],
             num_new_tokens: Union[int, Sequence[int]] = 1) -> StepPlan:
        """Plans one step: ``num_new_tokens[i]`` new tokens for ``seq_ids[i]``, in this order.

        Frees blocks that fell wholly before each sequence's window, allocates blocks for the new
        tokens, and copies the step's metadata to the device in one copy. The step's query/key/value
        rows must be grouped by sequence in the order of ``seq_ids``. Validates everything first:
        on any error (unknown id, too many tokens, out of blocks...) no state changes.
        """
        seq_ids = tuple(seq_ids)
        if not isinstance(num_new_tokens, (list, tuple, np.ndarray, torch.Tensor)):
            counts = (num_new_tokens,) * len(seq_ids)  # one count for every sequence
        else:
            counts = tuple(num_new_tokens.tolist() if hasattr(num_new_tokens, "tolist")
                           else num_new_tokens)
        counts = self._validate(seq_ids, counts)

        # Per sequence: blocks to free ([first_block, keep_from)) and to allocate.
        frees, allocs = [], []
        bs = self.block_size
        for sid, q in zip(seq_ids, counts):
            seq = self._seqs[sid]
            held_end = seq.first_block + len(seq.blocks)
            keep_from = min(window_start(seq.length, self.sliding_window) // bs, held_end)
            n_free = max(0, keep_from - seq.first_block)
            new_end = cdiv(seq.length + q, bs)
            frees.append(n_free)
            allocs.append(new_end - held_end)
        need, freed = sum(allocs), sum(frees)
        if need > self.allocator.num_free + freed:
            raise OutOfBlocksError(
                f"out of KV cache blocks: this step needs {need} new blocks but only "
                f"{self.allocator.num_free} are free (+{freed} recycled from out-of-window blocks) "
                f"of num_blocks = {self.num_blocks}; release sequences, plan fewer tokens or "
                "build the cache with more num_blocks")

        # Validated: from here on nothing raises for bad input.
        if self._copy_done is not None:
            self._copy_done.synchronize()  # the last copy has read the staging buffer
        updates: Dict[int, int] = {}
        cols = self.max_blocks_per_seq
        for sid, n_free in zip(seq_ids, frees):
            if n_free:
                seq = self._seqs[sid]
                dead, seq.blocks = seq.blocks[:n_free], seq.blocks[n_free:]
                self.allocator.free(dead)
                for j in range(seq.first_block, seq.first_block + n_free):
                    self._table[seq.slot, j] = -1
                    updates[seq.slot * cols + j] = -1
                seq.first_block += n_free
        for sid, n_new in zip(seq_ids, allocs):
            if not n_new:
                continue
            seq = self._seqs[sid]
            # Held blocks always end at block cdiv(length, bs): the new ones follow them (when
            # everything was recycled, first_block already points past the dead blocks).
            new = self.allocator.allocate(n_new)
            start = seq.first_block + len(seq.blocks)
            seq.blocks.extend(new)
            for j, b in enumerate(new, start):
                self._table[seq.slot, j] = b
                updates[seq.slot * cols + j] = b
        self.peak_blocks_in_use = max(self.peak_blocks_in_use, self.num_blocks_in_use)

        # Per-token metadata, vectorized over the whole step (host cost ~independent of batch).
        h = self._host
        seqs = [self._seqs[sid] for sid in seq_ids]
        n = len(seqs)
        ctx = [seq.length for seq in seqs]
        lens = [L0 + q for L0, q in zip(ctx, counts)]
        qsl = [0]
        for q in counts:
            qsl.append(qsl[-1] + q)
        total = qsl[-1]
        slots = np.fromiter((seq.slot for seq in seqs), dtype=np.int64, count=n)
        cnt = np.asarray(counts, dtype=np.int64)
        # position of token t of sequence i: ctx[i] + (t - qsl[i])
        pos = np.arange(total, dtype=np.int64) + np.repeat(
            np.asarray(ctx, dtype=np.int64) - np.asarray(qsl[:-1], dtype=np.int64), cnt)
        h["positions"][:total] = pos
        h["slot_mapping"][:total] = (
            self._table[np.repeat(slots, cnt), pos // bs].astype(np.int64) * bs + pos % bs)
        for seq, L in zip(seqs, lens):
            seq.length = L
        h["batch_slots"][:n] = slots
        h["batch_slots"][n:] = 0  # padding rows: zero length, zero tokens; the table is not read
        h["seq_lens"][:n] = lens
        h["seq_lens"][n:] = 0
        h["query_start_loc"][:n + 1] = qsl
        h["query_start_loc"][n + 1:] = total
        resets = sorted(self._pending_resets)
        h["reset_slots"][:len(resets)] = resets
        assert len(updates) <= self._max_updates, "block-table update bound violated"
        if updates:
            h["updates"][:len(updates), 0] = list(updates.keys())
            h["updates"][:len(updates), 1] = list(updates.values())

        # The one host-to-device copy, then device-side table maintenance (no host sync).
        end = self._layout.end_of("updates", len(updates))
        self._dev[:end].copy_(self._staging[:end], non_blocking=True)
        if self.device.type == "cuda":
            self._copy_done = torch.cuda.Event()
            self._copy_done.record()
        if resets:
            self.slot_block_tables.index_fill_(0, self._reset_slots[:len(resets)], -1)
        if updates:
            upd = self._updates[:len(updates)]
            self.slot_block_tables.view(-1).index_copy_(0, upd[:, 0].long(), upd[:, 1])
        torch.index_select(self.slot_block_tables, 0, self._batch_slots, out=self.block_tables)
        self._pending_resets.clear()

        self.num_tokens = total
        self.step_max_query_len = query_len_bucket(max(counts), self.max_query_len)
        self.last_plan = StepPlan(seq_ids, counts, tuple(qsl), tuple(ctx), tuple(lens), total,
                                  self.step_max_query_len)
        return self.last_plan

    def _validate(self, seq_ids: Tuple[Hashable, ...], counts: Tuple[int, ...]
                  ) -> Tuple[int, ...]:
        if not seq_ids:
            raise ValueError("seq_ids is empty: plan at least one sequence")
        if len(counts) != len(seq_ids):
            raise ValueError(f"num_new_tokens has {len(counts)} entries but seq_ids has "
                             f"{len(seq_ids)}")
        seen = set()
        for sid, q in zip(seq_ids, counts):
            seq = self._get(sid)
            if sid in seen:
                raise ValueError(f"seq_id {sid!r} appears twice in seq_ids")
            seen.add(sid)
            if isinstance(q, bool) or not isinstance(q, (int, np.integer)) or q < 1:
                raise ValueError(f"num_new_tokens for seq_id {sid!r} must be a positive int, "
                                 f"got {q!r}")
            if q > self.max_query_len:
                raise ValueError(f"num_new_tokens for seq_id {sid!r} is {q}, more than "
                                 f"max_query_len = {self.max_query_len}; chunk the prefill")
            if seq.length + q > self.max_seq_len:
                raise ValueError(f"seq_id {sid!r} would reach {seq.length + q} tokens, more than "
                                 f"max_seq_len = {self.max_seq_len}")
        total = sum(counts)
        if total > self.max_num_batched_tokens:
            raise ValueError(f"the step has {total} new tokens, more than max_num_batched_tokens = "
                             f"{self.max_num_batched_tokens}")
        return tuple(int(q) for q in counts)
