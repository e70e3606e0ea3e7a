// Every elementwise functor, defined once. `operator()` is a template over the value type V, so
// the same body runs on a float, a double, an xsimd batch (CPU SIMD) and inside a CUDA kernel.
// Adding an op is one struct here plus one builder line in expr/ops.hpp.
#pragma once

#include "cerberus/core/config.hpp"
#include "cerberus/core/math.hpp"

namespace cerberus::fn {

// ---- unary -----------------------------------------------------------------------------------
struct Identity {
  static constexpr const char* name = "identity";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const { return x; }
};
struct Neg {
  static constexpr const char* name = "neg";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const { return -x; }
};
struct Exp {
  static constexpr const char* name = "exp";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const { return math::exp(x); }
};
struct Log {
  static constexpr const char* name = "log";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const { return math::log(x); }
};
struct Sqrt {
  static constexpr const char* name = "sqrt";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const { return math::sqrt(x); }
};
// Exact 1/sqrt(x): the hardware estimate (rsqrt14) is too coarse for normalisation layers.
struct Rsqrt {
  static constexpr const char* name = "rsqrt";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const { return V(1) / math::sqrt(x); }
};
struct Abs {
  static constexpr const char* name = "abs";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const { return math::abs(x); }
};
struct Square {
  static constexpr const char* name = "square";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const { return x * x; }
};
struct Tanh {
  static constexpr const char* name = "tanh";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const { return math::tanh(x); }
};
struct Sigmoid {
  static constexpr const char* name = "sigmoid";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const { return V(1) / (V(1) + math::exp(-x)); }
};
struct Relu {
  static constexpr const char* name = "relu";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const { return math::select(math::less(V(0), x), x, V(0)); }
};
// GELU, tanh approximation (GPT-2, BERT): 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
struct GeluTanh {
  static constexpr const char* name = "gelu_tanh";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const {
    const V inner = V(0.7978845608028654) * (x + V(0.044715) * x * x * x);
    return V(0.5) * x * (V(1) + math::tanh(inner));
  }
};
// GELU, exact form: 0.5 x (1 + erf(x / sqrt(2))).
struct GeluErf {
  static constexpr const char* name = "gelu_erf";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const {
    return V(0.5) * x * (V(1) + math::erf(x * V(0.7071067811865476)));
  }
};
struct Silu {
  static constexpr const char* name = "silu";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x) const { return x / (V(1) + math::exp(-x)); }
};

// ---- binary ----------------------------------------------------------------------------------
struct Add {
  static constexpr const char* name = "add";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return a + b; }
};
struct Sub {
  static constexpr const char* name = "sub";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return a - b; }
};
struct Mul {
  static constexpr const char* name = "mul";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return a * b; }
};
struct Div {
  static constexpr const char* name = "div";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return a / b; }
};
struct Pow {
  static constexpr const char* name = "pow";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return math::pow(a, b); }
};
struct Maximum {
  static constexpr const char* name = "maximum";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return math::max(a, b); }
};
struct Minimum {
  static constexpr const char* name = "minimum";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return math::min(a, b); }
};
struct Less {
  static constexpr const char* name = "less";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return math::less(a, b); }
};
struct LessEqual {
  static constexpr const char* name = "less_equal";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return math::less_equal(a, b); }
};
struct Greater {
  static constexpr const char* name = "greater";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return math::less(b, a); }
};
struct GreaterEqual {
  static constexpr const char* name = "greater_equal";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return math::less_equal(b, a); }
};
struct Equal {
  static constexpr const char* name = "equal";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return math::equal(a, b); }
};
struct NotEqual {
  static constexpr const char* name = "not_equal";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& a, const V& b) const { return math::not_equal(a, b); }
};

// ---- ternary ---------------------------------------------------------------------------------
// where(cond, a, b): a where cond is nonzero, else b.
struct Where {
  static constexpr const char* name = "where";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& c, const V& a, const V& b) const { return math::select(c, a, b); }
};
// clamp(x, lo, hi) = min(max(x, lo), hi).
struct Clamp {
  static constexpr const char* name = "clamp";
  template <class V> CERBERUS_HOST_DEVICE V operator()(const V& x, const V& lo, const V& hi) const {
    return math::min(math::max(x, lo), hi);
  }
};

}  // namespace cerberus::fn
