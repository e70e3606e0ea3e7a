// Static, RuntimeStatic and Equal weighting against hand-computed values; the report (losses,
// weights, conflict cosines); absent tasks; gradients added to those already held; errors.
#include <cmath>
#include <limits>

#include "mtl/weighting_support.hpp"
#include "support/message.hpp"

using namespace cerberus;
using namespace weighting_test;
using testing_support::message_of;

namespace {

Problem three_tasks() {
  return Problem({0.5f, -1.0f}, {{0.25f, 0.0f}, {-0.5f, 0.125f}, {0.0f, 1.0f}}, {{1.0f, 2.0f}, {-1.0f, 0.5f}, {3.0f, -2.0f}});
}

}  // namespace

static_assert(mtl::weighting_task_count<mtl::Static<1.0, 1.0, 0.5>> == 3);
static_assert(mtl::weighting_task_count<mtl::Equal> == 0);
static_assert(mtl::weighting_task_count<mtl::RuntimeStatic> == 0);
static_assert(mtl::LossWeighting<mtl::Static<1.0, 1.0, 0.5>>);

TEST_CASE("Static<1, 1, 0.5> is the seed's L = sum_i lambda_i L_i, exactly", "[mtl][weighting]") {
  const Problem p = three_tasks();
  mtl::Static<1.0, 1.0, 0.5> w;
  const auto l = p.losses();
  const float want_total = (l.losses[0]->item() * 1.0f + l.losses[1]->item() * 1.0f) + l.losses[2]->item() * 0.5f;
  const auto r = w.backward(l, p.shared());

  CHECK(r.total == static_cast<double>(want_total));  // bitwise: the same float operations in the same order
  const double lambda[] = {1.0, 1.0, 0.5};
  Vec g_theta(2, 0.0);
  for (std::size_t i = 0; i < 3; ++i) {
    CHECK(r.losses[i] == Approx(p.loss_value(i)).epsilon(1e-6));
    CHECK(r.weights[i] == lambda[i]);
    g_theta = axpy(lambda[i], p.grad_theta(i), g_theta);
    check_close(as_vec(p.heads[i].grad()), axpy(lambda[i] - 1, p.grad_head(i), p.grad_head(i)));  // lambda_i * theta
  }
  check_close(as_vec(p.theta.grad()), g_theta);
  CHECK(r.gradient_cosine.empty());  // not measured unless asked
}

TEST_CASE("measure_conflict reports the cosines of the task gradients and leaves the same gradients", "[mtl][weighting]") {
  const Problem p = three_tasks();
  mtl::RuntimeStatic w({2.0, 0.5, 1.0}, {.measure_conflict = true});
  const auto r = w.backward(p.losses(), p.shared());
  REQUIRE(r.gradient_cosine.size() == 3);
  for (std::size_t i = 0; i < 3; ++i)
    for (std::size_t j = 0; j < 3; ++j) CHECK(r.gradient_cosine[i][j] == Approx(cosine(p.grad_theta(i), p.grad_theta(j))).epsilon(1e-5));
  CHECK(r.gradient_cosine[0][2] < 0);  // this problem has a conflicting pair
  const double lambda[] = {2.0, 0.5, 1.0};
  Vec g(2, 0.0);
  for (std::size_t i = 0; i < 3; ++i) g = axpy(lambda[i], p.grad_theta(i), g);
  check_close(as_vec(p.theta.grad()), g);
  for (std::size_t i = 0; i < 3; ++i) check_close(as_vec(p.heads[i].grad()), axpy(lambda[i] - 1, p.grad_head(i), p.grad_head(i)));
  double total = 0;
  for (std::size_t i = 0; i < 3; ++i) total += lambda[i] * p.loss_value(i);
  CHECK(r.total == Approx(total).epsilon(1e-6));
}

