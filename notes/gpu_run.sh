#!/usr/bin/env bash
# One device call: build, test, bench; logs land in $OUT (the device tool's return folder).
# Usage: notes/gpu_run.sh MODE [extra bench args...]; MODE: tests | bench | all | final | check |
#   perf | profile | sweep | debug | prefill (prefill tests + probe) | prefillws (prefill tests, the
#   probe per SWA_OPS_PREFILL_WS kernel, sanitizers) | suite (whole suite, memcheck,
#   bench without peers) | merged (suite, switch A/Bs, probes) | fidecode / fiprefill (one bench section beside the peers; carry .peers) |
#   kvpair (kv-head pairing: kvpairtests, then kvpairbench) | persist128 (the persistent prefill
#   grid, default at D <= 128: prefill tests, probe A/B of SWA_OPS_PREFILL_PERSIST=0/1, bench's
#   prefill rows without peers; ~6-7 min) | tma (prefill TMA copies: tests, memcheck, A/B of
#   SWA_OPS_PREFILL_TMA) | tail (prefill tail split: tests, a merge-nothing mutant that must fail,
#   memcheck / synccheck, A/B of SWA_OPS_PREFILL_TAIL_SPLIT)
set -uo pipefail
mode=${1:-all}; shift || true
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.version.cuda)" | tee -a "$OUT/gpu.txt"
# Carried wheels (expecttest for the lead's schema tests) and peers (FlashInfer), when present.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if [[ -f .peers/activate.sh && ( $mode == final || $mode == fidecode || $mode == fiprefill ) ]]; then
  source .peers/activate.sh
fi
if [[ $mode == fp8ab || $mode == fp8pair || $mode == stalls || $mode == prefillab ]]; then
  # Variant builds beside the main one (head size 128 only, in place in copies), each with one
  # compile-time override: "name:flags" pairs in FP8_VARIANTS.
  source notes/variant_builds.sh
  start_variant_builds 4
