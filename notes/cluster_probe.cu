// How many thread-block clusters of the decode kernel's shapes an H100 holds at once (diagnostics
// for the cluster merge on branch decode-cluster-merge, which fell back to the merge kernel in run
// 118): cudaOccupancyMaxActiveClusters for clusters of 1, 2, 4, 8 (and 16, non-portable) CTAs of
// 64 or 128 threads with the decode rings' shared memory.
// nvcc -O3 -std=c++17 -arch=sm_90a -o /tmp/cluster_probe notes/cluster_probe.cu && /tmp/cluster_probe
#include <cstdio>
#include <cuda_runtime.h>

__global__ void k128(int* p) {
  extern __shared__ int s[];
  if (p) p[threadIdx.x] = s[threadIdx.x];
}

int main() {
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  std::printf("%s, %d SMs\n", prop.name, prop.multiProcessorCount);
  cudaFuncSetAttribute(k128, cudaFuncAttributeMaxDynamicSharedMemorySize, 200 * 1024);
  cudaFuncSetAttribute(k128, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  for (int threads : {64, 128}) {
    for (int kb : {50, 75, 98, 104, 110}) {
      int per_sm = 0;
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k128, threads, kb * 1024);
      std::printf("threads %3d smem %3d KB: %d CTAs per SM (%d slots); clusters:", threads, kb,
                  per_sm, per_sm * prop.multiProcessorCount);
      for (int cs : {1, 2, 4, 8, 16}) {
        cudaLaunchConfig_t cfg = {};
        cudaLaunchAttribute attr[1];
        cfg.gridDim = dim3(1, 64 * cs, 1);
        cfg.blockDim = dim3(threads);
        cfg.dynamicSmemBytes = kb * 1024;
        attr[0].id = cudaLaunchAttributeClusterDimension;
        attr[0].val.clusterDim.x = 1;
        attr[0].val.clusterDim.y = cs;
        attr[0].val.clusterDim.z = 1;
        cfg.attrs = attr;
        cfg.numAttrs = 1;
        int n = -1;
        const cudaError_t e = cudaOccupancyMaxActiveClusters(&n, k128, &cfg);
        if (e != cudaSuccess) {
          std::printf(" %d: %s", cs, cudaGetErrorString(e));
          cudaGetLastError();
        } else {
          std::printf(" %d: %d (%d CTAs)", cs, n, n * cs);
        }
      }
      std::printf("\n");
    }
  }
  return 0;
}
