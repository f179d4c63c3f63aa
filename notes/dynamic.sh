#!/usr/bin/env bash
# Device calls of runs 119-123 (notes/decode.md, fourth session). The switches they A/B
# (SWA_OPS_DYNAMIC, SWA_OPS_DYN_STATIC / _CHUNK / _STRIDE, SWA_OPS_COMBINE_OLD) exist only on
# branch decode-dynamic, where the dynamic split lives (slower, not merged); main keeps the new
# combine that `combine` measured. Usage (device, on that branch): bash notes/dynamic.sh MODE,
# MODE one of
#   first  (run 119) the in-place build and, beside it, the timeline build (-DSWA_OPS_TIMELINE,
#          heads 96 / 128 / 256); the dynamic split's tests; its A/B on split rows and, with
#          SWA_OPS_WAVES=2, on one-wave rows; the timeline of a few rows with it; the decode test
#          file with it forced on.
set -uo pipefail
mode=${1:?mode: first | variants | local | combine}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu,power.draw --format=csv,noheader
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
t0=$(date +%s)
( rm -rf /tmp/v_tl && mkdir -p /tmp/v_tl && cp -r setup.py swa_ops csrc /tmp/v_tl/ && cd /tmp/v_tl && \
  SWA_OPS_HEAD_SIZES=96,128,256 NVCC_APPEND_FLAGS=-DSWA_OPS_TIMELINE TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=6 \
  python3 setup.py build_ext --inplace > /tmp/build_tl.log 2>&1; echo "timeline build rc $? at $(( $(date +%s) - t0 )) s" ) &
tlpid=$!
TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=10 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
  || { tail -50 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"

ab() {  # ab NAME SHAPES CONFIGS
  timeout 300 python3 notes/env_ab.py --rounds 2 --json "$OUT/$1.json" --shapes "$2" --configs "$3" 2>&1 \
    | grep -v Warn | tee -a "$OUT/ab.log"
}
case $mode in
  first)
    timeout 150 python3 -m pytest tests/test_cuda_paged_attention.py -q -p no:cacheprovider -k dynamic 2>&1 \
      | tee "$OUT/tests.log" | tail -4
    ab ab_split seed,mistral-128k,mistral-8k,single-128k,mistral-b20,mistral-b40,gemma3-b40 \
      "off:;dyn:SWA_OPS_DYNAMIC=1;dyn0:SWA_OPS_DYNAMIC=1,SWA_OPS_DYN_STATIC=0;dyn8:SWA_OPS_DYNAMIC=1,SWA_OPS_DYN_STATIC=8"
    ab ab_wave mistral-32k,gemma3,phi3,gemma2-softcap \
      "off:;w2:SWA_OPS_WAVES=2;w2d0:SWA_OPS_WAVES=2,SWA_OPS_DYNAMIC=1,SWA_OPS_DYN_STATIC=0;w2d2:SWA_OPS_WAVES=2,SWA_OPS_DYNAMIC=1"
    wait $tlpid; tail -3 /tmp/build_tl.log
    PYTHONPATH=/tmp/v_tl:${PYTHONPATH:-} timeout 150 python3 notes/timeline.py --json "$OUT/timeline.json" \
      --shapes seed,mistral-128k,gemma3 \
      --configs "off:;dyn:SWA_OPS_DYNAMIC=1;w2d0:SWA_OPS_WAVES=2,SWA_OPS_DYNAMIC=1,SWA_OPS_DYN_STATIC=0" 2>&1 \
      | grep -v Warn | tee "$OUT/timeline.log"
    SWA_OPS_DYNAMIC=1 timeout ${FORCED_S:-150} python3 -m pytest tests/test_cuda_paged_attention.py \
      -q -p no:cacheprovider -x 2>&1 | tee "$OUT/forced.log" | tail -3 ;;
  variants)
    # (run 120) why the dynamic split streams slower: counter spacing, tiles per claim, static share
    timeout 150 python3 -m pytest tests/test_cuda_paged_attention.py -q -p no:cacheprovider -k dynamic 2>&1 \
      | tee "$OUT/tests.log" | tail -2
    D="SWA_OPS_DYNAMIC=1"
    ab ab_var seed,mistral-128k,single-128k \
      "off:;d:$D;s32:$D,SWA_OPS_DYN_STRIDE=32;c2:$D,SWA_OPS_DYN_CHUNK=2,SWA_OPS_DYN_STRIDE=32;c4:$D,SWA_OPS_DYN_CHUNK=4,SWA_OPS_DYN_STRIDE=32;c8:$D,SWA_OPS_DYN_CHUNK=8,SWA_OPS_DYN_STRIDE=32;k16c4:$D,SWA_OPS_DYN_STATIC=16,SWA_OPS_DYN_CHUNK=4,SWA_OPS_DYN_STRIDE=32"
    wait $tlpid; tail -1 /tmp/build_tl.log
    PYTHONPATH=/tmp/v_tl:${PYTHONPATH:-} timeout 150 python3 notes/timeline.py --json "$OUT/timeline.json" \
      --shapes seed --configs "off:;c4:$D,SWA_OPS_DYN_CHUNK=4,SWA_OPS_DYN_STRIDE=32;k16c4:$D,SWA_OPS_DYN_STATIC=16,SWA_OPS_DYN_CHUNK=4,SWA_OPS_DYN_STRIDE=32" 2>&1 \
      | grep -v Warn | tee "$OUT/timeline.log" ;;
  local)
    # (run 122) the dynamic split among each CTA's warps (SWA_OPS_DYNAMIC=2): tests, A/B on the
    # bench rows, timeline (how long a CTA's warps wait for its slowest)
    timeout 150 python3 -m pytest tests/test_cuda_paged_attention.py -q -p no:cacheprovider -k dynamic 2>&1 \
      | tee "$OUT/tests.log" | tail -2
    ab ab_local seed,mistral-32k,gemma3,phi3,nowindow,gemma2-softcap,mistral-128k,single-128k,gptoss \
      "off:;l2:SWA_OPS_DYNAMIC=2;l0:SWA_OPS_DYNAMIC=2,SWA_OPS_DYN_STATIC=0;l8:SWA_OPS_DYNAMIC=2,SWA_OPS_DYN_STATIC=8"
    wait $tlpid; tail -1 /tmp/build_tl.log
    PYTHONPATH=/tmp/v_tl:${PYTHONPATH:-} timeout 150 python3 notes/timeline.py --json "$OUT/timeline.json" \
      --shapes seed,mistral-32k,gemma3 --configs "off:;l2:SWA_OPS_DYNAMIC=2" 2>&1 \
      | grep -v Warn | tee "$OUT/timeline.log" ;;
  combine)
    # (run 123) the per-row warp combine against the per-element one (SWA_OPS_COMBINE_OLD=1) on
    # every decode bench row, then the whole GPU suite on the defaults
    kill $tlpid 2>/dev/null
    ab ab_combine seed,mistral-32k,gemma3,phi3,nowindow,gemma2-softcap,mistral-128k,mistral-8k,single-128k,gptoss,gptoss-sinks,mistral-32k-fp8,mistral-spec4 \
      "new:;old:SWA_OPS_COMBINE_OLD=1"
    t1=$(date +%s)
    timeout 300 python3 -m pytest tests -q -p no:cacheprovider 2>&1 | tee "$OUT/suite.log" | tail -3
    echo "suite: $(( $(date +%s) - t1 )) s" ;;
  *) echo "unknown mode $mode"; exit 2 ;;
esac
