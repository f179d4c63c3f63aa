#!/usr/bin/env bash
# HIP portability check (issue 7): compiles every kernel template the library dispatches for an AMD
# Instinct target with Debian's hipcc, torch-free and without a GPU. Compiles only; nothing runs.
#
#   bash .ci/hip_check.sh            # as CI runs it (installs hipcc with apt when missing; root)
#   SWA_OPS_HIP_ARCH=gfx90a bash .ci/hip_check.sh   # force a target
#
# Target: gfx942 (MI300) when the installed compiler knows it, else gfx90a (MI200). Warnings are
# printed; any error fails the script, as does a device object without the kernels. Then two CPU
# tests run the code only HIP builds use (csrc/hip_check/*_test.*).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)

if ! command -v hipcc >/dev/null 2>&1; then
  echo "hip_check: hipcc not found; installing Debian's hipcc (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends hipcc >/dev/null
  echo "hip_check: hipcc installed in $(( $(date +%s) - t0 )) s"
fi
# Compile for AMD even where a CUDA toolkit is installed: hipcc would otherwise pick nvcc.
export HIP_PLATFORM=amd HIP_COMPILER=clang
ver=$(hipcc --version 2>/dev/null || true)
echo "hip_check: hipcc $(grep -m1 'HIP version' <<<"$ver" | sed 's/.*: //'), $(grep -m1 'clang version' <<<"$ver")"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Ask the compiler, don't assume: a trivial kernel must compile for the target.
probe() {
  printf '#include <hip/hip_runtime.h>\n__global__ void k(int* p) { p[threadIdx.x] = warpSize; }\n' \
    > "$tmp/probe.hip"
  hipcc --offload-arch="$1" -c "$tmp/probe.hip" -o "$tmp/probe.o" >/dev/null 2>&1
}
if [[ -n "${SWA_OPS_HIP_ARCH:-}" ]]; then
  arch=$SWA_OPS_HIP_ARCH
  echo "hip_check: target $arch (SWA_OPS_HIP_ARCH)"
elif probe gfx942; then
  arch=gfx942
  echo "hip_check: target gfx942 (MI300; this hipcc knows it)"
elif probe gfx90a; then
  arch=gfx90a
  echo "hip_check: target gfx90a (MI200; this hipcc does not know gfx942)"
else
  echo "hip_check: FAIL: the installed hipcc compiles neither gfx942 nor gfx90a" >&2
  exit 1
fi

# The flags a ROCm torch's CUDAExtension gives hipcc (torch.utils.cpp_extension's COMMON_HIP_FLAGS
# and COMMON_HIPCC_FLAGS, -fno-gpu-rdc) plus setup.py's own; warnings on.
tu=csrc/hip_check/instantiate_all.hip
flags=(--offload-arch="$arch" -fno-gpu-rdc -fPIC -O3 -std=c++17
       -D__HIP_PLATFORM_AMD__=1 -DUSE_ROCM=1 -DCUDA_HAS_FP16=1
       -D__HIP_NO_HALF_OPERATORS__=1 -D__HIP_NO_HALF_CONVERSIONS__=1
       -Wall -Wextra -I csrc/include)
echo "hip_check: hipcc ${flags[*]} -c $tu"
t1=$(date +%s)
status=0
hipcc "${flags[@]}" -c "$tu" -o "$tmp/instantiate_all.o" > "$tmp/log" 2>&1 || status=$?
t2=$(date +%s)
nwarn=$(grep -c ': warning: ' "$tmp/log" || true)
nuniq=$( { grep ': warning: ' "$tmp/log" || true; } | sort -u | wc -l)
if [[ $status -ne 0 ]]; then
  cat "$tmp/log" >&2
  echo "hip_check: FAIL: $tu does not compile for $arch (hipcc exit $status, after $((t2 - t1)) s)" >&2
  exit 1
fi
# Each warning repeats once per instantiation and compiler pass: show each distinct one once.
if [[ $nwarn -gt 0 ]]; then
  echo "hip_check: distinct warnings (of $nwarn):"
  grep ': warning: ' "$tmp/log" | sort | uniq -c | sed 's/^/  /'
fi

