// Kernel views: what an expression becomes just before evaluation. Plain, trivially copyable
// structs of raw pointers and strides (no shared_ptr, no std::tuple), so the very same tree is
// walked by the CPU loops and passed by value to a CUDA kernel.
//
// Every leaf's strides are aligned to the output's rank, 0 on broadcast dimensions.
#pragma once

#include <type_traits>

#include "cerberus/core/config.hpp"
#include "cerberus/core/dtype.hpp"
#include "cerberus/expr/expr.hpp"

namespace cerberus::expr_view {

// A tensor operand. `cur` and `inner` are per-row state of the CPU loops.
template <class T>
struct Leaf {
  using value_type = compute_t<T>;
  const T* base;
  Index stride[max_rank];
  const T* cur;
  Index inner;

  // Random access by coordinates (device kernels, strided fallbacks).
  CERBERUS_HOST_DEVICE value_type at(const Index* coord, int rank) const {
    Index offset = 0;
    for (int d = 0; d < rank; ++d) offset += coord[d] * stride[d];
    return static_cast<value_type>(base[offset]);
  }
  // Row access: begin_row fixes all but the innermost coordinate.
  void begin_row(const Index* coord, int rank) {
    Index offset = 0;
    for (int d = 0; d + 1 < rank; ++d) offset += coord[d] * stride[d];
    cur = base + offset;
    inner = rank ? stride[rank - 1] : 0;
  }
  value_type scalar(Index i) const { return static_cast<value_type>(cur[i * inner]); }
  // Only called when `inner` is 0 (broadcast) or 1 (contiguous).
  template <class Batch>
  Batch packet(Index i) const {
    if (inner == 0) return Batch(static_cast<value_type>(*cur));
    if constexpr (std::is_same_v<T, value_type>) {
      return Batch::load_unaligned(cur + i);
    } else {  // bf16: widen to float through a small buffer
      alignas(64) value_type widened[Batch::size];
      for (std::size_t k = 0; k < Batch::size; ++k) widened[k] = static_cast<value_type>(cur[i + k]);
      return Batch::load_aligned(widened);
    }
  }
  bool vectorizable() const { return inner == 0 || inner == 1; }
};

template <class C>
struct Scalar {
  using value_type = C;
  C value;
  CERBERUS_HOST_DEVICE C at(const Index*, int) const { return value; }
  void begin_row(const Index*, int) {}
  C scalar(Index) const { return value; }
  template <class Batch>
  Batch packet(Index) const {
    return Batch(value);
  }
  bool vectorizable() const { return true; }
};

template <class F, class... Children>
struct Node;

template <class F, class A>
struct Node<F, A> {
  using value_type = typename A::value_type;
  F fn;
  A a;
  CERBERUS_HOST_DEVICE value_type at(const Index* c, int r) const { return fn(a.at(c, r)); }
  void begin_row(const Index* c, int r) { a.begin_row(c, r); }
  value_type scalar(Index i) const { return fn(a.scalar(i)); }
  template <class Batch>
  Batch packet(Index i) const {
    return fn(a.template packet<Batch>(i));
  }
  bool vectorizable() const { return a.vectorizable(); }
};

template <class F, class A, class B>
struct Node<F, A, B> {
  using value_type = typename A::value_type;
  F fn;
  A a;
  B b;
  CERBERUS_HOST_DEVICE value_type at(const Index* c, int r) const { return fn(a.at(c, r), b.at(c, r)); }
  void begin_row(const Index* c, int r) {
    a.begin_row(c, r);
    b.begin_row(c, r);
  }
  value_type scalar(Index i) const { return fn(a.scalar(i), b.scalar(i)); }
  template <class Batch>
  Batch packet(Index i) const {
    return fn(a.template packet<Batch>(i), b.template packet<Batch>(i));
  }
  bool vectorizable() const { return a.vectorizable() && b.vectorizable(); }
};

template <class F, class A, class B, class C>
struct Node<F, A, B, C> {
  using value_type = typename A::value_type;
  F fn;
  A a;
  B b;
  C c;
  CERBERUS_HOST_DEVICE value_type at(const Index* k, int r) const { return fn(a.at(k, r), b.at(k, r), c.at(k, r)); }
  void begin_row(const Index* k, int r) {
    a.begin_row(k, r);
    b.begin_row(k, r);
    c.begin_row(k, r);
  }
  value_type scalar(Index i) const { return fn(a.scalar(i), b.scalar(i), c.scalar(i)); }
  template <class Batch>
  Batch packet(Index i) const {
    return fn(a.template packet<Batch>(i), b.template packet<Batch>(i), c.template packet<Batch>(i));
  }
  bool vectorizable() const { return a.vectorizable() && b.vectorizable() && c.vectorizable(); }
};

// ---- building a view from an expression for a given output shape -------------------------------
template <class C>
Scalar<C> make(const ScalarOperand& s, const Shape&) {
  return {static_cast<C>(s.value)};
}

template <class C, class T, class D>
Leaf<T> make(const Tensor<T, D>& t, const Shape& out) {
  Leaf<T> leaf{};
  leaf.base = t.data();
  const int shift = out.rank() - t.rank();
  for (int d = 0; d < out.rank(); ++d) {
    const int td = d - shift;
    leaf.stride[d] = (td < 0 || (t.shape()[td] == 1 && out[d] != 1)) ? 0 : t.strides()[td];
  }
  return leaf;
}

template <class C, class F, class... Ops>
auto make(const Expr<F, Ops...>& e, const Shape& out) {
  return std::apply([&](const auto&... ops) { return Node<F, decltype(make<C>(ops, out))...>{e.fn, make<C>(ops, out)...}; },
                    e.operands);
}

// Calls fn(Index* strides) for every leaf, so evaluators can rewrite strides (dim collapsing).
template <class C, class Fn>
void for_each_stride(Scalar<C>&, Fn&&) {}
template <class T, class Fn>
void for_each_stride(Leaf<T>& leaf, Fn&& fn) {
  fn(leaf.stride);
}
template <class F, class... Cs, class Fn>
void for_each_stride(Node<F, Cs...>& node, Fn&& fn) {
  if constexpr (sizeof...(Cs) >= 1) for_each_stride(node.a, fn);
  if constexpr (sizeof...(Cs) >= 2) for_each_stride(node.b, fn);
  if constexpr (sizeof...(Cs) >= 3) for_each_stride(node.c, fn);
}

// Merges adjacent dimensions that every operand walks contiguously with respect to each other
// and drops extent-1 dimensions, so most broadcasts become a short loop nest. `out_strides` is
// the output's; `shape` is rewritten in place.
template <class View>
void collapse_dims(Shape& shape, Strides& out_strides, View& view) {
  int rank = 0;
  Index dims[max_rank];
  Index ostr[max_rank];
  int keep[max_rank];
  for (int d = 0; d < shape.rank(); ++d)
    if (shape[d] != 1) keep[rank++] = d;
  for (int k = 0; k < rank; ++k) dims[k] = shape[keep[k]], ostr[k] = out_strides[keep[k]];
  for_each_stride(view, [&](Index* s) {
    for (int k = 0; k < rank; ++k) s[k] = s[keep[k]];
  });
  // Merge k and k+1 when stride[k] == stride[k+1] * dims[k+1] for every operand.
  int k = rank - 2;
  while (k >= 0) {
    bool ok = ostr[k] == ostr[k + 1] * dims[k + 1];
    for_each_stride(view, [&](Index* s) { ok = ok && s[k] == s[k + 1] * dims[k + 1]; });
    if (ok) {
      auto merge = [&](Index* s) {
        s[k] = s[k + 1];
        for (int j = k + 1; j + 1 < rank; ++j) s[j] = s[j + 1];
      };
      dims[k] *= dims[k + 1];
      for (int j = k + 1; j + 1 < rank; ++j) dims[j] = dims[j + 1];
      merge(ostr);
      for_each_stride(view, merge);
      --rank;
    }
    --k;
  }
  shape = Shape::filled(rank, 1);
  out_strides = Shape::filled(rank, 0);
  for (int d = 0; d < rank; ++d) shape[d] = dims[d], out_strides[d] = ostr[d];
}

}  // namespace cerberus::expr_view
