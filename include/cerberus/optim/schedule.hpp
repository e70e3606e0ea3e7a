// Learning-rate schedules: small value types with `double lr_at(std::int64_t step) const`.
//
// `step` is the number of optimizer steps already taken (optimizer.step_count() before the
// step), so the first update uses lr_at(0). Warm-up is linear and never starts at zero:
// lr_at(s) = peak * (s + 1) / warmup_steps for s < warmup_steps, so update number
// warmup_steps (s = warmup_steps - 1) is the first at the peak. Decay then runs from the peak at
// s = warmup_steps to peak * min_ratio at s = total_steps, and stays there.
//
// apply_schedule(schedule, optimizer) sets the optimizer's lr for its next step; call it before
// each optimizer.step(). Resumed training (load_state restores step_count) picks up the same lr.
#pragma once

#include <algorithm>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <numbers>
#include <string>
#include <variant>

#include "cerberus/core/error.hpp"

namespace cerberus::optim {

namespace detail {
inline void check_schedule(bool ok, const char* op, const std::string& message) {
  if (!ok) throw ValueError(std::string("[") + op + "] " + message);
}
inline void check_step(std::int64_t step, const char* op) {
  check_schedule(step >= 0, op, "lr_at needs a step >= 0, got " + std::to_string(step));
}
inline void check_peak(double lr, const char* op) {
  check_schedule(lr >= 0 && std::isfinite(lr), op, "learning rate must be finite and >= 0, got " + std::to_string(lr));
}
// Fraction of the decay done at `step`, in [0, 1].
inline double decay_progress(std::int64_t step, std::int64_t warmup, std::int64_t total) {
  if (step >= total) return 1.0;
  return static_cast<double>(step - warmup) / static_cast<double>(total - warmup);
}
}  // namespace detail

// The same lr at every step.
class ConstantLr {
 public:
  explicit ConstantLr(double lr) : lr_(lr) { detail::check_peak(lr, "ConstantLr"); }
  double lr_at(std::int64_t step) const {
    detail::check_step(step, "ConstantLr");
    return lr_;
  }

 private:
  double lr_;
};

// Linear warm-up to `peak_lr`, then linear decay to peak_lr * min_ratio at total_steps.
class WarmupLinear {
 public:
  WarmupLinear(double peak_lr, std::int64_t warmup_steps, std::int64_t total_steps, double min_ratio = 0.0)
      : peak_(peak_lr), warmup_(warmup_steps), total_(total_steps), min_ratio_(min_ratio) {
    detail::check_peak(peak_lr, "WarmupLinear");
    detail::check_schedule(warmup_steps >= 0 && total_steps > warmup_steps, "WarmupLinear",
                           "needs 0 <= warmup_steps < total_steps, got warmup_steps " + std::to_string(warmup_steps) +
                               " and total_steps " + std::to_string(total_steps));
    detail::check_schedule(min_ratio >= 0 && min_ratio <= 1, "WarmupLinear", "min_ratio must be in [0, 1], got " + std::to_string(min_ratio));
  }
  double lr_at(std::int64_t step) const {
    detail::check_step(step, "WarmupLinear");
    if (step < warmup_) return peak_ * static_cast<double>(step + 1) / static_cast<double>(warmup_);
    const double p = detail::decay_progress(step, warmup_, total_);
    return peak_ * (min_ratio_ + (1.0 - min_ratio_) * (1.0 - p));
  }

 private:
  double peak_;
  std::int64_t warmup_, total_;
  double min_ratio_;
};

// Linear warm-up to `peak_lr`, then half a cosine down to peak_lr * min_ratio at total_steps.
class WarmupCosine {
 public:
  WarmupCosine(double peak_lr, std::int64_t warmup_steps, std::int64_t total_steps, double min_ratio = 0.0)
      : peak_(peak_lr), warmup_(warmup_steps), total_(total_steps), min_ratio_(min_ratio) {
    detail::check_peak(peak_lr, "WarmupCosine");
    detail::check_schedule(warmup_steps >= 0 && total_steps > warmup_steps, "WarmupCosine",
                           "needs 0 <= warmup_steps < total_steps, got warmup_steps " + std::to_string(warmup_steps) +
                               " and total_steps " + std::to_string(total_steps));
    detail::check_schedule(min_ratio >= 0 && min_ratio <= 1, "WarmupCosine", "min_ratio must be in [0, 1], got " + std::to_string(min_ratio));
  }
  double lr_at(std::int64_t step) const {
    detail::check_step(step, "WarmupCosine");
    if (step < warmup_) return peak_ * static_cast<double>(step + 1) / static_cast<double>(warmup_);
    const double p = detail::decay_progress(step, warmup_, total_);
    return peak_ * (min_ratio_ + (1.0 - min_ratio_) * 0.5 * (1.0 + std::cos(std::numbers::pi * p)));
  }

 private:
  double peak_;
  std::int64_t warmup_, total_;
  double min_ratio_;
};

// Linear warm-up to `peak_lr`, then peak_lr * sqrt(warmup_steps / (step + 1)) (the Transformer
// paper's "Noam" schedule, fairseq's inverse_sqrt): continuous at the peak, no end.
// warmup_steps = 0 is allowed and gives peak_lr / sqrt(step + 1).
class InverseSqrt {
 public:
  InverseSqrt(double peak_lr, std::int64_t warmup_steps) : peak_(peak_lr), warmup_(warmup_steps) {
    detail::check_peak(peak_lr, "InverseSqrt");
    detail::check_schedule(warmup_steps >= 0, "InverseSqrt", "warmup_steps must be >= 0, got " + std::to_string(warmup_steps));
  }
  double lr_at(std::int64_t step) const {
    detail::check_step(step, "InverseSqrt");
    if (step < warmup_) return peak_ * static_cast<double>(step + 1) / static_cast<double>(warmup_);
    return peak_ * std::sqrt(static_cast<double>(std::max<std::int64_t>(warmup_, 1)) / static_cast<double>(step + 1));
  }

 private:
  double peak_;
  std::int64_t warmup_;
};

// Any of the above, for a schedule chosen at run time (a training configuration).
using Schedule = std::variant<ConstantLr, WarmupLinear, WarmupCosine, InverseSqrt>;
inline double lr_at(const Schedule& schedule, std::int64_t step) {
  return std::visit([step](const auto& s) { return s.lr_at(step); }, schedule);
}

template <class S>
concept LrSchedule = requires(const S& s, std::int64_t step) {
  { s.lr_at(step) } -> std::convertible_to<double>;
};

// Sets the lr the optimizer's next step will use (from its step_count()) and returns it.
template <class Opt, LrSchedule S>
  requires requires(Opt& o, double lr) {
    o.set_lr(lr);
    { o.step_count() } -> std::convertible_to<std::int64_t>;
  }
double apply_schedule(const S& schedule, Opt& optimizer) {
  const double lr = schedule.lr_at(optimizer.step_count());
  optimizer.set_lr(lr);
  return lr;
}
template <class Opt>
double apply_schedule(const Schedule& schedule, Opt& optimizer) {
  const double lr = lr_at(schedule, optimizer.step_count());
  optimizer.set_lr(lr);
  return lr;
}

}  // namespace cerberus::optim
