// IndexingKernels<cuda> (index_select, embedding, gather and their scatter-add backwards) and
// DropoutKernels<cuda>. Contracts: ops/indexing.hpp and ops/dropout.hpp.
//
// Scatter-adds use atomicAdd into a zeroed buffer: float and double add into the output
// directly (the order of additions, hence the last bits, may vary from run to run); bf16 adds
// into a float scratch buffer that is rounded once at the end, as the CPU rounds each sum once.
// Dropout draws the identical mask to the CPU's: element i takes lane i % 4 of Philox block
// first + i / 4 (core/random.hpp is host-and-device code), so CPU and GPU outputs are equal.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include "cerberus/backend/cuda/error.cuh"
#include "cerberus/backend/cuda/kernels.cuh"
#include "cerberus/backend/cuda/launch.cuh"
#include "cerberus/core/random.hpp"
#include "cerberus/ops/dropout.hpp"
#include "cerberus/ops/indexing.hpp"

namespace cerberus {

namespace cuda_backend {

__global__ void find_out_of_range_kernel(const std::int64_t* idx, Index count, Index limit, unsigned long long* first_bad) {
  for (Index i = grid_first(); i < count; i += grid_step())
    if (idx[i] < 0 || idx[i] >= limit) atomicMin(first_bad, static_cast<unsigned long long>(i));
}

template <class T>
__global__ void index_select_kernel(const T* x, T* out, Index outer, Index n, Index inner, const std::int64_t* idx, Index k) {
  const Index total = outer * k * inner;
  for (Index e = grid_first(); e < total; e += grid_step()) {
    const Index i = e % inner, j = (e / inner) % k, o = e / (inner * k);
    out[e] = x[(o * n + idx[j]) * inner + i];
  }
}

// The type scatter-adds accumulate in: T itself, float for bf16.
template <class T>
using Accumulate = std::conditional_t<std::is_same_v<T, bfloat16>, float, T>;

template <class T, class A>
__global__ void index_add_kernel(const T* src, A* dst, Index outer, Index n, Index inner, const std::int64_t* idx, Index k, Index skip) {
  const Index total = outer * k * inner;
  for (Index e = grid_first(); e < total; e += grid_step()) {
    const Index i = e % inner, j = (e / inner) % k, o = e / (inner * k);
    const Index row = idx[j];
    if (row == skip) continue;
    atomicAdd(dst + (o * n + row) * inner + i, static_cast<A>(static_cast<compute_t<T>>(src[e])));
  }
}

template <class T>
__global__ void gather_kernel(const T* x, Strides xs, T* out, const std::int64_t* idx, Shape shape, int axis, Index total) {
  for (Index e = grid_first(); e < total; e += grid_step()) {
    Index rest = e, offset = 0;
#pragma unroll
    for (int d = max_rank - 1; d >= 0; --d) {
      if (d >= shape.rank()) continue;
      const Index c = rest % shape[d];
      rest /= shape[d];
      offset += (d == axis ? idx[e] : c) * xs[d];
    }
    out[e] = x[offset];
  }
}

template <class T, class A>
__global__ void scatter_add_kernel(const T* src, const std::int64_t* idx, Shape shape, int axis, A* dst, Shape dst_shape, Index total) {
  for (Index e = grid_first(); e < total; e += grid_step()) {
    Index rest = e, offset = 0, stride = 1;
#pragma unroll
    for (int d = max_rank - 1; d >= 0; --d) {
      if (d >= shape.rank()) continue;
      const Index c = rest % shape[d];
      rest /= shape[d];
      offset += (d == axis ? idx[e] : c) * stride;
      stride *= dst_shape[d];
    }
    atomicAdd(dst + offset, static_cast<A>(static_cast<compute_t<T>>(src[e])));
  }
}

template <class A, class T>
__global__ void round_into_kernel(const A* from, T* to, Index n) {
  for (Index e = grid_first(); e < n; e += grid_step()) to[e] = static_cast<T>(from[e]);
}

template <class T>
__global__ void dropout_kernel(const T* x, T* out, Index n, std::uint64_t seed, std::uint64_t first, float p, compute_t<T> scale) {
  using C = compute_t<T>;
  const Index blocks = (n + dropout_elements_per_block - 1) / dropout_elements_per_block;
  for (Index blk = grid_first(); blk < blocks; blk += grid_step()) {
    const Philox::Block r = Philox::generate(seed, first + static_cast<std::uint64_t>(blk));
#pragma unroll
    for (int lane = 0; lane < dropout_elements_per_block; ++lane) {
      const Index i = blk * dropout_elements_per_block + lane;
      if (i < n) out[i] = static_cast<T>(static_cast<C>(x[i]) * (Philox::to_unit_float(r.v[lane]) < p ? C(0) : scale));
    }
  }
}

// A zeroed accumulation buffer of `count` elements for T's scatter-adds: `out` itself, or a
// float scratch tensor for bf16 (kept alive by `keep`), then rounded into `out` by finish().
template <class T>
struct ScatterTarget {
  Accumulate<T>* data;
  Tensor<float, cuda> keep;
  T* out;
  Index count;

