"""Our decode kernels alone under compute-sanitizer racecheck (run 127): the tests' references use
cuBLAS, whose own kernels racecheck flags, so this calls only swa_ops ops. Every combine path:
unsplit and split, sinks, soft-cap, fp8 caches (TMA ring and cp.async), kv-head pairs (D = 64,
96), groups 1-8, D = 80 / 192 / 256, packed multi-token rows, the per-token multi-token path.
Usage: compute-sanitizer --tool racecheck python3 notes/racecheck_probe.py
"""
import itertools
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
# The tests' case builder (random permuted tables, -1 before each window, NaN where no row may
# read): torch ops only, no matmul.
from test_cuda_paged_attention import make_case  # noqa: E402

from swa_ops import reference  # noqa: E402


def run():
    n = 0
    for (seq_lens, h, kvh, d, bs, w, cap, sinks) in [
            ([5000, 4097, 300, 17, 1, 0], 32, 8, 128, 16, 4096, 0.0, True),   # split
            ([8192] * 64, 64, 8, 64, 16, 128, 0.0, True),                    # unsplit, group 8
            ([8192] * 32, 16, 8, 256, 16, 1024, 50.0, False),               # D 256, soft-cap
            ([3000, 129, 0], 8, 8, 96, 8, 2047, 0.0, False),                # paired D 96
            ([3000, 2000], 16, 4, 64, 32, 0, 30.0, True),                   # paired D 64
            ([20000, 5], 3, 1, 80, 16, 1000, 0.0, True),                    # group 3, D 80
            ([7000], 8, 1, 192, 64, 4096, 0.0, False),                      # D 192
            ([131072], 32, 8, 128, 16, 4096, 0.0, False)]:                 # single-128k
        q, kc, vc, bt, lens = make_case(seq_lens, h, kvh, d, bs, w, torch.bfloat16, seed=n)
        g = torch.Generator(device="cuda").manual_seed(n)
        sk = torch.randn(h, generator=g, device="cuda") if sinks else None
        torch.ops.swa_ops.paged_attention(q, kc, vc, bt, lens, d ** -0.5, w, cap, sk)
        n += 1
        if d in (64, 128):  # fp8 caches: the TMA ring (D = 128) and the cp.async rings
            ks = torch.tensor([0.02], device="cuda")
            kc8, vc8 = reference.quantize_fp8(kc, ks), reference.quantize_fp8(vc, ks)
            torch.ops.swa_ops.paged_attention(q, kc8, vc8, bt, lens, d ** -0.5, w, cap, sk, None,
                                              1, ks, ks)
            n += 1
        # multi-token: packed (4 tokens x group <= 64 rows) and per-token (16 tokens). Their
        # earlier rows see keys before the last row's window, whose table entries make_case left
        # -1: block 0 there (only the kernels' shared memory is checked here, not the values).
        bt = bt.clamp(min=0)
        for ql in (4, 16):
            qls = [min(ql, L) for L in seq_lens]
            qsl = torch.tensor([0] + list(itertools.accumulate(qls)), dtype=torch.int32,
                               device="cuda")
            qm = torch.randn(int(qsl[-1]), h, d, generator=g, device="cuda").to(torch.bfloat16)
            torch.ops.swa_ops.paged_attention(qm, kc, vc, bt, lens, d ** -0.5, w, cap, sk, qsl,
                                              max(qls + [1]))
            n += 1
    torch.cuda.synchronize()
    print(f"{n} calls done")


if __name__ == "__main__":
    run()
