#!/usr/bin/env bash
# Device calls of the eighth decode session (notes/decode.md). Usage (device): bash notes/eighth.sh
# MODE (carry .whl; .peers for bench). MODE one of
#   probe  (run 168) notes/read_peak.cu seed: the loads-only bound for seed's geometry, with wider
#          rows (paired, whole token) and stand-in tile math; then seed beside rows of its bytes
#          and split with group 4 and / or a 2 KB token stride (notes/row_probe.py), twice
set -uo pipefail
mode=${1:?mode: probe}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv,noheader
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
t0=$(date +%s)
build() {
  TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=16 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
    || { tail -50 "$OUT/build.log"; exit 1; }
  echo "build: $(( $(date +%s) - t0 )) s"
}
rows() { timeout ${2:-120} python3 notes/row_probe.py --decode --peers none --no-warmup --shapes "$1" 2>&1 \
  | grep -E "copy|^ +[a-z]" | grep -v -i warn; }
case $mode in
  probe)
    build &
    nvcc -O3 -std=c++17 -arch=sm_90a -o /tmp/read_peak notes/read_peak.cu && /tmp/read_peak seed \
      | tee "$OUT/seedpeak.log"
    wait
    for r in 1 2; do
      echo "== rows, round $r ($(( $(date +%s) - t0 )) s)"
      rows seed,seed-g4,seed-kv8,seed-g4-kv8,mistral-128k,mistral-32k | tee -a "$OUT/rows.log"
    done ;;
esac
echo "total: $(( $(date +%s) - t0 )) s"