  ScatterTarget(T* dst, Index n, const char* op) : data(nullptr), out(dst), count(n) {
    if constexpr (std::is_same_v<T, bfloat16>) {
      keep = Tensor<float, cuda>::empty(Shape{n});
      data = keep.data();
    } else {
      data = dst;
    }
    if (n > 0) check(cudaMemsetAsync(data, 0, static_cast<std::size_t>(n) * sizeof(Accumulate<T>), stream()), op, "cudaMemsetAsync");
  }
  void finish(const char* op) {
    if constexpr (std::is_same_v<T, bfloat16>) {
      if (count == 0) return;
      round_into_kernel<<<grid_size(count, op), block_size, 0, stream()>>>(data, out, count);
      check_launch(op);
    }
  }
};

}  // namespace cuda_backend

template <>
struct IndexingKernels<cuda> {
  static BadIndex find_out_of_range(const std::int64_t* idx, Index count, Index limit) {
    if (count == 0) return {};
    const char* op = "index check";
    const auto flag = Tensor<std::int64_t, cuda>::empty(Shape{1});
    auto* first_bad = reinterpret_cast<unsigned long long*>(flag.data());
    const unsigned long long none = std::numeric_limits<unsigned long long>::max();  // all bits set: a memset, not a synchronising copy
    cuda_backend::check(cudaMemsetAsync(first_bad, 0xFF, sizeof none, cuda_backend::stream()), op, "cudaMemsetAsync");
    cuda_backend::find_out_of_range_kernel<<<cuda_backend::grid_size(count, op), cuda_backend::block_size, 0, cuda_backend::stream()>>>(
        idx, count, limit, first_bad);
    cuda_backend::check_launch(op);
    unsigned long long found = none;
    Backend<cuda>::copy_to_host(&found, first_bad, sizeof found);
    if (found == none) return {};
    BadIndex bad;
    bad.position = static_cast<Index>(found);
    Backend<cuda>::copy_to_host(&bad.value, idx + bad.position, sizeof bad.value);
    return bad;
  }
  template <class T>
  static void index_select(const T* x, T* out, Index outer, Index n, Index inner, const std::int64_t* idx, Index k) {
    const Index total = outer * k * inner;
    if (total == 0) return;
    cuda_backend::index_select_kernel<<<cuda_backend::grid_size(total, "index_select"), cuda_backend::block_size, 0, cuda_backend::stream()>>>(
        x, out, outer, n, inner, idx, k);
    cuda_backend::check_launch("index_select");
  }
  template <class T>
  static void index_add(const T* src, T* dst, Index outer, Index n, Index inner, const std::int64_t* idx, Index k, Index skip) {
    cuda_backend::ScatterTarget<T> target(dst, outer * n * inner, "index_add");
    const Index total = outer * k * inner;
    if (total > 0) {
      cuda_backend::index_add_kernel<<<cuda_backend::grid_size(total, "index_add"), cuda_backend::block_size, 0, cuda_backend::stream()>>>(
          src, target.data, outer, n, inner, idx, k, skip);
      cuda_backend::check_launch("index_add");
    }
    target.finish("index_add");
  }
  template <class T>
  static void gather(const T* x, const Strides& xs, T* out, const std::int64_t* idx, const Shape& shape, int axis) {
    const Index total = shape.numel();
    if (total == 0) return;
    cuda_backend::gather_kernel<<<cuda_backend::grid_size(total, "gather"), cuda_backend::block_size, 0, cuda_backend::stream()>>>(
        x, xs, out, idx, shape, axis, total);
    cuda_backend::check_launch("gather");
  }
  template <class T>
  static void scatter_add(const T* src, const std::int64_t* idx, const Shape& shape, int axis, T* dst, const Shape& dst_shape) {
    cuda_backend::ScatterTarget<T> target(dst, dst_shape.numel(), "scatter_add");
    const Index total = shape.numel();
    if (total > 0) {
      cuda_backend::scatter_add_kernel<<<cuda_backend::grid_size(total, "scatter_add"), cuda_backend::block_size, 0, cuda_backend::stream()>>>(
          src, idx, shape, axis, target.data, dst_shape, total);
      cuda_backend::check_launch("scatter_add");
    }
    target.finish("scatter_add");
  }
};

template <>
struct DropoutKernels<cuda> {
  template <class T>
  static void apply(const T* x, T* out, Index n, std::uint64_t seed, std::uint64_t first, float p, compute_t<T> scale) {
    const Index blocks = (n + dropout_elements_per_block - 1) / dropout_elements_per_block;
    if (blocks == 0) return;
    cuda_backend::dropout_kernel<<<cuda_backend::grid_size(blocks, "dropout"), cuda_backend::block_size, 0, cuda_backend::stream()>>>(
        x, out, n, seed, first, p, scale);
    cuda_backend::check_launch("dropout");
  }
};

}  // namespace cerberus
