// Mixed precision in mtl::Model: a bf16 model (bf16 trunk and heads) against its float twin (the
// same weights, rounded to bf16 in both) for every sharing strategy and every loss weighting:
// float per-task losses that match, gradients that point the same way, steps that train; and a
// few dozen steps of joint training on the marked-tokens problem in bf16 as in float.
#include <cmath>
#include <cstdio>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "cerberus/mtl/weighting.hpp"
#include "mtl/mtl_support.hpp"
#include "support/catch.hpp"

using namespace cerberus;
using namespace mtl_test;

namespace {

// Three tasks (a: sequence classifier, b: tied LM head, c: regression) over Sharing and Weighting.
template <Element T, class Sharing, class Weighting>
using Model = mtl::Model<nn::Encoder<T>, Sharing, Weighting, mtl::Task<"a", mtl::SequenceClassifier<2, mtl::Pooling::mean, T>>,
                         mtl::Task<"b", mtl::LMHead<mtl::Tying::tied, T>>, mtl::Task<"c", mtl::Regression<1, mtl::Pooling::first, T>>>;

template <class W>
W make_weighting() {
  if constexpr (std::is_same_v<W, mtl::Uncertainty> || std::is_same_v<W, mtl::GradNorm>) return W(3);
  else if constexpr (std::is_same_v<W, mtl::Equal>) return W({.measure_conflict = true});  // one backward per task, summed in double
  else return W{};
}

// A float model and its bf16 twin: every parameter the float model's plus a little noise (so that
// Soft's trunks differ and LoRA's B is not zero), rounded to bf16, in both.
template <class Sharing, class Weighting>
struct Twins {
  Generator gen32{5}, gen16{5};
  Model<float, Sharing, Weighting> m32;
  Model<bfloat16, Sharing, Weighting> m16;

  Twins()
      : m32(nn::Encoder<float>(tiny_config(), gen32), gen32, make_weighting<Weighting>()),
        m16(nn::Encoder<bfloat16>(tiny_config(), gen16), gen16, make_weighting<Weighting>()) {
    NoGradGuard no_grad;
    Generator noise(9);
    const auto p32 = m32.named_parameters();
    const auto p16 = m16.named_parameters();
    REQUIRE(p32.size() == p16.size());
    for (std::size_t i = 0; i < p32.size(); ++i) {
      REQUIRE(p32[i].name == p16[i].name);
      const Tensor<float> noisy = p32[i].tensor + normal<float>(p32[i].tensor.shape(), 0.0, 0.02, noise);
      const Tensor<bfloat16> v = noisy.template to<bfloat16>();
      p32[i].tensor.assign(v.template to<float>());
      p16[i].tensor.assign(v);
    }
  }
};

// Six examples of the three tasks, with padding; the float batch's targets are the bf16 ones.
struct Batches {
  mtl::Batch<bfloat16> b16 = make_batch<float>({0, 1, 2, 1, 0, 2}, 6, {0, 2, 1, 0, 3, 0}, 21).to<bfloat16>();
  mtl::Batch<float> b32 = b16.to<float>();
};

// Two models' gradients over the parameters whose name starts with `prefix` ("" = all): the
// cosine between them and the ratio of their norms (b's over a's).
struct GradientAgreement {
  double cosine, norm_ratio;
};
template <class A, class B>
GradientAgreement compare_gradients(const nn::ParameterList<A>& pa, const nn::ParameterList<B>& pb, const std::string& prefix = "") {
  REQUIRE(pa.size() == pb.size());
  double dot = 0, na = 0, nb = 0;
  for (std::size_t i = 0; i < pa.size(); ++i) {
    if (!pa[i].name.starts_with(prefix) || !pa[i].tensor.grad().defined()) continue;
    REQUIRE(pb[i].tensor.grad().defined());
    const auto a = pa[i].tensor.grad().to_vector();
    const auto b = pb[i].tensor.grad().to_vector();
    for (std::size_t k = 0; k < a.size(); ++k) {
      const double x = static_cast<float>(a[k]), y = static_cast<float>(b[k]);
      dot += x * y, na += x * x, nb += y * y;
    }
  }
  REQUIRE(na > 0);
  return {dot / std::sqrt(na * nb), std::sqrt(nb / na)};
}

// b's gradients are a's to bf16's precision: the same direction and the same length.
template <class A, class B>
void check_same_gradients(const nn::ParameterList<A>& pa, const nn::ParameterList<B>& pb, const std::string& prefix = "") {
  const GradientAgreement g = compare_gradients(pa, pb, prefix);
  INFO("parameters '" << prefix << "*'");
  CHECK(g.cosine > 0.99);
  CHECK(g.norm_ratio == Approx(1.0).epsilon(2e-2));
}

// One step of the model with its optimizer (and the weighting's own float optimizer when needed).
template <class M, class O, class W>
mtl::WeightingReport step(M& m, const mtl::Batch<typename M::T>& batch, O& opt, W& weighting_opt) {
  if constexpr (M::needs_weighting_optimizer) return m.step(batch, opt, weighting_opt);
  else return m.step(batch, opt);
}

}  // namespace

