// Host side of the decode's dynamic split (decode_mma.h, DYN): the claim counters. Included once,
// by paged_attention.cu.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <utility>

namespace swa_ops {

// Zeroed claim counters, at least `n` of them, for decode launches on `stream` of the current
// device; nullptr where they cannot be had (the launch then takes the static split).
//
// The counters persist: every decode call leaves them at zero (atomicInc's wrap, decode_mma.h),
// so they are zeroed once, at allocation, and never by a launch, which keeps the op one kernel
// and a merge, capturable, with nothing between it and its predecessor (a memset node would end
// the programmatic overlap). One buffer per (device, stream): two calls in flight at once on
// different streams never share counters. A graph keeps the buffer of the stream it was
// captured on; replaying it concurrently with another run of the op on that stream is the one
// use that would share them. Buffers only grow (a graph may still hold the old one: it is kept)
// and live as long as the process.
inline unsigned* tile_counters(int64_t n, cudaStream_t stream) {
  struct Buffer {
    unsigned* ptr = nullptr;
    int64_t size = 0;
  };
  static std::mutex mu;
  static std::map<std::pair<int, cudaStream_t>, Buffer> buffers;
  int dev = 0;
  if (n <= 0 || cudaGetDevice(&dev) != cudaSuccess) return nullptr;
  std::lock_guard<std::mutex> lock(mu);
  Buffer& b = buffers[{dev, stream}];
  if (b.size >= n) return b.ptr;
  // A fresh buffer, zeroed before any kernel can see it. This may run while `stream` is being
  // captured: relaxed capture mode lets cudaMalloc through, and the zeroing runs (and is waited
  // for) on a private stream outside the capture.
  const int64_t size = n < 4096 ? 4096 : 2 * n;
  cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
  if (cudaThreadExchangeStreamCaptureMode(&mode) != cudaSuccess) {
    (void)cudaGetLastError();
    return nullptr;
  }
  void* ptr = nullptr;
  cudaStream_t side = nullptr;
  bool ok = cudaMalloc(&ptr, size * sizeof(unsigned)) == cudaSuccess;
  ok = ok && cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking) == cudaSuccess;
  ok = ok && cudaMemsetAsync(ptr, 0, size * sizeof(unsigned), side) == cudaSuccess;
  ok = ok && cudaStreamSynchronize(side) == cudaSuccess;
  if (side != nullptr) (void)cudaStreamDestroy(side);
  if (!ok && ptr != nullptr) (void)cudaFree(ptr);
  (void)cudaThreadExchangeStreamCaptureMode(&mode);
  if (!ok) {
    (void)cudaGetLastError();
    return nullptr;
  }
  b.ptr = static_cast<unsigned*>(ptr);
  b.size = size;
  return b.ptr;
}

}  // namespace swa_ops
