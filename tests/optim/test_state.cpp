// Exact resume: state() + step_count() saved after 5 steps and loaded into a rebuilt optimizer
// give bitwise the same parameters and state after 5 more steps as 10 uninterrupted steps.
// And load_state's checks: every problem named, in one ValueError, with nothing changed.
#include <functional>
#include <memory>

#include "optim/optim_support.hpp"
#include "support/catch.hpp"

using namespace cerberus;
using namespace optim_test;
using testing_support::message_of;

namespace {

using Make = std::function<std::unique_ptr<optim::Optimizer<>>(const nn::ParameterList<float>&)>;

// Weights of a least-squares model, a bias, and two parameters that miss steps: "late" gets
// gradients from step 3 on (before the save), "later" only at steps 7 and 9 (after it), so a
// lazily created buffer is both saved and absent at the save.
nn::ParameterList<float> make_parameters(const std::vector<std::vector<float>>& values) {
  const Shape shapes[] = {{8, 1}, {1}, {3, 3}, {5}};
  const char* names[] = {"w", "b", "late", "later"};
  nn::ParameterList<float> out;
  for (std::size_t i = 0; i < 4; ++i) out.push_back({names[i], parameter(values[i], shapes[i])});
  return out;
}
std::vector<float> values(const Tensor<float>& t) { return t.to_vector(); }
std::vector<std::vector<float>> initial_values() {
  return {std::vector<float>(8, 0.1f), {0.5f}, values(testing_support::random_uniform<float>({9}, -1, 1, 3)),
          values(testing_support::random_uniform<float>({5}, -1, 1, 4))};
}
void train_step(optim::Optimizer<>& opt, const nn::ParameterList<float>& params, const LeastSquares& problem, int s) {
  optim::apply_schedule(optim::WarmupCosine(0.05, 3, 10, 0.1), opt);  // the lr follows step_count()
  opt.zero_grad();
  const Tensor<float>& w = params[0].tensor;
  const Tensor<float>& b = params[1].tensor;
  const Index begin = 16 * (s % 4);
  Tensor<float> loss = mean(square(matmul(problem.x.slice(0, begin, begin + 16), w) + b - problem.y.slice(0, begin, begin + 16)));
  loss.backward();
  auto minus_one = [](const Tensor<float>& p) {
    auto v = p.to_vector();
    for (auto& x : v) x -= 1.0f;
    return v;
  };
  if (s >= 3) set_grad(params[2].tensor, minus_one(params[2].tensor));
  if (s == 7 || s == 9) set_grad(params[3].tensor, minus_one(params[3].tensor));
  opt.step();
}

void check_resume(const char* what, const Make& make) {
  INFO(what);
  const LeastSquares problem;
  // Ten steps in one go.
  const auto straight = make_parameters(initial_values());
  auto opt = make(straight);
  for (int s = 0; s < 10; ++s) train_step(*opt, straight, problem, s);

  // Five steps, a "checkpoint" (copies of parameters and state), a rebuilt model and optimizer.
  std::vector<std::vector<float>> saved_params;
  nn::ParameterList<float> saved_state;
  std::int64_t saved_step = 0;
  {
    const auto first = make_parameters(initial_values());
    auto opt1 = make(first);
    for (int s = 0; s < 5; ++s) train_step(*opt1, first, problem, s);
    for (const auto& p : first) saved_params.push_back(p.tensor.to_vector());
    for (const auto& e : opt1->state()) saved_state.push_back({e.name, e.tensor.clone()});
    saved_step = opt1->step_count();
  }
  CHECK(saved_step == 5);
  const auto resumed = make_parameters(saved_params);
  auto opt2 = make(resumed);
  opt2->load_state(saved_state, saved_step);
  CHECK(opt2->step_count() == 5);
  for (int s = 5; s < 10; ++s) train_step(*opt2, resumed, problem, s);

  CHECK(opt2->step_count() == opt->step_count());
  CHECK(opt2->lr() == opt->lr());
  for (std::size_t i = 0; i < straight.size(); ++i) {
    INFO(straight[i].name);
    CHECK(bitwise_equal(resumed[i].tensor, straight[i].tensor));
  }
  const auto a = opt->state(), b = opt2->state();
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO(a[i].name);
    CHECK(a[i].name == b[i].name);
    CHECK(bitwise_equal(a[i].tensor, b[i].tensor));
  }
  // The run actually moved every parameter (a resume of a no-op would pass trivially).
  const auto start = make_parameters(initial_values());
  for (std::size_t i = 0; i < start.size(); ++i) CHECK_FALSE(bitwise_equal(start[i].tensor, straight[i].tensor));
}

}  // namespace

