#!/usr/bin/env bash
# (run 126) Rings allocated at 2 stages (-DSWA_OPS_DECODE_STAGES=2: 3 CTAs per SM at D = 128 / 256,
# the refill then splits the one-wave rows into ~2 waves), against main's 3-stage allocation (2
# CTAs per SM), each under SWA_OPS_WAVES 0 (the rule) / 2 / 3; two processes, the same machine.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
t0=$(date +%s)
( rm -rf /tmp/v_s2 && mkdir -p /tmp/v_s2 && cp -r setup.py swa_ops csrc notes /tmp/v_s2/ && cd /tmp/v_s2 && \
  SWA_OPS_HEAD_SIZES=128,256 NVCC_APPEND_FLAGS=-DSWA_OPS_DECODE_STAGES=2 TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=8 \
  python3 setup.py build_ext --inplace > "$OUT/build_s2.log" 2>&1; echo "stages-2 build rc $? at $(( $(date +%s) - t0 )) s" ) &
pid=$!
TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=8 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
  || { tail -30 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
wait $pid
C="def:;w2:SWA_OPS_WAVES=2;w3:SWA_OPS_WAVES=3"
S=mistral-32k,gemma2-softcap,gemma3,seed,mistral-128k
echo "== main (3-stage allocation)"
timeout 200 python3 notes/env_ab.py --rounds 2 --shapes $S --configs "$C" 2>&1 | grep -v Warn | tee "$OUT/main.log"
echo "== 2-stage allocation"
( cd /tmp/v_s2 && PYTHONPATH=/tmp/v_s2:$PYTHONPATH timeout 200 python3 notes/env_ab.py --rounds 2 --shapes $S --configs "$C" 2>&1 \
  | grep -v Warn | tee "$OUT/s2.log" )
echo "== main again"
timeout 200 python3 notes/env_ab.py --rounds 1 --shapes $S --configs "def:" 2>&1 | grep -v Warn | tee "$OUT/main2.log"
