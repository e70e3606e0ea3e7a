// Uncertainty, DWA, GradNorm and RLW against hand-computed values on the tiny problem of
// weighting_support.hpp; absent tasks; learned parameters that move where they should; the
// statistics of DWA, GradNorm and RLW saved and restored exactly, and malformed saved entries.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

#include "cerberus/optim/sgd.hpp"
#include "mtl/weighting_support.hpp"
#include "support/message.hpp"

using namespace cerberus;
using namespace weighting_test;
using testing_support::message_of;

namespace {

Problem three_tasks() {
  return Problem({0.5f, -1.0f}, {{0.25f, 0.0f}, {-0.5f, 0.125f}, {0.0f, 1.0f}}, {{1.0f, 2.0f}, {-1.0f, 0.5f}, {3.0f, -2.0f}});
}

void set_values(const Tensor<float>& t, const std::vector<float>& v) {
  NoGradGuard no_grad;
  t.assign(from_vector<float>(v));
}

// The problem's losses at step t, each task's falling at its own rate and task 1 absent at step
// 4, so that DWA's ratios, GradNorm's training rates and the counts of present steps all change.
mtl::TaskLosses losses_at(const Problem& p, int t) {
  mtl::TaskLosses l = p.losses(t == 4 ? std::vector<bool>{true, false, true} : std::vector<bool>{});
  for (std::size_t i = 0; i < l.losses.size(); ++i)
    if (l.losses[i]) l.losses[i] = Tensor<float>(*l.losses[i] * static_cast<float>(1.0 / (1.0 + 0.25 * t * static_cast<double>(i + 1))));
  return l;
}

bool same_bits(const Vec& a, const Vec& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (std::bit_cast<std::uint64_t>(a[i]) != std::bit_cast<std::uint64_t>(b[i])) return false;
  return true;
}

// Runs `uninterrupted` for 6 steps; after 3 its state goes (under `prefix`) into `resumed`, which
// must then observe (`observe(weighting, report, step)`) exactly what `uninterrupted` does, while
// `fresh`, never restored, must not: the saved state is what makes the difference.
template <class W, class Observe>
void check_resume_from_state(W uninterrupted, W resumed, W fresh, Observe observe) {
  const Problem p = three_tasks();
  auto step = [&](W& w, int t) {
    p.clear_grads();
    const mtl::WeightingReport r = w.backward(losses_at(p, t), p.shared());
    return observe(w, r, t);
  };
  for (int t = 0; t < 3; ++t) step(uninterrupted, t);
  mtl::WeightingState saved;
  uninterrupted.save_state(saved, "weighting.");
  REQUIRE_FALSE(saved.empty());
  for (const auto& [key, value] : saved) CHECK(key.starts_with("weighting."));
  resumed.restore_state(saved, "weighting.");
  bool fresh_differs = false;
  for (int t = 3; t < 6; ++t) {
    const Vec want = step(uninterrupted, t);
    CHECK(same_bits(step(resumed, t), want));
    fresh_differs = fresh_differs || !same_bits(step(fresh, t), want);
  }
  CHECK(fresh_differs);
  mtl::WeightingState end_uninterrupted, end_resumed;
  uninterrupted.save_state(end_uninterrupted);
  resumed.save_state(end_resumed);
  CHECK(end_resumed == end_uninterrupted);
}

}  // namespace

