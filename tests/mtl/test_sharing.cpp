// Sharing strategies: what is shared (same storage) and what is not, a frozen trunk gets no update,
// the soft penalty and its gradient against the analytic values, and a double-precision gradient
// check through a whole composed model for each strategy.
#include <cmath>
#include <map>
#include <set>
#include <string>

#include "cerberus/testing/gradcheck.hpp"
#include "mtl/mtl_support.hpp"
#include "support/catch.hpp"

using namespace cerberus;
using namespace mtl_test;

namespace {

using Cls = mtl::SequenceClassifier<2, mtl::Pooling::mean>;
using ClsD = mtl::SequenceClassifier<2, mtl::Pooling::last, double>;

std::map<std::string, Tensor<float>> by_name(const nn::ParameterList<float>& l) {
  std::map<std::string, Tensor<float>> out;
  for (const auto& p : l) out[p.name] = p.tensor;
  return out;
}

// gradcheck of total_loss with respect to the parameters whose name contains one of `picks`.
template <class M>
void check_gradients(M& model, const mtl::Batch<double>& batch, const std::vector<std::string>& picks) {
  std::vector<std::string> names;
  std::vector<Tensor<double>> inputs;
  for (const auto& p : model.named_parameters())
    for (const auto& pick : picks)
      if (p.name.find(pick) != std::string::npos) {
        names.push_back(p.name);
        inputs.push_back(p.tensor.detach().clone());
        break;
      }
  REQUIRE(names.size() >= picks.size());
  const auto fn = [&](const std::vector<Tensor<double>>& leaves) {
    model.visit_parameters("", [&](const std::string& name, Tensor<double>& p) {
      for (std::size_t i = 0; i < names.size(); ++i)
        if (names[i] == name) p = leaves[i];
    });
    return model.total_loss(batch, {1.0, 0.7, 1.3});
  };
  testing::GradcheckOptions options;
  options.atol = 1e-7;
  options.rtol = 1e-5;
  const auto r = testing::gradcheck(fn, inputs, options);
  INFO(r.message);
  CHECK(r.ok);
}

template <class S>
using ModelD = mtl::Model<nn::Encoder<double>, S, mtl::Equal, mtl::Task<"a", ClsD>, mtl::Task<"b", mtl::LMHead<mtl::Tying::tied, double>>,
                          mtl::Task<"c", mtl::Regression<1, mtl::Pooling::first, double>>>;

mtl::Batch<double> mixed_double() { return make_batch<double>({0, 1, 2, 1, 0, 2}, 5, {0, 2, 1, 0, 3, 0}, 21); }

}  // namespace

TEST_CASE("Hard: one trunk; every head reads it; a tied LM head is the trunk's embedding storage") {
  Generator gen(1);
  mtl::Model<nn::Encoder<>, mtl::Hard, mtl::Equal, mtl::Task<"a", Cls>, mtl::Task<"b", mtl::LMHead<>>, mtl::Task<"u", mtl::LMHead<mtl::Tying::untied>>>
      m(nn::Encoder<>(tiny_config(), gen), gen);
  CHECK(m.head<"b">().weight().data() == m.sharing().trunk.embed_tokens->weight.data());
  CHECK(m.head<"u">().weight().data() != m.sharing().trunk.embed_tokens->weight.data());
  CHECK(m.head<"u">().weight().shape() == Shape{11, 8});
  const auto p = by_name(m.named_parameters());
  CHECK(p.count("heads.b.proj.weight") == 0);  // tied: listed once, under the trunk
  CHECK(p.count("heads.u.proj.weight") == 1);
  CHECK(m.shared_parameters().size() == m.sharing().trunk.named_parameters().size());
  // Every task's loss reaches the shared trunk.
  auto batch = make_batch<float>({0, 0}, 4, {0, 1}, 5);
  m.total_loss(batch).backward();
  CHECK(m.sharing().trunk.layers[0].attn.q_proj.weight.grad().defined());
  CHECK(!m.head<"u">().proj.weight.grad().defined());  // absent task: no gradient
}

