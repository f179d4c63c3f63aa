"""Host model of prefill_ws.h's synchronisation: python tools/ws_model.py

One producer and two consumers run as generators under a random scheduler, with the kernel's
barrier rules: mbarriers by completed-phase count and try_wait.parity's real semantics (a wait for
parity P passes while the count of completed phases is odd when P = 0, even when P = 1: a waiter
two phases behind would pass wrongly, so the model also asserts nobody ever is), cp.async copies
that land at a random later time, named barriers that release once 256 threads' worth of sync and
arrive have come.

A CTA runs a list of work items (the persistent grid, prefill_ws_kernel<..., PERSIST = true>, gives
a CTA many; the plain grid one). Each item has its own tile count (0..12); the K/V ring's barrier phases run on
across items (global tile numbers), the Q tile is handed over per item with items that have tiles:
the producer loads the next item's Q only after q_empty's phase (both consumer warpgroups past
their last S of the previous item), after issuing that item's tile 0, and the copies' landing
completes q_full. The consumers' turns alternate across item boundaries (consumer 1 grants one turn
up front and one after every batch; consumer 0 takes the spare grant at the end).

The plain grid's kernel (PERSIST = false) has its own protocol, modelled too (plain=True): one
item; each consumer loads its own Q rows before its first batch (no q_full / q_empty), stages O in
them after its last batch; consumer 1 grants one turn up front (only when the item has tiles) and
one after each of its batches but the last, so consumer 0 has no spare grant to take.

Checked for ring depths 2..6 (3..6 with the intra-warpgroup overlap's early poll) over many random
schedules: every wgmma batch reads the tiles it expects from stages whose copies have landed and Q
of its own item, landed; no stage is overwritten while a batch reads it, Q is never overwritten
while a later S of its item is still to come; every tile is read once by each consumer; batches
alternate consumer 0, consumer 1, ...; nothing deadlocks; no barrier is left with arrivals.
Mutations the checks must catch are run at the end (each must fail).
"""
import random


class MBar:
    def __init__(self, count):
        self.count, self.pending, self.phases = count, count, 0

    def arrive(self):
        self.pending -= 1
        assert self.pending >= 0
        if self.pending == 0:
            self.phases += 1
            self.pending = self.count

    def passes(self, parity):  # mbarrier.try_wait.parity
        return (self.phases & 1) != parity


class NamedBar:
    """bar.sync / bar.arrive with a thread count: releases when `need` threads have come."""

    def __init__(self, need):
        self.need, self.came, self.gen, self.who = need, 0, 0, []

    def arrive(self, threads, who):
        self.came += threads
        self.who.append(who)
        assert self.came <= self.need
        if self.came == self.need:
            # each generation: the owner's sync and the other consumer's arrive, one each
            assert sorted(self.who) == ["arrive", "sync"], self.who
            self.came, self.gen, self.who = 0, self.gen + 1, []
        return self.gen


