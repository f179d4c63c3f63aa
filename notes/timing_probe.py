"""How much of the bench's graph timing is the host's, not the device's.

bench.graph_time_us records event `a`, then enqueues 20 replays of a graph of 8 calls. The stream
is idle when `a` is recorded, so the device clock starts at `a` and then waits for the host to
submit the first replay: that submission latency lands inside the timed span, spread over 160
calls. This probe times each row three ways, alternating, in one process:
  now    bench.graph_time_us as it is;
  held   the same, but a spin kernel (bench.hold_stream) holds the stream while the host enqueues
         `a` and the replays, so the timed span starts with work already queued;
  chain  held, with 64 calls per graph instead of 8 (what one graph boundary per 8 calls costs).
It also prints the host's time to enqueue the 20 replays.
Usage: python3 notes/timing_probe.py [--shapes seed,single-128k] [--rounds 3] [--peers]
"""
import argparse
import statistics
import time

import torch

import env_ab  # noqa: F401  (bench on the path, the probe's shapes)

bench = env_ab.bench


def graph_times(fn, chain, replays, hold_us, samples=5):
    """Per-call µs (median of `samples`) of `replays` replays of a graph of `chain` calls; the
    stream held by bench.hold_stream for `hold_us` (0: not held) while they are enqueued. Also
    the host's µs to enqueue them (median)."""
    graph = bench.capture_chain(fn, chain)
    times, host = [], []
    for _ in range(samples):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        if hold_us:
            bench.hold_stream(hold_us)
        t0 = time.perf_counter()
        a.record()
        for _ in range(replays):
            graph.replay()
        b.record()
        host.append((time.perf_counter() - t0) * 1e6)
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) * 1000.0 / (replays * chain))
    del graph
    return statistics.median(times), statistics.median(host)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="seed,single-128k,gptoss,mistral-128k")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hold-us", type=float, default=3000.0)
    ap.add_argument("--peers", action="store_true", help="FlashInfer (trimmed table) too")
    args = ap.parse_args()
    ways = [("now", 8, 0), ("held", 8, args.hold_us), ("chain64", 64, args.hold_us)]
    for s, layers, pb, floor, _ in env_ab.bench_problems(args.shapes.split(",")):
        fns = [("swa", pb.swa)]
        if args.peers:
            fi = bench.flashinfer_runner(pb, True)
            if fi is not None:
                fns.append(("fi_trim", fi))
        for who, fn in fns:
            res = {w: [] for w, _, _ in ways}
            hosts = {w: [] for w, _, _ in ways}
            graph_times(fn, max(8, layers), 20, 0)  # start-up, unrecorded
            for r in range(args.rounds):
                order = ways if r % 2 == 0 else ways[::-1]
                for w, chain, h in order:
                    us, host = graph_times(fn, max(chain, layers), 20, h)
                    res[w].append(us)
                    hosts[w].append(host)
            line = "  ".join(f"{w} " + "/".join(f"{x:.2f}" for x in v) for w, v in res.items())
            print(f"{s.name:>13} {who:>7} floor {floor:6.1f}  {line}  host enqueue µs "
                  + "/".join(f"{statistics.median(v):.0f}" for v in hosts.values()), flush=True)
        del fns, pb


if __name__ == "__main__":
    main()