TEST_CASE("Uncertainty: L = sum_i exp(-s_i) L_i / 2 + s_i / 2, with the s_i's gradients", "[mtl][weighting]") {
  const Problem p = three_tasks();
  mtl::Uncertainty u(3);
  CHECK(u.log_variance().to_vector() == std::vector<float>{-0.5f, -0.5f, -0.5f});
  REQUIRE(u.parameters().size() == 1);
  CHECK(u.parameters()[0].name == "uncertainty.log_variance");
  static_assert(mtl::HasWeightingParameters<mtl::Uncertainty> && !mtl::HasWeightingParameters<mtl::Equal>);
  CHECK(mtl::weighting_parameters(u)[0].tensor.data() == u.log_variance().data());  // the same storage
  CHECK(mtl::weighting_parameters(mtl::Equal()).empty());
  const std::vector<double> s = {-0.5, 0.25, 1.0};
  set_values(u.log_variance(), {-0.5f, 0.25f, 1.0f});

  const auto r = u.backward(p.losses(), p.shared());
  Vec g(2, 0.0), ds(3);
  double total = 0;
  for (std::size_t i = 0; i < 3; ++i) {
    const double w = 0.5 * std::exp(-s[i]);
    CHECK(r.weights[i] == Approx(w).epsilon(1e-6));
    g = axpy(w, p.grad_theta(i), g);
    check_close(as_vec(p.heads[i].grad()), axpy(w - 1, p.grad_head(i), p.grad_head(i)));
    ds[i] = 0.5 * (1 - std::exp(-s[i]) * p.loss_value(i));
    total += w * p.loss_value(i) + 0.5 * s[i];
  }
  check_close(as_vec(p.theta.grad()), g);
  check_close(as_vec(u.log_variance().grad()), ds);
  CHECK(r.total == Approx(total).epsilon(1e-6));

  // An absent task's s_i gets a zero gradient.
  u.log_variance().clear_grad();
  u.backward(p.losses({true, false, true}), p.shared());
  CHECK(u.log_variance().grad().to_vector()[1] == 0.0f);
  CHECK(u.log_variance().grad().to_vector()[0] == Approx(ds[0]).epsilon(1e-5));
}

TEST_CASE("Uncertainty's s_i settle at log L_i under the optimizer", "[mtl][weighting]") {
  const Problem p = three_tasks();
  mtl::Uncertainty u(3);
  optim::SGD opt(u.parameters(), {.lr = 0.5});
  for (int step = 0; step < 300; ++step) {
    opt.zero_grad();
    p.clear_grads();  // theta and the heads stay where they are: the losses are fixed
    u.backward(p.losses(), p.shared());
    opt.step();
  }
  const auto s = u.log_variance().to_vector();
  for (std::size_t i = 0; i < 3; ++i) CHECK(s[i] == Approx(std::log(p.loss_value(i))).margin(1e-3));
}

TEST_CASE("DWA: w_i = K softmax(r_i / T), r_i = ratio of the last two epochs' losses", "[mtl][weighting]") {
  const Problem p = three_tasks();
  mtl::DWA dwa({.temperature = 2.0});
  const auto r1 = dwa.backward(p.losses(), p.shared());
  set_values(p.theta, {0.0f, -0.5f});
  const auto r2 = dwa.backward(p.losses(), p.shared());
  for (std::size_t i = 0; i < 3; ++i) CHECK((r1.weights[i] == 1.0 && r2.weights[i] == 1.0));  // the first two epochs
  CHECK(dwa.epochs_completed() == 2);

  set_values(p.theta, {0.25f, 0.5f});
  p.clear_grads();
  const auto r3 = dwa.backward(p.losses(), p.shared());
  double z = 0;
  Vec e(3);
  for (std::size_t i = 0; i < 3; ++i) z += (e[i] = std::exp(r2.losses[i] / r1.losses[i] / 2.0));
  Vec g(2, 0.0);
  double sum = 0;
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(r3.weights[i] == Approx(3 * e[i] / z).epsilon(1e-12));
    g = axpy(r3.weights[i], p.grad_theta(i), g);
    sum += r3.weights[i];
  }
  CHECK(sum == Approx(3.0));
  check_close(as_vec(p.theta.grad()), g);

  // Task 1 absent: the softmax runs over the two present tasks (weights sum to 2).
  p.clear_grads();
  const auto r4 = dwa.backward(p.losses({true, false, true}), p.shared());
  const double e0 = std::exp(r3.losses[0] / r2.losses[0] / 2.0), e2 = std::exp(r3.losses[2] / r2.losses[2] / 2.0);
  CHECK(r4.weights[0] == Approx(2 * e0 / (e0 + e2)).epsilon(1e-12));
  CHECK(r4.weights[1] == 0.0);
  CHECK(r4.weights[2] == Approx(2 * e2 / (e0 + e2)).epsilon(1e-12));
  CHECK_FALSE(p.heads[1].grad().defined());
  // Next step: task 1 missing from the newest epoch gets ratio 1.
  const auto r5 = dwa.backward(p.losses(), p.shared());
  const double f0 = std::exp(r4.losses[0] / r3.losses[0] / 2.0), f1 = std::exp(1.0 / 2.0), f2 = std::exp(r4.losses[2] / r3.losses[2] / 2.0);
  CHECK(r5.weights[1] == Approx(3 * f1 / (f0 + f1 + f2)).epsilon(1e-12));
}

