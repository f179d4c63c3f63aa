"""Side-by-side decode timings: ``python -m swa_ops.bench``.

GPU (default): each decode shape of DESIGN.md's table, timed in one run on one device, against
FlashInfer's BatchDecodeWithPagedKVCacheWrapper with the full page table and with the table
trimmed to the window, and SDPA over the gathered window pages. The floor is the window's K/V
bytes over the device-to-device copy bandwidth measured in the same run; each K/V set is rotated
over several copies ("layers") so the working set exceeds L2.

Device time per call: CUDA-graph replay of a chain of calls, kernel gaps included (swa_ops and
every peer whose call captures; a peer that does not is timed by the profiler's kernel sum,
which leaves its launch gaps out and is marked in the JSON). swa(kern) is swa_ops' profiler
kernel sum: with programmatic dependent launch it counts the merge's wait for the decode too.

CPU (``--device cpu``): a Mistral-like decode (batch 4, 32/8 heads, head 128, ctx 16384, W 4096,
bf16, block 16) with swa_ops' CPU op and with SDPA over the gathered window pages.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

import swa_ops  # noqa: F401  (registers the ops)


@dataclass
class Shape:
    name: str
    batch: int
    heads: int
    kv_heads: int
    head_size: int
    ctx: int
    window: int
    block_size: int = 16
    dtype: torch.dtype = torch.bfloat16
    fp8: bool = False  # fp8 e4m3 K/V caches (per-tensor scales)

    @property
    def visible(self) -> int:
        return min(self.ctx, self.window) if self.window > 0 else self.ctx

    def window_bytes(self) -> int:
        """K and V bytes one decode step must read: the floor's numerator."""
        elem = 1 if self.fp8 else torch.tensor([], dtype=self.dtype).element_size()
        return 2 * self.batch * self.visible * self.kv_heads * self.head_size * elem


SHAPES = [
    Shape("seed", 16, 32, 4, 128, 9216, 8192),
    Shape("mistral-32k", 32, 32, 8, 128, 32768, 4096),
    Shape("mistral-128k", 8, 32, 8, 128, 131072, 4096),
    Shape("mistral-8k", 8, 32, 8, 128, 8192, 4096),  # context independence: vs mistral-128k
    Shape("gemma3", 32, 16, 8, 256, 32768, 1024),
    Shape("gptoss", 64, 64, 8, 64, 8192, 128),
    Shape("nowindow", 32, 32, 8, 128, 4096, 0),
    Shape("single-128k", 1, 32, 8, 128, 131072, 4096),
    Shape("phi3", 16, 32, 32, 96, 8192, 2047),
    Shape("mistral-32k-fp8", 32, 32, 8, 128, 32768, 4096, fp8=True),
]

CPU_SHAPE = Shape("mistral-cpu", 4, 32, 8, 128, 16384, 4096)


# ---------------------------------------------------------------------------------------------
# Problem setup


