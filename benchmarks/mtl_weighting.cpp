// The cost of one multi-task training step (forward + weighting backward) under each loss
// weighting, relative to a plain summed step (Equal without conflict measurement).
//
// Model: a shared MLP trunk, x [B, I] -> gelu(Linear I->H) -> gelu(Linear H->H), and 3 task heads
// Linear H->O with a mean-squared-error loss each. Plain: one backward of L0 + L1 + L2.
// Gradient surgery (PCGrad, MGDA, CAGrad) and conflict measurement: one backward per task through
// the retained graph, the shared gradients copied to double, a 3 x 3 Gram matrix, the combination
// written back. The extra cost therefore grows with the trunk's parameter count relative to its
// compute per step.
// Plain and weighted steps are timed alternately (7 rounds); the ratio is the median of the
// per-round ratios, which holds up on a shared machine better than two separate medians.
// Usage: bench_mtl_weighting [threads...]
#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "cerberus/cerberus.hpp"
#include "cerberus/mtl/weighting.hpp"
#include "timing.hpp"

using namespace cerberus;

namespace {

struct Setup {
  Index batch, in, hidden, out;
};

struct Net {
  nn::Linear<float> l1, l2;
  std::vector<nn::Linear<float>> heads;
  Tensor<float> x;
  std::vector<Tensor<float>> targets;

  Net(const Setup& s, Generator& gen)
      : l1(s.in, s.hidden, true, gen, 0.1), l2(s.hidden, s.hidden, true, gen, 0.05), x(normal<float>(Shape{s.batch, s.in}, 0, 1, gen)) {
    for (int t = 0; t < 3; ++t) {
      heads.emplace_back(s.hidden, s.out, true, gen, 0.05);
      targets.push_back(normal<float>(Shape{s.batch, s.out}, 0, 1, gen));
    }
  }
  nn::ParameterList<float> shared() const {
    auto p = l1.named_parameters("trunk.0.");
    for (auto& q : l2.named_parameters("trunk.1.")) p.push_back(q);
    return p;
  }
  mtl::TaskLosses losses() const {
    const Tensor<float> h1 = gelu(l1(x));
    const Tensor<float> h = gelu(l2(h1));
    mtl::TaskLosses l{{"a", "b", "c"}, {}};
    for (int t = 0; t < 3; ++t) {
      const Tensor<float> y = heads[t](h);
      l.losses.emplace_back(mean(square(y - targets[t])));
    }
    return l;
  }
  void clear_grads() {
    l1.clear_grad();
    l2.clear_grad();
    for (auto& h : heads) h.clear_grad();
  }
  Index shared_count() const { return l1.num_parameters() + l2.num_parameters(); }
};

template <class W>
double time_step(Net& net, W& weighting, double budget) {
  const auto shared = net.shared();
  return bench::median_seconds(
      [&] {
        net.clear_grads();
        weighting.backward(net.losses(), shared);
      },
      3, budget);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Median time of a step with `weighting` and the median of its ratio to a plain step, plain and
// weighted steps measured alternately over several rounds (the machine may be shared).
template <class W>
std::pair<double, double> relative_cost(Net& net, W weighting) {
  mtl::Equal plain;
  std::vector<double> times, ratios;
  for (int round = 0; round < 7; ++round) {
    const double p = time_step(net, plain, 0.15), t = time_step(net, weighting, 0.15);
    times.push_back(t);
    ratios.push_back(t / p);
  }
  return {median(times), median(ratios)};
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int> thread_counts;
  for (int i = 1; i < argc; ++i) thread_counts.push_back(std::atoi(argv[i]));
  if (thread_counts.empty()) thread_counts = {1, static_cast<int>(std::thread::hardware_concurrency())};
  const Setup setups[] = {{256, 64, 256, 16}, {256, 256, 1024, 16}};

  for (const auto& s : setups) {
    Generator gen(7);
    Net net(s, gen);
    std::printf("\nshared MLP trunk %lld -> %lld -> %lld (%lld shared parameters), batch %lld, 3 heads -> %lld; median ms per step\n",
                static_cast<long long>(s.in), static_cast<long long>(s.hidden), static_cast<long long>(s.hidden),
                static_cast<long long>(net.shared_count()), static_cast<long long>(s.batch), static_cast<long long>(s.out));
    std::printf("%8s %22s %10s %8s\n", "threads", "weighting", "ms", "ratio");
    for (int threads : thread_counts) {
      set_num_threads(threads);
      auto row = [&](const char* name, std::pair<double, double> r) {
        std::printf("%8d %22s %10.3f %7.2fx\n", threads, name, r.first * 1e3, r.second);
      };
      row("Equal (plain sum)", relative_cost(net, mtl::Equal()));
      row("Equal + conflict", relative_cost(net, mtl::Equal({.measure_conflict = true})));
      row("Uncertainty", relative_cost(net, mtl::Uncertainty(3)));
      row("GradNorm", relative_cost(net, mtl::GradNorm(3)));
      row("PCGrad", relative_cost(net, mtl::PCGrad()));
      row("MGDA", relative_cost(net, mtl::MGDA()));
      row("CAGrad", relative_cost(net, mtl::CAGrad()));
    }
  }
  return 0;
}
