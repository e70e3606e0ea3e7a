// Mixed precision: bf16 weights updated through float master weights (optim/optimizer.hpp), bf16
// gradients clipped, and a bf16 Transformer trained against its float twin.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "optim/optim_support.hpp"
#include "support/catch.hpp"

using namespace cerberus;
using namespace optim_test;

namespace {

Tensor<bfloat16> bf16_parameter(const std::vector<float>& values) {
  std::vector<bfloat16> rounded(values.begin(), values.end());
  auto p = from_vector<bfloat16>(rounded, Shape{static_cast<Index>(values.size())});
  p.set_requires_grad();
  return p;
}

// Makes p.grad() exactly `g` (values representable in bf16).
void set_bf16_grad(const Tensor<bfloat16>& p, const std::vector<float>& g) {
  p.clear_grad();
  Tensor<bfloat16> y = p * 1.0f;
  std::vector<bfloat16> rounded(g.begin(), g.end());
  y.backward(from_vector<bfloat16>(rounded, p.shape()));
}

std::vector<float> bf16_values(int n, double scale, int seed) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = bfloat16(static_cast<float>(scale * std::sin(0.7 * i + seed)));
  return v;
}

std::vector<float> to_floats(const Tensor<bfloat16>& t) {
  std::vector<float> out;
  for (const bfloat16 b : t.to_vector()) out.push_back(static_cast<float>(b));
  return out;
}

}  // namespace

TEST_CASE("a bf16 weight's float master follows the float rule bit for bit", "[optim][mixed]") {
  // 37 elements: two SIMD blocks of 16 and a scalar tail of 5.
  constexpr int n = 37;
  const auto w0 = bf16_values(n, 1.0, 1);
  auto p32 = parameter(w0, Shape{n});
  auto p16 = bf16_parameter(w0);
  const optim::AdamWOptions o{.lr = 1e-3, .weight_decay = 0.1};
  optim::AdamW<cpu, float> opt32(nn::ParameterList<float>{{"w.weight", p32}}, o);
  optim::AdamW<cpu, bfloat16> opt16(nn::ParameterList<bfloat16>{{"w.weight", p16}}, o);
  for (int step = 0; step < 5; ++step) {
    const auto g = bf16_values(n, 0.5, 10 + step);
    set_grad(p32, g);
    set_bf16_grad(p16, g);
    opt32.step();
    opt16.step();
  }
  const auto state = opt16.state();
  REQUIRE(state.size() == 3);
  CHECK(state[0].name == "w.weight.master");
  CHECK(bitwise_equal(state[0].tensor, p32));
  // The weight is the master rounded to nearest even.
  const auto master = p32.to_vector();
  const auto weight = p16.to_vector();
  for (int i = 0; i < n; ++i) CHECK(weight[static_cast<std::size_t>(i)].bits == bfloat16(master[static_cast<std::size_t>(i)]).bits);
}

TEST_CASE("updates smaller than a bf16 step accumulate in the master instead of rounding away", "[optim][mixed]") {
  // bf16 has 8 significant bits: around 1.0 its step is 2^-7 = 0.0078. Ten SGD steps of 1e-3 each
  // move a float weight by 0.01; a bf16 weight updated in place would round back to 1.0 each time.
  auto p = bf16_parameter(std::vector<float>(20, 1.0f));
  optim::SGD<cpu, bfloat16> sgd(nn::ParameterList<bfloat16>{{"w", p}}, {.lr = 1e-3});
  for (int step = 0; step < 10; ++step) {
    set_bf16_grad(p, std::vector<float>(20, 1.0f));
    sgd.step();
  }
  const auto master = sgd.state()[0].tensor.to_vector();
  float expected = 1.0f;
  for (int step = 0; step < 10; ++step) expected = expected - 1e-3f * 1.0f;
  for (const float m : master) CHECK(m == expected);
  for (const float w : to_floats(p)) CHECK(w == static_cast<float>(bfloat16(expected)));
  CHECK(to_floats(p)[0] < 1.0f);  // 0.99 rounds to 0.98828125, not back to 1
}