fi
# The bench's Mistral prefill rows (sustained, no peers) with switch $1 = 0 / 1, interleaved twice;
# json to $OUT/bench_$2<value>_<round>.json.
mistral_rows_ab() {
  for rep in 1 2; do
    for t in 0 1; do
      echo "== $1=$t ($rep)"
      env "$1=$t" timeout 100 python3 -m swa_ops.bench --prefill --peers none --no-warmup \
        --shapes mistral-prefill,chunked --json "$OUT/bench_$2${t}_$rep.json" 2>&1 \
        | grep -E "^ *(mistral|chunked)" | cut -c1-80
    done
  done
}
t0=$(date +%s)
TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=16 python3 -m pip install --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1 \
  || { tail -50 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
if [[ $mode == tests || $mode == all || $mode == final || $mode == sweep || $mode == debug || $mode == perf || $mode == check ]]; then
  t0=$(date +%s)
  python3 -m pytest tests/test_cuda_paged_attention.py -q -p no:cacheprovider --maxfail=30 2>&1 \
    | tee "$OUT/test_cuda.log" | tail -40
  echo "cuda tests: $(( $(date +%s) - t0 )) s"
fi
if [[ $mode == prefill ]]; then
  # The prefill kernel: its tests, the multi-token decode tests, then quick timings.
  t0=$(date +%s)
  timeout 240 python3 -m pytest tests/test_cuda_prefill.py -q -p no:cacheprovider --maxfail=10 2>&1 \
    | tee "$OUT/test_prefill.log" | tail -30
  echo "prefill tests: $(( $(date +%s) - t0 )) s"
  timeout 90 python3 notes/prefill_probe.py 2>&1 | tee "$OUT/prefill_probe.log"
  echo "== mma.sync variant (SWA_OPS_WGMMA=0)"
  SWA_OPS_WGMMA=0 timeout 90 python3 notes/prefill_probe.py 2>&1 | tee "$OUT/prefill_probe_mma.log"
  t0=$(date +%s)
  timeout 180 python3 -m pytest tests/test_cuda_paged_attention.py -q -p no:cacheprovider -k "multi_token or fp8" 2>&1 \
    | tee "$OUT/test_cuda_mt.log" | tail -8
  echo "multi-token/fp8 decode tests: $(( $(date +%s) - t0 )) s"
fi
if [[ $mode == fp8ab ]]; then
  wait
  t0=$(date +%s)
  timeout 200 python3 -m pytest tests/test_cuda_paged_attention.py tests/test_cuda_multitoken.py -q -p no:cacheprovider \
    -k "fp8 or swapped" 2>&1 | tee "$OUT/test_fp8.log" | tail -4
  echo "fp8 tests: $(( $(date +%s) - t0 )) s"
  for v in main ${FP8_VARIANTS:-} main; do
    v=${v%%:*}
    echo "== $v"
    if [[ $v == main ]]; then dir=$PWD; else dir=/tmp/v_$v; fi
    ( cd $dir && timeout 100 python3 -m swa_ops.bench --decode --peers none --shapes mistral-32k,mistral-32k-fp8 \
      --json "$OUT/bench_$v.json" 2>&1 | grep -v Warn | grep -E "shape|mistral" )
  done
  timeout 120 ncu --kernel-name regex:decode_mma --launch-skip 3 --launch-count 1 --section SpeedOfLight \
    --section WarpStateStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
    python3 -m swa_ops.bench --decode --peers none --shapes mistral-32k-fp8 --calls 2 --no-warmup > "$OUT/ncu_fp8.txt" 2>&1
  grep -E "Duration|Throughput|Pipe|Issue|Stall|Warp Cycles|Eligible|Active Warps|L1/TEX Hit|Bank" "$OUT/ncu_fp8.txt" | head -40
fi
if [[ $mode == fp8pair ]]; then
  # The paired fp8 tile against the same bytes in bf16 (notes/decode.md, run 44): the decode tests,
  # then main and each FP8_VARIANTS build with SWA_OPS_KV_PAIR=0/1 on mistral-32k-fp8 and
  # bf16-d64-kv8, then ncu of the paired fp8 and paired bf16-layout kernels.
  wait
  t0=$(date +%s)
  timeout 240 python3 -m pytest tests/test_cuda_paged_attention.py -q -p no:cacheprovider --maxfail=20 2>&1 \
    | tee "$OUT/test_decode.log" | tail -4
  echo "decode tests: $(( $(date +%s) - t0 )) s"
  for v in main ${FP8_VARIANTS:-} main; do
    v=${v%%:*}
    if [[ $v == main ]]; then dir=$PWD; else dir=/tmp/v_$v; fi
    for kp in 0 1; do
      echo "== $v SWA_OPS_KV_PAIR=$kp"
      ( cd $dir && SWA_OPS_KV_PAIR=$kp PYTHONPATH=$dir timeout 60 python3 $OLDPWD/notes/row_probe.py --decode \
        --peers none --no-warmup --shapes mistral-32k-fp8,bf16-d64-kv8 --json "$OUT/bench_${v}_$kp.json" 2>&1 \
        | grep -v Warn | grep -E "mistral|d64" )
    done
  done
  for sh in mistral-32k-fp8 bf16-d64-kv8; do
    SWA_OPS_KV_PAIR=1 timeout 100 ncu --kernel-name regex:decode_mma --launch-skip 2 --launch-count 1 \
      --section SpeedOfLight --section WarpStateStats --section SchedulerStats --section ComputeWorkloadAnalysis \
      --section InstructionStats --section MemoryWorkloadAnalysis \
      python3 -c "import sys; sys.argv=['x','$sh']; sys.path.insert(0,'notes'); import row_probe; exec(open('notes/profile_decode.py').read())" \
      > "$OUT/ncu_pair_$sh.txt" 2>&1
    echo "== ncu $sh (paired)"
    grep -E "Duration|DRAM Throughput|Issue Slots Busy|Issued Warp|No Eligible|Active Warps Per|Eligible Warps|Stall Long|Stall Wait|Stall Math|Stall Short|Executed Ipc A|Pipe Util|Warp Cycles Per Issued" "$OUT/ncu_pair_$sh.txt" | head -24
  done
fi
if [[ $mode == stride ]]; then
  # The whole suite, memcheck over the paired decode tests, the token-stride probe (run 46).
  t0=$(date +%s)
  timeout 300 python3 -m pytest tests -q -p no:cacheprovider 2>&1 | tee "$OUT/test_all.log" | tail -4
  echo "full suite: $(( $(date +%s) - t0 )) s"
  t0=$(date +%s)
  timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 python3 -m pytest tests/test_cuda_paged_attention.py \
    -q -p no:cacheprovider -k "kv_pair_mistral_like or kv_pair_default or kv_pair_strided or kv_pair_cuda_graph" 2>&1 \
    | tee "$OUT/memcheck_pair.log" | tail -4
  echo "memcheck rc ${PIPESTATUS[0]}: $(( $(date +%s) - t0 )) s"
  for rep in 1 2; do
    timeout 90 python3 notes/row_probe.py --decode --peers none --no-warmup \
      --shapes mistral-32k,d128-kv2,d128-kv4,d128-kv16,seed --json "$OUT/bench_stride_$rep.json" 2>&1 \
      | grep -v Warn | grep -E "shape|mistral|kv|seed"
  done
fi
if [[ $mode == stalls ]]; then
  # Why paired fp8 is slower than its loads (notes/decode.md, run 47): every issue-stall reason per
  # issued instruction, per kernel, for "shape:KV_PAIR[:variant]" items in STALL_RUNS.
  wait
  m="regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio,smsp__inst_executed.sum,smsp__issue_active.avg.pct_of_peak_sustained_active,dram__throughput.avg.pct_of_peak_sustained_elapsed,gpu__time_duration.sum,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,smsp__warps_active.avg.per_cycle_active,smsp__cycles_active.avg"
  for item in ${STALL_RUNS:-}; do
    IFS=: read -r sh kp var <<< "$item"
    if [[ -z $var ]]; then dir=$PWD; else dir=/tmp/v_$var; fi
    echo "== $sh SWA_OPS_KV_PAIR=$kp ${var:-main}"
    ( cd $dir && SWA_OPS_KV_PAIR=$kp PYTHONPATH=$dir timeout 120 ncu --kernel-name regex:decode_mma --launch-skip 2 --launch-count 1 \
      --metrics "$m" python3 -c "import sys; sys.argv=['x','$sh']; sys.path.insert(0,'$OLDPWD/notes'); import row_probe; exec(open('$OLDPWD/notes/profile_decode.py').read())" 2>&1 ) \
      | grep -E "stalled|inst_executed|issue_active|dram__|duration|hmma|warps_active|cycles_active" \
      | awk '{v=$NF; if (v+0 >= 0.05 || $1 !~ /stalled/) print}' | sed 's/smsp__average_warps_issue_stalled_//' | tee -a "$OUT/stalls.txt"
  done
fi
if [[ $mode == prefillprof ]]; then
  # chunked against mistral-prefill (notes/prefill.md, run 52): the grid-tail probe (batch 8 vs
  # 33), then ncu of one call of each (time, pipes, L2, DRAM, stall reasons).
  for r in 1 2; do timeout 120 python3 notes/prefill_probe.py chunked-b8 chunked-b33 mistral-prefill 2>&1 | grep TFLOP; done
  m="gpu__time_duration.sum,sm__ops_path_tensor_src_bf16_dst_fp32.sum,lts__t_sector_hit_rate.pct,dram__throughput.avg.pct_of_peak_sustained_elapsed,dram__bytes_read.sum,smsp__inst_executed.sum,sm__cycles_active.avg,regex:smsp__average_warps_issue_stalled_.*_per_issue_active\\.ratio"
  for sh in chunked-b8 mistral-prefill; do
    echo "== ncu $sh"
    timeout 150 ncu --kernel-name regex:prefill_ws --launch-skip 1 --launch-count 1 --section SpeedOfLight --metrics "$m" \
      python3 notes/prefill_probe.py $sh 2>&1 | grep -E "Duration|Throughput|duration|ops_path|hit_rate|dram__|inst_executed|cycles_active|stalled" \
      | awk '{v=$NF; gsub(",","",v); if (v+0 >= 0.05 || $1 !~ /stalled/) print}' | sed 's/smsp__average_warps_issue_stalled_//' | tee -a "$OUT/prefill_ncu.txt"
  done
fi
if [[ $mode == prefillab ]]; then
  # The bench's prefill rows (sustained, as the bench times them) on main and on each FP8_VARIANTS
  # build (any compile-time flag, despite the name), interleaved twice (run 56).
  wait
  for rep in 1 2; do
    for v in main ${FP8_VARIANTS:-}; do
      v=${v%%:*}
      if [[ $v == main ]]; then dir=$PWD; else dir=/tmp/v_$v; fi
      echo "== $v ($rep)"
      ( cd $dir && PYTHONPATH=$dir timeout 120 python3 -m swa_ops.bench --prefill --peers none --no-warmup \
        --json "$OUT/bench_prefill_${v}_$rep.json" 2>&1 | grep -E "^ *(mistral|chunked|gemma3|gptoss)" | cut -c1-80 )
    done
  done
fi
if [[ $mode == merged ]]; then
  # After merging helpers' branches: the whole suite, then each new path against its switch on one
  # machine (prefill: SWA_OPS_PREFILL_WS 2/1/0; decode short partitions: SWA_OPS_SMALL 1/0), the
  # row-size probe, and the bench's swa_ops rows (no peers).
  t0=$(date +%s)
  timeout 330 python3 -m pytest tests -q -p no:cacheprovider -x 2>&1 | tee "$OUT/test_all.log" | tail -12
  echo "full suite: $(( $(date +%s) - t0 )) s"
  for ws in 2 1 0; do
    echo "== SWA_OPS_PREFILL_WS=$ws"
    SWA_OPS_PREFILL_WS=$ws timeout 60 python3 notes/prefill_probe.py 2>&1 | tee "$OUT/prefill_probe_ws$ws.log"
  done
  for sm in 1 0; do
    echo "== SWA_OPS_SMALL=$sm"
    SWA_OPS_SMALL=$sm timeout 60 python3 -m swa_ops.bench --decode --peers none --no-warmup \
      --shapes gptoss,single-128k,gptoss-sinks,mistral-128k,mistral-32k --json "$OUT/bench_small$sm.json" 2>&1 \
      | grep -v Warn | grep -E "shape|gptoss|single|mistral"
  done
  echo "== row probe"
  timeout 60 python3 notes/row_probe.py --decode --peers none --no-warmup \
    --shapes mistral-32k,mistral-32k-fp8,bf16-d64,fp8-d256 --json "$OUT/row_probe.json" 2>&1 | grep -v Warn | grep -E "shape|mistral|d64|d256"
  timeout 150 python3 -m swa_ops.bench --peers none --json "$OUT/bench_nopeers.json" 2>&1 | grep -v Warn \
    | tee "$OUT/bench_nopeers.log" | tail -24
fi
if [[ $mode == kvpair || $mode == kvpairtests ]]; then
  # kv-head pairing (SWA_OPS_KV_PAIR, notes/decode.md): its tests and the tests of the kernels
  # beside it (both switch settings inside the tests).
  t0=$(date +%s)
  timeout 420 python3 -m pytest tests/test_cuda_paged_attention.py -q -p no:cacheprovider --maxfail=20 \
    -k "kv_pair or swapped_tiles or fp8 or gqa or block_sizes or sinks or soft_cap or graph" 2>&1 \
    | tee "$OUT/tests_kvpair.log" | tail -15
  echo "kv-pair tests: $(( $(date +%s) - t0 )) s"
fi
if [[ $mode == kvpair || $mode == kvpairbench ]]; then
  # Interleaved A/B in one process per setting (the switch is read per call; processes keep the
  # runs independent): paired rows (mistral-32k-fp8, the fp8 layout in bf16, bf16-d64) and
  # controls that never pair (mistral-32k and mistral-128k: bf16 D = 128; phi3: bf16 D = 96).
  for kp in 0 1 0 1; do
    echo "== SWA_OPS_KV_PAIR=$kp"
    SWA_OPS_KV_PAIR=$kp timeout 90 python3 notes/row_probe.py --decode --peers none --no-warmup \
      --shapes mistral-32k,mistral-32k-fp8,phi3,mistral-128k,bf16-d64-kv8,bf16-d64 \
      --json "$OUT/bench_kvpair${kp}_$SECONDS.json" 2>&1 | grep -v Warn | grep -E "shape|mistral|phi3|d64"
  done
  # Probe: the paired fp8 row without its split (128 CTAs, no merge; SWA_OPS_WAVES is read once
  # per process), to see what the merge and the second partition cost.
  echo "== SWA_OPS_KV_PAIR=1 SWA_OPS_WAVES=0.5"
  SWA_OPS_KV_PAIR=1 SWA_OPS_WAVES=0.5 timeout 60 python3 notes/row_probe.py --decode --peers none \
    --no-warmup --shapes mistral-32k-fp8,bf16-d64-kv8 --json "$OUT/bench_kvpair1_waves05.json" 2>&1 \
    | grep -v Warn | grep -E "shape|mistral|d64"
fi
if [[ $mode == persist128 ]]; then
  # The persistent prefill grid as the default at D <= 128 (notes/prefill.md, "Persistent grid by
  # default at D <= 128"): the host model, the prefill tests (default, override 1 with 2 SMs,
  # override 0, and which kernel ran by name), then the probe interleaving PERSIST=0/1 on the same
  # tensors (gemma3-prefill, D = 256, runs the plain grid either way: the control), then the
  # bench's prefill rows with the default. Budget: build ~1 min, tests <= 4, probe <= 1.5, bench
  # <= 2.
  python3 tools/ws_model.py 2>&1 | tee "$OUT/ws_model.log"
  t0=$(date +%s)
  timeout 240 python3 -m pytest tests/test_cuda_prefill.py -q -p no:cacheprovider --maxfail=10 2>&1 \
    | tee "$OUT/test_prefill.log" | tail -30
  echo "prefill tests: $(( $(date +%s) - t0 )) s"
  t0=$(date +%s)
  timeout 90 python3 notes/prefill_probe.py --ab SWA_OPS_PREFILL_PERSIST=0,1 2>&1 \
    | tee "$OUT/prefill_probe_persist.log"
  echo "probe: $(( $(date +%s) - t0 )) s"
  t0=$(date +%s)
  timeout 120 python3 -m swa_ops.bench --prefill --peers none --json "$OUT/bench_prefill.json" 2>&1 \
    | grep -v Warn | tee "$OUT/bench_prefill.log" | tail -12
  echo "bench: $(( $(date +%s) - t0 )) s"
fi
if [[ $mode == tail ]]; then
  # The prefill tail split (SWA_OPS_PREFILL_TAIL_SPLIT; notes/prefill.md): its tests on the build,
  # then on a mutant that merges nothing (they must fail there), sanitizers over one, the whole
  # prefill file, then the probe and the bench's Mistral rows with the split off / on.
  rm -rf /tmp/v_mut && mkdir -p /tmp/v_mut && cp -r setup.py swa_ops csrc /tmp/v_mut/ && \
    ( cd /tmp/v_mut && SWA_OPS_HEAD_SIZES=128 NVCC_APPEND_FLAGS="-DSWA_OPS_WS_TAIL_MUTANT" TORCH_CUDA_ARCH_LIST=9.0a \
      MAX_JOBS=4 python3 setup.py build_ext --inplace > "$OUT/build_mut.log" 2>&1; echo "mutant build rc $?" ) &
  t0=$(date +%s)
  timeout 150 python3 -m pytest tests/test_cuda_prefill.py -q -p no:cacheprovider -k "tail_split" 2>&1 \
    | tee "$OUT/test_tail.log" | tail -6
  echo "tail tests: $(( $(date +%s) - t0 )) s"
  wait
  echo "== the mutant (merges nothing): these must fail"
  ( cd /tmp/v_mut && PYTHONPATH=/tmp/v_mut timeout 150 python3 -m pytest $OLDPWD/tests/test_cuda_prefill.py -q \
    -p no:cacheprovider -k "tail_split and unset" --rootdir $OLDPWD 2>&1 | tail -3 )
  for tool in memcheck synccheck; do
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 100 compute-sanitizer --tool $tool --print-limit 5 python3 -m pytest \
      tests/test_cuda_prefill.py -q -p no:cacheprovider -x -k "test_prefill_tail_split and chunked-8pieces-unset-1" \
      2>&1 | tail -2 | tee "$OUT/san_tail_$tool.log"
  done
  t0=$(date +%s)
  timeout 240 python3 -m pytest tests/test_cuda_prefill.py -q -p no:cacheprovider --maxfail=10 2>&1 \
    | tee "$OUT/test_prefill.log" | tail -4
  echo "prefill tests: $(( $(date +%s) - t0 )) s"
  timeout 90 python3 notes/prefill_probe.py mistral-prefill chunked-b8 --ab SWA_OPS_PREFILL_TAIL_SPLIT=0,1 2>&1 \
    | grep -v "max abs" | tee "$OUT/prefill_probe_tail.log"
  mistral_rows_ab SWA_OPS_PREFILL_TAIL_SPLIT tail
fi
if [[ $mode == tma ]]; then
  # TMA copies in the persistent D = 128 prefill (SWA_OPS_PREFILL_TMA; notes/prefill.md, "TMA
  # producer"): its tests first (stop at the first failure), memcheck over one of them, the whole
  # prefill file, then the probe and the bench's Mistral rows with TMA off / on interleaved.
  t0=$(date +%s)
  timeout 150 python3 -m pytest tests/test_cuda_prefill.py -q -p no:cacheprovider -x -k tma 2>&1 \
    | tee "$OUT/test_tma.log" | tail -15
  echo "tma tests: $(( $(date +%s) - t0 )) s"
  timeout 120 compute-sanitizer --tool memcheck --print-limit 5 python3 -m pytest tests/test_cuda_prefill.py -q \
    -p no:cacheprovider -x -k "test_prefill_tma and 128-require-16-contiguous" > "$OUT/memcheck_tma.log" 2>&1
  tail -4 "$OUT/memcheck_tma.log"
  t0=$(date +%s)
  timeout 240 python3 -m pytest tests/test_cuda_prefill.py -q -p no:cacheprovider --maxfail=10 -k "not tma" 2>&1 \
    | tee "$OUT/test_prefill.log" | tail -12
  echo "prefill tests: $(( $(date +%s) - t0 )) s"
  timeout 90 python3 notes/prefill_probe.py mistral-prefill chunked-b8 --ab SWA_OPS_PREFILL_TMA=0,1 2>&1 \
    | tee "$OUT/prefill_probe_tma.log"
  mistral_rows_ab SWA_OPS_PREFILL_TMA tma
fi
if [[ $mode == prefillws ]]; then
  # The warp-specialized prefill (prefill_ws.h): prefill tests (default path = SWA_OPS_PREFILL_WS=2;
  # the tests also force 0 and 1), then the probe per kernel on one warm machine, then (SANITIZE=1)
  # memcheck and synccheck over a few prefill tests.
  t0=$(date +%s)
  timeout 300 python3 -m pytest tests/test_cuda_prefill.py -q -p no:cacheprovider --maxfail=10 2>&1 \
    | tee "$OUT/test_prefill.log" | tail -30
  echo "prefill tests: $(( $(date +%s) - t0 )) s"
  for ws in 2 1 0; do
    echo "== SWA_OPS_PREFILL_WS=$ws"
    SWA_OPS_PREFILL_WS=$ws timeout 90 python3 notes/prefill_probe.py 2>&1 | tee "$OUT/prefill_probe_ws$ws.log"
  done
  # Sanitizers only with SANITIZE=1 (a second call: build + tests + probes fill most of one).
  if [[ ${SANITIZE:-0} == 1 ]]; then
    for tool in memcheck synccheck; do
      PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 150 compute-sanitizer --tool $tool --error-exitcode 9 \
        python3 -m pytest tests/test_cuda_prefill.py -q -p no:cacheprovider -x \
        -k "gqa and h16-4 or block_sizes or sinks_gptoss or soft_cap_gemma2" 2>&1 | tail -6 \
        | tee "$OUT/sanitizer_$tool.log"
    done
  fi
fi
if [[ $mode == fiprefill ]]; then
  t0=$(date +%s)
  timeout 120 python3 -m pytest tests/test_cuda_prefill.py -q -p no:cacheprovider --maxfail=5 2>&1 \
    | tee "$OUT/test_prefill.log" | tail -3
  echo "prefill tests: $(( $(date +%s) - t0 )) s"
  # The persistent grid (default at D 64 / 128) under memcheck and synccheck: mixed chunks, soft-cap
  # and sinks, each switch setting (run 50; PERSIST_SAN=1).
  for tool in ${PERSIST_SAN:+memcheck synccheck}; do
    t0=$(date +%s)
    PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 120 compute-sanitizer --tool $tool --error-exitcode 9 \
      python3 -m pytest tests/test_cuda_prefill.py -q -p no:cacheprovider -x \
      -k "test_prefill_persistent and bf16 and not 192 and not 256 and not 96 and not many and not graph and not default" \
      2>&1 | tail -3 | tee "$OUT/sanitizer_persist_$tool.log"
    echo "$tool: $(( $(date +%s) - t0 )) s"
  done
fi
if [[ ( $mode == fidecode || $mode == fiprefill ) && -z ${NO_BENCH:-} ]]; then
  # The side-by-side tables, one section per call (FlashInfer's JIT warm-up is paid per machine).
  sec=${mode#fi}
  timeout 500 python3 -m swa_ops.bench --$sec --json "$OUT/bench_$sec.json" --plot "$OUT/bench_$sec.png" "$@" 2>&1 \
    | grep -v Warn | tee "$OUT/bench_$sec.log" | tail -45
fi
if [[ $mode == suite ]]; then
  # Everything on the GPU: the whole suite, memcheck over the new multi-token/prefill paths, and
  # the bench's swa_ops-only rows (no peers) as a smoke test of its new sections.
  t0=$(date +%s)
  timeout 420 python3 -m pytest tests -q -p no:cacheprovider 2>&1 | tee "$OUT/test_all.log" | tail -15
  echo "full suite: $(( $(date +%s) - t0 )) s"
  t0=$(date +%s)
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 \
    python3 -m pytest tests/test_cuda_multitoken.py tests/test_cuda_prefill.py -q -p no:cacheprovider -x \
    -k "uncovered or positions or edges or split or gqa or block_sizes or sinks_gptoss" 2>&1 | tail -6 | tee "$OUT/sanitizer.log"
  echo "sanitizer: $(( $(date +%s) - t0 )) s"
  # fp8 decode (operands built in registers from raw e4m3 bytes): blocks 8/32, D 64/80/128/256.
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 \
    python3 -m pytest tests/test_cuda_paged_attention.py -q -p no:cacheprovider -x \
    -k "test_fp8_cache_blocks_gqa_softcap_sinks or (test_fp8_cache and bfloat16 and 2047 and (80 or 256))" 2>&1 \
    | tail -4 | tee "$OUT/sanitizer_fp8.log"
  timeout 150 python3 -m swa_ops.bench --peers none --json "$OUT/bench_nopeers.json" 2>&1 | grep -v Warn | tee "$OUT/bench_nopeers.log" | tail -40
fi
if [[ $mode == check || $mode == perf ]]; then
  t0=$(date +%s)
  python3 -m pytest tests -q -p no:cacheprovider 2>&1 | tee "$OUT/test_all.log" | tail -8
  echo "full suite: $(( $(date +%s) - t0 )) s"
fi
if [[ $mode == perf ]]; then
  for fm in 1 0; do
    echo "== SWA_OPS_FUSED_MERGE=$fm"
    SWA_OPS_FUSED_MERGE=$fm python3 -m swa_ops.bench --peers none --json "$OUT/perf_fm$fm.json" "$@" 2>&1 \
      | grep -v Warn | tee "$OUT/perf_fm$fm.log"
  done
fi
if [[ $mode == check ]]; then
  # compute-sanitizer over a representative subset: splits, windows, GQA, block 8, lengths 0/1
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 300 compute-sanitizer --tool memcheck --error-exitcode 9 \
    python3 -m pytest tests/test_cuda_paged_attention.py -q -p no:cacheprovider \
    -k "test_block_sizes or test_variable_lengths or test_gqa_ratios or test_sinks_with_split or reshape_and_cache or (aiter_grid and bfloat16 and 16-h32-4 and 128 and 16-)" \
    2>&1 | tail -6 | tee "$OUT/sanitizer.log"
  python3 -m swa_ops.bench --peers none --json "$OUT/bench_nopeers.json" "$@" 2>&1 | grep -v Warn | tee "$OUT/bench_nopeers.log"
fi
if [[ $mode == debug ]]; then
  cat > /tmp/seg.py <<'PY'
import torch, swa_ops
from tests.test_cuda_paged_attention import make_case
q, kc, vc, bt, lens = make_case([20], 8, 2, 72, 16, 0, torch.bfloat16)
try:
    torch.ops.swa_ops.paged_attention(q, kc, vc, bt, lens, 0.1)
except RuntimeError as e:
    print("raised:", str(e)[:200])
PY
  PYTHONPATH=$PWD timeout 120 cuda-gdb -batch -ex run -ex bt --args python3 /tmp/seg.py 2>&1 | grep -v "^\[New Thread\|^\[Thread" | tail -40 | tee "$OUT/seg.log"
fi
if [[ $mode == profile || $mode == debug ]]; then
  for sh in ${PROFILE_SHAPES:-mistral-32k gptoss}; do
    timeout 200 ncu --kernel-name regex:decode_mma --launch-skip 2 --launch-count 1 \
      --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
      --section WarpStateStats --section LaunchStats --section SchedulerStats \
      python3 notes/profile_decode.py $sh > "$OUT/ncu_$sh.txt" 2>&1
    grep -E "DRAM Throughput|Memory Throughput|Duration|Achieved Occupancy|Registers|Theoretical Occupancy|Block Limit|Stall|Warp Cycles|Issued Warp|No Eligible|L2 Hit|Mem Busy|Max Bandwidth" "$OUT/ncu_$sh.txt" | head -40
  done
fi
if [[ $mode == sweep || $mode == debug ]]; then
  for c in ${SWEEP:-2 4 8}; do
    echo "== SWA_OPS_WAVES=$c"
    SWA_OPS_WAVES=$c python3 -m swa_ops.bench --peers none --breakdown --json "$OUT/sweep_$c.json" "$@" 2>&1 \
      | grep -v Warn | tee "$OUT/sweep_$c.log"
  done
fi
if [[ $mode == final ]]; then
  # For the lead: where the int64-formatting segfault's symbol comes from.
  so=$(ls swa_ops/_C*.so); { nm -D "$so" | grep -i "_M_insert" ; ldd "$so" | grep -E "stdc|gcc"; } > "$OUT/so_symbols.txt" 2>&1
fi
if [[ $mode == bench || $mode == all || $mode == final ]]; then
  python3 -m swa_ops.bench --json "$OUT/bench.json" --plot "$OUT/bench.png" "$@" 2>&1 \
    | tee "$OUT/bench.log"
fi
