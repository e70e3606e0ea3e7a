// linear (ops/linear.hpp): y = x W^T + b against a naive reference for 1-D, 2-D and 3-D x,
// strided x, no bias; gradcheck in double for x, W and b; shape errors.
#include <string>
#include <vector>

#include "cerberus/ops/linear.hpp"
#include "cerberus/tensor/factories.hpp"
#include "cerberus/testing/gradcheck.hpp"
#include "support/catch.hpp"
#include "support/reference.hpp"

using namespace cerberus;
using cerberus::testing::gradcheck;
using cerberus::testing_support::compare;
using cerberus::testing_support::message_of;
using cerberus::testing_support::random_uniform;
using cerberus::testing_support::values;

namespace {
std::vector<double> reference(const Tensor<double>& x, const Tensor<double>& w, const Tensor<double>& b) {
  const auto xv = values(x), wv = values(w);
  const Index in = w.size(1), out = w.size(0), rows = x.numel() / in;
  const auto bv = b.defined() ? values(b) : std::vector<double>(static_cast<std::size_t>(out), 0.0);
  std::vector<double> y;
  for (Index r = 0; r < rows; ++r)
    for (Index o = 0; o < out; ++o) {
      double s = bv[static_cast<std::size_t>(o)];
      for (Index k = 0; k < in; ++k) s += xv[static_cast<std::size_t>(r * in + k)] * wv[static_cast<std::size_t>(o * in + k)];
      y.push_back(s);
    }
  return y;
}
}  // namespace

TEST_CASE("linear matches x W^T + b for any leading dims, with or without bias") {
  const auto w = random_uniform<double>(Shape{7, 5}, -1, 1, 1);
  const auto b = random_uniform<double>(Shape{7}, -1, 1, 2);
  for (const Shape& s : {Shape{5}, Shape{3, 5}, Shape{2, 3, 5}, Shape{70, 5}}) {
    const auto x = random_uniform<double>(s, -1, 1, 3);
    const auto y = linear(x, w, b);
    Shape want_shape = s;
    want_shape[want_shape.rank() - 1] = 7;
    CHECK(y.shape() == want_shape);
    CHECK(compare(values(y), reference(x, w, b), 1e-12, 1e-12).ok());
    CHECK(compare(values(linear(x, w)), reference(x, w, {}), 1e-12, 1e-12).ok());
  }
  const auto xt = random_uniform<double>(Shape{5, 4}, -1, 1, 4).t();  // [4, 5], column-major
  CHECK(compare(values(linear(xt, w, b)), reference(xt.contiguous(), w, b), 1e-12, 1e-12).ok());
  const auto wf = random_uniform<float>(Shape{33, 17}, -1, 1, 5);
  const auto xf = random_uniform<float>(Shape{4, 9, 17}, -1, 1, 6);
  const auto bf = random_uniform<float>(Shape{33}, -1, 1, 7);
  CHECK(compare(values(linear(xf, wf, bf)), reference(xf.to<double>(), wf.to<double>(), bf.to<double>()), 1e-5, 1e-5).ok());
}

TEST_CASE("linear gradcheck in double: x, weight and bias; strided x; no bias") {
  using In = std::vector<Tensor<double>>;
  auto r = gradcheck([](const In& in) { return linear(in[0], in[1], in[2]); },
                     {random_uniform<double>(Shape{2, 3, 4}, -1, 1, 1), random_uniform<double>(Shape{5, 4}, -1, 1, 2),
                      random_uniform<double>(Shape{5}, -1, 1, 3)});
  INFO(r.message);
  CHECK(r.ok);
  r = gradcheck([](const In& in) { return linear(in[0].t(), in[1]); },
                {random_uniform<double>(Shape{4, 6}, -1, 1, 4), random_uniform<double>(Shape{3, 4}, -1, 1, 5)});
  INFO(r.message);
  CHECK(r.ok);
  // Only the weight requires grad (frozen input), the bias is constant.
  Tensor<double> w = random_uniform<double>(Shape{3, 4}, -1, 1, 6);
  w.set_requires_grad(true);
  const auto x = random_uniform<double>(Shape{2, 4}, -1, 1, 7);
  const auto b = random_uniform<double>(Shape{3}, -1, 1, 8);
  sum(linear(x, w, b)).backward();
  REQUIRE(w.grad().defined());
  CHECK(w.grad().shape() == Shape{3, 4});
}

TEST_CASE("linear shape errors name the op and the shapes") {
  CHECK(message_of([] { linear(zeros<float>(Shape{2, 3}), zeros<float>(Shape{4, 5})); }) ==
        "[linear] x [..., I] and weight [O, I] do not fit: x [2, 3], weight [4, 5]");
  CHECK(message_of([] { linear(zeros<float>(Shape{2, 3}), zeros<float>(Shape{4, 3}), zeros<float>(Shape{3})); }) ==
        "[linear] bias must be [O] = [4]: x [2, 3], weight [4, 3], bias [3]");
}