TEST_CASE("weights assigned after the optimizer was built become the new masters", "[optim][mixed]") {
  auto p = bf16_parameter(std::vector<float>(40, 1.0f));
  optim::SGD<cpu, bfloat16> sgd(nn::ParameterList<bfloat16>{{"w", p}}, {.lr = 0.25});
  {
    NoGradGuard no_grad;  // e.g. a checkpoint loaded into the model after the optimizer exists
    std::vector<bfloat16> loaded(40, bfloat16(3.0f));
    loaded[7] = bfloat16(-2.0f);
    p.assign(from_vector<bfloat16>(loaded, Shape{40}));
  }
  set_bf16_grad(p, std::vector<float>(40, 1.0f));
  sgd.step();
  const auto w = to_floats(p);
  CHECK(w[0] == 2.75f);
  CHECK(w[7] == -2.25f);
  CHECK(w[39] == 2.75f);
  CHECK(sgd.state()[0].tensor.to_vector()[7] == -2.25f);
}

TEST_CASE("master weights are part of the saved state and are checked on load", "[optim][mixed]") {
  auto p = bf16_parameter(bf16_values(24, 1.0, 3));
  optim::AdamW<cpu, bfloat16> opt(nn::ParameterList<bfloat16>{{"layer.weight", p}}, {.lr = 1e-2});
  set_bf16_grad(p, bf16_values(24, 0.25, 4));
  opt.step();
  nn::ParameterList<float> saved;
  for (const auto& e : opt.state()) saved.push_back({e.name, e.tensor.clone()});
  const auto weights = p.clone();

  // A second run from the saved state takes the same step as the first.
  auto q = bf16_parameter(std::vector<float>(24, 0.0f));
  {
    NoGradGuard no_grad;
    q.assign(weights);
  }
  optim::AdamW<cpu, bfloat16> resumed(nn::ParameterList<bfloat16>{{"layer.weight", q}}, {.lr = 1e-2});
  resumed.load_state(saved, opt.step_count());
  const auto g = bf16_values(24, 0.25, 5);
  set_bf16_grad(p, g);
  set_bf16_grad(q, g);
  opt.step();
  resumed.step();
  CHECK(bitwise_equal(opt.state()[0].tensor, resumed.state()[0].tensor));
  CHECK(to_floats(p) == to_floats(q));

  nn::ParameterList<float> without_master;
  for (const auto& e : saved)
    if (e.name != "layer.weight.master") without_master.push_back(e);
  CHECK_THROWS_WITH(resumed.load_state(without_master, 1), Catch::Contains("missing 'layer.weight.master'"));
  nn::ParameterList<float> unknown = saved;
  unknown.push_back({"layer.weight.masters", saved[0].tensor});
  CHECK_THROWS_WITH(resumed.load_state(unknown, 1), Catch::Contains("'master'"));
}

TEST_CASE("clip_grad_norm measures and scales bf16 gradients", "[optim][mixed][clip]") {
  auto a = bf16_parameter(std::vector<float>(30, 0.0f));
  auto b = bf16_parameter(std::vector<float>(3, 0.0f));
  set_bf16_grad(a, std::vector<float>(30, 0.5f));
  set_bf16_grad(b, {2.0f, -2.0f, 1.0f});
  const nn::ParameterList<bfloat16> params{{"a", a}, {"b", b}};
  const double expected = std::sqrt(30 * 0.25 + 9.0);
  CHECK(optim::grad_norm(params) == Approx(expected).epsilon(1e-12));
  const double before = optim::clip_grad_norm(params, 1.0);
  CHECK(before == Approx(expected).epsilon(1e-12));
  // Scaled gradients are rounded to bf16: the norm lands within bf16's relative step.
  CHECK(optim::grad_norm(params) == Approx(1.0).epsilon(1e-2));
}