TEST_CASE("Hierarchical: shared bottom, one copy of the upper blocks per group, same start values") {
  Generator gen(2);
  using H = mtl::Hierarchical<1, mtl::Group<"understanding", "a", "c">, mtl::Group<"generation", "b">>;
  mtl::Model<nn::Encoder<>, H, mtl::Static<1.0, 1.0, 0.5>, mtl::Task<"a", Cls>, mtl::Task<"b", mtl::LMHead<>>, mtl::Task<"c", mtl::Regression<>>>
      m(nn::Encoder<>(tiny_config(2), gen), gen);
  auto& s = m.sharing();
  REQUIRE(s.trunk.layers.size() == 1);
  REQUIRE(s.groups.size() == 2);
  const auto& u = s.groups[0].layers[0].attn.q_proj.weight;
  const auto& g = s.groups[1].layers[0].attn.q_proj.weight;
  CHECK(u.data() != g.data());
  CHECK(u.to_vector() == g.to_vector());
  CHECK(s.groups[0].final_norm.weight.data() != s.groups[1].final_norm.weight.data());
  const auto p = by_name(m.named_parameters());
  CHECK(p.count("trunk.layers.0.attn.q_proj.weight") == 1);
  CHECK(p.count("trunk.layers.1.attn.q_proj.weight") == 0);
  CHECK(p.count("trunk.final_norm.weight") == 0);
  CHECK(p.count("groups.understanding.layers.1.attn.q_proj.weight") == 1);
  CHECK(p.count("groups.generation.final_norm.weight") == 1);
  // A batch of understanding tasks only: its group and the shared bottom get gradients, the
  // generation group none.
  auto batch = make_batch<float>({0, 2, 0}, 4, {0, 1, 0}, 7);
  m.total_loss(batch).backward();
  CHECK(s.trunk.layers[0].mlp.up_proj.weight.grad().defined());
  CHECK(s.groups[0].layers[0].mlp.up_proj.weight.grad().defined());
  CHECK(!s.groups[1].layers[0].mlp.up_proj.weight.grad().defined());
  // SharedLayers beyond the trunk is a run-time error naming both numbers.
  using Bad = mtl::Hierarchical<3, mtl::Group<"all", "a">>;
  using MB = mtl::Model<nn::Encoder<>, Bad, mtl::Equal, mtl::Task<"a", Cls>>;
  CHECK_THROWS_WITH(MB(nn::Encoder<>(tiny_config(2), gen), gen), Catch::Contains("[mtl::Hierarchical] SharedLayers (3) must be in [0, 2]"));
}

TEST_CASE("Soft: a trunk per task, distinct storage, penalty and its gradient equal the analytic values") {
  Generator gen(3);
  constexpr double coef = 0.25;
  mtl::Model<nn::Encoder<>, mtl::Soft<coef>, mtl::Equal, mtl::Task<"a", Cls>, mtl::Task<"b", mtl::LMHead<>>, mtl::Task<"c", mtl::Regression<>>> m(
      nn::Encoder<>(tiny_config(1), gen), gen);
  auto& s = m.sharing();
  REQUIRE(s.trunks.size() == 3);
  CHECK(s.trunks[0].embed_tokens->weight.data() != s.trunks[1].embed_tokens->weight.data());
  CHECK(m.head<"b">().weight().data() == s.trunks[1].embed_tokens->weight.data());  // tied to its own trunk
  CHECK(m.penalty().item() == 0.0f);                                                // same start values
  // Perturb every trunk differently, then compare with sums computed here.
  std::vector<nn::ParameterList<float>> params;
  for (std::size_t i = 0; i < 3; ++i) {
    Generator g(100 + i);
    params.push_back(s.trunks[i].named_parameters());
    NoGradGuard no_grad;
    for (auto& p : params.back()) p.tensor.assign(p.tensor + uniform<float>(p.tensor.shape(), -0.1, 0.1, g));
  }
  double want = 0;
  for (std::size_t i = 0; i < 3; ++i)
    for (std::size_t j = i + 1; j < 3; ++j)
      for (std::size_t p = 0; p < params[i].size(); ++p) {
        const auto a = params[i][p].tensor.to_vector(), b = params[j][p].tensor.to_vector();
        for (std::size_t e = 0; e < a.size(); ++e) want += (double(a[e]) - b[e]) * (double(a[e]) - b[e]);
      }
  want *= coef;
  const Tensor<float> pen = m.penalty();
  CHECK(std::abs(pen.item() - want) <= 1e-4 * want);
  pen.backward();
  double worst = 0;
  for (std::size_t i = 0; i < 3; ++i)
    for (std::size_t p = 0; p < params[i].size(); ++p) {
      const auto g = params[i][p].tensor.grad().to_vector();
      const auto self = params[i][p].tensor.to_vector();
      for (std::size_t e = 0; e < g.size(); ++e) {
        double analytic = 0;
        for (std::size_t j = 0; j < 3; ++j)
          if (j != i) analytic += 2 * coef * (double(self[e]) - params[j][p].tensor.to_vector()[e]);
        worst = std::max(worst, std::abs(g[e] - analytic));
      }
    }
  CHECK(worst < 1e-5);
}

