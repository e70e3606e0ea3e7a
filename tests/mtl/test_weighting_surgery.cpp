// Gradient surgery (PCGrad, MGDA, CAGrad) against closed forms and independent brute-force
// solutions; absent tasks; a conflicting problem where surgery reaches a lower worst-task loss
// than plain summation; PCGrad's generator saved and restored.
#include <algorithm>
#include <cmath>
#include <numbers>

#include "cerberus/optim/sgd.hpp"
#include "mtl/weighting_support.hpp"
#include "support/message.hpp"

using namespace cerberus;
using namespace weighting_test;
using testing_support::message_of;

namespace {

// theta = (1, 1): g0 = theta - a0 = (1, 0), g1 = (-1, 1) (cosine -1/sqrt 2), g2 = (0.5, 2).
Problem conflict(std::size_t tasks = 2) {
  std::vector<std::vector<float>> heads(tasks, {0.0f, 0.0f}), a = {{0.0f, 1.0f}, {2.0f, 0.0f}, {0.5f, -1.0f}};
  a.resize(tasks);
  return Problem({1.0f, 1.0f}, heads, a);
}

mtl::GramMatrix gram(const std::vector<Vec>& g) {
  mtl::GramMatrix G(g.size(), std::vector<double>(g.size()));
  for (std::size_t i = 0; i < g.size(); ++i)
    for (std::size_t j = 0; j < g.size(); ++j) G[i][j] = dot(g[i], g[j]);
  return G;
}

// PCGrad written on the vectors, with the given order of the other tasks for each task.
Vec pcgrad_reference(const std::vector<Vec>& g, const std::vector<std::vector<std::size_t>>& orders) {
  Vec total(g[0].size(), 0.0);
  for (std::size_t i = 0; i < g.size(); ++i) {
    Vec pc = g[i];
    for (std::size_t j : orders[i]) {
      const double inner = dot(pc, g[j]);
      if (inner < 0) pc = axpy(-inner / dot(g[j], g[j]), g[j], pc);
    }
    total = axpy(1.0, pc, total);
  }
  return total;
}

}  // namespace

TEST_CASE("PCGrad removes the conflicting component of each task gradient", "[mtl][surgery]") {
  const Problem p = conflict();
  mtl::PCGrad pc;
  const auto r = pc.backward(p.losses(), p.shared());
  const Vec g0 = p.grad_theta(0), g1 = p.grad_theta(1);
  REQUIRE(g0 == Vec{1, 0});
  REQUIRE(g1 == Vec{-1, 1});
  // pc0 = g0 - <g0,g1>/|g1|^2 g1 = (0.5, 0.5), pc1 = g1 - <g1,g0>/|g0|^2 g0 = (0, 1).
  const Vec d = as_vec(p.theta.grad());
  check_close(d, {0.5, 1.5});
  CHECK(dot(d, g0) >= 0);
  CHECK(dot(d, g1) >= 0);
  CHECK(r.weights == Vec{2.0, 1.5});  // d = 2 g0 + 1.5 g1
  CHECK(r.gradient_cosine[0][1] == Approx(-1 / std::sqrt(2.0)).epsilon(1e-6));
  CHECK(r.gradient_cosine[0][0] == 1.0);
  check_close(as_vec(p.heads[0].grad()), p.grad_head(0));  // heads: their own plain gradient
  check_close(as_vec(p.heads[1].grad()), p.grad_head(1));
  CHECK(r.total == Approx(p.loss_value(0) + p.loss_value(1)).epsilon(1e-6));

  // Without conflict PCGrad is the plain sum.
  const Problem q({1.0f, 1.0f}, {{0.0f, 0.0f}, {0.0f, 0.0f}}, {{0.0f, 1.0f}, {0.0f, -1.0f}});
  const auto rq = pc.backward(q.losses(), q.shared());
  CHECK(rq.weights == Vec{1.0, 1.0});
  check_close(as_vec(q.theta.grad()), axpy(1.0, q.grad_theta(0), q.grad_theta(1)));
}

