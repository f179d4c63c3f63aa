#!/usr/bin/env bash
# Run 113 (one device call, carry .whl): build, the prefetch tests, the final rule against none on
# the rows it touches or was bounded by, then the whole GPU suite on the defaults.
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
timeout 150 python3 notes/env_ab.py --rounds 2 --json "$OUT/rule_ab.json" \
  --shapes gptoss,gptoss-sinks,mistral-32k-fp8,single-128k,w128-b64,mistral-w512-b8,single-w1k,mistral-32k \
  --configs "def:;off:SWA_OPS_PREWAIT=0" 2>&1 | grep -v Warn | tee "$OUT/rule_ab.log"
t0=$(date +%s)
timeout 300 python3 -m pytest tests -q -p no:cacheprovider 2>&1 | tee "$OUT/test_all.log" | tail -4
echo "suite: $(( $(date +%s) - t0 )) s"
