// The machinery every weighting shares: checking the task losses, running one backward per task
// to read each task's gradient on the shared parameters (flattened, in double), the Gram matrix
// and cosines of those gradients, and writing a combined gradient back.
//
// Per-task gradients on the shared parameters (K present tasks, D shared elements; float or bf16
// parameters, the gradients always held in double here):
//   bind(shared)       the gradients the shared parameters hold now are set aside and zeroed
//   per_task_backward  for each task k: terms[k].backward(retain_graph = k < K-1), copy the shared
//                      gradients into g_k and zero them. Parameters outside `shared` (heads) keep
//                      accumulating as usual, so each receives its own task's gradient.
//   gram(K)            G_ij = <g_i, g_j>: all the surgery methods need (they return coefficients)
//   restore(c)         shared .grad() = set aside + sum_k c_k g_k
// Cost: K backward passes instead of one (the forward graph is kept until the last), plus K
// copies of D values, K(K+1)/2 dot products of length D and one combining pass.
//
// On a device (cuda) the same arithmetic runs on the host, in double, for correctness first:
// each take(k) copies the D shared gradient values to the host (K copies of 4 D bytes for float,
// 2 D for bf16, each a synchronisation), and restore() builds the combined gradient on the host
// and copies it back (one upload of D values). For a trunk of P shared parameters that is
// (K + 1) P values over the bus per step on top of the K backward passes; plain weightings
// without measure_conflict never come here and stay on the device.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <memory>
#include <type_traits>

#include "cerberus/autograd/grad_mode.hpp"
#include "cerberus/backend/cpu/thread_pool.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/mtl/weighting/concept.hpp"
#include "cerberus/nn/parameter.hpp"
#include "cerberus/ops/reduce.hpp"
#include "cerberus/tensor/factories.hpp"
#include "cerberus/tensor/tensor.hpp"

namespace cerberus::mtl {

// Checks `l` and returns the indices of the tasks present in this batch. `expected` > 0 is the task
// count the weighting was built for.
template <Device D>
std::vector<std::size_t> present_tasks(const TaskLossesOn<D>& l, const char* op, std::size_t expected = 0) {
  const std::string tag = std::string("[") + op + "] ";
  if (l.names.size() != l.losses.size())
    throw ValueError(tag + "got " + std::to_string(l.names.size()) + " task names for " + std::to_string(l.losses.size()) +
                     " task losses; TaskLosses needs one name per loss");
  if (expected != 0 && l.losses.size() != expected)
    throw ValueError(tag + "got " + std::to_string(l.losses.size()) + " task losses but the weighting was built for " +
                     std::to_string(expected) + " tasks");
  std::vector<std::size_t> present;
  for (std::size_t i = 0; i < l.losses.size(); ++i) {
    if (!l.losses[i]) continue;
    const Tensor<float, D>& loss = *l.losses[i];
    if (!loss.defined()) throw ValueError(tag + "the loss of task '" + l.names[i] + "' is an undefined tensor; pass nullopt for an absent task");
    if (loss.numel() != 1)
      throw ShapeError(tag + "the loss of task '" + l.names[i] + "' has shape " + loss.shape().to_string() +
                       "; a task loss must be a one-element tensor");
    if (!loss.requires_grad())
      throw ValueError(tag + "the loss of task '" + l.names[i] +
                       "' does not require grad: no parameter reached it (computed under NoGradGuard, or from constants)");
    present.push_back(i);
  }
  return present;
}

// A report for n tasks with every task absent: losses NaN, weights 0, cosines NaN (or none).
inline WeightingReport empty_report(std::size_t n, bool with_cosine) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  WeightingReport r;
  r.losses.assign(n, nan);
  r.weights.assign(n, 0.0);
  if (with_cosine) r.gradient_cosine.assign(n, std::vector<double>(n, nan));
  return r;
}

