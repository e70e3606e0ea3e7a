// Expression nodes: a functor and its operands, held BY VALUE (tensors are cheap handles), so
// `auto e = a + b;` can never dangle. Nothing is computed until the expression is assigned to a
// tensor; then the whole tree runs as ONE fused pass (expr/evaluate.hpp).
#pragma once

#include <concepts>
#include <cstddef>
#include <tuple>
#include <type_traits>

#include "cerberus/core/device.hpp"
#include "cerberus/core/dtype.hpp"
#include "cerberus/core/shape.hpp"

namespace cerberus {

template <Element T, Device D>
class Tensor;

// A number inside an expression (`x * 2.0f`), stored as double and converted to the
// expression's compute type when evaluated.
struct ScalarOperand {
  double value;
};

template <class F, class... Operands>
struct Expr {
  static_assert(sizeof...(Operands) >= 1 && sizeof...(Operands) <= 3, "An expression node takes one to three operands.");
  using fn_type = F;
  F fn;
  std::tuple<Operands...> operands;
};

// ---- traits ----------------------------------------------------------------------------------
template <class X>
struct is_tensor : std::false_type {};
template <class T, class D>
struct is_tensor<Tensor<T, D>> : std::true_type {};

template <class X>
struct is_expr_node : std::false_type {};
template <class F, class... Ops>
struct is_expr_node<Expr<F, Ops...>> : std::true_type {};

// Anything that can be assigned to a tensor: a tensor or an expression node.
template <class X>
concept Expression = is_tensor<std::remove_cvref_t<X>>::value || is_expr_node<std::remove_cvref_t<X>>::value;

// Anything that can be an operand: an expression or a plain number.
template <class X>
concept Operand = Expression<X> || std::is_arithmetic_v<std::remove_cvref_t<X>>;

namespace detail {

// Element type and device of an expression, found at its tensor leaves. `void` for a scalar.
template <class X>
struct expr_traits {
  using value_type = void;
  using device_type = void;
};
template <class T, class D>
struct expr_traits<Tensor<T, D>> {
  using value_type = T;
  using device_type = D;
};

template <class A, class B>
using first_non_void_t = std::conditional_t<std::is_void_v<A>, B, A>;

template <class F, class... Ops>
struct expr_traits<Expr<F, Ops...>> {
  template <class Acc, class X>
  using pick_value = first_non_void_t<Acc, typename expr_traits<X>::value_type>;
  template <class Acc, class X>
  using pick_device = first_non_void_t<Acc, typename expr_traits<X>::device_type>;

  template <template <class, class> class Pick, class Acc, class... Xs>
  struct fold {
    using type = Acc;
  };
  template <template <class, class> class Pick, class Acc, class X, class... Xs>
  struct fold<Pick, Acc, X, Xs...> {
    using type = typename fold<Pick, Pick<Acc, X>, Xs...>::type;
  };

  using value_type = typename fold<pick_value, void, Ops...>::type;
  using device_type = typename fold<pick_device, void, Ops...>::type;

  static constexpr bool same_value =
      ((std::is_void_v<typename expr_traits<Ops>::value_type> ||
        std::is_same_v<typename expr_traits<Ops>::value_type, value_type>) && ...);
  static constexpr bool same_device =
      ((std::is_void_v<typename expr_traits<Ops>::device_type> ||
        std::is_same_v<typename expr_traits<Ops>::device_type, device_type>) && ...);
};

template <class X>
using operand_t = std::conditional_t<std::is_arithmetic_v<std::remove_cvref_t<X>>, ScalarOperand, std::remove_cvref_t<X>>;

template <class X>
auto as_operand(const X& x) {
  if constexpr (std::is_arithmetic_v<X>) return ScalarOperand{static_cast<double>(x)};
  else return x;
}

}  // namespace detail

template <Expression E>
using expr_value_t = typename detail::expr_traits<std::remove_cvref_t<E>>::value_type;
template <Expression E>
using expr_device_t = typename detail::expr_traits<std::remove_cvref_t<E>>::device_type;

// Builds a node, checking at compile time that its tensors agree on element type and device.
template <class F, class... Xs>
auto make_expr(const Xs&... xs) {
  using Node = Expr<F, detail::operand_t<Xs>...>;
  using Traits = detail::expr_traits<Node>;
  static_assert(!std::is_void_v<typename Traits::value_type>, "An expression needs at least one tensor operand.");
  static_assert(Traits::same_value, "All tensors in one expression must have the same element type; convert one with .to<T>() first.");
  static_assert(Traits::same_device, "All tensors in one expression must be on the same device; move one with .to<cpu>() or .to<cuda>() first.");
  static_assert(FloatElement<typename Traits::value_type>, "Elementwise expressions need float, double or bfloat16 tensors.");
  return Node{F{}, {detail::as_operand(xs)...}};
}

// Unchecked node builder for derivative expressions, whose operands may all be numbers (the
// derivative of pow(2, x) with respect to x contains log(2)).
namespace detail {
template <class F, class... Xs>
auto node(const Xs&... xs) {
  return Expr<F, operand_t<Xs>...>{F{}, {as_operand(xs)...}};
}
}  // namespace detail

// A derivative that is identically zero (comparisons, the condition of where): the chain rule
// drops every path through it at compile time.
struct ZeroGrad {};

// ---- shapes ----------------------------------------------------------------------------------
namespace detail {

inline Shape operand_shape(const ScalarOperand&) { return Shape{}; }
template <class T, class D>
Shape operand_shape(const Tensor<T, D>& t) {
  return t.shape();
}
template <class F, class... Ops>
Shape operand_shape(const Expr<F, Ops...>& e) {
  return std::apply(
      [](const auto&... ops) {
        Shape s;
        ((s = broadcast_shapes(s, operand_shape(ops), F::name)), ...);
        return s;
      },
      e.operands);
}

}  // namespace detail

// The broadcast shape of an expression; throws ShapeError naming the op and both shapes.
template <Expression E>
Shape expr_shape(const E& e) {
  return detail::operand_shape(e);
}

// Calls fn(tensor) for every tensor leaf of an expression.
template <class Fn>
void for_each_leaf(const ScalarOperand&, Fn&&) {}
template <class T, class D, class Fn>
void for_each_leaf(const Tensor<T, D>& t, Fn&& fn) {
  fn(t);
}
template <class F, class... Ops, class Fn>
void for_each_leaf(const Expr<F, Ops...>& e, Fn&& fn) {
  std::apply([&](const auto&... ops) { (for_each_leaf(ops, fn), ...); }, e.operands);
}

}  // namespace cerberus
