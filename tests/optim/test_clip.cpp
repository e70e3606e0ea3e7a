// Gradient clipping by global norm (double-precision norm, skipped and tied parameters, NaN and
// inf), and gradient accumulation (k micro-batches of b rows = one batch of k*b rows).
#include <cmath>
#include <limits>

#include "optim/optim_support.hpp"
#include "support/catch.hpp"
#include "support/threads.hpp"

using namespace cerberus;
using namespace optim_test;
using testing_support::compare;
using testing_support::message_of;

TEST_CASE("clip_grad_norm scales every gradient by max_norm / norm and returns the norm before", "[optim][clip]") {
  auto a = parameter({0, 0, 0}, {3}), b = parameter({0, 0}, {2}), no_grad = parameter({1}, {1});
  set_grad(a, {3, 4, 0});
  set_grad(b, {0, 12});  // global norm sqrt(9 + 16 + 144) = 13
  const nn::ParameterList<float> params{{"a", a}, {"b", b}, {"no_grad", no_grad}, {"a_tied", a}};
  CHECK(optim::grad_norm(params) == 13.0);  // the tied copy counts once, the missing grad not at all

  CHECK(optim::clip_grad_norm(params, 20.0) == 13.0);  // below the limit: untouched
  CHECK(a.grad().to_vector() == std::vector<float>{3, 4, 0});

  CHECK(optim::clip_grad_norm(params, 6.5) == 13.0);
  const float scale = static_cast<float>(6.5 / (13.0 + 1e-6));
  CHECK(a.grad().to_vector() == std::vector<float>{3 * scale, 4 * scale, 0});  // scaled once, though listed twice
  CHECK(b.grad().to_vector() == std::vector<float>{0, 12 * scale});
  CHECK(optim::grad_norm(params) == Approx(6.5).epsilon(1e-6));
  CHECK_FALSE(no_grad.grad().defined());
}

TEST_CASE("the norm is summed in double and is the same for any thread count", "[optim][clip]") {
  // 2^22 squares of 0.1f: a float running sum would be off in the 3rd digit; the double one is
  // n * 0.1f^2 to about 1e-12.
  const Index n = Index{1} << 22;
  auto p = parameter(std::vector<float>(static_cast<std::size_t>(n), 0.0f), {n});
  set_grad(p, std::vector<float>(static_cast<std::size_t>(n), 0.1f));
  const double x = static_cast<double>(0.1f);
  CHECK(optim::grad_norm(nn::ParameterList<float>{{"p", p}}) == Approx(std::sqrt(static_cast<double>(n) * x * x)).epsilon(1e-12));

  set_grad(p, testing_support::random_uniform<float>({n}, -1, 1, 9).to_vector());
  const auto norm = [&] { return optim::grad_norm(nn::ParameterList<float>{{"p", p}}); };
  const double one = testing_support::with_threads(1, norm), three = testing_support::with_threads(3, norm);
  CHECK(one == three);
}

TEST_CASE("a NaN or infinite norm leaves the gradients alone, or throws when asked", "[optim][clip]") {
  auto a = parameter({0, 0}, {2});
  const nn::ParameterList<float> params{{"a", a}};
  set_grad(a, {std::numeric_limits<float>::infinity(), 1});
  CHECK(std::isinf(optim::clip_grad_norm(params, 1.0)));
  CHECK(a.grad().to_vector()[1] == 1.0f);  // not scaled to 0 (nor to NaN)
  set_grad(a, {std::numeric_limits<float>::quiet_NaN(), 1});
  CHECK(std::isnan(optim::clip_grad_norm(params, 1.0)));
  CHECK(a.grad().to_vector()[1] == 1.0f);
  CHECK(message_of([&] { optim::clip_grad_norm(params, 1.0, optim::NonFiniteNorm::error); }) ==
        "[clip_grad_norm] the gradient norm is nan: some gradient holds NaN or inf (expected a finite norm)");
  CHECK(message_of([&] { optim::clip_grad_norm(params, 0.0); }) == "[clip_grad_norm] max_norm must be finite and > 0, got 0.000000");
}

TEST_CASE("k micro-batches of b rows, loss scaled by 1/k, accumulate the gradient of one batch of k*b rows", "[optim][accumulation]") {
  const LeastSquares problem(48, 8, 21);
  const auto w0 = testing_support::random_uniform<float>({8, 1}, -1, 1, 22).to_vector();
  auto whole = parameter(w0, {8, 1}), accumulated = parameter(w0, {8, 1});
  optim::SGD whole_opt(nn::ParameterList<float>{{"w", whole}}, {.lr = 0.1});
  optim::SGD acc_opt(nn::ParameterList<float>{{"w", accumulated}}, {.lr = 0.1});

  problem.loss(whole, 0, 48).backward();

  optim::GradientAccumulation accumulate(4);
  CHECK(accumulate.loss_scale() == 0.25);
  int steps = 0;
  for (Index i = 0; i < 4; ++i) {
    const Tensor<float> loss = problem.loss(accumulated, 12 * i, 12 * (i + 1)) * static_cast<float>(accumulate.loss_scale());
    loss.backward();
    if (accumulate.micro_batch_done()) {
      const auto r = compare(as_double(accumulated.grad()), as_double(whole.grad()), 1e-5, 1e-6);
      INFO(r.describe());
      CHECK(r.ok());
      acc_opt.step();
      whole_opt.step();
      ++steps;
    } else {
      CHECK(accumulate.pending() == i + 1);
    }
  }
  CHECK(steps == 1);
  CHECK(accumulate.pending() == 0);
  const auto r = compare(as_double(accumulated), as_double(whole), 1e-5, 1e-6);
  INFO(r.describe());
  CHECK(r.ok());
  CHECK(message_of([] { optim::GradientAccumulation(0); }) == "[GradientAccumulation] micro_batches must be >= 1, got 0");
}
