// Cross-stitch units: the stitch starts near the identity, an identity stitch reproduces
// independent trunks, another stitch mixes them as the formula says, the stitch receives
// gradients, and a double-precision gradient check through a composed 3-task model.
#include <cmath>
#include <map>
#include <string>

#include "cerberus/testing/gradcheck.hpp"
#include "mtl/mtl_support.hpp"
#include "support/catch.hpp"

using namespace cerberus;
using namespace mtl_test;

namespace {

using Cls = mtl::SequenceClassifier<2, mtl::Pooling::mean>;

template <class S>
using ModelF = mtl::Model<nn::Encoder<>, S, mtl::Equal, mtl::Task<"a", Cls>, mtl::Task<"b", mtl::LMHead<>>, mtl::Task<"c", mtl::Regression<>>>;

std::map<std::string, Tensor<float>> by_name(const nn::ParameterList<float>& l) {
  std::map<std::string, Tensor<float>> out;
  for (const auto& p : l) out[p.name] = p.tensor;
  return out;
}

template <class Trunks>
void perturb(Trunks& trunks, double scale) {
  NoGradGuard no_grad;
  for (std::size_t i = 0; i < trunks.size(); ++i) {
    Generator g(200 + i);
    for (auto& p : trunks[i].named_parameters()) p.tensor.assign(p.tensor + uniform<typename std::decay_t<decltype(p.tensor)>::value_type>(p.tensor.shape(), -scale, scale, g));
  }
}

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(double(a[i]) - b[i]));
  return worst;
}

}  // namespace

TEST_CASE("CrossStitch: a trunk per task, stitch [L, G, G] near the identity, rows summing to one") {
  Generator gen(51);
  ModelF<mtl::CrossStitch<>> m(nn::Encoder<>(tiny_config(2), gen), gen);
  auto& s = m.sharing();
  REQUIRE(s.trunks.size() == 3);
  CHECK(s.stitch.alpha.shape() == Shape{2, 3, 3});
  const auto a = s.stitch.alpha.to_vector();
  for (std::size_t l = 0; l < 2; ++l)
    for (std::size_t i = 0; i < 3; ++i)
      for (std::size_t j = 0; j < 3; ++j) CHECK(std::abs(a[(l * 3 + i) * 3 + j] - (i == j ? 0.9f : 0.05f)) <= 1e-7f);
  CHECK(s.trunks[0].layers[0].attn.q_proj.weight.data() != s.trunks[1].layers[0].attn.q_proj.weight.data());
  CHECK(m.head<"b">().weight().data() == s.trunks[1].embed_tokens->weight.data());  // tied to its own trunk
  const auto p = by_name(m.named_parameters());
  CHECK(p.count("stitch.alpha") == 1);
  CHECK(p.count("trunks.c.layers.1.mlp.up_proj.weight") == 1);
  // Groups: a trunk per group, a G x G stitch.
  using G = mtl::CrossStitch<mtl::Group<"u", "a", "c">, mtl::Group<"g", "b">>;
  ModelF<G> mg(nn::Encoder<>(tiny_config(1), gen), gen);
  REQUIRE(mg.sharing().trunks.size() == 2);
  CHECK(mg.sharing().stitch.alpha.shape() == Shape{1, 2, 2});
  CHECK(mg.sharing().stitch.alpha.to_vector() == std::vector<float>{0.9f, 0.1f, 0.1f, 0.9f});
  CHECK(by_name(mg.named_parameters()).count("trunks.u.embed_tokens.weight") == 1);
}

TEST_CASE("CrossStitch: an identity stitch reproduces independent trunks; another mixes them as the formula says") {
  Generator gen(52);
  ModelF<mtl::CrossStitch<>> m(nn::Encoder<>(tiny_config(2), gen), gen);
  auto& s = m.sharing();
  perturb(s.trunks, 0.2);  // the trunks differ, so mixing changes something
  auto batch = make_batch<float>({0, 1, 2, 1, 0}, 5, {0, 1, 2, 0, 1}, 13);
  const auto rows = mtl::route(batch.task_id, batch.size(), 3);
  std::vector<std::vector<float>> independent;
  for (std::size_t k = 0; k < 3; ++k) independent.push_back(index_select(s.trunks[k].forward(batch.ids, batch.padding), 0, *rows[k]).to_vector());
  // The default stitch (0.9 / 0.05) moves every task's hidden states away from its own trunk's.
  auto stitched = s.hidden(batch, rows);
  for (std::size_t k = 0; k < 3; ++k) CHECK(max_diff(stitched[k]->to_vector(), independent[k]) > 1e-3);
  {
    NoGradGuard no_grad;
    s.stitch.alpha.assign(zeros<float>(s.stitch.alpha.shape()));
    for (Index l = 0; l < 2; ++l)
      for (Index i = 0; i < 3; ++i) s.stitch.alpha.select(0, l).select(0, i).select(0, i).fill(1.0f);
  }
  stitched = s.hidden(batch, rows);
  for (std::size_t k = 0; k < 3; ++k) CHECK(max_diff(stitched[k]->to_vector(), independent[k]) <= 1e-6);
  // One block, a stitch that swaps trunks 0 and 1: task a reads trunk 1's block output (through
  // trunk 0's final norm), task b trunk 0's.
  Generator gen1(53);
  ModelF<mtl::CrossStitch<>> one(nn::Encoder<>(tiny_config(1), gen1), gen1);
  auto& t = one.sharing();
  perturb(t.trunks, 0.2);
  {
    NoGradGuard no_grad;
    t.stitch.alpha.assign(from_vector<float>({0, 1, 0, 1, 0, 0, 0, 0, 1}, Shape{1, 3, 3}));
  }
  const auto xs = t.stitched(batch.ids, batch.padding);
  auto block_out = [&](std::size_t g) {
    auto& tr = t.trunks[g];
    return tr.layers[0].forward(tr.embed_positions.add((*tr.embed_tokens)(batch.ids), 0), batch.padding, tr.embed_positions.rotary());
  };
  CHECK(max_diff(xs[0].to_vector(), t.trunks[0].final_norm(block_out(1)).to_vector()) <= 1e-6);
  CHECK(max_diff(xs[1].to_vector(), t.trunks[1].final_norm(block_out(0)).to_vector()) <= 1e-6);
  CHECK(max_diff(xs[2].to_vector(), t.trunks[2].final_norm(block_out(2)).to_vector()) <= 1e-6);
  // A stitch of the wrong shape is refused, naming both shapes.
  {
    NoGradGuard no_grad;
    t.stitch.alpha = zeros<float>(Shape{1, 2, 2});
  }
  CHECK_THROWS_WITH(t.stitched(batch.ids, batch.padding), Catch::Contains("[mtl::CrossStitch] stitch must be [1, 3, 3] (blocks, trunks, trunks), got [1, 2, 2]"));
}

