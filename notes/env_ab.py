"""A/B of runtime switches (environment variables read per call) on the bench's decode rows.

Each shape's problem is built once and timed once unrecorded (start-up); every configuration is
then captured into its own CUDA graph and timed as the bench times swa_ops (graph_time_us),
configurations interleaved, `--rounds` times. The switches must be read per call: the value at capture time is the one replayed.
Usage: python3 notes/env_ab.py --shapes seed,gemma3 --configs "off:SWA_OPS_PREWAIT=0;pw2:SWA_OPS_PREWAIT=2"
       [--rounds 2] [--json FILE]
"""
import argparse
import contextlib
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
import row_probe  # noqa: E402  (adds the probe's shapes to bench.SHAPES)

bench = row_probe.bench


def parse_configs(text):
    configs = []
    for item in text.split(";"):
        name, _, assigns = item.partition(":")
        env = dict(a.split("=", 1) for a in assigns.split(",") if a)
        configs.append((name, env))
    return configs


@contextlib.contextmanager
def env_applied(env):
    """The variables of `env` set for the block, then restored (or unset) as they were."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def bench_problems(names):
    """Prints the device and its copy bandwidth, then yields, per bench row name, (shape, layers,
    problem, floor µs, copy bandwidth) as the bench builds and times it; frees each problem after."""
    by_name = {s.name: s for s in bench.SHAPES}
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    bw = bench.copy_bandwidth()
    print(f"{torch.cuda.get_device_name()}: copy bandwidth {bw / 1e12:.3f} TB/s", flush=True)
    for name in names:
        s = by_name[name]
        layers = max(1, min(8, math.ceil(4 * l2 / s.window_bytes())))
        pb = bench.Problem(s, layers, "cuda")
        yield s, layers, pb, s.window_bytes() / bw * 1e6, bw
        del pb  # the caller drops its own reference first
        torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", required=True)
    ap.add_argument("--configs", required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    configs = parse_configs(args.configs)
    rows = []
    bw = 0.0
    for s, layers, pb, floor, bw in bench_problems(args.shapes.split(",")):
        name = s.name
        ref = pb.reference()
        row = {"shape": name, "floor_us": floor, "us": {c: [] for c, _ in configs}}
        # One unrecorded graph first: a shape's first graph after its problem is built ran up to
        # 8 % slow in runs 113 and 117 (mistral-w512-b8 12.0 against 11.1).
        bench.graph_time_us(pb.swa, layers)
        for r in range(args.rounds):
            order = configs if r % 2 == 0 else configs[::-1]
            for cname, env in order:
                with env_applied(env):
                    err, wrong = bench.check(pb.swa(0), ref)
                    if wrong:
                        print(f"  {name} {cname}: WRONG (err {err})", flush=True)
                    row["us"][cname].append(bench.graph_time_us(pb.swa, layers))
        cells = [f"{c} {' / '.join(f'{t:.1f}' for t in ts)} ({floor / min(ts):.3f})"
                 for c, ts in row["us"].items()]
        print(f"{name:16s} " + "  ".join(cells), flush=True)
        rows.append(row)
        del pb, ref  # (before bench_problems builds the next row's)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "copy_bandwidth_Bps": bw,
                       "configs": dict(configs), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