TEST_CASE("PCGrad with three tasks matches the vector algorithm for its random orders, reproducibly", "[mtl][surgery]") {
  const Problem p = conflict(3);
  std::vector<Vec> g;
  for (std::size_t i = 0; i < 3; ++i) g.push_back(p.grad_theta(i));
  // Every combination of orders (two per task); the result must be one of them.
  std::vector<Vec> candidates;
  for (int mask = 0; mask < 8; ++mask) {
    std::vector<std::vector<std::size_t>> orders(3);
    for (std::size_t i = 0; i < 3; ++i) {
      for (std::size_t j = 0; j < 3; ++j)
        if (j != i) orders[i].push_back(j);
      if (mask >> i & 1) std::swap(orders[i][0], orders[i][1]);
    }
    candidates.push_back(pcgrad_reference(g, orders));
  }
  mtl::PCGrad a({.seed = 3}), b({.seed = 3});
  Generator same_seed(3);
  for (int step = 0; step < 4; ++step) {
    p.clear_grads();
    const Vec coefficients_a = a.backward(p.losses(), p.shared()).weights;
    const Vec d = as_vec(p.theta.grad());
    bool found = false;
    for (const auto& c : candidates) found = found || (std::abs(c[0] - d[0]) < 1e-5 && std::abs(c[1] - d[1]) < 1e-5);
    CHECK(found);
    CHECK(coefficients_a == b.backward(p.losses(), p.shared()).weights);  // same seed, same orders
    const Vec expected = mtl::pcgrad_coefficients(gram(g), same_seed);
    for (std::size_t i = 0; i < 3; ++i) CHECK(coefficients_a[i] == Approx(expected[i]).epsilon(1e-9));
  }
}

TEST_CASE("MGDA's min-norm point of two gradients is the closed form", "[mtl][surgery]") {
  const Problem p = conflict();
  mtl::MGDA mgda;
  const auto r = mgda.backward(p.losses(), p.shared());
  const Vec g0 = p.grad_theta(0), g1 = p.grad_theta(1);
  const Vec diff = axpy(-1.0, g1, g0);
  const double alpha = std::clamp(dot(axpy(-1.0, g0, g1), g1) / dot(diff, diff), 0.0, 1.0);  // 3/5
  CHECK(alpha == Approx(0.6));
  CHECK(r.weights[0] == Approx(alpha).epsilon(1e-12));
  CHECK(r.weights[1] == Approx(1 - alpha).epsilon(1e-12));
  const Vec d = as_vec(p.theta.grad());
  check_close(d, axpy(alpha, g0, axpy(-alpha, g1, g1)));  // (0.2, 0.4)
  CHECK(dot(d, g0) >= dot(d, d) - 1e-6);  // a common descent direction
  CHECK(dot(d, g1) >= dot(d, d) - 1e-6);
  check_close(as_vec(p.heads[0].grad()), p.grad_head(0));

  // Clamped case: g1 = 2 g0 + small: the min-norm point is g0 itself.
  CHECK(mtl::min_norm_coefficients(gram({{1, 0}, {2, 0.1}})) == Vec{1.0, 0.0});
  // l2 normalisation: two unit directions weigh 1/2 each, so c_i = 1 / (2 ||g_i||).
  const auto c = mtl::mgda_coefficients(gram({{3, 0}, {0, 0.5}}), {1, 1}, {.normalization = mtl::MGDANormalization::l2});
  CHECK(c[0] == Approx(1.0 / 6));
  CHECK(c[1] == Approx(1.0));
}

TEST_CASE("MGDA's Frank-Wolfe solver finds the min-norm point of several gradients", "[mtl][surgery]") {
  const std::vector<std::vector<Vec>> cases = {
      {{1, 0, 0}, {0, 1, 0}, {0, 0, 1}},                      // interior: 1/3 each
      {{1, 0.2, -0.5}, {-0.8, 1, 0.1}, {0.3, -1, 0.9}, {2, 2, 2}},
      {{1, 1}, {1, -1}, {-1, 0.1}},                          // 0 lies in the hull
      {{1, 2}, {2, 1}, {3, 3}},                              // a vertex far away: weight 0
  };
  for (const auto& g : cases) {
    const auto G = gram(g);
    const Vec x = mtl::min_norm_coefficients(G);
    double sum = 0, xGx = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      CHECK(x[i] >= 0);
      sum += x[i];
      for (std::size_t j = 0; j < x.size(); ++j) xGx += x[i] * G[i][j] * x[j];
    }
    CHECK(sum == Approx(1.0));
    // Optimality (KKT): no vertex improves, (G x)_i >= x^T G x.
    for (std::size_t i = 0; i < x.size(); ++i) {
      double gx = 0;
      for (std::size_t j = 0; j < x.size(); ++j) gx += G[i][j] * x[j];
      CHECK(gx >= xGx - 1e-8);
    }
    // And no grid point of the simplex does better.
    double best = 1e300;
    const int n = 120;
    for (int a = 0; a <= n; ++a)
      for (int b = 0; a + b <= n; ++b) {
        Vec y(x.size(), 0.0);
        y[0] = double(a) / n;
        y[1] = double(b) / n;
        if (x.size() == 3) y[2] = 1 - y[0] - y[1];
        else { y[2] = (1 - y[0] - y[1]) / 2; y[3] = y[2]; }
        double v = 0;
        for (std::size_t i = 0; i < y.size(); ++i)
          for (std::size_t j = 0; j < y.size(); ++j) v += y[i] * G[i][j] * y[j];
        best = std::min(best, v);
      }
    CHECK(xGx <= best + 1e-12);
  }
  const Vec x = mtl::min_norm_coefficients(gram({{1, 0, 0}, {0, 1, 0}, {0, 0, 1}}));
  for (double v : x) CHECK(v == Approx(1.0 / 3).epsilon(1e-6));
}

