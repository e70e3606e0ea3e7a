// A one-line training progress display: step, loss, throughput and time left.
//
//   [###########.........]  560/1000  loss 3.214  ppl 24.9  1.84k tok/s  ETA 0:03:59
//
// On a terminal the line is redrawn in place (carriage return); when the output is a file or a
// pipe (CI logs) a full line is printed every `log_every` steps and at the end instead, so logs
// stay readable. Throughput is an exponential moving average over recent steps, so a slow first
// step (page faults, cache warm-up) does not distort the ETA for long.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>

#include <unistd.h>

namespace cerberus::train {

// "1.84k", "12.3M": three significant digits for rates.
inline std::string human_count(double value) {
  const char* suffix[] = {"", "k", "M", "G"};
  int unit = 0;
  while (std::fabs(value) >= 1000.0 && unit < 3) {
    value /= 1000.0;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, value >= 100 || unit == 0 ? "%.0f%s" : value >= 10 ? "%.1f%s" : "%.2f%s", value,
                suffix[unit]);
  return buf;
}

// "0:03:59", or "--:--" when unknown.
inline std::string human_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const auto s = static_cast<std::int64_t>(seconds + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                static_cast<long long>(s / 60 % 60), static_cast<long long>(s % 60));
  return buf;
}

class ProgressBar {
 public:
  using Clock = std::chrono::steady_clock;

  ProgressBar(std::int64_t total_steps, std::FILE* out = stderr, std::int64_t log_every = 0)
      : total_(total_steps < 1 ? 1 : total_steps),
        out_(out),
        interactive_(out != nullptr && ::isatty(::fileno(out))),
        log_every_(log_every > 0 ? log_every : (total_ >= 20 ? total_ / 10 : 1)),
        start_(Clock::now()),
        last_(start_) {}

  // Text shown after the fixed fields, e.g. per-task losses ("translate 3.21  sentiment 0.58").
  void set_detail(std::string detail) { detail_ = std::move(detail); }
  // Whether the line shows exp(loss) (a language model's perplexity; meaningless for a weighted
  // multi-task loss).
  void show_perplexity(bool on) { show_ppl_ = on; }

  // Records that `step` (1-based) is done, having processed `tokens` tokens, with this loss.
  void update(std::int64_t step, double loss, std::int64_t tokens) {
    const auto now = Clock::now();
    const double dt = std::chrono::duration<double>(now - last_).count();
    last_ = now;
    if (dt > 0) {
      const double rate = static_cast<double>(tokens) / dt;
      rate_ = rate_ <= 0 ? rate : 0.8 * rate_ + 0.2 * rate;
      const double step_rate = 1.0 / dt;
      steps_per_s_ = steps_per_s_ <= 0 ? step_rate : 0.8 * steps_per_s_ + 0.2 * step_rate;
    }
    step_ = step;
    loss_ = loss;
    tokens_ += tokens;
    if (out_ == nullptr) return;
    if (interactive_) {
      std::fprintf(out_, "\r%s", line().c_str());
      if (step >= total_) std::fputc('\n', out_);
      std::fflush(out_);
    } else if (step % log_every_ == 0 || step >= total_ || step == 1) {
      std::fprintf(out_, "%s\n", line().c_str());
      std::fflush(out_);
    }
  }

  std::string line() const {
    constexpr int width = 20;
    const int filled = static_cast<int>(width * static_cast<double>(step_) / static_cast<double>(total_));
    std::string bar(static_cast<std::size_t>(width), '.');
    for (int i = 0; i < filled && i < width; ++i) bar[static_cast<std::size_t>(i)] = '#';
    const double eta = steps_per_s_ > 0 ? static_cast<double>(total_ - step_) / steps_per_s_ : NAN;
    char ppl[32] = "";
    if (show_ppl_) std::snprintf(ppl, sizeof ppl, "  ppl %.1f", std::exp(loss_));
    char buf[256];
    std::snprintf(buf, sizeof buf, "[%s] %*lld/%lld  loss %.3f%s  %s tok/s  ETA %s", bar.c_str(),
                  static_cast<int>(std::to_string(total_).size()), static_cast<long long>(step_),
                  static_cast<long long>(total_), loss_, ppl, human_count(rate_).c_str(), human_duration(eta).c_str());
    return detail_.empty() ? std::string(buf) : std::string(buf) + "  " + detail_;
  }

  double elapsed_seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  std::int64_t tokens_seen() const { return tokens_; }
  // Tokens per second averaged over the whole run so far.
  double average_tokens_per_second() const {
    const double s = elapsed_seconds();
    return s > 0 ? static_cast<double>(tokens_) / s : 0.0;
  }

 private:
  std::int64_t total_;
  std::FILE* out_;
  bool interactive_;
  std::int64_t log_every_;
  Clock::time_point start_, last_;
  std::int64_t step_ = 0, tokens_ = 0;
  std::string detail_;
  bool show_ppl_ = true;
  double loss_ = NAN, rate_ = 0, steps_per_s_ = 0;
};

}  // namespace cerberus::train
