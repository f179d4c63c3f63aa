#!/usr/bin/env bash
# Device calls of the eighth decode session (notes/decode.md). Usage (device): bash notes/eighth.sh
# MODE (carry .whl; .peers for bench). MODE one of
#   probe  (run 168) notes/read_peak.cu seed: the loads-only bound for seed's geometry, with wider
#          rows (paired, whole token) and stand-in tile math; then seed beside rows of its bytes
#          and split with group 4 and / or a 2 KB token stride (notes/row_probe.py), twice
#   tl     (run 169) the timeline build (head size 128): where seed (group 8) spends the 1.1 us
#          that seed-g4 (the same bytes and split, group 4) does not
#   l2     (run 170) split partials kept in L2 (evict_last) and discarded by the merge (main,
#          SWA_OPS_PART_L2) against plain stores (base), and 16-bit K/V streamed evict_first
#          (SWA_OPS_KV_EVICT_FIRST) without and with it (ef, keepef): alternating processes,
#          twice; then the decode and multi-token test files on main
#   check  (run 171) evict_first on by default (fp8 cp.async and TMA rings too): main against
#          base (both off) and keep (partials kept, no evict_first), alternating, on every decode
#          bench row, twice; the whole GPU suite; memcheck over the split tests
#   fix    (run 172) notes/hint_probe.cu (which hinted cp.async forms run); main with the 128-byte
#          span unhinted: the fp8 tests, then the whole GPU suite; SWA_OPS_WAVES 1.5 / 2 on the
#          split rows now that partials cost no DRAM traffic
#   slack  (run 173) hint_probe one form per process; the swapped tile's lazy rescale
#          (SWA_OPS_RESCALE_SLACK=8) against main, alternating processes three times
#   (run 174: bash notes/seventh.sh bench, the README's table)
#   final  (run 175) the final code: the whole GPU suite; memcheck over the split, sinks, fp8 and
#          refill tests; racecheck and synccheck over notes/racecheck_probe.py
set -uo pipefail
mode=${1:?mode: probe | tl | l2 | check | fix | slack | final}
source notes/device_env.sh
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
  tl)
    rm -rf /tmp/v_tl && mkdir -p /tmp/v_tl && cp -r setup.py swa_ops csrc /tmp/v_tl/ && (cd /tmp/v_tl && \
      SWA_OPS_HEAD_SIZES=128 NVCC_APPEND_FLAGS=-DSWA_OPS_TIMELINE TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=16 \
      python3 setup.py build_ext --inplace > "$OUT/build_tl.log" 2>&1) || { tail -30 "$OUT/build_tl.log"; exit 1; }
    echo "timeline build: $(( $(date +%s) - t0 )) s"
    PYTHONPATH=/tmp/v_tl:$PYTHONPATH timeout 200 python3 notes/timeline.py --json "$OUT/timeline.json" \
      --shapes ${SHAPES:-seed,seed-g4,seed-kv8,mistral-128k,mistral-32k} 2>&1 | grep -v Warn | tee "$OUT/timeline.log" ;;
  l2)
    source notes/variant_builds.sh
    FP8_VARIANTS="base:-DSWA_OPS_PART_L2=0 ef:-DSWA_OPS_PART_L2=0,-DSWA_OPS_KV_EVICT_FIRST=1 keepef:-DSWA_OPS_KV_EVICT_FIRST=1" \
      VARIANT_HEADS=64,128 start_variant_builds 3
    TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=7 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
      || { tail -30 "$OUT/build.log"; exit 1; }
    wait; echo "builds: $(( $(date +%s) - t0 )) s"
    S=${ROWS:-seed,seed-g4,mistral-128k,single-128k,mistral-32k,gptoss}
    here=$(pwd)
    for v in main base ef keepef main base ef keepef; do
      d=/tmp/v_$v; [ $v = main ] && d=$here
      ( cd $d && PYTHONPATH=$d:$PYTHONPATH timeout 150 python3 $here/notes/env_ab.py --rounds 1 --shapes $S --configs "$v:" 2>&1 | grep -v Warn ) | tee -a "$OUT/ab_l2.log"
    done
    echo "ab: $(( $(date +%s) - t0 )) s"
    timeout ${TEST_S:-240} python3 -m pytest tests/test_cuda_paged_attention.py tests/test_cuda_multitoken.py -q -p no:cacheprovider -x 2>&1 | tee "$OUT/tests.log" | tail -3 ;;
  check)
    source notes/variant_builds.sh
    FP8_VARIANTS="base:-DSWA_OPS_PART_L2=0,-DSWA_OPS_KV_EVICT_FIRST=0 keep:-DSWA_OPS_KV_EVICT_FIRST=0" \
      VARIANT_HEADS=64,96,128,256 start_variant_builds 4
    TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=8 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
      || { tail -30 "$OUT/build.log"; exit 1; }
    wait; echo "builds: $(( $(date +%s) - t0 )) s"
    grep -h "spill" "$OUT"/build.log | sort | uniq -c | sort -rn | head -4
    S=${ROWS:-seed,mistral-32k,mistral-128k,mistral-8k,gemma3,gptoss,nowindow,single-128k,phi3,gemma2-softcap,gptoss-sinks,mistral-spec4,mistral-32k-fp8}
    here=$(pwd)
    for v in main base keep main base keep; do
      d=/tmp/v_$v; [ $v = main ] && d=$here
      ( cd $d && PYTHONPATH=$d:$PYTHONPATH timeout 150 python3 $here/notes/env_ab.py --rounds 1 --shapes $S --configs "$v:" 2>&1 | grep -v Warn ) | tee -a "$OUT/ab_check.log"
    done
    echo "ab: $(( $(date +%s) - t0 )) s"
    timeout ${SUITE_S:-240} python3 -m pytest tests -q -p no:cacheprovider -x 2>&1 | tee "$OUT/suite.log" | tail -2
    echo "suite: $(( $(date +%s) - t0 )) s"
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 5 \
      python3 -m pytest tests/test_cuda_paged_attention.py -q -p no:cacheprovider \
      -k "sinks_with_split or variable_lengths or refill or fp8_cache_blocks or single_long" 2>&1 \
      | tee "$OUT/memcheck.log" | tail -2
    echo "memcheck: rc ${PIPESTATUS[0]}, $(( $(date +%s) - t0 )) s" ;;
  fix)
    nvcc -O3 -std=c++17 -arch=sm_90a -o /tmp/hint_probe notes/hint_probe.cu && /tmp/hint_probe | tee "$OUT/hint_probe.log"
    build
    timeout 120 python3 -m pytest tests/test_cuda_paged_attention.py -q -p no:cacheprovider -k fp8 2>&1 | tail -2
    timeout ${SUITE_S:-300} python3 -m pytest tests -q -p no:cacheprovider 2>&1 | tee "$OUT/suite.log" | tail -2
    echo "suite: $(( $(date +%s) - t0 )) s"
    timeout 200 python3 notes/env_ab.py --rounds 2 --shapes seed,mistral-128k,single-128k,mistral-32k \
      --configs "def:;w15:SWA_OPS_WAVES=1.5;w2:SWA_OPS_WAVES=2" 2>&1 | grep -v Warn | tee "$OUT/ab_waves.log" ;;
  slack)
    nvcc -O3 -std=c++17 -arch=sm_90a -o /tmp/hint_probe notes/hint_probe.cu && \
      for f in 3 1 0 2 4; do for z in 0 1; do timeout 20 /tmp/hint_probe $f $z; done; done | tee "$OUT/hint_probe.log"
    source notes/variant_builds.sh
    FP8_VARIANTS="slack8:-DSWA_OPS_RESCALE_SLACK=8" VARIANT_HEADS=64,96,128,256 start_variant_builds 8
    TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=8 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
      || { tail -30 "$OUT/build.log"; exit 1; }
    wait; echo "builds: $(( $(date +%s) - t0 )) s"
    S=${ROWS:-seed,mistral-32k,mistral-128k,gemma3,phi3,gemma2-softcap,mistral-32k-fp8}
    here=$(pwd)
    for v in main slack8 main slack8 main slack8; do
      d=/tmp/v_$v; [ $v = main ] && d=$here
      ( cd $d && PYTHONPATH=$d:$PYTHONPATH timeout 150 python3 $here/notes/env_ab.py --rounds 1 --shapes $S --configs "$v:" 2>&1 | grep -v Warn ) | tee -a "$OUT/ab_slack.log"
    done ;;
  final)
    build
    timeout 300 python3 -m pytest tests -q -p no:cacheprovider 2>&1 | tee "$OUT/suite.log" | tail -2
    echo "suite: $(( $(date +%s) - t0 )) s"
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 5 \
      python3 -m pytest tests/test_cuda_paged_attention.py -q -p no:cacheprovider \
      -k "sinks_with_split or variable_lengths or refill or fp8_cache_blocks or single_long or (fp8_cache and 2047) or kv_pair_phi3" 2>&1 \
      | tee "$OUT/memcheck.log" | tail -2
    echo "memcheck: rc ${PIPESTATUS[0]}, $(( $(date +%s) - t0 )) s"
    for tool in racecheck synccheck; do
      timeout 150 compute-sanitizer --tool $tool --error-exitcode 9 --print-limit 5 python3 notes/racecheck_probe.py > "$OUT/$tool.log" 2>&1
      echo "$tool: rc $?"; tail -2 "$OUT/$tool.log"
    done ;;
esac
echo "total: $(( $(date +%s) - t0 )) s"