TEST_CASE("CAGrad on known cases: symmetric, and the best worst-task improvement within the ball", "[mtl][surgery]") {
  // Orthogonal gradients of equal norm: w = (1/2, 1/2), d = (1 + calpha) g0 / (1 + calpha^2).
  {
    const auto c = mtl::cagrad_coefficients(gram({{1, 0}, {0, 1}}), {.calpha = 0.5});
    CHECK(c[0] == Approx(0.6).epsilon(1e-6));
    CHECK(c[1] == Approx(0.6).epsilon(1e-6));
  }
  // calpha = 0: the average gradient.
  {
    const auto c = mtl::cagrad_coefficients(gram({{1, 0}, {-1, 1}}), {.calpha = 0.0});
    CHECK(c[0] == Approx(0.5));
    CHECK(c[1] == Approx(0.5));
  }
  // The conflicting pair, through backward: d (before rescaling) lies on the sphere ||d - g0|| = c
  // and maximises min_i <g_i, d> over it (brute force over the circle).
  for (double calpha : {0.2, 0.5, 0.9}) {
    INFO("calpha " << calpha);
    const Problem p = conflict();
    mtl::CAGrad ca({.calpha = calpha});
    ca.backward(p.losses(), p.shared());
    const Vec g0 = p.grad_theta(0), g1 = p.grad_theta(1);
    const Vec mean = {(g0[0] + g1[0]) / 2, (g0[1] + g1[1]) / 2};
    const double c = calpha * norm(mean);
    Vec d = as_vec(p.theta.grad());
    for (double& v : d) v *= 1 + calpha * calpha;
    CHECK(norm(axpy(-1.0, mean, d)) == Approx(c).epsilon(1e-4));
    double best = -1e300;
    for (int k = 0; k < 200000; ++k) {
      const double angle = 2 * std::numbers::pi * k / 200000;
      const Vec e = {mean[0] + c * std::cos(angle), mean[1] + c * std::sin(angle)};
      best = std::max(best, std::min(dot(g0, e), dot(g1, e)));
    }
    CHECK(std::min(dot(g0, d), dot(g1, d)) == Approx(best).epsilon(1e-4));
    CHECK(std::min(dot(g0, d), dot(g1, d)) > std::min(dot(g0, mean), dot(g1, mean)));  // better than the mean
    check_close(as_vec(p.heads[1].grad()), p.grad_head(1));
  }
  CHECK(message_of([] { mtl::CAGrad({.calpha = -1}); }) == "[CAGrad] calpha must be finite and >= 0");
}

TEST_CASE("surgery with absent tasks, a single task, and gradients already held", "[mtl][surgery]") {
  // Task 2 absent: the same result as the two-task problem.
  {
    const Problem p = conflict(3);
    mtl::PCGrad pc;
    const auto r = pc.backward(p.losses({true, true, false}), p.shared());
    check_close(as_vec(p.theta.grad()), {0.5, 1.5});
    CHECK(std::isnan(r.losses[2]));
    CHECK(r.weights[2] == 0.0);
    CHECK(std::isnan(r.gradient_cosine[2][0]));
    CHECK(std::isnan(r.gradient_cosine[1][2]));
    CHECK_FALSE(p.heads[2].grad().defined());
  }
  // One task present: its own gradient, whatever the method.
  for (int method = 0; method < 3; ++method) {
    const Problem p = conflict(3);
    const auto l = p.losses({false, true, false});
    mtl::WeightingReport r;
    if (method == 0) r = mtl::PCGrad().backward(l, p.shared());
    if (method == 1) r = mtl::MGDA().backward(l, p.shared());
    if (method == 2) r = mtl::CAGrad().backward(l, p.shared());
    // CAGrad: g0 = g, w = 1, d = (g + calpha g) / (1 + calpha^2) = 1.5 g / 1.25 = 1.2 g.
    const double factor = method == 2 ? 1.2 : 1.0;
    check_close(as_vec(p.theta.grad()), axpy(factor - 1, p.grad_theta(1), p.grad_theta(1)));
    CHECK(r.weights[1] == Approx(factor));
    CHECK(r.gradient_cosine[1][1] == 1.0);
  }
  // Gradients already held are kept: the combined gradient is added to them.
  {
    const Problem p = conflict();
    p.loss(0).backward();  // theta.grad = g0, head0.grad = theta
    mtl::MGDA mgda;
    mgda.backward(p.losses(), p.shared());
    check_close(as_vec(p.theta.grad()), {1.0 + 0.2, 0.4});
    check_close(as_vec(p.heads[0].grad()), axpy(1.0, p.grad_head(0), p.grad_head(0)));
  }
  // No task present: nothing happens.
  {
    const Problem p = conflict();
    const auto r = mtl::CAGrad().backward(p.losses({false, false}), p.shared());
    CHECK_FALSE(p.theta.grad().defined());
    CHECK(r.total == 0);
  }
}

