"""The decode split rule (csrc/include/swa_ops/decode_split.h), compiled with the host's C++
compiler and checked case by case: no GPU needed.

choose_decode_split multiplies the (sequence, kv head) pairs by partitions of the window up to one
wave of resident CTAs, and refills a grid whose last wave leaves over 10 % of the slots idle
(under 1.5 waves) into 1.75-5.25 waves. The cases are the bench's rows (which must keep their
split) and the batches the refill was measured on (notes/decode.md, runs 93-97), with an H100's
264 decode slots at head size 128 (132 SMs x 2 CTAs). choose_prewait, the pre-wait L2 prefetch's
rule, is checked the same way on the rows it was measured on.
"""
import os
import pathlib
import shutil
import subprocess

import pytest

INCLUDE = pathlib.Path(__file__).resolve().parent.parent / "csrc" / "include"

DRIVER = r"""
#include <cstdio>
#include "swa_ops/decode_split.h"
int main() {
  int seqs, kvh, chunks, window, ctx, slots;
  double waves;
  while (std::scanf("%d %d %d %d %d %d %lf", &seqs, &kvh, &chunks, &window, &ctx, &slots,
                    &waves) == 7) {
    const swa_ops::DecodeSplit s =
        swa_ops::choose_decode_split(seqs, kvh, chunks, window, ctx, slots, waves);
    std::printf("%d %d\n", s.num_parts, s.part_tokens);
  }
  return 0;
}
"""


def compiled_driver(source, name):
    """Compiles a driver of the split header with the host's C++ compiler; yields run(cases): one
    input line per case, one tuple of ints per output line."""
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler on this host")
    build = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"swa_ops_{name}_{os.getpid()}"
    build.mkdir(exist_ok=True)
    src, exe = build / "driver.cpp", build / "driver"
    src.write_text(source)
    subprocess.run([cxx, "-std=c++17", "-O1", f"-I{INCLUDE}", str(src), "-o", str(exe)],
                   check=True)

    def run(cases):
        text = "".join(" ".join(str(v) for v in c) + "\n" for c in cases)
        out = subprocess.run([str(exe)], input=text, capture_output=True, text=True, check=True)
        return [tuple(int(v) for v in line.split()) for line in out.stdout.splitlines()]

    yield run
    shutil.rmtree(build, ignore_errors=True)


@pytest.fixture(scope="module")
def split():
    yield from compiled_driver(DRIVER, "split")


SLOTS = 264  # H100, head size 128: 132 SMs x 2 decode CTAs

# (name, num_seqs, num_kv_heads, head_chunks, window, max_context, slots, waves) ->
# (num_parts, part_tokens)
CASES = [
    # The bench's rows keep their split: they fill at least 97 % of one wave.
    (("seed", 16, 4, 1, 8192, 9216, SLOTS, 0), (4, 2112)),
    (("mistral-32k", 32, 8, 1, 4096, 32768, SLOTS, 0), (1, 4160)),
    (("mistral-128k", 8, 8, 1, 4096, 131072, SLOTS, 0), (4, 1088)),
    (("single-128k", 1, 8, 1, 4096, 131072, SLOTS, 0), (33, 128)),
    (("nowindow", 32, 8, 1, 0, 4096, SLOTS, 0), (1, 4096)),
    (("gptoss, kv pairs", 64, 4, 1, 128, 8192, SLOTS, 0), (1, 192)),
    # Under one wave, refilled: the splits run 93 measured best.
    (("batch 20", 20, 8, 1, 4096, 32768, SLOTS, 0), (3, 1408)),
    (("batch 24", 24, 8, 1, 4096, 32768, SLOTS, 0), (4, 1088)),
    (("batch 28", 28, 8, 1, 4096, 32768, SLOTS, 0), (3, 1408)),
    (("batch 9", 9, 8, 1, 4096, 32768, SLOTS, 0), (7, 640)),
    # 248 of 264 slots: full enough, as before.
    (("batch 31", 31, 8, 1, 4096, 32768, SLOTS, 0), (1, 4160)),
    # Just over one wave (under 1.5), refilled (runs 96-97).
    (("batch 40", 40, 8, 1, 4096, 32768, SLOTS, 0), (3, 1408)),
    (("batch 48", 48, 8, 1, 4096, 32768, SLOTS, 0), (2, 2112)),
    # 1.5 waves and more: no refill (batch 56 and 72 lost 1.6 and 2.4 % with it in run 97).
    (("batch 56", 56, 8, 1, 4096, 32768, SLOTS, 0), (1, 4160)),
    (("batch 72", 72, 8, 1, 4096, 32768, SLOTS, 0), (1, 4160)),
    (("batch 64", 64, 8, 1, 4096, 32768, SLOTS, 0), (1, 4160)),
    (("batch 33", 33, 8, 1, 4096, 32768, SLOTS, 0), (1, 4160)),
    (("batch 128", 128, 8, 1, 4096, 32768, SLOTS, 0), (1, 4160)),
    # Partitions of at least 512 tokens: W = 1024 refills only to two (gemma3's shape at batch 40)
    # or not at all (batch 20: two would be 1.21 waves); W = 128 never.
    (("gemma3 batch 40", 40, 8, 1, 1024, 32768, SLOTS, 0), (2, 576)),
    (("gemma3 batch 20", 20, 8, 1, 1024, 32768, SLOTS, 0), (1, 1088)),
    (("gptoss batch 20", 20, 8, 1, 128, 8192, SLOTS, 0), (1, 192)),
    # SWA_OPS_WAVES > 0: the plain rule, no refill.
    (("batch 20, waves 1", 20, 8, 1, 4096, 32768, SLOTS, 1.0), (1, 4160)),
    (("batch 20, waves 2", 20, 8, 1, 4096, 32768, SLOTS, 2.0), (3, 1408)),
    # Short contexts bound the span (two partitions of 512 would be 1.21 waves); no pairs; no keys.
    (("short context", 20, 8, 1, 4096, 1024, SLOTS, 0), (1, 1024)),
    (("no pairs", 0, 8, 1, 4096, 32768, SLOTS, 0), (1, 4160)),
    (("no context", 4, 8, 1, 4096, 0, SLOTS, 0), (1, 64)),
]


