"""Does a CUDA context left idle for minutes slow the rows timed after it? (runs 163-164)

The bench's main process makes its CUDA context (the device name) and then waits minutes for the
FlashInfer JIT warm-up; its first rows then read slower than in a process that starts timing at
once. Modes, each in a fresh process:
  ctx SECONDS        make the context, sleep, time the rows (the bench's case)
  ctx-load SECONDS   the same, then 3 s of device-to-device copies before the rows
  late SECONDS       sleep with no context, then make it and time the rows
Rows: seed, single-128k, then seed again (is the effect transient?), as the bench times them.
Usage: python3 notes/idle_probe.py MODE SECONDS
"""
import argparse
import sys
import time

import torch

from swa_ops import bench


def copies(seconds: float) -> None:
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    t0 = time.time()
    while time.time() - t0 < seconds:
        for _ in range(20):
            dst.copy_(src)
        torch.cuda.synchronize()
    del src, dst


def main():
    mode, seconds = sys.argv[1], float(sys.argv[2])
    if mode in ("ctx", "ctx-load"):
        torch.zeros(1, device="cuda")
    time.sleep(seconds)
    if mode == "ctx-load":
        copies(3.0)
    by = {s.name: s for s in bench.SHAPES}
    rows = [by["seed"], by["single-128k"], by["seed"]]
    print(f"== {mode} {seconds:.0f} s", flush=True)
    bench.run_decode(argparse.Namespace(calls=30, breakdown=False), rows, [])


if __name__ == "__main__":
    main()
