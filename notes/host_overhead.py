"""Host time per eager call of a small fp8 decode (D = 128, where the fp8 TMA ring runs): with the
ring (tensor maps looked up in tma_map.h's cache) and without it (SWA_OPS_DECODE_TMA=0: no maps).
The GPU work per call is a few microseconds, so the loop is bound by the host."""
import os
import time

import torch

import swa_ops  # noqa: F401
from swa_ops import reference

S, H, KVH, D, BS, CTX, W = 4, 32, 8, 128, 16, 1024, 512
nb = S * CTX // BS
kc = reference.quantize_fp8(torch.randn(nb, BS, KVH, D, device="cuda"), torch.tensor([0.02], device="cuda"))
vc = reference.quantize_fp8(torch.randn(nb, BS, KVH, D, device="cuda"), torch.tensor([0.02], device="cuda"))
ks = torch.tensor([0.02], device="cuda")
vs = torch.tensor([0.015], device="cuda")
bt = torch.randperm(nb, device="cuda").int().view(S, -1)
lens = torch.full((S,), CTX, dtype=torch.int32, device="cuda")
q = torch.randn(S, H, D, device="cuda", dtype=torch.bfloat16)


def per_call_us(n=3000):
    for _ in range(100):
        torch.ops.swa_ops.paged_attention(q, kc, vc, bt, lens, D ** -0.5, W, 0.0, None, None, 1, ks, vs)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        torch.ops.swa_ops.paged_attention(q, kc, vc, bt, lens, D ** -0.5, W, 0.0, None, None, 1, ks, vs)
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1e6


for rnd in range(3):
    for tma in ("1", "0"):
        os.environ["SWA_OPS_DECODE_TMA"] = tma
        print(f"SWA_OPS_DECODE_TMA={tma} round {rnd}: {per_call_us():.2f} us per eager call")
