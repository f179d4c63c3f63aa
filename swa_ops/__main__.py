"""`python -m swa_ops`: greedy generation with PagedSWAAttention in a small random-weight model.

Builds a decoder (RMSNorm, RoPE, GQA attention through `PagedSWAAttention` with a sliding window,
SwiGLU MLP; random weights), generates for a batch of prompts of different lengths far past the
window, and prints tokens per second, the KV-cache memory the recycling pool held against what a
cache without recycling would have needed, the K/V bytes the window let each decode step skip, and
a check of every layer's attention in the last step against `swa_ops.reference`. Runs on the GPU
when one is present, else on the CPU.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn

import swa_ops
from swa_ops import reference
from swa_ops.kv_cache import KVCacheManager, cdiv, max_blocks_held


def _rope(x: torch.Tensor, pos: torch.Tensor, theta: float = 10000.0) -> torch.Tensor:
    """Rotary embedding of ``x [n, heads, D]`` at positions ``pos [n]`` (half-split layout)."""
    d = x.shape[-1] // 2
    inv = theta ** (-torch.arange(d, device=x.device, dtype=torch.float32) / d)
    ang = pos.float()[:, None] * inv[None, :]
    cos, sin = ang.cos()[:, None, :], ang.sin()[:, None, :]
    x1, x2 = x[..., :d].float(), x[..., d:].float()
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).to(x.dtype)


class Block(nn.Module):
    def __init__(self, hidden, heads, kv_heads, head_size, manager, device, dtype):
        super().__init__()
        self.heads, self.kv_heads, self.head_size = heads, kv_heads, head_size
        self.norm1, self.norm2 = nn.RMSNorm(hidden), nn.RMSNorm(hidden)
        self.qkv = nn.Linear(hidden, (heads + 2 * kv_heads) * head_size, bias=False)
        self.o = nn.Linear(heads * head_size, hidden, bias=False)
        self.up = nn.Linear(hidden, 2 * 2 * hidden, bias=False)
        self.down = nn.Linear(2 * hidden, hidden, bias=False)
        self.attn = swa_ops.PagedSWAAttention(
            heads, kv_heads, head_size, sliding_window=manager.sliding_window,
            cache_manager=manager, device=device, dtype=dtype)
        self.check_error = None  # set by a checked step: max |attention - reference|

    def forward(self, x, pos, check=False):
        n = x.shape[0]
        q, k, v = self.qkv(self.norm1(x)).split(
            [self.heads * self.head_size, self.kv_heads * self.head_size,
             self.kv_heads * self.head_size], dim=-1)
        q = _rope(q.reshape(n, self.heads, self.head_size), pos)
        k = _rope(k.reshape(n, self.kv_heads, self.head_size), pos)
        v = v.reshape(n, self.kv_heads, self.head_size)
        a = self.attn(q, k, v)
        if check:
            self.check_error = _reference_error(self.attn, q, a)
        x = x + self.o(a.flatten(1))
        gate, up = self.up(self.norm2(x)).chunk(2, dim=-1)
        return x + self.down(nn.functional.silu(gate) * up)


def _reference_error(attn: swa_ops.PagedSWAAttention, q: torch.Tensor, out: torch.Tensor):
    """Max |out - reference| of the paged_attention call the module just made, and a bound: twice
    the output dtype's rounding step at the output's magnitude (fp32: a small multiple of eps)."""
    m = attn.cache_manager
    decode = m.step_max_query_len == 1
    rows = q.shape[0] if decode else m.max_num_seqs
    expected = reference.paged_attention(
        q, attn.key_cache, attn.value_cache, m.block_tables[:rows], m.seq_lens[:rows], attn.scale,
        attn.sliding_window, attn.logits_soft_cap, attn.sinks,
        None if decode else m.query_start_loc, m.step_max_query_len, attn.k_scale, attn.v_scale)
    err = (out.float() - expected.float()).abs().max().item()
    eps = 2 ** -8 if out.dtype == torch.bfloat16 else (2 ** -11 if out.dtype == torch.float16
                                                        else 2 ** -20)
    return err, 2 * eps * max(expected.float().abs().max().item(), 1.0)


class DemoModel(nn.Module):
    def __init__(self, vocab, hidden, layers, heads, kv_heads, head_size, manager, device, dtype):
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.blocks = nn.ModuleList(Block(hidden, heads, kv_heads, head_size, manager, device,
                                          dtype) for _ in range(layers))
        self.norm = nn.RMSNorm(hidden)
        self.head = nn.Linear(hidden, vocab, bias=False)
        self.manager = manager

    @torch.no_grad()
    def step(self, tokens: dict, check: bool = False) -> torch.Tensor:
        """One step over each sequence's new tokens; returns the greedy next token per sequence."""
        sids = list(tokens)
        plan = self.manager.plan(sids, [len(tokens[s]) for s in sids])
        dev = self.embed.weight.device
        ids = torch.tensor([t for s in sids for t in tokens[s]], device=dev)
        pos = self.manager.positions[:plan.num_tokens]
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x, pos, check)
        last = torch.tensor(plan.query_start_loc[1:], device=dev) - 1
        return self.head(self.norm(x[last])).argmax(-1)


def _multi_token_supported(device: torch.device, dtype: torch.dtype, head_size: int) -> bool:
    """Whether this build's kernel on ``device`` takes multi-token queries (the CPU kernel does;
    a GPU build may offer decode only), probed with a one-block call."""
    try:
        q = torch.zeros(2, 1, head_size, device=device, dtype=dtype)
        cache = torch.zeros(1, 16, 1, head_size, device=device, dtype=dtype)
        swa_ops.paged_attention(
            q, cache, cache, torch.zeros(1, 1, dtype=torch.int32, device=device),
            torch.full((1,), 2, dtype=torch.int32, device=device), 1.0,
            query_start_loc=torch.tensor([0, 2], dtype=torch.int32, device=device),
            max_query_len=2)
        return True
    except RuntimeError:
        return False


