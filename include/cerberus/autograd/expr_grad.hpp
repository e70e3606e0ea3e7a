// Fused elementwise gradients. An expression assigned to a tensor records ONE node holding the
// expression tree (its leaf tensors: the only things its backward needs). Its backward builds,
// at compile time, one expression per leaf position by the chain rule along the path from the
// root to that leaf, multiplying the output gradient by each functor's own partial derivative
// (expr/functors.hpp, `d<I>`), then evaluates it in one pass and sums it over the dimensions the
// leaf was broadcast along. No intermediate of the forward expression is ever stored.
#pragma once

#include <cstddef>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "cerberus/autograd/node.hpp"
#include "cerberus/expr/expr.hpp"
#include "cerberus/ops/reduce.hpp"  // sum_to_shape

namespace cerberus::autograd {

namespace expr_grad {

// Number of tensor leaves of an expression (numbers do not count).
template <class X>
struct leaf_count : std::integral_constant<int, 0> {};
template <class T, class D>
struct leaf_count<Tensor<T, D>> : std::integral_constant<int, 1> {};
template <class F, class... Ops>
struct leaf_count<Expr<F, Ops...>> : std::integral_constant<int, (leaf_count<Ops>::value + ... + 0)> {};

// Which operand of a node holds leaf K (counting leaves left to right), and K's index inside it.
template <int K, int Operand, class... Ops>
struct locate;
template <int K, int Operand, class First, class... Rest>
struct locate<K, Operand, First, Rest...> {
  static constexpr bool here = K < leaf_count<First>::value;
  using next = locate<K - leaf_count<First>::value, Operand + 1, Rest...>;
  static constexpr int operand = here ? Operand : next::operand;
  static constexpr int inner = here ? K : next::inner;
};
template <int K, int Operand>
struct locate<K, Operand> {
  static constexpr int operand = -1;
  static constexpr int inner = -1;
};

// The tensor at leaf position K.
template <int K, class T, class D>
const Tensor<T, D>& leaf(const Tensor<T, D>& t) {
  static_assert(K == 0);
  return t;
}
template <int K, class F, class... Ops>
const auto& leaf(const Expr<F, Ops...>& e) {
  using L = locate<K, 0, Ops...>;
  return leaf<L::inner>(std::get<L::operand>(e.operands));
}

// d(root)/d(leaf K) * upstream, as an expression; ZeroGrad when every path is zero.
template <int K, class T, class D, class G>
auto chain(const Tensor<T, D>&, const G& upstream) {
  return upstream;
}
template <int K, class F, class... Ops, class G>
auto chain(const Expr<F, Ops...>& e, const G& upstream) {
  using L = locate<K, 0, Ops...>;
  const auto partial = std::apply([](const auto&... ops) { return F::template d<L::operand>(ops...); }, e.operands);
  if constexpr (std::is_same_v<std::remove_cvref_t<decltype(partial)>, ZeroGrad>) {
    return ZeroGrad{};
  } else {
    return chain<L::inner>(std::get<L::operand>(e.operands), detail::node<fn::Mul>(upstream, partial));
  }
}

// The index of the only operand of a node that holds tensor leaves, or -1.
template <class... Ops>
constexpr int single_leaf_operand() {
  constexpr int counts[] = {leaf_count<Ops>::value...};
  int found = -1;
  for (int i = 0; i < static_cast<int>(sizeof...(Ops)); ++i) {
    if (counts[i] == 0) continue;
    if (found >= 0) return -1;
    found = i;
  }
  return found;
}

// Walks down from the root while a single operand holds every leaf (gelu(x * a + b): gelu, then
// +), multiplying the upstream gradient by each partial. Returns the node where the paths to the
// leaves part and the gradient expression for it. Leaf numbering is the same below that node.
template <class E, class G>
auto common_prefix(const E& e, const G& upstream) {
  if constexpr (is_expr_node<E>::value) {
    return std::apply(
        [&](const auto&... ops) {
          constexpr int c = single_leaf_operand<std::remove_cvref_t<decltype(ops)>...>();
          if constexpr (c < 0) {
            return std::make_pair(&e, upstream);
          } else {
            const auto partial = E::fn_type::template d<c>(ops...);
            if constexpr (std::is_same_v<std::remove_cvref_t<decltype(partial)>, ZeroGrad>) {
              return std::make_pair(&e, upstream);  // chain() will find the zero and skip every leaf
            } else {
              return common_prefix(std::get<c>(e.operands), detail::node<fn::Mul>(upstream, partial));
            }
          }
        },
        e.operands);
  } else {
    return std::make_pair(&e, upstream);
  }
}

}  // namespace expr_grad

template <class T, class D, class E>
class ExprNode final : public GradNode<T, D> {
 public:
  explicit ExprNode(const E& e) : expr_(e) {}
  const char* name() const override { return "fused elementwise"; }

