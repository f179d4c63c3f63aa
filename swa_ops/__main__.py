"""`python -m swa_ops`: a batch decode step over a long context with a sliding window.

Builds a paged KV cache whose blocks are scattered in a shared pool, frees (marks -1) every block
wholly before each sequence's window, writes this step's keys/values with `reshape_and_cache`, runs
`paged_attention`, checks it against `swa_ops.reference`, and prints the time per step and the
K/V bytes the window let it skip. Runs on the GPU when one is present, else on the CPU.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import swa_ops
from swa_ops import reference


def _timed(fn, device: torch.device, iters: int) -> float:
    """Median wall time of `fn` in ms (synchronizing on the GPU)."""
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--context", type=int, default=16384, help="tokens per sequence")
    ap.add_argument("--window", type=int, default=4096)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-size", type=int, default=128)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    dtype = torch.bfloat16
    B, L, W, bs = args.batch, args.context, args.window, args.block_size
    H, KV, D = args.heads, args.kv_heads, args.head_size
    gen = torch.Generator().manual_seed(0)

    blocks_per_seq = (L + bs - 1) // bs
    num_blocks = B * blocks_per_seq
    # Scatter each sequence's blocks over the pool, as a serving engine's allocator would.
    block_tables = torch.randperm(num_blocks, generator=gen).view(B, blocks_per_seq).int()
    seq_lens = torch.full((B,), L, dtype=torch.int32)
    first_visible_block = max(0, L - W) // bs if W > 0 else 0
    block_tables[:, :first_visible_block] = -1  # freed: the kernel must never read these

    key_cache = torch.randn(num_blocks, bs, KV, D, generator=gen).to(dtype)
    value_cache = torch.randn(num_blocks, bs, KV, D, generator=gen).to(dtype)
    query = torch.randn(B, H, D, generator=gen).to(dtype)
    new_k = torch.randn(B, KV, D, generator=gen).to(dtype)
    new_v = torch.randn(B, KV, D, generator=gen).to(dtype)
    last = (L - 1) // bs
    slot_mapping = (block_tables[:, last].long() * bs + (L - 1) % bs)
    tensors = [query, key_cache, value_cache, block_tables, seq_lens, new_k, new_v, slot_mapping]
    query, key_cache, value_cache, block_tables, seq_lens, new_k, new_v, slot_mapping = (
        t.to(device) for t in tensors)
    scale = D ** -0.5

    def step():
        swa_ops.reshape_and_cache(new_k, new_v, key_cache, value_cache, slot_mapping)
        return swa_ops.paged_attention(query, key_cache, value_cache, block_tables, seq_lens,
                                       scale, sliding_window=W)

    out = step()
    ms = _timed(step, device, iters=10 if device.type == "cuda" else 3)
    expected = reference.paged_attention(query, key_cache, value_cache, block_tables, seq_lens,
                                         scale, sliding_window=W)
    err = (out.float() - expected.float()).abs().max().item()
    # Twice bf16's rounding step (2^-8 relative) at the output's magnitude.
    ok = err <= 2 * 2 ** -8 * expected.float().abs().max().item()

    kv_bytes_per_token = 2 * KV * D * key_cache.element_size()
    visible = min(L, W) if W > 0 else L
    read = B * visible * kv_bytes_per_token
    full = B * L * kv_bytes_per_token
    print(f"swa_ops demo on {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'})")
    print(f"  batch {B}, {H}/{KV} heads, head {D}, context {L}, window {W}, block {bs}, bf16")
    print(f"  decode step (reshape_and_cache + paged_attention): {ms:.3f} ms")
    print(f"  K/V bytes in the window (read): {read / 2**20:.1f} MiB of {full / 2**20:.1f} MiB cached; "
          f"not read: {(full - read) / 2**20:.1f} MiB ({100 * (full - read) / full:.0f}%)")
    print(f"  max |out - reference| = {err:.2e}: {'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
