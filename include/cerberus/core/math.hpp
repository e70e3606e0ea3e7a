// Elementary math for one definition of every elementwise functor. Each function has a scalar
// overload (float, double; host and device) and, in host compilation, an overload for xsimd
// batches, so a functor written once as `math::exp(x)` serves the scalar, SIMD and CUDA paths.
#pragma once

#include <math.h>

#include <cstdint>
#include <type_traits>

#include "cerberus/core/bfloat16.hpp"
#include "cerberus/core/config.hpp"

#if !CERBERUS_DEVICE_COMPILE
#include "cerberus/core/simd.hpp"
#endif

namespace cerberus::math {

// ---- scalars: float and double, callable from device code -------------------------------------
CERBERUS_HOST_DEVICE inline float exp(float x) { return ::expf(x); }
CERBERUS_HOST_DEVICE inline double exp(double x) { return ::exp(x); }
CERBERUS_HOST_DEVICE inline float log(float x) { return ::logf(x); }
CERBERUS_HOST_DEVICE inline double log(double x) { return ::log(x); }
CERBERUS_HOST_DEVICE inline float sqrt(float x) { return ::sqrtf(x); }
CERBERUS_HOST_DEVICE inline double sqrt(double x) { return ::sqrt(x); }
CERBERUS_HOST_DEVICE inline float tanh(float x) { return ::tanhf(x); }
CERBERUS_HOST_DEVICE inline double tanh(double x) { return ::tanh(x); }
CERBERUS_HOST_DEVICE inline float erf(float x) { return ::erff(x); }
CERBERUS_HOST_DEVICE inline double erf(double x) { return ::erf(x); }
CERBERUS_HOST_DEVICE inline float pow(float x, float y) { return ::powf(x, y); }
CERBERUS_HOST_DEVICE inline double pow(double x, double y) { return ::pow(x, y); }
CERBERUS_HOST_DEVICE inline float abs(float x) { return ::fabsf(x); }
CERBERUS_HOST_DEVICE inline double abs(double x) { return ::fabs(x); }

// min/max propagate NaN from either side, like torch.minimum / torch.maximum.
template <class T>
  requires std::is_floating_point_v<T>
CERBERUS_HOST_DEVICE inline T max(T a, T b) {
  return (a != a || b != b) ? a + b : (a > b ? a : b);
}
template <class T>
  requires std::is_floating_point_v<T>
CERBERUS_HOST_DEVICE inline T min(T a, T b) {
  return (a != a || b != b) ? a + b : (a < b ? a : b);
}

// Comparisons yield 1 or 0 in the operand type, so masks compose with arithmetic.
template <class T>
  requires std::is_floating_point_v<T>
CERBERUS_HOST_DEVICE inline T less(T a, T b) { return a < b ? T(1) : T(0); }
template <class T>
  requires std::is_floating_point_v<T>
CERBERUS_HOST_DEVICE inline T less_equal(T a, T b) { return a <= b ? T(1) : T(0); }
template <class T>
  requires std::is_floating_point_v<T>
CERBERUS_HOST_DEVICE inline T equal(T a, T b) { return a == b ? T(1) : T(0); }
template <class T>
  requires std::is_floating_point_v<T>
CERBERUS_HOST_DEVICE inline T not_equal(T a, T b) { return a != b ? T(1) : T(0); }
// Picks a where cond is nonzero, else b.
template <class T>
  requires std::is_floating_point_v<T>
CERBERUS_HOST_DEVICE inline T select(T cond, T a, T b) { return cond != T(0) ? a : b; }
// x rounded to the nearest bfloat16 (ties to even), kept as a float: what storing x into a bf16
// tensor and reading it back gives. Mixed-precision optimizers compare it with the stored weight.
CERBERUS_HOST_DEVICE inline float round_to_bfloat16(float x) { return static_cast<float>(bfloat16(x)); }

#if !CERBERUS_DEVICE_COMPILE
// ---- xsimd batches: the CPU's SIMD path ------------------------------------------------------
template <class T, class A>
using batch = xsimd::batch<T, A>;

template <class T, class A> inline batch<T, A> exp(const batch<T, A>& x) { return xsimd::exp(x); }
template <class T, class A> inline batch<T, A> log(const batch<T, A>& x) { return xsimd::log(x); }
template <class T, class A> inline batch<T, A> sqrt(const batch<T, A>& x) { return xsimd::sqrt(x); }
template <class T, class A> inline batch<T, A> tanh(const batch<T, A>& x) { return xsimd::tanh(x); }
template <class T, class A> inline batch<T, A> erf(const batch<T, A>& x) { return xsimd::erf(x); }
template <class T, class A> inline batch<T, A> pow(const batch<T, A>& x, const batch<T, A>& y) { return xsimd::pow(x, y); }
template <class T, class A> inline batch<T, A> abs(const batch<T, A>& x) { return xsimd::abs(x); }
// xsimd 8's `!=` is an ordered compare on AVX/AVX-512 (false for NaN), so NaN is tested with isnan.
template <class T, class A>
inline batch<T, A> max(const batch<T, A>& a, const batch<T, A>& b) {
  const auto nan = xsimd::isnan(a) | xsimd::isnan(b);
  return xsimd::select(nan, a + b, xsimd::select(a > b, a, b));
}
template <class T, class A>
inline batch<T, A> min(const batch<T, A>& a, const batch<T, A>& b) {
  const auto nan = xsimd::isnan(a) | xsimd::isnan(b);
  return xsimd::select(nan, a + b, xsimd::select(a < b, a, b));
}
template <class T, class A>
inline batch<T, A> less(const batch<T, A>& a, const batch<T, A>& b) { return xsimd::select(a < b, batch<T, A>(T(1)), batch<T, A>(T(0))); }
template <class T, class A>
inline batch<T, A> less_equal(const batch<T, A>& a, const batch<T, A>& b) { return xsimd::select(a <= b, batch<T, A>(T(1)), batch<T, A>(T(0))); }
template <class T, class A>
inline batch<T, A> equal(const batch<T, A>& a, const batch<T, A>& b) { return xsimd::select(a == b, batch<T, A>(T(1)), batch<T, A>(T(0))); }
template <class T, class A>
inline batch<T, A> not_equal(const batch<T, A>& a, const batch<T, A>& b) { return xsimd::select(a == b, batch<T, A>(T(0)), batch<T, A>(T(1))); }
// The same bit operations as bfloat16::from_float (NaN aside: a NaN may come back as another
// NaN or as inf, where the scalar keeps a quiet NaN).
template <class A>
inline batch<float, A> round_to_bfloat16(const batch<float, A>& x) {
  using U = batch<std::uint32_t, A>;
  const U u = simd::bit_cast<std::uint32_t>(x);
  return simd::bit_cast<float>((u + U(0x7fffu) + ((u >> 16) & U(1u))) & U(0xffff0000u));
}
// Nonzero (NaN included) selects a, like the scalar `cond != 0`.
template <class T, class A>
inline batch<T, A> select(const batch<T, A>& cond, const batch<T, A>& a, const batch<T, A>& b) {
  return xsimd::select(cond == batch<T, A>(T(0)), b, a);
}
#endif

}  // namespace cerberus::math
