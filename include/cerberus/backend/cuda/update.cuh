// optim::Kernels<cuda>: the device side of the optimizers (optim/kernels.hpp) and of gradient
// clipping. Included by <cerberus/backend/cuda.cuh>.
//   update_elements(n, fn, arrays...)  one fused grid-stride kernel per parameter tensor: thread i
//                                      loads element i of every array into registers, calls the
//                                      same CERBERUS_HOST_DEVICE functor as the CPU (SgdUpdate,
//                                      AdamUpdate, ...) on floats, stores back the non-const arrays
//   sum_of_squares(x, n)               squares summed in double: a fixed grid of at most 1024
//                                      blocks of 256 threads (independent of the device, so the
//                                      result depends on n and the data only), block sums in
//                                      shared memory, the block partials added in order on the host
// The CPU adds its squares in a different order, so norms agree to double rounding, and updates
// agree to float rounding (the CPU may evaluate the same functor with SIMD fused multiply-adds).
#pragma once

#include <cuda_runtime.h>

#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "cerberus/backend/cuda/backend.cuh"
#include "cerberus/backend/cuda/error.cuh"
#include "cerberus/backend/cuda/launch.cuh"
#include "cerberus/core/config.hpp"
#include "cerberus/core/dtype.hpp"
#include "cerberus/optim/kernels.hpp"

namespace cerberus::cuda_backend {

namespace update_detail {

template <class P, class C>
__device__ inline void store(P* p, Index i, const C& v) {
  if constexpr (!std::is_const_v<P>) p[i] = v;
}

template <class C, class Fn, class... P, std::size_t... K>
__device__ inline void apply_at(const Fn& fn, Index i, std::index_sequence<K...>, P*... arrays) {
  C values[sizeof...(P)] = {arrays[i]...};  // constant indices only: registers
  fn(values[K]...);
  (store(arrays, i, values[K]), ...);
}

}  // namespace update_detail

template <class C, class Fn, class... P>
__global__ void update_elements_kernel(Index n, Fn fn, P*... arrays) {
  for (Index i = grid_first(); i < n; i += grid_step())
    update_detail::apply_at<C>(fn, i, std::index_sequence_for<P...>{}, arrays...);
}

template <class Fn, class First, class... Rest>
void update_elements(Index n, const Fn& fn, First* first, Rest*... rest) {
  // As on the CPU: float, double or bfloat16 arrays of one compute type (bf16 read into float,
  // stored rounded through bfloat16's conversions).
  using C = compute_t<std::remove_const_t<First>>;
  static_assert((std::is_same_v<C, compute_t<std::remove_const_t<Rest>>> && ...),
                "update_elements: every array must have the same compute type (float and bfloat16 arrays mix, double stays alone).");
  static_assert(std::is_floating_point_v<C>, "update_elements: arrays of float, double or bfloat16 only.");
  if (n <= 0) return;
  update_elements_kernel<C, Fn, First, Rest...><<<grid_size(n, "optimizer step"), block_size, 0, stream()>>>(n, fn, first, rest...);
  check(cudaGetLastError(), "optimizer step", "update kernel launch (" + std::to_string(n) + " elements, " +
                                                  std::to_string(1 + sizeof...(Rest)) + " arrays)");
}

inline constexpr int squares_max_blocks = 1024;

template <class T>
__global__ void sum_of_squares_kernel(const T* x, Index n, double* partial) {
  __shared__ double lanes[block_size];
  double s = 0;
  for (Index i = grid_first(); i < n; i += grid_step()) {
    const double v = static_cast<double>(x[i]);
    s += v * v;
  }
  lanes[threadIdx.x] = s;
  __syncthreads();
  for (int half = block_size / 2; half > 0; half >>= 1) {
    if (static_cast<int>(threadIdx.x) < half) lanes[threadIdx.x] += lanes[threadIdx.x + half];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = lanes[0];
}

template <class T>
double sum_of_squares(const T* x, Index n) {
  if (n <= 0) return 0.0;
  const Index wanted = (n + block_size - 1) / block_size;
  const int blocks = static_cast<int>(wanted < squares_max_blocks ? wanted : squares_max_blocks);
  const std::string shape = " (" + std::to_string(n) + " elements)";
  double* partial = nullptr;
  const std::size_t bytes = static_cast<std::size_t>(blocks) * sizeof(double);
  partial = static_cast<double*>(Memory<cuda>::allocate(bytes));
  std::vector<double> host(static_cast<std::size_t>(blocks));
  try {
    sum_of_squares_kernel<T><<<blocks, block_size, 0, stream()>>>(x, n, partial);
    check(cudaGetLastError(), "grad_norm", "sum of squares kernel launch" + shape);
    Backend<cuda>::copy_to_host(host.data(), partial, bytes);
  } catch (...) {
    Memory<cuda>::deallocate(partial, bytes);
    throw;
  }
  Memory<cuda>::deallocate(partial, bytes);
  double total = 0;
  for (const double s : host) total += s;
  return total;
}

}  // namespace cerberus::cuda_backend

namespace cerberus::optim {

template <>
struct Kernels<cuda> {
  template <class Fn, class... P>
  static void update_elements(Index n, const Fn& fn, P*... arrays) {
    cuda_backend::update_elements(n, fn, arrays...);
  }
  template <class T>
  static double sum_of_squares(const T* x, Index n) { return cuda_backend::sum_of_squares(x, n); }
};

}  // namespace cerberus::optim
