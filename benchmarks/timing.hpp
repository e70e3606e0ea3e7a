// Timing helpers shared by the benchmarks: median of repeated runs after a warm-up.
#pragma once

#include <algorithm>
#include <chrono>
#include <vector>

namespace cerberus::bench {

inline double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Median seconds per call of fn(): one warm-up call (page faults, pools), then at least
// `min_reps` samples, each long enough (>= 20 ms) for the clock, within about `budget` seconds.
template <class Fn>
double median_seconds(Fn&& fn, int min_reps = 5, double budget = 1.5) {
  fn();
  const double t0 = now_seconds();
  fn();
  const double once = std::max(now_seconds() - t0, 1e-9);
  const int inner = std::max(1, static_cast<int>(0.02 / once));
  std::vector<double> samples;
  const double start = now_seconds();
  while (static_cast<int>(samples.size()) < min_reps || (now_seconds() - start < budget && samples.size() < 41)) {
    const double a = now_seconds();
    for (int i = 0; i < inner; ++i) fn();
    samples.push_back((now_seconds() - a) / inner);
  }
  std::sort(samples.begin(), samples.end());
  return samples[samples.size() / 2];
}

}  // namespace cerberus::bench
