// optim::Adam and optim::AdamW against torch.optim's rules written out in double
// (optim_support.hpp); AdamW's weight-decay rule, predicate and parameter groups; the fused
// kernel's tail, threading and determinism; convergence on least squares.
#include <limits>

#include "optim/optim_support.hpp"
#include "support/catch.hpp"
#include "support/threads.hpp"

using namespace cerberus;
using namespace optim_test;
using testing_support::compare;
using testing_support::message_of;

namespace {

std::vector<float> values_at(std::size_t n, float phase, float scale) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = scale * std::sin(0.37f * static_cast<float>(i) + phase);
  return v;
}
std::vector<float> grad_at(std::size_t n, int step) { return values_at(n, 0.9f * static_cast<float>(step) + 0.2f, 1.0f); }

}  // namespace

TEST_CASE("Adam matches torch.optim.Adam (L2 weight decay on every parameter)", "[optim][adam]") {
  // 35 elements: 2 AVX-512 batches and a scalar tail, or 4 AVX2 batches and a tail.
  const auto w0 = values_at(35, 0.0f, 1.5f), b0 = values_at(5, 1.0f, 0.5f);
  auto w = parameter(w0, {7, 5}), b = parameter(b0, {5});
  const optim::AdamOptions o{.lr = 0.01, .beta1 = 0.8, .beta2 = 0.95, .eps = 1e-6, .weight_decay = 0.1};
  optim::Adam opt(nn::ParameterList<float>{{"w", w}, {"b", b}}, o);
  RefAdam rw{o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, false, {}, {}, 0}, rb = rw;
  auto want_w = as_double(w0), want_b = as_double(b0);
  for (int s = 0; s < 6; ++s) {
    set_grad(w, grad_at(35, s));
    set_grad(b, grad_at(5, s + 10));
    opt.step();
    rw.step(want_w, as_double(grad_at(35, s)));
    rb.step(want_b, as_double(grad_at(5, s + 10)));  // Adam decays biases too
  }
  const auto rw_ok = compare(as_double(w), want_w, 1e-5, 1e-6), rb_ok = compare(as_double(b), want_b, 1e-5, 1e-6);
  INFO(rw_ok.describe() << " / " << rb_ok.describe());
  CHECK(rw_ok.ok());
  CHECK(rb_ok.ok());
  // The moments are torch's exp_avg / exp_avg_sq.
  const auto state = opt.state();
  REQUIRE(state.size() == 4);
  CHECK(state[0].name == "w.exp_avg");
  CHECK(state[1].name == "w.exp_avg_sq");
  CHECK(state[2].name == "b.exp_avg");
  CHECK(state[3].name == "b.exp_avg_sq");
  CHECK(compare(as_double(state[0].tensor), rw.m, 1e-5, 1e-7).ok());
  CHECK(compare(as_double(state[1].tensor), rw.v, 1e-5, 1e-9).ok());
}

TEST_CASE("AdamW matches torch.optim.AdamW and leaves biases and norm gains undecayed", "[optim][adamw]") {
  const auto w0 = values_at(35, 0.0f, 1.5f), g0 = values_at(5, 2.0f, 1.0f);
  auto w = parameter(w0, {5, 7}), gain = parameter(g0, {5});
  const optim::AdamWOptions o{.lr = 0.02, .beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.3};
  optim::AdamW opt(nn::ParameterList<float>{{"layer.weight", w}, {"norm.weight", gain}}, o);
  RefAdam rw{o.lr, o.beta1, o.beta2, o.eps, o.weight_decay, true, {}, {}, 0};
  RefAdam rg{o.lr, o.beta1, o.beta2, o.eps, 0.0, true, {}, {}, 0};  // rank 1: no decay
  auto want_w = as_double(w0), want_g = as_double(g0);
  for (int s = 0; s < 6; ++s) {
    set_grad(w, grad_at(35, s));
    set_grad(gain, grad_at(5, s + 3));
    opt.step();
    rw.step(want_w, as_double(grad_at(35, s)));
    rg.step(want_g, as_double(grad_at(5, s + 3)));
  }
  const auto rw_ok = compare(as_double(w), want_w, 1e-5, 1e-6), rg_ok = compare(as_double(gain), want_g, 1e-5, 1e-6);
  INFO(rw_ok.describe() << " / " << rg_ok.describe());
  CHECK(rw_ok.ok());
  CHECK(rg_ok.ok());
}

