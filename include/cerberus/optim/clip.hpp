// Gradient clipping by global norm, as torch.nn.utils.clip_grad_norm_: the L2 norm of all
// gradients taken together, and, when it exceeds max_norm, every gradient scaled by
// max_norm / (norm + 1e-6).
//
// The norm is summed in double (float sums of millions of squares lose digits). Parameters
// without a gradient are skipped; tied parameters (one storage under two names) count once.
//
// A NaN or infinite norm (some gradient holds NaN or inf) leaves the gradients untouched and is
// returned as is: scaling would turn every gradient into NaN (what PyTorch does by default) and
// ruin the parameters at the next step. The caller decides: skip the step when
// !std::isfinite(norm) (what mixed-precision loss scaling does), or pass
// NonFiniteNorm::error to get a ValueError instead.
#pragma once

#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "cerberus/autograd/grad_mode.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/nn/parameter.hpp"
#include "cerberus/optim/kernels.hpp"
#include "cerberus/tensor/tensor.hpp"

namespace cerberus::optim {

enum class NonFiniteNorm {
  keep,   // return the NaN / inf norm, gradients untouched
  error,  // throw ValueError
};

// The global L2 norm of the gradients (in double), before any clipping.
// On cuda all gradients are summed by one pass with one copy of the result to the host.
template <class T, Device D>
double grad_norm(const nn::ParameterList<T, D>& parameters) {
  std::vector<Tensor<T, D>> flat;  // kept alive until the sum is read
  std::vector<std::pair<const T*, Index>> arrays;
  for (const auto& p : nn::unique_parameters(parameters)) {
    const Tensor<T, D> g = p.tensor.grad();
    if (!g.defined()) continue;
    flat.push_back(g.contiguous());
    arrays.emplace_back(flat.back().data(), flat.back().numel());
  }
  return std::sqrt(Kernels<D>::sum_of_squares_many(arrays));
}

// Scales the gradients so that their global norm is at most max_norm; returns the norm before.
template <class T, Device D>
double clip_grad_norm(const nn::ParameterList<T, D>& parameters, double max_norm, NonFiniteNorm on_non_finite = NonFiniteNorm::keep) {
  if (!(max_norm > 0) || !std::isfinite(max_norm))
    throw ValueError("[clip_grad_norm] max_norm must be finite and > 0, got " + std::to_string(max_norm));
  const double norm = grad_norm(parameters);
  if (!std::isfinite(norm)) {
    if (on_non_finite == NonFiniteNorm::error)
      throw ValueError("[clip_grad_norm] the gradient norm is " + std::to_string(norm) +
                       ": some gradient holds NaN or inf (expected a finite norm)");
    return norm;
  }
  const double scale = max_norm / (norm + 1e-6);
  if (scale >= 1.0) return norm;
  NoGradGuard no_grad;
  const float s = static_cast<float>(scale);
  for (const auto& p : nn::unique_parameters(parameters)) {
    const Tensor<T, D> g = p.tensor.grad();
    if (g.defined()) g *= s;
  }
  return norm;
}

}  // namespace cerberus::optim
