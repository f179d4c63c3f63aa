// Vendor portability layer for swa_ops' device code (CUDA and HIP), torch-free.
//
// Everything vendor-specific the kernels use lives here: the warp width, shuffles, the 16-bit
// float types and their conversions, fp8 e4m3 conversions, 16-byte vector loads and async copies.
// Inline PTX appears only behind `#ifndef USE_ROCM`, always with a portable path beside it, so a
// hipified build compiles the same kernels.
#pragma once

#include <stdint.h>

#ifdef USE_ROCM
// No hip_bf16.h / fp8 headers: ROCm 5.2 (Debian's hipcc, which CI compiles with) has neither, and
// the bit-level conversions below are what the compiler emits on gfx90a/gfx942 anyway.
#include <hip/hip_fp16.h>
#include <hip/hip_runtime.h>
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#endif

#define SWA_HD __host__ __device__ __forceinline__
#define SWA_D __device__ __forceinline__
// A kernel parameter whose address the kernel takes (a TMA tensor map inside it): CUDA's
// __grid_constant__; nothing on AMD, where no kernel takes it.
#ifdef USE_ROCM
#define SWA_GRID_CONSTANT
#else
#define SWA_GRID_CONSTANT __grid_constant__
#endif

namespace swa_ops {

#ifdef USE_ROCM
// Wavefront width at compile time: 64 on CDNA (gfx90a, gfx942), 32 on RDNA. clang defines
// __AMDGCN_WAVEFRONT_SIZE for the target being compiled (the host pass sees 64); releases that
// drop the macro are taken to be CDNA. Host code must not size launches from this constant: it
// asks the device with device_warp_size() below.
#ifdef __AMDGCN_WAVEFRONT_SIZE
constexpr int kWarpSize = __AMDGCN_WAVEFRONT_SIZE;
#else
constexpr int kWarpSize = 64;
#endif
// bf16 as its 16 bits (the layout of torch's BFloat16): the kernels only load, store and convert
// it, and hip_bf16.h's __hip_bfloat16 is missing from ROCm 5.2 and changed shape across releases.
struct alignas(2) bf16_t {
  uint16_t x;
};
using fp16_t = __half;
#else
constexpr int kWarpSize = 32;
using bf16_t = __nv_bfloat16;
using fp16_t = __half;
#endif

#ifdef USE_ROCM
// The torch-free launchers (launch.h, launch_impl.h, csrc/cuda/*.cu) spell the runtime API the CUDA
// way. A ROCm build of torch hipifies them, and this block with them (into harmless `#define hipX
// hipX` lines); compiled directly with hipcc -DUSE_ROCM, as CI's .ci/hip_check.sh does, these
// names map onto HIP's.
#define cudaError_t hipError_t
#define cudaSuccess hipSuccess
#define cudaStream_t hipStream_t
#define cudaGetDevice hipGetDevice
#define cudaGetLastError hipGetLastError
#define cudaFuncSetAttribute hipFuncSetAttribute
#define cudaFuncAttributeMaxDynamicSharedMemorySize hipFuncAttributeMaxDynamicSharedMemorySize
#endif

// Warp width of device `dev` at run time, 0 if it cannot be read. Host code sizes launches from
// this, never from kWarpSize: the host pass cannot know which target's code will run.
inline int device_warp_size(int dev) {
  int w = 0;
#ifdef USE_ROCM
  if (hipDeviceGetAttribute(&w, hipDeviceAttributeWarpSize, dev) != hipSuccess) w = 0;
#else
  if (cudaDeviceGetAttribute(&w, cudaDevAttrWarpSize, dev) != cudaSuccess) w = 0;
#endif
  return w;
}

// ---------------------------------------------------------------------------------------------
// Shuffles. The CUDA forms need a member mask; HIP's take none (all lanes participate).
// The kernels are written for 32-lane warps (threadIdx.x / 32). On a 64-wide CDNA wavefront each
// wavefront holds two of them, and a lane_mask below 32 never leaves its half, so the same code
// is correct there.
template <typename T>
SWA_D T shfl_xor(T v, int lane_mask) {
#ifdef USE_ROCM
  return __shfl_xor(v, lane_mask);
#else
  return __shfl_xor_sync(0xffffffffu, v, lane_mask);
#endif
}

// True when `pred` holds on any lane of this lane's 32-lane warp; all its lanes must take part.
SWA_D bool warp_any(bool pred) {
#ifdef USE_ROCM
  // A wave64 ballot covers both warps of the wavefront: keep this warp's half.
  const unsigned long long b = __ballot(pred);
  return ((b >> (__lane_id() & 32u)) & 0xffffffffull) != 0;
#else
  return __any_sync(0xffffffffu, pred);
#endif
}

SWA_D void warp_sync() {
#ifdef USE_ROCM
  // A wavefront's lanes run in lockstep, so what is left of __syncwarp is memory order: shared
  // memory written by one lane is seen by the others' reads after this point, and the compiler
  // moves no shared-memory access across it (the portable cp_async16/ldmatrix rely on this).
  __builtin_amdgcn_fence(__ATOMIC_RELEASE, "wavefront");
  __builtin_amdgcn_wave_barrier();
  __builtin_amdgcn_fence(__ATOMIC_ACQUIRE, "wavefront");
#else
  __syncwarp();
#endif
}

// warp_sync over the lanes of `mask` only (the others may have exited).
SWA_D void warp_sync_lanes(unsigned mask) {
#ifdef USE_ROCM
  (void)mask;
  warp_sync();
#else
  __syncwarp(mask);
#endif
}

#ifdef USE_ROCM
// Lane index within a 32-lane warp and a shuffle among its lanes (width 32: on a 64-wide
// wavefront the two halves are separate warps). For mma_portable.h.
using smem_addr_t = const unsigned char*;  // a generic pointer into shared memory
SWA_D int lane32() { return static_cast<int>(__lane_id()) & 31; }
SWA_D uint32_t shfl32(uint32_t v, int src) { return __shfl(v, src, 32); }
SWA_D smem_addr_t shfl32(smem_addr_t p, int src) {
  return reinterpret_cast<smem_addr_t>(
      __shfl(static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(p)), src, 32));
}
#endif

