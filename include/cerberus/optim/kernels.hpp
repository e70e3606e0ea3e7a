// The device layer of the optimizers: two kernels, chosen by the tensors' device tag.
//   update_elements(n, fn, arrays...)  fn(x0, x1, ...) on element i of every array, in one pass,
//                                      storing back the arrays given as non-const pointers
//   sum_of_squares(x, n)               sum of x[i]^2 in double
//   sum_of_squares_many(tensors)       the same over a list of (pointer, size): on cuda one
//                                      synchronisation for all of them
//   UpdateBatch                        update_elements calls made while one is open may be
//                                      deferred to its flush() and run together (cuda: one
//                                      launch for many tensors); on the CPU they run at once
// Update rules are functors whose operator() is a template over the value type and marked
// CERBERUS_HOST_DEVICE (optim/sgd.hpp, optim/adam.hpp), so a CUDA version is one grid-stride
// kernel calling the same functor on floats, plus a reduction: Kernels<cuda> is specialised in
// backend/cuda/update.cuh, which <cerberus/backend/cuda.cuh> includes. A device whose header is
// not included stops at compile time with the message below (never a silent CPU run).
#pragma once

#include <utility>
#include <vector>

#include "cerberus/backend/cpu/update.hpp"
#include "cerberus/core/device.hpp"

namespace cerberus::optim {

template <Device D>
struct Kernels {
  static_assert(sizeof(D) == 0,
                "No optimizer kernels for this device are included: include <cerberus/backend/cuda.cuh> and compile with nvcc "
                "to use cerberus::optim (SGD, Adam, AdamW, clip_grad_norm) on cuda tensors.");
};

template <>
struct Kernels<cpu> {
  // Each update already spreads over the thread pool; there is nothing to gain by deferring.
  struct UpdateBatch {
    void flush() {}
  };
  template <class Fn, class... P>
  static void update_elements(Index n, const Fn& fn, P*... arrays) {
    cpu_backend::update_elements(n, fn, arrays...);
  }
  template <class T>
  static double sum_of_squares(const T* x, Index n) { return cpu_backend::sum_of_squares(x, n); }
  template <class T>
  static double sum_of_squares_many(const std::vector<std::pair<const T*, Index>>& tensors) {
    double total = 0;
    for (const auto& [x, n] : tensors) total += cpu_backend::sum_of_squares(x, n);
    return total;
  }
};

}  // namespace cerberus::optim