TEMPLATE_TEST_CASE("a bf16 model's float task losses and gradients match its float twin's, for every sharing strategy", "[mtl][mixed]",
                   mtl::Hard, (mtl::Soft<0.05>), (mtl::Hierarchical<1, mtl::Group<"u", "a", "c">, mtl::Group<"g", "b">>), mtl::CrossStitch<>,
                   mtl::MMoE<2>, (mtl::CGC<1, 1>), (mtl::Adapters<2, 4.0>)) {
  Twins<TestType, mtl::Equal> t;
  const Batches data;
  const auto l32 = t.m32.task_losses(data.b32);
  const auto l16 = t.m16.task_losses(data.b16);
  STATIC_REQUIRE(std::is_same_v<decltype(l16), const std::vector<std::optional<Tensor<float>>>>);
  STATIC_REQUIRE(std::is_same_v<decltype(t.m16.losses(data.b16).losses), std::vector<std::optional<Tensor<float>>>>);
  for (std::size_t k = 0; k < 3; ++k) {
    REQUIRE(l16[k].has_value());
    INFO("task " << k);
    CHECK(l16[k]->item() == Approx(l32[k]->item()).epsilon(2e-2));
  }
  const Tensor<float> p16 = t.m16.penalty(), p32 = t.m32.penalty();
  REQUIRE(p16.defined() == p32.defined());
  if (p16.defined()) {
    CHECK(p32.item() > 0);
    CHECK(p16.item() == Approx(p32.item()).epsilon(2e-2));
  }

  // The weighted sum's gradients point the same way, in the trunk and in the heads.
  t.m32.total_loss(data.b32, {1.0, 0.7, 1.3}).backward();
  t.m16.total_loss(data.b16, {1.0, 0.7, 1.3}).backward();
  check_same_gradients(t.m32.named_parameters(), t.m16.named_parameters());
  check_same_gradients(t.m32.named_parameters(), t.m16.named_parameters(), "heads.");

  // Steps on one batch lower its loss; every parameter stays bf16 and finite.
  optim::AdamW opt(t.m16.trainable_parameters(), {.lr = 1e-2});
  STATIC_REQUIRE(std::is_same_v<decltype(opt), optim::AdamW<cpu, bfloat16>>);
  std::vector<double> totals;
  for (int s = 0; s < 8; ++s) totals.push_back(t.m16.step(data.b16, opt).total);
  for (const double v : totals) CHECK(std::isfinite(v));
  CHECK(totals.back() < 0.9 * totals.front());
}

TEMPLATE_TEST_CASE("every weighting trains a bf16 model as it trains the float twin", "[mtl][mixed][weighting]", mtl::Equal,
                   (mtl::Static<1.0, 0.5, 2.0>), mtl::Uncertainty, mtl::DWA, mtl::GradNorm, mtl::RLW, mtl::PCGrad, mtl::MGDA, mtl::CAGrad) {
  Twins<mtl::Hard, TestType> t;
  const Batches data;
  using M16 = decltype(t.m16);
  const bool own_parameters = !mtl::weighting_parameters(t.m16.weighting()).empty();
  CHECK(M16::needs_weighting_optimizer == own_parameters);
  CHECK_FALSE(decltype(t.m32)::needs_weighting_optimizer);
  // A bf16 model's own list leaves the float weighting parameters out; weighting_parameters() has them.
  CHECK(t.m16.trainable_parameters().size() == t.m16.named_parameters().size());
  CHECK(t.m32.trainable_parameters().size() == t.m32.named_parameters().size() + t.m32.weighting_parameters().size());
  CHECK(t.m16.weighting_parameters().size() == (own_parameters ? 1u : 0u));

  // One weighting backward on each: the same report, and shared gradients in the same direction
  // (surgery weightings combine per-task bf16 gradients in double and write them back in bf16).
  const mtl::WeightingReport r32 = t.m32.weighting().backward(t.m32.losses(data.b32), t.m32.shared_parameters());
  const mtl::WeightingReport r16 = t.m16.weighting().backward(t.m16.losses(data.b16), t.m16.shared_parameters());
  REQUIRE(r16.losses.size() == 3);
  for (std::size_t k = 0; k < 3; ++k) {
    INFO("task " << k);
    CHECK(r16.losses[k] == Approx(r32.losses[k]).epsilon(2e-2));
    CHECK(r16.weights[k] == Approx(r32.weights[k]).epsilon(5e-2).margin(2e-2));
  }
  CHECK(r16.total == Approx(r32.total).epsilon(2e-2));
  REQUIRE(r16.gradient_cosine.size() == r32.gradient_cosine.size());
  for (std::size_t i = 0; i < r16.gradient_cosine.size(); ++i)
    for (std::size_t j = 0; j < 3; ++j) CHECK(r16.gradient_cosine[i][j] == Approx(r32.gradient_cosine[i][j]).margin(2e-2));
  check_same_gradients(t.m32.shared_parameters(), t.m16.shared_parameters());
  check_same_gradients(t.m32.named_parameters(), t.m16.named_parameters(), "heads.");
  if (own_parameters) check_same_gradients(t.m32.weighting_parameters(), t.m16.weighting_parameters());  // float in both

  // Steps: the bf16 model with a bf16 optimizer (and a float one for the weighting's parameters).
  optim::AdamW opt16(t.m16.trainable_parameters(), {.lr = 1e-2});
  optim::AdamW<cpu, float> wopt16(t.m16.weighting_parameters(), {.lr = 1e-2});
  optim::AdamW opt32(t.m32.trainable_parameters(), {.lr = 1e-2});
  const std::vector<float> weighting_before = own_parameters ? t.m16.weighting_parameters()[0].tensor.to_vector() : std::vector<float>{};
  for (int s = 0; s < 8; ++s) {
    const mtl::WeightingReport a = step(t.m16, data.b16, opt16, wopt16);
    t.m32.step(data.b32, opt32);
    CHECK(std::isfinite(a.total));
    for (const double l : a.losses) CHECK(std::isfinite(l));  // every task is present
  }
  const auto after16 = t.m16.task_losses(data.b16);
  const auto after32 = t.m32.task_losses(data.b32);
  double sum16 = 0, sum32 = 0;
  for (std::size_t k = 0; k < 3; ++k) sum16 += after16[k]->item(), sum32 += after32[k]->item();
  // Both learn the batch, and the bf16 run stays close to the float one.
  CHECK(sum32 < 0.9 * (r32.losses[0] + r32.losses[1] + r32.losses[2]));
  CHECK(sum16 < 0.9 * (r16.losses[0] + r16.losses[1] + r16.losses[2]));
  CHECK(sum16 == Approx(sum32).epsilon(0.1));
  if (own_parameters) CHECK(t.m16.weighting_parameters()[0].tensor.to_vector() != weighting_before);  // the float optimizer ran
}

