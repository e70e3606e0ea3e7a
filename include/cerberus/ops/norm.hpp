// Normalisation over the last axis: layer_norm and rms_norm, forward and backward side by side.
//
// Shapes (legend: C = channels = the last extent, N = rows = the product of the others):
//   layer_norm(x [..., C], weight [C], bias [C], eps)  ->  [..., C]
//   rms_norm(x [..., C], weight [C], eps)              ->  [..., C]
// weight and bias are optional: pass an undefined Tensor() to leave a term out.
//
//   layer_norm: y = (x - mean) * rstd * weight + bias,  rstd = 1 / sqrt(var + eps)  (biased var)
//   rms_norm:   y = x * rstd * weight,                  rstd = 1 / sqrt(mean(x^2) + eps)
//
// Saved for backward (llm.c style): the input x (a handle, no copy when x is contiguous), the
// weight, and per row only mean and rstd (layer_norm) or rstd (rms_norm), in the compute type:
// 2 N (or N) numbers beside the forward's own operands. x-hat is recomputed in the backward
// from x, mean and rstd rather than stored (it would be another N x C tensor).
//
// Kernels: one fused pass per row, each row handled whole by one task: the row is read from
// memory once and its sweeps (mean, variance, then writing y) run while it sits in L1 (a row of
// 512 floats is 2 KiB). A separate variance sweep over the cached row costs little and stays
// exact where E[x^2] - E[x]^2 would cancel. The backward's pass reads dy and x for two row sums
// in one sweep, then writes dx and adds dy * x-hat and dy into per-block partials of dweight
// and dbias.
// Blocks of rows are fixed by the shape (never by the thread count), each owns its partial row
// (no races, no atomics), and partials are added in block order: dweight and dbias are bitwise
// the same for any thread count. bf16 inputs are computed in float, rounded once on store.
#pragma once

#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "cerberus/autograd/node.hpp"
#include "cerberus/backend/cpu/backend.hpp"
#include "cerberus/backend/cpu/thread_pool.hpp"
#include "cerberus/core/dtype.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/backend/op_kernels.hpp"
#include "cerberus/core/simd.hpp"
#include "cerberus/ops/reduce.hpp"  // load_batch / store_batch (bf16 <-> float batches), reduce_block
#include "cerberus/tensor/tensor.hpp"

