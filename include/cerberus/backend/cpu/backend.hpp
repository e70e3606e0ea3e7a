// The CPU backend: memory from the caching allocator, strided copies and fills, and the fused
// elementwise evaluator (xsimd on rows that are contiguous or broadcast, scalar otherwise),
// spread over the shared thread pool.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "cerberus/core/config.hpp"

// In a TU compiled by nvcc (CERBERUS_DEVICE_COMPILE) the CPU evaluator runs its scalar loop only.
// xsimd 8 does parse under nvcc 13, but core/math.hpp leaves out its xsimd overloads there so that
// every functor stays a plain __host__ __device__ function; routing batches through those
// functors would call host-only xsimd code from __host__ __device__ code (nvcc warnings 20011 and
// 20014 at every functor). CPU tensors in a .cu file are for host data and reference results, so
// the scalar loop (still threaded) is enough; fast CPU code belongs in .cpp files.
#if CERBERUS_DEVICE_COMPILE
#define CERBERUS_CPU_SIMD 0
#else
#define CERBERUS_CPU_SIMD 1
#include "cerberus/core/simd.hpp"
#endif

#include "cerberus/backend/cpu/thread_pool.hpp"
#include "cerberus/core/dtype.hpp"
#include "cerberus/core/shape.hpp"
#include "cerberus/tensor/caching_allocator.hpp"
#include "cerberus/tensor/storage.hpp"

// Template code here is compiled for the SIMD width the includer chose (-march). Tagging the
// namespace with that width keeps TUs built with different flags from sharing (ODR-violating)
// instantiations. The scalar-only code of nvcc TUs gets its own tag for the same reason.
#if !CERBERUS_CPU_SIMD
#define CERBERUS_SIMD_ABI scalar_nvcc
#elif defined(__AVX512F__)
#define CERBERUS_SIMD_ABI simd_avx512
#elif defined(__AVX2__)
#define CERBERUS_SIMD_ABI simd_avx2
#elif defined(__AVX__)
#define CERBERUS_SIMD_ABI simd_avx
#elif defined(__ARM_NEON)
#define CERBERUS_SIMD_ABI simd_neon
#else
#define CERBERUS_SIMD_ABI simd_baseline
#endif