// ---------------------------------------------------------------------------------------------
// Programmatic dependent launch (sm_90): a dependent kernel may start while its predecessor is
// still running and waits here for the predecessor's memory; the predecessor says when its
// dependents may be scheduled. No-ops elsewhere (then the stream order alone applies).
SWA_D void pdl_wait() {
#if !defined(USE_ROCM) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

SWA_D void pdl_launch_dependents() {
#if !defined(USE_ROCM) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// ---------------------------------------------------------------------------------------------
// exp2 in fp32. The softmax folds log2(e) into the logit scale so every exponential is one
// ex2.approx (MUFU) instruction on NVIDIA; exp2f is the portable spelling.
SWA_D float fast_exp2(float x) {
#ifdef USE_ROCM
  return exp2f(x);
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#endif
}

// tanh for the logit soft-cap. Not tanh.approx: its ~2^-11 relative error, times a cap of 50,
// moves logits by ~0.02, a 2% weight error, several times bf16's rounding. Through one exp2 and a
// division it is accurate to ~1e-7 absolute; |x| is clamped where tanh is 1.0f anyway.
SWA_D float soft_cap_tanh(float x) {
  x = fminf(fmaxf(x, -15.f), 15.f);
  const float e = fast_exp2(x * 2.8853900817779268f);  // e^(2x)
  return 1.f - __fdividef(2.f, e + 1.f);
}

// Raw QK^T accumulators -> logits in log2 units: cap_post * tanh(s * cap_pre) with a soft-cap,
// else s * scale_log2 (the kernels fold log2(e) and the scales into these factors). Applied
// before any mask, so a masked key weighs exactly 0 either way.
template <bool SOFTCAP, int N>
SWA_D void scale_logits(float (&s)[N][4], float scale_log2, float cap_pre, float cap_post) {
#pragma unroll
  for (int n = 0; n < N; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      if constexpr (SOFTCAP)
        s[n][e] = cap_post * soft_cap_tanh(s[n][e] * cap_pre);
      else
        s[n][e] *= scale_log2;
    }
}

// ---------------------------------------------------------------------------------------------
// 16-bit float conversions, written once for both element types so templates can stay generic.
template <typename T>
struct Half2Of;
template <>
struct Half2Of<fp16_t> {
#ifdef USE_ROCM
  using type = __half2;
#else
  using type = __half2;
#endif
};
template <>
struct Half2Of<bf16_t> {
#ifdef USE_ROCM
  using type = uint32_t;  // two bf16_t bit patterns, low half first
#else
  using type = __nv_bfloat162;
#endif
};

template <typename T>
SWA_D float to_float(T v);
template <>
SWA_D float to_float<fp16_t>(fp16_t v) { return __half2float(v); }
#ifdef USE_ROCM
// bf16 is the high half of an fp32: widening is a shift.
SWA_HD float bf16_bits_to_float(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
template <>
SWA_D float to_float<bf16_t>(bf16_t v) { return bf16_bits_to_float(v.x); }
#else
template <>
SWA_D float to_float<bf16_t>(bf16_t v) { return __bfloat162float(v); }
#endif

template <typename T>
SWA_D T from_float(float v);
template <>
SWA_D fp16_t from_float<fp16_t>(float v) { return __float2half_rn(v); }
#ifdef USE_ROCM
// fp32 -> bf16, round to nearest even as __float2bfloat16_rn; NaN stays a (quiet) NaN rather than
// rounding up into the exponent, infinities and overflow to inf as the rounding gives.
SWA_HD uint16_t float_to_bf16_bits(float v) {
  uint32_t u;
  memcpy(&u, &v, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
template <>
SWA_D bf16_t from_float<bf16_t>(float v) {
  bf16_t r;
  r.x = float_to_bf16_bits(v);
  return r;
}
#else
template <>
SWA_D bf16_t from_float<bf16_t>(float v) { return __float2bfloat16_rn(v); }
#endif

// Two floats packed into one 32-bit register of two 16-bit values (low half = a), the operand
// format of the tensor-core MMAs.
template <typename T>
SWA_D uint32_t pack2(float a, float b) {
  T lo = from_float<T>(a), hi = from_float<T>(b);
  uint16_t l = *reinterpret_cast<uint16_t*>(&lo), h = *reinterpret_cast<uint16_t*>(&hi);
  return static_cast<uint32_t>(l) | (static_cast<uint32_t>(h) << 16);
}

// The two 16-bit values of a 32-bit register, as floats.
template <typename T>
SWA_D void unpack2(uint32_t r, float& a, float& b) {
  uint16_t l = r & 0xffffu, h = r >> 16;
  a = to_float<T>(*reinterpret_cast<T*>(&l));
  b = to_float<T>(*reinterpret_cast<T*>(&h));
}

// ---------------------------------------------------------------------------------------------
// fp8 e4m3fn (bias 7, no infinities, 0x7f/0xff are NaN, largest finite 448).
//
// float -> e4m3fn with round-to-nearest-even, saturating to +-448. The caller divides by the scale
// and clamps first (swa_ops.reference.quantize_fp8 does x / scale, clamp(+-448), then the cast);
// the saturation only keeps a value that rounds above 448 finite, as the clamp already did.
SWA_HD uint8_t float_to_e4m3_portable(float x) {
  uint32_t bits;
  __builtin_memcpy(&bits, &x, 4);
  const uint8_t sign = (bits >> 24) & 0x80u;
  const uint32_t abs_bits = bits & 0x7fffffffu;
  if (abs_bits > 0x7f800000u) return sign | 0x7fu;  // NaN stays NaN
  float a;
  __builtin_memcpy(&a, &abs_bits, 4);
  if (a >= 448.0f) return sign | 0x7eu;  // saturate (also +-inf)
  // Smallest normal e4m3 is 2^-6; below it the spacing is fixed at 2^-9 (subnormals).
  if (a < 0.015625f) {
    // Scale so one subnormal step is 1.0, then round half to even in fp32 (exact: a * 2^9 < 8).
    const float q = rintf(a * 512.0f);  // rintf rounds half to even
    return sign | static_cast<uint8_t>(q);  // q == 8 lands on the smallest normal's encoding
  }
  // Normal: keep 3 mantissa bits, rounding the dropped 20 bits half to even.
  uint32_t m = abs_bits;
  const uint32_t lsb = (m >> 20) & 1u;
  m += 0x7ffffu + lsb;
  const uint32_t exp = (m >> 23) - 127 + 7;  // rebias; carry from rounding bumps the exponent
  const uint32_t man = (m >> 20) & 0x7u;
  return sign | static_cast<uint8_t>((exp << 3) | man);
}

SWA_D uint8_t float_to_e4m3(float x) {
#ifdef USE_ROCM
  return float_to_e4m3_portable(x);
#else
  // Hardware cvt.rn.satfinite.e4m3x2.f32 on sm_89+: round-to-nearest-even, saturating.
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
#endif
}

// e4m3fn -> float, exact.
SWA_HD float e4m3_to_float_portable(uint8_t v) {
  const uint32_t sign = static_cast<uint32_t>(v & 0x80u) << 24;
  const uint32_t exp = (v >> 3) & 0xfu, man = v & 0x7u;
  float f;
  if (exp == 0xf && man == 0x7) {
    const uint32_t nan = sign | 0x7fc00000u;
    __builtin_memcpy(&f, &nan, 4);
    return f;
  }
  if (exp == 0) {
    f = static_cast<float>(man) * 0.001953125f;  // man * 2^-9
    return sign ? -f : f;
  }
  const uint32_t bits = sign | ((exp - 7 + 127) << 23) | (man << 20);
  __builtin_memcpy(&f, &bits, 4);
  return f;
}

// e4m3fn -> float, exact: the hardware pair conversion on sm_89+, the bit-level one elsewhere.
SWA_D float fp8_e4m3_to_float(uint8_t v) {
#if !defined(USE_ROCM) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  const __half_raw h = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(v), __NV_E4M3);
  return __half2float(__half(h));
#else
  return e4m3_to_float_portable(v);
#endif
}

// Two e4m3fn values (low byte first) -> two fp16 values in one 32-bit register (low half first),
// exact (every e4m3 value is an fp16 value): one cvt.rn.f16x2.e4m3x2 on sm_89+.
SWA_D uint32_t e4m3x2_to_half2_bits(uint32_t pair) {
#if !defined(USE_ROCM) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  const __half2_raw h =
      __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(pair & 0xffffu), __NV_E4M3);
  return static_cast<uint32_t>(h.x) | (static_cast<uint32_t>(h.y) << 16);
#else
  return pack2<fp16_t>(e4m3_to_float_portable(static_cast<uint8_t>(pair & 0xffu)),
                       e4m3_to_float_portable(static_cast<uint8_t>((pair >> 8) & 0xffu)));
#endif
}

// Two bf16 values -> two fp16 values (exact in fp16's normal range; saturated at +-65504 rather
// than overflowing to inf).
SWA_D uint32_t bf16x2_to_half2_bits(uint32_t v) {
  float a, b;
  unpack2<bf16_t>(v, a, b);
  a = fminf(fmaxf(a, -65504.f), 65504.f);
  b = fminf(fmaxf(b, -65504.f), 65504.f);
  return pack2<fp16_t>(a, b);
}

// ---------------------------------------------------------------------------------------------
// 16-byte global loads/stores and async global->shared copies.
struct alignas(16) Vec16 {
  uint32_t w[4];
};

SWA_D Vec16 load16(const void* p) { return *reinterpret_cast<const Vec16*>(p); }
SWA_D void store16(void* p, const Vec16& v) { *reinterpret_cast<Vec16*>(p) = v; }

// The L2_SPAN cp_async16 asks for when streaming rows of `row_bytes`: 256 B for rows of >= 256 B
// (+1-2 % measured in decode at D = 128/256), 128 B for rows of >= 128 B, else none.
// SWA_OPS_NO_L2_HINT compiles plain copies, for comparison.
SWA_HD constexpr int l2_span_for_rows(int row_bytes) {
#ifdef SWA_OPS_NO_L2_HINT
  return 0;
#else
  return row_bytes >= 256 ? 256 : row_bytes >= 128 ? 128 : 0;
#endif
}

// Copies 16 bytes global -> shared; when `valid` is false it writes 16 zero bytes and reads
// nothing, so rows outside the visible range are never fetched yet hold finite values (a NaN left
// in shared memory would survive a zero softmax weight: 0 * NaN = NaN). L2_SPAN (128 or 256)
// asks L2 to fetch that whole aligned span per request: the rows streamed here are at least that
// long, so DRAM serves whole lines instead of 64-byte pieces requested one sector pair at a time.
// HINTED: with the L2 cache policy `pol` (l2_policy; decode_mma.h: K/V read once a call), for
// the 256-byte span only: the fp8 D = 128 edge tiles' .L2::cache_hint.L2::128B copies raised an
// illegal instruction on the H100 (run 171), so copies of 128-byte spans or none go unhinted.
// The 256-byte form runs without error through the whole GPU suite, the sanitizers and the
// benches; why a standalone kernel (notes/hint_probe.cu, run 173) faulted on every hinted form,
// this one included, is not understood.
template <int L2_SPAN = 0, bool HINTED = false>
SWA_D void cp_async16(void* smem, const void* gmem, bool valid, uint64_t pol = 0) {
#if !defined(USE_ROCM) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const int src_bytes = valid ? 16 : 0;
  if constexpr (HINTED && L2_SPAN == 256)
    asm volatile("cp.async.cg.shared.global.L2::cache_hint.L2::256B [%0], [%1], 16, %2, %3;\n"
                 ::"r"(s), "l"(gmem), "r"(src_bytes), "l"(pol));
  else if constexpr (L2_SPAN == 256)
    asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem),
                 "r"(src_bytes));
  else if constexpr (L2_SPAN == 128)
    asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem),
                 "r"(src_bytes));
  else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem),
                 "r"(src_bytes));
