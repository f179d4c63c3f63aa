// Loads-only probe (not part of the library): how fast can TMA boxes stream the mistral-32k-fp8
// decode shape's K and V window (32 sequences x 8 kv heads x 4096 tokens x 128 bytes, block 16,
// shuffled block table) when a box is one kv head's 16 rows of 128 bytes (rows 1 KB apart, the
// fp8 TMA ring today) or two adjacent kv heads' 16 rows of 256 contiguous bytes? Each warp
// streams its tiles through an NSTAGE ring and reads every byte of each once (no math).
// Build: nvcc -O3 -std=c++17 -arch=sm_90a -DSWA_OPS_SM90A -I csrc/include notes/tma_pair_probe.cu
#include <algorithm>
#include <cstdio>
#include <random>
#include <vector>

#include "swa_ops/mbarrier.h"
#include "swa_ops/tma_map.h"

using namespace swa_ops;

constexpr int kSeqs = 32, kKvHeads = 8, kCtx = 32768, kWindow = 4096, kBlock = 16;
constexpr int kBlocksPerSeq = kCtx / kBlock, kTiles = kWindow / kBlock;

template <int H, int NW, int NS>
__global__ void __launch_bounds__(NW * 32) stream_kernel(const __grid_constant__ TmaDesc kmap,
                                                          const __grid_constant__ TmaDesc vmap,
                                                          const int* bt, uint32_t* out) {
  constexpr int kHalf = H * 2048, kStage = 2 * kHalf;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* b = smem_raw + ((1024u - (smem_u32(smem_raw) & 1023u)) & 1023u);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  unsigned char* ring = b + warp * NS * kStage;
  uint64_t* bar = reinterpret_cast<uint64_t*>(b + NW * NS * kStage) + warp * NS;
  const int units = kKvHeads / H;
  const int seq = blockIdx.x / units, head0 = (blockIdx.x % units) * H;
  const int* row = bt + seq * kBlocksPerSeq + (kBlocksPerSeq - kTiles);
  if (lane == 0) {
    for (int s = 0; s < NS; ++s) mbar_init(&bar[s], 1);
    mbar_init_fence();
  }
  __syncwarp();
  const int mine = kTiles / NW;
  auto issue = [&](int j) {
    if (lane == 0) {
      const int s = j % NS, blk = row[warp + NW * j];
      fence_proxy_async_smem();
      mbar_expect_tx<true>(&bar[s], kStage);
      tma_load_4d(ring + s * kStage, &kmap, 0, head0, 0, blk, &bar[s]);
      tma_load_4d(ring + s * kStage + kHalf, &vmap, 0, head0, 0, blk, &bar[s]);
    }
  };
  for (int j = 0; j < NS - 1 && j < mine; ++j) issue(j);
  uint32_t acc = 0, phase = 0;
  for (int j = 0; j < mine; ++j) {
    if (j + NS - 1 < mine) issue(j + NS - 1);
    const int s = j % NS;
    mbar_wait(&bar[s], (phase >> s) & 1u);
    phase ^= 1u << s;
    const uint4* t = reinterpret_cast<const uint4*>(ring + s * kStage);
#pragma unroll
    for (int i = 0; i < kStage / 16 / 32; ++i) {
      const uint4 v = t[lane + 32 * i];
      acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    __syncwarp();
  }
  out[blockIdx.x * NW * 32 + threadIdx.x] = acc;
}

static bool encode(TmaDesc& d, void* base, int heads_per_box) {
  const cuuint64_t dims[4] = {128, kKvHeads, kBlock, (cuuint64_t)kSeqs * kBlocksPerSeq};
  const cuuint64_t strides[3] = {128, 128 * kKvHeads, 128 * kKvHeads * kBlock};
  const cuuint32_t box[4] = {128, (cuuint32_t)heads_per_box, 16, 1};
  const cuuint32_t es[4] = {1, 1, 1, 1};
  CUtensorMap m;
  const char* e = std::getenv("PROMO");
  const CUtensorMapL2promotion promo = e && std::string(e) == "256" ? CU_TENSOR_MAP_L2_PROMOTION_L2_256B
                                       : e && std::string(e) == "none" ? CU_TENSOR_MAP_L2_PROMOTION_NONE
                                                                      : CU_TENSOR_MAP_L2_PROMOTION_L2_128B;
  if (tma_encode_fn()(&m, CU_TENSOR_MAP_DATA_TYPE_UINT8, 4, base, dims, strides, box, es,
                      CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, promo,
                      CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) != CUDA_SUCCESS)
    return false;
  memcpy(&d, &m, sizeof(m));
  return true;
}

template <int H, int NW, int NS>
static void run(const char* name, void* k, void* v, const int* bt, uint32_t* out) {
  TmaDesc km, vm;
  if (!encode(km, k, H) || !encode(vm, v, H)) {
    printf("%s: encode failed\n", name);
    return;
  }
  const size_t smem = 1024 + NW * NS * (4096 * H + 8);
  auto kern = stream_kernel<H, NW, NS>;
  cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
  int occ = 0;
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&occ, kern, NW * 32, smem);
  const int grid = kSeqs * (kKvHeads / H);
  cudaEvent_t a, z;
  cudaEventCreate(&a);
  cudaEventCreate(&z);
  for (int i = 0; i < 20; ++i) kern<<<grid, NW * 32, smem>>>(km, vm, bt, out);
  const int reps = 200;
  cudaEventRecord(a);
  for (int i = 0; i < reps; ++i) kern<<<grid, NW * 32, smem>>>(km, vm, bt, out);
  cudaEventRecord(z);
  cudaEventSynchronize(z);
  float ms = 0;
  cudaEventElapsedTime(&ms, a, z);
  const cudaError_t err = cudaGetLastError();
  const double us = 1000.0 * ms / reps, bytes = 2.0 * kSeqs * kKvHeads * kWindow * 128;
  printf("%-28s grid %4d x %3d thr, smem %6zu, %d CTA/SM: %7.2f us  %6.0f GB/s  %s\n", name, grid,
         NW * 32, smem, occ, us, bytes / us / 1e3, cudaGetErrorString(err));
}

