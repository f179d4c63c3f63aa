#!/usr/bin/env bash
# Run 112 (one device call, carry .whl and .peers): build, the prefetch tests, the rule's A/B on
# rows beyond the bench's, then the decode bench beside FlashInfer (the README's table).
set -uo pipefail
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
timeout 120 python3 -m pytest tests/test_cuda_paged_attention.py -q -p no:cacheprovider -k "prewait or short_partitions" 2>&1 \
  | tee "$OUT/test_prewait.log" | tail -3
timeout 120 python3 notes/env_ab.py --rounds 2 --json "$OUT/rule_ab.json" \
  --shapes single-w1k,mistral-w512-b8,w128-b64,single-128k \
  --configs "def:;off:SWA_OPS_PREWAIT=0;f1:SWA_OPS_MERGE_EARLY=0" 2>&1 | grep -v Warn | tee "$OUT/rule_ab.log"
source .peers/activate.sh
timeout ${BENCH_S:-470} python3 -m swa_ops.bench --decode --json "$OUT/bench_decode.json" --plot "$OUT/bench_decode.png" 2>&1 \
  | grep -v Warn | tee "$OUT/bench_decode.log" | tail -30