# The device code object must hold the kernels (a guard that compiled them away would pass above).
llvm_tool() {  # $1 from PATH, else from the newest /usr/lib/llvm-*/bin (Debian's layout)
  command -v "$1" || { ls /usr/lib/llvm-*/bin/"$1" 2>/dev/null | sort -V | tail -1; } || true
}
bundler=$(llvm_tool clang-offload-bundler)
nm=$(llvm_tool llvm-nm)
if [[ -z "$bundler" || -z "$nm" ]] || ! command -v objcopy >/dev/null; then
  echo "hip_check: WARNING: no clang-offload-bundler/llvm-nm/objcopy: kernel listing skipped"
else
  objcopy -O binary --only-section=.hip_fatbin "$tmp/instantiate_all.o" "$tmp/fatbin"
  "$bundler" --unbundle --type=o --input="$tmp/fatbin" \
    --targets="hipv4-amdgcn-amd-amdhsa--$arch" --output="$tmp/device.co"
  "$nm" -C "$tmp/device.co" | grep ' T ' | sed -E 's/.* T (void )?swa_ops::([A-Za-z0-9_]+)[<(].*/\2/' \
    | sort | uniq -c > "$tmp/kernels"
  echo "hip_check: kernels in the $arch code object:" "$(awk '{printf "%s%s x%s", (NR > 1 ? ", " : ""), $2, $1}' "$tmp/kernels")"
  [[ -s "$tmp/kernels" ]] || { echo "hip_check: FAIL: no kernel in the code object" >&2; exit 1; }
  # Every kernel the device headers define for ROCm must be there: preprocess all of them as a
  # ROCm build sees them (so NVIDIA-only kernels behind #ifndef USE_ROCM drop out) and compare.
  for h in csrc/include/swa_ops/*.h; do echo "#include \"${h#csrc/include/}\""; done \
    > "$tmp/all_headers.hip"
  hipcc -E --cuda-device-only --offload-arch="$arch" -std=c++17 -D__HIP_PLATFORM_AMD__=1 \
    -DUSE_ROCM=1 -I csrc/include "$tmp/all_headers.hip" -o "$tmp/all_headers.i"
  missing=0
  for k in $(python3 - "$tmp/all_headers.i" <<'PY'
import re, sys
text, ours = open(sys.argv[1]).read(), []
# Keep only the text of our headers (the preprocessor's line markers say which file follows).
for chunk in re.split(r'^# \d+ "', text, flags=re.M):
    if chunk.startswith("csrc/include/swa_ops/"):
        ours.append(chunk)
kernel = r"__attribute__\(\(global\)\)\s*void\s*(?:__attribute__\(\([^;{]*?\)\)\)\s*)*(\w+)\s*\("
print("\n".join(sorted({m.group(1) for c in ours for m in re.finditer(kernel, c)})))
PY
  ); do
    if ! grep -q " $k\$" "$tmp/kernels"; then
      echo "hip_check: FAIL: $k is defined for ROCm in csrc/include/swa_ops but not compiled:" \
        "no launcher that $tu reaches launches it (add one there, or keep the kernel" \
        "behind #ifndef USE_ROCM if it is NVIDIA-only)" >&2
      missing=1
    fi
  done
  [[ $missing -eq 0 ]] || exit 1
fi
# The code only HIP builds run, run here on the CPU: compat.h's bit-level bf16/fp8 conversions
# (host side of __host__ __device__ functions) and the portable ldmatrix/mma.sync path (32 threads
# as the lanes of a warp), each against an independent reference.
hipcc --offload-arch="$arch" -O2 -std=c++17 -DUSE_ROCM=1 -Wall -Wextra -I csrc/include \
  csrc/hip_check/conversions_test.hip -o "$tmp/conversions_test"
"$tmp/conversions_test"
"${CXX:-g++}" -std=c++20 -O1 -pthread -Wall -Wextra -Wno-unknown-pragmas -I csrc/include \
  csrc/hip_check/mma_portable_test.cpp -o "$tmp/mma_portable_test"
"$tmp/mma_portable_test"

echo "hip_check: OK: $tu compiled for $arch in $((t2 - t1)) s ($nwarn warnings, $nuniq distinct); total $(( $(date +%s) - t0 )) s"
