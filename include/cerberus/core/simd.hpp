// xsimd, included in one place. GCC 12 warns "-Wuninitialized" inside its own AVX-512 intrinsic
// headers wherever xsimd inlines _mm512_undefined_* (GCC bug 105593, fixed in GCC 13); the
// warning is silenced for these system headers only.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <xsimd/xsimd.hpp>
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

// xsimd 8 calls a horizontal sum `hadd`; from 9 on it is `reduce_add`.
namespace cerberus::simd {
template <class B>
auto reduce_add(const B& b) {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_add(b);
#else
  return xsimd::hadd(b);
#endif
}

// Reinterprets a batch's bits as element type To: xsimd 8 names the target batch type, later
// versions the element type.
template <class To, class T, class A>
xsimd::batch<To, A> bit_cast(const xsimd::batch<T, A>& b) {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::bitwise_cast<To>(b);
#else
  return xsimd::bitwise_cast<xsimd::batch<To, A>>(b);
#endif
}
}  // namespace cerberus::simd