def simulate(items, nst, rng, overlap=False, mutation=None, staged=False, plain=False):
    """items: tile counts of the CTA's work items, in order. mutation: None, or one deliberate
    protocol bug ("no_q_empty_wait", "q_empty_early", "no_drain", "q_before_release",
    "staged_early_release"). staged: the epilogue stages O in the item's Q rows (large head
    sizes) and releases Q (q_empty) only after that, instead of right after the last S. plain:
    the plain grid's protocol (one item; mutation "plain_last_arrive": consumer 1 hands over a
    turn after its last batch too)."""
    assert not plain or (len(items) == 1 and staged)
    full = [MBar(1) for _ in range(nst)]  # the 128 producer arrivals as one
    empty = [MBar(2) for _ in range(nst)]  # the 8 consumer warps as one per warpgroup
    q_full, q_empty = MBar(1), MBar(2)
    turn = [NamedBar(256), NamedBar(256)]
    stage_tile = [None] * nst  # global tile whose copies target the stage
    landed = [False] * nst
    readers = [0] * nst  # batches reading the stage now
    q_state = {"item": None, "landed": False, "readers": 0}
    s_left = {}  # item -> S batches still to issue (both consumers together)
    inflight = []  # copies not landed: ("kv", stage) or ("q", None)
    order = []  # (consumer, global batch number) in issue order
    reads = {0: [], 1: []}  # tiles each consumer's batches read (K and V)

    live = [k for k, n in enumerate(items) if n > 0]  # items with tiles, in order
    base = {}  # item -> global number of its tile 0
    t = 0
    for k, n in enumerate(items):
        base[k] = t
        t += n
    for k in live:
        s_left[k] = 2 * items[k]
    if plain and live:  # the consumers' own Q loads: landed before either's first batch
        q_state["item"], q_state["landed"] = live[0], True

    def wait_mbar(bar, parity, expect_phase):
        # The rule the kernel relies on: when the wait passes, exactly `expect_phase` phases
        # have completed (never two more: parity would alias).
        while not bar.passes(parity):
            yield
        assert bar.phases == expect_phase + 1, (bar.phases, expect_phase)

    def producer():
        def load_tile(jg):
            s = jg % nst
            if jg >= nst:
                yield from wait_mbar(empty[s], ((jg // nst) - 1) & 1, jg // nst - 1)
            assert readers[s] == 0, "stage overwritten while read"
            stage_tile[s], landed[s] = jg, False
            inflight.append(("kv", s))  # cp.async + cp.async.mbarrier.arrive.noinc
            yield

        def load_q(qn, k):
            if qn > 0 and mutation != "no_q_empty_wait":
                yield from wait_mbar(q_empty, (qn - 1) & 1, qn - 1)
            assert q_state["readers"] == 0, "Q overwritten while read"
            prev = q_state["item"]
            assert prev is None or s_left[prev] == 0, "Q overwritten before its last S"
            q_state["item"], q_state["landed"] = k, False
            inflight.append(("q", None))
            yield

        if plain:
            for j in range(items[0]):
                yield from load_tile(j)
            return
        qn = 0
        for k in live:
            n = items[k]
            if mutation == "q_before_release":
                # Q first: still correct, only later (the run-ahead is one tile shorter).
                yield from load_q(qn, k)
                yield from load_tile(base[k])
            else:
                yield from load_tile(base[k])  # its stage frees a batch before Q does
                yield from load_q(qn, k)
            qn += 1
            for j in range(1, n):
                yield from load_tile(base[k] + j)

    def consumer(cw):
        def sync_turn():
            gen = turn[cw].arrive(128, "sync")
            target = gen + 1 if turn[cw].came else gen
            while turn[cw].gen < target:
                yield

        def batch(k, g, pv, s, last):
            yield from sync_turn()
            rd = []
            if pv is not None:
                st = pv % nst
                assert stage_tile[st] == pv and landed[st], ("V", cw, g, pv)
                rd.append(st)
                reads[cw].append(("V", pv))
            if s is not None:
                st = s % nst
                assert stage_tile[st] == s and landed[st], ("K", cw, g, s)
                assert q_state["item"] == k and q_state["landed"], ("Q", cw, k, q_state)
                rd.append(st)
                reads[cw].append(("K", s))
                q_state["readers"] += 1
                s_left[k] -= 1
            for st in rd:
                readers[st] += 1
            order.append((cw, g))
            # Every batch hands the turn over, but on the plain grid consumer 1's last (which
            # would have no taker).
            if not (plain and cw == 1 and last) or mutation == "plain_last_arrive":
                turn[cw ^ 1].arrive(128, "arrive")
            yield  # wgmma in flight
            if overlap and pv is not None and s is not None and s + 1 < base[k] + items[k]:
                # OVERLAP: polls for tile s + 1 (same item) while P V(pv) is still in flight
                yield from wait_mbar(full[(s + 1) % nst], ((s + 1) // nst) & 1, (s + 1) // nst)
            for st in rd:
                readers[st] -= 1
            if s is not None:
                q_state["readers"] -= 1

        if cw == 1 and (live or not plain):
            turn[0].arrive(128, "arrive")  # consumer 0 takes the tensor cores first
        gb = 0  # global batch number (per consumer)
        for qn, k in enumerate(live):
            n, b0 = items[k], base[k]
            if not plain:
                yield from wait_mbar(q_full, qn & 1, qn)
            for g in range(n + 1):
                s = b0 + g if g < n else None
                pv = b0 + g - 1 if g > 0 else None
                if mutation == "q_empty_early" and g == n - 1:
                    q_empty.arrive()  # before the last S: wrong
                if s is not None:
                    yield from wait_mbar(full[s % nst], (s // nst) & 1, s // nst)
                yield from batch(k, gb, pv, s, g == n)
                gb += 1
                if pv is not None:
                    empty[pv % nst].arrive()
                early = not staged or mutation == "staged_early_release"
                if g == n - 1 and mutation != "q_empty_early" and early and not plain:
                    q_empty.arrive()  # past the item's last S: Q may be refilled
                yield  # softmax
            if staged:
                # Epilogue: O staged in this item's Q rows (written, then read back), then Q is
                # released. The Q tile must still be this item's, and nobody may refill it now.
                assert q_state["item"] == k, ("Q refilled before the staged epilogue", cw, k)
                q_state["readers"] += 1
                yield
                assert q_state["item"] == k, ("Q refilled under the staged epilogue", cw, k)
                q_state["readers"] -= 1
                if mutation != "staged_early_release" and not plain:
                    q_empty.arrive()
            else:
                yield  # epilogue: O straight from registers, Q untouched
        if cw == 0 and mutation != "no_drain" and not plain:
            yield from sync_turn()  # the spare grant consumer 1 gave after its last batch

    agents = [producer(), consumer(0), consumer(1)]
    alive = list(agents)
    steps = 0
    while alive or inflight:
        steps += 1
        assert steps < 200000, "deadlock"
        if inflight and rng.random() < 0.3:  # a copy lands (in issue order per thread)
            kind, st = inflight.pop(0)
            if kind == "kv":
                landed[st] = True
                full[st].arrive()
            else:
                q_state["landed"] = True
                q_full.arrive()
            continue
        if not alive:
            continue
        a = rng.choice(alive)
        try:
            next(a)
        except StopIteration:
            alive.remove(a)
    nb = sum(n + 1 for n in items if n > 0)
    assert order == [(cw, g) for g in range(nb) for cw in (0, 1)], "turns out of order"
    for cw in (0, 1):
        want = sorted([("K", j) for j in range(sum(items))] + [("V", j) for j in range(sum(items))])
        assert sorted(reads[cw]) == want, "a tile not read exactly once"
    assert turn[0].came == 0 and turn[1].came == 0, "named barrier left with arrivals"
    assert all(v == 0 for v in s_left.values())


def random_items(rng, max_items=6):
    return [rng.choice([0, 0, 1, 2, 3]) if rng.random() < 0.4 else rng.randint(0, 12)
            for _ in range(rng.randint(1, max_items))]


def main():
    rng = random.Random(0)
    runs = 0
    for overlap in (False, True):
        # The overlap's early poll for tile g + 1 needs a third stage: with two, tile g + 1 waits
        # for the release of tile g - 1, which comes after the poll (checked to deadlock below).
        for nst in range(3 if overlap else 2, 7):
            for n in range(0, 13):  # one item per CTA: persistent kernel, and the plain grid's
                for _ in range(60):
                    simulate([n], nst, rng, overlap)
                    simulate([n], nst, rng, overlap, staged=True, plain=True)
                    runs += 2
            for _ in range(600):  # several items per CTA (the persistent grid)
                simulate(random_items(rng), nst, rng, overlap)
                runs += 1
            for _ in range(100):  # the order that loads Q before the next item's tile 0
                simulate(random_items(rng), nst, rng, overlap, "q_before_release")
                runs += 1
            for _ in range(300):  # the staged epilogue (large head sizes)
                simulate(random_items(rng), nst, rng, overlap, staged=True)
                runs += 1
    print(f"ws_model: {runs} random schedules passed (1 and 1..6 items of 0..12 tiles)")

    def must_fail(name, items, nst, overlap, mutation, expect, tries=300, plain=False):
        for _ in range(tries):
            try:
                simulate(items, nst, rng, overlap, mutation, staged=plain, plain=plain)
            except AssertionError as e:
                assert expect in str(e), (name, str(e))
                print(f"ws_model: mutation {name}: caught ({e})")
                return
        raise SystemExit(f"ws_model: mutation {name} was not caught")

    must_fail("two stages with the overlap's poll", [4], 2, True, None, "deadlock")
    must_fail("producer skips the q_empty wait", [5, 3, 7], 3, False, "no_q_empty_wait",
              "Q overwritten")
    must_fail("q_empty before the last S", [5, 3, 7], 4, True, "q_empty_early", "Q")
    must_fail("consumer 0 skips the final turn", [2, 3], 3, False, "no_drain",
              "named barrier left")
    must_fail("plain grid: consumer 1 hands over after its last batch", [3], 3, False,
              "plain_last_arrive", "named barrier left", plain=True)
    for _ in range(300):  # a staged epilogue that releases Q after the last S, as unstaged does
        try:
            simulate([5, 3, 7], 3, rng, False, "staged_early_release", staged=True)
        except AssertionError as e:
            assert "Q" in str(e), str(e)
            print(f"ws_model: mutation staged epilogue releasing Q early: caught ({e})")
            break
    else:
        raise SystemExit("ws_model: mutation staged_early_release was not caught")


if __name__ == "__main__":
    main()