// The gradients of the shared parameters as flat vectors in double: one per task, plus the
// gradients held before the step. Parameters may be float or bf16 (SharedElement; one list is
// one type): bf16 gradients are read exactly into double and the combined gradient is written
// back rounded to bf16. Parameters may live on any device (the flat vectors are on the host; see
// the top of this file for the copies a device costs). Frozen parameters (requires_grad off) and repeated entries (tied
// weights) are left out. A weighting keeps one and binds it each step, so its buffers are
// reused: steps after the first touch no fresh memory (a fresh page costs ~12 us here, more
// than the arithmetic). Passes over the elements run on the thread pool; sums use fixed blocks,
// so results do not depend on the thread count.
class SharedGradients {
 public:
  static constexpr Index block = 16384;

  // Takes the parameters of this step and sets the gradients they hold aside (zeroing them), so
  // that the next backward leaves exactly its own gradient.
  template <SharedElement T, Device D>
  void bind(const nn::ParameterList<T, D>& shared) {
    slots_.clear();
    size_ = 0;
    any_stashed_ = false;
    for (const auto& p : nn::unique_parameters(shared)) {
      if (!p.tensor.defined() || !p.tensor.requires_grad()) continue;
      slots_.push_back({std::make_shared<Param<T, D>>(p.tensor), size_, static_cast<std::size_t>(p.tensor.numel()), false});
      size_ += static_cast<std::size_t>(p.tensor.numel());
    }
    for (auto& s : slots_) {
      if (!s.param->has_grad()) continue;
      if (!any_stashed_) stash_.resize(size_);
      any_stashed_ = s.stashed = true;
      s.param->move_grad(stash_.data() + s.offset);
    }
  }
  std::size_t size() const { return size_; }
  // Where a parameter's elements lie in the flat vectors: {offset, count}; {0, 0} if not held.
  template <SharedElement T, Device D>
  std::pair<std::size_t, std::size_t> range_of(const Tensor<T, D>& p) const {
    for (const auto& s : slots_)
      if (s.param->data() == static_cast<const void*>(p.data())) return {s.offset, s.numel};
    return {0, 0};
  }
  // Task k's gradient, as left by take(k).
  const std::vector<double>& task(std::size_t k) const { return tasks_[k]; }

  // Copies the gradients the parameters hold now into task k's vector (zeros where none) and
  // zeroes them.
  void take(std::size_t k) {
    if (tasks_.size() <= k) tasks_.resize(k + 1);
    tasks_[k].resize(size_);
    for (auto& s : slots_)
      if (!s.param->move_grad(tasks_[k].data() + s.offset)) std::fill_n(tasks_[k].data() + s.offset, s.numel, 0.0);
  }

  // G[i][j] = <g_i, g_j> over the first K tasks.
  std::vector<std::vector<double>> gram(std::size_t K) const {
    const Index blocks = (static_cast<Index>(size_) + block - 1) / block;
    const std::size_t pairs = K * (K + 1) / 2;
    std::vector<double> partial(static_cast<std::size_t>(blocks) * pairs, 0.0);
    parallel_for(0, blocks, 1, [&](Index b, Index e) {
      for (Index blk = b; blk < e; ++blk) {
        const std::size_t lo = static_cast<std::size_t>(blk * block), hi = std::min(size_, lo + static_cast<std::size_t>(block));
        double* out = partial.data() + static_cast<std::size_t>(blk) * pairs;
        std::size_t pair = 0;
        for (std::size_t i = 0; i < K; ++i)
          for (std::size_t j = i; j < K; ++j, ++pair) {
            const double *a = tasks_[i].data(), *c = tasks_[j].data();
            double sum = 0;
            for (std::size_t x = lo; x < hi; ++x) sum += a[x] * c[x];
            out[pair] = sum;
          }
      }
    });
    std::vector<std::vector<double>> G(K, std::vector<double>(K, 0.0));
    for (Index blk = 0; blk < blocks; ++blk) {
      std::size_t pair = 0;
      for (std::size_t i = 0; i < K; ++i)
        for (std::size_t j = i; j < K; ++j, ++pair) G[i][j] += partial[static_cast<std::size_t>(blk) * pairs + pair];
    }
    for (std::size_t i = 0; i < K; ++i)
      for (std::size_t j = 0; j < i; ++j) G[i][j] = G[j][i];
    return G;
  }

  // Sets every shared gradient to the one set aside plus sum_k c[k] g_k (in one pass, summed in
  // double, then rounded to the parameter's type).
  void restore(const std::vector<double>& c) {
    for (auto& s : slots_) s.param->restore(s.stashed ? stash_.data() + s.offset : nullptr, tasks_, s.offset, s.numel, c);
  }