TEST_CASE("DWA with epochs closed by end_epoch() averages the losses of each epoch", "[mtl][weighting]") {
  const Problem p = three_tasks();
  mtl::DWA dwa({.temperature = 1.5, .steps_per_epoch = 0});
  const auto a1 = dwa.backward(p.losses(), p.shared());
  set_values(p.theta, {0.0f, 0.0f});
  const auto a2 = dwa.backward(p.losses({true, true, false}), p.shared());
  dwa.end_epoch();
  set_values(p.theta, {1.0f, 0.5f});
  const auto b1 = dwa.backward(p.losses(), p.shared());
  CHECK(b1.weights == std::vector<double>{1.0, 1.0, 1.0});
  dwa.end_epoch();
  const auto c1 = dwa.backward(p.losses(), p.shared());
  const double avg_a[] = {(a1.losses[0] + a2.losses[0]) / 2, (a1.losses[1] + a2.losses[1]) / 2, a1.losses[2]};
  double z = 0;
  Vec e(3);
  for (std::size_t i = 0; i < 3; ++i) z += (e[i] = std::exp(b1.losses[i] / avg_a[i] / 1.5));
  for (std::size_t i = 0; i < 3; ++i) CHECK(c1.weights[i] == Approx(3 * e[i] / z).epsilon(1e-12));
  CHECK(message_of([] { mtl::DWA({.temperature = 0}); }).starts_with("[DWA] temperature must be finite and > 0"));
}

TEST_CASE("RLW: weights are a softmax of seeded normal samples", "[mtl][weighting]") {
  const Problem p = three_tasks();
  mtl::RLW rlw({.seed = 42});
  Generator gen(42);
  for (int step = 0; step < 3; ++step) {
    p.clear_grads();
    const auto z = normal<double>(Shape{3}, 0.0, 1.0, gen).to_vector();
    const bool absent = step == 2;  // the last step leaves task 0 out
    const auto r = rlw.backward(absent ? p.losses({false, true, true}) : p.losses(), p.shared());
    double total = 0;
    for (std::size_t i = absent ? 1 : 0; i < 3; ++i) total += std::exp(z[i]);
    Vec g(2, 0.0);
    double sum = 0;
    for (std::size_t i = absent ? 1 : 0; i < 3; ++i) {
      CHECK(r.weights[i] == Approx(std::exp(z[i]) / total).epsilon(1e-12));
      g = axpy(r.weights[i], p.grad_theta(i), g);
      sum += r.weights[i];
    }
    if (absent) CHECK(r.weights[0] == 0.0);
    CHECK(sum == Approx(1.0));
    check_close(as_vec(p.theta.grad()), g);
  }
  mtl::RLW a({.seed = 7}), b({.seed = 7});
  const auto wa = a.backward(p.losses(), p.shared()).weights, wb = b.backward(p.losses(), p.shared()).weights;
  CHECK(wa == wb);
  CHECK(a.backward(p.losses(), p.shared()).weights != wa);  // a new draw each step
}

