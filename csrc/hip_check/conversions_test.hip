// Host test of compat.h's bit-level conversions that only HIP builds use (NVIDIA uses its
// hardware ones): fp32 <-> bf16 (ROCm 5.2 has no hip_bf16.h) and fp32 <-> fp8 e4m3fn (torch's
// float8_e4m3fn is OCP e4m3fn; MI300's hardware fp8 is e4m3fnuz, another format, so no
// instruction does this). Built by hipcc -DUSE_ROCM and run on the CPU by .ci/hip_check.sh: the
// functions are __host__ __device__, and this calls them from host code only.
//
// Each is checked against an independent reference: the nearest representable value, found by
// search, with ties to the even encoding.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "swa_ops/compat.h"

namespace {

int g_failures = 0;
void fail(const char* what, float x, unsigned got, unsigned want) {
  if (++g_failures <= 10) std::printf("FAIL %s(%a): got 0x%x, want 0x%x\n", what, x, got, want);
}

float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// e4m3fn value of code c: bias 7, subnormals below 2^-6, 0x7f/0xff NaN, no infinities.
double e4m3_ref_value(int c) {
  const int e = (c >> 3) & 0xf, m = c & 7;
  const double v = e == 0 ? std::ldexp(m, -9) : std::ldexp(8 + m, e - 10);
  return (c & 0x80) ? -v : v;
}

unsigned e4m3_ref_encode(float x) {
  if (std::isnan(x)) return 0x7f;
  const unsigned sign = std::signbit(x) ? 0x80 : 0;
  const double a = std::fabs(static_cast<double>(x));
  if (a >= 448.0) return sign | 0x7e;  // saturating, as cvt.rn.satfinite
  unsigned best = 0;
  for (unsigned c = 1; c < 0x7f; ++c) {
    const double dc = std::fabs(e4m3_ref_value(c) - a), db = std::fabs(e4m3_ref_value(best) - a);
    if (dc < db || (dc == db && (c & 1) == 0)) best = c;
  }
  return sign | best;
}

uint16_t bf16_ref_encode(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if (std::isnan(x)) return 0;  // checked separately: any NaN
  const uint16_t lo = static_cast<uint16_t>(u >> 16), hi = static_cast<uint16_t>(lo + 1);
  const double dl = std::fabs(static_cast<double>(swa_ops::bf16_bits_to_float(lo)) - x);
  // hi may be the inf pattern (0x7f80): rounding treats it as 2^128, the next value were the
  // exponent unbounded, so x from the midpoint 0x1.ffp+127 up rounds to inf (IEEE 754).
  const bool hi_inf = (hi & 0x7fff) == 0x7f80;
  const double hv = hi_inf ? std::ldexp(std::signbit(x) ? -1.0 : 1.0, 128)
                           : static_cast<double>(swa_ops::bf16_bits_to_float(hi));
  const double dh = std::fabs(hv - x);
  if ((u & 0xffff) == 0) return lo;
  if (dl < dh || (dl == dh && (lo & 1) == 0)) return lo;
  return hi;
}

}  // namespace

int main() {
  using namespace swa_ops;
  // e4m3fn decode: all 256 codes.
  for (int c = 0; c < 256; ++c) {
    const float got = e4m3_to_float_portable(static_cast<uint8_t>(c));
    const bool nan = (c & 0x7f) == 0x7f;
    if (nan ? !std::isnan(got) : got != static_cast<float>(e4m3_ref_value(c)))
      fail("e4m3_to_float_portable", static_cast<float>(c), 0, 0);
  }
  // e4m3fn encode: every code's value, the midpoints between neighbours (ties), values just
  // beside those, a sweep of fp32 over the range, the saturation edge and the specials.
  std::vector<float> xs = {0.f, -0.f, 448.f, 449.f, 464.f, 480.f, 1e9f, -1e9f, INFINITY, -INFINITY,
                           NAN, 1e-10f, -1e-10f, 0.0009765625f, 0.00097656251f};
  for (int c = 0; c < 0x7e; ++c) {
    const double v = e4m3_ref_value(c), n = e4m3_ref_value(c + 1), mid = (v + n) / 2;
    for (float x : {static_cast<float>(v), static_cast<float>(mid),
                    std::nextafter(static_cast<float>(mid), 0.f),
                    std::nextafter(static_cast<float>(mid), 1e9f)}) {
      xs.push_back(x);
      xs.push_back(-x);
    }
  }
  for (uint32_t u = 0; u < 0x44000000u; u += 0x400u) {  // |x| < 512 at 2^-13 relative steps
    xs.push_back(from_bits(u));
    xs.push_back(-from_bits(u));
  }
  for (float x : xs) {
    const unsigned got = float_to_e4m3_portable(x), want = e4m3_ref_encode(x);
    if (got != want) fail("float_to_e4m3_portable", x, got, want);
  }
  // bf16 encode: a sweep over all of fp32 (every 2^9-th pattern plus the neighbours of each
  // rounding midpoint), infinities and NaNs; decode is checked by the reference using it.
  size_t n_bf16 = 0;
  for (uint64_t u = 0; u <= 0xffffffffull; u += 0x200ull) {
    for (uint32_t d : {0x0u, 0x7fffu, 0x8000u, 0x8001u}) {
      const uint32_t w = static_cast<uint32_t>(u) | d;
      const float x = from_bits(w);
      const unsigned got = float_to_bf16_bits(x);
      ++n_bf16;
      if (std::isnan(x)) {
        if (!std::isnan(bf16_bits_to_float(static_cast<uint16_t>(got))))
          fail("float_to_bf16_bits", x, got, 0x7fc0);
      } else if (got != bf16_ref_encode(x)) {
        fail("float_to_bf16_bits", x, got, bf16_ref_encode(x));
      }
    }
  }
  if (g_failures) {
    std::printf("conversions_test: %d mismatches\n", g_failures);
    return 1;
  }
  std::printf("conversions_test: e4m3fn decode (256 codes), encode (%zu values), bf16 encode "
              "(%zu values): all exact\n", xs.size(), n_bf16);
  return 0;
}
