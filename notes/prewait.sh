#!/usr/bin/env bash
# Device calls for the decode ring kernels' pre-wait L2 prefetch (SWA_OPS_PREWAIT,
# SWA_OPS_PREWAIT_FIRST, SWA_OPS_MERGE_EARLY: read per call; notes/decode.md, runs 110-116).
# Usage (device): bash notes/prewait.sh MODE, MODE one of
#   ab       (runs 110-111) the prefetch tests, an A/B of CONFIGS on SHAPES (notes/env_ab.py), then
#            the whole GPU suite under SUITE_ENV (run 110: "SWA_OPS_PREWAIT=2 SWA_OPS_MERGE_EARLY=1")
#   final    (run 112; carry .whl and .peers) the prefetch tests, the rule's A/B on rows beyond the
#            bench's, then the decode bench beside FlashInfer (the README's table)
#   check    (runs 113, 117) the prefetch tests, the final rule against none on the rows it
#            touches or was bounded by, then the whole GPU suite on the defaults
#   sanitize (run 114) memcheck over the tests that take the prefetch by default, and over the
#            graph test with a writer before the attention (with the caching allocator: that test
#            captures a graph)
set -uo pipefail
mode=${1:?mode: ab | final | check | sanitize}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu,power.draw --format=csv | tee "$OUT/gpu.txt"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
t0=$(date +%s)
TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=16 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
  || { tail -50 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"

prewait_tests() {
  timeout 120 python3 -m pytest tests/test_cuda_paged_attention.py -q -p no:cacheprovider -k "prewait or short_partitions" 2>&1 \
    | tee "$OUT/test_prewait.log" | tail -3
}
ab() {  # ab NAME SHAPES CONFIGS
  timeout 300 python3 notes/env_ab.py --rounds 2 --json "$OUT/$1.json" --shapes "$2" --configs "$3" 2>&1 \
    | grep -v Warn | tee "$OUT/$1.log"
}
suite() {
  t0=$(date +%s)
  env ${SUITE_ENV:-SWA_OPS_NONE=} timeout 300 python3 -m pytest tests -q -p no:cacheprovider 2>&1 \
    | tee "$OUT/test_all.log" | tail -4
  echo "suite: $(( $(date +%s) - t0 )) s"
}

case $mode in
  ab)
    prewait_tests
    ab prewait_ab "${SHAPES:-seed,mistral-32k,gemma3,phi3,nowindow,single-128k,gptoss,gptoss-sinks,mistral-128k,gemma2-softcap,mistral-32k-fp8}" \
      "${CONFIGS:-def:;off:SWA_OPS_PREWAIT=0;f1e:SWA_OPS_PREWAIT=2,SWA_OPS_PREWAIT_FIRST=1,SWA_OPS_MERGE_EARLY=1;allin:SWA_OPS_SMALL=1}"
    suite ;;
  final)
    prewait_tests
    ab rule_ab single-w1k,mistral-w512-b8,w128-b64,single-128k "def:;off:SWA_OPS_PREWAIT=0;f1:SWA_OPS_MERGE_EARLY=0"
    source .peers/activate.sh
    timeout ${BENCH_S:-470} python3 -m swa_ops.bench --decode --json "$OUT/bench_decode.json" --plot "$OUT/bench_decode.png" 2>&1 \
      | grep -v Warn | tee "$OUT/bench_decode.log" | tail -30 ;;
  check)
    prewait_tests
    ab rule_ab gptoss,gptoss-sinks,mistral-32k-fp8,single-128k,w128-b64,mistral-w512-b8,single-w1k,mistral-32k "def:;off:SWA_OPS_PREWAIT=0"
    suite ;;
  sanitize)
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
    echo "memcheck prewait graph: rc ${PIPESTATUS[0]}, $(( $(date +%s) - t0 )) s" ;;
  *) echo "unknown mode $mode"; exit 2 ;;
esac
