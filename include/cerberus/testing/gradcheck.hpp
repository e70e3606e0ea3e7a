// cerberus::testing::gradcheck: compares the gradients autodiff computes with central finite
// differences, in double precision.
//
// For f: inputs -> output, gradcheck draws a fixed random weight w of the output's shape and
// checks d/dx sum(w * f(x)) for every element x of every input: analytic by backward(w),
// numeric by (L(x + eps) - L(x - eps)) / (2 eps). It reports the worst element with its input
// and coordinates.
#pragma once

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "cerberus/autograd/grad_mode.hpp"
#include "cerberus/tensor/factories.hpp"
#include "cerberus/tensor/tensor.hpp"

namespace cerberus::testing {

struct GradcheckOptions {
  double eps = 1e-6;
  double atol = 1e-6;
  double rtol = 1e-5;
  std::uint64_t seed = 1234;
};

struct GradcheckResult {
  bool ok = true;
  double worst_ratio = 0;  // |analytic - numeric| / (atol + rtol |numeric|) at the worst element; <= 1 passes
  int input = -1;          // which input holds the worst element
  std::vector<Index> coord;
  double analytic = 0, numeric = 0;
  std::string message;     // a sentence describing the worst element
};

using DifferentiableFn = std::function<Tensor<double>(const std::vector<Tensor<double>>&)>;

inline GradcheckResult gradcheck(const DifferentiableFn& fn, const std::vector<Tensor<double>>& inputs,
                                 const GradcheckOptions& options = {}) {
  // Fresh leaves that keep each input's layout (a transposed input stays transposed).
  std::vector<Tensor<double>> leaves;
  for (const auto& in : inputs) {
    Tensor<double> leaf = in.detach();
    leaf.set_requires_grad(true);
    leaves.push_back(leaf);
  }
  const Tensor<double> out = fn(leaves);
  Generator gen(options.seed);
  const Tensor<double> weight = uniform<double>(out.shape(), -1.0, 1.0, gen);
  if (!out.requires_grad()) {
    GradcheckResult r;
    r.ok = false;
    r.message = "the function's output does not require grad: no op recorded a graph";
    return r;
  }
  out.backward(weight);

  auto weighted_sum = [&](const std::vector<Tensor<double>>& xs) {
    NoGradGuard no_grad;
    const auto y = fn(xs).to_vector();
    const auto w = weight.to_vector();
    double s = 0;
    for (std::size_t i = 0; i < y.size(); ++i) s += y[i] * w[i];
    return s;
  };

  GradcheckResult result;
  for (std::size_t k = 0; k < leaves.size(); ++k) {
    const auto& x = leaves[k];
    const Tensor<double> grad = x.grad().defined() ? x.grad() : zeros<double>(x.shape());
    if (grad.shape() != x.shape()) {
      result.ok = false;
      result.input = static_cast<int>(k);
      result.message = "input " + std::to_string(k) + ": gradient of shape " + grad.shape().to_string() + " for an input of shape " +
                       x.shape().to_string();
      return result;
    }
    std::vector<Index> coord(static_cast<std::size_t>(x.rank()), 0);
    for (Index n = 0; n < x.numel(); ++n) {
      Index offset = 0, goffset = 0;
      for (int d = 0; d < x.rank(); ++d) {
        offset += coord[static_cast<std::size_t>(d)] * x.strides()[d];
        goffset += coord[static_cast<std::size_t>(d)] * grad.strides()[d];
      }
      double& element = x.data()[offset];
      const double saved = element;
      element = saved + options.eps;
      const double up = weighted_sum(leaves);
      element = saved - options.eps;
      const double down = weighted_sum(leaves);
      element = saved;
      const double numeric = (up - down) / (2 * options.eps);
      const double analytic = grad.data()[goffset];
      const double ratio = std::isfinite(analytic) ? std::abs(analytic - numeric) / (options.atol + options.rtol * std::abs(numeric)) : 1e300;
      if (ratio > result.worst_ratio) {
        result.worst_ratio = ratio;
        result.input = static_cast<int>(k);
        result.coord = coord;
        result.analytic = analytic;
        result.numeric = numeric;
      }
      for (int d = x.rank() - 1; d >= 0; --d) {
        if (++coord[static_cast<std::size_t>(d)] < x.shape()[d]) break;
        coord[static_cast<std::size_t>(d)] = 0;
      }
    }
  }
  result.ok = result.worst_ratio <= 1.0;
  std::string where = "[";
  for (std::size_t i = 0; i < result.coord.size(); ++i) where += (i ? ", " : "") + std::to_string(result.coord[i]);
  where += "]";
  result.message = std::string(result.ok ? "gradients match" : "gradient mismatch") + "; worst element: input " +
                   std::to_string(result.input) + " at " + where + ", analytic " + std::to_string(result.analytic) + " vs numeric " +
                   std::to_string(result.numeric) + " (" + std::to_string(result.worst_ratio) + "x the tolerance)";
  return result;
}

}  // namespace cerberus::testing