  void apply() override {
    if (!this->grad_.defined()) return;
    if (!expr_) this->check_not_released(), void();
    backward_leaves(std::make_index_sequence<expr_grad::leaf_count<E>::value>{});
  }
  void release() override {
    expr_.reset();  // frees the leaf tensors
    this->released_ = true;
  }

 private:
  // With two or more leaves to differentiate, the gradient at the node where their paths part is
  // evaluated once (one pass of gelu' in gelu(x * a + b), not one per leaf); below it each
  // leaf's gradient is again one fused pass.
  template <std::size_t... K>
  void backward_leaves(std::index_sequence<K...>) {
    int wanted = 0;
    for (const auto& edge : this->inputs) wanted += edge != nullptr;
    const auto [split, upstream] = expr_grad::common_prefix(*expr_, this->grad_);
    using Split = std::remove_cvref_t<decltype(*split)>;
    if constexpr (!std::is_same_v<Split, E>) {
      if (wanted >= 2) {
        Tensor<T, D> at_split = Tensor<T, D>::empty(this->grad_.shape());
        detail::assign_expression(at_split, upstream, "backward");
        (backward_leaf<static_cast<int>(K)>(*split, at_split), ...);
        return;
      }
    }
    (backward_leaf<static_cast<int>(K)>(*expr_, this->grad_), ...);
  }

  template <int K, class Sub>
  void backward_leaf(const Sub& sub, const Tensor<T, D>& upstream) {
    if (!this->inputs[K]) return;  // this leaf needs no gradient
    const auto g = expr_grad::chain<K>(sub, upstream);
    using G = std::remove_cvref_t<decltype(g)>;
    if constexpr (std::is_same_v<G, Expr<fn::Mul, Tensor<T, D>, ScalarOperand>>) {
      // upstream * 1 (each operand of a sum, e.g. a residual add): the upstream gradient itself
      // goes on, shared, instead of a pass that copies it. Nothing writes into a gradient it was
      // handed; a leaf's accumulator adopts a buffer only when nobody else holds it.
      const auto& [tensor, scalar] = g.operands;
      if (scalar.value == 1.0 && tensor.shape() == expr_grad::leaf<K>(sub).shape()) return this->pass_to(K, tensor);
    }
    if constexpr (!std::is_same_v<G, ZeroGrad>) {
      const Tensor<T, D>& target = expr_grad::leaf<K>(sub);
      // One pass over the output shape, then a sum over broadcast dimensions if any.
      Tensor<T, D> full = Tensor<T, D>::empty(this->grad_.shape());
      detail::assign_expression(full, g, "backward");
      this->pass_to(K, full.shape() == target.shape() ? full : sum_to_shape(full, target.shape()));
    }
  }

  std::optional<E> expr_;
};

}  // namespace cerberus::autograd

namespace cerberus::detail {

// Records `out = e` as one node when any leaf of e requires grad.
template <class T, class D, class E>
void record_expression(Tensor<T, D>& out, const E& e) {
  if constexpr (is_expr_node<E>::value) {
    if (!is_grad_enabled()) return;
    bool any = false;
    for_each_leaf(e, [&](const auto& leaf) { any = any || leaf.requires_grad(); });
    if (!any) return;
    auto node = std::make_shared<autograd::ExprNode<T, D, E>>(e);
    for_each_leaf(e, [&](const auto& leaf) { node->inputs.push_back(leaf.requires_grad() ? leaf.gradient_edge() : nullptr); });
    out.set_grad_fn(std::move(node));
  }
}

}  // namespace cerberus::detail

namespace cerberus::autograd {

// Sums `grad` over the leading dimensions and the extent-1 dimensions of `shape` that
// broadcasting expanded, giving a tensor of `shape`.
template <class T, class D>
Tensor<T, D> sum_to_shape(const Tensor<T, D>& grad, const Shape& shape) {
  if (grad.shape() == shape) return grad;
  const int lead = grad.rank() - shape.rank();
  std::vector<int> axes;
  for (int d = 0; d < grad.rank(); ++d)
    if (d < lead || (shape[d - lead] == 1 && grad.shape()[d] != 1)) axes.push_back(d);
  // found by ADL: ops/reduce.hpp; on cuda it runs the device reduction (backend/cuda/reduce.cuh)
  return sum(grad, axes, true).reshape(shape);
}

}  // namespace cerberus::autograd