TEST_CASE("gradients are added to those the parameters already hold", "[mtl][weighting]") {
  for (bool measure : {false, true}) {
    INFO("measure_conflict " << measure);
    const Problem p = three_tasks();
    mtl::Equal w({.measure_conflict = measure});
    w.backward(p.losses(), p.shared());
    w.backward(p.losses(), p.shared());  // a second micro-batch accumulates
    Vec g(2, 0.0);
    for (std::size_t i = 0; i < 3; ++i) g = axpy(2.0, p.grad_theta(i), g);
    check_close(as_vec(p.theta.grad()), g);
    check_close(as_vec(p.heads[1].grad()), axpy(1.0, p.grad_head(1), p.grad_head(1)));
  }
}

TEST_CASE("an absent task contributes nothing and breaks nothing", "[mtl][weighting]") {
  for (bool measure : {false, true}) {
    INFO("measure_conflict " << measure);
    const Problem p = three_tasks();
    mtl::Static<1.0, 3.0, 0.5> w({.measure_conflict = measure});
    const auto r = w.backward(p.losses({true, false, true}), p.shared());
    CHECK(std::isnan(r.losses[1]));
    CHECK(r.weights[1] == 0.0);
    CHECK(r.weights[2] == 0.5);
    check_close(as_vec(p.theta.grad()), axpy(0.5, p.grad_theta(2), p.grad_theta(0)));
    CHECK_FALSE(p.heads[1].grad().defined());  // the absent task's head got nothing
    CHECK(r.total == Approx(p.loss_value(0) + 0.5 * p.loss_value(2)).epsilon(1e-6));
    if (measure) {
      for (std::size_t j = 0; j < 3; ++j) CHECK(std::isnan(r.gradient_cosine[1][j]));
      CHECK(r.gradient_cosine[0][2] == Approx(cosine(p.grad_theta(0), p.grad_theta(2))).epsilon(1e-5));
    }
  }
  // Every task absent: nothing runs, nothing changes.
  const Problem p = three_tasks();
  mtl::Equal w;
  const auto r = w.backward(p.losses({false, false, false}), p.shared());
  CHECK(r.total == 0);
  CHECK_FALSE(p.theta.grad().defined());
}

TEST_CASE("weight counts and bad inputs are clear errors", "[mtl][weighting]") {
  const Problem p = three_tasks();
  mtl::Static<1.0, 2.0> two;
  CHECK(message_of([&] { two.backward(p.losses(), p.shared()); }) ==
        "[Static] got 3 task losses but the weighting was built for 2 tasks");
  mtl::RuntimeStatic rs({1.0, 2.0});
  CHECK(message_of([&] { rs.backward(p.losses(), p.shared()); }) ==
        "[RuntimeStatic] 2 weights for 3 tasks; give one weight per task, in task order");
  mtl::RuntimeStatic unset;
  CHECK(message_of([&] { unset.backward(p.losses(), p.shared()); }).starts_with("[RuntimeStatic] no weights set"));
  CHECK(message_of([] { mtl::RuntimeStatic({1.0, -1.0}); }).starts_with("[RuntimeStatic] weight 1 is -1"));
  CHECK(message_of([] { mtl::RuntimeStatic({std::numeric_limits<double>::quiet_NaN()}); }).starts_with("[RuntimeStatic] weight 0 is"));

  mtl::Equal eq;
  auto l = p.losses();
  l.names.pop_back();
  CHECK(message_of([&] { eq.backward(l, p.shared()); }).starts_with("[Equal] got 2 task names for 3 task losses"));
  l = p.losses();
  l.losses[1] = from_vector<float>({1.0f, 2.0f});
  CHECK(message_of([&] { eq.backward(l, p.shared()); }) ==
        "[Equal] the loss of task 'task1' has shape [2]; a task loss must be a one-element tensor");
  l.losses[1] = from_vector<float>({1.0f});
  CHECK(message_of([&] { eq.backward(l, p.shared()); }).starts_with("[Equal] the loss of task 'task1' does not require grad"));
}
