// How fast can an H100 read the decode rows' K/V bytes at all? (diagnostics; not part of the
// build). Issue 3 asks for 0.95 of *copy* bandwidth on rows whose fixed costs (launch, first
// loads, combine, merge) are 3-5 % of their time, so it matters whether a pure read stream beats
// the copy's rate and by how much, and which access pattern and bytes in flight reach it.
//
// Kernels (no math, loads only):
//   copy      dst = src over 1 GiB (the bench's copy bandwidth: bytes read + written / time)
//   flat      contiguous 16-byte loads into registers, U per thread in flight, grid-stride
//   ring      the decode kernel's pattern: one CTA per (sequence, kv head, partition), each warp
//             streams 16-token tiles (tile w, w + NW, ...) of R-byte K and V rows through its own
//             S-deep cp.async ring; rows of one token are H * R bytes apart inside 16-token pages
//             of a random block table (the bench's layout [block][16][H][D])
// Build and run (GPU machine): nvcc -O3 -std=c++17 -arch=sm_90a -o /tmp/read_peak
//   notes/read_peak.cu && /tmp/read_peak
#include <cstdio>
#include <cstdint>
#include <cstdlib>
#include <vector>
#include <algorithm>
#include <random>
#include <string>
#include <cuda_runtime.h>

#define CK(x)                                                                         \
  do {                                                                                \
    cudaError_t e_ = (x);                                                             \
    if (e_ != cudaSuccess) {                                                          \
      std::printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e_));          \
      std::exit(1);                                                                   \
    }                                                                                 \
  } while (0)

__global__ void copy_kernel(const uint4* __restrict__ s, uint4* __restrict__ d, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    d[i] = s[i];
}

template <int U>
__global__ void flat_kernel(const uint4* __restrict__ s, size_t n, unsigned* sink) {
  unsigned acc = 0;
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i + (U - 1) * stride < n;
       i += U * stride) {
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) v[u] = __ldg(s + i + u * stride);
#pragma unroll
    for (int u = 0; u < U; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  if (acc == 0x12345678u) *sink = acc;  // keeps the loads
}

struct RingArgs {
  const unsigned char* k;
  const unsigned char* v;
  const int* bt;    // [seqs][blocks_per_seq]
  int heads;        // H: kv heads per token
  int row;          // R: bytes per row (one kv head's D elements)
  int tokens;       // T per sequence
  int parts;        // partitions per (sequence, head): grid.y
  int blocks_per_seq;
  unsigned* sink;
  int spin;         // clock cycles of stand-in tile math per tile (after its wait)
  int pro, epi;     // stand-in cycles before a CTA's first load (its seq_len and block-table
                    // chain) and after its last tile (the warps' combine)
  int layout = 0;   // ring rows: 0 dense (R bytes), 1 padded (R + 16: the decode kernel's
                    // ldmatrix-friendly rows), 2 dense with 16-byte chunks swizzled (c ^ (r & 7))
  int hint = 1;     // 1: cp.async with L2::256B (the decode kernel's), 0: none
};

__device__ __forceinline__ void cp16(void* smem, const void* g, int hint) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  if (hint)
    asm volatile("cp.async.cg.shared.global.L2::256B [%0], [%1], 16;\n" ::"r"(s), "l"(g));
  else
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(g));
}

