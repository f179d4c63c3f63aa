# Sourced by notes/gpu_run.sh and notes/cvt_ab.sh (device side): start_variant_builds JOBS builds
# each "name:flag1,flag2" of FP8_VARIANTS in place in a copy, /tmp/v_<name>, in the background
# (head sizes VARIANT_HEADS, default 128; NVCC_APPEND_FLAGS = the flags); logs to
# $OUT/build_<name>.log. The caller waits.
start_variant_builds() {
  local jobs=$1 spec name flags
  for spec in ${FP8_VARIANTS:-}; do
    name=${spec%%:*}; flags=${spec#*:}; flags=${flags//,/ }
    rm -rf /tmp/v_$name && mkdir -p /tmp/v_$name && cp -r setup.py swa_ops csrc /tmp/v_$name/ && \
      ( cd /tmp/v_$name && SWA_OPS_HEAD_SIZES=${VARIANT_HEADS:-128} NVCC_APPEND_FLAGS="$flags" \
        TORCH_CUDA_ARCH_LIST=9.0a MAX_JOBS=$jobs python3 setup.py build_ext --inplace \
        > "$OUT/build_$name.log" 2>&1; echo "$name build rc $?" ) &
  done
}
