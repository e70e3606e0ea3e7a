// optim::SGD against torch.optim.SGD's rule written out in double (optim_support.hpp), and the
// behaviour every optimizer shares (optimizer.hpp): skipping parameters without a gradient,
// tied parameters updated once, zero_grad, argument checks.
#include "optim/optim_support.hpp"
#include "support/catch.hpp"

using namespace cerberus;
using namespace optim_test;
using testing_support::compare;
using testing_support::message_of;

namespace {

const std::vector<float> p0 = {0.5f, -1.25f, 2.0f, 0.75f, -0.3f, 1.1f, 0.0f};
// A different gradient each step, so momentum histories are not geometric series of one vector.
std::vector<float> grad_at(int step) {
  std::vector<float> g(p0.size());
  for (std::size_t i = 0; i < g.size(); ++i) g[i] = std::sin(0.7f * static_cast<float>(i + 1) + 1.3f * static_cast<float>(step));
  return g;
}

// Runs `steps` steps of optim::SGD and of the double reference from p0; returns the worst ratio.
testing_support::Closeness run_against_reference(const optim::SGDOptions& o, int steps) {
  auto p = parameter(p0, {7});
  optim::SGD opt(nn::ParameterList<float>{{"w", p}}, o);
  RefSGD ref{o.lr, o.momentum, o.dampening, o.weight_decay, o.nesterov, {}};
  auto want = as_double(p0);
  for (int s = 0; s < steps; ++s) {
    set_grad(p, grad_at(s));
    opt.step();
    ref.step(want, as_double(grad_at(s)));
  }
  return compare(as_double(p), want, 1e-5, 1e-6);
}

}  // namespace

TEST_CASE("SGD matches torch.optim.SGD's rule", "[optim][sgd]") {
  struct Case {
    const char* what;
    optim::SGDOptions options;
  };
  const Case cases[] = {
      {"plain", {.lr = 0.1}},
      {"weight decay", {.lr = 0.1, .weight_decay = 0.05}},
      {"momentum", {.lr = 0.05, .momentum = 0.9}},
      {"momentum with dampening (first step undamped)", {.lr = 0.05, .momentum = 0.9, .dampening = 0.3}},
      {"Nesterov with weight decay", {.lr = 0.05, .momentum = 0.8, .nesterov = true, .weight_decay = 0.01}},
  };
  for (const auto& c : cases) {
    INFO(c.what);
    const auto r = run_against_reference(c.options, 4);
    INFO(r.describe());
    CHECK(r.ok());
  }
}

TEST_CASE("SGD's first momentum step uses the gradient itself, as torch does", "[optim][sgd]") {
  // With dampening 0.5 a buffer started at zero would give buf = 0.5 g; torch's gives buf = g.
  auto p = parameter({1.0f, 2.0f}, {2});
  optim::SGD opt(nn::ParameterList<float>{{"w", p}}, {.lr = 0.1, .momentum = 0.9, .dampening = 0.5});
  set_grad(p, {1.0f, -2.0f});
  opt.step();
  CHECK(p.to_vector() == std::vector<float>{0.9f, 2.2f});
  REQUIRE(opt.state().size() == 1);
  CHECK(opt.state()[0].name == "w.momentum_buffer");
  CHECK(opt.state()[0].tensor.to_vector() == std::vector<float>{1.0f, -2.0f});
}

TEST_CASE("Nesterov momentum differs from plain momentum after the first step", "[optim][sgd]") {
  auto a = parameter(p0, {7}), b = parameter(p0, {7});
  optim::SGD plain(nn::ParameterList<float>{{"w", a}}, {.lr = 0.1, .momentum = 0.9});
  optim::SGD nesterov(nn::ParameterList<float>{{"w", b}}, {.lr = 0.1, .momentum = 0.9, .nesterov = true});
  for (int s = 0; s < 2; ++s) {
    set_grad(a, grad_at(s));
    set_grad(b, grad_at(s));
    plain.step();
    nesterov.step();
  }
  CHECK_FALSE(bitwise_equal(a, b));
}

TEST_CASE("a parameter without a gradient is skipped and gets no state", "[optim][sgd]") {
  auto w = parameter({1.0f, 2.0f}, {2}), frozen = parameter({3.0f, 4.0f}, {2});
  optim::SGD opt(nn::ParameterList<float>{{"w", w}, {"frozen", frozen}}, {.lr = 0.5, .momentum = 0.9});
  set_grad(w, {1.0f, 1.0f});
  opt.step();
  CHECK(w.to_vector() == std::vector<float>{0.5f, 1.5f});
  CHECK(frozen.to_vector() == std::vector<float>{3.0f, 4.0f});
  REQUIRE(opt.state().size() == 1);
  CHECK(opt.state()[0].name == "w.momentum_buffer");
  CHECK(opt.step_count() == 1);
}

