"""Decode rows beside the bench's, to tell the access pattern from the arithmetic (notes/decode.md).

The first two extra rows read the same bytes as mistral-32k-fp8 (268 MB):
- bf16-d64: 16-bit K/V with 128-byte rows (D = 64), as fp8 at D = 128 has;
- fp8-d256: fp8 K/V with 256-byte rows (D = 256), as bf16 at D = 128 has.
Usage: python3 notes/row_probe.py [bench args, e.g. --decode --peers none --shapes ...]
"""
import sys

from swa_ops import bench

bench.SHAPES += [
    bench.Shape("bf16-d64", 32, 64, 16, 64, 32768, 4096),
    bench.Shape("fp8-d256", 32, 16, 8, 256, 32768, 2048, fp8=True),
    # fp8 at D = 128's exact access pattern in bf16: 128-byte rows at a 1 KB token stride (8 kv
    # heads), 268 MB; bf16-d64 above has a 2 KB stride (16 kv heads).
    bench.Shape("bf16-d64-kv8", 32, 32, 8, 64, 32768, 4096),
    # The token stride alone (run 46): bf16 D = 128, group 4, 536 MB like mistral-32k (8 kv heads,
    # a 2 KB stride), with 2, 4 and 16 kv heads (512 B, 1 KB, 4 KB); seed reads 256 B at 1 KB.
    bench.Shape("d128-kv2", 128, 8, 2, 128, 32768, 4096),
    bench.Shape("d128-kv4", 64, 16, 4, 128, 32768, 4096),
    bench.Shape("d128-kv16", 16, 64, 16, 128, 32768, 4096),
    # CTAs against slots (run 92): mistral-32k's 256 one-wave CTAs on 264 slots, against 248 and
    # 264 (batch 31 and 33), and seed's 4 x 64 against 4 x 66.
    bench.Shape("mistral-b31", 31, 32, 8, 128, 32768, 4096),
    bench.Shape("mistral-b33", 33, 32, 8, 128, 32768, 4096),
    bench.Shape("seed-b33", 33, 32, 4, 128, 9216, 8192),
    # Grids well under one wave (run 93): batch 20 / 24 / 28 of mistral-32k (160 / 192 / 224 CTAs,
    # no split) - does the block scheduler pack them two per SM, leaving SMs idle?
    bench.Shape("mistral-b20", 20, 32, 8, 128, 32768, 4096),
    bench.Shape("mistral-b24", 24, 32, 8, 128, 32768, 4096),
    bench.Shape("mistral-b28", 28, 32, 8, 128, 32768, 4096),
    bench.Shape("mistral-b16", 16, 32, 8, 128, 32768, 4096),
    bench.Shape("mistral-b9", 9, 32, 8, 128, 32768, 4096),
    bench.Shape("gemma3-b20", 20, 16, 8, 256, 32768, 1024),
    bench.Shape("mistral-w1k-b20", 20, 32, 8, 128, 32768, 1024),
    # Just over one wave (run 96): 320 / 384 / 448 CTAs unsplit.
    bench.Shape("mistral-b40", 40, 32, 8, 128, 32768, 4096),
    bench.Shape("mistral-b48", 48, 32, 8, 128, 32768, 4096),
    bench.Shape("mistral-b56", 56, 32, 8, 128, 32768, 4096),
    bench.Shape("gemma3-b40", 40, 16, 8, 256, 32768, 1024),
    bench.Shape("mistral-b72", 72, 32, 8, 128, 32768, 4096),
    # The refill on the other decode kernels (run 99): the fp8 TMA ring, the packed multi-token
    # mode, and the kv-head-paired 16-bit kernel (D = 64, 160 pair units).
    bench.Shape("fp8-b20", 20, 32, 8, 128, 32768, 4096, fp8=True),
    bench.Shape("spec4-b20", 20, 32, 8, 128, 32768, 4096, q_len=4),
    bench.Shape("d64-b40", 40, 32, 8, 64, 32768, 4096),
    # kv-head pairing at D = 80 (run 101, not kept): phi3's shape at head size 80.
    bench.Shape("phi3-d80", 16, 32, 32, 80, 8192, 2047),
    # The pre-wait prefetch's rule beyond the bench rows (run 112): split grids of short partitions
    # (17 x 64 tokens; 3 x 192) and an unsplit one of 9-tile partitions at D = 128.
    bench.Shape("single-w1k", 1, 32, 8, 128, 131072, 1024),
    bench.Shape("mistral-w512-b8", 8, 32, 8, 128, 32768, 512),
    bench.Shape("w128-b64", 64, 32, 8, 128, 8192, 128),
    # Seed's time over its floor, taken apart (eighth session): the same bytes and 64 (sequence,
    # kv head) pairs split in 4, with group 4 instead of 8 (the swapped kernel, half the math per
    # byte), at a 2 KB token stride (8 kv heads, 8 sequences), and both.
    bench.Shape("seed-g4", 16, 16, 4, 128, 9216, 8192),
    bench.Shape("seed-kv8", 8, 64, 8, 128, 9216, 8192),
    bench.Shape("seed-g4-kv8", 8, 32, 8, 128, 9216, 8192),
]

if __name__ == "__main__":
    bench.main(sys.argv[1:])
