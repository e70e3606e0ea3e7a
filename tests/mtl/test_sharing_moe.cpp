// Mixtures of experts (MMoE, CGC): per-token gates sum to one, the mixture is h + sum_e g_e
// expert_e(h), shared experts are one storage for every task, task-specific experts and gates
// are distinct and get no gradient when their task is absent, and a double-precision gradient
// check through a composed 3-task model.
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
template <class S>
using ModelD = mtl::Model<nn::Encoder<double>, S, mtl::Equal, mtl::Task<"a", mtl::SequenceClassifier<2, mtl::Pooling::last, double>>,
                          mtl::Task<"b", mtl::LMHead<mtl::Tying::tied, double>>, mtl::Task<"c", mtl::Regression<1, mtl::Pooling::first, double>>>;

std::map<std::string, Tensor<float>> by_name(const nn::ParameterList<float>& l) {
  std::map<std::string, Tensor<float>> out;
  for (const auto& p : l) out[p.name] = p.tensor;
  return out;
}

bool has_grad(const Tensor<float>& t) {
  if (!t.grad().defined()) return false;
  for (float g : t.grad().to_vector())
    if (g != 0.0f) return true;
  return false;
}

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

}  // namespace

TEST_CASE("MMoE: per-token gates sum to one and differ between tasks; the mixture is h + sum_e g_e expert_e(h)") {
  Generator gen(31);
  ModelF<mtl::MMoE<4>> m(nn::Encoder<>(tiny_config(1), gen), gen);
  auto& s = m.sharing();
  REQUIRE(s.shared.experts.size() == 4);
  auto batch = make_batch<float>({0, 1, 2, 0}, 5, {0, 1, 2, 0}, 3);
  const Tensor<float> h = s.trunk.forward(batch.ids, batch.padding);
  const Tensor<float> ga = s.gate(0, h), gb = s.gate(1, h);
  CHECK(ga.shape() == Shape{4, 5, 4});
  const auto sums = sum(ga, -1).to_vector();
  REQUIRE(sums.size() == 20);
  for (float v : sums) CHECK(std::abs(v - 1.0f) <= 1e-6f);
  for (float v : sum(gb, -1).to_vector()) CHECK(std::abs(v - 1.0f) <= 1e-6f);
  for (float v : ga.to_vector()) CHECK(v > 0.0f);
  CHECK(ga.to_vector() != gb.to_vector());  // a gate per task
  // Per token: two tokens of one row get different gates.
  const auto g = ga.to_vector();
  CHECK((g[0] != g[4] || g[1] != g[5]));
  // The mixture, element by element.
  const auto mixed = s.mix(0, h).to_vector();
  const auto hv = h.to_vector();
  std::vector<std::vector<float>> ex;
  for (auto& e : s.shared.experts) ex.push_back(e(h).to_vector());
  double worst = 0;
  for (std::size_t tok = 0; tok < 20; ++tok)
    for (std::size_t c = 0; c < 8; ++c) {
      double want = hv[tok * 8 + c];
      for (std::size_t e = 0; e < 4; ++e) want += double(g[tok * 4 + e]) * ex[e][tok * 8 + c];
      worst = std::max(worst, std::abs(want - mixed[tok * 8 + c]));
    }
  CHECK(worst < 1e-5);
  // Gates on hidden states of the wrong width are refused, naming the shapes.
  CHECK_THROWS_WITH(s.gate(0, zeros<float>(Shape{2, 3, 5})), Catch::Contains("[mtl::MoE] hidden states must be [B, T, 8], got [2, 3, 5]"));
}

