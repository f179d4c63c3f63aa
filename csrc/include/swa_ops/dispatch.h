// Which head sizes are compiled, and the switch from a run-time head size to a compile-time one.
//
// Head size is the one compile-time switch of the decode kernels (it fixes register tiles and the
// shared-memory layout); dtype is a template argument chosen inside each head size's
// translation unit; block size, window, GQA ratio and the split stay run-time values.
//
// Adding a head size: one SWA_OPS_WANT_HEAD_<D> block, one case line below, and a three-line
// csrc/cuda/decode_hd<D>.cu. setup.py's SWA_OPS_HEAD_SIZES=64,128 (for fast iteration) defines
// SWA_OPS_HEAD_SIZES and SWA_OPS_HEAD_64/SWA_OPS_HEAD_128, which narrows the set below.
#pragma once

#include <type_traits>

#if !defined(SWA_OPS_HEAD_SIZES) || defined(SWA_OPS_HEAD_64)
#define SWA_OPS_WANT_HEAD_64 1
#endif
#if !defined(SWA_OPS_HEAD_SIZES) || defined(SWA_OPS_HEAD_80)
#define SWA_OPS_WANT_HEAD_80 1
#endif
#if !defined(SWA_OPS_HEAD_SIZES) || defined(SWA_OPS_HEAD_96)
#define SWA_OPS_WANT_HEAD_96 1
#endif
#if !defined(SWA_OPS_HEAD_SIZES) || defined(SWA_OPS_HEAD_128)
#define SWA_OPS_WANT_HEAD_128 1
#endif
#if !defined(SWA_OPS_HEAD_SIZES) || defined(SWA_OPS_HEAD_192)
#define SWA_OPS_WANT_HEAD_192 1
#endif
#if !defined(SWA_OPS_HEAD_SIZES) || defined(SWA_OPS_HEAD_256)
#define SWA_OPS_WANT_HEAD_256 1
#endif

namespace swa_ops {

// Calls f(std::integral_constant<int, D>{}) for a compiled head size D; false when not compiled.
template <typename F>
bool dispatch_head_size(int head_size, F&& f) {
#define SWA_OPS_HEAD_CASE(D)                \
  case D:                                   \
    f(std::integral_constant<int, D>{});    \
    return true;
  switch (head_size) {
#ifdef SWA_OPS_WANT_HEAD_64
    SWA_OPS_HEAD_CASE(64)
#endif
#ifdef SWA_OPS_WANT_HEAD_80
    SWA_OPS_HEAD_CASE(80)
#endif
#ifdef SWA_OPS_WANT_HEAD_96
    SWA_OPS_HEAD_CASE(96)
#endif
#ifdef SWA_OPS_WANT_HEAD_128
    SWA_OPS_HEAD_CASE(128)
#endif
#ifdef SWA_OPS_WANT_HEAD_192
    SWA_OPS_HEAD_CASE(192)
#endif
#ifdef SWA_OPS_WANT_HEAD_256
    SWA_OPS_HEAD_CASE(256)
#endif
    default:
      return false;
  }
#undef SWA_OPS_HEAD_CASE
}

// For error messages: the compiled head sizes.
inline const char* compiled_head_sizes() {
  return ""
#ifdef SWA_OPS_WANT_HEAD_64
         " 64"
#endif
#ifdef SWA_OPS_WANT_HEAD_80
         " 80"
#endif
#ifdef SWA_OPS_WANT_HEAD_96
         " 96"
#endif
#ifdef SWA_OPS_WANT_HEAD_128
         " 128"
#endif
#ifdef SWA_OPS_WANT_HEAD_192
         " 192"
#endif
#ifdef SWA_OPS_WANT_HEAD_256
         " 256"
#endif
      ;
}

}  // namespace swa_ops
