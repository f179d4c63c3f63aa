// Portable path of mma.h's tensor-core building blocks (ldmatrix, mma.sync m16n8k16), for HIP:
// the same operands and fragment layouts rebuilt from shuffles and plain shared-memory loads, with
// fp32 accumulation (in another order than the hardware's). Correct, not fast: AMD's speed needs an
// MFMA path. Included by mma.h on USE_ROCM builds.
//
// Needs, declared before it in namespace swa_ops (compat.h does on ROCm; the CPU test
// csrc/hip_check/mma_portable_test.cpp gives its own): SWA_D, smem_addr_t, lane32(),
// shfl32(uint32_t, int), shfl32(smem_addr_t, int) and unpack2<T>().
//
// A 32-lane "warp" is half a CDNA wavefront and every shuffle stays inside it. Like the
// instructions they replace, these must be called by all 32 lanes of a warp together, after a
// warp_sync() that orders the shared-memory writes they read.
#pragma once

namespace swa_ops {

SWA_D smem_addr_t smem_addr(const void* p) { return static_cast<smem_addr_t>(p); }

// Lanes 8i..8i+7 hold the row addresses of matrix i; lane l receives row l/4, columns 2(l%4)
// and 2(l%4)+1 (one 32-bit word) of each matrix.
SWA_D void ldmatrix_x4(smem_addr_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
  const int lane = lane32(), row = lane >> 2, word = lane & 3;
  uint32_t r[4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
    r[i] = reinterpret_cast<const uint32_t*>(shfl32(addr, 8 * i + row))[word];
  r0 = r[0]; r1 = r[1]; r2 = r[2]; r3 = r[3];
}

// Transposed: lane l receives column l/4 of rows 2(l%4) (low half) and 2(l%4)+1 (high half).
SWA_D void ldmatrix_x4_trans(smem_addr_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2,
                             uint32_t& r3) {
  const int lane = lane32(), col = lane >> 2, row = (lane & 3) * 2;
  uint32_t r[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const uint16_t lo = reinterpret_cast<const uint16_t*>(shfl32(addr, 8 * i + row))[col];
    const uint16_t hi = reinterpret_cast<const uint16_t*>(shfl32(addr, 8 * i + row + 1))[col];
    r[i] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
  }
  r0 = r[0]; r1 = r[1]; r2 = r[2]; r3 = r[3];
}

SWA_D void ldmatrix_x2(smem_addr_t addr, uint32_t& r0, uint32_t& r1) {
  const int lane = lane32(), row = lane >> 2, word = lane & 3;
  r0 = reinterpret_cast<const uint32_t*>(shfl32(addr, row))[word];
  r1 = reinterpret_cast<const uint32_t*>(shfl32(addr, 8 + row))[word];
}

SWA_D void ldmatrix_x2_trans(smem_addr_t addr, uint32_t& r0, uint32_t& r1) {
  const int lane = lane32(), col = lane >> 2, row = (lane & 3) * 2;
  uint32_t r[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const uint16_t lo = reinterpret_cast<const uint16_t*>(shfl32(addr, 8 * i + row))[col];
    const uint16_t hi = reinterpret_cast<const uint16_t*>(shfl32(addr, 8 * i + row + 1))[col];
    r[i] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
  }
  r0 = r[0]; r1 = r[1];
}

// movmatrix .trans: lane l = 4g + t receives elements (2t, g) and (2t + 1, g), which lanes 8t + g/2
// and 8t + 4 + g/2 hold in their half g % 2.
SWA_D uint32_t movmatrix_trans(uint32_t x) {
  const int lane = lane32(), g = lane >> 2, t = lane & 3, sh = (g & 1) * 16;
  const uint32_t lo = shfl32(x, 8 * t + (g >> 1)), hi = shfl32(x, 8 * t + 4 + (g >> 1));
  return ((lo >> sh) & 0xffffu) | (((hi >> sh) & 0xffffu) << 16);
}

// C[16x8] += A[16x16] * B[16x8] in mma.h's fragment layout. Lane l = 4g + t owns
// C(g, 2t..2t+1) and C(g+8, 2t..2t+1): it needs rows g and g+8 of A, which lanes 4g..4g+3 hold,
// and columns 2t and 2t+1 of B, which lanes 8t..8t+3 and 8t+4..8t+7 hold. Source lane q of each
// quad carries k = 2q, 2q+1 (A regs 0/1, B reg 0) and k = 2q+8, 2q+9 (A regs 2/3, B reg 1).
template <typename T>
SWA_D void mma_16816(float* c, const uint32_t* a, uint32_t b0, uint32_t b1) {
  const int lane = lane32(), g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int q = 0; q < 4; ++q) {
    const int la = 4 * g + q, lb0 = 8 * t + q, lb1 = 8 * t + 4 + q;
    float ag[4], ah[4], bx[4], by[4];  // A row g, A row g+8, B column 2t, B column 2t+1
    unpack2<T>(shfl32(a[0], la), ag[0], ag[1]);
    unpack2<T>(shfl32(a[2], la), ag[2], ag[3]);
    unpack2<T>(shfl32(a[1], la), ah[0], ah[1]);
    unpack2<T>(shfl32(a[3], la), ah[2], ah[3]);
    unpack2<T>(shfl32(b0, lb0), bx[0], bx[1]);
    unpack2<T>(shfl32(b1, lb0), bx[2], bx[3]);
    unpack2<T>(shfl32(b0, lb1), by[0], by[1]);
    unpack2<T>(shfl32(b1, lb1), by[2], by[3]);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      c[0] = fmaf(ag[e], bx[e], c[0]);
      c[1] = fmaf(ag[e], by[e], c[1]);
      c[2] = fmaf(ah[e], bx[e], c[2]);
      c[3] = fmaf(ah[e], by[e], c[3]);
    }
  }
}

}  // namespace swa_ops