namespace cerberus {

namespace cpu_backend {
inline namespace CERBERUS_SIMD_ABI {

// Elements per task: rows are cheap (a few flops per element), so tasks are large.
inline constexpr Index norm_grain = 16 * 1024;
// At most this many partial rows of dweight / dbias (each C numbers of the compute type).
inline constexpr Index norm_max_blocks = 64;

// Sum of f(x[i]) over a row, f applied to batches and to scalars of the compute type. Lanes are
// folded into a double every reduce_block elements, so long rows keep float sums short.
template <class T, class F>
double norm_row_sum(const T* x, Index n, F f) {
  using C = compute_t<T>;
  using B = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(B::size);
  double total = 0.0;
  for (Index b0 = 0; b0 < n; b0 += reduce_block) {
    const Index b1 = std::min(n, b0 + reduce_block);
    B a0(C(0)), a1(C(0));
    Index i = b0;
    for (; i + 2 * W <= b1; i += 2 * W) {
      a0 += f(load_batch(x + i));
      a1 += f(load_batch(x + i + W));
    }
    for (; i + W <= b1; i += W) a0 += f(load_batch(x + i));
    C s = simd::reduce_add(a0 + a1);
    for (; i < b1; ++i) s += f(static_cast<C>(x[i]));
    total += static_cast<double>(s);
  }
  return total;
}

// Forward over rows [0, rows) of a contiguous [rows, n] x. w, b may be null. center: layer
// norm (subtract the mean; mean[r] is written), else rms norm (mean may be null).
// Variance is the mean of (x - mean)^2, a second sweep over the cached row: the one-sweep
// E[x^2] - E[x]^2 loses every digit when |mean| >> std.
template <class T>
void norm_forward(const T* x, const T* w, const T* b, T* y, compute_t<T>* mean, compute_t<T>* rstd, Index rows, Index n,
                  double eps, bool center) {
  using C = compute_t<T>;
  using B = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(B::size);
  parallel_for(0, rows, std::max<Index>(1, norm_grain / n), [&](Index r0, Index r1) {
    for (Index r = r0; r < r1; ++r) {
      const T* xr = x + r * n;
      T* yr = y + r * n;
      C mu = C(0);
      if (center) {
        // Summed relative to the row's first element: rows far from 0 (around 1e4, say) then add
        // small numbers, and the mean is good to its own rounding.
        const C x0 = static_cast<C>(xr[0]);
        const double shifted = norm_row_sum(xr, n, [&](auto v) { return v - decltype(v)(x0); });
        mu = static_cast<C>(static_cast<double>(x0) + shifted / static_cast<double>(n));
      }
      const B vmu(mu);
      const double ss = norm_row_sum(xr, n, [&](auto v) {
        const auto d = v - decltype(v)(mu);
        return d * d;
      });
      const C rs = static_cast<C>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
      if (center) mean[r] = mu;
      rstd[r] = rs;
      const B vrs(rs);
      Index i = 0;
      for (; i + W <= n; i += W) {
        B v = (load_batch(xr + i) - vmu) * vrs;
        if (w) v *= load_batch(w + i);
        if (b) v += load_batch(b + i);
        store_batch(yr + i, v);
      }
      for (; i < n; ++i) {
        C v = (static_cast<C>(xr[i]) - mu) * rs;
        if (w) v *= static_cast<C>(w[i]);
        if (b) v += static_cast<C>(b[i]);
        yr[i] = static_cast<T>(v);
      }
    }
  });
}

// Number of row blocks whose partial dweight / dbias rows are kept: a function of the shape only.
inline Index norm_blocks(Index rows, Index n) {
  return std::clamp<Index>(rows * n / norm_grain, 1, std::min(rows, norm_max_blocks));
}

// Sums over one row of g = dy * w (dy without weight) and of g * xh, xh = (x - mu) * rs: the
// two row statistics of the backward, in one sweep.
struct NormGradSums {
  double g = 0.0, g_xh = 0.0;
};
template <class T>
NormGradSums norm_grad_sums(const T* dy, const T* x, const T* w, Index n, compute_t<T> mu, compute_t<T> rs) {
  using C = compute_t<T>;
  using B = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(B::size);
  const B vmu(mu), vrs(rs);
  NormGradSums s;
  for (Index b0 = 0; b0 < n; b0 += reduce_block) {
    const Index b1 = std::min(n, b0 + reduce_block);
    B ag(C(0)), agx(C(0));
    Index i = b0;
    for (; i + W <= b1; i += W) {
      const B g = w ? load_batch(dy + i) * load_batch(w + i) : load_batch(dy + i);
      ag += g;
      agx = xsimd::fma(g, (load_batch(x + i) - vmu) * vrs, agx);
    }
    C sg = simd::reduce_add(ag), sgx = simd::reduce_add(agx);
    for (; i < b1; ++i) {
      const C g = w ? static_cast<C>(dy[i]) * static_cast<C>(w[i]) : static_cast<C>(dy[i]);
      sg += g;
      sgx += g * ((static_cast<C>(x[i]) - mu) * rs);
    }
    s.g += static_cast<double>(sg);
    s.g_xh += static_cast<double>(sgx);
  }
  return s;
}

// Backward over a contiguous [rows, n] problem. dx, dw, db may each be null (not needed).
// With xh = (x - mean) * rstd and g = dy * w:
//   dx = rstd * (g - mean(g) - xh * mean(g * xh))    (layer norm)
//   dx = rstd * (g - xh * mean(g * xh))              (rms norm: no mean term)
//   dw = sum over rows of dy * xh,  db = sum over rows of dy.
// dw_out / db_out receive the compute-type totals (n values each).
template <class T>
void norm_backward(const T* dy, const T* x, const T* w, const compute_t<T>* mean, const compute_t<T>* rstd, T* dx,
                   compute_t<T>* dw_out, compute_t<T>* db_out, Index rows, Index n, bool center) {
  using C = compute_t<T>;
  using B = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(B::size);
  const bool want_w = dw_out != nullptr, want_b = db_out != nullptr;
  const Index blocks = norm_blocks(rows, n);
  std::vector<C> part_w(static_cast<std::size_t>(want_w ? blocks * n : 0), C(0));
  std::vector<C> part_b(static_cast<std::size_t>(want_b ? blocks * n : 0), C(0));
  parallel_for(0, blocks, 1, [&](Index k0, Index k1) {
    for (Index k = k0; k < k1; ++k) {
      C* pw = want_w ? part_w.data() + k * n : nullptr;
      C* pb = want_b ? part_b.data() + k * n : nullptr;
      for (Index r = rows * k / blocks; r < rows * (k + 1) / blocks; ++r) {
        const T* xr = x + r * n;
        const T* gr = dy + r * n;
        const C mu = center ? mean[r] : C(0), rs = rstd[r];
        const B vmu(mu), vrs(rs);
        C a = C(0), c = C(0);  // mean(g), mean(g * xh)
        if (dx) {
          const NormGradSums s = norm_grad_sums(gr, xr, w, n, mu, rs);
          a = center ? static_cast<C>(s.g / static_cast<double>(n)) : C(0);
          c = static_cast<C>(s.g_xh / static_cast<double>(n));
        }
        const B va(a), vc(c);
        T* dxr = dx ? dx + r * n : nullptr;
        Index i = 0;
        for (; i + W <= n; i += W) {
          const B g = load_batch(gr + i);
          const B xh = (load_batch(xr + i) - vmu) * vrs;
          if (dxr) {
            const B gw = w ? g * load_batch(w + i) : g;
            store_batch(dxr + i, vrs * (gw - va - xh * vc));
          }
          if (pw) xsimd::fma(g, xh, B::load_unaligned(pw + i)).store_unaligned(pw + i);
          if (pb) (B::load_unaligned(pb + i) + g).store_unaligned(pb + i);
        }
        for (; i < n; ++i) {
          const C g = static_cast<C>(gr[i]);
          const C xh = (static_cast<C>(xr[i]) - mu) * rs;
          if (dxr) {
            const C gw = w ? g * static_cast<C>(w[i]) : g;
            dxr[i] = static_cast<T>(rs * (gw - a - xh * c));
          }
          if (pw) pw[i] += g * xh;
          if (pb) pb[i] += g;
        }
      }
    }
  });
  // Partials are added in block order, in double: the result does not depend on the thread count.
  auto total = [&](const std::vector<C>& part, C* out) {
    for (Index j = 0; j < n; ++j) {
      double s = 0.0;
      for (Index k = 0; k < blocks; ++k) s += static_cast<double>(part[static_cast<std::size_t>(k * n + j)]);
      out[j] = static_cast<C>(s);
    }
  };
  if (want_w) total(part_w, dw_out);
  if (want_b) total(part_b, db_out);
}

}  // namespace CERBERUS_SIMD_ABI
}  // namespace cpu_backend

namespace detail {

// x, weight, bias as contiguous tensors (copies outside the tape: the op records its own node).
template <class T, class D>
Tensor<T, D> norm_contiguous(const Tensor<T, D>& t) {
  if (!t.defined()) return t;
  NoGradGuard copy_is_not_recorded;
  return t.contiguous().detach();
}

template <class T, class D>
void check_norm_param(const Tensor<T, D>& x, const Tensor<T, D>& p, const char* op, const char* what) {
  if (!p.defined()) return;
  if (p.rank() != 1 || p.size(0) != x.size(-1))
    throw ShapeError(std::string("[") + op + "] " + what + " must have shape [" + std::to_string(x.size(-1)) +
                     "] (the last extent of x), got " + p.shape().to_string() + " for x of shape " + x.shape().to_string());
}

// layer_norm (center) and rms_norm: shape checks, forward, and the node whose backward is the
// fused kernel above (on cuda: backend/cuda/norm.cuh, the same formulas).
template <FloatElement T, Device D>
Tensor<T, D> norm(const Tensor<T, D>& x_in, const Tensor<T, D>& weight_in, const Tensor<T, D>& bias_in, double eps, bool center,
                  const char* op) {
  using C = compute_t<T>;
  if (!x_in.defined()) throw ValueError(std::string("[") + op + "] x is an undefined tensor");
  if (x_in.rank() < 1) throw ShapeError(std::string("[") + op + "] x needs at least one dimension (channels last), got shape " + x_in.shape().to_string());
  check_norm_param(x_in, weight_in, op, "weight");
  check_norm_param(x_in, bias_in, op, "bias");
  if (!(eps >= 0.0)) throw ValueError(std::string("[") + op + "] eps must be >= 0, got " + std::to_string(eps));

  const Index n = x_in.size(-1), rows = n == 0 ? 0 : x_in.numel() / n;
  const Tensor<T, D> x = norm_contiguous(x_in), w = norm_contiguous(weight_in), b = norm_contiguous(bias_in);
  Tensor<T, D> y = Tensor<T, D>::empty(x.shape());
  auto mean = Tensor<C, D>::empty(Shape{center ? rows : 0});
  auto rstd = Tensor<C, D>::empty(Shape{rows});
  if (rows > 0) {
    if constexpr (std::is_same_v<D, cpu>)
      cpu_backend::norm_forward(x.data(), w.defined() ? w.data() : nullptr, b.defined() ? b.data() : nullptr, y.data(),
                                center ? mean.data() : nullptr, rstd.data(), rows, n, eps, center);
    else
      OpKernels<D>::norm_forward(x.data(), w.defined() ? w.data() : nullptr, b.defined() ? b.data() : nullptr, y.data(),
                                 center ? mean.data() : nullptr, rstd.data(), rows, n, eps, center, op);
  }

  if (autograd::any_requires_grad(x_in, weight_in, bias_in)) {
    const bool need_x = x_in.requires_grad(), need_w = weight_in.requires_grad(), need_b = bias_in.requires_grad();
    // Saved: x, weight, and mean / rstd per row (see the top of this file).
    autograd::record<T, D>(y, op, {x_in, weight_in, bias_in}, [=](const Tensor<T, D>& grad) {
      const Tensor<T, D> dy = norm_contiguous(grad);
      Tensor<T, D> dx, dw, db;
      if (need_x) dx = Tensor<T, D>::empty(x.shape());
      if constexpr (std::is_same_v<D, cpu>) {
        std::vector<C> dw_c, db_c;
        if (need_w) dw_c.resize(static_cast<std::size_t>(n));
        if (need_b) db_c.resize(static_cast<std::size_t>(n));
        if (rows > 0)
          cpu_backend::norm_backward(dy.data(), x.data(), w.defined() ? w.data() : nullptr, center ? mean.data() : nullptr,
                                     rstd.data(), need_x ? dx.data() : nullptr, need_w ? dw_c.data() : nullptr,
                                     need_b ? db_c.data() : nullptr, rows, n, center);
        auto to_tensor = [&](const std::vector<C>& v) {
          auto t = Tensor<T>::empty(Shape{n});
          for (Index j = 0; j < n; ++j) t.data()[j] = static_cast<T>(v[static_cast<std::size_t>(j)]);
          return t;
        };
        if (need_w) dw = to_tensor(dw_c);
        if (need_b) db = to_tensor(db_c);
      } else {
        if (need_w) dw = Tensor<T, D>::empty(Shape{n});
        if (need_b) db = Tensor<T, D>::empty(Shape{n});
        OpKernels<D>::norm_backward(dy.data(), x.data(), w.defined() ? w.data() : nullptr, center ? mean.data() : nullptr,
                                    rstd.data(), need_x ? dx.data() : nullptr, need_w ? dw.data() : nullptr,
                                    need_b ? db.data() : nullptr, rows, n, center, op);
      }
      return std::vector<Tensor<T, D>>{dx, dw, db};
    });
  }
  return y;
}

}  // namespace detail

// Layer normalisation over the last axis (biased variance, as PyTorch). weight and bias are
// optional (undefined tensors). Differentiable in x, weight and bias.
template <FloatElement T, Device D>
Tensor<T, D> layer_norm(const Tensor<T, D>& x, const Tensor<T, D>& weight = {}, const Tensor<T, D>& bias = {}, double eps = 1e-5) {
  return detail::norm(x, weight, bias, eps, true, "layer_norm");
}

// RMS normalisation over the last axis: x / sqrt(mean(x^2) + eps) * weight. weight is optional.
template <FloatElement T, Device D>
Tensor<T, D> rms_norm(const Tensor<T, D>& x, const Tensor<T, D>& weight = {}, double eps = 1e-6) {
  return detail::norm(x, weight, Tensor<T, D>(), eps, false, "rms_norm");
}

}  // namespace cerberus
