// End to end: small networks trained with the tape and plain gradient descent actually learn.
#include <cmath>
#include <vector>

#include "cerberus/cerberus.hpp"
#include "cerberus/ops/loss.hpp"
#include "cerberus/ops/matmul.hpp"
#include "cerberus/ops/reduce.hpp"
#include "support/catch.hpp"

using namespace cerberus;

namespace {

// w <- w - lr * grad, outside the graph.
void sgd_step(std::vector<Tensor<float>>& params, float lr) {
  NoGradGuard no_grad;
  for (auto& p : params) {
    p -= p.grad() * lr;
    p.zero_grad();
  }
}

Tensor<float> parameter(const Shape& shape, double scale, Generator& gen) {
  auto p = normal<float>(shape, 0.0, scale, gen);
  p.set_requires_grad();
  return p;
}

}  // namespace

TEST_CASE("a two-layer MLP learns XOR", "[autograd][learning]") {
  Generator gen(7);
  const auto x = from_vector<float>({0, 0, 0, 1, 1, 0, 1, 1}, {4, 2});
  const auto y = from_vector<std::int64_t>({0, 1, 1, 0});
  auto w1 = parameter({2, 8}, 1.0, gen), b1 = parameter({8}, 0.1, gen);
  auto w2 = parameter({8, 2}, 1.0, gen), b2 = parameter({2}, 0.1, gen);
  std::vector<Tensor<float>> params{w1, b1, w2, b2};

  float first_loss = 0, loss_value = 0;
  for (int step = 0; step < 500; ++step) {
    const Tensor<float> h = tanh(matmul(x, w1) + b1);
    const Tensor<float> logits = matmul(h, w2) + b2;
    const Tensor<float> loss = cross_entropy(logits, y);
    loss.backward();
    sgd_step(params, 0.5f);
    loss_value = loss.item();
    if (step == 0) first_loss = loss_value;
  }
  CHECK(loss_value < 0.05f);
  CHECK(loss_value < first_loss / 10);

  NoGradGuard no_grad;
  const Tensor<float> logits = matmul(Tensor<float>(tanh(matmul(x, w1) + b1)), w2) + b2;
  for (Index i = 0; i < 4; ++i) {
    const int predicted = logits(i, 1) > logits(i, 0) ? 1 : 0;
    CHECK(predicted == y(i));
  }
}

TEST_CASE("linear regression with a mean squared error recovers the weights", "[autograd][learning]") {
  Generator gen(9);
  const Index n = 256;
  const auto x = uniform<float>({n, 3}, -1, 1, gen);
  const auto true_w = from_vector<float>({1.5f, -2.0f, 0.5f}, {3, 1});
  const Tensor<float> target = matmul(x, true_w) + 0.25f + normal<float>({n, 1}, 0.0, 0.01, gen);
  auto w = parameter({3, 1}, 0.1, gen), b = parameter({1}, 0.1, gen);
  std::vector<Tensor<float>> params{w, b};
  float loss_value = 0;
  for (int step = 0; step < 400; ++step) {
    const Tensor<float> err = matmul(x, w) + b - target;
    const Tensor<float> loss = mean(square(err));
    loss.backward();
    sgd_step(params, 0.3f);
    loss_value = loss.item();
  }
  CHECK(loss_value < 5e-4f);
  CHECK(w(0, 0) == Approx(1.5).margin(0.02));
  CHECK(w(1, 0) == Approx(-2.0).margin(0.02));
  CHECK(w(2, 0) == Approx(0.5).margin(0.02));
  CHECK(b(0) == Approx(0.25).margin(0.02));
}