TEST_CASE("AdamW's decay: zero gradient isolates it, the rule and groups choose who decays", "[optim][adamw]") {
  // With g = 0 the moments stay 0 and p = p * (1 - lr * wd) exactly: the decay alone is visible.
  auto step_with_zero_grad = [](optim::AdamW<>& opt, const nn::ParameterList<float>& params) {
    for (const auto& p : params) set_grad(p.tensor, std::vector<float>(static_cast<std::size_t>(p.tensor.numel()), 0.0f));
    opt.step();
  };
  auto fresh = [] {
    return nn::ParameterList<float>{{"embed.weight", parameter({1, 1, 1, 1}, {2, 2})},
                                    {"proj.weight", parameter({1, 1, 1, 1}, {2, 2})},
                                    {"proj.bias", parameter({1, 1}, {2})}};
  };
  const float decayed = static_cast<float>(1.0 - 0.1 * 0.5);

  SECTION("default rule: rank >= 2 decays") {
    const auto params = fresh();
    optim::AdamW opt(params, {.lr = 0.1, .weight_decay = 0.5});
    step_with_zero_grad(opt, params);
    CHECK(params[0].tensor.to_vector()[0] == decayed);
    CHECK(params[1].tensor.to_vector()[0] == decayed);
    CHECK(params[2].tensor.to_vector()[0] == 1.0f);
  }
  SECTION("a predicate on the name also excludes embeddings") {
    const auto params = fresh();
    optim::AdamW opt(params, {.lr = 0.1,
                              .weight_decay = 0.5,
                              .decay = [](const std::string& name, const Shape& shape) {
                                return optim::decay_matrices(name, shape) && !name.starts_with("embed.");
                              }});
    step_with_zero_grad(opt, params);
    CHECK(params[0].tensor.to_vector()[0] == 1.0f);
    CHECK(params[1].tensor.to_vector()[0] == decayed);
    CHECK(params[2].tensor.to_vector()[0] == 1.0f);
  }
  SECTION("groups: an explicit weight decay overrides the rule, lr_scale scales the step") {
    const auto params = fresh();
    std::vector<optim::ParameterGroup<>> groups{
        {.parameters = {params[0]}, .lr_scale = 2.0},                      // rule: decays, at lr 0.2
        {.parameters = {params[1], params[2]}, .weight_decay = 0.25}};     // both decay with 0.25
    optim::AdamW opt(groups, {.lr = 0.1, .weight_decay = 0.5});
    step_with_zero_grad(opt, params);
    CHECK(params[0].tensor.to_vector()[0] == static_cast<float>(1.0 - 0.2 * 0.5));
    CHECK(params[1].tensor.to_vector()[0] == static_cast<float>(1.0 - 0.1 * 0.25));
    CHECK(params[2].tensor.to_vector()[0] == static_cast<float>(1.0 - 0.1 * 0.25));
  }
}

TEST_CASE("a parameter group's lr_scale scales the Adam step", "[optim][adam]") {
  // Adam's first step is lr * g / (|g| + eps'): about lr per element; with lr_scale 0.5, half.
  auto a = parameter({0, 0}, {2}), b = parameter({0, 0}, {2});
  optim::Adam opt(std::vector<optim::ParameterGroup<>>{{.parameters = {{"a", a}}}, {.parameters = {{"b", b}}, .lr_scale = 0.5}},
                  {.lr = 0.1});
  set_grad(a, {1, -1});
  set_grad(b, {1, -1});
  opt.step();
  CHECK(a.to_vector()[0] == Approx(-0.1).epsilon(1e-6));
  CHECK(b.to_vector()[0] == Approx(-0.05).epsilon(1e-6));
  CHECK(b.to_vector()[1] == Approx(0.05).epsilon(1e-6));
}

TEST_CASE("Adam skips a parameter without a gradient and leaves its moments as they were", "[optim][adam]") {
  auto a = parameter({1, 2, 3}, {3}), b = parameter({4, 5, 6}, {3});
  optim::Adam opt(nn::ParameterList<float>{{"a", a}, {"b", b}}, {.lr = 0.1});
  set_grad(a, {1, 1, 1});
  set_grad(b, {1, 1, 1});
  opt.step();
  const auto b_after_one = b.to_vector();
  const auto b_m = opt.state()[2].tensor.clone(), b_v = opt.state()[3].tensor.clone();
  set_grad(a, {1, 1, 1});
  b.clear_grad();
  opt.step();
  CHECK(b.to_vector() == b_after_one);
  CHECK(bitwise_equal(opt.state()[2].tensor, b_m));
  CHECK(bitwise_equal(opt.state()[3].tensor, b_v));
  CHECK(opt.step_count() == 2);
}