#else
  (void)pol;
  Vec16 v = {{0u, 0u, 0u, 0u}};
  if (valid) v = load16(gmem);
  store16(smem, v);
#endif
}

// Speculative reads for prefetching, allowed before pdl_wait(): an int read at L2 (never
// allocated in L1, so no stale line there can serve a later __ldg of the same address after the
// wait), and an L2 prefetch of the 128-byte line holding `gmem` (a hint: no data, no ordering).
// The value may predate the predecessor kernel's writes: use it only to choose what to prefetch.
SWA_D int ld_speculative(const int* gmem) {
#if !defined(USE_ROCM) && defined(__CUDA_ARCH__)
  int v;
  asm volatile("ld.global.cg.s32 %0, [%1];\n" : "=r"(v) : "l"(gmem));
  return v;
#else
  return *gmem;
#endif
}

SWA_D void prefetch_l2(const void* gmem) {
#if !defined(USE_ROCM) && defined(__CUDA_ARCH__)
  asm volatile("prefetch.global.L2 [%0];\n" ::"l"(gmem));
#else
  (void)gmem;
#endif
}

// L2 cache policies (sm_80+; 0 elsewhere, where the hinted accesses below are plain ones), for
// the decode (decode_mma.h, merge.h): its K/V stream, read once a call, goes evict_first; the
// split's partials, read once by the merge moments to tens of microseconds later while that
// stream sweeps far more than L2 holds, are stored evict_last so they are still in L2 then, and
// the merge discards their lines (never written back to DRAM); evict_unchanged is as if no policy
// were given.
enum class L2Priority { kEvictFirst, kEvictUnchanged, kEvictLast };

