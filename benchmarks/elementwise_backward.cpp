// Forward + backward of y = gelu(x * a + b) (x: [4096, 4096], a and b: [4096] broadcast over
// rows), fused against op by op:
//   fused:    Tensor y = gelu(x * a + b);   one node; backward = one pass per input
//   op by op: t1 = x * a; t2 = t1 + b; y = gelu(t2);  three nodes, two stored intermediates
// Usage: elementwise_backward [threads...]
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "cerberus/cerberus.hpp"
#include "timing.hpp"

using namespace cerberus;

int main(int argc, char** argv) {
  const Index rows = 4096, cols = 4096;
  std::vector<int> thread_counts;
  for (int i = 1; i < argc; ++i) thread_counts.push_back(std::atoi(argv[i]));
  if (thread_counts.empty()) thread_counts = {1, static_cast<int>(std::thread::hardware_concurrency())};

  Generator gen(3);
  auto x = uniform<float>({rows, cols}, -3, 3, gen);
  auto a = uniform<float>({cols}, 0.5, 1.5, gen);
  auto b = uniform<float>({cols}, -0.5, 0.5, gen);
  for (auto* t : {&x, &a, &b}) t->set_requires_grad();
  const auto upstream = ones<float>({rows, cols});

  auto reset = [&] {
    for (auto* t : {&x, &a, &b}) t->zero_grad();
  };
  std::printf("forward + backward of gelu(x * a + b), x = [%lld, %lld] float; median ms\n", static_cast<long long>(rows),
              static_cast<long long>(cols));
  std::printf("%8s %12s %12s %10s\n", "threads", "fused", "op by op", "ratio");
  for (int threads : thread_counts) {
    set_num_threads(threads);
    const double fused = bench::median_seconds([&] {
      const Tensor<float> y = gelu(x * a + b);
      y.backward(upstream);
      reset();
    });
    const double op_by_op = bench::median_seconds([&] {
      const Tensor<float> t1 = x * a;
      const Tensor<float> t2 = t1 + b;
      const Tensor<float> y = gelu(t2);
      y.backward(upstream);
      reset();
    });
    std::printf("%8d %12.1f %12.1f %9.2fx\n", threads, fused * 1e3, op_by_op * 1e3, op_by_op / fused);
  }
  return 0;
}
