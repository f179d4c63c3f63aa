// Which cp.async forms with an L2 cache policy run on this GPU (diagnostics; run 172). The
// decode's fp8 D = 128 edge tiles (cp.async.cg ... .L2::cache_hint.L2::128B inside the TMA ring
// kernel) raised an illegal instruction in run 171, while the .L2::256B and span-less forms ran.
// Build and run: nvcc -O3 -std=c++17 -arch=sm_90a -o /tmp/hint_probe notes/hint_probe.cu && /tmp/hint_probe
#include <cstdio>
#include <cstdint>
#include <cuda_runtime.h>

template <int FORM>
__global__ void probe(const unsigned char* src, unsigned* out) {
  __shared__ __align__(128) unsigned char sm[512];
  uint64_t pol;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(pol));
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(sm + threadIdx.x * 16));
  const unsigned char* g = src + threadIdx.x * 16;
  const int n = threadIdx.x & 1 ? 16 : 0;  // some lanes zero-fill, as the decode's edge rows do
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
static void run(const char* name, const unsigned char* src, unsigned* out) {
  probe<FORM><<<1, 32>>>(src, out);
  const cudaError_t e = cudaDeviceSynchronize();
  std::printf("%-52s %s\n", name, cudaGetErrorString(e));
  if (e != cudaSuccess) {
    cudaDeviceReset();
  }
}

int main() {
  unsigned char* src;
  unsigned* out;
  auto alloc = [&] {
    cudaMalloc(&src, 4096);
    cudaMemset(src, 1, 4096);
    cudaMalloc(&out, 4096);
  };
  alloc();
  run<3>("L2::128B, src-size (no policy)", src, out);
  run<2>("L2::cache_hint, src-size", src, out);
  run<1>("L2::cache_hint.L2::256B, src-size", src, out);
  alloc();
  run<0>("L2::cache_hint.L2::128B, src-size", src, out);
  alloc();
  run<4>("L2::cache_hint.L2::128B, no src-size", src, out);
  return 0;
}
