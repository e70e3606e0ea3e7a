// The generic kernels: evaluate an expression view, convert (strided copy / dtype change), fill.
// Each walks the output's elements in row-major order with a grid-stride loop and turns the
// linear index into coordinates, so any rank, stride or broadcast pattern takes the same code;
// the host side has already collapsed the dimensions (expr_view::collapse_dims), so a contiguous
// expression arrives here as rank 1.
#pragma once

#include "cerberus/backend/cuda/launch.cuh"
#include "cerberus/core/config.hpp"
#include "cerberus/core/dtype.hpp"
#include "cerberus/core/shape.hpp"

namespace cerberus::cuda_backend {

// The dimension loops below run over all max_rank slots, unrolled, and skip those past the rank:
// with constant indices the shape and strides stay in the kernel's parameter space and the
// coordinates in registers, where a loop up to the run-time rank would copy them to local memory.

// Coordinates of row-major element i of `shape`, written to coord; returns its offset through
// `strides`.
__device__ inline Index unravel(Index i, const Shape& shape, const Strides& strides, Index* coord) {
  Index offset = 0;
#pragma unroll
  for (int d = max_rank - 1; d >= 0; --d) {
    if (d >= shape.rank()) continue;
    const Index extent = shape[d];
    coord[d] = i % extent;
    i /= extent;
    offset += coord[d] * strides[d];
  }
  return offset;
}

// out[element] = view.at(coordinates): one instantiation per expression type. The view (a tree
// of Leaf / Scalar / Node structs, expr/view.hpp) arrives by value as a kernel parameter.
template <class T, class View>
__global__ void evaluate_kernel(T* out, Shape shape, Strides out_strides, Index n, View view) {
  for (Index i = grid_first(); i < n; i += grid_step()) {
    Index coord[max_rank];
    const Index o = unravel(i, shape, out_strides, coord);
    out[o] = static_cast<T>(view.at(coord, shape.rank()));
  }
}

// dst[c] = U(src[c]) for every coordinate c; the value passes through T's compute type, so
// bf16 -> integer goes bf16 -> float -> integer, as on the CPU.
template <class U, class T>
__global__ void convert_kernel(U* dst, Strides dst_strides, const T* src, Strides src_strides, Shape shape, Index n) {
  for (Index i = grid_first(); i < n; i += grid_step()) {
    Index rest = i, od = 0, os = 0;
#pragma unroll
    for (int d = max_rank - 1; d >= 0; --d) {
      if (d >= shape.rank()) continue;
      const Index c = rest % shape[d];
      rest /= shape[d];
      od += c * dst_strides[d];
      os += c * src_strides[d];
    }
    dst[od] = static_cast<U>(static_cast<compute_t<T>>(src[os]));
  }
}

template <class T>
__global__ void fill_kernel(T* dst, Strides strides, Shape shape, Index n, T value) {
  for (Index i = grid_first(); i < n; i += grid_step()) {
    Index rest = i, o = 0;
#pragma unroll
    for (int d = max_rank - 1; d >= 0; --d) {
      if (d >= shape.rank()) continue;
      o += rest % shape[d] * strides[d];
      rest /= shape[d];
    }
    dst[o] = value;
  }
}

}  // namespace cerberus::cuda_backend
