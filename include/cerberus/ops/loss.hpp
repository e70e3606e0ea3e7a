// Cross-entropy over a vocabulary: fused log-softmax + negative log-likelihood, forward and
// backward side by side.
//
// Shapes (legend: N = rows = tokens, V = vocabulary, B = batch, T = time):
//   cross_entropy(logits [N, V] or [B, T, V] (any [..., V]), targets int64 [N] or [B, T], options)
//     reduction mean / sum -> [] (rank 0);  none -> logits' shape without V ([N] or [B, T])
//   options.weights: float [N] or [B, T] (the targets' shape), per-token weights; not differentiated.
//
// Per row r with target t, p = softmax(logits[r]) and smoothing e (label_smoothing):
//   loss_r = (1 - e) (-log p_t) + e (-(1/V) sum_j log p_j)       (PyTorch's label smoothing)
//          = log_sum + (1 - e) (shift - x_t) + e (shift - mean(x)),   lse = shift + log_sum
// reduction mean: sum_r w_r loss_r / sum_r w_r over rows whose target is not ignore_index
// (w_r = 1 without weights; PyTorch's mean over non-ignored tokens); sum: sum_r w_r loss_r;
// none: w_r loss_r per row. Ignored rows contribute 0 and get zero gradient. When no row counts
// (every target ignored, or the weights sum to 0) the mean is 0 with zero gradients rather than
// PyTorch's 0/0 = NaN: a fully masked batch of one task must not poison a multi-task step.
//
// Saved for backward: logits (a handle), targets, weights, and per row the logsumexp, kept as
// two numbers of the compute type, shift (the row max) and log_sum = log(sum exp(x - shift)):
// the backward's x - lse = (x - shift) - log_sum is then exact even for logits around 1e4, where
// a single rounded lse would be off by half an ulp of 1e4. The [N, V] probabilities are never
// stored: the backward recomputes them in its one pass,
//   dlogits = (softmax - (1 - e) onehot(t) - e / V) * w_r * scale_r * upstream
// (scale_r = 1 / sum w for mean, 1 for sum). bf16 logits are computed in float, and the loss is
// returned in float (the compute type): a mixed-precision model reports and weights its losses
// with float's precision, while the gradient flows back to the logits as bf16.
//
// Errors: a target outside [0, V) that is not ignore_index throws IndexError naming the op, the
// row and the value; shape mismatches throw ShapeError with both shapes.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "cerberus/autograd/node.hpp"
#include "cerberus/backend/cpu/backend.hpp"
#include "cerberus/backend/cpu/thread_pool.hpp"
#include "cerberus/core/dtype.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/core/math.hpp"
#include "cerberus/backend/op_kernels.hpp"
#include "cerberus/core/simd.hpp"
#include "cerberus/ops/reduce.hpp"  // reduce_span, MaxReducer, load_batch, store_batch, reduce_block
#include "cerberus/tensor/tensor.hpp"