TEST_CASE("MMoE: shared experts are one storage for every task; an absent task's gate gets no gradient") {
  Generator gen(32);
  ModelF<mtl::MMoE<3, 16>> m(nn::Encoder<>(tiny_config(1), gen), gen);
  auto& s = m.sharing();
  CHECK(s.shared.experts[0].up_proj.weight.shape() == Shape{16, 8});  // the expert width
  CHECK(s.gates[0].weight.shape() == Shape{3, 8});
  CHECK(s.gates[0].weight.data() != s.gates[1].weight.data());
  const auto p = by_name(m.named_parameters());
  CHECK(p.count("shared_experts.0.up_proj.weight") == 1);
  CHECK(p.count("shared_experts.2.down_proj.weight") == 1);
  CHECK(p.count("gates.b.weight") == 1);
  CHECK(p.count("task_experts.a.0.up_proj.weight") == 0);
  CHECK(p.at("shared_experts.1.up_proj.weight").data() == s.shared.experts[1].up_proj.weight.data());
  // The shared parameters (where weightings measure conflict) are the trunk and the shared experts.
  const auto shared = by_name(m.shared_parameters());
  CHECK(shared.count("shared_experts.1.down_proj.weight") == 1);
  CHECK(shared.count("trunk.layers.0.attn.q_proj.weight") == 1);
  CHECK(shared.count("gates.a.weight") == 0);
  // Task a alone reaches the shared experts; so does task c alone: the same tensor.
  auto only_a = make_batch<float>({0, 0}, 4, {0, 1}, 5);
  m.total_loss(only_a).backward();
  CHECK(has_grad(s.shared.experts[0].up_proj.weight));
  CHECK(has_grad(s.gates[0].weight));
  CHECK(!s.gates[1].weight.grad().defined());
  CHECK(!s.gates[2].weight.grad().defined());
  m.zero_grad();
  auto only_c = make_batch<float>({2, 2, 2}, 4, {0, 1, 0}, 6);
  m.total_loss(only_c).backward();
  CHECK(has_grad(s.shared.experts[0].up_proj.weight));
  CHECK(has_grad(s.gates[2].weight));
  CHECK(!has_grad(s.gates[0].weight));  // zeroed, and no new contribution
  CHECK(!s.gates[1].weight.grad().defined());
}

TEST_CASE("CGC: task-specific experts are distinct, gated with the shared ones, and untouched when their task is absent") {
  Generator gen(33);
  ModelF<mtl::CGC<2, 1>> m(nn::Encoder<>(tiny_config(1), gen), gen);
  auto& s = m.sharing();
  REQUIRE(s.specific.size() == 3);
  REQUIRE(s.specific[0].experts.size() == 1);
  CHECK(s.gates[1].weight.shape() == Shape{3, 8});  // 2 shared + 1 own
  CHECK(s.specific[0].experts[0].up_proj.weight.data() != s.specific[1].experts[0].up_proj.weight.data());
  CHECK(s.specific[0].experts[0].up_proj.weight.to_vector() != s.specific[1].experts[0].up_proj.weight.to_vector());
  const auto p = by_name(m.named_parameters());
  CHECK(p.count("task_experts.b.0.up_proj.weight") == 1);
  CHECK(p.count("shared_experts.1.down_proj.bias") == 1);
  CHECK(by_name(m.shared_parameters()).count("task_experts.a.0.up_proj.weight") == 0);
  // Gates over shared + own sum to one; the mixture uses the task's own expert last.
  auto batch = make_batch<float>({0, 1, 0}, 4, {0, 1, 2}, 8);
  const Tensor<float> h = s.trunk.forward(batch.ids, batch.padding);
  const auto g = s.gate(1, h).to_vector();
  for (float v : sum(s.gate(1, h), -1).to_vector()) CHECK(std::abs(v - 1.0f) <= 1e-6f);
  const auto mixed = s.mix(1, h).to_vector();
  const auto hv = h.to_vector();
  const std::vector<std::vector<float>> ex{s.shared.experts[0](h).to_vector(), s.shared.experts[1](h).to_vector(),
                                           s.specific[1].experts[0](h).to_vector()};
  double worst = 0;
  for (std::size_t tok = 0; tok < 12; ++tok)
    for (std::size_t c = 0; c < 8; ++c) {
      double want = hv[tok * 8 + c];
      for (std::size_t e = 0; e < 3; ++e) want += double(g[tok * 3 + e]) * ex[e][tok * 8 + c];
      worst = std::max(worst, std::abs(want - mixed[tok * 8 + c]));
    }
  CHECK(worst < 1e-5);
  // Tasks a and b present, c absent: c's expert and gate get no gradient; the others do.
  m.total_loss(batch).backward();
  CHECK(has_grad(s.specific[0].experts[0].up_proj.weight));
  CHECK(has_grad(s.specific[1].experts[0].down_proj.weight));
  CHECK(has_grad(s.shared.experts[1].up_proj.weight));
  CHECK(has_grad(s.gates[1].weight));
  CHECK(!s.specific[2].experts[0].up_proj.weight.grad().defined());
  CHECK(!s.specific[2].experts[0].down_proj.weight.grad().defined());
  CHECK(!s.gates[2].weight.grad().defined());
  // Training steps leave the absent task's expert bitwise unchanged.
  const auto before = s.specific[2].experts[0].up_proj.weight.to_vector();
  const auto own_before = s.specific[0].experts[0].up_proj.weight.to_vector();
  auto opt = optim::AdamW(m.trainable_parameters(), [] { optim::AdamWOptions o; o.lr = 1e-2; o.weight_decay = 0.0; return o; }());
  for (int i = 0; i < 2; ++i) m.step(batch, opt);
  CHECK(s.specific[2].experts[0].up_proj.weight.to_vector() == before);
  CHECK(s.specific[0].experts[0].up_proj.weight.to_vector() != own_before);
}