TEST_CASE("the fused update is bitwise the same for any thread count", "[optim][adam]") {
  // 300001 elements: several tasks per thread, and a tail that is not a multiple of the SIMD width.
  const Index n = 300001;
  auto run = [&] {
    auto p = testing_support::random_uniform<float>({n}, -1, 1, 5);
    p.set_requires_grad();
    optim::AdamW opt(nn::ParameterList<float>{{"p", p}}, {.lr = 0.01, .weight_decay = 0.1, .decay = [](auto&, auto&) { return true; }});
    const auto g = testing_support::random_uniform<float>({n}, -1, 1, 6).to_vector();
    for (int s = 0; s < 3; ++s) {
      set_grad(p, g);
      opt.step();
    }
    return p;
  };
  const auto one = testing_support::with_threads(1, run), two = testing_support::with_threads(2, run),
             four = testing_support::with_threads(4, run);
  CHECK(bitwise_equal(one, two));
  CHECK(bitwise_equal(one, four));
  // And the elements agree with the scalar reference (SIMD body and scalar tail alike).
  auto want = as_double(testing_support::random_uniform<float>({n}, -1, 1, 5));
  RefAdam ref{0.01, 0.9, 0.999, 1e-8, 0.1, true, {}, {}, 0};
  const auto g = as_double(testing_support::random_uniform<float>({n}, -1, 1, 6));
  for (int s = 0; s < 3; ++s) ref.step(want, g);
  const auto r = compare(as_double(one), want, 1e-5, 1e-6);
  INFO(r.describe());
  CHECK(r.ok());
}

TEST_CASE("AdamW fits a least-squares problem", "[optim][adamw][learning]") {
  const LeastSquares problem;
  Tensor<float> w = zeros<float>({8, 1});
  w.set_requires_grad();
  optim::AdamW opt(nn::ParameterList<float>{{"w", w}}, {.lr = 0.05, .weight_decay = 0.0});
  const float initial = problem.loss(w).item();
  for (int s = 0; s < 600; ++s) {
    opt.zero_grad();
    problem.loss(w).backward();
    opt.step();
  }
  NoGradGuard no_grad;
  CHECK(problem.loss(w).item() < 1e-5f * initial);
  const auto r = compare(as_double(w), as_double(problem.w_true), 1e-2, 1e-2);
  INFO(r.describe());
  CHECK(r.ok());
}

TEST_CASE("Adam and AdamW reject bad settings", "[optim][adam][errors]") {
  const nn::ParameterList<float> params{{"w", parameter({1, 2}, {2})}};
  CHECK(message_of([&] { optim::Adam(params, {.lr = -1e-3}); }).starts_with("[Adam] learning rate must be finite and >= 0, got -0.001"));
  CHECK(message_of([&] { optim::AdamW(params, {.beta1 = 1.0}); }) == "[AdamW] beta1 must be in [0, 1), got 1.000000");
  CHECK(message_of([&] { optim::AdamW(params, {.beta2 = -0.1}); }).starts_with("[AdamW] beta2 must be in [0, 1)"));
  CHECK(message_of([&] { optim::Adam(params, {.eps = -1}); }).starts_with("[Adam] eps must be finite and >= 0"));
  CHECK(message_of([&] { optim::AdamW(params, {.weight_decay = -0.1}); }).starts_with("[AdamW] weight_decay must be finite and >= 0"));
  CHECK(message_of([&] { optim::AdamW(params, {.decay = nullptr}); }).starts_with("[AdamW] the decay rule is empty"));
  CHECK(message_of([&] {
          optim::AdamW(std::vector<optim::ParameterGroup<>>{{.parameters = params, .lr_scale = -1}});
        }).starts_with("[AdamW] parameter group 0: lr_scale must be finite and >= 0, got -1"));
  auto w = parameter({1, 2}, {2});
  optim::Adam opt(nn::ParameterList<float>{{"w", w}});
  CHECK(message_of([&] { opt.set_lr(std::numeric_limits<double>::infinity()); })
            .starts_with("[set_lr] Adam learning rate must be finite and >= 0, got inf"));
}