TEST_CASE("GradNorm: the weights' gradient is sign(G_i - target_i) ||grad_W L_i||", "[mtl][weighting]") {
  const Problem p = three_tasks();
  mtl::GradNorm gn(3, {.alpha = 1.5});
  REQUIRE(gn.parameters().size() == 1);
  CHECK(gn.parameters()[0].name == "gradnorm.weights");
  // Step 1: initial losses are these, so every r_i = 1 and the target is the mean norm.
  const auto r1 = gn.backward(p.losses(), p.shared());
  Vec n(3), l0(3);
  double mean = 0;
  for (std::size_t i = 0; i < 3; ++i) {
    n[i] = norm(p.grad_theta(i));
    l0[i] = p.loss_value(i);
    mean += n[i] / 3;
  }
  Vec dw(3);
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(r1.weights[i] == 1.0);
    CHECK(gn.grad_norms()[i] == Approx(n[i]).epsilon(1e-6));
    CHECK(gn.target_norms()[i] == Approx(mean).epsilon(1e-6));
    dw[i] = (n[i] > mean ? 1.0 : -1.0) * n[i];
  }
  check_close(as_vec(gn.weights().grad()), dw);

  // Step 2 with weights (0.5, 1, 2) -> renormalised to sum 3, and new losses: r_i = (L_i/L_i(0)) / mean.
  set_values(gn.weights(), {0.5f, 1.0f, 2.0f});
  gn.weights().clear_grad();
  set_values(p.theta, {0.0f, -0.5f});
  p.clear_grads();
  const auto r2 = gn.backward(p.losses(), p.shared());
  const Vec w = {0.5 * 3 / 3.5, 1.0 * 3 / 3.5, 2.0 * 3 / 3.5};
  Vec G(3), lt(3), g(2, 0.0);
  double mean_g = 0, mean_lt = 0;
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(r2.weights[i] == Approx(w[i]).epsilon(1e-6));
    G[i] = w[i] * norm(p.grad_theta(i));
    lt[i] = p.loss_value(i) / l0[i];
    mean_g += G[i] / 3;
    mean_lt += lt[i] / 3;
    g = axpy(w[i], p.grad_theta(i), g);
  }
  for (std::size_t i = 0; i < 3; ++i) {
    const double target = mean_g * std::pow(lt[i] / mean_lt, 1.5);
    CHECK(gn.target_norms()[i] == Approx(target).epsilon(1e-5));
    dw[i] = (G[i] > target ? 1.0 : -1.0) * norm(p.grad_theta(i));
  }
  check_close(as_vec(gn.weights().grad()), dw);
  check_close(as_vec(p.theta.grad()), g);
  check_close(as_vec(p.heads[2].grad()), axpy(w[2] - 1, p.grad_head(2), p.grad_head(2)));
}

TEST_CASE("GradNorm's weights move toward balancing the gradient norms", "[mtl][weighting]") {
  // Task 0's gradient on theta is 4x task 1's; losses are held fixed, so the targets are equal norms.
  const Problem p({0.0f, 0.0f}, {{0.0f, 0.0f}, {0.0f, 0.0f}}, {{4.0f, 0.0f}, {0.0f, 1.0f}});
  mtl::GradNorm gn(2, {.alpha = 1.0});
  optim::SGD opt(gn.parameters(), {.lr = 0.01});
  auto imbalance = [&] { return std::abs(gn.grad_norms()[0] - gn.grad_norms()[1]) / (gn.grad_norms()[0] + gn.grad_norms()[1]); };
  gn.backward(p.losses(), p.shared());
  const double first = imbalance();
  CHECK(first == Approx(0.6));
  for (int step = 0; step < 60; ++step) {
    opt.step();
    opt.zero_grad();
    p.clear_grads();
    gn.backward(p.losses(), p.shared());
  }
  CHECK(imbalance() < 0.1);
  const auto w = gn.weights().to_vector();
  CHECK(w[0] < 0.6f);  // balanced: w0 = 2 * 1 / 5 = 0.4, w1 = 1.6
  CHECK(w[1] > 1.4f);
  CHECK(w[0] + w[1] == Approx(2.0f));

  // An absent task: its weight gets no gradient; the present one has nothing to balance against.
  gn.weights().clear_grad();
  gn.backward(p.losses({true, false}), p.shared());
  CHECK(gn.weights().grad().to_vector()[1] == 0.0f);
  CHECK(std::isnan(gn.grad_norms()[1]));
  mtl::GradNorm bad(2, {.layer = "trunk.w"});
  CHECK(message_of([&] { bad.backward(p.losses(), p.shared()); }) ==
        "[GradNorm] layer 'trunk.w' is not among the shared parameters (theta)");
}