TEST_CASE("on a conflicting problem, surgery reaches a lower worst-task loss than summation", "[mtl][surgery]") {
  // theta in R^2, L0 = 50 <u, theta>^2, L1 = 0.5 <v, theta>^2 with u, v 143 degrees apart: the
  // gradients conflict and task 0's dominates. Same SGD, learning rate and steps for each method.
  const double phi = 2.5;
  const Tensor<float> u = from_vector<float>({1.0f, 0.0f}), v = from_vector<float>({float(std::cos(phi)), float(std::sin(phi))});
  auto train = [&](auto weighting) {
    Tensor<float> theta = parameter({1.0f, 2.0f});
    optim::SGD opt(nn::ParameterList<float>{{"theta", theta}}, {.lr = 0.009});
    auto losses = [&] {
      const Tensor<float> a = sum(theta * u), b = sum(theta * v);
      mtl::TaskLosses l{{"big", "small"}, {}};
      l.losses.emplace_back(Tensor<float>(a * a * 50.0f));
      l.losses.emplace_back(Tensor<float>(b * b * 0.5f));
      return l;
    };
    double first_cosine = 0;
    for (int step = 0; step < 100; ++step) {
      opt.zero_grad();
      const auto r = weighting.backward(losses(), nn::ParameterList<float>{{"theta", theta}});
      if (step == 0) first_cosine = r.gradient_cosine[0][1];
      opt.step();
    }
    const auto l = losses();
    return std::pair{std::max(l.losses[0]->item(), l.losses[1]->item()), first_cosine};
  };
  const auto [plain, plain_cos] = train(mtl::Equal({.measure_conflict = true}));
  const auto [pcgrad, pc_cos] = train(mtl::PCGrad());
  const auto [cagrad, ca_cos] = train(mtl::CAGrad());
  INFO("worst-task loss after 100 steps: sum " << plain << ", PCGrad " << pcgrad << ", CAGrad " << cagrad);
  CHECK(plain_cos < -0.5);  // the constructed conflict
  CHECK(pc_cos == Approx(plain_cos));
  CHECK(pcgrad < 0.5 * plain);
  CHECK(cagrad < plain);
}

TEST_CASE("PCGrad restored from save_state shuffles as the uninterrupted one", "[mtl][surgery][state]") {
  const Problem p = conflict(3);
  mtl::PCGrad uninterrupted({.seed = 5}), resumed({.seed = 99});
  for (int step = 0; step < 3; ++step) {
    p.clear_grads();
    uninterrupted.backward(p.losses(), p.shared());
  }
  mtl::WeightingState saved;
  uninterrupted.save_state(saved, "weighting.");
  CHECK(saved.at("weighting.pcgrad.generator.seed") == "5");
  CHECK(saved.at("weighting.pcgrad.generator.offset") == std::to_string(uninterrupted.generator().offset()));
  resumed.restore_state(saved, "weighting.");
  for (int step = 0; step < 6; ++step) {
    p.clear_grads();
    const Vec want = uninterrupted.backward(p.losses(), p.shared()).weights;
    p.clear_grads();
    CHECK(resumed.backward(p.losses(), p.shared()).weights == want);
  }
  CHECK(resumed.generator().offset() == uninterrupted.generator().offset());
  saved.erase("weighting.pcgrad.generator.seed");
  CHECK(message_of([&] { resumed.restore_state(saved, "weighting."); }) == "[PCGrad] the saved state has no entry 'weighting.pcgrad.generator.seed'");
}