class Problem:
    """Paged caches holding every block of the full context, `layers` copies of them, a random
    block table, and the query. All sequences have length ctx."""

    def __init__(self, s: Shape, layers: int, device: str, seed: int = 0):
        g = torch.Generator(device=device).manual_seed(seed)
        self.s = s
        bps = (s.ctx + s.block_size - 1) // s.block_size
        self.num_blocks = s.batch * bps
        shape = (self.num_blocks, s.block_size, s.kv_heads, s.head_size)
        self.k = [torch.randn(shape, generator=g, device=device).to(s.dtype) for _ in range(layers)]
        self.v = [torch.randn(shape, generator=g, device=device).to(s.dtype) for _ in range(layers)]
        self.k_scale = self.v_scale = None
        if s.fp8:  # stored as x / scale; randn fits 448 * 0.02 comfortably
            self.k_scale = torch.tensor([0.02], device=device)
            self.v_scale = torch.tensor([0.02], device=device)
            self.k = [(t.float() / 0.02).to(torch.float8_e4m3fn) for t in self.k]
            self.v = [(t.float() / 0.02).to(torch.float8_e4m3fn) for t in self.v]
        self.block_tables = torch.randperm(self.num_blocks, generator=g, device=device).int()
        self.block_tables = self.block_tables.view(s.batch, bps)
        self.seq_lens = torch.full((s.batch,), s.ctx, dtype=torch.int32, device=device)
        self.q = torch.randn(s.batch, s.heads, s.head_size, generator=g, device=device).to(s.dtype)
        self.scale = s.head_size ** -0.5
        self.layers = layers
        lo = max(0, s.ctx - s.window) if s.window > 0 else 0
        self.first_block = lo // s.block_size
        self.window_blocks = self.block_tables[:, self.first_block:]

    def swa(self, i: int) -> torch.Tensor:
        return torch.ops.swa_ops.paged_attention(
            self.q, self.k[i % self.layers], self.v[i % self.layers], self.block_tables,
            self.seq_lens, self.scale, self.s.window, 0.0, None, None, 1, self.k_scale,
            self.v_scale)

    def sdpa(self, i: int) -> torch.Tensor:
        """SDPA over the window's gathered pages (the gather is part of the cost)."""
        s = self.s
        k = self.k[i % self.layers][self.window_blocks].flatten(1, 2)  # [B, N, KVH, D]
        v = self.v[i % self.layers][self.window_blocks].flatten(1, 2)
        pos = self.first_block * s.block_size + torch.arange(k.shape[1], device=k.device)
        lo = max(0, s.ctx - s.window) if s.window > 0 else 0
        mask = ((pos >= lo) & (pos < s.ctx)).view(1, 1, 1, -1)
        out = F.scaled_dot_product_attention(
            self.q.unsqueeze(2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask,
            scale=self.scale, enable_gqa=True)
        return out.squeeze(2)

    def reference(self) -> torch.Tensor:
        """fp32 attention over the window, gathered (batched form of swa_ops.reference)."""
        s = self.s
        k = self.k[0][self.window_blocks].flatten(1, 2).float()
        v = self.v[0][self.window_blocks].flatten(1, 2).float()
        if s.fp8:
            k, v = k * self.k_scale, v * self.v_scale
        pos = self.first_block * s.block_size + torch.arange(k.shape[1], device=k.device)
        lo = max(0, s.ctx - s.window) if s.window > 0 else 0
        valid = (pos >= lo) & (pos < s.ctx)
        g = s.heads // s.kv_heads
        q = self.q.float().view(s.batch, s.kv_heads, g, s.head_size)
        logits = torch.einsum("bhgd,bnhd->bhgn", q, k) * self.scale
        logits = logits.masked_fill(~valid, float("-inf"))
        p = torch.softmax(logits, dim=-1)
        return torch.einsum("bhgn,bnhd->bhgd", p, v).reshape(s.batch, s.heads, s.head_size)


def flashinfer_runner(pb: Problem, trimmed: bool) -> Optional[Callable[[int], torch.Tensor]]:
    """FlashInfer decode over the full page table or the table trimmed to the window."""
    try:
        import flashinfer
    except ImportError:
        return None
    s = pb.s
    table = pb.window_blocks if trimmed else pb.block_tables
    pages = table.shape[1]
    kv_len = s.ctx - (pb.first_block * s.block_size if trimmed else 0)
    indptr = torch.arange(s.batch + 1, dtype=torch.int32, device="cuda") * pages
    indices = table.contiguous().flatten()
    last = torch.full((s.batch,), kv_len - (pages - 1) * s.block_size, dtype=torch.int32,
                      device="cuda")
    ws = torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device="cuda")
    wrapper = flashinfer.BatchDecodeWithPagedKVCacheWrapper(
        ws, "NHD", use_tensor_cores=(s.heads // s.kv_heads) >= 4)
    wrapper.plan(indptr, indices, last, s.heads, s.kv_heads, s.head_size, s.block_size,
                 window_left=(s.window - 1) if s.window > 0 else -1, q_data_type=s.dtype,
                 kv_data_type=torch.float8_e4m3fn if s.fp8 else s.dtype, sm_scale=pb.scale)
    scales = {"k_scale": 0.02, "v_scale": 0.02} if s.fp8 else {}
    runner = lambda i: wrapper.run(pb.q, (pb.k[i % pb.layers], pb.v[i % pb.layers]),  # noqa: E731
                                   **scales)
    runner.keepalive = (ws, wrapper, indptr, indices, last)
    return runner


# ---------------------------------------------------------------------------------------------
# Timing


def kernel_times(fn: Callable[[int], object], calls: int) -> Dict[str, float]:
    """Per-call device time of each kernel (and memcpy/memset) the call ran, from the profiler,
    summed by kernel name and divided by the number of calls."""
    for i in range(3):
        fn(i)
    torch.cuda.synchronize()
    from torch.autograd import DeviceType
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for i in range(calls):
            fn(i)
        torch.cuda.synchronize()
    per: Dict[str, float] = {}
    for e in prof.events():
        if e.device_type == DeviceType.CUDA:
            per[e.name] = per.get(e.name, 0.0) + e.time_range.elapsed_us() / calls
    return per


def short_name(kernel: str) -> str:
    for key in ("decode_mma_kernel", "merge_kernel", "cache_write_kernel"):
        if key in kernel:
            return key
    return kernel[:40]


def kernel_time_us(fn: Callable[[int], object], calls: int) -> float:
    """Mean per call of the summed durations of the device kernels (and memcpy/memset) it ran."""
    return sum(kernel_times(fn, calls).values())


def graph_time_us(fn: Callable[[int], object], layers: int, replays: int = 20) -> float:
    """Per-call time of a CUDA graph holding a chain of calls that rotates over the layers."""
    chain = max(layers, 8)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for i in range(3):
            fn(i)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(chain):
            fn(i)
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(replays):
            graph.replay()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) * 1000.0 / (replays * chain))
    del graph
    return statistics.median(times)


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth in bytes/s, counting bytes read plus bytes written."""
    n = 1 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    torch.cuda.synchronize()
    times = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(10):
            dst.copy_(src)
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / 1000.0 / 10)
    del src, dst
    return 2 * n / min(times)


# ---------------------------------------------------------------------------------------------


def run_gpu(args) -> Dict:
    dev = torch.cuda.get_device_name()
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    bw = copy_bandwidth()
    print(f"device: {dev}; copy bandwidth {bw / 1e12:.3f} TB/s (read + write); L2 {l2 >> 20} MB",
          flush=True)
    shapes = [s for s in SHAPES if not args.shapes or s.name in args.shapes.split(",")]
    rows = []
    for s in shapes:
        layers = max(1, min(8, math.ceil(4 * l2 / s.window_bytes())))
        pb = Problem(s, layers, "cuda")
        floor = s.window_bytes() / bw * 1e6
        row = {"shape": s.name, "batch": s.batch, "heads": f"{s.heads}/{s.kv_heads}",
               "head_size": s.head_size, "ctx": s.ctx, "window": s.window, "layers": layers,
               "floor_us": floor}
        ref = pb.reference()
        out = pb.swa(0)
        row["swa_err"] = (out.float() - ref).abs().max().item()
        per = kernel_times(pb.swa, args.calls)
        row["swa_kernel_us"] = sum(per.values())
        row["swa_kernels_us"] = {short_name(k): v for k, v in per.items()}
        row["swa_us"] = graph_time_us(pb.swa, layers)
        # Each peer: CUDA-graph replay where its call captures, else the profiler's kernel sum
        # (which leaves out launch gaps, so it can only flatter the peer). "_how" says which.
        peers = {}
        runners = []
        if "flashinfer" in args.peers:
            for trimmed in (False, True):
                key = "fi_trim" if trimmed else "fi_full"
                try:
                    fn = flashinfer_runner(pb, trimmed)
                except Exception as e:  # a peer failing must not hide our numbers
                    print(f"  {s.name}: FlashInfer ({key}) setup failed: {type(e).__name__}: {e}")
                    fn = None
                if fn is not None:
                    runners.append((key, fn))
        if "sdpa" in args.peers and not s.fp8:
            runners.append(("sdpa", pb.sdpa))
        for key, fn in runners:
            try:
                row[key + "_err"] = (fn(0).float() - ref).abs().max().item()
                row[key + "_kernel_us"] = kernel_time_us(fn, args.calls)
                try:
                    peers[key] = graph_time_us(fn, layers)
                    row[key + "_how"] = "graph"
                except Exception as e:
                    print(f"  {s.name}: {key} graph capture failed ({type(e).__name__}); "
                          "using its profiler kernel time")
                    torch.cuda.synchronize()
                    peers[key] = row[key + "_kernel_us"]
                    row[key + "_how"] = "kernels"
            except Exception as e:
                print(f"  {s.name}: {key} failed: {type(e).__name__}: {e}")
        del runners
        row.update({k + "_us": v for k, v in peers.items()})
        row["frac_copy_bw"] = floor / row["swa_us"]
        if peers:
            best = min(peers.values())
            row["best_peer_us"] = best
            row["speedup"] = best / row["swa_us"]
        rows.append(row)
        print_row(row, header=len(rows) == 1)
        if args.breakdown:
            print("      " + "; ".join(f"{k}: {v:.1f}" for k, v in row["swa_kernels_us"].items()))
        del pb, ref, out
        torch.cuda.empty_cache()
    return {"device": dev, "copy_bandwidth_Bps": bw, "l2_bytes": l2,
            "torch": torch.__version__, "rows": rows}


COLS = [("shape", "shape", "{:>12}"), ("floor_us", "floor", "{:>7.1f}"),
        ("swa_us", "swa_ops", "{:>8.1f}"), ("swa_kernel_us", "swa(kern)", "{:>9.1f}"),
        ("fi_full_us", "FI full", "{:>8.1f}"), ("fi_trim_us", "FI trim", "{:>8.1f}"),
        ("sdpa_us", "SDPA", "{:>8.1f}"), ("frac_copy_bw", "x copyBW", "{:>8.3f}"),
        ("speedup", "vs best", "{:>8.2f}"), ("swa_err", "swa err", "{:>8.1e}"),
        ("fi_full_err", "FI err", "{:>8.1e}")]


def print_row(row: Dict, header: bool) -> None:
    if header:
        print(" ".join(f"{name:>{len(fmt.format(0)) if 'f' in fmt or 'e' in fmt else 12}}"
                       for _, name, fmt in COLS))
    cells = []
    for key, _, fmt in COLS:
        v = row.get(key)
        width = len(fmt.format(0)) if key != "shape" else 12
        cells.append(fmt.format(v) if v is not None else "-".rjust(width))
    print(" ".join(cells), flush=True)


def plot(result: Dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = result["rows"]
    series = [("floor_us", "floor"), ("swa_us", "swa_ops"), ("fi_full_us", "FlashInfer full"),
              ("fi_trim_us", "FlashInfer trimmed"), ("sdpa_us", "SDPA gathered")]
    series = [(k, n) for k, n in series if any(k in r for r in rows)]
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(8, 1.4 * len(rows)), 4.5))
    for j, (key, name) in enumerate(series):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(rows))]
        ax.bar(xs, [r.get(key, 0) for r in rows], width, label=name)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r["shape"] for r in rows], rotation=20)
    ax.set_yscale("log")
    ax.set_ylabel("device µs per decode call (log)")
    ax.set_title(f"paged SWA decode, bf16 — {result['device']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run_cache_write(args) -> Dict:
    """reshape_and_cache against the PyTorch index_put it replaces (with the same fp8 quantization
    as swa_ops.reference.quantize_fp8), graph replay, Mistral-like caches."""
    from swa_ops.reference import quantize_fp8
    rows = []
    kvh, d, bs = 8, 128, 16
    num_blocks = 65536
    for cache_dtype in (torch.bfloat16, torch.float8_e4m3fn):
        kc = torch.zeros(num_blocks, bs, kvh, d, device="cuda").to(cache_dtype)
        vc = torch.zeros_like(kc)
        for tokens in (32, 8192):
            key = torch.randn(tokens, kvh, d, device="cuda", dtype=torch.bfloat16)
            value = torch.randn_like(key)
            slots = torch.randperm(num_blocks * bs, device="cuda")[:tokens]
            fp8 = cache_dtype == torch.float8_e4m3fn
            ks = torch.tensor([0.05], device="cuda") if fp8 else None
            vs = torch.tensor([0.05], device="cuda") if fp8 else None
            blk, off = slots // bs, slots % bs

            def ours(i):
                torch.ops.swa_ops.reshape_and_cache(key, value, kc, vc, slots, ks, vs)

            def torch_index_put(i):
                kk, vv = (quantize_fp8(key, ks), quantize_fp8(value, vs)) if fp8 else (key, value)
                kc[blk, off] = kk
                vc[blk, off] = vv

            moved = 2 * tokens * kvh * d * (key.element_size() + kc.element_size())
            row = {"cache": str(cache_dtype).replace("torch.", ""), "tokens": tokens,
                   "swa_us": graph_time_us(ours, 1), "torch_us": graph_time_us(torch_index_put, 1),
                   "bytes": moved}
            row["speedup"] = row["torch_us"] / row["swa_us"]
            rows.append(row)
            print(f"reshape_and_cache {row['cache']:>14} {tokens:>5} tokens: swa_ops "
                  f"{row['swa_us']:7.2f} us, index_put {row['torch_us']:7.2f} us "
                  f"({row['speedup']:.2f}x); {moved / row['swa_us'] / 1e6:.2f} TB/s moved",
                  flush=True)
        del kc, vc
    return {"device": torch.cuda.get_device_name(), "rows": rows}


def run_cpu(args) -> Dict:
    s = CPU_SHAPE
    pb = Problem(s, 1, "cpu")
    ref = pb.reference()

    def wall_us(fn, reps):
        fn(0)
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn(0)
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts) * 1e6

    out = pb.swa(0)
    res = {"shape": asdict(s) | {"dtype": str(s.dtype)}, "threads": torch.get_num_threads(),
           "swa_err": (out.float() - ref).abs().max().item(),
           "sdpa_err": (pb.sdpa(0).float() - ref).abs().max().item(),
           "swa_us": wall_us(pb.swa, args.reps), "sdpa_us": wall_us(pb.sdpa, args.reps)}
    print(f"CPU decode, {s.batch} x {s.heads}/{s.kv_heads} heads, head {s.head_size}, "
          f"ctx {s.ctx}, W {s.window}, bf16, block {s.block_size}, "
          f"{res['threads']} threads (median wall time of {args.reps}):")
    print(f"  swa_ops CPU op          {res['swa_us'] / 1000:9.2f} ms   max err {res['swa_err']:.1e}")
    print(f"  SDPA over window pages  {res['sdpa_us'] / 1000:9.2f} ms   max err {res['sdpa_err']:.1e}")
    print(f"  speedup {res['sdpa_us'] / res['swa_us']:.2f}x")
    return {"device": "cpu", "rows": [res]}


def main(argv: Optional[List[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache-write", action="store_true",
                    help="time reshape_and_cache against PyTorch index_put instead (GPU)")
    ap.add_argument("--device", choices=("cuda", "cpu"),
                    default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shapes", default="", help="comma list of shape names (default: all)")
    ap.add_argument("--peers", default="flashinfer,sdpa", help="comma list: flashinfer,sdpa")
    ap.add_argument("--calls", type=int, default=30, help="profiled calls per measurement")
    ap.add_argument("--reps", type=int, default=10, help="CPU mode: timed repetitions")
    ap.add_argument("--breakdown", action="store_true",
                    help="print swa_ops' per-kernel profiler times (with PDL a dependent kernel's "
                         "time includes its wait for the one before)")
    ap.add_argument("--json", default="", help="write results to this JSON file")
    ap.add_argument("--plot", default="", help="draw a bar chart to this PNG file")
    args = ap.parse_args(argv)
    if args.cache_write:
        result = run_cache_write(args)
    else:
        result = run_gpu(args) if args.device == "cuda" else run_cpu(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if args.plot and args.device == "cuda" and not args.cache_write:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
