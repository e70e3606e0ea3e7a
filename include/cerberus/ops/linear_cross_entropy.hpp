// linear_cross_entropy(x, weight, targets, options) = cross_entropy(linear(x, weight), targets,
// options): a language-model head and its loss in one op that never holds the [N, V] logits.
//
// Shapes (legend: N = rows = product of the leading dims, e.g. B * T; C = features (d_model);
// V = vocabulary):
//   linear_cross_entropy(x [..., C], weight [V, C], targets int64 [...] or [N], options)
//     -> [] (reduction mean or sum; options as cross_entropy's, ops/loss.hpp)
//
// Why: the logits of a language-model step are the largest tensors in it (tiny GPT: N 2048 x
// V 8000 floats = 65 MB, and their gradient as much again), written and read back from memory by
// the head's product, the loss's forward and backward, and both backward products. Here, on the
// CPU, rows go through in blocks of R (R <= 1024 rows: a 32 MB block for V = 8000, against 65 MB):
//   logits_b [R, V]  = x_b W^T                     one GEMM
//   loss_b, stats_b  = cross-entropy forward of the block
//   dlogits_b        = its backward for an upstream gradient of 1, in place of logits_b
//   dx_b [R, C]      = dlogits_b W                 one GEMM          (when x needs a gradient)
//   dW  [V, C]      += dlogits_b^T x_b             one GEMM, beta 1 after the first block
// so the gradients are computed during the forward, with the gradient of every row known up to
// the upstream gradient g (the loss is linear in nothing else: the mean's 1 / sum w comes from the
// targets and weights alone). Saved for backward: dx [N, C] and dW [V, C] (10 MB for the tiny
// GPT, against 130 MB of logits and gradient); the backward returns g * dx and g * dW (with g = 1
// and the graph freed after this backward, the saved tensors themselves).
//
// Exactly the composed ops' numbers: R is two of the K slices the GEMM would cut N into
// (GemmBlocking::slice_depth(N)), so dW's blocks add up in the order the one product [V, N] x
// [N, C] would add its K slices, each logit is the same dot product, and the loss adds its rows in
// the same order: loss, dx and dW are bitwise those of cross_entropy(linear(x, W)) when g = 1
// (tested), and within one rounding of them otherwise.
//
// Speed: the same as the two ops (benchmarks/transformer_ops.cpp, the tiny GPT's head: N 2048,
// C 256, V 8000, forward + backward, one thread: 201.9 ms against 200.2; LibTorch's two ops 248.9;
// docs/performance.md); blocks of one slice were 5% slower (W re-packed, dW re-read per block).
//
// Cost: with autodiff recording, the forward does the backward's work too, so a forward whose
// loss is never differentiated pays for it; evaluate under NoGradGuard, where only logits blocks
// and the loss are computed (and still no [N, V] tensor). Not fused, as the two ops: devices other
// than the CPU, bf16 (its block products would round dW once per block), reduction none (its
// upstream gradient differs per row).
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "cerberus/autograd/node.hpp"
#include "cerberus/backend/cpu/gemm.hpp"
#include "cerberus/core/dtype.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/ops/linear.hpp"
#include "cerberus/ops/loss.hpp"
#include "cerberus/tensor/tensor.hpp"