TEST_CASE("a tied parameter reached under two names is updated once, under its first name", "[optim][sgd]") {
  auto shared = parameter({1.0f, 1.0f}, {2});
  optim::SGD opt(nn::ParameterList<float>{{"embed.weight", shared}, {"head.weight", shared}}, {.lr = 0.25, .momentum = 0.5});
  CHECK(opt.parameters().size() == 1);
  set_grad(shared, {1.0f, 2.0f});
  opt.step();
  CHECK(shared.to_vector() == std::vector<float>{0.75f, 0.5f});  // one step, not two
  REQUIRE(opt.state().size() == 1);
  CHECK(opt.state()[0].name == "embed.weight.momentum_buffer");
}

TEST_CASE("zero_grad clears the gradients or fills them with zeros", "[optim][sgd]") {
  auto w = parameter({1.0f, 2.0f}, {2});
  optim::SGD opt(nn::ParameterList<float>{{"w", w}}, {.lr = 0.1});
  set_grad(w, {1.0f, 1.0f});
  opt.zero_grad(/*set_to_none=*/false);
  REQUIRE(w.grad().defined());
  CHECK(w.grad().to_vector() == std::vector<float>{0.0f, 0.0f});
  opt.zero_grad();
  CHECK_FALSE(w.grad().defined());
  opt.step();  // no gradient: nothing moves
  CHECK(w.to_vector() == std::vector<float>{1.0f, 2.0f});
}

TEST_CASE("lr and set_lr: the next step uses the new rate", "[optim][sgd]") {
  auto w = parameter({1.0f}, {1});
  optim::SGD opt(nn::ParameterList<float>{{"w", w}}, {.lr = 0.1});
  CHECK(opt.lr() == 0.1);
  opt.set_lr(0.5);
  CHECK(opt.lr() == 0.5);
  set_grad(w, {1.0f});
  opt.step();
  CHECK(w.to_vector() == std::vector<float>{0.5f});
}

TEST_CASE("SGD with momentum fits a least-squares problem", "[optim][sgd][learning]") {
  const LeastSquares problem;
  Tensor<float> w = zeros<float>({8, 1});
  w.set_requires_grad();
  optim::SGD opt(nn::ParameterList<float>{{"w", w}}, {.lr = 0.1, .momentum = 0.9});
  const float initial = problem.loss(w).item();
  for (int s = 0; s < 300; ++s) {
    opt.zero_grad();
    problem.loss(w).backward();
    opt.step();
  }
  NoGradGuard no_grad;
  CHECK(problem.loss(w).item() < 1e-6f * initial);
  const auto r = compare(as_double(w), as_double(problem.w_true), 1e-3, 1e-3);
  INFO(r.describe());
  CHECK(r.ok());
}

TEST_CASE("SGD rejects bad settings and parameters with a message naming what was expected", "[optim][sgd][errors]") {
  auto w = parameter({1.0f, 2.0f}, {2});
  const nn::ParameterList<float> params{{"w", w}};
  CHECK(message_of([&] { optim::SGD(params, {.lr = -0.1}); }) == "[SGD] learning rate must be finite and >= 0, got -0.100000");
  CHECK(message_of([&] { optim::SGD(params, {.lr = 0.1, .momentum = -1}); }).starts_with("[SGD] momentum must be finite and >= 0"));
  CHECK(message_of([&] { optim::SGD(params, {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true}); })
            .starts_with("[SGD] Nesterov momentum needs momentum > 0 and dampening = 0"));
  CHECK(message_of([&] { optim::SGD(params, {.lr = 0.1, .nesterov = true}); }).starts_with("[SGD] Nesterov momentum needs"));
  optim::SGD opt(params, {.lr = 0.1});
  CHECK(message_of([&] { opt.set_lr(-1); }).starts_with("[set_lr] SGD learning rate must be finite and >= 0, got -1"));
  CHECK(opt.lr() == 0.1);

  auto other = parameter({1.0f, 2.0f}, {2});
  CHECK(message_of([&] { optim::SGD(nn::ParameterList<float>{{"w", w}, {"w", other}}, {.lr = 0.1}); }) ==
        "[SGD] two different parameters are named 'w'; state is keyed by name, so names must be unique");
  auto matrix = parameter({1, 2, 3, 4, 5, 6}, {2, 3});
  CHECK(message_of([&] { optim::SGD(nn::ParameterList<float>{{"wt", matrix.detach().t()}}, {.lr = 0.1}); })
            .starts_with("[SGD] parameter 'wt' (shape [3, 2], strides [1, 3]) is not contiguous"));
  CHECK(message_of([&] { optim::SGD(nn::ParameterList<float>{{"u", Tensor<float>()}}, {.lr = 0.1}); }) ==
        "[SGD] parameter 'u' is an undefined tensor");
}
