// Helpers for the optimizer tests: gradients set to chosen values, the PyTorch update rules
// written out in double, and a small least-squares problem.
#pragma once

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "cerberus/cerberus.hpp"
#include "support/reference.hpp"

namespace optim_test {

using namespace cerberus;

// A leaf parameter holding `values`.
inline Tensor<float> parameter(const std::vector<float>& values, const Shape& shape) {
  auto p = from_vector<float>(values, shape);
  p.set_requires_grad();
  return p;
}

// Makes p.grad() exactly `g`: d/dp sum(p * 1 * g) through the tape (1 * g is exact in float).
inline void set_grad(const Tensor<float>& p, const std::vector<float>& g) {
  p.clear_grad();
  Tensor<float> y = p * 1.0f;
  y.backward(from_vector<float>(g, p.shape()));
}

inline std::vector<double> as_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }
inline std::vector<double> as_double(const Tensor<float>& t) { return as_double(t.to_vector()); }

// True when a and b hold the same bits.
inline bool bitwise_equal(const Tensor<float>& a, const Tensor<float>& b) {
  if (a.shape() != b.shape()) return false;
  const auto x = a.to_vector(), y = b.to_vector();
  return std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

// ---- torch.optim formulas in double --------------------------------------------------------

struct RefSGD {
  double lr, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
  std::vector<double> buf;  // empty until the first step, as in torch
  void step(std::vector<double>& p, const std::vector<double>& g) {
    std::vector<double> d(p.size());
    for (std::size_t i = 0; i < p.size(); ++i) d[i] = g[i] + weight_decay * p[i];
    if (momentum != 0) {
      if (buf.empty()) buf = d;
      else
        for (std::size_t i = 0; i < p.size(); ++i) buf[i] = momentum * buf[i] + (1 - dampening) * d[i];
      for (std::size_t i = 0; i < p.size(); ++i) d[i] = nesterov ? d[i] + momentum * buf[i] : buf[i];
    }
    for (std::size_t i = 0; i < p.size(); ++i) p[i] -= lr * d[i];
  }
};

struct RefAdam {
  double lr, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
  bool decoupled = false;  // false: torch.optim.Adam (L2), true: torch.optim.AdamW
  std::vector<double> m, v;
  int t = 0;
  void step(std::vector<double>& p, const std::vector<double>& grad) {
    if (m.empty()) m.assign(p.size(), 0.0), v.assign(p.size(), 0.0);
    ++t;
    const double bc1 = 1 - std::pow(beta1, t), bc2 = 1 - std::pow(beta2, t);
    for (std::size_t i = 0; i < p.size(); ++i) {
      double g = grad[i];
      if (!decoupled) g += weight_decay * p[i];
      else p[i] *= 1 - lr * weight_decay;
      m[i] = beta1 * m[i] + (1 - beta1) * g;
      v[i] = beta2 * v[i] + (1 - beta2) * g * g;
      p[i] -= lr / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + eps);
    }
  }
};

// ---- least squares: minimise mean((x w - y)^2) over w, with y = x w_true -------------------

struct LeastSquares {
  Tensor<float> x, y, w_true;
  explicit LeastSquares(Index rows = 64, Index features = 8, std::uint64_t seed = 11) {
    x = testing_support::random_uniform<float>({rows, features}, -1, 1, seed);
    w_true = testing_support::random_uniform<float>({features, 1}, -2, 2, seed + 1);
    y = matmul(x, w_true);
  }
  // The loss of rows [begin, end), mean over those rows.
  Tensor<float> loss(const Tensor<float>& w, Index begin = 0, Index end = -1) const {
    if (end < 0) end = x.size(0);
    const Tensor<float> xb = x.slice(0, begin, end), yb = y.slice(0, begin, end);
    return mean(square(matmul(xb, w) - yb));
  }
};

}  // namespace optim_test
