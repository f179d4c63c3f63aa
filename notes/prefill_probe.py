"""Quick prefill timing while iterating (no peers): python notes/prefill_probe.py [names...]

CUDA events around a few calls after a warm-up; TFLOP/s counts only unmasked work
(4 * D * heads * visible keys per query row). The real comparison is python -m swa_ops.bench.
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
}


def run(name, bs=16, dtype=torch.bfloat16):
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
    print(f"{name:16s} {us:10.1f} us  {flops / us / 1e6:7.1f} TFLOP/s (unmasked)", flush=True)
    # Spot check the last 32 query tokens of sequence 0 against the reference.
    from swa_ops import reference
    t = 32
    sub_q = q[Q - t:Q]
    ref = reference.paged_attention(sub_q.float(), k.float(), v.float(), bt[:1], lens[:1],
                                    D ** -0.5, W, 0.0, sinks,
                                    torch.tensor([0, t], dtype=torch.int32, device="cuda"), t)
    out = call()[Q - t:Q]
    print(f"{'':16s} max abs err (last {t} rows of seq 0): {(out.float() - ref).abs().max().item():.2e}")


if __name__ == "__main__":
    for nm in sys.argv[1:] or list(SHAPES):
        run(nm)