TEST_CASE("cross_entropy of bf16 logits returns a float loss and a bf16 gradient", "[optim][mixed][loss]") {
  Generator gen(7);
  const auto logits32 = normal<float>(Shape{6, 11}, 0.0, 2.0, gen);
  const auto targets = from_vector<std::int64_t>({0, 3, 10, 5, 5, 1}, Shape{6});
  auto x32 = logits32.to<bfloat16>().to<float>();  // the same values in both precisions
  x32.set_requires_grad();
  auto x16 = logits32.to<bfloat16>();
  x16.set_requires_grad();
  const Tensor<float> l32 = cross_entropy(x32, targets);
  const Tensor<float> l16 = cross_entropy(x16, targets);  // compute_t<bfloat16> = float
  CHECK(l16.item() == Approx(l32.item()).epsilon(1e-6));
  l32.backward();
  l16.backward();
  const auto g32 = x32.grad().to_vector();
  const auto g16 = x16.grad().to_vector();
  for (std::size_t i = 0; i < g32.size(); ++i) CHECK(static_cast<float>(g16[i]) == static_cast<float>(bfloat16(g32[i])));
}

TEST_CASE("a bf16 Transformer trains like its float twin", "[optim][mixed][nn]") {
  nn::TransformerConfig c;
  c.vocab_size = 97, c.d_model = 32, c.n_layers = 2, c.n_heads = 4, c.max_seq_len = 16, c.d_ff = 64;
  c.tie_embeddings = true;
  Generator gen32(11), gen16(11);
  nn::DecoderOnly<float> model32(c, gen32);
  nn::DecoderOnly<bfloat16> model16(c, gen16);
  {
    NoGradGuard no_grad;  // the bf16 model starts from the float model's weights, rounded
    const auto p32 = model32.named_parameters();
    const auto p16 = model16.named_parameters();
    REQUIRE(p32.size() == p16.size());
    for (std::size_t i = 0; i < p32.size(); ++i) {
      REQUIRE(p32[i].name == p16[i].name);
      p32[i].tensor.assign(p32[i].tensor.to<bfloat16>().to<float>());
      p16[i].tensor.assign(p32[i].tensor.to<bfloat16>());
    }
  }
  std::vector<std::int64_t> ids(4 * 16), next(4 * 16);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    ids[i] = static_cast<std::int64_t>((i * 5 + i / 16) % 97);
    next[i] = static_cast<std::int64_t>((i * 5 + i / 16 + 5) % 97);
  }
  const auto x = from_vector<std::int64_t>(ids, Shape{4, 16}), y = from_vector<std::int64_t>(next, Shape{4, 16});
  optim::AdamW opt32(model32.named_parameters(), {.lr = 3e-3});
  optim::AdamW opt16(model16.named_parameters(), {.lr = 3e-3});  // deduces AdamW<cpu, bfloat16>
  STATIC_REQUIRE(std::is_same_v<decltype(opt16), optim::AdamW<cpu, bfloat16>>);

  std::vector<double> losses32, losses16;
  for (int step = 0; step < 40; ++step) {
    opt32.zero_grad();
    opt16.zero_grad();
    const Tensor<float> l32 = model32.loss(x, y);
    const Tensor<float> l16 = model16.loss(x, y);
    l32.backward();
    l16.backward();
    if (step == 0) {
      // The first gradients agree to bf16's precision: cosine over all parameters.
      double dot = 0, n32 = 0, n16 = 0;
      const auto p32 = model32.named_parameters();
      const auto p16 = model16.named_parameters();
      for (std::size_t i = 0; i < p32.size(); ++i) {
        const auto a = p32[i].tensor.grad().to_vector();
        const auto b = p16[i].tensor.grad().to_vector();
        for (std::size_t k = 0; k < a.size(); ++k) {
          const double bk = static_cast<float>(b[k]);
          dot += a[k] * bk, n32 += double(a[k]) * a[k], n16 += bk * bk;
        }
      }
      CHECK(dot / std::sqrt(n32 * n16) > 0.999);
    }
    optim::clip_grad_norm(model32.named_parameters(), 1.0);
    optim::clip_grad_norm(model16.named_parameters(), 1.0);
    opt32.step();
    opt16.step();
    losses32.push_back(l32.item());
    losses16.push_back(l16.item());
  }
  CHECK(losses16[0] == Approx(losses32[0]).epsilon(1e-2));
  // Both learn the shift-by-5 task; the bf16 run stays close to the float one.
  CHECK(losses32.back() < 0.5 * losses32.front());
  CHECK(losses16.back() < 0.5 * losses16.front());
  CHECK(std::abs(losses16.back() - losses32.back()) < 0.15 * losses32.front());
  for (const double l : losses16) CHECK(std::isfinite(l));
}