namespace cerberus {

// How per-element losses are combined.
enum class Reduction { none, mean, sum };

struct CrossEntropyOptions {
  std::int64_t ignore_index = -100;  // rows with this target are skipped
  double label_smoothing = 0.0;      // e in [0, 1]
  Tensor<float> weights = {};        // optional per-token weights, the targets' shape
  Reduction reduction = Reduction::mean;
};

namespace cpu_backend {
inline namespace CERBERUS_SIMD_ABI {

// Elements per task (exp dominates, as in softmax).
inline constexpr Index cross_entropy_grain = 16 * 1024;

// Per-row statistics of the forward, kept for the backward.
template <class C>
struct CrossEntropyRow {
  C shift;    // the row max; 0 when that is not finite (as softmax.hpp: an all -inf row sums to 0, not NaN)
  C log_sum;  // log(sum exp(x - shift))
};

// Sum of exp(x[i] - shift) over one row, prefetching the row after it (`next`, null for the
// last): the row's own max pass streamed it from memory and this pass reads it from L1, so
// without the prefetch the memory would sit idle during the exps (measured on a 4096 x 8000
// float forward: 24 ms -> 16 ms of CPU time on one thread).
template <class T>
double cross_entropy_sum_exp(const T* x, Index n, compute_t<T> shift, const T* next) {
  using C = compute_t<T>;
  using B = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(B::size);
  constexpr Index line = 64 / static_cast<Index>(sizeof(T));  // elements per cache line
  const B vs(shift);
  double total = 0.0;
  for (Index b0 = 0; b0 < n; b0 += reduce_block) {
    const Index b1 = std::min(n, b0 + reduce_block);
    B a0(C(0)), a1(C(0));
    Index i = b0;
    for (; i + 2 * W <= b1; i += 2 * W) {
      if (next)
        for (Index p = 0; p < 2 * W; p += line) __builtin_prefetch(next + i + p, 0, 3);
      a0 += xsimd::exp(load_batch(x + i) - vs);
      a1 += xsimd::exp(load_batch(x + i + W) - vs);
    }
    C part = simd::reduce_add(a0 + a1);
    for (; i < b1; ++i) part += math::exp(static_cast<C>(x[i]) - shift);
    total += static_cast<double>(part);
  }
  return total;
}

// Forward over a contiguous [rows, v] x. target[r] is a valid class or `ignore`. loss[r] gets
// the unweighted loss of row r (0 when ignored), stats[r] the row's logsumexp parts.
template <class T>
void cross_entropy_forward(const T* x, const std::int64_t* target, Index rows, Index v, std::int64_t ignore, double smoothing,
                           double* loss, CrossEntropyRow<compute_t<T>>* stats) {
  using C = compute_t<T>;
  using B = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(B::size);
  parallel_for(0, rows, std::max<Index>(1, cross_entropy_grain / v), [&](Index r0, Index r1) {
    for (Index r = r0; r < r1; ++r) {
      const std::int64_t t = target[r];
      if (t == ignore) {
        loss[r] = 0.0;
        stats[r] = {C(0), C(0)};
        continue;
      }
      const T* xr = x + r * v;
      const C max = reduce_span<MaxReducer<C>>(xr, v);
      const C shift = std::isfinite(max) ? max : C(0);
      const double sum_exp = cross_entropy_sum_exp(xr, v, shift, r + 1 < rows ? xr + v : nullptr);
      const C log_sum = static_cast<C>(std::log(sum_exp));
      stats[r] = {shift, log_sum};
      double l = static_cast<double>(log_sum) + (1.0 - smoothing) * (static_cast<double>(shift) - static_cast<double>(static_cast<C>(xr[t])));
      if (smoothing != 0.0) {
        // sum(x - shift): small numbers even when the logits sit around 1e4. Lanes are folded
        // into a double every reduce_block elements.
        const B vs(shift);
        double below = 0.0;  // <= 0
        for (Index b0 = 0; b0 < v; b0 += reduce_block) {
          const Index b1 = std::min(v, b0 + reduce_block);
          B acc(C(0));
          Index i = b0;
          for (; i + W <= b1; i += W) acc += load_batch(xr + i) - vs;
          C part = simd::reduce_add(acc);
          for (; i < b1; ++i) part += static_cast<C>(xr[i]) - shift;
          below += static_cast<double>(part);
        }
        l += smoothing * (-below / static_cast<double>(v));
      }
      loss[r] = l;
    }
  });
}

// Backward: dx[r] = (softmax(x[r]) - (1 - e) onehot(t) - e / V) * coef[r]; rows with coef 0
// (ignored, zero weight) get zeros. One pass per row: exp, scale, store. dx may be x itself
// (linear_cross_entropy turns a block of logits into its gradient in place): each row reads its
// target's logit before the pass overwrites it.
template <class T>
void cross_entropy_backward(const T* x, const std::int64_t* target, const CrossEntropyRow<compute_t<T>>* stats, const double* coef,
                            Index rows, Index v, double smoothing, T* dx) {
  using C = compute_t<T>;
  using B = xsimd::batch<C>;
  constexpr Index W = static_cast<Index>(B::size);
  parallel_for(0, rows, std::max<Index>(1, cross_entropy_grain / v), [&](Index r0, Index r1) {
    for (Index r = r0; r < r1; ++r) {
      T* dr = dx + r * v;
      if (coef[r] == 0.0) {
        std::memset(static_cast<void*>(dr), 0, static_cast<std::size_t>(v) * sizeof(T));
        continue;
      }
      const T* xr = x + r * v;
      const std::int64_t t = target[r];
      const C x_target = static_cast<C>(xr[t]);
      const C k = static_cast<C>(coef[r]);
      const C off = static_cast<C>(smoothing / static_cast<double>(v) * coef[r]);
      const C shift = stats[r].shift, log_sum = stats[r].log_sum;
      const B vk(k), voff(off), vs(shift), vl(log_sum);
      const T* next = r + 1 < rows ? xr + v : nullptr;  // prefetched while this row computes (see above)
      constexpr Index line = 64 / static_cast<Index>(sizeof(T));
      Index i = 0;
      for (; i + W <= v; i += W) {
        if (next)
          for (Index p = 0; p < W; p += line) __builtin_prefetch(next + i + p, 0, 3);
        store_batch(dr + i, xsimd::fms(xsimd::exp((load_batch(xr + i) - vs) - vl), vk, voff));
      }
      for (; i < v; ++i) dr[i] = static_cast<T>(math::exp((static_cast<C>(xr[i]) - shift) - log_sum) * k - off);
      // The target's element again, with its one-hot term, rounded once.
      dr[t] = static_cast<T>(math::exp((x_target - shift) - log_sum) * k - off - static_cast<C>((1.0 - smoothing) * coef[r]));
    }
  });
}

}  // namespace CERBERUS_SIMD_ABI
}  // namespace cpu_backend

namespace detail {

// The leading shape of logits [..., V]: the shape targets and weights must have.
inline Shape cross_entropy_rows_shape(const Shape& logits) {
  Shape s = logits;
  s.erase(s.rank() - 1);
  return s;
}

// targets / weights may have the leading shape or be flat [N].
inline void check_cross_entropy_rows(const Shape& logits, const Shape& given, const char* what, const char* op = "cross_entropy") {
  const Shape rows = cross_entropy_rows_shape(logits);
  if (given == rows || (given.rank() == 1 && given[0] == rows.numel())) return;
  throw ShapeError(std::string("[") + op + "] " + what + " of shape " + given.to_string() + " do not fit logits of shape " +
                   logits.to_string() + " (expected " + rows.to_string() + " or [" + std::to_string(rows.numel()) + "])");
}

// The CPU path's view of the targets: a private copy (N integers: a later in-place change cannot
// send the backward out of range), each row's weight (0 for an ignored row) and their total over
// the counted rows. Targets are checked before any work, in row order, so the first bad row is
// the one reported.
struct CrossEntropyRowWeights {
  Tensor<std::int64_t> targets;
  std::vector<double> weights;
  double total = 0.0;
};

inline CrossEntropyRowWeights cross_entropy_row_weights(const Tensor<std::int64_t>& targets, const CrossEntropyOptions& options, Index rows,
                                                        Index v, const Shape& logits_shape, const char* op) {
  CrossEntropyRowWeights out;
  out.weights.assign(static_cast<std::size_t>(rows), 1.0);
  {
    NoGradGuard copies_are_not_recorded;
    out.targets = targets.clone();
    if (options.weights.defined()) {
      const Tensor<float> wt = options.weights.contiguous();
      for (Index r = 0; r < rows; ++r) out.weights[static_cast<std::size_t>(r)] = static_cast<double>(wt.data()[r]);
    }
  }
  const std::int64_t* t = out.targets.data();
  for (Index r = 0; r < rows; ++r) {
    if (t[r] == options.ignore_index) {
      out.weights[static_cast<std::size_t>(r)] = 0.0;
      continue;
    }
    if (t[r] < 0 || t[r] >= v)
      throw IndexError(std::string("[") + op + "] target " + std::to_string(t[r]) + " at row " + std::to_string(r) +
                       " is out of range for " + std::to_string(v) + " classes (logits of shape " + logits_shape.to_string() +
                       ", ignore_index " + std::to_string(options.ignore_index) + ")");
    out.total += out.weights[static_cast<std::size_t>(r)];
  }
  return out;
}

// sum_r w_r loss_r in row order (the same for any thread count), times the mean's scale.
inline double cross_entropy_total(const std::vector<double>& weights, const std::vector<double>& loss, double scale) {
  double total = 0.0;
  for (std::size_t r = 0; r < loss.size(); ++r) total += weights[r] * loss[r];
  return total * scale;
}

// The mean's scale 1 / sum w (0 when no row counts, see the top of this file); 1 for sum / none.
inline double cross_entropy_scale(Reduction reduction, double weight_total) {
  return reduction == Reduction::mean ? (weight_total != 0.0 ? 1.0 / weight_total : 0.0) : 1.0;
}

}  // namespace detail

namespace detail {

// cross_entropy on a device other than the CPU (backend/cuda/norm.cuh has the kernels): the
// loss, its reduction and the backward stay on the device, and the one synchronisation is the
// read of the target check (the first row whose target is out of range, if any), so that a bad
// target still throws here, naming its row, before anything uses the loss. The reduction adds
// rows in a fixed tree rather than the CPU's row order: the two agree to double rounding.
template <FloatElement T, Device D>
Tensor<compute_t<T>, D> cross_entropy_on_device(const Tensor<T, D>& logits, const Tensor<std::int64_t, D>& targets,
                                                const CrossEntropyOptions& options, Index rows, Index v, const Shape& row_shape) {
  using C = compute_t<T>;
  const double e = options.label_smoothing;
  const bool per_row = options.reduction == Reduction::none;
  Tensor<T, D> x;
  Tensor<std::int64_t, D> tgt;
  Tensor<float, D> weights;
  auto stats = Tensor<C, D>::empty(Shape{rows, 2});
  auto row_weight = Tensor<double, D>::empty(Shape{rows});
  auto scale_and_total = Tensor<double, D>::empty(Shape{2});
  Tensor<C, D> out = Tensor<C, D>::empty(per_row ? row_shape : Shape{});
  {
    NoGradGuard copies_are_not_recorded;
    x = logits.contiguous().detach();
    tgt = targets.clone();  // N integers: a later in-place change cannot send the backward out of range
    if (options.weights.defined()) weights = options.weights.contiguous().template to<D>();
  }
  if (rows > 0) {
    auto first_bad = Tensor<std::int64_t, D>::empty(Shape{1});
    first_bad.fill(rows);
    auto loss = Tensor<double, D>::empty(Shape{rows});
    OpKernels<D>::cross_entropy_forward(x.data(), tgt.data(), weights.defined() ? weights.data() : nullptr, rows, v, options.ignore_index, e,
                                        loss.data(), stats.data(), row_weight.data(),
                                        reinterpret_cast<unsigned long long*>(first_bad.data()));
    const std::int64_t bad_row = first_bad.to_vector()[0];
    if (bad_row < rows) {
      std::int64_t bad_target = 0;
      Backend<D>::copy_to_host(&bad_target, tgt.data() + bad_row, sizeof bad_target);
      throw IndexError("[cross_entropy] target " + std::to_string(bad_target) + " at row " + std::to_string(bad_row) +
                       " is out of range for " + std::to_string(v) + " classes (logits of shape " + logits.shape().to_string() +
                       ", ignore_index " + std::to_string(options.ignore_index) + ")");
    }
    if (per_row) OpKernels<D>::cross_entropy_rows(loss.data(), row_weight.data(), rows, out.data());
    else OpKernels<D>::cross_entropy_reduce(loss.data(), row_weight.data(), rows, options.reduction == Reduction::mean, scale_and_total.data(), out.data());
  } else {
    out.fill(C(0));
  }

  if (autograd::any_requires_grad(logits)) {
    auto backward = [x, tgt, stats, row_weight, scale_and_total, per_row, e, rows, v](const Tensor<C, D>& grad) {
      const Tensor<C, D> upstream = grad.contiguous();
      Tensor<T, D> dx = Tensor<T, D>::empty(x.shape());
      OpKernels<D>::cross_entropy_backward(x.data(), tgt.data(), stats.data(), row_weight.data(), per_row ? nullptr : scale_and_total.data(),
                                           upstream.data(), per_row, rows, v, e, dx.data());
      return std::vector<Tensor<T, D>>{dx};
    };
    if constexpr (std::is_same_v<C, T>) autograd::record<T, D>(out, "cross_entropy", {logits}, std::move(backward));
    else autograd::record_mixed<C, T, D>(out, "cross_entropy", {logits}, std::move(backward));
  }
  return out;
}

}  // namespace detail

// Cross-entropy of logits [..., V] against int64 class targets; see the top of this file for
// shapes, reductions and label smoothing. Differentiable in logits.
//
// On cuda, logits and targets live on the device and options.weights stays a host tensor (copied
// to the device); detail::cross_entropy_on_device above keeps the whole op there.
template <FloatElement T, Device D>
Tensor<compute_t<T>, D> cross_entropy(const Tensor<T, D>& logits, const Tensor<std::int64_t, D>& targets, const CrossEntropyOptions& options = {}) {
  using C = compute_t<T>;
  if (!logits.defined() || !targets.defined()) throw ValueError("[cross_entropy] logits and targets must be defined tensors");
  if (logits.rank() < 2)
    throw ShapeError("[cross_entropy] logits must be [N, V] or [B, T, V], got shape " + logits.shape().to_string());
  detail::check_cross_entropy_rows(logits.shape(), targets.shape(), "targets");
  if (options.weights.defined()) detail::check_cross_entropy_rows(logits.shape(), options.weights.shape(), "weights");
  const double e = options.label_smoothing;
  if (!(e >= 0.0 && e <= 1.0)) throw ValueError("[cross_entropy] label_smoothing must be in [0, 1], got " + std::to_string(e));

  const Index v = logits.size(-1), rows = logits.numel() / std::max<Index>(v, 1);
  const Shape row_shape = detail::cross_entropy_rows_shape(logits.shape());
  if (v == 0 && row_shape.numel() > 0)
    throw ShapeError("[cross_entropy] logits of shape " + logits.shape().to_string() + " have no classes (V = 0)");

  if constexpr (!std::is_same_v<D, cpu>) {
    return detail::cross_entropy_on_device(logits, targets, options, rows, v, row_shape);
  } else {
    detail::CrossEntropyRowWeights row_weights = detail::cross_entropy_row_weights(targets, options, rows, v, logits.shape(), "cross_entropy");
    const Tensor<std::int64_t> tgt = row_weights.targets;
    const std::int64_t* t = tgt.data();
    std::vector<double> w = std::move(row_weights.weights);
    Tensor<T> x;
    {
      NoGradGuard copies_are_not_recorded;
      x = logits.contiguous().detach();
    }

    std::vector<double> loss(static_cast<std::size_t>(rows));
    std::vector<cpu_backend::CrossEntropyRow<C>> stats(static_cast<std::size_t>(rows));  // per row (shift, log_sum)
    if (rows > 0) cpu_backend::cross_entropy_forward(x.data(), t, rows, v, options.ignore_index, e, loss.data(), stats.data());

    const Reduction reduction = options.reduction;
    const double scale = detail::cross_entropy_scale(reduction, row_weights.total);
    Tensor<C> out;
    if (reduction == Reduction::none) {
      out = Tensor<C>::empty(row_shape);
      for (Index r = 0; r < rows; ++r) {
        const std::size_t i = static_cast<std::size_t>(r);
        out.data()[r] = static_cast<C>(w[i] * loss[i]);
      }
    } else {
      out = Tensor<C>::empty(Shape{});
      out.data()[0] = static_cast<C>(detail::cross_entropy_total(w, loss, scale));
    }

    if (autograd::any_requires_grad(logits)) {
      // Saved: logits, targets, the row weights and the split logsumexp per row.
      auto backward = [x, tgt, w = std::move(w), stats = std::move(stats), scale, reduction, e, rows, v](const Tensor<C>& grad) {
        std::vector<double> coef(static_cast<std::size_t>(rows));
        const Tensor<C> g = grad.contiguous();
        for (Index r = 0; r < rows; ++r) {
          const double up = static_cast<double>(g.data()[reduction == Reduction::none ? r : 0]);
          coef[static_cast<std::size_t>(r)] = w[static_cast<std::size_t>(r)] * scale * up;
        }
        Tensor<T> dx = Tensor<T>::empty(x.shape());
        if (rows > 0) cpu_backend::cross_entropy_backward(x.data(), tgt.data(), stats.data(), coef.data(), rows, v, e, dx.data());
        return std::vector<Tensor<T>>{dx};
      };
      if constexpr (std::is_same_v<C, T>) autograd::record<T, cpu>(out, "cross_entropy", {logits}, std::move(backward));
      else autograd::record_mixed<C, T, cpu>(out, "cross_entropy", {logits}, std::move(backward));
    }
    return out;
  }
}

}  // namespace cerberus
