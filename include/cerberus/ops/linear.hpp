// linear(x, weight, bias): y = x W^T + b over any leading dimensions, forward and backward side
// by side, with the bias fused into the product.
//
// Shapes (legend: N = rows = product of the leading dims, e.g. B * T; I = in features,
// O = out features):
//   linear(x [..., I], weight [O, I], bias [O] or undefined)  ->  [..., O]
//
// Forward: x is seen as a 2-D [N, I] (a view when its layout allows, else one copy) and the
// result is ONE GEMM [N, I] x [I, O] (W^T is a transposed view, packed by the GEMM, never
// copied). The bias is broadcast into the output first and the GEMM accumulates onto it
// (beta = 1), as torch's addmm does: one pass over the output fewer than matmul + add.
// Backward, with g = dy as [N, O]:
//   dx = g W          [N, O] x [O, I]
//   dW = g^T x        [O, N] x [N, I]   (one GEMM over all N rows: no per-batch products)
//   db = sum_rows g
// Saved for backward: x (its [N, I] handle) and W (handles, no copies).
#pragma once

#include <string>
#include <vector>

#include "cerberus/autograd/node.hpp"
#include "cerberus/core/dtype.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/ops/matmul.hpp"
#include "cerberus/ops/reduce.hpp"
#include "cerberus/tensor/tensor.hpp"

namespace cerberus {

// Any device: the products go through matmul / matmul_into (OpKernels<D> off the host).
template <FloatElement T, Device D>
Tensor<T, D> linear(const Tensor<T, D>& x, const Tensor<T, D>& weight, const Tensor<T, D>& bias = {}) {
  if (!x.defined() || !weight.defined()) throw ValueError("[linear] x and weight must be defined tensors");
  auto shapes = [&] {
    return "x " + x.shape().to_string() + ", weight " + weight.shape().to_string() +
           (bias.defined() ? ", bias " + bias.shape().to_string() : std::string());
  };
  if (weight.rank() != 2 || x.rank() < 1 || x.size(-1) != weight.size(1))
    throw ShapeError("[linear] x [..., I] and weight [O, I] do not fit: " + shapes());
  const Index in = weight.size(1), out_features = weight.size(0);
  if (bias.defined() && !(bias.shape() == Shape{out_features}))
    throw ShapeError("[linear] bias must be [O] = [" + std::to_string(out_features) + "]: " + shapes());

  const Tensor<T, D> x2 = x.detach().reshape({-1, in});
  const Tensor<T, D> w = weight.detach();
  Tensor<T, D> y2 = Tensor<T, D>::empty(Shape{x2.size(0), out_features});
  {
    NoGradGuard kernels_are_not_recorded;
    if (bias.defined()) {
      y2.assign(bias.detach());
      matmul_into(y2, x2, w.t(), 1.0, 1.0);
    } else {
      matmul_into(y2, x2, w.t());
    }
  }
  Shape out_shape = x.shape();
  out_shape[out_shape.rank() - 1] = out_features;
  Tensor<T, D> y = y2.view(out_shape);

  if (autograd::any_requires_grad(x, weight, bias)) {
    const bool need_x = x.requires_grad(), need_w = weight.requires_grad(), need_b = bias.defined() && bias.requires_grad();
    autograd::record<T, D>(y, "linear", {x, weight, bias},
                             [x2, w, x_shape = x.shape(), need_x, need_w, need_b, out_features](const Tensor<T, D>& g) {
                               const Tensor<T, D> g2 = g.reshape({-1, out_features});
                               Tensor<T, D> dx, dw, db;
                               if (need_x) dx = matmul(g2, w).view(x_shape);
                               if (need_w) dw = matmul(g2.t(), x2);
                               if (need_b) db = sum(g2, 0);
                               return std::vector<Tensor<T, D>>{dx, dw, db};
                             });
  }
  return y;
}

}  // namespace cerberus
