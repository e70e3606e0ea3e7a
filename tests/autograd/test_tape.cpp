// The tape itself: leaves and accumulation, retain_graph, the freed graph, no-grad scopes,
// detach, and the errors a user meets first.
#include <string>
#include <vector>

#include "cerberus/cerberus.hpp"
#include "support/catch.hpp"
#include "support/reference.hpp"

using namespace cerberus;
using cerberus::testing_support::message_of;

TEST_CASE("gradients accumulate across backward calls until zero_grad", "[autograd][tape]") {
  auto x = from_vector<double>({1, 2, 3});
  x.set_requires_grad();
  const auto ones3 = ones<double>({3});
  Tensor<double> y = x * x;
  y.backward(ones3, /*retain_graph=*/true);
  CHECK(x.grad().to_vector() == std::vector<double>{2, 4, 6});
  y.backward(ones3);  // the retained graph can be walked again
  CHECK(x.grad().to_vector() == std::vector<double>{4, 8, 12});
  x.zero_grad();
  CHECK(x.grad().to_vector() == std::vector<double>{0, 0, 0});
  x.clear_grad();
  CHECK_FALSE(x.grad().defined());
}

TEST_CASE("a freed graph refuses a second backward with a clear error", "[autograd][tape]") {
  auto x = from_vector<double>({1, 2});
  x.set_requires_grad();
  Tensor<double> y = exp(x);
  y.backward(ones<double>({2}));
  const auto msg = message_of([&] { y.backward(ones<double>({2})); });
  CHECK(msg.find("[backward]") != std::string::npos);
  CHECK(msg.find("freed") != std::string::npos);
  CHECK(msg.find("retain_graph") != std::string::npos);
}

TEST_CASE("backward on a non-scalar needs a gradient, and a scalar needs none", "[autograd][tape]") {
  auto x = from_vector<double>({1, 2});
  x.set_requires_grad();
  Tensor<double> y = x * 3.0;
  const auto msg = message_of([&] { y.backward(); });
  CHECK(msg.find("[backward]") != std::string::npos);
  CHECK(msg.find("[2]") != std::string::npos);
  CHECK(message_of([&] { y.backward(ones<double>({3})); }).find("[3]") != std::string::npos);

  Tensor<double> s = x.select(0, 1) * x.select(0, 0);  // a one-element tensor
  s.backward();
  CHECK(x.grad().to_vector() == std::vector<double>{2, 1});
}

TEST_CASE("no-grad scopes, detach and tensors without grad record nothing", "[autograd][tape]") {
  auto x = from_vector<double>({1, 2});
  x.set_requires_grad();
  {
    NoGradGuard no_grad;
    const Tensor<double> y = x * 2.0;
    CHECK_FALSE(y.requires_grad());
    CHECK_FALSE(is_grad_enabled());
  }
  CHECK(is_grad_enabled());
  const Tensor<double> d = x.detach() * 2.0;
  CHECK_FALSE(d.requires_grad());
  CHECK(d.storage() != nullptr);
  CHECK(x.detach().storage() == x.storage());
  const Tensor<double> plain = from_vector<double>({1.0}) + 1.0;
  CHECK_FALSE(plain.requires_grad());
  CHECK(message_of([&] { plain.backward(); }).find("does not require grad") != std::string::npos);
  // Only leaves can be marked.
  Tensor<double> y = x * 2.0;
  CHECK(message_of([&] { y.set_requires_grad(false); }).find("[set_requires_grad]") != std::string::npos);
  CHECK(y.grad_fn() != nullptr);
  CHECK(std::string(y.grad_fn()->name()) == "fused elementwise");
}

TEST_CASE("in-place writes that would break the graph are refused", "[autograd][tape]") {
  auto w = zeros<double>({3});
  w.set_requires_grad();
  const auto msg = message_of([&] { w += 1.0; });
  CHECK(msg.find("[assign]") != std::string::npos);
  CHECK(msg.find("NoGradGuard") != std::string::npos);
  {
    NoGradGuard no_grad;  // how optimizers update parameters
    w += 1.0;
  }
  CHECK(w.to_vector() == std::vector<double>{1, 1, 1});
}

TEST_CASE("an expression records one node, whatever its depth", "[autograd][fused]") {
  auto x = from_vector<double>({0.5, 1.5});
  x.set_requires_grad();
  const Tensor<double> y = log(1.0 + exp(tanh(x) * 2.0 + x)) / (x * x + 1.0);
  REQUIRE(y.grad_fn() != nullptr);
  // Every input edge of the single node points at x's accumulator: the graph is one node deep.
  for (const auto& edge : y.grad_fn()->inputs) CHECK(edge == x.gradient_edge());
  CHECK(y.grad_fn()->inputs.size() == 4);  // x appears four times
}

TEST_CASE("deep graphs do not overflow the stack", "[autograd][tape]") {
  auto x = from_vector<double>({1.0});
  x.set_requires_grad();
  Tensor<double> y = x * 1.0;
  for (int i = 0; i < 20000; ++i) y = Tensor<double>(y * 1.0);
  y.backward();
  CHECK(x.grad().item() == 1.0);
}

TEST_CASE("fused backward gives the same gradient whichever leaves require grad", "[autograd][fused]") {
  Generator gen(5);
  const auto x0 = uniform<double>({3, 4}, -2, 2, gen);
  const auto a0 = uniform<double>({4}, -2, 2, gen);
  const auto g = uniform<double>({3, 4}, -1, 1, gen);
  auto run = [&](bool x_grad, bool a_grad) {
    Tensor<double> x = x0.clone(), a = a0.clone();
    if (x_grad) x.set_requires_grad();
    if (a_grad) a.set_requires_grad();
    const Tensor<double> y = gelu(x * a + a);  // the paths to x and a part below gelu and +
    y.backward(g);
    return std::make_pair(x_grad ? x.grad().to_vector() : std::vector<double>{}, a_grad ? a.grad().to_vector() : std::vector<double>{});
  };
  const auto both = run(true, true);
  const auto only_x = run(true, false);
  const auto only_a = run(false, true);
  REQUIRE(both.first.size() == only_x.first.size());
  for (std::size_t i = 0; i < both.first.size(); ++i) CHECK(both.first[i] == Approx(only_x.first[i]).epsilon(1e-12));
  for (std::size_t i = 0; i < both.second.size(); ++i) CHECK(both.second[i] == Approx(only_a.second[i]).epsilon(1e-12));
}