TEST_CASE("DWA, GradNorm and RLW restored from save_state continue exactly as the uninterrupted weighting", "[mtl][weighting][state]") {
  SECTION("DWA: the loss history") {
    const auto weights = [](const mtl::DWA&, const mtl::WeightingReport& r, int) { return r.weights; };
    check_resume_from_state(mtl::DWA(), mtl::DWA(), mtl::DWA(), weights);
    // Epochs closed by end_epoch() after steps 0, 1, 3 and 5: the epoch of steps 2 and 3 spans
    // the interruption, so its half-filled sums and counts are state too.
    const auto by_hand = [](mtl::DWA& w, const mtl::WeightingReport& r, int t) {
      if (t != 2 && t != 4) w.end_epoch();
      return r.weights;
    };
    const mtl::DWAOptions o{.steps_per_epoch = 0};
    check_resume_from_state(mtl::DWA(o), mtl::DWA(o), mtl::DWA(o), by_hand);
  }
  SECTION("GradNorm: the initial losses set the targets and so the weights' gradient") {
    const auto targets_and_gradient = [](const mtl::GradNorm& g, const mtl::WeightingReport&, int) {
      Vec out = g.target_norms();
      for (const float x : g.weights().grad().to_vector()) out.push_back(x);
      g.weights().clear_grad();  // each step's own gradient (no optimizer here to clear it)
      return out;
    };
    check_resume_from_state(mtl::GradNorm(3), mtl::GradNorm(3), mtl::GradNorm(3), targets_and_gradient);
  }
  SECTION("RLW: the generator") {
    const auto weights = [](const mtl::RLW&, const mtl::WeightingReport& r, int) { return r.weights; };
    check_resume_from_state(mtl::RLW(), mtl::RLW(), mtl::RLW(), weights);
  }
}

TEST_CASE("A weighting's saved state: a fresh one round-trips; a missing or malformed entry names itself and changes nothing", "[mtl][weighting][state]") {
  mtl::WeightingState fresh;
  mtl::DWA().save_state(fresh);
  CHECK(fresh.at("dwa.sum").empty());  // no task seen yet
  mtl::DWA restored;
  restored.restore_state(fresh);
  CHECK(restored.epochs_completed() == 0);

  const Problem p = three_tasks();
  mtl::DWA dwa;
  for (int t = 0; t < 3; ++t) dwa.backward(losses_at(p, t), p.shared());
  mtl::WeightingState saved;
  dwa.save_state(saved, "w.");
  mtl::DWA target;
  auto damaged = saved;
  damaged.erase("w.dwa.older");
  CHECK(message_of([&] { target.restore_state(damaged); }) == "[DWA] the saved state has no entry 'dwa.sum'");  // the prefix matters
  CHECK(message_of([&] { target.restore_state(damaged, "w."); }) == "[DWA] the saved state has no entry 'w.dwa.older'");
  damaged = saved;
  damaged["w.dwa.count"] = "1 2";
  CHECK(message_of([&] { target.restore_state(damaged, "w."); }) == "[DWA] the saved state's entry 'w.dwa.count' is \"1 2\": expected 3 values, found 2");
  damaged = saved;
  damaged["w.dwa.epochs"] = "two";
  CHECK(message_of([&] { target.restore_state(damaged, "w."); }) ==
        "[DWA] the saved state's entry 'w.dwa.epochs' is \"two\": expected non-negative integers separated by single spaces");
  CHECK(target.epochs_completed() == 0);  // every failure above left it as it was
  target.restore_state(saved, "w.");
  CHECK(target.epochs_completed() == dwa.epochs_completed());

  mtl::WeightingState gn_saved;
  mtl::GradNorm(3).save_state(gn_saved);
  CHECK(message_of([&] { mtl::GradNorm(2).restore_state(gn_saved); }) ==
        "[GradNorm] the saved state's entry 'gradnorm.initial_loss' is \"nan nan nan\": expected 2 values, found 3");
  mtl::WeightingState rlw_saved;
  mtl::RLW().save_state(rlw_saved);
  rlw_saved["rlw.generator.offset"] = "-1";
  CHECK(message_of([&] { mtl::RLW().restore_state(rlw_saved); }) ==
        "[RLW] the saved state's entry 'rlw.generator.offset' is \"-1\": expected non-negative integers separated by single spaces");
}