TEST_CASE("CrossStitch: the stitch receives gradients in every block, off the diagonal too, and training moves it") {
  Generator gen(54);
  ModelF<mtl::CrossStitch<>> m(nn::Encoder<>(tiny_config(2), gen), gen);
  auto& s = m.sharing();
  perturb(s.trunks, 0.2);
  auto batch = make_batch<float>({0, 1, 2, 2}, 4, {0, 1, 0, 2}, 17);
  m.total_loss(batch).backward();
  REQUIRE(s.stitch.alpha.grad().defined());
  const auto g = s.stitch.alpha.grad().to_vector();
  for (std::size_t i = 0; i < g.size(); ++i) {
    INFO(i);
    CHECK(g[i] != 0.0f);
  }
  // Every trunk gets gradient, through its own task or through the stitch.
  for (auto& t : s.trunks) CHECK(t.layers[0].mlp.up_proj.weight.grad().defined());
  const auto before = s.stitch.alpha.to_vector();
  auto opt = optim::AdamW(m.trainable_parameters());
  m.step(batch, opt);
  CHECK(s.stitch.alpha.to_vector() != before);
}

TEST_CASE("gradcheck (double) through a composed 3-task model: CrossStitch") {
  Generator gen(55);
  using M = mtl::Model<nn::Encoder<double>, mtl::CrossStitch<>, mtl::Equal, mtl::Task<"a", mtl::SequenceClassifier<2, mtl::Pooling::last, double>>,
                       mtl::Task<"b", mtl::LMHead<mtl::Tying::tied, double>>, mtl::Task<"c", mtl::Regression<1, mtl::Pooling::first, double>>>;
  M m(nn::Encoder<double>(tiny_config(2), gen), gen);
  perturb(m.sharing().trunks, 0.05);
  const auto batch = make_batch<double>({0, 1, 2, 1, 0, 2}, 5, {0, 2, 1, 0, 3, 0}, 21);
  std::vector<std::string> names;
  std::vector<Tensor<double>> inputs;
  const std::vector<std::string> picks{"stitch.alpha", "trunks.a.layers.0.attn.q_proj.weight", "trunks.b.embed_tokens", "trunks.c.layers.1.mlp.up_proj.weight",
                                       "trunks.a.final_norm.weight", "heads.c.proj.weight"};
  for (const auto& p : m.named_parameters())
    for (const auto& pick : picks)
      if (p.name.find(pick) != std::string::npos) {
        names.push_back(p.name);
        inputs.push_back(p.tensor.detach().clone());
        break;
      }
  REQUIRE(names.size() == picks.size());
  const auto fn = [&](const std::vector<Tensor<double>>& leaves) {
    m.visit_parameters("", [&](const std::string& name, Tensor<double>& p) {
      for (std::size_t i = 0; i < names.size(); ++i)
        if (names[i] == name) p = leaves[i];
    });
    return m.total_loss(batch, {1.0, 0.7, 1.3});
  };
  testing::GradcheckOptions options;
  options.atol = 1e-7;
  options.rtol = 1e-5;
  const auto r = testing::gradcheck(fn, inputs, options);
  INFO(r.message);
  CHECK(r.ok);
}

TEST_CASE("CrossStitch: each task's loss in a mixed batch equals its loss on its examples alone") {
  Generator gen(56);
  ModelF<mtl::CrossStitch<mtl::Group<"u", "a", "c">, mtl::Group<"g", "b">>> m(nn::Encoder<>(tiny_config(2), gen), gen);
  perturb(m.sharing().trunks, 0.2);
  const auto batch = make_batch<float>({2, 0, 1, 0, 2, 1}, 5, {0, 1, 2, 0, 1, 3}, 57);
  const auto rows = mtl::route(batch.task_id, batch.size(), 3);
  const auto mixed = m.task_losses(batch);
  for (std::size_t k = 0; k < 3; ++k) {
    INFO(k);
    const auto alone = m.task_losses(batch.select(*rows[k]));
    REQUIRE(mixed[k].has_value());
    REQUIRE(alone[k].has_value());
    CHECK(std::abs(mixed[k]->item() - alone[k]->item()) <= 1e-5f * (1.0f + std::abs(alone[k]->item())));
  }
}
