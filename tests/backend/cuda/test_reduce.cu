// CUDA reductions (sum, mean, max, min, argmax, argmin) and broadcast
// gradients (sum_to_shape) against the CPU on the same random inputs: rows, columns, several
// axes, non-contiguous and expanded inputs, float, double and bf16, forward and backward.
#include "check.cuh"

namespace {

using namespace cerberus;
using check::expect_close;
using check::random;

template <class T>
void check_reductions(Generator& gen, const char* type) {
  using S = std::conditional_t<std::is_same_v<T, double>, double, float>;
  struct Case {
    Shape shape;
    std::vector<int> axes;
  };
  const std::vector<Case> cases = {
      {{37, 129}, {1}},          {{37, 129}, {0}},           {{5, 2000}, {1}},        {{3, 7, 11}, {0, 2}},
      {{4, 5, 6, 7}, {1, 2}},    {{64, 3000}, {-1}},         {{9}, {0}},              {{2, 1, 300, 3}, {2}},
      {{6, 8, 10}, {0, 1, 2}},
  };
  for (const auto& c : cases) {
    const auto x = random<T>(c.shape, gen);
    const auto dx = x.template to<cuda>();
    const std::string where = std::string(type) + " " + c.shape.to_string() + " axes " + std::to_string(c.axes.size() == 1 ? c.axes[0] : 99);
    expect_close("sum " + where, sum(dx, c.axes), sum(x, c.axes));
    expect_close("mean keepdim " + where, mean(dx, c.axes, true), mean(x, c.axes, true));
    expect_close("max " + where, max(dx, c.axes), max(x, c.axes));
    expect_close("min " + where, min(dx, c.axes), min(x, c.axes));
    if (c.axes.size() == 1) {
      check::expect_equal_ids("argmax " + where, argmax(dx, c.axes[0]), argmax(x, c.axes[0]));
      check::expect_equal_ids("argmin " + where, argmin(dx, c.axes[0], true), argmin(x, c.axes[0], true));
    }
  }
  // Every axis, a transposed input, an expanded (stride-0) input and an expression input.
  const auto x = random<T>({48, 70}, gen);
  const auto dx = x.template to<cuda>();
  expect_close(std::string(type) + " sum of everything", sum(dx), sum(x));
  expect_close(std::string(type) + " sum over axis 0 of x.t()", sum(dx.t(), 0), sum(x.t(), 0));
  expect_close(std::string(type) + " max over axis 1 of x.t()", max(dx.t(), 1), max(x.t(), 1));
  const auto col = random<T>({33, 1}, gen);
  expect_close(std::string(type) + " sum of an expanded [33,1]->[33,40]", sum(col.template to<cuda>().expand({33, 40}), 1),
               sum(col.expand({33, 40}), 1));
  expect_close(std::string(type) + " mean of an expression exp(x) * 2", mean(exp(dx) * S(2), 1), mean(exp(x) * S(2), 1));
  check::expect_equal_ids(std::string(type) + " argmax of everything", argmax(dx), argmax(x));
}

void check_nan_and_ties() {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  auto x = Tensor<float, cpu>::empty({2, 5});
  const float values[] = {1, 3, 3, nan, 2, 4, 4, 1, 4, 0};
  for (int i = 0; i < 10; ++i) x.data()[i] = values[i];
  const auto dx = x.to<cuda>();
  check::expect_equal_ids("argmax: first NaN, else first of tied maxima", argmax(dx, 1), argmax(x, 1));
  const auto mx = max(dx, 1).to_vector();
  check::report(std::isnan(mx[0]) && mx[1] == 4.0f, "max propagates NaN", "row maxima " + check::fmt(mx[0]) + ", " + check::fmt(mx[1]));
}

void check_reduction_grads(Generator& gen) {
  const auto values = random<float>({6, 9, 10}, gen);
  for (int kind = 0; kind < 4; ++kind) {
    auto p = check::leaf_pair(values);
    const auto w = random<float>({6, 10}, gen);
    auto f = [&](const auto& x, const auto& wt) {
      using D = typename std::remove_cvref_t<decltype(x)>::device_type;
      Tensor<float, D> r;
      if (kind == 0) r = sum(x, 1);
      else if (kind == 1) r = mean(x, 1);
      else if (kind == 2) r = max(x, 1);
      else r = min(x, 1);
      return sum(r * wt);
    };
    f(p.h, w).backward();
    f(p.d, w.to<cuda>()).backward();
    const char* names[] = {"sum", "mean", "max", "min"};
    expect_close(std::string("grad of ") + names[kind] + " over axis 1", p.d.grad(), p.h.grad());
  }
}

// Broadcast elementwise autodiff: the gradients of the broadcast operands go through sum_to_shape.
void check_broadcast_grads(Generator& gen) {
  auto x = check::leaf_pair(random<float>({4, 7, 33}, gen));
  auto b = check::leaf_pair(random<float>({33}, gen));
  auto c = check::leaf_pair(random<float>({7, 1}, gen));
  auto s = check::leaf_pair(random<float>(Shape{}, gen));
  const auto w = random<float>({4, 7, 33}, gen);
  auto f = [](const auto& x_, const auto& b_, const auto& c_, const auto& s_, const auto& w_) {
    using D = typename std::remove_cvref_t<decltype(x_)>::device_type;
    const Tensor<float, D> y = gelu(x_ * b_ + c_) * s_;
    return sum(y * w_);
  };
  f(x.h, b.h, c.h, s.h, w).backward();
  f(x.d, b.d, c.d, s.d, w.to<cuda>()).backward();
  expect_close("sum_to_shape: grad of x [4,7,33] in gelu(x * b + c) * s", x.d.grad(), x.h.grad());
  expect_close("sum_to_shape: grad of b [33]", b.d.grad(), b.h.grad());
  expect_close("sum_to_shape: grad of c [7,1]", c.d.grad(), c.h.grad());
  expect_close("sum_to_shape: grad of scalar s []", s.d.grad(), s.h.grad());
  auto e = check::leaf_pair(random<float>({5, 1}, gen));
  sum(e.h.expand({5, 8}) * 2.0f).backward();
  sum(e.d.expand({5, 8}) * 2.0f).backward();
  expect_close("sum_to_shape: grad through expand()", e.d.grad(), e.h.grad());
}

}  // namespace

int main() {
  return check::run("test_reduce (cuda)", [] {
    Generator gen(20240701);
    check_reductions<float>(gen, "float");
    check_reductions<double>(gen, "double");
    check_reductions<bfloat16>(gen, "bf16");
    check_nan_and_ties();
    check_reduction_grads(gen);
    check_broadcast_grads(gen);
  });
}
