"""Quick prefill timing while iterating (no peers): python notes/prefill_probe.py [names...]

CUDA events around a few calls after a warm-up; TFLOP/s counts only unmasked work
(4 * D * heads * visible keys per query row). The real comparison is python -m swa_ops.bench.

--ab VAR=a,b[,c...] [--rounds N]: per shape, time the calls once per value of the environment
variable VAR (the launcher reads its switches per call), interleaved, N rounds (default 2), on
the same tensors; e.g. --ab SWA_OPS_PREFILL_PERSIST=0,1.
"""
import os
import sys

import torch

import swa_ops  # noqa: F401
from swa_ops.bench import visible_keys  # the bench's count of unmasked (row, key) pairs

SHAPES = {  # name: (batch, seq_len, q_len, heads, kv_heads, D, W, sinks)
    "mistral-prefill": (8, 8192, 8192, 32, 8, 128, 4096, False),
    "chunked": (4, 32768, 2048, 32, 8, 128, 4096, False),
    "gemma3-prefill": (4, 8192, 8192, 16, 8, 256, 1024, False),
    "gptoss-prefill": (4, 8192, 8192, 64, 8, 64, 128, True),
    # chunked's grid tail (notes/prefill.md): 512 items per sequence; 8 sequences = 31.03 items
    # per CTA on 132 SMs, 33 = exactly 128.
    "chunked-b8": (8, 32768, 2048, 32, 8, 128, 4096, False),
    "chunked-b33": (33, 32768, 2048, 32, 8, 128, 4096, False),
}


def run(name, bs=16, dtype=torch.bfloat16, ab=None, rounds=1):
    B, L, Q, H, KVH, D, W, use_sinks = SHAPES[name]
    nb = (L + bs - 1) // bs
    k = torch.randn(B * nb, bs, KVH, D, device="cuda", dtype=dtype)
    v = torch.randn_like(k)
    bt = torch.randperm(B * nb, device="cuda").int().view(B, nb)
    lens = torch.full((B,), L, dtype=torch.int32, device="cuda")
    qsl = torch.arange(0, B * Q + 1, Q, dtype=torch.int32, device="cuda")
    q = torch.randn(B * Q, H, D, device="cuda", dtype=dtype)
    sinks = torch.randn(H, device="cuda") if use_sinks else None
    call = lambda: torch.ops.swa_ops.paged_attention(q, k, v, bt, lens, D ** -0.5, W, 0.0, sinks,
                                                     qsl, Q)
    var, values = ab if ab else (None, [None])
    for r in range(rounds):
        for val in values:
            if var is not None:
                os.environ[var] = val
            call()
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            n = 5
            a.record()
            for _ in range(n):
                call()
            b.record()
            torch.cuda.synchronize()
            us = a.elapsed_time(b) * 1e3 / n
            flops = 4 * D * H * B * visible_keys(L, Q, W)
            tag = f"  [{var}={val}, round {r + 1}]" if var is not None else ""
            print(f"{name:16s} {us:10.1f} us  {flops / us / 1e6:7.1f} TFLOP/s (unmasked){tag}",
                  flush=True)
            if r == 0:
                # Spot check the last 32 query tokens of sequence 0 against the reference.
                from swa_ops import reference
                t = 32
                sub_q = q[Q - t:Q]
                ref = reference.paged_attention(
                    sub_q.float(), k.float(), v.float(), bt[:1], lens[:1], D ** -0.5, W, 0.0,
                    sinks, torch.tensor([0, t], dtype=torch.int32, device="cuda"), t)
                out = call()[Q - t:Q]
                err = (out.float() - ref).abs().max().item()
                print(f"{'':16s} max abs err (last {t} rows of seq 0): {err:.2e}")


if __name__ == "__main__":
    args = sys.argv[1:]
    ab, rounds = None, 1
    if "--ab" in args:
        i = args.index("--ab")
        var, vals = args[i + 1].split("=", 1)
        ab = (var, vals.split(","))
        rounds = 2
        del args[i:i + 2]
    if "--rounds" in args:
        i = args.index("--rounds")
        rounds = int(args[i + 1])
        del args[i:i + 2]
    print(f"swa_ops from {os.path.dirname(swa_ops.__file__)}", flush=True)
    for nm in args or [n for n in SHAPES if "-b" not in n]:
        run(nm, ab=ab, rounds=rounds)