def test_decode_split_cases(split):
    got = split([c[1:] for c, _ in CASES])
    wrong = [(c[0], want, g) for (c, want), g in zip(CASES, got) if g != want]
    assert len(got) == len(CASES)
    assert not wrong, wrong


def test_decode_split_invariants(split):
    # Every split covers the span with whole 64-token partitions, never more of them than the span
    # has 64-token pieces, and stays within 5.25 waves when the refill chose it.
    cases = [(s, k, 1, w, ctx, slots, 0)
             for s in (1, 3, 8, 17, 20, 33, 40, 64, 200)
             for k in (1, 2, 8)
             for w, ctx in ((128, 8192), (1024, 32768), (2047, 8192), (4096, 131072), (0, 4096))
             for slots in (132, 264, 528)]
    for (s, k, _, w, ctx, slots, _), (parts, p) in zip(cases, split(cases)):
        span = min(w + 15, ctx) if w > 0 else ctx
        assert p % 64 == 0 and p > 0
        assert parts * p >= span and (parts - 1) * p < span, (s, k, w, ctx, slots, parts, p)
        assert parts <= max(1, (span + 63) // 64)
        one_wave = max(1, min(slots // max(1, s * k), (span + 63) // 64))
        if parts > one_wave:  # refilled
            assert s * k * parts <= 5.25 * slots and p >= 512, (s, k, w, ctx, slots, parts, p)


PREWAIT_DRIVER = r"""
#include <cstdio>
#include "swa_ops/decode_split.h"
int main() {
  int seqs, kvh, window, ctx, slots, fp8;
  while (std::scanf("%d %d %d %d %d %d", &seqs, &kvh, &window, &ctx, &slots, &fp8) == 6) {
    const swa_ops::DecodeSplit s =
        swa_ops::choose_decode_split(seqs, kvh, 1, window, ctx, slots, 0.0);
    const swa_ops::PrewaitChoice c = swa_ops::choose_prewait(
        s, static_cast<long>(seqs) * kvh, slots, swa_ops::max_span_tokens(window, ctx), fp8 != 0);
    std::printf("%d %d %d\n", c.tiles, c.first, c.early ? 1 : 0);
  }
  return 0;
}
"""


@pytest.fixture(scope="module")
def prewait():
    yield from compiled_driver(PREWAIT_DRIVER, "prewait")


# The pre-wait prefetch rule (decode_split.h, choose_prewait) on the rows it was measured on
# (notes/decode.md, runs 110-116): (name, num_seqs, kv units, window, max_context, slots, fp8) ->
# (tiles, first, merge early trigger).
PREWAIT_CASES = [
    # One unsplit wave of short partitions (9 tiles; kv-head pairs: 4 units per sequence): on.
    (("gptoss", 64, 4, 128, 8192, SLOTS, 0), (2, 0, 0)),
    # fp8, one unsplit wave of 260-tile partitions: on.
    (("mistral-32k-fp8", 32, 8, 4096, 32768, SLOTS, 1), (2, 0, 0)),
    # One split wave, 8 tiles per partition: the second tile, and the merge's early trigger.
    (("single-128k", 1, 8, 4096, 131072, SLOTS, 0), (2, 1, 1)),
    # 4 tiles per partition (one per warp: nothing to prefetch, measured neutral).
    (("single, W = 1024", 1, 8, 1024, 131072, SLOTS, 0), (2, 1, 1)),
    # 12 tiles per split partition lost 1 % with it (run 112): off.
    (("8 x 8 pairs, W = 512", 8, 8, 512, 32768, SLOTS, 0), (0, 0, 0)),
    # Two waves of 9-tile partitions lost 2 % (run 112): off.
    (("w128 at D = 128, 64 x 8", 64, 8, 128, 8192, SLOTS, 0), (0, 0, 0)),
    # Long 16-bit partitions, split or not, lost 0.2-1.4 % (runs 110-111): off.
    (("seed", 16, 4, 8192, 9216, SLOTS, 0), (0, 0, 0)),
    (("mistral-32k", 32, 8, 4096, 32768, SLOTS, 0), (0, 0, 0)),
    (("mistral-128k", 8, 8, 4096, 131072, SLOTS, 0), (0, 0, 0)),
    (("phi3, kv pairs", 16, 16, 2047, 8192, SLOTS, 0), (0, 0, 0)),
    # fp8 split (not measured): off.
    (("mistral-128k-fp8", 8, 8, 4096, 131072, SLOTS, 1), (0, 0, 0)),
]


def test_prewait_cases(prewait):
    got = prewait([c[1:] for c, _ in PREWAIT_CASES])
    wrong = [(c[0], want, g) for (c, want), g in zip(PREWAIT_CASES, got) if g != want]
    assert len(got) == len(PREWAIT_CASES)
    assert not wrong, wrong
