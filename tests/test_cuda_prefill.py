"""The CUDA prefill kernel (multi-token queries with many rows) against swa_ops.reference.

Chunked and whole-prompt prefill mixed in one batch with decode rows, q_len 0 and seq_len 0
sequences; chunks that start mid-block; windows 128/1024/4096/none; every head size; GQA 1 to 64
(and a group that is not a power of two); block sizes 8 to 256; soft-cap, sinks, fp8 caches; the
path choice forced both ways on the same inputs; CUDA-graph replay of a chunked step as contexts
grow. What no row may read is poisoned: blocks before the first row's window are -1 in the table
and NaN in the cache; slots of gathered blocks outside every window hold 3e4, so a mask slip shows.

Tolerance as in test_cuda_paged_attention.py: the kernel's max error against the fp32 reference
may be at most twice that of the same attention computed by PyTorch in the input dtype (logits and
probabilities in bf16/fp16, softmax in fp32), plus a tiny floor.
"""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from swa_ops import reference

from conftest import kernels_launched, template_bools

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

ATOL_FLOOR = 1e-5


def build(seq_lens, q_lens, num_heads, num_kv_heads, head_size, block_size, window, dtype,
          seed=0, nan_v_outside=False):
    g = torch.Generator(device="cuda").manual_seed(seed)
    used = [(L + block_size - 1) // block_size for L in seq_lens]
    max_blocks = max(used + [1]) + 1
    num_blocks = sum(used) + 2
    shape = (num_blocks, block_size, num_kv_heads, head_size)
    k_cache = torch.randn(shape, generator=g, device="cuda").to(dtype)
    v_cache = torch.randn(shape, generator=g, device="cuda").to(dtype)
    perm = torch.randperm(num_blocks, generator=g, device="cuda").int()
    bt = torch.full((len(seq_lens), max_blocks), -1, dtype=torch.int32, device="cuda")
    visible = torch.zeros(num_blocks * block_size, dtype=torch.bool, device="cuda")
    nxt = 0
    for s, (L, q) in enumerate(zip(seq_lens, q_lens)):
        blocks = perm[nxt:nxt + used[s]]
        nxt += used[s]
        if L == 0 or q == 0:
            continue
        first_key = reference.window_start(L - q, window)
        first = first_key // block_size
        bt[s, first:used[s]] = blocks[first:]
        pos = torch.arange(first_key, L, device="cuda")
        visible[blocks.long()[pos // block_size] * block_size + pos % block_size] = True
    visible = visible.view(num_blocks, block_size)
    k_cache[~visible] = 3e4
    # nan_v_outside: V slots no row sees are NaN instead (a V row read without being zeroed then
    # poisons P V even where P is 0, so a copy that skips the zero-fill shows).
    v_cache[~visible] = float("nan") if nan_v_outside else 3e4
    untouched = ~visible.any(dim=1)
    k_cache[untouched] = float("nan")
    v_cache[untouched] = float("nan")
    qsl = torch.tensor([0] + list(itertools.accumulate(q_lens)), dtype=torch.int32, device="cuda")
    query = torch.randn(int(qsl[-1]), num_heads, head_size, generator=g, device="cuda").to(dtype)
    lens = torch.tensor(seq_lens, dtype=torch.int32, device="cuda")
    return query, k_cache, v_cache, bt, lens, qsl


def lowp_attention(query, k_cache, v_cache, bt, lens, qsl, scale, window, soft_cap, sinks, dtype):
    """reference.paged_attention with logits and probabilities in `dtype` (PyTorch's own
    low-precision attention): the yardstick of the tolerance. Caches are 16-bit here."""
    num_tokens, num_heads, head_size = query.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    group = num_heads // num_kv_heads
    out = torch.zeros(num_tokens, num_heads, head_size, device="cuda")
    for s, (q0, q1, L) in enumerate(zip(qsl[:-1].tolist(), qsl[1:].tolist(), lens.tolist())):
        q_len = q1 - q0
        if q_len == 0 or L == 0:
            continue
        first = reference.window_start(L - q_len, window) // block_size
        blocks = bt[s, first:(L + block_size - 1) // block_size].long()
        k = k_cache[blocks].reshape(-1, num_kv_heads, head_size).to(dtype)
        v = v_cache[blocks].reshape(-1, num_kv_heads, head_size).to(dtype)
        key_pos = torch.arange(first * block_size, first * block_size + k.shape[0], device="cuda")
        q = query[q0:q1].to(dtype).view(q_len, num_kv_heads, group, head_size)
        logits = torch.einsum("qngd,knd->ngqk", q, k).float().reshape(num_heads, q_len, -1) * scale
        if soft_cap > 0:
            logits = soft_cap * torch.tanh(logits / soft_cap)
        row_pos = torch.arange(L - q_len, L, device="cuda")
        vis = key_pos[None, :] <= row_pos[:, None]
        if window > 0:
            vis &= key_pos[None, :] > row_pos[:, None] - window
        logits = logits.masked_fill(~vis, float("-inf"))
        m = logits.amax(-1, keepdim=True)
        if sinks is not None:
            m = torch.maximum(m, sinks.float().view(num_heads, 1, 1))
        m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
        w = torch.exp(logits - m)
        den = w.sum(-1, keepdim=True)
        if sinks is not None:
            den = den + torch.exp(sinks.float().view(num_heads, 1, 1) - m)
        p = torch.where(den > 0, w / den.clamp_min(1e-30), torch.zeros_like(w)).to(dtype)
        o = torch.einsum("ngqk,knd->qngd", p.view(num_kv_heads, group, q_len, -1), v).float()
        out[q0:q1] = o.reshape(q_len, num_heads, head_size)
    return out


def check(seq_lens, q_lens, num_heads, num_kv_heads, head_size, block_size, window,
          dtype=torch.bfloat16, seed=0, soft_cap=0.0, use_sinks=False, fp8=False,
          nan_v_outside=False, cache_view=None):
    query, kc, vc, bt, lens, qsl = build(seq_lens, q_lens, num_heads, num_kv_heads, head_size,
                                         block_size, window, dtype, seed, nan_v_outside)
    if cache_view is not None:  # the same caches as strided views (cache_view(cache) -> view)
        kc, vc = cache_view(kc), cache_view(vc)
    scale = head_size ** -0.5
    sinks = (torch.randn(num_heads, generator=torch.Generator().manual_seed(seed)).cuda()
             if use_sinks else None)
    mql = max(q_lens + [1])
    if fp8:
        ks = torch.tensor([0.02], device="cuda")
        vs = torch.tensor([0.015], device="cuda")
        kc8, vc8 = reference.quantize_fp8(kc, ks), reference.quantize_fp8(vc, vs)
        out = torch.ops.swa_ops.paged_attention(query, kc8, vc8, bt, lens, scale, window, soft_cap,
                                                sinks, qsl, mql, ks, vs)
        ref = reference.paged_attention(query.float(), kc8, vc8, bt, lens, scale, window,
                                        soft_cap, sinks, qsl, mql, ks, vs).float()
        pt = (lowp_attention(query, kc8.to(dtype), vc8.to(dtype), bt, lens, qsl,
                             scale * ks.item(), window, soft_cap, sinks, dtype)
              * vs.item()).to(dtype)
    else:
        out = torch.ops.swa_ops.paged_attention(query, kc, vc, bt, lens, scale, window, soft_cap,
                                                sinks, qsl, mql)
        ref = reference.paged_attention(query.float(), kc.float(), vc.float(), bt, lens, scale,
                                        window, soft_cap, sinks, qsl, mql).float()
        pt = lowp_attention(query, kc, vc, bt, lens, qsl, scale, window, soft_cap, sinks, dtype)
        if nan_v_outside:  # PyTorch's 0 x NaN: its yardstick ignores the poisoned slots
            vz = torch.nan_to_num(vc, nan=0.0)
            pt = lowp_attention(query, kc, vz, bt, lens, qsl, scale, window, soft_cap, sinks, dtype)
            ref = reference.paged_attention(query.float(), kc.float(), vz.float(), bt, lens,
                                            scale, window, soft_cap, sinks, qsl, mql).float()
    assert out.dtype == dtype and out.shape == query.shape
    assert not out.isnan().any(), "NaN in the output: a poisoned slot or -1 block was read"
    err = (out.float() - ref).abs().max().item()
    pt_err = (pt.float() - ref).abs().max().item()
    assert err <= 2 * pt_err + ATOL_FLOOR, f"max err {err:.3g} > 2 x PyTorch's {pt_err:.3g}"
    # Rows that see no key (seq_len 0) are exact zeros.
    for s, (q0, q1, L) in enumerate(zip(qsl[:-1].tolist(), qsl[1:].tolist(), seq_lens)):
        if L == 0 and q1 > q0:
            assert (out[q0:q1] == 0).all()
    return out


# A whole prompt, a chunk starting mid-block after cached tokens, a decode row, q_len 0, a padded
# slot (seq_len 0 with query tokens), a short chunk, and a chunk longer than the window.
MIXED_SEQS = [1000, 1204, 1, 0, 93, 2100, 700]
MIXED_QS = [1000, 300, 1, 5, 77, 1300, 0]


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16), ids=("bf16", "fp16"))
@pytest.mark.parametrize("head_size", (64, 80, 96, 128, 192, 256))
@pytest.mark.parametrize("window", (128, 1024, 4096, 0))
def test_prefill_windows_and_head_sizes(dtype, head_size, window):
    check(MIXED_SEQS, MIXED_QS, 16, 4, head_size, 16, window, dtype, seed=head_size + window)


@pytest.mark.parametrize("heads", ((8, 8), (16, 4), (64, 8), (24, 4), (16, 1), (64, 1)),
                         ids=lambda h: f"h{h[0]}-{h[1]}")
@pytest.mark.parametrize("window", (128, 1000))
def test_prefill_gqa(heads, window):
    check([900, 333, 64], [900, 130, 64], heads[0], heads[1], 128, 16, window, seed=heads[0])


@pytest.mark.parametrize("block_size", (8, 32, 64, 128, 256))
def test_prefill_block_sizes(block_size):
    # Chunks start mid-block for every block size here (cached 517 and 1029 tokens).
    check([517 + 300, 1029 + 700, 40], [300, 700, 40], 32, 8, 128, block_size, 512,
          seed=block_size)


def test_prefill_soft_cap_gemma2():
    check([1500, 4200], [1500, 600], 16, 8, 256, 16, 4096, seed=3, soft_cap=50.0)


def test_prefill_sinks_gptoss():
    check([1000, 300, 9], [1000, 300, 9], 64, 8, 64, 16, 128, seed=4, use_sinks=True)


@pytest.mark.parametrize("head_size", (64, 96, 128, 256))
def test_prefill_fp8(head_size):
    check(MIXED_SEQS, MIXED_QS, 16, 4, head_size, 16, 1024, seed=head_size, fp8=True)


def test_prefill_fp8_with_cap_and_sinks():
    check([1500, 300], [700, 300], 16, 8, 256, 32, 4096, seed=6, soft_cap=50.0, fp8=True)
    check([1000, 300], [1000, 100], 64, 8, 64, 8, 128, seed=7, use_sinks=True, fp8=True)


def test_prefill_long_chunks():
    # A 2048-token chunk on an 8k context (W 4096) and a whole 4096-token Gemma-3-like prompt.
    check([8192, 2048], [2048, 2048], 32, 8, 128, 16, 4096, seed=8)
    check([4096], [4096], 16, 8, 256, 16, 1024, seed=9)


@pytest.mark.parametrize("mode", ("always", "never"))
def test_paths_agree(monkeypatch, mode):
    """The same batches on the prefill kernel and on the decode kernel (forced), both against the
    reference: speculative steps (few rows) and a chunk (many)."""
    monkeypatch.setenv("SWA_OPS_PREFILL", mode)
    check([1, 5, 200, 1000, 1001, 1200, 4, 300, 0], [1, 5, 16, 4, 1, 16, 2, 0, 0], 32, 8, 128,
          16, 128, seed=10)
    check([1200, 500], [300, 500], 16, 4, 64, 16, 256, seed=11)


@pytest.mark.parametrize("head_size", (64, 128, 256))
def test_mma_sync_variant(monkeypatch, head_size):
    """On Hopper, head sizes 64/128/256 take a wgmma kernel by default; the portable mma.sync
    variant (what other GPUs and fp8 caches run) is checked here on the same inputs."""
    monkeypatch.setenv("SWA_OPS_WGMMA", "0")
    check(MIXED_SEQS, MIXED_QS, 16, 4, head_size, 16, 1024, seed=head_size + 1)
    check([1500, 300], [700, 300], 16, 8, head_size, 32, 4096, seed=12, soft_cap=50.0,
          use_sinks=True)


@pytest.mark.parametrize("ws", ("0", "2"), ids=("mma-wgmma", "ws-overlap"))
@pytest.mark.parametrize("head_size", (64, 128, 256))
def test_wgmma_other_variants(monkeypatch, head_size, ws):
    """On Hopper the wgmma head sizes take the warp-specialized kernel (prefill_ws.h) by default;
    SWA_OPS_PREFILL_WS=0 selects prefill_mma.h's wgmma variant and 2 the warp-specialized kernel
    with the intra-warpgroup overlap, checked here on the same inputs."""
    monkeypatch.setenv("SWA_OPS_PREFILL_WS", ws)
    check(MIXED_SEQS, MIXED_QS, 16, 4, head_size, 16, 1024, seed=head_size + 1)
    check([1500, 300], [700, 300], 16, 8, head_size, 32, 4096, seed=12, soft_cap=50.0,
          use_sinks=True)


# The persistent grid (prefill_ws_kernel<..., PERSIST = true>): the warp-specialized kernel's CTAs
# loop over (kv head, row tile) items, the producer loading the next item's K/V tiles and Q while
# the consumers finish the current one. The default at D <= 128 without the overlap (the only
# instances compiled persistent); SWA_OPS_PREFILL_PERSIST=0 forces the plain grid there, =1 is the
# default's set. "sms" sizes the grid for that many SMs (SWA_OPS_PREFILL_PERSIST_SMS): 2 gives each
# CTA hundreds of items, so items without keys, one-tile items and long ones follow each other in
# every order; "all" is the real grid. "unset": the default, with no switch in the environment.
PERSIST_MODES = (("unset", "all"), ("1", "2"), ("0", "all"))


def _persist_env(monkeypatch, persist, sms, ws="1"):
    monkeypatch.setenv("SWA_OPS_PREFILL_WS", ws)
    if persist == "unset":
        monkeypatch.delenv("SWA_OPS_PREFILL_PERSIST", raising=False)
    else:
        monkeypatch.setenv("SWA_OPS_PREFILL_PERSIST", persist)
    if sms == "all":
        monkeypatch.delenv("SWA_OPS_PREFILL_PERSIST_SMS", raising=False)
    else:
        monkeypatch.setenv("SWA_OPS_PREFILL_PERSIST_SMS", sms)


@pytest.mark.parametrize("mode", PERSIST_MODES, ids=lambda m: f"persist{m[0]}-sms{m[1]}")
@pytest.mark.parametrize("ws", ("1", "2"), ids=("ws-bf16", "ws-overlap-fp16"))
@pytest.mark.parametrize("head_size", (64, 96, 128, 192, 256))
def test_prefill_persistent(monkeypatch, head_size, ws, mode):
    """Mixed chunks (whole prompt, mid-block chunk, decode row, q_len 0, seq_len 0 with tokens),
    then soft-cap with sinks, with each setting of the switch; bf16 on the kernel without the
    overlap (persistent at D 64 / 128 unless the switch is 0), fp16 with it. The switch must leave
    alone what has no persistent form: the overlap kernel, D = 192 / 256 (plain grid) and D = 96
    (the mma.sync kernel)."""
    _persist_env(monkeypatch, *mode, ws=ws)
    dtype = torch.bfloat16 if ws == "1" else torch.float16
    check(MIXED_SEQS, MIXED_QS, 16, 4, head_size, 16, 1024, dtype, seed=head_size + 3)
    check([1500, 300, 0, 1], [700, 300, 4, 1], 16, 8, head_size, 32, 4096, dtype, seed=13,
          soft_cap=50.0, use_sinks=True)


@pytest.mark.parametrize("step", (0.25, 1.5, 20.0))
@pytest.mark.parametrize("head_size", (64, 128, 256))
def test_prefill_growing_logits(head_size, step):
    """Logits that grow along the keys, so a row's running max rises with every key tile: by less
    than the warp-specialized kernel's rescale slack (2^8; the max is kept and weights reach up to
    2^8), around it, and by far more (every tile rescales). Keys along one direction with a
    magnitude growing with their position; queries along it too, plus noise."""
    torch.manual_seed(int(step * 100) + head_size)
    H, KVH, D, bs, W = 16, 4, head_size, 16, 1024
    L, Q = 1500, 600
    nb = (L + bs - 1) // bs
    u = torch.randn(D)
    u /= u.norm()
    pos = torch.arange(nb * bs, dtype=torch.float32)
    # logit of key t for a query along u: |q| * (a + step_per_key * t) * scale; `step` is the
    # growth per 32 keys in log2 units for |q| = 2 sqrt(D).
    per_key = step / 32 / (2 * D ** 0.5 * D ** -0.5 / math.log(2))
    mag = per_key * pos
    k = (mag[:, None, None] * u + 0.1 * torch.randn(nb * bs, KVH, D)).view(nb, bs, KVH, D)
    v = torch.randn(nb, bs, KVH, D)
    bt = torch.randperm(nb).int().view(1, nb).cuda()
    q = (2 * D ** 0.5 * u + 0.5 * torch.randn(Q, H, D))
    dt = torch.bfloat16
    q, k, v = q.cuda().to(dt), k.cuda().to(dt), v.cuda().to(dt)
    lens = torch.tensor([L], dtype=torch.int32, device="cuda")
    qsl = torch.tensor([0, Q], dtype=torch.int32, device="cuda")
    args = (D ** -0.5, W, 0.0, None, qsl, Q)
    out = torch.ops.swa_ops.paged_attention(q, k, v, bt, lens, *args)
    assert_matches_reference(out, q, k, v, bt, lens, args, dt)


def assert_matches_reference(out, q, k_cache, v_cache, bt, lens, args, dtype):
    """out (16-bit caches, args = the op's scale, window, soft-cap, sinks, query_start_loc,
    max_query_len) against the fp32 reference, within twice PyTorch's own low-precision error."""
    scale, window, soft_cap, sinks, qsl = args[:5]
    ref = reference.paged_attention(q.float(), k_cache.float(), v_cache.float(), bt, lens, *args)
    pt = lowp_attention(q, k_cache, v_cache, bt, lens, qsl, scale, window, soft_cap, sinks, dtype)
    assert not out.isnan().any()
    err = (out.float() - ref.float()).abs().max().item()
    assert err <= 2 * (pt - ref.float()).abs().max().item() + ATOL_FLOOR


@pytest.mark.parametrize("mode", PERSIST_MODES, ids=lambda m: f"persist{m[0]}-sms{m[1]}")
def test_prefill_persistent_many_items(monkeypatch, mode):
    """Far more items than CTAs even on the real grid (~1,500 items for 132 SMs): Mistral's
    heads, sequences of every length class side by side, gpt-oss's W = 128 with sinks."""
    _persist_env(monkeypatch, *mode)
    check([3000, 2600, 1800, 40, 0, 900, 1, 2047], [2000, 1200, 1800, 17, 3, 900, 1, 1],
          32, 8, 128, 16, 1024, seed=14)
    check([2048, 700, 5], [2048, 700, 5], 64, 8, 64, 16, 128, seed=15, use_sinks=True)


def replay_growing_graph(Q, seed, on_step=None):
    """One capture of a chunked step over three sequences (32/8 heads, D 128, block 16, W 1024),
    replayed four times as the contexts grow, the second sequence without query tokens at step 2
    (its rows stay uncovered: zeros); each replay against the reference. on_step(q_lens) runs
    before each replay."""
    torch.manual_seed(seed)
    H, KVH, D, bs, W = 32, 8, 128, 16, 1024
    max_blocks = 300
    dt = torch.bfloat16
    k_cache = torch.randn(3 * max_blocks, bs, KVH, D, device="cuda", dtype=dt)
    v_cache = torch.randn_like(k_cache)
    bt = torch.randperm(3 * max_blocks, device="cuda").int().view(3, max_blocks)
    lens = torch.tensor([Q, 700, 1], dtype=torch.int32, device="cuda")
    qsl = torch.tensor([0, Q, 2 * Q, 2 * Q + 1], dtype=torch.int32, device="cuda")
    q = torch.randn(2 * Q + 1, H, D, device="cuda", dtype=dt)
    args = (D ** -0.5, W, 0.0, None, qsl, Q)
    torch.ops.swa_ops.paged_attention(q, k_cache, v_cache, bt, lens, *args)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = torch.ops.swa_ops.paged_attention(q, k_cache, v_cache, bt, lens, *args)
    for step in range(4):
        lens.copy_(torch.tensor([Q * (step + 1), 700 + Q * step, 1 + step], dtype=torch.int32))
        q_lens = [Q, 0 if step == 2 else Q, 1]
        if on_step is not None:
            on_step(q_lens)
        qsl.copy_(torch.tensor([0, Q, Q + q_lens[1], Q + q_lens[1] + 1], dtype=torch.int32))
        q.copy_(torch.randn(2 * Q + 1, H, D, dtype=dt))
        graph.replay()
        assert_matches_reference(out, q, k_cache, v_cache, bt, lens, args, dt)


@pytest.mark.parametrize("mode", PERSIST_MODES, ids=lambda m: f"persist{m[0]}-sms{m[1]}")
def test_prefill_persistent_cuda_graph(monkeypatch, mode):
    """Both grids under graph capture: one capture, replayed as the contexts grow (the grid comes
    from shapes and the SM count only), with a step where a sequence has no query tokens."""
    _persist_env(monkeypatch, *mode)
    replay_growing_graph(256, seed=3)


def prefill_ws_kernels_launched(fn):
    """Names of the warp-specialized prefill kernels `fn` launched (profiler), or None where it
    records none (or the device has no Hopper kernel)."""
    return kernels_launched(fn, "prefill_ws_kernel")


def persist_flag(name):
    """prefill_ws_kernel<T, D, SOFTCAP, OVERLAP, PERSIST>'s PERSIST."""
    return template_bools(name, "prefill_ws_kernel", 3)[-1]


@pytest.mark.parametrize("persist", ("unset", "0", "1"))
@pytest.mark.parametrize("ws", ("unset", "2"), ids=("ws-default", "ws-overlap"))
@pytest.mark.parametrize("head_size", (64, 128, 192, 256))
def test_prefill_persistent_default(monkeypatch, head_size, ws, persist):
    """Which grid ran, by the kernel's name: persistent at D <= 128 on the default kernel unless
    SWA_OPS_PREFILL_PERSIST=0; the plain grid at D = 192 / 256 and with the overlap, whatever the
    switch (the prefill-persist branch's runs 37/38: the persistent grid lost at D = 256)."""
    _persist_env(monkeypatch, persist, "all")
    if ws == "unset":
        monkeypatch.delenv("SWA_OPS_PREFILL_WS", raising=False)
    else:
        monkeypatch.setenv("SWA_OPS_PREFILL_WS", ws)
    names = prefill_ws_kernels_launched(
        lambda: check([1500, 300, 0, 1], [700, 300, 4, 1], 16, 8, head_size, 32, 4096,
                      seed=16))
    if names is not None:  # the profiler recorded the launch
        want = head_size <= 128 and ws == "unset" and persist != "0"
        assert all(persist_flag(n) == want for n in names), names


# TMA copies (SWA_OPS_PREFILL_TMA; prefill_ws.h's kWsTma): the warp-specialized kernel at D = 64,
# 128 and 256 copies the key tiles wholly inside an item's key union as 16-token boxes of a tensor
# map, from a 16-aligned origin; the union's edge tiles stay on cp.async, which zero-fills the
# rows outside it. "require" makes a launch that cannot take the TMA path an error, so these
# tests prove it ran; "0" runs the same inputs on cp.async alone. V slots outside every window
# are NaN here, so a row copied without its zero-fill shows.
TMA_CACHE_VIEWS = {
    "contiguous": None,
    "padded-heads": lambda c: torch.nn.functional.pad(c, (0, 8))[..., :c.shape[-1]],
    "fused-kv": lambda c: torch.stack([c, torch.zeros_like(c)], 1)[:, 0],
}


@pytest.mark.parametrize("view", TMA_CACHE_VIEWS)
@pytest.mark.parametrize("block_size", (16, 32, 64, 256))
@pytest.mark.parametrize("tma", ("require", "0"))
@pytest.mark.parametrize("head_size", (64, 128, 256))
def test_prefill_tma(monkeypatch, head_size, tma, block_size, view):
    """Mixed chunks (mid-block starts, a decode row, q_len 0, seq_len 0 with tokens, a chunk
    longer than the window), bf16 with W 1024 and fp16 without a window, soft-cap with sinks;
    contiguous caches and strided views of them (a kv-head stride past D, a fused K/V layout);
    the persistent grid at D = 64 / 128, the plain one at 256."""
    monkeypatch.delenv("SWA_OPS_PREFILL_WS", raising=False)
    monkeypatch.delenv("SWA_OPS_PREFILL_PERSIST", raising=False)
    monkeypatch.delenv("SWA_OPS_PREFILL_PERSIST_SMS", raising=False)
    monkeypatch.setenv("SWA_OPS_PREFILL_TMA", tma)
    cv = TMA_CACHE_VIEWS[view]
    D = head_size
    check(MIXED_SEQS, MIXED_QS, 32, 8, D, block_size, 1024, torch.bfloat16, seed=block_size,
          nan_v_outside=True, cache_view=cv)
    check([2500, 700, 3000], [2500, 333, 1111], 16, 4, D, block_size, 0, torch.float16,
          seed=block_size + 1, nan_v_outside=True, cache_view=cv)
    check([1500, 300, 0, 1], [700, 300, 4, 1], 16, 8, D, block_size, 4096, seed=13,
          soft_cap=50.0, use_sinks=True, nan_v_outside=True, cache_view=cv)


@pytest.mark.parametrize("head_size", (64, 128))
def test_prefill_tma_plain_grid(monkeypatch, head_size):
    """TMA on the plain grid where the persistent one is the default (SWA_OPS_PREFILL_PERSIST=0)."""
    monkeypatch.delenv("SWA_OPS_PREFILL_WS", raising=False)
    monkeypatch.setenv("SWA_OPS_PREFILL_PERSIST", "0")
    monkeypatch.setenv("SWA_OPS_PREFILL_TMA", "require")
    check(MIXED_SEQS, MIXED_QS, 32, 8, head_size, 16, 1024, torch.bfloat16, seed=7,
          nan_v_outside=True)
    check([1500, 300, 0, 1], [700, 300, 4, 1], 16, 8, head_size, 32, 4096, seed=8,
          soft_cap=50.0, use_sinks=True, nan_v_outside=True)


def test_prefill_tma_many_items_two_sms(monkeypatch):
    """Hundreds of items per CTA on a grid for 2 SMs: TMA and cp.async tiles of many items
    alternate in every ring stage."""
    monkeypatch.delenv("SWA_OPS_PREFILL_WS", raising=False)
    monkeypatch.delenv("SWA_OPS_PREFILL_PERSIST", raising=False)
    monkeypatch.setenv("SWA_OPS_PREFILL_PERSIST_SMS", "2")
    monkeypatch.setenv("SWA_OPS_PREFILL_TMA", "require")
    check([3000, 2600, 1800, 40, 0, 900, 1, 2047], [2000, 1200, 1800, 17, 3, 900, 1, 1],
          32, 8, 128, 16, 1024, seed=21, nan_v_outside=True)


class SameAddressCaches:
    """cache_view for check(): copies K, then V, into views of two fixed storages, so every call
    sees caches at the same two addresses whatever their geometry (pad: a kv-head stride of
    D + pad)."""

    def __init__(self, numel):
        self.storage = [torch.empty(numel, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
        self.calls = 0
        self.pad = 0

    def __call__(self, c):
        nb, bs, h, d = c.shape
        flat = self.storage[self.calls % 2]
        self.calls += 1
        view = flat[:nb * bs * h * (d + self.pad)].view(nb, bs, h, d + self.pad)[..., :d]
        view.copy_(c)
        return view


def test_prefill_tma_map_cache_same_address(monkeypatch):
    """The host keeps the tensor maps it encoded (tma_map.h); caches at the same address with
    another block count, block size or stride must get their own maps: a map reused across them
    would copy the wrong rows or, past the old block count, zeros."""
    for var in ("SWA_OPS_PREFILL_WS", "SWA_OPS_PREFILL_PERSIST", "SWA_OPS_PREFILL_PERSIST_SMS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SWA_OPS_PREFILL_TMA", "require")
    views = SameAddressCaches(1 << 24)
    short, long_ = ([300, 200], [300, 200]), ([3000, 2200, 900], [1000, 2200, 400])
    steps = [(short, 16, 0), (long_, 16, 0), (long_, 32, 0), (long_, 16, 8), (short, 16, 0),
             (long_, 64, 8)]
    for seqs, bs, pad in steps:
        views.pad = pad
        check(seqs[0], seqs[1], 16, 4, 128, bs, 1024, seed=bs + pad, nan_v_outside=True,
              cache_view=views)
    assert views.calls == 12


@pytest.mark.parametrize("case", ("head96", "head192", "block8", "overlap", "fp8", "mma-wgmma"))
def test_prefill_tma_require_refuses(monkeypatch, case):
    """SWA_OPS_PREFILL_TMA=require names what a launch lacks instead of silently copying by
    cp.async: another head size, blocks under 16 tokens, the overlap kernel, an fp8 cache,
    another kernel."""
    for var in ("SWA_OPS_PREFILL_WS", "SWA_OPS_PREFILL_PERSIST", "SWA_OPS_PREFILL_PERSIST_SMS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SWA_OPS_PREFILL_TMA", "require")
    head_size, block_size, fp8 = 128, 16, False
    if case in ("head96", "head192"):
        head_size = int(case[4:])
    elif case == "block8":
        block_size = 8
    elif case == "overlap":
        monkeypatch.setenv("SWA_OPS_PREFILL_WS", "2")
    elif case == "fp8":
        fp8 = True
    else:
        monkeypatch.setenv("SWA_OPS_PREFILL_WS", "0")
    with pytest.raises(RuntimeError, match="SWA_OPS_PREFILL_TMA=require"):
        check([600], [600], 16, 4, head_size, block_size, 256, fp8=fp8)


# The tail split (SWA_OPS_PREFILL_TAIL_SPLIT; prefill_ws.h's kWsTailSplit, D = 128 persistent
# grid): when the item count is not a multiple of the grid, the last round's leftover items are
# cut by key tiles into up to min(grid // left, 8) pieces on the CTAs that would idle, and the
# last piece of each merges the others. The grid is sized with SWA_OPS_PREFILL_PERSIST_SMS so the
# split must happen (tail_pieces below mirrors ws_tail_plan); "0" runs the same inputs unsplit.
def tail_pieces(items, grid):
    left = items % grid
    return min(grid // left, 8) if left else 1


def prefill_items(q_lens, group, num_kv_heads):
    return sum((q * group + 127) // 128 for q in q_lens) * num_kv_heads


TAIL_CASES = {
    # name: (seq_lens, q_lens, heads, kv_heads, window, grid SMs, soft-cap + sinks)
    "chunked-8pieces": ([6000, 5000], [2048, 1024], 32, 8, 4096, 127, False),
    "chunked-2pieces": ([6000, 5000], [2048, 1024], 32, 8, 4096, 19, False),
    "mixed": (MIXED_SEQS, MIXED_QS, 32, 8, 1024, 100, False),
    "nowindow-cap-sinks": ([40, 0, 1, 3000, 2600], [17, 3, 1, 2000, 1200], 16, 4, 0, 23, True),
}
# The leftover items are the last kv head's last row tiles, i.e. the last sequence's lightest
# (prefill_ws.h): each case ends with a sequence whose lightest row tiles still span many key
# tiles, so they are cut into pieces (a mutant build that merges nothing fails every case).


@pytest.mark.parametrize("tma", ("1", "0"))
@pytest.mark.parametrize("split", ("unset", "0"))
@pytest.mark.parametrize("case", TAIL_CASES)
def test_prefill_tail_split(monkeypatch, case, split, tma):
    """Long chunks (33 key tiles per item: 8 or 2 pieces each), mixed chunks with items of 0 and
    1 tiles among the leftovers, no window with soft-cap and sinks (a sink counted per piece
    would show); TMA on and off."""
    seqs, qs, heads, kvh, window, sms, cap_sinks = TAIL_CASES[case]
    items = prefill_items(qs, heads // kvh, kvh)
    assert tail_pieces(items, min(items, sms)) >= 2, "the case must split"
    monkeypatch.delenv("SWA_OPS_PREFILL_WS", raising=False)
    monkeypatch.delenv("SWA_OPS_PREFILL_PERSIST", raising=False)
    monkeypatch.setenv("SWA_OPS_PREFILL_PERSIST_SMS", str(sms))
    monkeypatch.setenv("SWA_OPS_PREFILL_TMA", tma)
    if split == "unset":
        monkeypatch.delenv("SWA_OPS_PREFILL_TAIL_SPLIT", raising=False)
    else:
        monkeypatch.setenv("SWA_OPS_PREFILL_TAIL_SPLIT", split)
    check(seqs, qs, heads, kvh, 128, 16, window, seed=len(case) + sms, nan_v_outside=True,
          soft_cap=50.0 if cap_sinks else 0.0, use_sinks=cap_sinks)


def test_prefill_tail_split_cuda_graph(monkeypatch):
    """One capture replayed as contexts grow and a sequence drops out: the split's counters are
    zeroed by the plan kernel on every replay, and the pieces follow the device's item count."""
    for var in ("SWA_OPS_PREFILL_WS", "SWA_OPS_PREFILL_PERSIST", "SWA_OPS_PREFILL_TAIL_SPLIT"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SWA_OPS_PREFILL_PERSIST_SMS", "20")

    def splits(q_lens):  # every replay's item count leaves a tail that splits on 20 CTAs
        assert tail_pieces(prefill_items(q_lens, 4, 8), 20) >= 2

    replay_growing_graph(640, seed=5, on_step=splits)


# The short last tile (prefill_ws.h, kShortLast: 128-key tiles, D = 128): an item whose last key
# tile holds at most 32 keys of its union runs that tile's S and P V over 32 keys only.
# short_last_keys mirrors the items' unions (ws_item_union) and yields, per item with two tiles or
# more, the keys of its last tile; the cases below hold items on both sides of the 32-key bound
# (and most of them one with exactly 33, which a bound off by one would cut).
def short_last_keys(seq_lens, q_lens, group, window, tma):
    for L, q in zip(seq_lens, q_lens):
        rows = q * group
        for row0 in range(0, rows, 128):
            first = L - q + row0 // group
            last = L - q + (min(row0 + 128, rows) - 1) // group
            hi = last + 1
            lo = max(0, first - window + 1) if window > 0 else 0
            org = lo & ~15 if tma else lo  # the TMA path starts tiles 16-aligned
            n = -(-(hi - org) // 128)
            if n >= 2:
                yield hi - org - (n - 1) * 128


SHORT_SEQS = [6000, 1000, 300, 161, 5000, 2600]
SHORT_QS = [2048, 1000, 77, 161, 33, 1500]


@pytest.mark.parametrize("persist", ("unset", "0"))
@pytest.mark.parametrize("tma", ("1", "0"))
@pytest.mark.parametrize("window", (129, 130, 1000, 4096, 0))
def test_prefill_short_last_tile(monkeypatch, window, tma, persist):
    """Items whose last tile holds 1-32 keys (trimmed) next to items with 33-64 (whole), with
    windows where each key weighs ~1/130 (a key dropped or read twice shows), TMA on and off,
    persistent and plain grids. V slots outside every window are NaN."""
    keys = list(short_last_keys(SHORT_SEQS, SHORT_QS, 4, window, tma == "1"))
    assert any(k <= 32 for k in keys), "the case must trim"
    # Whole last tiles of 33-64 keys beside them (all but W = 129 without TMA, where every
    # multi-tile item ends with at most 32; W = 130 ends 139 items with exactly 33).
    assert any(32 < k <= 64 for k in keys) or (window, tma) == (129, "0")
    for var in ("SWA_OPS_PREFILL_WS", "SWA_OPS_PREFILL_PERSIST_SMS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SWA_OPS_PREFILL_TMA", tma)
    if persist == "unset":
        monkeypatch.delenv("SWA_OPS_PREFILL_PERSIST", raising=False)
    else:
        monkeypatch.setenv("SWA_OPS_PREFILL_PERSIST", persist)
    check(SHORT_SEQS, SHORT_QS, 32, 8, 128, 16, window, seed=window % 97, nan_v_outside=True)


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16), ids=("bf16", "fp16"))
def test_prefill_short_last_tile_cap_sinks(dtype):
    """The trimmed tile's softmax with soft-cap (the logit scale not fused) and sinks."""
    keys = list(short_last_keys(SHORT_SEQS, SHORT_QS, 4, 129, True))
    assert any(k <= 32 for k in keys)
    check(SHORT_SEQS, SHORT_QS, 32, 8, 128, 16, 129, dtype=dtype, seed=3, soft_cap=30.0,
          use_sinks=True, nan_v_outside=True)
