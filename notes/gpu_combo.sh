#!/usr/bin/env bash
# One device call: fp8 load-path diagnostics (variant builds at D=128, compile-time switches) and
# the persistent-prefill branch (.persist_branch/, untracked copy of the branch) measured in place.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
VARIANTS=${VARIANTS:-"nodense:-DSWA_OPS_FP8_DENSE=0 nomath:-DSWA_OPS_FP8_DENSE=0,-DSWA_OPS_DIAG_FP8_NOMATH nomathdense:-DSWA_OPS_DIAG_FP8_NOMATH nomathl2:-DSWA_OPS_FP8_DENSE=0,-DSWA_OPS_DIAG_FP8_NOMATH,-DSWA_OPS_DIAG_FP8_L2=256 l2:-DSWA_OPS_FP8_DENSE=0,-DSWA_OPS_DIAG_FP8_L2=256"}
for spec in $VARIANTS; do
  name=${spec%%:*}; flags=${spec#*:}; flags=${flags//,/ }
  rm -rf /tmp/v_$name && mkdir -p /tmp/v_$name && cp -r setup.py swa_ops csrc /tmp/v_$name/ && \
    ( cd /tmp/v_$name && SWA_OPS_HEAD_SIZES=128 NVCC_APPEND_FLAGS="$flags" TORCH_CUDA_ARCH_LIST=9.0a \
      MAX_JOBS=2 python3 setup.py build_ext --inplace > "$OUT/build_$name.log" 2>&1; echo "$name build rc $?" ) &
done
if [[ -d .persist_branch ]]; then
  rm -rf /tmp/v_persist && cp -r .persist_branch /tmp/v_persist && \
    ( cd /tmp/v_persist && TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=6 python3 setup.py build_ext --inplace > "$OUT/build_persist.log" 2>&1; echo "persist build rc $?" ) &
  if [[ -n ${PERSIST_VARIANT:-} ]]; then  # "name:heads:flags"
    pn=${PERSIST_VARIANT%%:*}; rest=${PERSIST_VARIANT#*:}; ph=${rest%%:*}; pf=${rest#*:}; pf=${pf//,/ }
    rm -rf /tmp/v_$pn && cp -r .persist_branch /tmp/v_$pn && \
      ( cd /tmp/v_$pn && SWA_OPS_HEAD_SIZES=$ph NVCC_APPEND_FLAGS="$pf" TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=3 python3 setup.py build_ext --inplace > "$OUT/build_$pn.log" 2>&1; echo "$pn build rc $?" ) &
  fi
fi
t0=$(date +%s)
TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=6 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
echo "main build: $(( $(date +%s) - t0 )) s"
wait
echo "all builds: $(( $(date +%s) - t0 )) s"
bench() {  # dir, name, shapes, extra env
  ( cd $1 && env PYTHONPATH=$1:/tmp/site ${4:-} timeout 90 python3 -m swa_ops.bench --decode --peers none --no-warmup \
    --shapes $3 --json "$OUT/bench_$2.json" 2>&1 | grep -E "^ *mistral|WRONG" | sed "s/^/$2 /" )
}
bench $PWD main mistral-32k
for spec in $VARIANTS; do n=${spec%%:*}; bench /tmp/v_$n $n mistral-32k-fp8; done
for spec in ${VARIANTS2:-}; do n=${spec%%:*}; bench /tmp/v_$n ${n}2 mistral-32k-fp8; done
if [[ -d /tmp/v_persist ]]; then
  ( cd /tmp/v_persist && python3 tools/ws_model.py 2>&1 | tail -3
    t0=$(date +%s)
    PYTHONPATH=/tmp/v_persist:/tmp/site timeout 200 python3 -m pytest tests/test_cuda_prefill.py -q -p no:cacheprovider --maxfail=10 2>&1 | tee "$OUT/test_prefill_persist.log" | tail -4
    echo "persist prefill tests: $(( $(date +%s) - t0 )) s" )
fi
pv=${PERSIST_VARIANT%%:*}
for r in main persist1 $pv main persist1 $pv; do
  if [[ $r == main ]]; then d=$PWD; e=""; elif [[ $r == persist1 ]]; then d=/tmp/v_persist; e="SWA_OPS_PREFILL_PERSIST=1"; else d=/tmp/v_$r; e="SWA_OPS_PREFILL_PERSIST=1"; fi
  [[ -d $d ]] || continue
  echo "== prefill $r"
  ( cd $d && env PYTHONPATH=$d:/tmp/site $e timeout 100 python3 -m swa_ops.bench --prefill --peers none \
      --json "$OUT/bench_prefill_$r.json" 2>&1 | grep -E "prefill|chunked" | grep -v "^prefill:" )
done
if [[ ${PERSIST_AB:-0} == 1 && -d /tmp/v_persist ]]; then
  cd /tmp/v_persist
  export PYTHONPATH=/tmp/v_persist:/tmp/site
  python3 -c "import swa_ops; print('persist swa_ops from', swa_ops.__file__)"
  for r in 0 1 0 1; do
    echo "== SWA_OPS_PREFILL_PERSIST=$r"
    SWA_OPS_PREFILL_PERSIST=$r timeout 100 python3 -m swa_ops.bench --prefill --peers none \
      --json "$OUT/bench_prefill_persist$r.json" 2>&1 | grep -E "prefill|chunked" | grep -v "^prefill:"
  done
fi