TEST_CASE("resuming from state() and step_count() gives bitwise identical updates", "[optim][state]") {
  check_resume("SGD, momentum, dampening, weight decay", [](const nn::ParameterList<float>& p) {
    return std::make_unique<optim::SGD<>>(p, optim::SGDOptions{.lr = 0.05, .momentum = 0.9, .dampening = 0.1, .weight_decay = 0.01});
  });
  check_resume("SGD, Nesterov", [](const nn::ParameterList<float>& p) {
    return std::make_unique<optim::SGD<>>(p, optim::SGDOptions{.lr = 0.05, .momentum = 0.9, .nesterov = true});
  });
  check_resume("Adam, L2", [](const nn::ParameterList<float>& p) {
    return std::make_unique<optim::Adam<>>(p, optim::AdamOptions{.weight_decay = 0.01});
  });
  check_resume("AdamW", [](const nn::ParameterList<float>& p) {
    return std::make_unique<optim::AdamW<>>(p, optim::AdamWOptions{.weight_decay = 0.1});
  });
}

TEST_CASE("state is named <parameter>.<buffer>", "[optim][state]") {
  const auto params = make_parameters(initial_values());
  optim::AdamW adamw(params);
  std::vector<std::string> names;
  for (const auto& e : adamw.state()) names.push_back(e.name);
  CHECK(names == std::vector<std::string>{"w.exp_avg", "w.exp_avg_sq", "b.exp_avg", "b.exp_avg_sq", "late.exp_avg",
                                          "late.exp_avg_sq", "later.exp_avg", "later.exp_avg_sq"});
  // state() hands out the live buffers: what the next step writes shows up in them.
  set_grad(params[1].tensor, {1.0f});
  const auto b_exp_avg = adamw.state()[2].tensor;
  adamw.step();
  CHECK(b_exp_avg.item() == Approx(0.1));
}

TEST_CASE("load_state reports every mismatch in one ValueError and changes nothing", "[optim][state][errors]") {
  auto w = parameter({1, 2, 3, 4, 5, 6}, {2, 3}), b = parameter({1, 2, 3}, {3});
  optim::Adam opt(nn::ParameterList<float>{{"w", w}, {"b", b}});
  const nn::ParameterList<float> bad{
      {"w.exp_avg", ones<float>({3, 2})},          // shape
      {"w.exp_avg_sq", ones<float>({2, 3})},       // fine
      {"x.exp_avg", ones<float>({3})},             // no such parameter
      {"b.momentum_buffer", ones<float>({3})},     // not an Adam buffer
      {"b.exp_avg", ones<float>({3})},             // fine
      {"b.exp_avg", ones<float>({3})},             // twice
  };                                               // and b.exp_avg_sq is missing
  const std::string message = message_of([&] { opt.load_state(bad, -1); });
  INFO(message);
  CHECK(message.starts_with("[load_state] Adam: 6 problems with the saved state: "));
  CHECK(message.find("step_count must be >= 0, got -1") != std::string::npos);
  CHECK(message.find("'w.exp_avg' has shape [3, 2], expected [2, 3] (the shape of parameter 'w')") != std::string::npos);
  CHECK(message.find("unknown state 'x.exp_avg' (no parameter named 'x')") != std::string::npos);
  CHECK(message.find("unknown state 'b.momentum_buffer' (expected '<parameter>.<buffer>' with buffer one of 'exp_avg', 'exp_avg_sq')") !=
        std::string::npos);
  CHECK(message.find("'b.exp_avg' appears twice") != std::string::npos);
  CHECK(message.find("missing 'b.exp_avg_sq'") != std::string::npos);
  // Nothing was written: the valid entries (ones) did not land in the zero-initialised buffers.
  for (const auto& e : opt.state())
    for (const float v : e.tensor.to_vector()) CHECK(v == 0.0f);
  CHECK(opt.step_count() == 0);
}

TEST_CASE("load_state copies values and treats an absent lazy buffer as not created yet", "[optim][state]") {
  auto w = parameter({1, 2}, {2}), v = parameter({3, 4}, {2});
  optim::SGD opt(nn::ParameterList<float>{{"w", w}, {"v", v}}, {.lr = 0.1, .momentum = 0.9});
  set_grad(w, {1, 1});
  set_grad(v, {1, 1});
  opt.step();
  REQUIRE(opt.state().size() == 2);
  auto saved = from_vector<float>({5, 6}, {2});
  opt.load_state(nn::ParameterList<float>{{"w.momentum_buffer", saved}}, 7);
  CHECK(opt.step_count() == 7);
  const auto state = opt.state();
  REQUIRE(state.size() == 1);  // v's buffer is gone: its next gradient starts it afresh
  CHECK(state[0].tensor.to_vector() == std::vector<float>{5, 6});
  saved.fill(0.0f);
  CHECK(opt.state()[0].tensor.to_vector() == std::vector<float>{5, 6});  // a copy, not the caller's tensor

  optim::SGD plain(nn::ParameterList<float>{{"w", w}}, {.lr = 0.1});
  CHECK(plain.state().empty());
  CHECK(message_of([&] { plain.load_state(nn::ParameterList<float>{{"w.momentum_buffer", saved}}, 1); }) ==
        "[load_state] SGD: 1 problem with the saved state: unknown state 'w.momentum_buffer' (SGD with these settings keeps no state)");
}
