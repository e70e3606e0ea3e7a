// Learning-rate schedules at their key steps (warm-up start and end, decay midpoint, end, past
// the end), their argument checks, and apply_schedule driving an optimizer.
#include <cmath>
#include <numbers>

#include "optim/optim_support.hpp"
#include "support/catch.hpp"

using namespace cerberus;
using namespace optim_test;
using testing_support::message_of;

TEST_CASE("ConstantLr", "[optim][schedule]") {
  const optim::ConstantLr s(0.3);
  CHECK(s.lr_at(0) == 0.3);
  CHECK(s.lr_at(1000000) == 0.3);
}

TEST_CASE("WarmupLinear: (s + 1) / warmup up to the peak, then linear to min_ratio", "[optim][schedule]") {
  const optim::WarmupLinear s(1.0, 4, 12, 0.1);
  CHECK(s.lr_at(0) == Approx(0.25));  // the first update already moves
  CHECK(s.lr_at(2) == Approx(0.75));
  CHECK(s.lr_at(3) == Approx(1.0));   // update number 4 = warmup_steps: the peak
  CHECK(s.lr_at(4) == Approx(1.0));
  CHECK(s.lr_at(8) == Approx(0.55));  // halfway: 0.1 + 0.9 * 0.5
  CHECK(s.lr_at(12) == Approx(0.1));
  CHECK(s.lr_at(500) == Approx(0.1));
  const optim::WarmupLinear no_warmup(2.0, 0, 10);
  CHECK(no_warmup.lr_at(0) == Approx(2.0));
  CHECK(no_warmup.lr_at(5) == Approx(1.0));
  CHECK(no_warmup.lr_at(10) == 0.0);
}

TEST_CASE("WarmupCosine: warm-up, then half a cosine to min_ratio", "[optim][schedule]") {
  const optim::WarmupCosine s(2.0, 2, 10);
  CHECK(s.lr_at(0) == Approx(1.0));
  CHECK(s.lr_at(1) == Approx(2.0));
  CHECK(s.lr_at(2) == Approx(2.0));
  CHECK(s.lr_at(4) == Approx(1.0 + std::cos(std::numbers::pi / 4)));  // a quarter of the way
  CHECK(s.lr_at(6) == Approx(1.0));
  CHECK(s.lr_at(10) == Approx(0.0).margin(1e-15));
  CHECK(s.lr_at(11) == 0.0);
  const optim::WarmupCosine floor(2.0, 2, 10, 0.1);
  CHECK(floor.lr_at(6) == Approx(1.1));  // 2 * (0.1 + 0.9 * 0.5)
  CHECK(floor.lr_at(10) == Approx(0.2));
  CHECK(floor.lr_at(99) == Approx(0.2));
}

TEST_CASE("InverseSqrt: warm-up, then peak * sqrt(warmup / (s + 1))", "[optim][schedule]") {
  const optim::InverseSqrt s(1.0, 4);
  CHECK(s.lr_at(0) == Approx(0.25));
  CHECK(s.lr_at(3) == Approx(1.0));
  CHECK(s.lr_at(4) == Approx(std::sqrt(4.0 / 5.0)));
  CHECK(s.lr_at(15) == Approx(0.5));
  CHECK(s.lr_at(99) == Approx(0.2));
  const optim::InverseSqrt no_warmup(1.0, 0);
  CHECK(no_warmup.lr_at(0) == Approx(1.0));
  CHECK(no_warmup.lr_at(3) == Approx(0.5));
}

TEST_CASE("a schedule chosen at run time", "[optim][schedule]") {
  optim::Schedule s = optim::WarmupCosine(2.0, 2, 10);
  CHECK(optim::lr_at(s, 6) == Approx(1.0));
  s = optim::InverseSqrt(1.0, 4);
  CHECK(optim::lr_at(s, 15) == Approx(0.5));
}

TEST_CASE("apply_schedule sets the lr of the optimizer's next step from its step_count", "[optim][schedule]") {
  auto w = parameter({0.0f}, {1});
  optim::SGD opt(nn::ParameterList<float>{{"w", w}}, {.lr = 123.0});
  const optim::WarmupLinear schedule(0.5, 2, 6);
  float expected = 0.0f;
  for (int s = 0; s < 8; ++s) {
    const double lr = optim::apply_schedule(schedule, opt);
    CHECK(lr == schedule.lr_at(s));
    CHECK(opt.lr() == lr);
    set_grad(w, {1.0f});
    opt.step();
    expected -= static_cast<float>(lr);
    CHECK(w.item() == Approx(expected));
  }
  optim::Schedule any = optim::ConstantLr(0.01);
  CHECK(optim::apply_schedule(any, opt) == 0.01);
  CHECK(opt.lr() == 0.01);
}

TEST_CASE("schedules reject impossible settings", "[optim][schedule][errors]") {
  CHECK(message_of([] { optim::WarmupLinear(1.0, 10, 10); }) ==
        "[WarmupLinear] needs 0 <= warmup_steps < total_steps, got warmup_steps 10 and total_steps 10");
  CHECK(message_of([] { optim::WarmupCosine(1.0, 2, 10, 1.5); }) == "[WarmupCosine] min_ratio must be in [0, 1], got 1.500000");
  CHECK(message_of([] { optim::ConstantLr(-1.0); }) == "[ConstantLr] learning rate must be finite and >= 0, got -1.000000");
  CHECK(message_of([] { optim::InverseSqrt(1.0, -1); }) == "[InverseSqrt] warmup_steps must be >= 0, got -1");
  CHECK(message_of([] { (void)optim::InverseSqrt(1.0, 4).lr_at(-2); }) == "[InverseSqrt] lr_at needs a step >= 0, got -2");
}
