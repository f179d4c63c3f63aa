"""Host model of prefill_ws.h's synchronisation: python tools/ws_model.py

One producer and two consumers run as generators under a random scheduler, with the kernel's
barrier rules: mbarriers by completed-phase count and try_wait.parity's real semantics (a wait for
parity P passes while the count of completed phases is odd when P = 0, even when P = 1: a waiter
two phases behind would pass wrongly, so the model also asserts nobody ever is), cp.async copies
that land at a random later time, named barriers that release once 256 threads' worth of sync and
arrive have come. Checked, for ring depths 2..6 and 0..12 tiles over many random schedules:
with and without the intra-warpgroup overlap's early poll (3..6 stages then), every wgmma
batch reads the tiles it expects from stages whose copies have landed, no stage is
overwritten while a batch reads it, batches alternate consumer 0, consumer 1, ..., nothing
deadlocks, and no named barrier is left with arrivals when the CTA ends.
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


def simulate(n_tiles, nst, rng, overlap=False):
    full = [MBar(1) for _ in range(nst)]  # the 128 producer arrivals as one
    empty = [MBar(2) for _ in range(nst)]  # the 8 consumer warps as one per warpgroup
    turn = [NamedBar(256), NamedBar(256)]
    stage_tile = [None] * nst  # tile whose copies target the stage
    landed = [False] * nst
    readers = [0] * nst  # batches reading the stage now
    inflight = []  # copies not landed: stages
    order = []  # (consumer, batch) in issue order
    full_waited = {}  # (stage) -> highest phase a consumer relied on

    def wait_mbar(bar, parity, expect_phase):
        # The rule the kernel relies on: when the wait passes, exactly `expect_phase` phases
        # have completed (never two more: parity would alias).
        while not bar.passes(parity):
            yield
        assert bar.phases == expect_phase + 1, (bar.phases, expect_phase)

    def producer():
        for j in range(n_tiles):
            s = j % nst
            if j >= nst:
                yield from wait_mbar(empty[s], ((j // nst) - 1) & 1, j // nst - 1)
            assert readers[s] == 0, "stage overwritten while read"
            stage_tile[s], landed[s] = j, False
            inflight.append(s)  # cp.async + cp.async.mbarrier.arrive.noinc
            yield

    def consumer(cw):
        def sync_turn():
            gen = turn[cw].arrive(128, "sync")
            target = gen + 1 if turn[cw].came else gen
            while turn[cw].gen < target:
                yield

        def batch(g, pv, s):
            yield from sync_turn()
            reads = []
            if pv is not None:
                st = pv % nst
                assert stage_tile[st] == pv and landed[st], ("V", cw, g, pv)
                reads.append(st)
            if s is not None:
                st = s % nst
                assert stage_tile[st] == s and landed[st], ("K", cw, g, s)
                reads.append(st)
            for st in reads:
                readers[st] += 1
            order.append((cw, g))
            last = s is None
            if cw == 0 or not last:
                turn[cw ^ 1].arrive(128, "arrive")
            yield  # wgmma in flight
            if overlap and pv is not None and s is not None and s + 1 < n_tiles:
                # OVERLAP: polls for tile s + 1 while P V(pv) is still in flight
                yield from wait_mbar(full[(s + 1) % nst], ((s + 1) // nst) & 1, (s + 1) // nst)
            for st in reads:
                readers[st] -= 1

        if n_tiles == 0:
            return
        if cw == 1:
            turn[0].arrive(128, "arrive")
        for g in range(n_tiles + 1):
            s = g if g < n_tiles else None
            pv = g - 1 if g > 0 else None
            if s is not None:
                yield from wait_mbar(full[s % nst], (s // nst) & 1, s // nst)
            yield from batch(g, pv, s)
            if pv is not None:
                empty[pv % nst].arrive()
            yield  # softmax

    agents = [producer(), consumer(0), consumer(1)]
    alive = list(agents)
    steps = 0
    while alive or inflight:
        steps += 1
        assert steps < 100000, "deadlock"
        if inflight and rng.random() < 0.3:  # a copy lands
            st = inflight.pop(0)
            landed[st] = True
            full[st].arrive()
            continue
        if not alive:
            continue
        a = rng.choice(alive)
        try:
            next(a)
        except StopIteration:
            alive.remove(a)
    # strict alternation of batches between the consumers
    assert order == [(cw, g) for g in range(n_tiles + 1) for cw in (0, 1)][: len(order)]
    assert len(order) == (2 * (n_tiles + 1) if n_tiles else 0)
    assert turn[0].came == 0 and turn[1].came == 0, "named barrier left with arrivals"


def main():
    rng = random.Random(0)
    runs = 0
    for overlap in (False, True):
        # The overlap's early poll for tile g + 1 needs a third stage: with two, tile g + 1 waits
        # for the release of tile g - 1, which comes after the poll (checked to deadlock below).
        for nst in range(3 if overlap else 2, 7):
            for n in range(0, 13):
                for _ in range(200):
                    simulate(n, nst, rng, overlap)
                    runs += 1
    try:
        simulate(4, 2, rng, True)
        raise SystemExit("ws_model: expected the two-stage overlap to deadlock")
    except AssertionError as e:
        assert "deadlock" in str(e)
    print(f"ws_model: {runs} random schedules passed")


if __name__ == "__main__":
    main()
