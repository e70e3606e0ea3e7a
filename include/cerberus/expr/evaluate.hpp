// Assigning an expression to a tensor: check shapes, guard against aliasing, build the kernel
// view and hand it to the tensor's backend, which runs the whole tree in one pass.
#pragma once

#include <string>

#include "cerberus/expr/expr.hpp"
#include "cerberus/expr/view.hpp"
#include "cerberus/tensor/tensor.hpp"

namespace cerberus::detail {

// True when `leaf` reads memory of `out` through a different layout: elementwise evaluation in
// place would then read elements it has already overwritten.
template <class T, class D>
bool overlaps_differently(const Tensor<T, D>& out, const Tensor<T, D>& leaf) {
  if (leaf.storage() != out.storage()) return false;
  return !(leaf.offset() == out.offset() && leaf.shape() == out.shape() && leaf.strides() == out.strides());
}

template <class T, class D, class E>
void assign_expression(Tensor<T, D>& out, const E& e, const char* op) {
  const Shape shape = expr_shape(e);
  if (broadcast_shapes(out.shape(), shape, op) != out.shape())
    throw ShapeError(std::string("[") + op + "] an expression of shape " + shape.to_string() +
                     " cannot be written into a tensor of shape " + out.shape().to_string());
  for (int d = 0; d < out.rank(); ++d)
    if (out.strides()[d] == 0 && out.shape()[d] > 1)
      throw ShapeError(std::string("[") + op + "] cannot write into a broadcast view (shape " + out.shape().to_string() +
                       ", strides " + out.strides().to_string() + ")");
  if (out.numel() == 0) return;

  for_each_leaf(e, [&](const auto& leaf) {
    if (!leaf.defined())
      throw Error(std::string("[") + op + "] an operand of the expression is an undefined tensor (for example grad() of a "
                  "tensor that no backward has reached)");
  });
  bool alias = false;
  for_each_leaf(e, [&](const auto& leaf) {
    if constexpr (std::is_same_v<std::remove_cvref_t<decltype(leaf)>, Tensor<T, D>>) alias = alias || overlaps_differently(out, leaf);
  });
  if (alias) {  // evaluate into fresh memory, then copy over
    Tensor<T, D> tmp = Tensor<T, D>::empty(out.shape());
    assign_expression(tmp, e, op);
    Backend<D>::template convert<T, T>(out.data(), out.strides(), tmp.data(), tmp.strides(), out.shape());
    return;
  }

  Shape loop_shape = out.shape();
  Strides out_strides = out.strides();
  auto view = expr_view::make<compute_t<T>>(e, loop_shape);
  expr_view::collapse_dims(loop_shape, out_strides, view);
  Backend<D>::evaluate(out.data(), loop_shape, out_strides, view);
}

}  // namespace cerberus::detail
