// Fused elementwise chain y = gelu(x * a + b) (x: [4096, 4096] floats, a and b per-column
// vectors, as a scale and bias in a Transformer) in GB/s, side by side with
//   - a hand-written loop compiled with this build's flags (-O3 -march=native by default),
//   - the same chain evaluated op by op (one temporary tensor per op, as eager frameworks do).
// Usage: elementwise [threads...]   (default: 1 and the hardware's count)
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "cerberus/cerberus.hpp"
#include "timing.hpp"

using namespace cerberus;

namespace {

// The plain loop a careful C++ engineer would write, split over `threads` std::threads.
void hand_loop(float* y, const float* x, const float* a, const float* b, Index rows, Index cols, int threads) {
  auto work = [&](Index r0, Index r1) {
    for (Index r = r0; r < r1; ++r) {
      const float* xr = x + r * cols;
      float* yr = y + r * cols;
      for (Index c = 0; c < cols; ++c) {
        const float v = xr[c] * a[c] + b[c];
        yr[c] = 0.5f * v * (1.0f + std::tanh(0.7978845608f * (v + 0.044715f * v * v * v)));
      }
    }
  };
  if (threads == 1) return work(0, rows);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(work, rows * t / threads, rows * (t + 1) / threads);
  for (auto& th : pool) th.join();
}

}  // namespace

int main(int argc, char** argv) {
  const Index rows = 4096, cols = 4096;
  std::vector<int> thread_counts;
  for (int i = 1; i < argc; ++i) thread_counts.push_back(std::atoi(argv[i]));
  if (thread_counts.empty()) thread_counts = {1, static_cast<int>(std::thread::hardware_concurrency())};

  Generator gen(1);
  const auto x = uniform<float>({rows, cols}, -3, 3, gen);
  const auto a = uniform<float>({cols}, 0.5, 1.5, gen);
  const auto b = uniform<float>({cols}, -0.5, 0.5, gen);
  auto y = zeros<float>({rows, cols});
  std::vector<float> y_hand(static_cast<std::size_t>(rows * cols), 0.0f);
  const double bytes = 2.0 * static_cast<double>(rows * cols) * sizeof(float);  // read x, write y

  std::printf("gelu(x * a + b), x = [%lld, %lld] float, a and b = [%lld]; GB/s counts reading x and writing y\n",
              static_cast<long long>(rows), static_cast<long long>(cols), static_cast<long long>(cols));
  std::printf("%8s %14s %14s %14s %12s %12s\n", "threads", "fused GB/s", "hand GB/s", "op-by-op GB/s", "fused/hand",
              "fused/opbyop");
  for (int threads : thread_counts) {
    set_num_threads(threads);
    const double t_fused = bench::median_seconds([&] { y.assign(gelu(x * a + b)); });
    const double t_hand =
        bench::median_seconds([&] { hand_loop(y_hand.data(), x.data(), a.data(), b.data(), rows, cols, threads); });
    const double t_ops = bench::median_seconds([&] {
      Tensor<float> t1 = x * a;  // each line is one pass over memory and one temporary
      Tensor<float> t2 = t1 + b;
      y.assign(gelu(t2));
    });
    std::printf("%8d %14.1f %14.1f %14.1f %11.2fx %11.2fx\n", threads, bytes / t_fused / 1e9, bytes / t_hand / 1e9,
                bytes / t_ops / 1e9, t_hand / t_fused, t_ops / t_fused);
  }
  // The fused result equals the hand loop's up to float rounding of tanh.
  double worst = 0;
  const auto yv = y.to_vector();
  for (std::size_t i = 0; i < yv.size(); ++i) worst = std::max(worst, std::abs(static_cast<double>(yv[i]) - y_hand[i]));
  std::printf("max |fused - hand| = %.3g\n", worst);
  return worst < 1e-4 ? 0 : 1;
}
