// The device layer of the optimizers: two kernels, chosen by the tensors' device tag.
//   update_elements(n, fn, arrays...)  fn(x0, x1, ...) on element i of every array, in one pass,
//                                      storing back the arrays given as non-const pointers
//   sum_of_squares(x, n)               sum of x[i]^2 in double
// Update rules are functors whose operator() is a template over the value type and marked
// CERBERUS_HOST_DEVICE (optim/sgd.hpp, optim/adam.hpp), so a CUDA version is one grid-stride
// kernel calling the same functor on floats, plus a reduction: a Kernels<cuda> specialisation.
// Only the CPU one exists today; any other device stops at compile time with the message below.
#pragma once

#include "cerberus/backend/cpu/update.hpp"
#include "cerberus/core/device.hpp"

namespace cerberus::optim {

template <Device D>
struct Kernels {
  static_assert(sizeof(D) == 0,
                "cerberus::optim runs on cpu tensors only for now: there is no optim::Kernels<cuda> yet "
                "(optim/kernels.hpp says what it needs). Keep the parameters on cpu.");
};

template <>
struct Kernels<cpu> {
  template <class Fn, class... P>
  static void update_elements(Index n, const Fn& fn, P*... arrays) {
    cpu_backend::update_elements(n, fn, arrays...);
  }
  static double sum_of_squares(const float* x, Index n) { return cpu_backend::sum_of_squares(x, n); }
};

}  // namespace cerberus::optim
