#!/usr/bin/env bash
# (run 129) The merge's batch of 9 partitions per slice (main) against 8 (-DSWA_OPS_MERGE_BATCH=8,
# a second build): single-128k's 33 partitions, seed's and mistral-128k's 4; two processes each,
# alternating; then the decode and multi-token test files on main's build.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
t0=$(date +%s)
( rm -rf /tmp/v_b8 && mkdir -p /tmp/v_b8 && cp -r setup.py swa_ops csrc notes /tmp/v_b8/ && cd /tmp/v_b8 && \
  SWA_OPS_HEAD_SIZES=128 NVCC_APPEND_FLAGS=-DSWA_OPS_MERGE_BATCH=8 TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=6 \
  python3 setup.py build_ext --inplace > "$OUT/build_b8.log" 2>&1; echo "batch-8 build rc $?" ) &
TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=10 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
  || { tail -30 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"; wait
S=single-128k,seed,mistral-128k
for i in 1 2; do
  echo "== batch 9 (main)"; timeout 100 python3 notes/env_ab.py --rounds 1 --shapes $S --configs "b9:" 2>&1 | grep -v Warn
  echo "== batch 8"; ( cd /tmp/v_b8 && PYTHONPATH=/tmp/v_b8:$PYTHONPATH timeout 100 python3 notes/env_ab.py --rounds 1 --shapes $S --configs "b8:" 2>&1 | grep -v Warn )
done
timeout 200 python3 -m pytest tests/test_cuda_paged_attention.py tests/test_cuda_multitoken.py -q -p no:cacheprovider 2>&1 | tail -2