 private:
  // One shared parameter, its element type and device erased (float or bf16; cpu or a device).
  struct ParamBase {
    virtual ~ParamBase() = default;
    virtual const void* data() const = 0;
    virtual bool has_grad() const = 0;
    // Copies the gradient into `out` (exactly, in double) and zeroes it; false when it has none.
    virtual bool move_grad(double* out) const = 0;
    // gradient = stash (or 0) + sum_k c[k] tasks[k][offset ..], rounded to the parameter's type.
    virtual void restore(const double* stash, const std::vector<std::vector<double>>& tasks, std::size_t offset, std::size_t numel,
                         const std::vector<double>& c) const = 0;
  };
  template <SharedElement T, Device D>
  struct Param final : ParamBase {
    Tensor<T, D> tensor;
    explicit Param(Tensor<T, D> t) : tensor(std::move(t)) {}
    const void* data() const override { return tensor.data(); }
    bool has_grad() const override { return tensor.grad().defined(); }
    bool move_grad(double* out) const override {
      const auto g = tensor.grad();
      if (!g.defined()) return false;
      const Tensor<T, cpu> src = [&] {  // gradients are contiguous (AccumulateGrad adopts or clones)
        if constexpr (std::is_same_v<D, cpu>) return g.contiguous();
        else return g.template to<cpu>();  // a device gradient: one copy to the host
      }();
      const T* in = src.data();
      parallel_for(0, src.numel(), block, [&](Index b, Index e) {
        for (Index x = b; x < e; ++x) out[x] = static_cast<double>(static_cast<float>(in[x]));
      });
      tensor.zero_grad();
      return true;
    }
    void restore(const double* stash, const std::vector<std::vector<double>>& tasks, std::size_t offset, std::size_t numel,
                 const std::vector<double>& c) const override {
      const std::size_t K = c.size();
      Tensor<T, D> g = tensor.grad();
      if (!g.defined()) {
        bool zero = true;  // no task reached this parameter and nothing was set aside
        for (std::size_t k = 0; k < K && zero; ++k)
          for (std::size_t e = 0; e < numel && zero; ++e) zero = c[k] * tasks[k][offset + e] == 0.0;
        if (zero) return;
        make_grad(tensor);
        g = tensor.grad();
      }
      const bool direct = std::is_same_v<D, cpu> && g.is_contiguous();  // a device gradient is built on the host, then copied
      std::vector<T> staging(direct ? 0 : numel);
      T* out = direct ? g.data() : staging.data();
      parallel_for(0, static_cast<Index>(numel), block, [&](Index b, Index e) {
        for (Index x = b; x < e; ++x) {
          double v = stash ? stash[x] : 0.0;
          for (std::size_t k = 0; k < K; ++k) v += c[k] * tasks[k][offset + static_cast<std::size_t>(x)];
          out[x] = static_cast<T>(static_cast<float>(v));
        }
      });
      if (!direct) {
        NoGradGuard no_grad;
        if constexpr (std::is_same_v<D, cpu>) g.assign(from_vector<T>(staging, g.shape()));
        else g.assign(from_vector<T>(staging, g.shape()).template to<D>());
      }
    }
    // Gives a parameter a zero gradient through the tape (the only writer of .grad()).
    static void make_grad(const Tensor<T, D>& p) {
      const auto zero = sum(p * 0.0f);
      zero.backward();
    }
  };
  struct Slot {
    std::shared_ptr<const ParamBase> param;
    std::size_t offset, numel;
    bool stashed;
  };
  std::vector<Slot> slots_;
  std::size_t size_ = 0;
  bool any_stashed_ = false;
  std::vector<double> stash_;
  std::vector<std::vector<double>> tasks_;
};

// Runs terms[k].backward() one task at a time (retaining the graph until the last) and leaves
// each task's gradient on the shared parameters in shared.task(k). Bind `shared` first.
template <Device D>
void per_task_backward(const std::vector<Tensor<float, D>>& terms, SharedGradients& shared) {
  for (std::size_t k = 0; k < terms.size(); ++k) {
    terms[k].backward(/*retain_graph=*/k + 1 < terms.size());
    shared.take(k);
  }
}

inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// The N x N cosine matrix from the Gram matrix of the present tasks: NaN for absent tasks, 0
// where a gradient is zero, 1 on the diagonal of a nonzero gradient.
inline std::vector<std::vector<double>> cosine_matrix(std::size_t n, const std::vector<std::size_t>& present,
                                                      const std::vector<std::vector<double>>& G) {
  std::vector<std::vector<double>> c(n, std::vector<double>(n, std::numeric_limits<double>::quiet_NaN()));
  for (std::size_t a = 0; a < present.size(); ++a)
    for (std::size_t b = 0; b < present.size(); ++b) {
      const double na = std::sqrt(G[a][a]), nb = std::sqrt(G[b][b]);
      c[present[a]][present[b]] = (na > 0 && nb > 0) ? (a == b ? 1.0 : G[a][b] / (na * nb)) : 0.0;
    }
  return c;
}

// The backward of a plain weighting: terms[k] is present task k's weighted loss (w_k L_k, or a
// learned form), weights[i] the weight of task i (all n tasks; absent ones are reported as 0).
// Without conflict measurement: one backward of sum_k terms[k]. With it: one backward per task
// (the cosines need each task's own shared gradient) and the shared gradients summed in double.
template <SharedElement T, Device D>
WeightingReport backward_weighted_terms(const TaskLossesOn<D>& l, const std::vector<std::size_t>& present,
                                        const std::vector<Tensor<float, D>>& terms, const std::vector<double>& weights,
                                        const nn::ParameterList<T, D>& shared, bool measure_conflict, SharedGradients& grads) {
  WeightingReport r = empty_report(l.losses.size(), measure_conflict);
  for (std::size_t k = 0; k < present.size(); ++k) {
    r.losses[present[k]] = static_cast<double>(l.losses[present[k]]->item());
    r.weights[present[k]] = weights[present[k]];
  }
  if (present.empty()) return r;
  if (!measure_conflict) {
    Tensor<float, D> total = terms[0];
    for (std::size_t k = 1; k < terms.size(); ++k) total = Tensor<float, D>(total + terms[k]);
    r.total = static_cast<double>(total.item());
    total.backward();
    return r;
  }
  {
    NoGradGuard no_grad;
    Tensor<float, D> total = terms[0].detach();
    for (std::size_t k = 1; k < terms.size(); ++k) total = Tensor<float, D>(total + terms[k].detach());
    r.total = static_cast<double>(total.item());
  }
  grads.bind(shared);
  per_task_backward(terms, grads);
  r.gradient_cosine = cosine_matrix(l.losses.size(), present, grads.gram(terms.size()));
  grads.restore(std::vector<double>(terms.size(), 1.0));
  return r;
}

// The backward of a gradient-surgery weighting: one backward per present task at weight 1 (heads
// get their own task's plain gradient), then `coefficients(G, present)` (G = the Gram matrix of
// the present tasks' shared gradients) gives c with shared gradient = sum_k c[k] g_k.
template <SharedElement T, Device D, class Coefficients>
WeightingReport surgery_backward(const TaskLossesOn<D>& l, const nn::ParameterList<T, D>& shared, const char* op, SharedGradients& grads,
                                 Coefficients&& coefficients) {
  const std::vector<std::size_t> present = present_tasks(l, op);
  WeightingReport r = empty_report(l.losses.size(), true);
  if (present.empty()) return r;
  std::vector<Tensor<float, D>> terms;
  for (std::size_t i : present) {
    terms.push_back(*l.losses[i]);
    r.losses[i] = static_cast<double>(l.losses[i]->item());
    r.total += r.losses[i];
  }
  grads.bind(shared);
  per_task_backward(terms, grads);
  const auto G = grads.gram(terms.size());
  const std::vector<double> c = coefficients(G, present);
  for (std::size_t k = 0; k < present.size(); ++k) r.weights[present[k]] = c[k];
  r.gradient_cosine = cosine_matrix(l.losses.size(), present, G);
  grads.restore(c);
  return r;
}

}  // namespace cerberus::mtl
