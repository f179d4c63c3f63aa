#!/usr/bin/env bash
# Run 114 (one device call, carry .whl): build, then compute-sanitizer memcheck over the decode
# tests whose grids take the pre-wait prefetch by default (single-128k-like and gpt-oss-like
# short partitions) and over the graph test with a writer before the attention (default rule and
# forced prefetch with the early trigger; with the caching allocator: that test captures a graph).
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
t0=$(date +%s)
TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=16 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
  || { tail -50 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 5 \
  python3 -m pytest tests/test_cuda_paged_attention.py -q -p no:cacheprovider -k "short_partitions and not graph" 2>&1 \
  | tee "$OUT/memcheck_short.log" | tail -4
echo "memcheck short partitions: rc ${PIPESTATUS[0]}, $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 5 \
  python3 -m pytest tests/test_cuda_paged_attention.py -q -p no:cacheprovider \
  -k "prewait and (default or ring3) and (1-32-128-4096 or 64-32-64-128 or 8-64-64-128)" 2>&1 \
  | tee "$OUT/memcheck_prewait.log" | tail -4
echo "memcheck prewait graph: rc ${PIPESTATUS[0]}, $(( $(date +%s) - t0 )) s"