TEST_CASE("Soft with groups: a trunk per group, tasks of a group share it") {
  Generator gen(4);
  using S = mtl::Soft<0.1, mtl::Group<"u", "a", "c">, mtl::Group<"g", "b">>;
  mtl::Model<nn::Encoder<>, S, mtl::Equal, mtl::Task<"a", Cls>, mtl::Task<"b", mtl::LMHead<>>, mtl::Task<"c", mtl::Regression<>>> m(
      nn::Encoder<>(tiny_config(1), gen), gen);
  REQUIRE(m.sharing().trunks.size() == 2);
  const auto p = by_name(m.named_parameters());
  CHECK(p.count("trunks.u.layers.0.attn.q_proj.weight") == 1);
  CHECK(p.count("trunks.g.embed_tokens.weight") == 1);
  CHECK(m.head<"b">().weight().data() == m.sharing().trunks[1].embed_tokens->weight.data());
}

TEST_CASE("Adapters: frozen trunk is never updated; LoRA per task starts at the trunk's function") {
  Generator gen(5);
  using A = mtl::Adapters<2, 4.0>;
  mtl::Model<nn::Encoder<>, A, mtl::Equal, mtl::Task<"a", Cls>, mtl::Task<"c", mtl::Regression<>>> m(nn::Encoder<>(tiny_config(1), gen), gen);
  auto& s = m.sharing();
  REQUIRE(s.adapters.size() == 2);
  // 4 attention + 2 MLP projections in one block.
  CHECK(s.adapters[0].targets.size() == 6);
  CHECK(s.adapters[0].a[0].data() != s.adapters[1].a[0].data());
  for (const auto& p : s.trunk.named_parameters()) CHECK(!p.tensor.requires_grad());
  CHECK(m.shared_parameters().empty());
  auto batch = make_batch<float>({0, 1, 0, 1}, 5, {0, 1, 2, 0}, 9);
  // B = 0: the adapted trunk computes what the trunk computes. To rounding, not bitwise: the
  // frozen trunk alone takes the inference MLP (the GELU in the GEMM's store: SIMD in full tiles,
  // scalar at the edges), the adapted one the recorded ops (the elementwise GELU pass, whose
  // SIMD / scalar split falls elsewhere) round differently in the last bit. Measured: 2.5e-8.
  const auto plain = s.trunk.forward(batch.ids, batch.padding).to_vector();
  const auto adapted = s.adapted(0).forward(batch.ids, batch.padding).to_vector();
  REQUIRE(adapted.size() == plain.size());
  float worst = 0;
  for (std::size_t i = 0; i < plain.size(); ++i) worst = std::max(worst, std::abs(adapted[i] - plain[i]) / (1 + std::abs(plain[i])));
  INFO("largest difference, relative to 1 + |value|: " << worst);
  CHECK(worst <= 1e-6f);
  const auto before = by_name(s.trunk.named_parameters());
  std::map<std::string, std::vector<float>> trunk_before;
  for (const auto& [n, t] : before) trunk_before[n] = t.to_vector();
  const auto lora_b = s.adapters[1].b[0].to_vector();
  auto opt = optim::AdamW(m.trainable_parameters(), [] { optim::AdamWOptions o; o.lr = 1e-2; return o; }());
  for (int i = 0; i < 3; ++i) m.step(batch, opt);
  for (const auto& [n, t] : before) {
    INFO(n);
    CHECK(!t.grad().defined());
    CHECK(t.to_vector() == trunk_before[n]);
  }
  CHECK(s.adapters[1].b[0].to_vector() != lora_b);
  // A trainable trunk moves.
  mtl::Model<nn::Encoder<>, mtl::Adapters<2, 4.0, mtl::TrunkMode::trainable>, mtl::Equal, mtl::Task<"a", Cls>, mtl::Task<"c", mtl::Regression<>>> t(
      nn::Encoder<>(tiny_config(1), gen), gen);
  const auto q = t.sharing().trunk.layers[0].attn.q_proj.weight.to_vector();
  auto opt2 = optim::AdamW(t.trainable_parameters());
  t.step(batch, opt2);
  CHECK(t.sharing().trunk.layers[0].attn.q_proj.weight.to_vector() != q);
  CHECK(!t.shared_parameters().empty());
}