namespace cerberus {

namespace cpu_backend {

struct AlignedMemory {
  static constexpr std::size_t alignment = 64;  // one cache line, one AVX-512 register
  static void* allocate(std::size_t bytes) { return std::aligned_alloc(alignment, (bytes + alignment - 1) / alignment * alignment); }
  static void release(void* p) { std::free(p); }
};

inline CachingAllocator<AlignedMemory>& allocator() {
  static auto* instance = new CachingAllocator<AlignedMemory>();  // never destroyed: tensors may outlive statics
  return *instance;
}

inline namespace CERBERUS_SIMD_ABI {

// Below this many elements per task, threading costs more than it saves.
inline constexpr Index elementwise_grain = 32 * 1024;

// Calls fn(row_coords) for every row of `shape` in [row_begin, row_end) (a row = all but the
// innermost dimension).
template <class Fn>
void for_each_row(const Shape& shape, Index row_begin, Index row_end, Fn&& fn) {
  const int rank = shape.rank();
  Index coord[max_rank] = {};
  Index r = row_begin;
  for (int d = rank - 2; d >= 0; --d) {
    coord[d] = r % shape[d];
    r /= shape[d];
  }
  for (Index row = row_begin; row < row_end; ++row) {
    fn(static_cast<const Index*>(coord));
    for (int d = rank - 2; d >= 0; --d) {
      if (++coord[d] < shape[d]) break;
      coord[d] = 0;
    }
  }
}

template <class T>
CERBERUS_ALWAYS_INLINE Index row_offset(const Index* coord, const Strides& strides, int rank) {
  Index o = 0;
  for (int d = 0; d + 1 < rank; ++d) o += coord[d] * strides[d];
  return o;
}

// out[i] = view(i) for every element; shape/strides already collapsed.
template <class T, class View>
void evaluate(T* out, const Shape& shape, const Strides& out_strides, View view) {
#if CERBERUS_CPU_SIMD
  using C = compute_t<T>;
  using Batch = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(Batch::size);
#else
  constexpr Index W = 16;  // no SIMD (nvcc TU): W only sizes the blocks the work is split into
#endif
  const int rank = shape.rank();
  if (rank == 0) {
    Index none[1] = {0};
    view.begin_row(none, 0);
    out[0] = static_cast<T>(view.scalar(0));
    return;
  }
  const Index inner = shape[rank - 1];
  const Index out_inner = out_strides[rank - 1];
  // Work is split in blocks of W elements that start at multiples of W within a row, so an
  // element takes the SIMD or the scalar path by its position alone: results are bitwise the
  // same whatever the thread count.
  const Index blocks_per_row = (inner + W - 1) / W;
  const Index rows = shape.numel() / inner;

  parallel_for(0, rows * blocks_per_row, elementwise_grain / W, [&](Index begin, Index end) {
    View local = view;  // each task keeps its own row pointers
    Index coord[max_rank] = {};
    while (begin < end) {
      Index r = begin / blocks_per_row;
      const Index first_block = begin % blocks_per_row;
      const Index last_block = std::min(blocks_per_row, first_block + (end - begin));
      const Index i0 = first_block * W, i1 = std::min(inner, last_block * W);
      for (int d = rank - 2; d >= 0; --d) {
        coord[d] = r % shape[d];
        r /= shape[d];
      }
      local.begin_row(coord, rank);
      T* o = out + row_offset<T>(coord, out_strides, rank);
      Index i = i0;
#if CERBERUS_CPU_SIMD
      if (out_inner == 1 && local.vectorizable()) {
        for (; i + W <= i1; i += W) {
          const Batch v = local.template packet<Batch>(i);
          if constexpr (std::is_same_v<T, C>) {
            v.store_unaligned(o + i);
          } else {
            alignas(64) C tmp[W];
            v.store_aligned(tmp);
            for (Index k = 0; k < W; ++k) o[i + k] = static_cast<T>(tmp[k]);
          }
        }
      }
#endif
      for (; i < i1; ++i) o[i * out_inner] = static_cast<T>(local.scalar(i));
      begin += last_block - first_block;
    }
  });
}

// dst[i] = U(src[i]) over a strided shape (copy, contiguous(), dtype conversion).
template <class U, class T>
void convert(U* dst, const Strides& dst_strides, const T* src, const Strides& src_strides, const Shape& shape) {
  const int rank = shape.rank();
  if (shape.numel() == 0) return;
  if (rank == 0) {
    dst[0] = static_cast<U>(src[0]);
    return;
  }
  const Index inner = shape[rank - 1], ds = dst_strides[rank - 1], ss = src_strides[rank - 1];
  const Index rows = shape.numel() / inner;
  parallel_for(0, rows, std::max<Index>(1, elementwise_grain / std::max<Index>(inner, 1)), [&](Index b, Index e) {
    for_each_row(shape, b, e, [&](const Index* coord) {
      U* d = dst + row_offset<U>(coord, dst_strides, rank);
      const T* s = src + row_offset<T>(coord, src_strides, rank);
      if constexpr (std::is_same_v<U, T>) {
        if (ds == 1 && ss == 1) {
          std::memcpy(d, s, static_cast<std::size_t>(inner) * sizeof(T));
          return;
        }
      }
      for (Index i = 0; i < inner; ++i) d[i * ds] = static_cast<U>(static_cast<compute_t<T>>(s[i * ss]));
    });
  });
}

template <class T>
void fill(T* dst, const Strides& strides, const Shape& shape, T value) {
  const int rank = shape.rank();
  if (shape.numel() == 0) return;
  if (rank == 0) {
    dst[0] = value;
    return;
  }
  const Index inner = shape[rank - 1], ds = strides[rank - 1];
  const Index rows = shape.numel() / inner;
  parallel_for(0, rows, std::max<Index>(1, elementwise_grain / std::max<Index>(inner, 1)), [&](Index b, Index e) {
    for_each_row(shape, b, e, [&](const Index* coord) {
      T* d = dst + row_offset<T>(coord, strides, rank);
      for (Index i = 0; i < inner; ++i) d[i * ds] = value;
    });
  });
}

}  // namespace CERBERUS_SIMD_ABI
}  // namespace cpu_backend

template <>
struct Memory<cpu> {
  static void* allocate(std::size_t bytes) { return cpu_backend::allocator().allocate(bytes); }
  static void deallocate(void* p, std::size_t bytes) { cpu_backend::allocator().deallocate(p, bytes); }
};

template <>
struct Backend<cpu> {
  template <class T, class View>
  static void evaluate(T* out, const Shape& shape, const Strides& strides, const View& view) {
    cpu_backend::evaluate(out, shape, strides, view);
  }
  template <class U, class T>
  static void convert(U* dst, const Strides& ds, const T* src, const Strides& ss, const Shape& shape) {
    cpu_backend::convert(dst, ds, src, ss, shape);
  }
  template <class T>
  static void fill(T* dst, const Strides& strides, const Shape& shape, T value) {
    cpu_backend::fill(dst, strides, shape, value);
  }
};

// Memory statistics of the CPU caching allocator, and a way to give cached blocks back.
inline AllocatorStats cpu_memory_stats() { return cpu_backend::allocator().stats(); }
inline void empty_cpu_cache() { cpu_backend::allocator().empty_cache(); }

}  // namespace cerberus
