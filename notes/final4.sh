#!/usr/bin/env bash
# Device calls closing the fourth session (notes/decode.md). Usage (device): bash notes/final4.sh
# MODE, MODE one of
#   check  (run 124) build; the whole GPU suite; compute-sanitizer memcheck over the tests whose
#          decode epilogues cover every combine path (unsplit / split, sinks, soft-cap, fp8, kv-head
#          pairs, packed multi-token rows); the timeline build and its probe of three rows
#   bench  (run 125; carry .whl and .peers) the decode bench beside FlashInfer (the README table)
set -uo pipefail
mode=${1:?mode: check | bench}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu,power.draw --format=csv,noheader
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
t0=$(date +%s)
case $mode in
  check)
    ( rm -rf /tmp/v_tl && mkdir -p /tmp/v_tl && cp -r setup.py swa_ops csrc /tmp/v_tl/ && cd /tmp/v_tl && \
      SWA_OPS_HEAD_SIZES=128,256 NVCC_APPEND_FLAGS=-DSWA_OPS_TIMELINE TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=6 \
      python3 setup.py build_ext --inplace > /tmp/build_tl.log 2>&1; echo "timeline build rc $?" ) &
    tlpid=$!
    TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=10 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
      || { tail -50 "$OUT/build.log"; exit 1; }
    echo "build: $(( $(date +%s) - t0 )) s"
    t1=$(date +%s)
    timeout 300 python3 -m pytest tests -q -p no:cacheprovider 2>&1 | tee "$OUT/suite.log" | tail -3
    echo "suite: $(( $(date +%s) - t1 )) s"
    t1=$(date +%s)
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 5 \
      python3 -m pytest tests/test_cuda_paged_attention.py tests/test_cuda_multitoken.py -q -p no:cacheprovider \
      -k "(test_sinks or test_soft_cap or fp8_cache_blocks or (kv_pair and mistral) or soft_cap_and_sinks or variable_lengths) and not graph" 2>&1 \
      | tee "$OUT/memcheck.log" | tail -3
    echo "memcheck: rc ${PIPESTATUS[0]}, $(( $(date +%s) - t1 )) s"
    wait $tlpid
    PYTHONPATH=/tmp/v_tl:$PYTHONPATH timeout 120 python3 notes/timeline.py --json "$OUT/timeline.json" \
      --shapes seed,mistral-32k,gemma3 2>&1 | grep -v Warn | tee "$OUT/timeline.log" ;;
  bench)
    TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=16 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
      || { tail -50 "$OUT/build.log"; exit 1; }
    echo "build: $(( $(date +%s) - t0 )) s"
    source .peers/activate.sh
    timeout ${BENCH_S:-540} python3 -m swa_ops.bench --decode --json "$OUT/bench_decode.json" --plot "$OUT/bench_decode.png" 2>&1 \
      | grep -v Warn | tee "$OUT/bench_decode.log" | tail -32 ;;
  *) echo "unknown mode $mode"; exit 2 ;;
esac
