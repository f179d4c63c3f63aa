#!/usr/bin/env bash
# One device call for the ring kernels' pre-wait L2 prefetch (SWA_OPS_PREWAIT, SWA_OPS_MERGE_EARLY;
# read per call): build, its tests, the A/B of the bench's decode rows (notes/env_ab.py), then the
# whole GPU suite with the switches on. Usage (device): bash notes/prewait_run.sh
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
  | tee "$OUT/test_prewait.log" | tail -4
timeout 300 python3 notes/env_ab.py --rounds 2 --json "$OUT/prewait_ab.json" \
  --shapes ${SHAPES:-seed,mistral-32k,gemma3,phi3,nowindow,single-128k,gptoss,gptoss-sinks,mistral-128k,gemma2-softcap,mistral-32k-fp8} \
  --configs "${CONFIGS:-def:;off:SWA_OPS_PREWAIT=0;tbl:SWA_OPS_PREWAIT=2,SWA_OPS_PREWAIT_TABLE=1;tble:SWA_OPS_PREWAIT=2,SWA_OPS_PREWAIT_TABLE=1,SWA_OPS_MERGE_EARLY=1;f1e:SWA_OPS_PREWAIT=2,SWA_OPS_PREWAIT_FIRST=1,SWA_OPS_MERGE_EARLY=1;allin:SWA_OPS_SMALL=1}" \
  2>&1 | grep -v Warn | tee "$OUT/prewait_ab.log"
# The whole suite, under SUITE_ENV (e.g. "SWA_OPS_PREWAIT=2 SWA_OPS_MERGE_EARLY=1"; run 110 used
# that one), or the defaults.
SUITE_ENV=${SUITE_ENV:-SWA_OPS_NONE=}
if [[ ${SUITE:-1} == 1 ]]; then
  t0=$(date +%s)
  env $SUITE_ENV timeout 300 python3 -m pytest tests -q -p no:cacheprovider 2>&1 \
    | tee "$OUT/test_all.log" | tail -6
  echo "suite: $(( $(date +%s) - t0 )) s"
fi