TEST_CASE("gradcheck (double) through a composed 3-task model: MMoE") {
  Generator gen(41);
  ModelD<mtl::MMoE<2, 6>> m(nn::Encoder<double>(tiny_config(1), gen), gen);
  check_gradients(m, make_batch<double>({0, 1, 2, 1, 0, 2}, 5, {0, 2, 1, 0, 3, 0}, 21),
                  {"gates.a.weight", "gates.b.weight", "gates.c.weight", "shared_experts.0.up_proj.weight", "shared_experts.1.down_proj.bias",
                   "trunk.layers.0.attn.q_proj.weight", "heads.a.proj.weight"});
}

TEST_CASE("gradcheck (double) through a composed 3-task model: CGC") {
  Generator gen(42);
  ModelD<mtl::CGC<1, 1, 6>> m(nn::Encoder<double>(tiny_config(1), gen), gen);
  check_gradients(m, make_batch<double>({0, 1, 2, 1, 0, 2}, 5, {0, 2, 1, 0, 3, 0}, 22),
                  {"gates.a.weight", "gates.c.weight", "shared_experts.0.down_proj.weight", "task_experts.a.0.up_proj.weight",
                   "task_experts.b.0.down_proj.weight", "task_experts.c.0.up_proj.bias", "trunk.final_norm.weight"});
}

TEST_CASE("MMoE, CGC: each task's loss in a mixed batch equals its loss on its examples alone") {
  Generator gen(43);
  ModelF<mtl::MMoE<2>> mm(nn::Encoder<>(tiny_config(1), gen), gen);
  ModelF<mtl::CGC<1, 2>> cg(nn::Encoder<>(tiny_config(1), gen), gen);
  const auto batch = make_batch<float>({2, 0, 1, 0, 2, 1}, 5, {0, 1, 2, 0, 1, 3}, 44);
  const auto rows = mtl::route(batch.task_id, batch.size(), 3);
  auto check = [&](auto& m) {
    const auto mixed = m.task_losses(batch);
    for (std::size_t k = 0; k < 3; ++k) {
      INFO(k);
      const auto alone = m.task_losses(batch.select(*rows[k]));
      REQUIRE(mixed[k].has_value());
      REQUIRE(alone[k].has_value());
      CHECK(std::abs(mixed[k]->item() - alone[k]->item()) <= 1e-5f * (1.0f + std::abs(alone[k]->item())));
    }
  };
  check(mm);
  check(cg);
}
