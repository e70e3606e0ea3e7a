// Every elementwise functor, defined once. `operator()` is a template over the value type V, so
// the same body runs on a float, a double, an xsimd batch (CPU SIMD) and inside a CUDA kernel.
// Next to it, `d<I>(operands...)` is the partial derivative with respect to operand I, written
// as an expression of the operands; autodiff chains these at compile time into one fused
// backward expression per leaf (autograd/expr_grad.hpp). ZeroGrad marks a derivative that is 0.
// Adding an op is one struct here plus one builder line in expr/ops.hpp.
#pragma once

#include "cerberus/core/config.hpp"
#include "cerberus/core/math.hpp"
#include "cerberus/expr/expr.hpp"

namespace cerberus::fn {

struct Neg;
struct Exp;
struct Log;
struct Sqrt;
struct Tanh;
struct Sigmoid;
struct Add;
struct Sub;
struct Mul;
struct Div;
struct Pow;
struct Less;
struct LessEqual;
struct Greater;
struct GreaterEqual;
struct Equal;
struct Where;
struct Square;
struct Rsqrt;
struct GeluTanhGrad;
struct GeluErfGrad;

// Shorthands for derivative expressions.
namespace d_ {
template <class A, class B> auto mul(const A& a, const B& b) { return detail::node<Mul>(a, b); }
template <class A, class B> auto div(const A& a, const B& b) { return detail::node<Div>(a, b); }
template <class A, class B> auto sub(const A& a, const B& b) { return detail::node<Sub>(a, b); }
template <class A, class B> auto add(const A& a, const B& b) { return detail::node<Add>(a, b); }
template <class C, class A, class B> auto where(const C& c, const A& a, const B& b) { return detail::node<Where>(c, a, b); }
}  // namespace d_

// ---- unary -----------------------------------------------------------------------------------
struct Identity {
  static constexpr const char* name = "identity";
  template <int I, class A> static auto d(const A&) { return 1.0; }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const { return x; }
};
struct Neg {
  static constexpr const char* name = "neg";
  template <int I, class A> static auto d(const A&) { return -1.0; }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const { return -x; }
};
struct Exp {
  static constexpr const char* name = "exp";
  // d exp(a) = exp(a)
  template <int I, class A> static auto d(const A& a) { return detail::node<Exp>(a); }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const { return math::exp(x); }
};
struct Log {
  static constexpr const char* name = "log";
  // d log(a) = 1 / a
  template <int I, class A> static auto d(const A& a) { return d_::div(1.0, a); }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const { return math::log(x); }
};
struct Sqrt {
  static constexpr const char* name = "sqrt";
  // d sqrt(a) = 0.5 / sqrt(a)
  template <int I, class A> static auto d(const A& a) { return d_::div(0.5, detail::node<Sqrt>(a)); }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const { return math::sqrt(x); }
};
// Exact 1/sqrt(x): the hardware estimate (rsqrt14) is too coarse for normalisation layers.
struct Rsqrt {
  static constexpr const char* name = "rsqrt";
  // d a^-1/2 = -0.5 a^-3/2 = -0.5 rsqrt(a) / a
  template <int I, class A> static auto d(const A& a) { return d_::div(d_::mul(-0.5, detail::node<Rsqrt>(a)), a); }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const { return V(1) / math::sqrt(x); }
};
struct Abs {
  static constexpr const char* name = "abs";
  // d |a| = sign(a) (0 at 0)
  template <int I, class A> static auto d(const A& a) { return d_::sub(detail::node<Less>(0.0, a), detail::node<Less>(a, 0.0)); }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const { return math::abs(x); }
};
struct Square {
  static constexpr const char* name = "square";
  // d a^2 = 2a
  template <int I, class A> static auto d(const A& a) { return d_::mul(2.0, a); }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const { return x * x; }
};
struct Tanh {
  static constexpr const char* name = "tanh";
  // d tanh(a) = 1 - tanh(a)^2
  template <int I, class A> static auto d(const A& a) { return d_::sub(1.0, detail::node<Square>(detail::node<Tanh>(a))); }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const { return math::tanh(x); }
};
struct Sigmoid {
  static constexpr const char* name = "sigmoid";
  // d s(a) = s(a) (1 - s(a))
  template <int I, class A> static auto d(const A& a) {
    const auto s = detail::node<Sigmoid>(a);
    return d_::mul(s, d_::sub(1.0, s));
  }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const { return V(1) / (V(1) + math::exp(-x)); }
};
struct Relu {
  static constexpr const char* name = "relu";
  // d relu(a) = [a > 0]
  template <int I, class A> static auto d(const A& a) { return detail::node<Less>(0.0, a); }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const { return math::select(math::less(V(0), x), x, V(0)); }
};
// GELU, tanh approximation (GPT-2, BERT): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
struct GeluTanh {
  static constexpr const char* name = "gelu_tanh";
  // With u = k (a + c a^3): d = 0.5 (1 + tanh u) + 0.5 a (1 - tanh^2 u) k (1 + 3c a^2)
  template <int I, class A> static auto d(const A& a) { return detail::node<GeluTanhGrad>(a); }
  // Computed as x * sigmoid(2u) = x / (1 + exp(-2u)), the same function: 0.5 (1 + tanh u) =
  // sigmoid(2u). One exp and a division instead of tanh (a polynomial, an exp and a division on
  // the CPU's batches, both branches when a batch straddles |u| = 0.625): 1.5-2x faster over
  // a batch of floats, and for large negative x no 1 + tanh(u) cancellation (float relative error
  // where |gelu| > 1e-4: 1.2e-6 against 5.8e-4 the tanh way).
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const {
    const V minus_2u = V(-1.5957691216057308) * (x + V(0.044715) * x * x * x);
    return x / (V(1) + math::exp(minus_2u));
  }
};
// GELU, exact form: 0.5 x (1 + erf(x / sqrt(2))).
struct GeluErf {
  static constexpr const char* name = "gelu_erf";
  // d = 0.5 (1 + erf(a / sqrt 2)) + a exp(-a^2 / 2) / sqrt(2 pi)
  template <int I, class A> static auto d(const A& a) { return detail::node<GeluErfGrad>(a); }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const {
    return V(0.5) * x * (V(1) + math::erf(x * V(0.7071067811865476)));
  }
};
struct Silu {
  static constexpr const char* name = "silu";
  // With s = sigmoid(a): d = s (1 + a (1 - s))
  template <int I, class A> static auto d(const A& a) {
    const auto s = detail::node<Sigmoid>(a);
    return d_::mul(s, d_::add(1.0, d_::mul(a, d_::sub(1.0, s))));
  }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const { return x / (V(1) + math::exp(-x)); }
};

// Derivatives of the two GELU forms, as functors of their own so the backward stays one pass.
struct GeluTanhGrad {
  static constexpr const char* name = "gelu_tanh_grad";
  // With s = sigmoid(2u) (see GeluTanh): 0.5 (1 + tanh u) = s and 0.5 (1 - tanh^2 u) = 2 s (1 - s),
  // so d = s + 2 k x s (1 - s) (1 + 3c x^2). 1 - s, not exp(-2u) s: for large negative x,
  // exp(-2u) is inf and s is 0.
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const {
    const V k = V(0.7978845608028654), c = V(0.044715), x2 = x * x;
    const V s = V(1) / (V(1) + math::exp(V(-2) * k * x * (V(1) + c * x2)));
    return s + V(2) * k * x * s * (V(1) - s) * (V(1) + V(3) * c * x2);
  }
};
struct GeluErfGrad {
  static constexpr const char* name = "gelu_erf_grad";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const {
    return V(0.5) * (V(1) + math::erf(x * V(0.7071067811865476))) + x * math::exp(V(-0.5) * x * x) * V(0.3989422804014327);
  }
};

// ---- binary ----------------------------------------------------------------------------------
struct Add {
  static constexpr const char* name = "add";
  template <int I, class A, class B> static auto d(const A&, const B&) { return 1.0; }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return a + b; }
};
struct Sub {
  static constexpr const char* name = "sub";
  template <int I, class A, class B> static auto d(const A&, const B&) { return I == 0 ? 1.0 : -1.0; }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return a - b; }
};
struct Mul {
  static constexpr const char* name = "mul";
  template <int I, class A, class B> static auto d(const A& a, const B& b) {
    if constexpr (I == 0) return b;
    else return a;
  }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return a * b; }
};
struct Div {
  static constexpr const char* name = "div";
  // d(a/b)/da = 1/b, d(a/b)/db = -a/b^2
  template <int I, class A, class B> static auto d(const A& a, const B& b) {
    if constexpr (I == 0) return d_::div(1.0, b);
    else return d_::div(detail::node<Neg>(a), detail::node<Square>(b));
  }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return a / b; }
};
struct Pow {
  static constexpr const char* name = "pow";
  // d(a^b)/da = b a^(b-1), d(a^b)/db = a^b log a
  template <int I, class A, class B> static auto d(const A& a, const B& b) {
    if constexpr (I == 0) return d_::mul(b, detail::node<Pow>(a, d_::sub(b, 1.0)));
    else return d_::mul(detail::node<Pow>(a, b), detail::node<Log>(a));
  }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return math::pow(a, b); }
};
struct Maximum {
  static constexpr const char* name = "maximum";
  // The larger operand gets the gradient; ties split it evenly (as torch.maximum).
  template <int I, class A, class B> static auto d(const A& a, const B& b) {
    if constexpr (I == 0) return d_::where(detail::node<Equal>(a, b), 0.5, detail::node<Less>(b, a));
    else return d_::where(detail::node<Equal>(a, b), 0.5, detail::node<Less>(a, b));
  }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return math::max(a, b); }
};
struct Minimum {
  static constexpr const char* name = "minimum";
  template <int I, class A, class B> static auto d(const A& a, const B& b) {
    if constexpr (I == 0) return d_::where(detail::node<Equal>(a, b), 0.5, detail::node<Less>(a, b));
    else return d_::where(detail::node<Equal>(a, b), 0.5, detail::node<Less>(b, a));
  }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return math::min(a, b); }
};
struct Less {
  static constexpr const char* name = "less";
  // Piecewise constant: no gradient.
  template <int I, class A, class B> static auto d(const A&, const B&) { return ZeroGrad{}; }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return math::less(a, b); }
};
struct LessEqual {
  static constexpr const char* name = "less_equal";
  // Piecewise constant: no gradient.
  template <int I, class A, class B> static auto d(const A&, const B&) { return ZeroGrad{}; }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return math::less_equal(a, b); }
};
struct Greater {
  static constexpr const char* name = "greater";
  // Piecewise constant: no gradient.
  template <int I, class A, class B> static auto d(const A&, const B&) { return ZeroGrad{}; }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return math::less(b, a); }
};
struct GreaterEqual {
  static constexpr const char* name = "greater_equal";
  // Piecewise constant: no gradient.
  template <int I, class A, class B> static auto d(const A&, const B&) { return ZeroGrad{}; }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return math::less_equal(b, a); }
};
struct Equal {
  static constexpr const char* name = "equal";
  // Piecewise constant: no gradient.
  template <int I, class A, class B> static auto d(const A&, const B&) { return ZeroGrad{}; }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return math::equal(a, b); }
};
struct NotEqual {
  static constexpr const char* name = "not_equal";
  // Piecewise constant: no gradient.
  template <int I, class A, class B> static auto d(const A&, const B&) { return ZeroGrad{}; }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return math::not_equal(a, b); }
};

// ---- ternary ---------------------------------------------------------------------------------
// where(cond, a, b): a where cond is nonzero, else b.
struct Where {
  static constexpr const char* name = "where";
  // No gradient flows to the condition.
  template <int I, class C, class A, class B> static auto d(const C& c, const A&, const B&) {
    if constexpr (I == 0) return ZeroGrad{};
    else if constexpr (I == 1) return d_::where(c, 1.0, 0.0);
    else return d_::where(c, 0.0, 1.0);
  }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& c, const V& a, const V& b) const { return math::select(c, a, b); }
};
// clamp(x, lo, hi) = min(max(x, lo), hi).
struct Clamp {
  static constexpr const char* name = "clamp";
  // x passes the gradient inside [lo, hi]; a bound gets it where it is active.
  template <int I, class X, class L, class H> static auto d(const X& x, const L& lo, const H& hi) {
    if constexpr (I == 0) return d_::mul(detail::node<LessEqual>(lo, x), detail::node<LessEqual>(x, hi));
    else if constexpr (I == 1) return detail::node<Less>(x, lo);
    else return detail::node<Less>(hi, x);
  }
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x, const V& lo, const V& hi) const {
    return math::min(math::max(x, lo), hi);
  }
};

}  // namespace cerberus::fn
