// linear(x, weight, bias): y = x W^T + b over any leading dimensions, forward and backward side
// by side, with the bias fused into the product.
//
// Shapes (legend: N = rows = product of the leading dims, e.g. B * T; I = in features,
// O = out features):
//   linear(x [..., I], weight [O, I], bias [O] or undefined)  ->  [..., O]
//
// Forward: x is seen as a 2-D [N, I] (a view when its layout allows, else one copy) and the
// result is ONE GEMM [N, I] x [I, O] (W^T is a transposed view, packed by the GEMM, never
// copied). On the CPU the bias is added by the GEMM's store (its epilogue): no pass over the
// output besides the product's own. Other devices broadcast the bias into the output first and
// accumulate onto it (beta = 1), as torch's addmm does.
// linear_gelu_tanh(x, weight, bias) = gelu_tanh(linear(x, weight, bias)) for inference: on the
// CPU the GELU runs in the same store (no pass over the [N, O] result); it records nothing, and
// with autodiff on it is the two ops.
// Backward, with g = dy as [N, O]:
//   dx = g W          [N, O] x [O, I]
//   dW = g^T x        [O, N] x [N, I]   (one GEMM over all N rows: no per-batch products)
//   db = sum_rows g
// Saved for backward: x (its [N, I] handle) and W (handles, no copies).
#pragma once

#include <string>
#include <vector>

#include "cerberus/autograd/node.hpp"
#include "cerberus/backend/cpu/gemm.hpp"
#include "cerberus/core/dtype.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/expr/ops.hpp"
#include "cerberus/ops/matmul.hpp"
#include "cerberus/ops/reduce.hpp"
#include "cerberus/tensor/tensor.hpp"

namespace cerberus {

namespace linear_detail {

// y2 [N, O] = act(x2 [N, I] W^T + bias) on the CPU, one GEMM with its epilogue; bias may be
// undefined. y2 is fresh (no overlap with the operands).
template <class T>
void forward_cpu(const Tensor<T, cpu>& y2, const Tensor<T, cpu>& x2, const Tensor<T, cpu>& w, const Tensor<T, cpu>& bias,
                 cpu_backend::GemmActivation activation) {
  const Tensor<T, cpu> b = bias.defined() ? bias.contiguous() : Tensor<T, cpu>{};
  const Index n = x2.size(0), in = x2.size(1), out = w.size(0);
  cpu_backend::gemm<T>(n, out, in, compute_t<T>(1), x2.data(), x2.strides()[0], x2.strides()[1], w.data(), w.strides()[1],
                       w.strides()[0], compute_t<T>(0), y2.data(), y2.strides()[0], y2.strides()[1],
                       cpu_backend::GemmEpilogue<T>{b.defined() ? b.data() : nullptr, activation});
}

}  // namespace linear_detail

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
  if constexpr (std::is_same_v<D, cpu>) {
    NoGradGuard kernels_are_not_recorded;
    linear_detail::forward_cpu<T>(y2, x2, w, bias.defined() ? bias.detach() : Tensor<T, D>{}, cpu_backend::GemmActivation::none);
  } else {
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

// gelu_tanh(linear(x, weight, bias)), the GELU fused into the product's store on the CPU when
// nothing needs a gradient (an inference MLP's up projection). Otherwise the two ops, recorded.
template <FloatElement T, Device D>
Tensor<T, D> linear_gelu_tanh(const Tensor<T, D>& x, const Tensor<T, D>& weight, const Tensor<T, D>& bias = {}) {
  if constexpr (std::is_same_v<D, cpu>) {
    if (!autograd::any_requires_grad(x, weight, bias) && x.defined() && weight.defined() && weight.rank() == 2 &&
        x.rank() >= 1 && x.size(-1) == weight.size(1) && (!bias.defined() || bias.shape() == Shape{weight.size(0)})) {
      const Index in = weight.size(1), out_features = weight.size(0);
      const Tensor<T, D> x2 = x.detach().reshape({-1, in});
      Tensor<T, D> y2 = Tensor<T, D>::empty(Shape{x2.size(0), out_features});
      linear_detail::forward_cpu<T>(y2, x2, weight.detach(), bias.defined() ? bias.detach() : Tensor<T, D>{},
                                    cpu_backend::GemmActivation::gelu_tanh);
      Shape out_shape = x.shape();
      out_shape[out_shape.rank() - 1] = out_features;
      return y2.view(out_shape);
    }
  }
  Tensor<T, D> y = linear(x, weight, bias);
  if (autograd::any_requires_grad(y)) return gelu_tanh(y);
  y.assign(gelu_tanh(y));  // in place: one [N, O] temporary fewer
  return y;
}

}  // namespace cerberus
