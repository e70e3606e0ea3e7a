// The CUDA softmax family (softmax, log_softmax, logsumexp) against the CPU: rows, columns,
// transposed input, all -inf rows, float, double and bf16, forward and backward.
#include "check.cuh"

namespace {

using namespace cerberus;
using check::expect_close;
using check::random;

template <class T>
void check_softmax(Generator& gen, const char* type) {
  const std::vector<std::pair<Shape, int>> cases = {{{37, 129}, -1}, {{8, 5000}, 1}, {{3, 40, 7}, 1}, {{4, 3}, 0}, {{2, 3, 64, 64}, -1}};
  for (const auto& [shape, axis] : cases) {
    const auto x = random<T>(shape, gen, -8, 8);
    const auto dx = x.template to<cuda>();
    const std::string where = std::string(type) + " " + shape.to_string() + " axis " + std::to_string(axis);
    expect_close("softmax " + where, softmax(dx, axis), softmax(x, axis));
    expect_close("log_softmax " + where, log_softmax(dx, axis), log_softmax(x, axis));
    expect_close("logsumexp " + where, logsumexp(dx, axis), logsumexp(x, axis));
  }
  const auto x = random<T>({20, 30}, gen);
  expect_close(std::string(type) + " softmax of x.t()", softmax(x.template to<cuda>().t(), -1), softmax(x.t(), -1));
  // A row of -inf: softmax 0, log_softmax -inf, logsumexp -inf, as on the CPU.
  auto m = Tensor<T, cpu>::empty({2, 4});
  for (int i = 0; i < 8; ++i) m.data()[i] = i < 4 ? T(-std::numeric_limits<float>::infinity()) : T(static_cast<float>(i));
  expect_close(std::string(type) + " softmax of an all -inf row", softmax(m.template to<cuda>()), softmax(m));
  expect_close(std::string(type) + " logsumexp of an all -inf row", logsumexp(m.template to<cuda>()), logsumexp(m));
}

void check_softmax_grads(Generator& gen) {
  for (int kind = 0; kind < 3; ++kind) {
    auto p = check::leaf_pair(random<float>({12, 50}, gen));
    const auto w = random<float>(kind == 2 ? Shape{12} : Shape{12, 50}, gen);
    auto f = [&](const auto& x, const auto& wt) {
      using D = typename std::remove_cvref_t<decltype(x)>::device_type;
      Tensor<float, D> r = kind == 0 ? softmax(x) : kind == 1 ? log_softmax(x) : logsumexp(x);
      return sum(r * wt);
    };
    f(p.h, w).backward();
    f(p.d, w.to<cuda>()).backward();
    const char* names[] = {"softmax", "log_softmax", "logsumexp"};
    expect_close(std::string("grad of ") + names[kind], p.d.grad(), p.h.grad());
  }
}

}  // namespace

int main() {
  return check::run("test_softmax (cuda)", [] {
    Generator gen(20240703);
    check_softmax<float>(gen, "float");
    check_softmax<double>(gen, "double");
    check_softmax<bfloat16>(gen, "bf16");
    check_softmax_grads(gen);
  });
}