TEST_CASE("gradcheck (double) through a composed 3-task model: Hard") {
  Generator gen(11);
  ModelD<mtl::Hard> m(nn::Encoder<double>(tiny_config(1), gen), gen);
  check_gradients(m, mixed_double(), {"trunk.embed_tokens", "trunk.layers.0.attn.q_proj.weight", "trunk.layers.0.mlp.down_proj.bias",
                                      "trunk.final_norm.weight", "heads.a.proj.weight", "heads.c.proj.bias"});
}

TEST_CASE("gradcheck (double) through a composed 3-task model: Hierarchical") {
  Generator gen(12);
  ModelD<mtl::Hierarchical<1, mtl::Group<"u", "a", "c">, mtl::Group<"g", "b">>> m(nn::Encoder<double>(tiny_config(2), gen), gen);
  check_gradients(m, mixed_double(), {"trunk.embed_tokens", "trunk.layers.0.attn.v_proj.weight", "groups.u.layers.1.attn.q_proj.weight",
                                      "groups.g.layers.1.mlp.up_proj.weight", "groups.g.final_norm.weight", "heads.a.proj.weight"});
}

TEST_CASE("gradcheck (double) through a composed 3-task model: Soft (penalty included)") {
  Generator gen(13);
  ModelD<mtl::Soft<0.3>> m(nn::Encoder<double>(tiny_config(1), gen), gen);
  {
    NoGradGuard no_grad;  // trunks apart, so the penalty has a gradient
    Generator g(77);
    for (auto& p : m.sharing().trunks[2].named_parameters()) p.tensor.assign(p.tensor + uniform<double>(p.tensor.shape(), -0.05, 0.05, g));
  }
  check_gradients(m, mixed_double(), {"trunks.a.layers.0.attn.q_proj.weight", "trunks.b.embed_tokens", "trunks.c.layers.0.mlp.up_proj.weight",
                                      "trunks.c.final_norm.bias", "heads.c.proj.weight"});
}

TEST_CASE("gradcheck (double) through a composed 3-task model: Adapters") {
  Generator gen(14);
  ModelD<mtl::Adapters<2, 3.0, mtl::TrunkMode::trainable>> m(nn::Encoder<double>(tiny_config(1), gen), gen);
  {
    NoGradGuard no_grad;  // B != 0, so A has a gradient
    Generator g(78);
    for (auto& l : m.sharing().adapters)
      for (auto& b : l.b) b.assign(uniform<double>(b.shape(), -0.3, 0.3, g));
  }
  check_gradients(m, mixed_double(), {"adapters.a.layers.0.attn.q_proj.lora_A", "adapters.b.layers.0.mlp.down_proj.lora_B",
                                      "adapters.c.layers.0.attn.o_proj.lora_A", "trunk.layers.0.attn.k_proj.weight", "heads.a.proj.bias"});
}

TEST_CASE("LM heads compute a training loss from the hidden states: the same bits as through their logits") {
  // Model::losses (training) asks an LMHead for hidden_loss (linear_cross_entropy, no [B, T, V]
  // logits); forward_with_losses goes through the logits. Losses and every gradient agree bitwise.
  using M = mtl::Model<nn::Encoder<>, mtl::Hard, mtl::Equal, mtl::Task<"a", Cls>, mtl::Task<"b", mtl::LMHead<>>,
                       mtl::Task<"u", mtl::LMHead<mtl::Tying::untied>>>;
  const auto batch = make_batch<float>({1, 2, 0, 1, 2, 2}, 5, {0, 2, 1, 0, 3, 0}, 9);
  const auto run = [&](bool through_logits) {
    Generator gen(3);
    M m(nn::Encoder<>(tiny_config(), gen), gen);
    std::vector<Tensor<float>> losses;
    if (through_logits) {
      for (const auto& l : m.forward_with_losses(batch).losses) losses.push_back(*l);
    } else {
      for (const auto& l : m.task_losses(batch)) losses.push_back(*l);
    }
    Tensor<float> total = losses[0] + losses[1] * 0.5f + losses[2] * 2.0f;
    total.backward();
    std::vector<std::vector<float>> out;
    for (const auto& l : losses) out.push_back(l.detach().to_vector());
    for (const auto& p : m.named_parameters()) {
      REQUIRE(p.tensor.grad().defined());
      out.push_back(p.tensor.grad().to_vector());
    }
    return out;
  };
  const auto fused = run(false), unfused = run(true);
  REQUIRE(fused.size() == unfused.size());
  for (std::size_t i = 0; i < fused.size(); ++i) CHECK(fused[i] == unfused[i]);
}
