// Backend<cuda>: the device side of the Tensor API (expr/evaluate.hpp, tensor/tensor.hpp call
// these). Kernels are queued on cuda_backend::stream() and checked at launch; copies to the host
// wait for the stream, so a fault in an earlier kernel surfaces there at the latest.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <type_traits>

#include "cerberus/backend/cuda/error.cuh"
#include "cerberus/backend/cuda/kernels.cuh"
#include "cerberus/backend/cuda/launch.cuh"
#include "cerberus/core/device.hpp"
#include "cerberus/core/shape.hpp"
#include "cerberus/tensor/storage.hpp"

namespace cerberus {

namespace cuda_backend {

// True when `strides` walk `shape` densely in row-major order (extent-1 dimensions may have any
// stride), so a same-type copy is one memcpy.
inline bool is_row_major(const Shape& shape, const Strides& strides) {
  Index expected = 1;
  for (int d = shape.rank() - 1; d >= 0; --d) {
    if (shape[d] != 1 && strides[d] != expected) return false;
    expected *= shape[d];
  }
  return true;
}

// Kernel parameters may take 32764 bytes (CUDA 12.1+, Volta and later); a view near that would
// need hundreds of tensor leaves in one expression.
inline constexpr std::size_t max_view_bytes = 32764 - 2 * sizeof(Shape) - sizeof(Index) - sizeof(void*);

}  // namespace cuda_backend

template <>
struct Backend<cuda> {
  // out[c] = view.at(c) over `shape` (already collapsed), written through `strides`.
  template <class T, class View>
  static void evaluate(T* out, const Shape& shape, const Strides& strides, const View& view) {
    static_assert(std::is_trivially_copyable_v<View>, "A kernel view must be trivially copyable to be passed to a CUDA kernel.");
    static_assert(sizeof(View) <= cuda_backend::max_view_bytes, "This expression's kernel view exceeds CUDA's kernel parameter limit; split the expression.");
    const Index n = shape.numel();
    if (n == 0) return;
    cuda_backend::evaluate_kernel<<<cuda_backend::grid_size(n, "evaluate"), cuda_backend::block_size, 0, cuda_backend::stream()>>>(
        out, shape, strides, n, view);
    cuda_backend::check_launch("evaluate");
  }

  // dst = U(src) element by element, each side through its own strides.
  template <class U, class T>
  static void convert(U* dst, const Strides& dst_strides, const T* src, const Strides& src_strides, const Shape& shape) {
    const Index n = shape.numel();
    if (n == 0) return;
    if constexpr (std::is_same_v<U, T>) {
      if (cuda_backend::is_row_major(shape, dst_strides) && cuda_backend::is_row_major(shape, src_strides)) {
        cuda_backend::check(cudaMemcpyAsync(dst, src, static_cast<std::size_t>(n) * sizeof(T), cudaMemcpyDeviceToDevice,
                                            cuda_backend::stream()),
                            "convert", "cudaMemcpyAsync (device to device)");
        return;
      }
    }
    cuda_backend::convert_kernel<<<cuda_backend::grid_size(n, "convert"), cuda_backend::block_size, 0, cuda_backend::stream()>>>(
        dst, dst_strides, src, src_strides, shape, n);
    cuda_backend::check_launch("convert");
  }

  template <class T>
  static void fill(T* dst, const Strides& strides, const Shape& shape, T value) {
    const Index n = shape.numel();
    if (n == 0) return;
    cuda_backend::fill_kernel<<<cuda_backend::grid_size(n, "fill"), cuda_backend::block_size, 0, cuda_backend::stream()>>>(
        dst, strides, shape, n, value);
    cuda_backend::check_launch("fill");
  }

  // Host -> device. Waits for the copy: the caller may free or reuse `src` (a pooled CPU block)
  // as soon as this returns.
  static void copy_from_host(void* dst, const void* src, std::size_t bytes) {
    if (bytes == 0) return;
    cuda_backend::check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cuda_backend::stream()), "copy_from_host",
                        "cudaMemcpyAsync (host to device)");
    cuda_backend::check(cudaStreamSynchronize(cuda_backend::stream()), "copy_from_host", "cudaStreamSynchronize");
  }

  // Device -> host, after all queued work: the host sees every earlier kernel's result.
  static void copy_to_host(void* dst, const void* src, std::size_t bytes) {
    if (bytes == 0) return;
    cuda_backend::check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, cuda_backend::stream()), "copy_to_host",
                        "cudaMemcpyAsync (device to host)");
    cuda_backend::check(cudaStreamSynchronize(cuda_backend::stream()), "copy_to_host", "cudaStreamSynchronize");
  }
};

}  // namespace cerberus
