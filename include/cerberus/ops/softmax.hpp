// The softmax family along one axis: softmax, log_softmax, logsumexp.
//
// Shapes (legend: N = the extent of `axis`, default -1 = last):
//   softmax(x, axis), log_softmax(x, axis)   x [..., N, ...]  ->  [..., N, ...]
//   logsumexp(x, axis, keepdim)              x [..., N, ...]  ->  [..., ...]  ([..., 1, ...] with keepdim)
// Kernels see x as [O, N, I]: O = product of the extents before the axis, I = after it. The
// last axis (I = 1) is the fast path: each row is contiguous and handled by one task; rows
// shorter than two SIMD batches are transposed in tiles and vectorised across rows instead.
// Other axes are vectorised across I, strips of columns per task. Non-contiguous inputs are
// copied once to contiguous memory first.
//
// Numerics: each row is shifted by its maximum m before exp, so exp never overflows and inputs
// around +-1e4 give the same result as around 0; x - m is exact for nearby values. Sums of exp
// run in float SIMD lanes (double for double inputs) with block totals added in double; bf16
// computes in float.
//
// Special rows (the choice made here):
//   all -inf (a fully masked attention row): softmax 0 everywhere (not NaN: the row
//     contributes nothing), log_softmax -inf everywhere, logsumexp -inf (= log 0).
//   some -inf entries: those get exactly 0 (softmax) / -inf (log_softmax); the rest is finite.
//   any NaN in the row: the whole row is NaN (logsumexp NaN).
//   +inf in the row: logsumexp +inf; softmax NaN at the +inf entries and 0 elsewhere,
//     log_softmax NaN there and -inf elsewhere (inf / inf has no meaningful value).
// An axis of extent 0: softmax/log_softmax return an empty tensor, logsumexp -inf (log 0).
//
// Backward (differentiable_softmax, at the end) works from the forward's output y (and x for
// logsumexp): softmax dx = y * (dy - sum(dy * y)), log_softmax dx = dy - exp(y) * sum(dy),
// logsumexp dx = dy * exp(x - y).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include "cerberus/backend/cpu/backend.hpp"
#include "cerberus/backend/cpu/thread_pool.hpp"
#include "cerberus/backend/op_kernels.hpp"
#include "cerberus/core/dtype.hpp"
#include "cerberus/core/shape.hpp"
#include "cerberus/expr/expr.hpp"
#include "cerberus/ops/reduce.hpp"
#include "cerberus/tensor/tensor.hpp"

