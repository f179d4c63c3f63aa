// Which cp.async forms with an L2 cache policy run on this GPU (diagnostics; runs 172-173). The
// decode's fp8 D = 128 edge tiles (cp.async.cg ... .L2::cache_hint.L2::128B inside the TMA ring
// kernel) raised an illegal instruction in run 171, while the .L2::256B and span-less forms ran
// in the decode kernels. Run 173's result here: every hinted form faults, the 256-byte one too,
// and the unhinted one runs; not understood (the decode kernels keep running the 256-byte form
// without error: notes/decode.md, eighth session).
// Build: nvcc -O3 -std=c++17 -arch=sm_90a -o /tmp/hint_probe notes/hint_probe.cu; run one form per
// process: for f in 0 1 2 3 4; do for z in 0 1; do /tmp/hint_probe $f $z; done; done
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <cuda_runtime.h>

template <int FORM>
__global__ void probe(const unsigned char* src, unsigned* out, int fill) {
  __shared__ __align__(128) unsigned char sm[512];
  uint64_t pol;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(pol));
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(sm + threadIdx.x * 16));
  const unsigned char* g = src + threadIdx.x * 16;
  const int n = fill && !(threadIdx.x & 1) ? 0 : 16;
  if (FORM == 0)
    asm volatile("cp.async.cg.shared.global.L2::cache_hint.L2::128B [%0], [%1], 16, %2, %3;\n"
                 ::"r"(s), "l"(g), "r"(n), "l"(pol));
  else if (FORM == 1)
    asm volatile("cp.async.cg.shared.global.L2::cache_hint.L2::256B [%0], [%1], 16, %2, %3;\n"
                 ::"r"(s), "l"(g), "r"(n), "l"(pol));
  else if (FORM == 2)
    asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2, %3;\n"
                 ::"r"(s), "l"(g), "r"(n), "l"(pol));
  else if (FORM == 3)
    asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;\n" ::"r"(s), "l"(g), "r"(n));
  else
    asm volatile("cp.async.cg.shared.global.L2::cache_hint.L2::128B [%0], [%1], 16, %2;\n"
                 ::"r"(s), "l"(g), "l"(pol));  // no src-size operand
  asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::);
  __syncthreads();
  out[threadIdx.x] = *reinterpret_cast<unsigned*>(sm + threadIdx.x * 16);
}

template <int FORM>
static void run(const char* name, const unsigned char* src, unsigned* out, int fill) {
  probe<FORM><<<1, 32>>>(src, out, fill);
  const cudaError_t e = cudaDeviceSynchronize();
  std::printf("%-44s fill %d: %s\n", name, fill, cudaGetErrorString(e));
}

// One form per process (an illegal instruction kills the context): hint_probe FORM FILL, FILL 1
// zero-fills the even lanes (src-size 0), as the decode's rows outside the window do.
int main(int argc, char** argv) {
  const int form = argc > 1 ? std::atoi(argv[1]) : 0, fill = argc > 2 ? std::atoi(argv[2]) : 1;
  unsigned char* src;
  unsigned* out;
  cudaMalloc(&src, 4096);
  cudaMemset(src, 1, 4096);
  cudaMalloc(&out, 4096);
  switch (form) {
    case 0: run<0>("L2::cache_hint.L2::128B, src-size", src, out, fill); break;
    case 1: run<1>("L2::cache_hint.L2::256B, src-size", src, out, fill); break;
    case 2: run<2>("L2::cache_hint, src-size", src, out, fill); break;
    case 3: run<3>("L2::128B, src-size (no policy)", src, out, fill); break;
    default: run<4>("L2::cache_hint.L2::128B, no src-size", src, out, fill); break;
  }
  return 0;
}