// One CTA per (unit = seq * H + head, part); NW warps; S stages of (K tile, V tile) per warp.
template <int R, int NW, int S>
__global__ void __launch_bounds__(NW * 32) ring_kernel(RingArgs a) {
  extern __shared__ __align__(16) unsigned char sm[];
  constexpr int TILE = 16 * (R + 16);  // one 16-token tile of one kv head (room for padding)
  constexpr int PER_LANE = TILE / 16 / 32;  // 16-byte copies per lane per tile (K or V)
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  unsigned char* ring = sm + warp * S * 2 * TILE;
  const int unit = blockIdx.x, seq = unit / a.heads, head = unit % a.heads;
  const int per_part = a.tokens / a.parts;
  const int t0 = blockIdx.y * per_part;
  const int tiles = per_part / 16;
  const int* bt = a.bt + (size_t)seq * a.blocks_per_seq;
  const size_t tok_stride = (size_t)a.heads * R;
  auto issue = [&](int j, int slot) {
    const int t = t0 + (warp + NW * j) * 16;
    const size_t base = (size_t)bt[t >> 4] * 16 * tok_stride + (size_t)head * R;
    unsigned char* dst = ring + slot * 2 * TILE;
#pragma unroll
    for (int c = 0; c < PER_LANE; ++c) {
      const int idx = lane + 32 * c;       // 16-byte chunk of the tile
      const int r = idx / (R / 16), c16 = idx % (R / 16), col = c16 * 16;
      const int so = a.layout == 1 ? r * (R + 16) + col
                   : a.layout == 2 ? r * R + ((c16 ^ (r & 7)) << 4) : r * R + col;
      cp16(dst + so, a.k + base + r * tok_stride + col, a.hint);
      cp16(dst + TILE + so, a.v + base + r * tok_stride + col, a.hint);
    }
  };
  const int mine = (tiles - warp + NW - 1) / NW;  // this warp's tiles
  if (a.pro > 0) {
    const long long c0 = clock64();
    while (clock64() - c0 < a.pro) {
    }
  }
  int issued = 0;
  for (; issued < S - 1 && issued < mine; ++issued) {
    issue(issued, issued % S);
    asm volatile("cp.async.commit_group;\n");
  }
  unsigned acc = 0;
  for (int j = 0; j < mine; ++j) {
    if (issued < mine) {
      issue(issued, issued % S);
      ++issued;
    }
    asm volatile("cp.async.commit_group;\n");
    asm volatile("cp.async.wait_group %0;\n" ::"n"(S - 1));
    __syncwarp();
    acc ^= *reinterpret_cast<const unsigned*>(ring + (j % S) * 2 * TILE + lane * 16);
    if (a.spin > 0) {  // the tile's math, as a warp busy for `spin` cycles
      const long long c0 = clock64();
      while (clock64() - c0 < a.spin) {
      }
    }
    __syncwarp();
  }
  if (a.epi > 0) {
    __syncthreads();
    const long long c0 = clock64();
    while (clock64() - c0 < a.epi) {
    }
  }
  if (acc == 0x12345678u) *a.sink = acc;
}

static float time_it(void (*launch)(void*), void* ctx, int reps) {
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  for (int i = 0; i < 3; ++i) launch(ctx);
  CK(cudaDeviceSynchronize());
  float best = 1e30f;
  for (int trial = 0; trial < 3; ++trial) {
    CK(cudaEventRecord(e0));
    for (int i = 0; i < reps; ++i) launch(ctx);
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    best = std::min(best, ms * 1000.f / reps);
  }
  CK(cudaGetLastError());
  return best;
}

struct RingCase {
  RingArgs a;
  dim3 grid;
  int threads;
  size_t smem;
  void (*kern)(RingArgs);
};

static void launch_ring(void* c) {
  RingCase* r = static_cast<RingCase*>(c);
  r->kern<<<r->grid, r->threads, r->smem>>>(r->a);
}

template <int R, int NW, int S>
static void run_ring(const char* name, RingArgs a, int seqs, size_t pad_smem, double copy_bw) {
  RingCase c;
  c.a = a;
  c.grid = dim3(seqs * a.heads, a.parts);
  c.threads = NW * 32;
  c.smem = std::max<size_t>((size_t)NW * S * 2 * 16 * (R + 16), pad_smem);
  c.kern = ring_kernel<R, NW, S>;
  CK(cudaFuncSetAttribute(ring_kernel<R, NW, S>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                          (int)c.smem));
  int per_sm = 0;
  CK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, ring_kernel<R, NW, S>, c.threads,
                                                   c.smem));
  const double bytes = 2.0 * seqs * a.heads * (double)a.tokens * R;
  const float us = time_it(launch_ring, &c, 20);
  std::printf("%-34s R %3d NW %d S %d parts %2d ctas %5d /sm %2d smem %6zu spin %4d pro %4d epi "
              "%4d layout %d hint %d: %8.1f us %.3f TB/s %.3f of copy\n",
              name, R, NW, S, a.parts, c.grid.x * c.grid.y, per_sm, c.smem, a.spin, a.pro, a.epi,
              a.layout, a.hint, us,
              bytes / us * 1e-6, bytes / us * 1e-6 / copy_bw);
}

