// Where a 16-byte chunk of a K / V row sits in a decode ring tile (decode_mma.h), for the copies
// that fill the tile and the ldmatrix reads of the tile math alike (and the CPU check of those
// reads, csrc/hip_check/mma_portable_test.cpp), so the two cannot disagree.
//
// Padded rows (row_bytes = 2 (DV + 8) for 16-bit rows): consecutive rows shift by 16 bytes, so
// the 8 rows an ldmatrix reads hit 8 distinct bank groups. Swizzled rows (row_bytes = 2 DV, a
// multiple of 128: whole groups of eight chunks): row r's chunk c sits at chunk c ^ (r & 7),
// which spreads those 8 rows over the bank groups as well, while every row starts 128-byte
// aligned. The decode rings take the swizzle where it applies: with padded rows the cp.async
// copies that fill them streamed 3 % slower (notes/read_peak.cu, loads only on an H100: 178.1
// against 184.0 us on mistral-32k's pattern, 351.0 against 362.9 on gemma2's; ncu counted 25 %
// more L2 sector reads for the same DRAM bytes).
//
// Needs SWA_HD (compat.h) defined first.
#pragma once

namespace swa_ops {

// Whether rows of `row_bytes` can be swizzled: whole groups of eight 16-byte chunks.
SWA_HD constexpr bool ring_rows_swizzle(int row_bytes) { return row_bytes % 128 == 0; }

// Byte offset of 16-byte chunk c of row r in a tile of rows `row_bytes` apart.
SWA_HD constexpr int ring_chunk_offset(int r, int c, int row_bytes, bool swizzled) {
  return r * row_bytes + ((swizzled ? (c ^ (r & 7)) : c) << 4);
}

}  // namespace swa_ops