template <L2Priority P>
SWA_D uint64_t l2_policy() {
#if !defined(USE_ROCM) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint64_t pol;
  if constexpr (P == L2Priority::kEvictFirst)
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(pol));
  else if constexpr (P == L2Priority::kEvictLast)
    asm volatile("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;\n" : "=l"(pol));
  else
    asm volatile("createpolicy.fractional.L2::evict_unchanged.b64 %0, 1.0;\n" : "=l"(pol));
  return pol;
#else
  return 0;
#endif
}

SWA_D void store_l2_keep(float4* gmem, const float4& v, uint64_t pol) {
#if !defined(USE_ROCM) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("st.global.L2::cache_hint.v4.f32 [%0], {%1, %2, %3, %4}, %5;\n" ::"l"(gmem),
               "f"(v.x), "f"(v.y), "f"(v.z), "f"(v.w), "l"(pol)
               : "memory");
#else
  (void)pol;
  *gmem = v;
#endif
}

// Drops the 128-byte L2 line at `gmem` (128-byte aligned) without writing it back: only for
// data no one reads again before it is rewritten.
SWA_D void discard_l2_line(const void* gmem) {
#if !defined(USE_ROCM) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("discard.global.L2 [%0], 128;\n" ::"l"(gmem) : "memory");
#else
  (void)gmem;
#endif
}

SWA_D void cp_async_commit() {
#if !defined(USE_ROCM) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Waits until at most N committed groups of this thread are still in flight.
template <int N>
SWA_D void cp_async_wait() {
#if !defined(USE_ROCM) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

}  // namespace swa_ops