def main(argv=None) -> int:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--batch", type=int, default=8 if cuda else 4)
    ap.add_argument("--prompt", type=int, default=8192 if cuda else 2048,
                    help="longest prompt; the others are spread down to a quarter of it")
    ap.add_argument("--new-tokens", type=int, default=256 if cuda else 128)
    ap.add_argument("--window", type=int, default=1024 if cuda else 256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=16 if cuda else 8)
    ap.add_argument("--kv-heads", type=int, default=4 if cuda else 2)
    ap.add_argument("--head-size", type=int, default=128 if cuda else 64)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--prefill-chunk", type=int, default=512 if cuda else 64,
                    help="most prompt tokens per sequence and step")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    B, W, bs, D = args.batch, args.window, args.block_size, args.head_size
    H, KV, layers = args.heads, args.kv_heads, args.layers
    g = torch.Generator().manual_seed(0)
    prompt_lens = [max(1, args.prompt - i * (3 * args.prompt // 4) // max(B - 1, 1))
                   for i in range(B)]
    prompts = {i: torch.randint(0, 1024, (n,), generator=g).tolist()
               for i, n in enumerate(prompt_lens)}
    chunk = args.prefill_chunk if _multi_token_supported(device, dtype, D) else 1
    max_seq_len = max(prompt_lens) + args.new_tokens

    # The pool is the bound times the batch: no step can run out, however long the sequences.
    manager = KVCacheManager(
        block_size=bs, max_num_seqs=B, max_seq_len=max_seq_len, sliding_window=W,
        max_query_len=chunk, num_blocks=B * max_blocks_held(W, chunk, bs, max_seq_len),
        device=device)
    torch.manual_seed(0)
    model = DemoModel(1024, H * D, layers, H, KV, D, manager, device, dtype).to(device, dtype)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    # Prefill in chunks of `chunk` tokens per sequence and step (1: decode steps only).
    for s in prompts:
        manager.add_sequence(s)
    pending = {s: list(p) for s, p in prompts.items()}
    next_tok = {}
    sync()
    t0 = time.perf_counter()
    while pending:
        feed = {s: p[:chunk] for s, p in pending.items()}
        nxt = model.step(feed)
        for i, s in enumerate(feed):
            del pending[s][:chunk]
            if not pending[s]:
                next_tok[s] = int(nxt[i])
        pending = {s: p for s, p in pending.items() if p}
    sync()
    t_prefill = time.perf_counter() - t0

    # Decode: every sequence one token per step; the last step is checked against the reference.
    generated = {s: [t] for s, t in next_tok.items()}
    sync()
    t0 = time.perf_counter()
    for i in range(args.new_tokens - 1):
        nxt = model.step({s: [generated[s][-1]] for s in prompts})
        for j, s in enumerate(prompts):
            generated[s].append(int(nxt[j]))
    sync()
    t_decode = time.perf_counter() - t0
    model.step({s: [generated[s][-1]] for s in prompts}, check=True)
    errors = [b.check_error for b in model.blocks]
    ok = all(err <= tol for err, tol in errors)

    # Memory: the pool (allocated once) and its peak use, against a cache that keeps every block.
    block_bytes = 2 * bs * KV * D * model.blocks[0].attn.key_cache.element_size() * layers
    final_lens = [manager.seq_len(s) for s in prompts]
    no_recycle = sum(cdiv(L, bs) for L in final_lens) * block_bytes
    pool = manager.num_blocks * block_bytes
    peak = manager.peak_blocks_in_use * block_bytes
    kv_token = 2 * KV * D * model.blocks[0].attn.key_cache.element_size() * layers
    read = sum(min(L, W) if W > 0 else L for L in final_lens) * kv_token
    full = sum(final_lens) * kv_token
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    mib = 2 ** 20
    print(f"swa_ops generation demo on {device} ({name})")
    print(f"  {layers} layers, {H}/{KV} heads, head {D}, window {W}, block {bs}, "
          f"{str(dtype).replace('torch.', '')}, batch {B}, prompts {min(prompt_lens)}.."
          f"{max(prompt_lens)} tokens, {args.new_tokens} new tokens each"
          f"{'' if chunk > 1 else ' (prompts fed one token per step: decode kernels only)'}")
    print(f"  prefill: {sum(prompt_lens) / t_prefill:,.0f} tokens/s; decode: "
          f"{B * (args.new_tokens - 1) / t_decode:,.0f} tokens/s "
          f"({t_decode / (args.new_tokens - 1) * 1e3:.2f} ms per step of {B} sequences)")
    print(f"  KV cache: pool {pool / mib:.1f} MiB (peak in use {peak / mib:.1f} MiB) vs "
          f"{no_recycle / mib:.1f} MiB without recycling ({no_recycle / pool:.1f}x)")
    print(f"  K/V bytes in the window (read) per decode step: {read / mib:.1f} MiB of "
          f"{full / mib:.1f} MiB cached without a window; not read: {(full - read) / mib:.1f} MiB "
          f"({100 * (full - read) / full:.0f}%)")
    worst = max(errors, key=lambda e: e[0] / e[1])
    print(f"  last step, every layer's attention vs reference: max |out - reference| = "
          f"{worst[0]:.2e} (bound {worst[1]:.1e}): {'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
