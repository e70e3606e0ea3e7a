// The public elementwise builders: operators and named functions. Each returns a lazy Expr;
// assign it to a Tensor (or call eval) to compute it in one fused pass.
#pragma once

#include "cerberus/expr/expr.hpp"
#include "cerberus/expr/functors.hpp"

namespace cerberus {

#define CERBERUS_UNARY(name, Functor)        \
  template <Expression A>                    \
  auto name(const A& a) {                    \
    return make_expr<fn::Functor>(a);        \
  }
CERBERUS_UNARY(exp, Exp)
CERBERUS_UNARY(log, Log)
CERBERUS_UNARY(sqrt, Sqrt)
CERBERUS_UNARY(rsqrt, Rsqrt)
CERBERUS_UNARY(abs, Abs)
CERBERUS_UNARY(square, Square)
CERBERUS_UNARY(tanh, Tanh)
CERBERUS_UNARY(sigmoid, Sigmoid)
CERBERUS_UNARY(relu, Relu)
CERBERUS_UNARY(gelu_tanh, GeluTanh)
CERBERUS_UNARY(gelu_erf, GeluErf)
CERBERUS_UNARY(silu, Silu)
#undef CERBERUS_UNARY

// GELU, tanh approximation by default (GPT-2's choice); gelu_erf is the exact form.
template <Expression A>
auto gelu(const A& a) {
  return make_expr<fn::GeluTanh>(a);
}

template <Expression A>
auto operator-(const A& a) {
  return make_expr<fn::Neg>(a);
}

// Binary: at least one side is an expression, the other may be a plain number.
#define CERBERUS_BINARY(name, Functor)                                 \
  template <Operand A, Operand B>                                      \
    requires(Expression<A> || Expression<B>)                           \
  auto name(const A& a, const B& b) {                                  \
    return make_expr<fn::Functor>(a, b);                               \
  }
CERBERUS_BINARY(operator+, Add)
CERBERUS_BINARY(operator-, Sub)
CERBERUS_BINARY(operator*, Mul)
CERBERUS_BINARY(operator/, Div)
CERBERUS_BINARY(pow, Pow)
CERBERUS_BINARY(maximum, Maximum)
CERBERUS_BINARY(minimum, Minimum)
CERBERUS_BINARY(operator<, Less)
CERBERUS_BINARY(operator<=, LessEqual)
CERBERUS_BINARY(operator>, Greater)
CERBERUS_BINARY(operator>=, GreaterEqual)
CERBERUS_BINARY(less, Less)
CERBERUS_BINARY(less_equal, LessEqual)
CERBERUS_BINARY(greater, Greater)
CERBERUS_BINARY(greater_equal, GreaterEqual)
CERBERUS_BINARY(equal, Equal)
CERBERUS_BINARY(not_equal, NotEqual)
#undef CERBERUS_BINARY

// where(cond, a, b): a where cond is nonzero, else b. Any operand may be a number (not all).
template <Operand C, Operand A, Operand B>
  requires(Expression<C> || Expression<A> || Expression<B>)
auto where(const C& cond, const A& a, const B& b) {
  return make_expr<fn::Where>(cond, a, b);
}

// clamp(x, lo, hi) = minimum(maximum(x, lo), hi); bounds may be numbers or tensors.
template <Expression X, Operand L, Operand H>
auto clamp(const X& x, const L& lo, const H& hi) {
  return make_expr<fn::Clamp>(x, lo, hi);
}

// Evaluates an expression into a new tensor (useful with `auto`).
template <Expression E>
auto eval(const E& e) {
  return Tensor<expr_value_t<E>, expr_device_t<E>>(e);
}

}  // namespace cerberus
