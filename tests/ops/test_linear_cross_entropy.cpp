// linear_cross_entropy (ops/linear_cross_entropy.hpp) against the two ops it fuses,
// cross_entropy(linear(x, W), targets): loss, dx and dW bitwise equal for an upstream gradient of
// 1 (row counts with one block, several blocks and short last blocks), close for other upstream
// gradients; every option (ignore_index, weights, label smoothing, sum); only x or only W
// differentiated; no recording; 1 and 2 threads; the composed fallbacks (reduction none, bf16);
// retain_graph; gradcheck in double; errors naming the op.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cerberus/ops/linear_cross_entropy.hpp"
#include "cerberus/tensor/factories.hpp"
#include "cerberus/testing/gradcheck.hpp"
#include "support/catch.hpp"
#include "support/message.hpp"
#include "support/reference.hpp"
#include "support/threads.hpp"

using namespace cerberus;
using cerberus::testing_support::message_of;
using cerberus::testing_support::random_uniform;
using cerberus::testing_support::values;

namespace {

// Targets in [0, v), every fifth row ignored (-100).
Tensor<std::int64_t> make_targets(Index rows, Index v, std::uint64_t seed) {
  Generator g(seed);
  std::vector<std::int64_t> t(static_cast<std::size_t>(rows));
  for (Index r = 0; r < rows; ++r)
    t[static_cast<std::size_t>(r)] = r % 5 == 2 ? -100 : static_cast<std::int64_t>(g.uniform() * static_cast<double>(v));
  return from_vector<std::int64_t>(t);
}

template <class T>
bool same_bits(const Tensor<T>& a, const Tensor<T>& b) {
  if (!(a.shape() == b.shape())) return false;
  const Tensor<T> ac = a.contiguous(), bc = b.contiguous();
  return std::memcmp(ac.data(), bc.data(), static_cast<std::size_t>(ac.numel()) * sizeof(T)) == 0;
}

template <class T>
double max_relative(const Tensor<T>& a, const Tensor<T>& b) {
  const std::vector<double> va = values(a), vb = values(b);
  double worst = 0.0;
  for (std::size_t i = 0; i < va.size(); ++i) worst = std::max(worst, std::abs(va[i] - vb[i]) / std::max(1e-3, std::abs(vb[i])));
  return worst;
}

struct Run {
  Tensor<float> loss, dx, dw;
};

// One forward + backward, fused or composed, on fresh leaves (x [B, T, C], W [V, C]).
template <class Loss>
Run run(const Tensor<float>& x0, const Tensor<float>& w0, bool grad_x, bool grad_w, double upstream, Loss&& loss_of) {
  Tensor<float> x = x0.clone(), w = w0.clone();
  x.set_requires_grad(grad_x);
  w.set_requires_grad(grad_w);
  Tensor<float> loss = loss_of(x, w);
  if (grad_x || grad_w) loss.backward(full<float>(Shape{}, static_cast<float>(upstream)));
  return {loss.detach(), grad_x ? x.grad() : Tensor<float>{}, grad_w ? w.grad() : Tensor<float>{}};
}

}  // namespace

TEST_CASE("linear_cross_entropy equals cross_entropy(linear) bit for bit with an upstream gradient of 1", "[loss][linear]") {
  // Rows and their blocks of two K slices: 2048 = 1024 + 1024; 1800 = 904 + 896 (the last
  // issued as 452 + 444, as the one product would slice it); 1100 = 736 + 364; 37: one block.
  const Index features = 24, v = 301;
  for (const Index rows : {Index{2048}, Index{1800}, Index{1100}, Index{37}}) {
    const Tensor<float> x = random_uniform<float>(Shape{rows / 1, 1, features}, -1, 1, 10 + static_cast<std::uint64_t>(rows));
    const Tensor<float> w = random_uniform<float>(Shape{v, features}, -0.5, 0.5, 20);
    const Tensor<std::int64_t> t = make_targets(rows, v, 30).reshape({rows, 1});
    std::vector<float> wv(static_cast<std::size_t>(rows));
    for (Index r = 0; r < rows; ++r) wv[static_cast<std::size_t>(r)] = 0.25f + static_cast<float>(r % 7) * 0.5f;
    for (int variant = 0; variant < 4; ++variant) {
      CrossEntropyOptions o;
      if (variant == 1) o.label_smoothing = 0.1;
      if (variant == 2) o.weights = from_vector<float>(wv).reshape({rows, 1});
      if (variant == 3) o.reduction = Reduction::sum;
      INFO("rows " << rows << ", variant " << variant);
      const Run fused = run(x, w, true, true, 1.0, [&](auto& xx, auto& ww) { return linear_cross_entropy(xx, ww, t, o); });
      const Run composed = run(x, w, true, true, 1.0, [&](auto& xx, auto& ww) { return cross_entropy(linear(xx, ww), t, o); });
      CHECK(std::isfinite(fused.loss.item()));
      CHECK(same_bits(fused.loss, composed.loss));
      CHECK(same_bits(fused.dx, composed.dx));
      CHECK(same_bits(fused.dw, composed.dw));
    }
  }
}

