#!/usr/bin/env bash
# Device calls of the fifth decode session (notes/decode.md). Usage (device): bash notes/fifth.sh
# MODE. `combine` and `fold` compared against code that lost and was removed after them
# (-DSWA_OPS_COMBINE_OLD, -DSWA_OPS_MERGE_SEQ_FOLD): run them from commit f5d2290. MODE one of
#   peak   (run 131) notes/read_peak.cu (the read rate of loads-only kernels, the decode rows'
#          pattern among them) and the timeline build (combine steps) over five rows
#   combine (run 132) read_peak.cu's spin sweep (stand-in tile math per tile); builds of the
#          combine with its row stride D + 4 and no third barrier (main's tree) and of the old one
#          (-DSWA_OPS_COMBINE_OLD -DSWA_OPS_COMBINE_PAD=0, PTX identical to the previous main) and
#          of the stride alone (-DSWA_OPS_COMBINE_OLD); alternating processes of notes/env_ab.py
#          over the bench rows; the decode and multi-token test files on main's tree
#   many   (run 133) read_peak.cu's overhead sweep (several waves of short CTAs against one wave,
#          with stand-in tile math and per-CTA costs); D = 256 builds with one warp per CTA
#          (-DSWA_OPS_DECODE_WARPS_BIG=1) at 2 and 3 ring stages against main's, SWA_OPS_WAVES
#          sweeps on gemma2-softcap and gemma3; the variant's D = 256 decode tests
#   waves  (run 134) rings allocated at 2 stages (-DSWA_OPS_DECODE_STAGES=2: 3 CTAs per SM at
#          D = 128 / 256) split into 3-8 waves (SWA_OPS_WAVES), which read_peak.cu's overhead
#          sweep found robust to the tile math, against main's one wave
#   ncu    (run 135) ncu (clocks not locked) of the decode kernel on three rows and of
#          read_peak.cu's loads-only rings of two: DRAM bytes and throughput, warp stall reasons
#   layout (run 136) read_peak.cu's rings with dense, padded (the decode kernel's) and swizzled
#          rows, with and without the L2::256B hint: times, and ncu's L2 sector counts
#   swz    (run 137) the swizzled 16-bit ring rows (ring_layout.h): build, the whole GPU suite,
#          and alternating processes against padded rows (-DSWA_OPS_RING_SWIZZLE=0) on the bench rows
#   tune   (run 139) with swizzled rings: ring depth 3 (-DSWA_OPS_DECODE_RING_DEPTH=3) against 2,
#          alternating processes; SWA_OPS_WAVES on seed and mistral-128k, the pre-wait prefetch
#          on single-128k and seed (env_ab, one process)
#   merge  (run 140) the merge's direct path for rows of <= 8 partitions (no slices, no barrier)
#          against the sliced one (-DSWA_OPS_MERGE_DIRECT=0), alternating; decode / multi-token
#          test files
#   check  (run 141) build; the whole GPU suite; memcheck over the tests of every combine and merge
#          path; racecheck and synccheck of our kernels alone (notes/racecheck_probe.py); the
#          timeline build and its probe of four rows
#   bench  (run 142; carry .whl and .peers) the decode bench beside FlashInfer (the README table)
#   gap    (run 143) the bench's own timing of seed, single-128k and mistral-128k (no peers) beside
#          notes/env_ab.py's (which times each graph once unrecorded first), twice; racecheck of
#          our kernels alone with a longer limit
#   s2     (run 144) with swizzled rings: rings allocated at 2 stages (-DSWA_OPS_DECODE_STAGES=2,
#          3 CTAs per SM at D = 128 / 256, the split sized from that) against main, alternating
#   fold   (run 145) the merge's one-step batch fold against one step per partition
#          (-DSWA_OPS_MERGE_SEQ_FOLD), alternating three times; decode / multi-token test files
#   mend   (run 152) the review's mends against main: the whole GPU suite, then the merge's and
#          the fp8 TMA ring's rows, alternating processes twice
set -uo pipefail
mode=${1:?mode: peak | combine | many | waves | ncu | layout | swz | tune | merge | check | bench | gap | s2 | fold | mend}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv,noheader
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
t0=$(date +%s)
tl_build() {  # the timeline diagnostics build of head sizes $1 into /tmp/v_tl
  rm -rf /tmp/v_tl && mkdir -p /tmp/v_tl && cp -r setup.py swa_ops csrc /tmp/v_tl/ && cd /tmp/v_tl && \
    SWA_OPS_HEAD_SIZES=$1 NVCC_APPEND_FLAGS=-DSWA_OPS_TIMELINE TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=8 \
    python3 setup.py build_ext --inplace > /tmp/build_tl.log 2>&1; echo "timeline build rc $?"
}
case $mode in
  peak)
    ( tl_build 128,256 ) &
    tlpid=$!
    nvcc -O3 -std=c++17 -arch=sm_90a -o /tmp/read_peak notes/read_peak.cu && \
      timeout 200 /tmp/read_peak 2>&1 | tee "$OUT/read_peak.log"
    echo "peak: $(( $(date +%s) - t0 )) s"
    wait $tlpid; tail -3 /tmp/build_tl.log
    PYTHONPATH=/tmp/v_tl:$PYTHONPATH timeout 200 python3 notes/timeline.py --json "$OUT/timeline.json" \
      --shapes seed,mistral-32k,gemma3,single-128k,gemma2-softcap 2>&1 | grep -v Warn | tee "$OUT/timeline.log"
    echo "total: $(( $(date +%s) - t0 )) s" ;;
  combine)
    nvcc -O3 -std=c++17 -arch=sm_90a -o /tmp/read_peak notes/read_peak.cu && \
      timeout 100 /tmp/read_peak spin 2>&1 | tee "$OUT/read_peak_spin.log"
    echo "spin: $(( $(date +%s) - t0 )) s"
    source notes/variant_builds.sh
    FP8_VARIANTS="old:-DSWA_OPS_COMBINE_OLD,-DSWA_OPS_COMBINE_PAD=0 pad:-DSWA_OPS_COMBINE_OLD" \
      VARIANT_HEADS=64,96,128,256 start_variant_builds 5
    TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=6 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
      || { tail -30 "$OUT/build.log"; exit 1; }
    wait; echo "builds: $(( $(date +%s) - t0 )) s"
    S=${ROWS:-seed,mistral-32k,gemma3,phi3,nowindow,gemma2-softcap,single-128k,gptoss,gptoss-sinks,mistral-spec4,mistral-128k}
    here=$(pwd)
    for v in new old pad new old; do
      d=/tmp/v_$v; [ $v = new ] && d=$here
      ( cd $d && PYTHONPATH=$d:$PYTHONPATH timeout 150 python3 $here/notes/env_ab.py --rounds 1 --shapes $S --configs "$v:" 2>&1 | grep -v Warn ) | tee -a "$OUT/ab_combine.log"
    done
    echo "ab: $(( $(date +%s) - t0 )) s"
    timeout 200 python3 -m pytest tests/test_cuda_paged_attention.py tests/test_cuda_multitoken.py -q -p no:cacheprovider 2>&1 | tee "$OUT/tests.log" | tail -3
    echo "total: $(( $(date +%s) - t0 )) s" ;;
  many)
    nvcc -O3 -std=c++17 -arch=sm_90a -o /tmp/read_peak notes/read_peak.cu && \
      timeout 100 /tmp/read_peak overhead 2>&1 | tee "$OUT/read_peak_overhead.log"
    echo "overhead: $(( $(date +%s) - t0 )) s"
    source notes/variant_builds.sh
    FP8_VARIANTS="base: w1s2:-DSWA_OPS_DECODE_WARPS_BIG=1,-DSWA_OPS_DECODE_STAGES=2 w1s3:-DSWA_OPS_DECODE_WARPS_BIG=1" \
      VARIANT_HEADS=256 start_variant_builds 5
    wait; echo "builds: $(( $(date +%s) - t0 )) s"
    S=${ROWS:-gemma2-softcap,gemma3}
    here=$(pwd)
    W="def:;w2:SWA_OPS_WAVES=2;w3:SWA_OPS_WAVES=3;w4:SWA_OPS_WAVES=4"
    for i in 1 2; do
      for v in base w1s2 w1s3; do
        c="def:"; [ $v != base ] && c="$W"
        ( cd /tmp/v_$v && PYTHONPATH=/tmp/v_$v:$PYTHONPATH timeout 150 python3 $here/notes/env_ab.py --rounds 1 --shapes $S --configs "$c" 2>&1 | grep -v Warn | sed "s/^/$v /" ) | tee -a "$OUT/ab_many.log"
      done
    done
    echo "ab: $(( $(date +%s) - t0 )) s"
    ( cd /tmp/v_w1s2 && PYTHONPATH=/tmp/v_w1s2:$PYTHONPATH timeout 150 python3 -m pytest $here/tests/test_cuda_paged_attention.py -q -p no:cacheprovider -k "256" 2>&1 | tail -3 )
    echo "total: $(( $(date +%s) - t0 )) s" ;;
  waves)
    source notes/variant_builds.sh
    FP8_VARIANTS="base: s2:-DSWA_OPS_DECODE_STAGES=2" VARIANT_HEADS=128,256 start_variant_builds 8
    wait; echo "builds: $(( $(date +%s) - t0 )) s"
    S=${ROWS:-gemma2-softcap,gemma3,mistral-32k,nowindow,seed}
    here=$(pwd)
    W=${WAVES_CFG:-"w3:SWA_OPS_WAVES=3;w4:SWA_OPS_WAVES=4;w6:SWA_OPS_WAVES=6;w8:SWA_OPS_WAVES=8"}
    for i in 1 2; do
      for v in base s2; do
        c="def:"; [ $v != base ] && c="$W"
        ( cd /tmp/v_$v && PYTHONPATH=/tmp/v_$v:$PYTHONPATH timeout 200 python3 $here/notes/env_ab.py --rounds 1 --shapes $S --configs "$c" 2>&1 | grep -v Warn | sed "s/^/$v /" ) | tee -a "$OUT/ab_waves.log"
      done
    done
    echo "total: $(( $(date +%s) - t0 )) s" ;;
  ncu)
    TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=16 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
      || { tail -30 "$OUT/build.log"; exit 1; }
    echo "build: $(( $(date +%s) - t0 )) s"
    nvcc -O3 -std=c++17 -arch=sm_90a -o /tmp/read_peak notes/read_peak.cu
    M=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,lts__t_sectors_srcunit_tex_op_read.sum,lts__t_sector_op_read_hit_rate.pct,sm__warps_active.avg.per_cycle_active,smsp__issue_active.avg.pct_of_peak_sustained_active
    for sh in mistral-32k gemma2-softcap seed; do
      timeout 120 ncu --clock-control none --kernel-name regex:decode_mma --launch-skip 3 --launch-count 1 \
        --section WarpStateStats --metrics $M python3 notes/profile_decode.py $sh > "$OUT/ncu_$sh.txt" 2>&1
      echo "== ncu $sh"; grep -E "decode_mma|gpu__time|dram__|lts__|sm__warps|issue_active|Stall|Warp Cycles|Avg. Active" "$OUT/ncu_$sh.txt" | cut -c1-150 | head -30
    done
    timeout 120 ncu --clock-control none --kernel-name regex:ring_kernel --launch-skip 3 --launch-count 1 \
      --section WarpStateStats --metrics $M /tmp/read_peak one > "$OUT/ncu_probe_m.txt" 2>&1
    echo "== ncu probe mistral"; grep -E "gpu__time|dram__|lts__|sm__warps|issue_active|Stall|Warp Cycles" "$OUT/ncu_probe_m.txt" | cut -c1-150 | head -30
    timeout 120 ncu --clock-control none --kernel-name regex:ring_kernel --launch-skip 70 --launch-count 1 \
      --section WarpStateStats --metrics $M /tmp/read_peak one > "$OUT/ncu_probe_g.txt" 2>&1
    echo "== ncu probe gemma2"; grep -E "ring_kernel|gpu__time|dram__|lts__|sm__warps|issue_active|Stall|Warp Cycles" "$OUT/ncu_probe_g.txt" | cut -c1-150 | head -30
    echo "total: $(( $(date +%s) - t0 )) s" ;;
  layout)
    nvcc -O3 -std=c++17 -arch=sm_90a -o /tmp/read_peak notes/read_peak.cu
    for i in 1 2; do timeout 100 /tmp/read_peak one 2>&1 | grep -v "^cuda\|^copy\|^NVIDIA" | tee -a "$OUT/layout.log"; done
    M=gpu__time_duration.sum,dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,lts__t_sectors_srcunit_tex_op_read.sum,lts__t_sector_op_read_hit_rate.pct,l1tex__data_bank_conflicts_pipe_lsu_mem_shared.sum,smsp__inst_executed_op_ldgsts.sum,l1tex__t_requests_pipe_lsu_mem_global_op_ldgsts.sum,l1tex__t_sectors_pipe_lsu_mem_global_op_ldgsts.sum
    for cfg in "256 0 1" "256 1 1" "256 2 1" "256 0 0" "256 1 0" "512 1 1"; do
      echo "== ncu probe $cfg"
      timeout 60 ncu --clock-control none --kernel-name regex:ring_kernel --launch-skip 3 --launch-count 1 \
        --metrics $M /tmp/read_peak one $cfg 2>&1 | grep -E "gpu__|dram__|lts__|l1tex__|smsp__" | cut -c1-120
    done
    echo "total: $(( $(date +%s) - t0 )) s" ;;
  swz)
    source notes/variant_builds.sh
    FP8_VARIANTS="pad:-DSWA_OPS_RING_SWIZZLE=0" VARIANT_HEADS=64,96,128,256 start_variant_builds 6
    TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=10 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
      || { tail -30 "$OUT/build.log"; exit 1; }
    wait; echo "builds: $(( $(date +%s) - t0 )) s"
    timeout 300 python3 -m pytest tests -q -p no:cacheprovider -x 2>&1 | tee "$OUT/suite.log" | tail -3
    echo "suite: $(( $(date +%s) - t0 )) s"
    S=${ROWS:-seed,mistral-32k,mistral-128k,gemma3,gptoss,nowindow,single-128k,phi3,gemma2-softcap,gptoss-sinks,mistral-spec4,mistral-32k-fp8}
    here=$(pwd)
    for v in new pad new pad; do
      d=/tmp/v_$v; [ $v = new ] && d=$here
      ( cd $d && PYTHONPATH=$d:$PYTHONPATH timeout 150 python3 $here/notes/env_ab.py --rounds 1 --shapes $S --configs "$v:" 2>&1 | grep -v Warn ) | tee -a "$OUT/ab_swz.log"
    done
    echo "total: $(( $(date +%s) - t0 )) s" ;;
  tune)
    source notes/variant_builds.sh
    FP8_VARIANTS="d2: d3:-DSWA_OPS_DECODE_RING_DEPTH=3" VARIANT_HEADS=64,96,128,256 start_variant_builds 8
    wait; echo "builds: $(( $(date +%s) - t0 )) s"
    S=${ROWS:-seed,mistral-32k,mistral-128k,gemma3,gptoss,single-128k,phi3,gemma2-softcap,mistral-spec4}
    here=$(pwd)
    for v in d2 d3 d2 d3; do
      ( cd /tmp/v_$v && PYTHONPATH=/tmp/v_$v:$PYTHONPATH timeout 150 python3 $here/notes/env_ab.py --rounds 1 --shapes $S --configs "$v:" 2>&1 | grep -v Warn ) | tee -a "$OUT/ab_depth.log"
    done
    ( cd /tmp/v_d2 && PYTHONPATH=/tmp/v_d2:$PYTHONPATH timeout 150 python3 $here/notes/env_ab.py --rounds 2 --shapes seed,mistral-128k \
        --configs "def:;w125:SWA_OPS_WAVES=1.25;w15:SWA_OPS_WAVES=1.5;w2:SWA_OPS_WAVES=2;pw1:SWA_OPS_PREWAIT=2,SWA_OPS_PREWAIT_FIRST=1" 2>&1 | grep -v Warn ) | tee -a "$OUT/ab_tune.log"
    ( cd /tmp/v_d2 && PYTHONPATH=/tmp/v_d2:$PYTHONPATH timeout 150 python3 $here/notes/env_ab.py --rounds 2 --shapes single-128k,gptoss \
        --configs "def:;pw0:SWA_OPS_PREWAIT=0;pw2f0:SWA_OPS_PREWAIT=2,SWA_OPS_PREWAIT_FIRST=0;pw3:SWA_OPS_PREWAIT=3,SWA_OPS_PREWAIT_FIRST=1;noearly:SWA_OPS_MERGE_EARLY=0" 2>&1 | grep -v Warn ) | tee -a "$OUT/ab_tune.log"
    echo "total: $(( $(date +%s) - t0 )) s" ;;
  merge)
    source notes/variant_builds.sh
    FP8_VARIANTS="sliced:-DSWA_OPS_MERGE_DIRECT=0" VARIANT_HEADS=64,128 start_variant_builds 6
    TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=10 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
      || { tail -30 "$OUT/build.log"; exit 1; }
    wait; echo "builds: $(( $(date +%s) - t0 )) s"
    timeout 200 python3 -m pytest tests/test_cuda_paged_attention.py tests/test_cuda_multitoken.py -q -p no:cacheprovider 2>&1 | tail -2
    S=${ROWS:-seed,mistral-128k,mistral-8k,single-128k,gptoss-sinks}
    here=$(pwd)
    for v in direct sliced direct sliced; do
      d=/tmp/v_$v; [ $v = direct ] && d=$here
      ( cd $d && PYTHONPATH=$d:$PYTHONPATH timeout 150 python3 $here/notes/env_ab.py --rounds 1 --shapes $S --configs "$v:" 2>&1 | grep -v Warn ) | tee -a "$OUT/ab_merge.log"
    done
    echo "total: $(( $(date +%s) - t0 )) s" ;;
  check)
    ( tl_build 128,256 ) &
    tlpid=$!
    TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=10 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
      || { tail -50 "$OUT/build.log"; exit 1; }
    echo "build: $(( $(date +%s) - t0 )) s"
    timeout 300 python3 -m pytest tests -q -p no:cacheprovider 2>&1 | tee "$OUT/suite.log" | tail -2
    echo "suite: $(( $(date +%s) - t0 )) s"
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 --print-limit 5 \
      python3 -m pytest tests/test_cuda_paged_attention.py tests/test_cuda_multitoken.py -q -p no:cacheprovider \
      -k "(test_sinks or test_soft_cap or fp8_cache_blocks or (kv_pair and mistral) or soft_cap_and_sinks or variable_lengths or refill) and not graph" 2>&1 \
      | tee "$OUT/memcheck.log" | tail -2
    echo "memcheck: rc ${PIPESTATUS[0]}, $(( $(date +%s) - t0 )) s"
    for tool in racecheck synccheck; do
      timeout 150 compute-sanitizer --tool $tool --error-exitcode 9 --print-limit 5 python3 notes/racecheck_probe.py > "$OUT/$tool.log" 2>&1
      echo "$tool: rc $?"; tail -2 "$OUT/$tool.log"
    done
    echo "sanitizers: $(( $(date +%s) - t0 )) s"
    wait $tlpid
    PYTHONPATH=/tmp/v_tl:$PYTHONPATH timeout 120 python3 notes/timeline.py --json "$OUT/timeline.json" \
      --shapes seed,mistral-32k,single-128k,gemma2-softcap 2>&1 | grep -v Warn | tee "$OUT/timeline.log"
    echo "total: $(( $(date +%s) - t0 )) s" ;;
  bench)
    TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=16 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
      || { tail -50 "$OUT/build.log"; exit 1; }
    echo "build: $(( $(date +%s) - t0 )) s"
    source .peers/activate.sh
    timeout ${BENCH_S:-540} python3 -m swa_ops.bench --decode --json "$OUT/bench_decode.json" --plot "$OUT/bench_decode.png" 2>&1 \
      | grep -v Warn | tee "$OUT/bench_decode.log" | tail -32 ;;
  gap)
    TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=16 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
      || { tail -50 "$OUT/build.log"; exit 1; }
    echo "build: $(( $(date +%s) - t0 )) s"
    for i in 1 2; do
      timeout 100 python3 -m swa_ops.bench --decode --peers none --no-warmup --shapes seed,single-128k,mistral-128k 2>&1 | grep -v Warn | tail -5
      timeout 100 python3 notes/env_ab.py --rounds 1 --shapes seed,single-128k,mistral-128k --configs "def:" 2>&1 | grep -v Warn
    done
    timeout 330 compute-sanitizer --tool racecheck --error-exitcode 9 --print-limit 5 python3 notes/racecheck_probe.py > "$OUT/racecheck.log" 2>&1
    echo "racecheck: rc $?, $(( $(date +%s) - t0 )) s"; tail -3 "$OUT/racecheck.log" ;;
  s2)
    source notes/variant_builds.sh
    FP8_VARIANTS="main: s2:-DSWA_OPS_DECODE_STAGES=2" VARIANT_HEADS=128,256 start_variant_builds 8
    wait; echo "builds: $(( $(date +%s) - t0 )) s"
    S=${ROWS:-seed,mistral-128k,single-128k,mistral-32k,gemma3,gemma2-softcap}
    here=$(pwd)
    for v in main s2 main s2; do
      ( cd /tmp/v_$v && PYTHONPATH=/tmp/v_$v:$PYTHONPATH timeout 150 python3 $here/notes/env_ab.py --rounds 1 --shapes $S --configs "$v:" 2>&1 | grep -v Warn ) | tee -a "$OUT/ab_s2.log"
    done
    echo "total: $(( $(date +%s) - t0 )) s" ;;
  fold)
    source notes/variant_builds.sh
    FP8_VARIANTS="seq:-DSWA_OPS_MERGE_SEQ_FOLD" VARIANT_HEADS=128 start_variant_builds 6
    TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=10 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
      || { tail -30 "$OUT/build.log"; exit 1; }
    wait; echo "builds: $(( $(date +%s) - t0 )) s"
    timeout 200 python3 -m pytest tests/test_cuda_paged_attention.py tests/test_cuda_multitoken.py -q -p no:cacheprovider 2>&1 | tail -1
    S=single-128k,mistral-128k
    here=$(pwd)
    for v in batch seq batch seq batch seq; do
      d=/tmp/v_$v; [ $v = batch ] && d=$here
      ( cd $d && PYTHONPATH=$d:$PYTHONPATH timeout 100 python3 $here/notes/env_ab.py --rounds 1 --shapes $S --configs "$v:" 2>&1 | grep -v "Warn\|copy band" ) | tee -a "$OUT/ab_fold.log"
    done
    echo "total: $(( $(date +%s) - t0 )) s" ;;
  mend)  # the review's mends (merge.h helpers, the fp8 TMA swizzle through ring_layout.h) against
         # the code before them: notes/main_src.tar, made beforehand with `git archive aa6cfbc
         # setup.py swa_ops csrc > notes/main_src.tar` and not committed (untracked files travel
         # to the device); the whole suite, then alternating processes
    rm -rf /tmp/v_main && mkdir -p /tmp/v_main && tar -xf notes/main_src.tar -C /tmp/v_main && \
      ( cd /tmp/v_main && SWA_OPS_HEAD_SIZES=64,128 TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=6 \
        python3 setup.py build_ext --inplace > "$OUT/build_main.log" 2>&1; echo "main build rc $?" ) &
    TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=10 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
      || { tail -30 "$OUT/build.log"; exit 1; }
    wait; echo "builds: $(( $(date +%s) - t0 )) s"
    timeout 300 python3 -m pytest tests -q -p no:cacheprovider 2>&1 | tee "$OUT/suite.log" | tail -2
    echo "suite: $(( $(date +%s) - t0 )) s"
    S=${ROWS:-seed,mistral-128k,single-128k,mistral-spec4,mistral-32k-fp8,gptoss-sinks}
    here=$(pwd)
    for v in new main new main; do
      d=/tmp/v_$v; [ $v = new ] && d=$here
      ( cd $d && PYTHONPATH=$d:$PYTHONPATH timeout 120 python3 $here/notes/env_ab.py --rounds 1 --shapes $S --configs "$v:" 2>&1 | grep -v "Warn" ) | tee -a "$OUT/ab_mend.log"
    done
    echo "total: $(( $(date +%s) - t0 )) s" ;;
  *) echo "unknown mode $mode"; exit 2 ;;
esac