struct FlatCase {
  const uint4* s;
  size_t n;
  unsigned* sink;
  int blocks, threads, u;
};

static void launch_flat(void* c) {
  FlatCase* f = static_cast<FlatCase*>(c);
  if (f->u == 4) flat_kernel<4><<<f->blocks, f->threads>>>(f->s, f->n, f->sink);
  else if (f->u == 8) flat_kernel<8><<<f->blocks, f->threads>>>(f->s, f->n, f->sink);
  else flat_kernel<16><<<f->blocks, f->threads>>>(f->s, f->n, f->sink);
}

struct CopyCase {
  const uint4* s;
  uint4* d;
  size_t n;
  int sms;
};

static void launch_copy(void* c) {
  CopyCase* k = static_cast<CopyCase*>(c);
  copy_kernel<<<k->sms * 8, 256>>>(k->s, k->d, k->n);
}

int main(int argc, char** argv) {
  const bool spin_mode = argc > 1 && std::string(argv[1]) == "spin";
  const bool over_mode = argc > 1 && std::string(argv[1]) == "overhead";
  const bool one_mode = argc > 1 && std::string(argv[1]) == "one";  // for ncu: two rows only
  const bool seed_mode = argc > 1 && std::string(argv[1]) == "seed";  // seed's geometry only
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  const int sms = prop.multiProcessorCount;
  std::printf("%s, %d SMs, L2 %d MB\n", prop.name, sms, prop.l2CacheSize >> 20);
  const size_t gib = size_t(1) << 30;
  unsigned char *a = nullptr, *b = nullptr;
  unsigned* sink = nullptr;
  CK(cudaMalloc(&a, gib));
  CK(cudaMalloc(&b, gib));
  CK(cudaMalloc(&sink, 4));
  CK(cudaMemset(a, 1, gib));
  CK(cudaMemset(b, 2, gib));

  // Copy bandwidth, as the bench: cudaMemcpy and a plain copy kernel.
  cudaEvent_t e0, e1;
  CK(cudaEventCreate(&e0));
  CK(cudaEventCreate(&e1));
  for (int i = 0; i < 3; ++i) CK(cudaMemcpy(b, a, gib, cudaMemcpyDeviceToDevice));
  float best = 1e30f;
  for (int t = 0; t < 5; ++t) {
    CK(cudaEventRecord(e0));
    for (int i = 0; i < 10; ++i) CK(cudaMemcpyAsync(b, a, gib, cudaMemcpyDeviceToDevice));
    CK(cudaEventRecord(e1));
    CK(cudaEventSynchronize(e1));
    float ms;
    CK(cudaEventElapsedTime(&ms, e0, e1));
    best = std::min(best, ms / 10);
  }
  const double copy_bw = 2.0 * gib / (best * 1e-3) * 1e-12;
  std::printf("cudaMemcpy D2D 1 GiB: %.1f us, copy bandwidth %.3f TB/s (read + write)\n",
              best * 1000, copy_bw);
  CopyCase cc{reinterpret_cast<const uint4*>(a), reinterpret_cast<uint4*>(b), gib / 16, sms};
  const float cus = time_it(launch_copy, &cc, 10);
  std::printf("copy kernel 1 GiB: %.1f us, %.3f TB/s (read + write)\n", cus,
              2.0 * gib / cus * 1e-6);

  // Flat reads of 512 MiB (mistral-32k's K/V bytes), then of 1 GiB.
  for (size_t bytes : {gib / 2, gib}) {
    if (spin_mode || over_mode || one_mode || seed_mode) break;
    for (int u : {4, 8, 16}) {
      for (int bpsm : {2, 4, 8}) {
        FlatCase f{reinterpret_cast<const uint4*>(a), bytes / 16, sink, sms * bpsm, 256, u};
        const float us = time_it(launch_flat, &f, 20);
        std::printf("flat %4zu MiB U %2d blocks/sm %d x 256 threads: %8.1f us %.3f TB/s %.3f of "
                    "copy\n", bytes >> 20, u, bpsm, us, bytes / us * 1e-6,
                    bytes / us * 1e-6 / copy_bw);
      }
    }
  }

  // The decode pattern: mistral-32k (32 sequences x 8 kv heads x 4096 tokens, D = 128: 256-byte
  // rows at a 2 KB token stride; 2 x 268 MB) and gemma2-softcap (D = 256, 512-byte rows).
  auto make_bt = [&](int seqs, int bps, int total_blocks) {
    std::vector<int> ids(total_blocks);
    for (int i = 0; i < total_blocks; ++i) ids[i] = i;
    std::mt19937 rng(1234);
    std::shuffle(ids.begin(), ids.end(), rng);
    int* d = nullptr;
    CK(cudaMalloc(&d, sizeof(int) * seqs * bps));
    CK(cudaMemcpy(d, ids.data(), sizeof(int) * seqs * bps, cudaMemcpyHostToDevice));
    return d;
  };
  if (one_mode) {
    // read_peak one [R layout hint]: the mistral-32k (R 256) or gemma2 (R 512) ring as decode,
    // every layout and hint, or (for ncu) just the one given.
    const int seqs = 32, H = 8, T = 4096, bps = T / 16;
    int* bt = make_bt(seqs, bps, seqs * bps);
    for (int R : {256, 512})
      for (int layout : {0, 1, 2})
        for (int hint : {1, 0}) {
          if (argc > 4 && (R != std::atoi(argv[2]) || layout != std::atoi(argv[3]) ||
                           hint != std::atoi(argv[4])))
            continue;
          RingArgs m{a, b, bt, H, R, T, 1, bps, sink, 0, 0, 0, layout, hint};
          if (R == 256) run_ring<256, 4, 2>("mistral-32k as decode (2/SM)", m, seqs, 104 * 1024, copy_bw);
          else run_ring<512, 2, 2>("gemma2 as decode (2/SM)", m, seqs, 110 * 1024, copy_bw);
        }
    CK(cudaFree(bt));
    return 0;
  }
  if (seed_mode) {
    // read_peak seed: the bound a loads-only stream sets for seed (16 sequences x 4 kv heads x
    // its 8192-token window, D = 128: 256-byte rows at a 1 KB token stride, 2 x 134 MB), in the
    // decode kernel's geometry (4 partitions, 256 CTAs of 4 warps, 2 per SM, one wave, swizzled
    // rows), then with stand-in start and end costs, and as 128 CTAs of 8 warps (2 partitions).
    // The decode takes 94.3-94.7 us on it (runs 161-167): what the loads alone take says how
    // much of seed's time over its floor any kernel design could still win.
    const int seqs = 16, H = 4, T = 8192, bps = T / 16;
    int* bt = make_bt(seqs, bps, seqs * bps);
    for (int rep = 0; rep < 2; ++rep) {
      RingArgs m{a, b, bt, H, 256, T, 4, bps, sink, 0, 0, 0, 2, 1};
      run_ring<256, 4, 2>("seed as decode (2/SM)", m, seqs, 104 * 1024, copy_bw);
      for (int epi : {1000, 2000}) {
        RingArgs e = m;
        e.pro = 1500;
        e.epi = epi;
        run_ring<256, 4, 2>("seed, start/end costs (2/SM)", e, seqs, 104 * 1024, copy_bw);
      }
      RingArgs w = m;
      w.parts = 2;
      run_ring<256, 8, 2>("seed 8 warps (1/SM)", w, seqs, 208 * 1024, copy_bw);
      // Wider rows at the same bytes in flight per CTA (64 KB): two adjacent kv heads' rows as
      // one 512-byte row (kv-head pairing, 8 partitions: 256 CTAs), and the whole 1 KB token
      // (16 partitions). Does seed's 256-byte-of-1-KB pattern cost DRAM efficiency?
      RingArgs pr = m;
      pr.heads = 2;
      pr.row = 512;
      pr.parts = 8;
      run_ring<512, 2, 2>("seed paired rows (2/SM)", pr, seqs, 104 * 1024, copy_bw);
      RingArgs wt = m;
      wt.heads = 1;
      wt.row = 1024;
      wt.parts = 16;
      run_ring<1024, 1, 2>("seed whole-token rows (2/SM)", wt, seqs, 104 * 1024, copy_bw);
      // Stand-in tile math (cycles per 16-token tile per warp) in seed's own geometry.
      for (int spin : {400, 800, 1600}) {
        RingArgs sp = m;
        sp.spin = spin;
        run_ring<256, 4, 2>("seed, tile math (2/SM)", sp, seqs, 104 * 1024, copy_bw);
      }
    }
    CK(cudaFree(bt));
    return 0;
  }
  if (over_mode) {
    // Many short CTAs in several waves (the hardware balances them) against one wave, with
    // stand-in tile math and per-CTA start and end costs (pro 1500, epi 2000 cycles).
    const int seqs = 32, H = 8, T = 4096, bps = T / 16;
    int* bt = make_bt(seqs, bps, seqs * bps);
    for (int spin : {1200, 2400, 3600}) {
      RingArgs g{a, b, bt, H, 512, T, 1, bps, sink, spin, 1500, 2000, 0, 1};
      run_ring<512, 2, 2>("gemma2 as decode (2/SM)", g, seqs, 110 * 1024, copy_bw);
      for (int parts : {4, 6, 8, 16}) {
        RingArgs r = g;
        r.parts = parts;
        run_ring<512, 1, 2>("gemma2 1 warp (5/SM)", r, seqs, 43 * 1024, copy_bw);
        run_ring<512, 2, 2>("gemma2 2 warps (3/SM)", r, seqs, 70 * 1024, copy_bw);
      }
    }
    for (int spin : {600, 1200, 2400}) {
      RingArgs m{a, b, bt, H, 256, T, 1, bps, sink, spin, 1500, 2000, 0, 1};
      run_ring<256, 4, 2>("mistral-32k as decode (2/SM)", m, seqs, 104 * 1024, copy_bw);
      for (int parts : {4, 8, 16}) {
        RingArgs r = m;
        r.parts = parts;
        run_ring<256, 1, 2>("mistral-32k 1 warp (13/SM)", r, seqs, 0, copy_bw);
        run_ring<256, 2, 2>("mistral-32k 2 warps (6/SM)", r, seqs, 0, copy_bw);
        run_ring<256, 4, 2>("mistral-32k 4 warps (3/SM)", r, seqs, 0, copy_bw);
      }
    }
    CK(cudaFree(bt));
    return 0;
  }
  if (spin_mode) {
    // Stand-in tile math of `spin` cycles per tile: how much of it each geometry hides.
    {
      const int seqs = 32, H = 8, T = 4096, bps = T / 16;
      int* bt = make_bt(seqs, bps, seqs * bps);
      for (int spin : {0, 300, 600, 1200, 2400}) {
        RingArgs ra{a, b, bt, H, 256, T, 1, bps, sink, spin, 0, 0, 0, 1};
        run_ring<256, 4, 2>("mistral-32k as decode (2/SM)", ra, seqs, 104 * 1024, copy_bw);
        run_ring<256, 4, 3>("mistral-32k depth 3 (2/SM)", ra, seqs, 104 * 1024, copy_bw);
        run_ring<256, 8, 2>("mistral-32k 8 warps (1/SM)", ra, seqs, 0, copy_bw);
        RingArgs r2 = ra;
        r2.parts = 2;
        run_ring<256, 4, 2>("mistral-32k 2 parts (3/SM)", r2, seqs, 0, copy_bw);
        RingArgs r4 = ra;
        r4.parts = 4;
        run_ring<256, 2, 2>("mistral-32k 4 parts 2 warps (6/SM)", r4, seqs, 0, copy_bw);
        RingArgs r8 = ra;
        r8.parts = 8;
        run_ring<256, 1, 2>("mistral-32k 8 parts 1 warp (13/SM)", r8, seqs, 0, copy_bw);
      }
      CK(cudaFree(bt));
    }
    {
      const int seqs = 32, H = 8, T = 4096, bps = T / 16;
      int* bt = make_bt(seqs, bps, seqs * bps);
      for (int spin : {0, 600, 1200, 2400}) {
        RingArgs ra{a, b, bt, H, 512, T, 1, bps, sink, spin, 0, 0, 0, 1};
        run_ring<512, 2, 2>("gemma2 as decode (2/SM)", ra, seqs, 110 * 1024, copy_bw);
        run_ring<512, 2, 3>("gemma2 depth 3 (2/SM)", ra, seqs, 110 * 1024, copy_bw);
        RingArgs r2 = ra;
        r2.parts = 2;
        run_ring<512, 2, 2>("gemma2 2 parts (3/SM)", r2, seqs, 0, copy_bw);
        RingArgs r4 = ra;
        r4.parts = 4;
        run_ring<512, 1, 2>("gemma2 4 parts 1 warp (6/SM)", r4, seqs, 0, copy_bw);
        RingArgs r8 = ra;
        r8.parts = 8;
        run_ring<512, 1, 2>("gemma2 8 parts 1 warp (6/SM)", r8, seqs, 0, copy_bw);
      }
      CK(cudaFree(bt));
    }
    return 0;
  }
  {
    const int seqs = 32, H = 8, T = 4096, R = 256, bps = T / 16;
    int* bt = make_bt(seqs, bps, seqs * bps);  // K and V each 268 MB: fit one GiB buffer each
    RingArgs ra{a, b, bt, H, R, T, 1, bps, sink, 0, 0, 0, 0, 1};
    const size_t two_per_sm = 104 * 1024;  // the decode kernel's D = 128 footprint
    run_ring<256, 4, 2>("mistral-32k as decode (2/SM)", ra, seqs, two_per_sm, copy_bw);
    run_ring<256, 4, 3>("mistral-32k depth 3 (2/SM)", ra, seqs, two_per_sm, copy_bw);
    run_ring<256, 4, 2>("mistral-32k no pad", ra, seqs, 0, copy_bw);
    run_ring<256, 4, 4>("mistral-32k depth 4", ra, seqs, 0, copy_bw);
    run_ring<256, 8, 2>("mistral-32k 8 warps", ra, seqs, 0, copy_bw);
    for (int parts : {2, 4, 8}) {
      RingArgs rp = ra;
      rp.parts = parts;
      run_ring<256, 4, 2>("mistral-32k split, no pad", rp, seqs, 0, copy_bw);
      run_ring<256, 2, 2>("mistral-32k split, 2 warps", rp, seqs, 0, copy_bw);
      run_ring<256, 1, 2>("mistral-32k split, 1 warp", rp, seqs, 0, copy_bw);
    }
    CK(cudaFree(bt));
    // The same bytes with one kv head per page (4 KB pages of contiguous 256-byte rows).
    int* bt1 = make_bt(seqs * H, bps, seqs * H * bps);
    RingArgs one{a, b, bt1, 1, R, T, 1, bps, sink, 0, 0, 0, 0, 1};
    run_ring<256, 4, 2>("one head per page (2/SM)", one, seqs * H, two_per_sm, copy_bw);
    CK(cudaFree(bt1));
  }
  {
    const int seqs = 32, H = 8, T = 4096, R = 512, bps = T / 16;
    int* bt = make_bt(seqs, bps, seqs * bps);  // K and V each 537 MB
    RingArgs ra{a, b, bt, H, R, T, 1, bps, sink, 0, 0, 0, 0, 1};
    const size_t two_per_sm = 110 * 1024;  // the decode kernel's D = 256 footprint
    run_ring<512, 2, 2>("gemma2 as decode (2/SM)", ra, seqs, two_per_sm, copy_bw);
    run_ring<512, 2, 3>("gemma2 depth 3 (2/SM)", ra, seqs, two_per_sm, copy_bw);
    run_ring<512, 2, 2>("gemma2 no pad", ra, seqs, 0, copy_bw);
    run_ring<512, 4, 2>("gemma2 4 warps", ra, seqs, 0, copy_bw);
    for (int parts : {2, 4, 8}) {
      RingArgs rp = ra;
      rp.parts = parts;
      run_ring<512, 2, 2>("gemma2 split, no pad", rp, seqs, 0, copy_bw);
      run_ring<512, 1, 2>("gemma2 split, 1 warp", rp, seqs, 0, copy_bw);
      run_ring<512, 1, 1>("gemma2 split, 1 warp depth 1", rp, seqs, 0, copy_bw);
    }
    CK(cudaFree(bt));
  }
  return 0;
}