namespace cerberus {

enum class SoftmaxKind { softmax, log_softmax, logsumexp };

namespace cpu_backend {
inline namespace CERBERUS_SIMD_ABI {

// Elements per task (exp costs more than an add, so tasks are smaller than for reductions).
inline constexpr Index softmax_grain = 16 * 1024;
// Columns handled together when the axis is not the last one.
inline constexpr Index softmax_strip = 256;

// The shift for exp(x - shift): the row max, or 0 when that is infinite (an all -inf row then
// sums to 0 rather than NaN, and a +inf stays +inf) or NaN (which then propagates).
template <class C>
CERBERUS_ALWAYS_INLINE C softmax_shift(C max) {
  return std::isfinite(max) ? max : C(0);
}

// Sum of exp(x[i] - shift) over [0, n); with Store, exp(x[i] - shift) also goes to e[i]. The
// ragged end is one padded batch (padding -inf adds exp(-inf) = 0), not scalar exps.
template <bool Store, class T>
double sum_exp_span(const T* x, Index n, compute_t<T> shift, compute_t<T>* e) {
  using C = compute_t<T>;
  using B = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(B::size);
  const B sh(shift);
  double total = 0.0;
  for (Index b0 = 0; b0 < n; b0 += reduce_block) {
    const Index b1 = std::min(n, b0 + reduce_block);
    B a0(C(0)), a1(C(0));
    Index i = b0;
    for (; i + 2 * W <= b1; i += 2 * W) {
      const B v0 = xsimd::exp(load_batch(x + i) - sh), v1 = xsimd::exp(load_batch(x + i + W) - sh);
      if constexpr (Store) v0.store_unaligned(e + i), v1.store_unaligned(e + i + W);
      a0 += v0;
      a1 += v1;
    }
    for (; i + W <= b1; i += W) {
      const B v = xsimd::exp(load_batch(x + i) - sh);
      if constexpr (Store) v.store_unaligned(e + i);
      a0 += v;
    }
    if (i < b1) {
      const B v = xsimd::exp(load_partial(x + i, b1 - i, -std::numeric_limits<C>::infinity()) - sh);
      if constexpr (Store) store_partial(e + i, v, b1 - i);
      a1 += v;
    }
    total += static_cast<double>(horizontal_sum(a0 + a1));
  }
  return total;
}

// One contiguous row of n >= 1 elements. y gets n outputs, or one for logsumexp. `scratch`
// (n elements of the compute type) holds exp(x - shift) for a bf16 softmax; float and double
// keep it in y itself. Either way exp runs once per element.
template <class T>
void softmax_row(const T* x, T* y, Index n, SoftmaxKind kind, compute_t<T>* scratch) {
  using C = compute_t<T>;
  using B = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(B::size);
  const C shift = softmax_shift(reduce_span<MaxReducer<C>>(x, n));
  const B sh(shift);
  if (kind == SoftmaxKind::softmax) {
    C* e;
    if constexpr (std::is_same_v<T, C>) e = y;
    else e = scratch;
    const double s = sum_exp_span<true>(x, n, shift, e);
    const B inv(s == 0.0 ? C(0) : static_cast<C>(1.0 / s));  // all -inf: exp was 0 everywhere
    Index i = 0;
    for (; i + W <= n; i += W) store_batch(y + i, B::load_unaligned(e + i) * inv);
    if (i < n) store_partial(y + i, load_partial(e + i, n - i, C(0)) * inv, n - i);
    return;
  }
  const double s = sum_exp_span<false>(x, n, shift, static_cast<C*>(nullptr));
  if (kind == SoftmaxKind::logsumexp) {
    y[0] = static_cast<T>(static_cast<C>(static_cast<double>(shift) + std::log(s)));
    return;
  }
  const B log_s(s == 0.0 ? C(0) : static_cast<C>(std::log(s)));  // all -inf: keeps x - shift = -inf
  Index i = 0;
  for (; i + W <= n; i += W) store_batch(y + i, (load_batch(x + i) - sh) - log_s);
  if (i < n) store_partial(y + i, (load_partial(x + i, n - i, C(0)) - sh) - log_s, n - i);
}

// A strip of `width` (<= softmax_strip) columns of an [n, inner] slab, the softmax axis running
// down the rows. y (softmax, log_softmax) has the slab's layout; lse (logsumexp) gets `width`
// values. The per-column arrays are padded to whole batches: padding columns read -inf, get
// shift 0 and sum exp(-inf) = 0, and are never written out.
template <class T>
void softmax_strip_columns(const T* x, T* y, T* lse, Index n, Index inner, Index width, SoftmaxKind kind) {
  using C = compute_t<T>;
  using B = xsimd::batch<C>;
  using Max = MaxReducer<C>;
  constexpr Index W = static_cast<Index>(B::size);
  constexpr C neg_inf = -std::numeric_limits<C>::infinity();
  static_assert(softmax_strip % W == 0);
  const Index padded = (width + W - 1) / W * W;
  alignas(64) C shift[softmax_strip], acc[softmax_strip], factor[softmax_strip];
  double total[softmax_strip];

  std::fill(shift, shift + padded, neg_inf);
  for (Index r = 0; r < n; ++r) {
    const T* row = x + r * inner;
    for_each_batch<W>(width, [&](Index i, Index count, auto whole) {
      Max::combine(B::load_aligned(shift + i), load_upto(row + i, count, neg_inf, whole)).store_aligned(shift + i);
    });
  }
  for (Index i = 0; i < padded; ++i) shift[i] = softmax_shift(shift[i]), total[i] = 0.0;

  // A float/double softmax keeps exp(x - shift) in y and scales it at the end (one exp per
  // element); bf16 has no room for it in y and computes exp again.
  const bool soft = kind == SoftmaxKind::softmax;
  const bool keep_exp = soft && std::is_same_v<T, C>;
  for (Index r0 = 0; r0 < n; r0 += reduce_block_rows) {
    const Index r1 = std::min(n, r0 + reduce_block_rows);
    std::fill(acc, acc + padded, C(0));
    for (Index r = r0; r < r1; ++r) {
      const T* row = x + r * inner;
      for_each_batch<W>(width, [&](Index i, Index count, auto whole) {
        const B v = xsimd::exp(load_upto(row + i, count, neg_inf, whole) - B::load_aligned(shift + i));
        if (keep_exp) store_upto(y + r * inner + i, v, count, whole);
        (B::load_aligned(acc + i) + v).store_aligned(acc + i);
      });
    }
    for (Index i = 0; i < width; ++i) total[i] += static_cast<double>(acc[i]);
  }

  if (kind == SoftmaxKind::logsumexp) {
    for (Index i = 0; i < width; ++i)
      lse[i] = static_cast<T>(static_cast<C>(static_cast<double>(shift[i]) + std::log(total[i])));
    return;
  }
  for (Index i = 0; i < padded; ++i) {
    if (soft) factor[i] = total[i] == 0.0 ? C(0) : static_cast<C>(1.0 / total[i]);
    else factor[i] = total[i] == 0.0 ? C(0) : static_cast<C>(std::log(total[i]));
  }
  for (Index r = 0; r < n; ++r) {
    const T* row = x + r * inner;
    T* out = y + r * inner;
    for_each_batch<W>(width, [&](Index i, Index count, auto whole) {
      const B f = B::load_aligned(factor + i);
      if (keep_exp) {
        store_upto(out + i, load_upto(out + i, count, C(0), whole) * f, count, whole);
      } else {
        const B z = load_upto(row + i, count, C(0), whole) - B::load_aligned(shift + i);
        store_upto(out + i, soft ? xsimd::exp(z) * f : z - f, count, whole);
      }
    });
  }
}

// x is a contiguous [outer, n, inner] tensor, n >= 1; y is [outer, n, inner] (softmax,
// log_softmax) or [outer, inner] (logsumexp), contiguous.
template <class T>
void softmax_kernel(const T* x, T* y, Index outer, Index n, Index inner, SoftmaxKind kind) {
  using C = compute_t<T>;
  const bool lse = kind == SoftmaxKind::logsumexp;
  if (inner == 1 && n < short_row_limit<T>) {  // short rows: transposed tiles, vectorised across rows
    static_assert(short_row_tile <= softmax_strip);
    for_short_row_tiles(x, outer, n, n, [&](Index o0, Index count, const C* block) {
      alignas(64) C result[short_row_limit<T> * short_row_tile];
      softmax_strip_columns<C>(block, lse ? nullptr : result, lse ? result : nullptr, n, short_row_tile, count, kind);
      for (Index r = 0; r < count; ++r) {
        if (lse) y[o0 + r] = static_cast<T>(result[r]);
        else
          for (Index j = 0; j < n; ++j) y[(o0 + r) * n + j] = static_cast<T>(result[j * short_row_tile + r]);
      }
    });
    return;
  }
  if (inner == 1) {
    const bool needs_scratch = kind == SoftmaxKind::softmax && !std::is_same_v<T, compute_t<T>>;
    parallel_for(0, outer, std::max<Index>(1, softmax_grain / n), [&](Index b, Index e) {
      std::vector<compute_t<T>> scratch(static_cast<std::size_t>(needs_scratch ? n : 0));
      for (Index o = b; o < e; ++o) softmax_row(x + o * n, lse ? y + o : y + o * n, n, kind, scratch.data());
    });
    return;
  }
  const Index width = std::min(inner, softmax_strip);
  const Index strips = (inner + width - 1) / width;
  parallel_for(0, outer * strips, std::max<Index>(1, softmax_grain / (n * width)), [&](Index b, Index e) {
    for (Index u = b; u < e; ++u) {
      const Index o = u / strips, i0 = (u % strips) * width, w = std::min(width, inner - i0);
      const Index slab = o * n * inner + i0;
      softmax_strip_columns(x + slab, lse ? nullptr : y + slab, lse ? y + o * inner + i0 : nullptr, n, inner, w, kind);
    }
  });
}

}  // namespace CERBERUS_SIMD_ABI
}  // namespace cpu_backend

namespace detail {

template <class E>
Tensor<expr_value_t<E>, expr_device_t<E>> softmax_family(const E& expr, int axis, bool keepdim, SoftmaxKind kind, const char* op) {
  static_assert(FloatElement<expr_value_t<E>>, "The softmax family needs float, double or bfloat16 elements; convert with .to<float>() first.");
  using T = expr_value_t<E>;
  using D = expr_device_t<E>;
  const Tensor<T, D> input(expr);
  const int a = input.shape().axis(axis, op);
  const Index n = input.shape()[a];
  const Shape out_shape = kind == SoftmaxKind::logsumexp ? reduced_shape(input.shape(), 1u << a, keepdim) : input.shape();
  auto out = Tensor<T, D>::empty(out_shape);
  if (out.numel() == 0) return out;
  if (n == 0) {  // logsumexp over nothing: log(0)
    out.fill(static_cast<T>(-std::numeric_limits<float>::infinity()));
    return out;
  }
  const Tensor<T, D> x = input.contiguous();
  Index outer = 1, inner = 1;
  for (int d = 0; d < a; ++d) outer *= x.shape()[d];
  for (int d = a + 1; d < x.rank(); ++d) inner *= x.shape()[d];
  if constexpr (std::is_same_v<D, cpu>) cpu_backend::softmax_kernel(x.data(), out.data(), outer, n, inner, kind);
  else OpKernels<D>::softmax(x.data(), out.data(), outer, n, inner, static_cast<int>(kind), op);
  return out;
}

}  // namespace detail

namespace detail {

// Runs a softmax-family forward and, when its input requires grad, records its backward.
// backward saves: the output y (softmax / log_softmax need only y; logsumexp needs x and y).
//   softmax:     dx = y * (g - sum(g * y))
//   log_softmax: dx = g - exp(y) * sum(g)
//   logsumexp:   dx = g * exp(x - y)
template <class E>
Tensor<expr_value_t<E>, expr_device_t<E>> differentiable_softmax(const E& expr, int axis, bool keepdim, SoftmaxKind kind, const char* op) {
  using T = expr_value_t<E>;
  using D = expr_device_t<E>;
  const Tensor<T, D> x(expr);
  Tensor<T, D> y;
  {
    NoGradGuard forward_only;
    y = softmax_family(x, axis, keepdim, kind, op);
  }
  if (autograd::any_requires_grad(x)) {
    const int a = x.shape().axis(axis, op);
    autograd::record<T, D>(y, op, {x}, [x, y, a, kind](const Tensor<T, D>& g) {
      if (kind == SoftmaxKind::softmax) {
        const Tensor<T, D> gy = g * y;
        return std::vector<Tensor<T, D>>{Tensor<T, D>(y * (g - sum(gy, a, true)))};
      }
      if (kind == SoftmaxKind::log_softmax) return std::vector<Tensor<T, D>>{Tensor<T, D>(g - exp(y) * sum(g, a, true))};
      Shape kept = x.shape();
      kept[a] = 1;
      // A row of all -inf has logsumexp -inf and no gradient (exp(-inf - -inf) would be NaN).
      const Tensor<T, D> yk = y.reshape(kept);
      return std::vector<Tensor<T, D>>{
          Tensor<T, D>(where(yk > -std::numeric_limits<double>::infinity(), g.reshape(kept) * exp(x - yk), 0.0))};
    });
  }
  return y;
}

}  // namespace detail

// exp(x - logsumexp(x)) along `axis`: non-negative, sums to 1 along the axis. Differentiable.
template <Expression E>
Tensor<expr_value_t<E>, expr_device_t<E>> softmax(const E& x, int axis = -1) {
  return detail::differentiable_softmax(x, axis, false, SoftmaxKind::softmax, "softmax");
}

// x - logsumexp(x) along `axis`, computed as (x - max) - log(sum exp(x - max)): no exp of the
// output, so very negative log-probabilities stay exact instead of flushing to log(0). Differentiable.
template <Expression E>
Tensor<expr_value_t<E>, expr_device_t<E>> log_softmax(const E& x, int axis = -1) {
  return detail::differentiable_softmax(x, axis, false, SoftmaxKind::log_softmax, "log_softmax");
}

// log(sum(exp(x))) along `axis`, as max + log(sum(exp(x - max))). Differentiable.
template <Expression E>
Tensor<expr_value_t<E>, expr_device_t<E>> logsumexp(const E& x, int axis = -1, bool keepdim = false) {
  return detail::differentiable_softmax(x, axis, keepdim, SoftmaxKind::logsumexp, "logsumexp");
}

}  // namespace cerberus