TEST_CASE("a few dozen steps of joint training lower the loss in bf16 as in float", "[mtl][mixed]") {
  using M32 = mtl::Model<nn::Encoder<float>, mtl::Hard, mtl::Equal, mtl::Task<"count", mtl::SequenceClassifier<2, mtl::Pooling::mean>>,
                         mtl::Task<"mark", mtl::TokenClassifier<2>>>;
  using M16 = mtl::Model<nn::Encoder<bfloat16>, mtl::Hard, mtl::Equal, mtl::Task<"count", mtl::SequenceClassifier<2, mtl::Pooling::mean, bfloat16>>,
                         mtl::Task<"mark", mtl::TokenClassifier<2, bfloat16>>>;
  const nn::TransformerConfig c = marked_config();
  const auto data32 = marked_tokens(32, 96, 1);
  const auto data16 = data32.to<bfloat16>();
  const auto test = marked_tokens(0, 200, 2);
  Generator gen32(42), gen16(42);
  M32 m32(nn::Encoder<float>(c, gen32), gen32);
  M16 m16(nn::Encoder<bfloat16>(c, gen16), gen16);
  auto opt32 = optim::AdamW(m32.trainable_parameters(), {.lr = 1e-2});
  auto opt16 = optim::AdamW(m16.trainable_parameters(), {.lr = 1e-2});
  std::vector<double> l32, l16;
  for (int s = 0; s < 40; ++s) {
    l32.push_back(m32.step(data32, opt32).total);
    l16.push_back(m16.step(data16, opt16).total);
  }
  std::printf("joint training: float %.4f -> %.4f, bf16 %.4f -> %.4f\n", l32.front(), l32.back(), l16.front(), l16.back());
  CHECK(l16.front() == Approx(l32.front()).epsilon(0.1));
  CHECK(l32.back() < 0.5 * l32.front());
  CHECK(l16.back() < 0.5 * l16.front());
  CHECK(std::abs(l16.back() - l32.back()) < 0.15 * l32.front());
  // Held out: the bf16 model tells marked tokens apart as well as the float one, and well.
  const auto accuracy = [&](auto& m, const auto& batch) {
    NoGradGuard no_grad;
    const auto pred = argmax(*m.forward(batch).outputs[1], 2).to_vector();
    const auto want = batch.token_labels.to_vector();
    double right = 0;
    for (std::size_t i = 0; i < pred.size(); ++i) right += pred[i] == want[i];
    return right / static_cast<double>(pred.size());
  };
  const double acc32 = accuracy(m32, test), acc16 = accuracy(m16, test.to<bfloat16>());
  std::printf("held-out token accuracy: float %.3f, bf16 %.3f\n", acc32, acc16);
  CHECK(acc16 > 0.8);
  CHECK(acc16 > acc32 - 0.05);
}
