// A tour of what cerberus does today, end to end on one screen:
//   1. tensors and views, 2. one fused expression, 3. reductions and softmax,
//   4. autodiff: a small classifier trained with cross-entropy, then its predictions.
// Run: scripts/run-example.sh   (or build the `tour` target and run build/release/examples/tour)
#include <chrono>
#include <cstdio>
#include <iostream>

#include "cerberus/cerberus.hpp"
#include "cerberus/io.hpp"

using namespace cerberus;

namespace {

// Three interleaved spirals in the plane: a classic data set no linear model separates.
// points: [N, 2], labels: [N] in {0, 1, 2}.
void make_spirals(Index per_class, Generator& gen, Tensor<float>& points, Tensor<std::int64_t>& labels) {
  const Index n = 3 * per_class;
  points = Tensor<float>::empty({n, 2});
  labels = Tensor<std::int64_t>::empty({n});
  const auto noise = normal<float>({n, 2}, 0.0, 0.08, gen);
  for (Index c = 0; c < 3; ++c)
    for (Index i = 0; i < per_class; ++i) {
      const Index k = c * per_class + i;
      const float r = static_cast<float>(i) / static_cast<float>(per_class);
      const float angle = 4.0f * r + 2.094f * static_cast<float>(c);
      points(k, 0) = r * std::cos(angle) + noise(k, 0);
      points(k, 1) = r * std::sin(angle) + noise(k, 1);
      labels(k) = c;
    }
}

Tensor<float> parameter(const Shape& shape, double scale, Generator& gen) {
  auto p = normal<float>(shape, 0.0, scale, gen);
  p.set_requires_grad();
  return p;
}

}  // namespace

int main() {
  std::cout << "cerberus " << CERBERUS_VERSION_MAJOR << "." << CERBERUS_VERSION_MINOR << " on " << num_threads()
            << " threads\n\n";

  // 1. Tensors and views: reshape, transpose and slice share memory with the original.
  const auto m = arange<float>(12).reshape({3, 4});
  std::cout << "m = " << m << "\nm.t() (a view, no copy) = " << m.t() << "\nm.slice(1, 0, 4, 2) = " << m.slice(1, 0, 4, 2) << "\n\n";

  // 2. One fused pass: scale and bias broadcast over rows, GELU, all in one loop over memory.
  Generator gen(2026);
  const auto x = normal<float>({2, 5}, 0.0, 1.0, gen);
  const auto scale = full<float>({5}, 2.0f);
  const auto bias = arange<float>(5) * 0.1f;
  const Tensor<float> y = gelu(x * scale + bias);
  std::cout << "gelu(x * scale + bias) = " << y << "\n";
  std::cout << "row sums = " << sum(y, 1) << ", softmax over rows = " << softmax(y, -1) << "\n\n";

  // 3. Autodiff: a two-layer network classifies three spirals.
  Tensor<float> points;
  Tensor<std::int64_t> labels;
  make_spirals(200, gen, points, labels);
  auto w1 = parameter({2, 64}, 1.0, gen), b1 = parameter({64}, 0.0, gen);
  auto w2 = parameter({64, 3}, 0.2, gen), b2 = parameter({3}, 0.0, gen);
  auto logits_of = [&](const Tensor<float>& p) {
    const Tensor<float> hidden = gelu(matmul(p, w1) + b1);
    return Tensor<float>(matmul(layer_norm(hidden), w2) + b2);
  };
  auto accuracy = [&] {
    NoGradGuard no_grad;
    const auto predicted = argmax(logits_of(points), 1);
    Index right = 0;
    for (Index i = 0; i < labels.numel(); ++i) right += predicted(i) == labels(i);
    return 100.0 * static_cast<double>(right) / static_cast<double>(labels.numel());
  };

  std::printf("training a 2-64-3 network on %lld spiral points (accuracy before: %.1f%%)\n",
              static_cast<long long>(labels.numel()), accuracy());
  const auto start = std::chrono::steady_clock::now();
  const float learning_rate = 0.5f;
  for (int step = 1; step <= 600; ++step) {
    const Tensor<float> loss = cross_entropy(logits_of(points), labels);
    loss.backward();
    {
      NoGradGuard no_grad;  // parameter updates are not part of the graph
      for (auto* p : {&w1, &b1, &w2, &b2}) {
        *p -= p->grad() * learning_rate;
        p->zero_grad();
      }
    }
    if (step % 100 == 0) std::printf("  step %4d  loss %.4f  accuracy %.1f%%\n", step, loss.item(), accuracy());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("trained in %.2f s\n\n", seconds);

  NoGradGuard no_grad;
  const auto probe = from_vector<float>({0.0f, 0.0f, 0.5f, 0.5f, -0.5f, 0.3f}, {3, 2});
  std::cout << "class probabilities for three new points:\n" << softmax(logits_of(probe), -1) << "\n";
  return accuracy() > 90.0 ? 0 : 1;
}
