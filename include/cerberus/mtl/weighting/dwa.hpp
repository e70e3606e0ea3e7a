// Dynamic Weight Average (Liu, Johns and Davison, "End-to-End Multi-Task Learning with
// Attention", CVPR 2019).
//
// With Lbar_i(e) the average loss of task i over "epoch" e:
//
//   r_i = Lbar_i(e-1) / Lbar_i(e-2)        w_i = K exp(r_i / T) / sum_j exp(r_j / T)
//
// over the K tasks present in the batch, so present weights average 1 (as Equal's). A task whose
// loss falls more slowly gets more weight. During the first two epochs every weight is 1.
//
// The "epoch": `steps_per_epoch` backward() calls (default 1: ratios of the last two steps, the
// usual choice when epochs are long); with steps_per_epoch = 0 an epoch ends only when you call
// end_epoch() (the paper's unit). An epoch's average of task i counts only the steps where task i
// was present; a task missing from one of the last two epochs gets r_i = 1.
//
// State (state.hpp): the current epoch's sums and counts, the last two epochs' averages and the
// epoch counters, saved by save_state as "dwa.*" entries; a resumed run restores them and weighs
// its next step as the uninterrupted run would.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "cerberus/core/error.hpp"
#include "cerberus/mtl/weighting/concept.hpp"
#include "cerberus/mtl/weighting/state.hpp"
#include "cerberus/mtl/weighting/task_gradients.hpp"

namespace cerberus::mtl {

struct DWAOptions {
  double temperature = 2.0;
  std::size_t steps_per_epoch = 1;  // 0: epochs end at end_epoch() only
  bool measure_conflict = false;
};

class DWA {
 public:
  explicit DWA(DWAOptions options = {}) : options_(options) {
    if (!(options.temperature > 0) || !std::isfinite(options.temperature))
      throw ValueError("[DWA] temperature must be finite and > 0, got " + std::to_string(options.temperature));
  }

  // Closes the current epoch: its averages become the newest of the two the weights are built from.
  void end_epoch() {
    std::vector<double> avg(sum_.size(), std::numeric_limits<double>::quiet_NaN());
    for (std::size_t i = 0; i < sum_.size(); ++i)
      if (count_[i] > 0) avg[i] = sum_[i] / static_cast<double>(count_[i]);
    older_ = std::move(newer_);
    newer_ = std::move(avg);
    ++epochs_;
    sum_.assign(sum_.size(), 0.0);
    count_.assign(count_.size(), 0);
    steps_in_epoch_ = 0;
  }
  std::size_t epochs_completed() const { return epochs_; }

  // The weights the next backward uses for these present tasks (all n tasks; absent ones 0).
  std::vector<double> weights(std::size_t n, const std::vector<std::size_t>& present) const {
    std::vector<double> w(n, 0.0);
    if (present.empty()) return w;
    if (epochs_ < 2) {
      for (std::size_t i : present) w[i] = 1.0;
      return w;
    }
    std::vector<double> r;
    double rmax = -std::numeric_limits<double>::infinity();
    for (std::size_t i : present) {
      const double a = i < newer_.size() ? newer_[i] : std::nan(""), b = i < older_.size() ? older_[i] : std::nan("");
      const double ratio = (std::isfinite(a) && std::isfinite(b) && b != 0) ? a / b : 1.0;
      r.push_back(ratio / options_.temperature);
      rmax = std::max(rmax, r.back());
    }
    double z = 0;
    for (double& x : r) z += (x = std::exp(x - rmax));
    for (std::size_t k = 0; k < present.size(); ++k) w[present[k]] = static_cast<double>(present.size()) * r[k] / z;
    return w;
  }

  template <SharedElement T, Device D>
  WeightingReport backward(const TaskLossesOn<D>& l, const nn::ParameterList<T, D>& shared) {
    const std::vector<std::size_t> present = present_tasks(l, "DWA");
    const std::size_t n = l.losses.size();
    if (sum_.size() != n) {
      if (!sum_.empty()) throw ValueError("[DWA] got " + std::to_string(n) + " task losses after steps with " + std::to_string(sum_.size()));
      sum_.assign(n, 0.0);
      count_.assign(n, 0);
    }
    const std::vector<double> w = weights(n, present);
    std::vector<Tensor<float, D>> terms;
    for (std::size_t i : present) terms.push_back(Tensor<float, D>(*l.losses[i] * static_cast<float>(w[i])));
    WeightingReport r = backward_weighted_terms(l, present, terms, w, shared, options_.measure_conflict, gradients_);
    for (std::size_t i : present) {
      sum_[i] += r.losses[i];
      ++count_[i];
    }
    if (options_.steps_per_epoch > 0 && ++steps_in_epoch_ == options_.steps_per_epoch) end_epoch();
    return r;
  }

  void save_state(WeightingState& out, const std::string& prefix = "") const {
    out[prefix + "dwa.sum"] = detail::encode_doubles(sum_);
    out[prefix + "dwa.count"] = detail::encode_integers(count_);
    out[prefix + "dwa.newer"] = detail::encode_doubles(newer_);
    out[prefix + "dwa.older"] = detail::encode_doubles(older_);
    out[prefix + "dwa.epochs"] = std::to_string(epochs_);
    out[prefix + "dwa.steps_in_epoch"] = std::to_string(steps_in_epoch_);
  }
  // Every entry is read and checked before any statistic changes.
  void restore_state(const WeightingState& in, const std::string& prefix = "") {
    const detail::WeightingStateReader read(in, prefix, "DWA");
    std::vector<double> sum = read.numbers("dwa.sum");
    const std::vector<std::uint64_t> count = read.counts("dwa.count", sum.size());
    std::vector<double> newer = read.numbers("dwa.newer"), older = read.numbers("dwa.older");
    // An epoch's averages have one entry per task, or none before the first epoch closed.
    if (!newer.empty() && newer.size() != sum.size()) read.fail("dwa.newer", "expected " + std::to_string(sum.size()) + " values or none");
    if (!older.empty() && older.size() != sum.size()) read.fail("dwa.older", "expected " + std::to_string(sum.size()) + " values or none");
    const std::uint64_t epochs = read.count("dwa.epochs"), steps_in_epoch = read.count("dwa.steps_in_epoch");
    sum_ = std::move(sum);
    count_.assign(count.begin(), count.end());
    newer_ = std::move(newer);
    older_ = std::move(older);
    epochs_ = static_cast<std::size_t>(epochs);
    steps_in_epoch_ = static_cast<std::size_t>(steps_in_epoch);
  }

 private:
  DWAOptions options_;
  std::vector<double> sum_;
  std::vector<std::size_t> count_;
  std::vector<double> newer_, older_;  // the last two epochs' average losses
  std::size_t epochs_ = 0, steps_in_epoch_ = 0;
  SharedGradients gradients_;
};

}  // namespace cerberus::mtl
