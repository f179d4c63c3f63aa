#!/usr/bin/env bash
# Build-time decode variants (fp8 conversions, ring depths, warps): the fp8 / swapped tests (or
# TEST_K) in each variant build, then the SHAPES rows (default mistral-32k-fp8 beside bf16
# mistral-32k) on main and each variant, interleaved twice.
# Usage (device): FP8_VARIANTS="name:flags ..." [SUITE=1: the whole suite on main too] bash notes/cvt_ab.sh
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
repo=$PWD
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
source notes/variant_builds.sh
start_variant_builds 6
TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=8 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
  || { tail -30 "$OUT/build.log"; exit 1; }
if [[ ${SUITE:-0} == 1 ]]; then
  # The whole suite on main's build while the variants still compile.
  t0=$(date +%s)
  timeout 420 python3 -m pytest tests -q -p no:cacheprovider 2>&1 | tee "$OUT/test_all.log" | tail -6
  echo "full suite: $(( $(date +%s) - t0 )) s"
fi
wait
for spec in ${FP8_VARIANTS:-}; do
  name=${spec%%:*}
  ( cd /tmp/v_$name && python3 -c 'import swa_ops, os; print("tests of", os.path.dirname(swa_ops.__file__))' && \
    timeout 150 python3 -m pytest $repo/tests/test_cuda_paged_attention.py $repo/tests/test_cuda_multitoken.py -q -p no:cacheprovider \
    -k "${TEST_K:-fp8 or swapped or kv_pair}" 2>&1 | tail -3 ) | tee "$OUT/test_$name.log"
done
for rep in 1 2; do
  for v in main ${FP8_VARIANTS:-}; do
    v=${v%%:*}
    if [[ $v == main ]]; then dir=$repo; else dir=/tmp/v_$v; fi
    echo "== $v ($rep)"
    ( cd $dir && timeout 100 python3 -m swa_ops.bench --decode --peers none --no-warmup --shapes ${SHAPES:-mistral-32k,mistral-32k-fp8} \
      --json "$OUT/bench_${v}_$rep.json" 2>&1 | grep -E "^ *(mistral|seed|gemma|phi|gptoss|single|nowindow)" | cut -c1-75 )
  done
done
