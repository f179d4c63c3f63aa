// Tensor-core building blocks for sm_80+ (ldmatrix, mma.sync m16n8k16 with fp32 accumulate).
// HIP builds get mma_portable.h instead: the same functions and fragment layouts built from
// shuffles, so the kernels that use them compile and compute the same results there.
#pragma once

#include "swa_ops/compat.h"

namespace swa_ops {

#ifndef USE_ROCM
SWA_D uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Four 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i, register i receives
// matrix i with lane l holding row l/4, columns 2(l%4) and 2(l%4)+1.
SWA_D void ldmatrix_x4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

// Same, transposed: lane l receives column l/4, rows 2(l%4) and 2(l%4)+1 of each matrix.
SWA_D void ldmatrix_x4_trans(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2,
                             uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

// Two 8x8 b16 matrices (lanes 0..15 give the row addresses; the others' are ignored).
SWA_D void ldmatrix_x2(uint32_t addr, uint32_t& r0, uint32_t& r1) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r0), "=r"(r1)
               : "r"(addr));
}

// Two matrices, transposed (lanes 0..15 give the row addresses).
SWA_D void ldmatrix_x2_trans(uint32_t addr, uint32_t& r0, uint32_t& r1) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r0), "=r"(r1)
               : "r"(addr));
}

// Transposes an 8x8 b16 matrix held one word per lane (lane l: row l/4, columns 2(l%4) and
// 2(l%4)+1): lane l receives column l/4, rows 2(l%4) (low half) and 2(l%4)+1 (high half).
SWA_D uint32_t movmatrix_trans(uint32_t x) {
  uint32_t r;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(r) : "r"(x));
  return r;
}

// C[16x8] += A[16x16] * B[16x8] (A row-major, B column-major), fp32 accumulators.
// Fragments (lane l, r = l/4, c = 2(l%4)):
//   A: a[0] = (r, c..c+1), a[1] = (r+8, c..), a[2] = (r, c+8..), a[3] = (r+8, c+8..)
//   B: b[0] = (k = c..c+1, n = r), b[1] = (k = c+8.., n = r)
//   C: c[0..1] = (r, c..c+1), c[2..3] = (r+8, c..c+1)
template <typename T>
SWA_D void mma_16816(float* c, const uint32_t* a, uint32_t b0, uint32_t b1);

template <>
SWA_D void mma_16816<bf16_t>(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
SWA_D void mma_16816<fp16_t>(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

#endif  // !USE_ROCM

}  // namespace swa_ops

#ifdef USE_ROCM
#include "swa_ops/mma_portable.h"
#endif