int main() {
  const size_t n = (size_t)kSeqs * kBlocksPerSeq * kBlock * kKvHeads * 128;
  void *k, *v;
  int* bt;
  uint32_t* out;
  cudaMalloc(&k, n);
  cudaMalloc(&v, n);
  cudaMemset(k, 1, n);
  cudaMemset(v, 2, n);
  std::vector<int> h(kSeqs * kBlocksPerSeq);
  for (size_t i = 0; i < h.size(); ++i) h[i] = (int)i;
  std::shuffle(h.begin(), h.end(), std::mt19937(7));
  cudaMalloc(&bt, h.size() * sizeof(int));
  cudaMemcpy(bt, h.data(), h.size() * sizeof(int), cudaMemcpyHostToDevice);
  cudaMalloc(&out, 1 << 20);
  for (int rep = 0; rep < 2; ++rep) {
    run<1, 4, 3>("1 head/box, 4 warps, 3 st", k, v, bt, out);
    run<1, 4, 6>("1 head/box, 4 warps, 6 st", k, v, bt, out);
    run<1, 8, 3>("1 head/box, 8 warps, 3 st", k, v, bt, out);
    run<2, 4, 3>("2 heads/box, 4 warps, 3 st", k, v, bt, out);
    run<2, 8, 2>("2 heads/box, 8 warps, 2 st", k, v, bt, out);
    run<2, 8, 3>("2 heads/box, 8 warps, 3 st", k, v, bt, out);
    run<2, 4, 6>("2 heads/box, 4 warps, 6 st", k, v, bt, out);
  }
  return 0;
}