namespace cerberus {

template <FloatElement T, Device D>
Tensor<compute_t<T>, D> linear_cross_entropy(const Tensor<T, D>& x, const Tensor<T, D>& weight, const Tensor<std::int64_t, D>& targets,
                                             const CrossEntropyOptions& options = {}) {
  using C = compute_t<T>;
  if (!x.defined() || !weight.defined() || !targets.defined())
    throw ValueError("[linear_cross_entropy] x, weight and targets must be defined tensors");
  if (weight.rank() != 2 || x.rank() < 2 || x.size(-1) != weight.size(1))
    throw ShapeError("[linear_cross_entropy] x [..., C] and weight [V, C] do not fit: x " + x.shape().to_string() + ", weight " +
                     weight.shape().to_string());
  if constexpr (!std::is_same_v<D, cpu> || !std::is_same_v<T, C>) {
    return cross_entropy(linear(x, weight), targets, options);
  } else {
    if (options.reduction == Reduction::none) return cross_entropy(linear(x, weight), targets, options);
    const Index features = weight.size(1), v = weight.size(0);
    Shape logits_shape = x.shape();
    logits_shape[logits_shape.rank() - 1] = v;
    detail::check_cross_entropy_rows(logits_shape, targets.shape(), "targets", "linear_cross_entropy");
    if (options.weights.defined()) detail::check_cross_entropy_rows(logits_shape, options.weights.shape(), "weights", "linear_cross_entropy");
    const double e = options.label_smoothing;
    if (!(e >= 0.0 && e <= 1.0)) throw ValueError("[linear_cross_entropy] label_smoothing must be in [0, 1], got " + std::to_string(e));
    const Index rows = logits_shape.numel() / std::max<Index>(v, 1);
    if (v == 0 && rows > 0) throw ShapeError("[linear_cross_entropy] weight of shape " + weight.shape().to_string() + " has no classes (V = 0)");

    detail::CrossEntropyRowWeights row_weights =
        detail::cross_entropy_row_weights(targets, options, rows, v, logits_shape, "linear_cross_entropy");
    const std::int64_t* t = row_weights.targets.data();
    const double scale = detail::cross_entropy_scale(options.reduction, row_weights.total);

    const bool need_x = autograd::any_requires_grad(x), need_w = autograd::any_requires_grad(weight);
    Tensor<T> x2, w, dx, dw;
    {
      NoGradGuard kernels_are_not_recorded;
      x2 = x.detach().reshape({rows, features});
      w = weight.detach();
      if (need_x) dx = Tensor<T>::empty(Shape{rows, features});
      if (need_w) dw = Tensor<T>::empty(Shape{v, features});
    }
    const Index x_rs = x2.strides()[0], x_cs = x2.strides()[1], w_rs = w.strides()[0], w_cs = w.strides()[1];

    // Rows per block: two K slices of the one dW product over N rows (see the top). One slice
    // per block re-packed W and re-read dW twice as often: 5% slower on the tiny GPT's head.
    // A block of two full slices is cut by the GEMM into those two slices (a slice is deeper
    // than half the deepest, so two of them make two); a last block of one slice and a bit
    // is issued slice by slice.
    const Index slice = cpu_backend::GemmBlocking<C>::slice_depth(std::max<Index>(rows, 1));
    const Index block = std::min(rows, 2 * slice);
    std::vector<double> loss(static_cast<std::size_t>(rows)), coef(static_cast<std::size_t>(rows));
    std::vector<cpu_backend::CrossEntropyRow<C>> stats(static_cast<std::size_t>(rows));
    for (Index r = 0; r < rows; ++r) coef[static_cast<std::size_t>(r)] = row_weights.weights[static_cast<std::size_t>(r)] * scale;
    const Tensor<T> logits = Tensor<T>::empty(Shape{std::max<Index>(block, 1), v});  // one block: [R, V]
    T* const lb = logits.data();
    for (Index r0 = 0; r0 < rows; r0 += block) {
      const Index n = std::min(block, rows - r0);
      const T* const xb = x2.data() + r0 * x_rs;
      cpu_backend::gemm<T>(n, v, features, C(1), xb, x_rs, x_cs, w.data(), w_cs, w_rs, C(0), lb, v, 1);
      cpu_backend::cross_entropy_forward(lb, t + r0, n, v, options.ignore_index, e, loss.data() + r0, stats.data() + r0);
      if (!need_x && !need_w) continue;
      cpu_backend::cross_entropy_backward(lb, t + r0, stats.data() + r0, coef.data() + r0, n, v, e, lb);  // in place
      if (need_x) cpu_backend::gemm<T>(n, features, v, C(1), lb, v, 1, w.data(), w_rs, w_cs, C(0), dx.data() + r0 * features, features, 1);
      if (need_w)
        for (Index p0 = 0; p0 < n; p0 += n == block ? n : slice) {
          const Index depth = n == block ? n : std::min(slice, n - p0);
          cpu_backend::gemm<T>(v, features, depth, C(1), lb + p0 * v, 1, v, xb + p0 * x_rs, x_rs, x_cs, r0 + p0 == 0 ? C(0) : C(1),
                               dw.data(), features, 1);
        }
    }
    if (need_w && rows == 0) dw.fill(T(0));

    Tensor<C> out = Tensor<C>::empty(Shape{});
    out.data()[0] = static_cast<C>(detail::cross_entropy_total(row_weights.weights, loss, scale));
    if (need_x || need_w) {
      autograd::record<T, cpu>(out, "linear_cross_entropy", {x, weight}, [dx, dw, x_shape = x.shape()](const Tensor<T>& grad) mutable {
        const T g = grad.item();
        Tensor<T> gx, gw;
        if (g == T(1) && autograd::graph_freed_after_backward()) {
          // This node runs once and is freed next: its saved gradients are handed over (a
          // [V, C] + [N, C] pass fewer; the leaf's accumulator can adopt the buffer as .grad).
          if (dx.defined()) gx = dx.view(x_shape);
          gw = dw;
          dx = Tensor<T>(), dw = Tensor<T>();  // the returned tensors are the buffers' only holders
        } else {
          // Fresh tensors: the saved ones stay intact for a second backward (retain_graph).
          if (dx.defined()) gx = Tensor<T>(dx * g).view(x_shape);
          if (dw.defined()) gw = dw * g;
        }
        return std::vector<Tensor<T>>{gx, gw};
      });
    }
    return out;
  }
}

}  // namespace cerberus