TEST_CASE("linear_cross_entropy: other upstream gradients, one side differentiated, no recording, threads", "[loss][linear]") {
  const Index rows = 700, features = 16, v = 129;
  const Tensor<float> x = random_uniform<float>(Shape{7, 100, features}, -1, 1, 1);
  const Tensor<float> w = random_uniform<float>(Shape{v, features}, -0.5, 0.5, 2);
  const Tensor<std::int64_t> t = make_targets(rows, v, 3).reshape({7, 100});
  const auto fused = [&](auto& xx, auto& ww) { return linear_cross_entropy(xx, ww, t); };
  const auto composed = [&](auto& xx, auto& ww) { return cross_entropy(linear(xx, ww), t); };

  const Run a = run(x, w, true, true, -0.37, fused), b = run(x, w, true, true, -0.37, composed);
  CHECK(same_bits(a.loss, b.loss));
  CHECK(max_relative(a.dx, b.dx) < 1e-5);
  CHECK(max_relative(a.dw, b.dw) < 1e-5);
  CHECK(values(a.dx) != values(run(x, w, true, true, 1.0, fused).dx));  // the upstream gradient is applied

  const Run only_x = run(x, w, true, false, 1.0, fused), only_w = run(x, w, false, true, 1.0, fused);
  const Run both = run(x, w, true, true, 1.0, fused);
  CHECK(same_bits(only_x.dx, both.dx));
  CHECK(same_bits(only_w.dw, both.dw));

  {
    NoGradGuard evaluation;
    Tensor<float> xg = x.clone(), wg = w.clone();
    xg.set_requires_grad(true);
    wg.set_requires_grad(true);
    const Tensor<float> l = linear_cross_entropy(xg, wg, t);
    CHECK(!l.requires_grad());
    CHECK(same_bits(l, both.loss));
  }

  const auto fused_run = [&] { return run(x, w, true, true, 1.0, fused); };
  const Run one = testing_support::with_threads(1, fused_run), two = testing_support::with_threads(2, fused_run);
  CHECK(same_bits(one.loss, two.loss));
  CHECK(same_bits(one.dx, two.dx));
  CHECK(same_bits(one.dw, two.dw));
}

TEST_CASE("linear_cross_entropy: retain_graph, the composed fallbacks and gradcheck", "[loss][linear]") {
  const Index features = 8, v = 11;
  const Tensor<float> x0 = random_uniform<float>(Shape{3, 5, features}, -1, 1, 4);
  const Tensor<float> w0 = random_uniform<float>(Shape{v, features}, -1, 1, 5);
  const Tensor<std::int64_t> t = make_targets(15, v, 6).reshape({3, 5});

  // A second backward adds the same gradient again: the saved gradients were not consumed.
  Tensor<float> x = x0.clone(), w = w0.clone();
  x.set_requires_grad(true);
  w.set_requires_grad(true);
  const Tensor<float> loss = linear_cross_entropy(x, w, t);
  loss.backward(true);
  const std::vector<double> once = values(w.grad());
  loss.backward();
  const std::vector<double> twice = values(w.grad());
  for (std::size_t i = 0; i < once.size(); ++i) CHECK(twice[i] == Approx(2 * once[i]).margin(1e-7));

  // reduction none runs the two ops: the same per-row losses.
  CrossEntropyOptions none;
  none.reduction = Reduction::none;
  CHECK(same_bits(linear_cross_entropy(x0, w0, t, none), cross_entropy(linear(x0, w0), t, none)));
  // bf16 runs the two ops as well.
  const Tensor<bfloat16> xb = x0.to<bfloat16>(), wb = w0.to<bfloat16>();
  CHECK(same_bits(linear_cross_entropy(xb, wb, t), cross_entropy(linear(xb, wb), t)));

  // gradcheck in double, with label smoothing and weights.
  CrossEntropyOptions o;
  o.label_smoothing = 0.2;
  o.weights = random_uniform<float>(Shape{3, 5}, 0.5, 2, 7);
  const auto r = testing::gradcheck([&](const std::vector<Tensor<double>>& in) { return linear_cross_entropy(in[0], in[1], t, o); },
                                    {x0.to<double>(), w0.to<double>()});
  INFO(r.message);
  CHECK(r.ok);
}

TEST_CASE("linear_cross_entropy errors name the op and what did not fit", "[loss][linear][errors]") {
  const Tensor<float> x = zeros<float>(Shape{2, 3, 4}), w = zeros<float>(Shape{5, 4});
  CHECK(message_of([&] { linear_cross_entropy(x, zeros<float>(Shape{5, 3}), zeros<std::int64_t>(Shape{2, 3})); }) ==
        "[linear_cross_entropy] x [..., C] and weight [V, C] do not fit: x [2, 3, 4], weight [5, 3]");
  CHECK(message_of([&] { linear_cross_entropy(x, w, zeros<std::int64_t>(Shape{3, 2})); }) ==
        "[linear_cross_entropy] targets of shape [3, 2] do not fit logits of shape [2, 3, 5] (expected [2, 3] or [6])");
  Tensor<std::int64_t> t = zeros<std::int64_t>(Shape{2, 3});
  t.data()[4] = 5;
  CHECK(message_of([&] { linear_cross_entropy(x, w, t); }) ==
        "[linear_cross_entropy] target 5 at row 4 is out of range for 5 classes (logits of shape [2, 3, 5], ignore_index -100)");
}
