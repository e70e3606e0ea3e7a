// Library-wide macros and the index type. Every other header includes this one first.
#pragma once

#include <cstdint>

#define CERBERUS_VERSION_MAJOR 0
#define CERBERUS_VERSION_MINOR 1
#define CERBERUS_VERSION_PATCH 0

// Functions callable from host and device code. nvcc compiles them for both; a plain C++
// compiler sees ordinary inline functions.
#if defined(__CUDACC__)
#define CERBERUS_HOST_DEVICE __host__ __device__
#define CERBERUS_DEVICE_COMPILE 1
#else
#define CERBERUS_HOST_DEVICE
#define CERBERUS_DEVICE_COMPILE 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define CERBERUS_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define CERBERUS_ALWAYS_INLINE inline
#endif

// Loop unrolling hint that every compiler of the project accepts (nvcc warns on `GCC unroll`).
// nvcc's host pass gets none: it hands `unroll` on to the host compiler, which warns that it does
// not know it (-Wunknown-pragmas, ~380 warnings in a CI build), and host code in .cu files is
// reference code that does not need it.
#define CERBERUS_PRAGMA(x) _Pragma(#x)
#if defined(__CUDA_ARCH__)
#define CERBERUS_UNROLL(n) CERBERUS_PRAGMA(unroll n)
#elif defined(__CUDACC__)
#define CERBERUS_UNROLL(n)
#elif defined(__GNUC__) || defined(__clang__)
#define CERBERUS_UNROLL(n) CERBERUS_PRAGMA(GCC unroll n)
#else
#define CERBERUS_UNROLL(n)
#endif

namespace cerberus {

// Sizes, strides and offsets. Signed so that differences and reverse loops are natural.
using Index = std::int64_t;

// Highest tensor rank. Shapes live inline (no heap) so views stay cheap to copy to a device.
inline constexpr int max_rank = 8;

}  // namespace cerberus
