#!/usr/bin/env bash
# Device calls of the seventh decode session (notes/decode.md). Usage (device): bash notes/seventh.sh
# MODE (carry .whl and .peers). MODE one of
#   timing (run 159) notes/timing_probe.py: the bench's graph timing as it is, with the stream held
#          while the host enqueues the replays, and with 64 calls per graph; swa_ops and FlashInfer
#   bench  (run 160) with the bench's graph timing held (bench.hold_stream): the bench tests on the
#          GPU, then the decode bench beside FlashInfer (the README table)
#   gapx   (run 161) where the full bench's seed gap comes from: three rows with FlashInfer on a
#          fresh machine (its JIT warm-up first), the same again (JIT cached), without peers, and
#          without peers after 240 s of idle GPU
#   gapw   (run 162) the full JIT warm-up alone (--warmup-only), then three rows in a new process
#          with FlashInfer (cached), then without peers; nvidia-smi dmon (clocks, power,
#          temperatures) throughout
#   inproc (run 163; on run 162's warm machine, its build and JIT cache) in one process each: the
#          bench's whole decode warm-up (cached: 9.5 s) then seed and single-128k with FlashInfer;
#          a context made, 150 s of sleep, the same rows
#   idle   (run 164; the same machine) notes/idle_probe.py ctx / ctx-load / late, 120 s each
#   bench  (run 165, after the fresh-process change) as for run 160
#   seedpeak (not run yet) notes/read_peak.cu seed: the loads-only bound for seed's geometry
set -uo pipefail
mode=${1:?mode: timing | bench | gapx | gapw | inproc | idle | seedpeak}
source notes/device_env.sh
case $mode in
  timing)
    build
    source .peers/activate.sh
    timeout 400 python3 notes/timing_probe.py --peers --shapes seed,single-128k,mistral-128k,gptoss 2>&1 \
      | grep -v Warn | tee "$OUT/timing.log" ;;
  bench)
    build
    timeout 60 python3 -m pytest -q tests/test_bench.py 2>&1 | tail -3
    source .peers/activate.sh
    timeout ${BENCH_S:-520} python3 -m swa_ops.bench --decode --json "$OUT/bench_decode.json" --plot "$OUT/bench_decode.png" 2>&1 \
      | grep -v Warn | tee "$OUT/bench_decode.log" | tail -32 ;;
  gapx)
    build
    source .peers/activate.sh
    rows="--decode --shapes seed,single-128k,mistral-128k"
    for k in fresh cached; do
      echo "== $k ($(( $(date +%s) - t0 )) s)"
      timeout 200 python3 -m swa_ops.bench $rows --peers flashinfer 2>&1 | grep -v Warn | grep -E "warm-up done|copy|^ +(seed|single|mistral)"
    done
    echo "== no peers ($(( $(date +%s) - t0 )) s)"
    timeout 100 python3 -m swa_ops.bench $rows --peers none --no-warmup 2>&1 | grep -E "copy|^ +(seed|single|mistral)"
    sleep 240
    echo "== no peers after 240 s idle ($(( $(date +%s) - t0 )) s)"
    timeout 100 python3 -m swa_ops.bench $rows --peers none --no-warmup 2>&1 | grep -E "copy|^ +(seed|single|mistral)" ;;
  gapw)
    nvidia-smi dmon -s pucm -d 1 -o T > "$OUT/dmon.log" 2>&1 &
    build
    source .peers/activate.sh
    rows="--decode --shapes seed,single-128k,mistral-128k"
    timeout 420 python3 -m swa_ops.bench --decode --warmup-only 2>&1 | grep -E "warm-up|FAILED"
    for k in "flashinfer --no-warmup" "none --no-warmup" "none --no-warmup"; do
      echo "== peers $k ($(( $(date +%s) - t0 )) s, $(date +%T))"
      timeout 100 python3 -m swa_ops.bench $rows --peers $k 2>&1 | grep -E "copy|^ +(seed|single|mistral)"
    done
    kill %1 ;;
  inproc)
    source .peers/activate.sh >/dev/null 2>&1
    cat > /tmp/inproc.py <<'PY'
import argparse, sys, time, torch
from swa_ops import bench
ap = argparse.Namespace(calls=30, breakdown=False)
peers = ["flashinfer", "sdpa", "flex"]
print("device", torch.cuda.get_device_name(), flush=True)
if sys.argv[1] == "warm":
    bench.warm_up(bench.warmup_tasks(bench.SHAPES, [], peers), 0, 400)
else:
    torch.zeros(1, device="cuda"); time.sleep(float(sys.argv[1]))
rows = [s for s in bench.SHAPES if s.name in ("seed", "single-128k")]
bench.run_decode(ap, rows, ["flashinfer"])
PY
    timeout 300 python3 /tmp/inproc.py warm 2>&1 | grep -E "warm-up done|^ +(seed|single)|device"
    timeout 200 python3 /tmp/inproc.py 150 2>&1 | grep -E "^ +(seed|single)|device" ;;
  idle)
    for m in ctx ctx-load late; do
      timeout 180 python3 notes/idle_probe.py $m 120 2>&1 | grep -E "==|^ +(seed|single)"
    done ;;
  seedpeak)
    nvcc -O3 -std=c++17 -arch=sm_90a -o /tmp/read_peak notes/read_peak.cu && /tmp/read_peak seed \
      | tee "$OUT/seedpeak.log" ;;
esac
echo "total: $(( $(date +%s) - t0 )) s"
