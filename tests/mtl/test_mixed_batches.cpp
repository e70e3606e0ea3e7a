// Mixed-task batches: routing by task_id, each task's loss is the mean over its own examples,
// an absent task has no loss, no gradient and no update, bad task ids are errors. Heads against
// hand-computed references (pooling first / mean / last, token and LM losses ignoring padding).
#include <cmath>

#include "mtl/mtl_support.hpp"
#include "support/catch.hpp"

using namespace cerberus;
using namespace mtl_test;

namespace {
using Cls = mtl::SequenceClassifier<2, mtl::Pooling::mean>;
using M = mtl::Model<nn::Encoder<>, mtl::Hard, mtl::Equal, mtl::Task<"a", Cls>, mtl::Task<"b", mtl::TokenClassifier<2>>,
                     mtl::Task<"c", mtl::Regression<>>>;
}  // namespace

TEST_CASE("task names and indices are compile-time; heads are reached by name") {
  static_assert(M::task_index<"a">() == 0 && M::task_index<"c">() == 2);
  static_assert(M::task_count == 3);
  Generator gen(1);
  M m(nn::Encoder<>(tiny_config(), gen), gen);
  CHECK(m.head<"b">().proj.out_features() == 2);
  CHECK(m.head<"c">().proj.out_features() == 1);
  CHECK(M::task_names()[1] == "b");
}

TEST_CASE("each task's loss is its head's mean over its own examples, as if batched alone") {
  Generator gen(2);
  M m(nn::Encoder<>(tiny_config(), gen), gen);
  const auto batch = make_batch<float>({2, 0, 1, 0, 2, 2, 1}, 5, {0, 1, 2, 0, 3, 1, 0}, 4);
  const auto mixed = m.task_losses(batch);
  const std::vector<std::vector<std::int64_t>> rows{{1, 3}, {2, 6}, {0, 4, 5}};
  for (std::size_t k = 0; k < 3; ++k) {
    const auto alone = m.task_losses(batch.select(from_vector<std::int64_t>(rows[k])));
    REQUIRE(mixed[k].has_value());
    REQUIRE(alone[k].has_value());
    for (std::size_t j = 0; j < 3; ++j)
      if (j != k) CHECK(!alone[j].has_value());
    CHECK(std::abs(mixed[k]->item() - alone[k]->item()) < 1e-5f);
  }
  // The classification loss by hand: mean over task a's two rows of -log softmax(logits)[label].
  const auto out = m.forward(batch);
  const auto logits = out.outputs[0]->to_vector();
  const auto labels = batch.labels.to_vector();
  double want = 0;
  for (std::size_t r = 0; r < 2; ++r) {
    const double z0 = logits[2 * r], z1 = logits[2 * r + 1];
    const double lse = std::log(std::exp(z0) + std::exp(z1));
    want += lse - (labels[static_cast<std::size_t>(rows[0][r])] == 0 ? z0 : z1);
  }
  CHECK(std::abs(mixed[0]->item() - want / 2) < 1e-5);
}

TEST_CASE("forward_with_losses gives forward's outputs and task_losses' losses from one trunk pass") {
  Generator gen(5);
  M m(nn::Encoder<>(tiny_config(), gen), gen);
  m.eval();  // no dropout: the three calls must see the same network
  const auto batch = make_batch<float>({1, 0, 1, 1, 0}, 5, {0, 2, 1, 0, 3}, 6);  // task c absent
  const auto both = m.forward_with_losses(batch);
  const auto outputs = m.forward(batch);
  const auto losses = m.task_losses(batch);
  CHECK(outputs.losses.empty());
  REQUIRE(both.losses.size() == 3);
  for (std::size_t k = 0; k < 3; ++k) {
    REQUIRE(both.outputs[k].has_value() == outputs.outputs[k].has_value());
    REQUIRE(both.losses[k].has_value() == losses[k].has_value());
    CHECK(both.rows[k].has_value() == outputs.rows[k].has_value());
    if (!both.outputs[k]) continue;
    CHECK(both.outputs[k]->to_vector() == outputs.outputs[k]->to_vector());
    CHECK(both.rows[k]->to_vector() == outputs.rows[k]->to_vector());
    CHECK(both.losses[k]->item() == losses[k]->item());
  }
  CHECK(!both.losses[2].has_value());
}

TEST_CASE("an absent task: no loss, no gradient, no update, and the step still works") {
  Generator gen(3);
  M m(nn::Encoder<>(tiny_config(), gen), gen);
  const auto batch = make_batch<float>({0, 2, 0, 2}, 4, {0, 1, 0, 2}, 5);
  const auto l = m.losses(batch);
  CHECK(l.names == std::vector<std::string>{"a", "b", "c"});
  CHECK(l.losses[0].has_value());
  CHECK(!l.losses[1].has_value());
  const auto head_b = m.head<"b">().proj.weight.to_vector();
  const auto head_a = m.head<"a">().proj.weight.to_vector();
  auto opt = optim::AdamW(m.trainable_parameters());
  const auto report = m.step(batch, opt);
  CHECK(!m.head<"b">().proj.weight.grad().defined());
  CHECK(m.head<"b">().proj.weight.to_vector() == head_b);
  CHECK(m.head<"a">().proj.weight.to_vector() != head_a);
  REQUIRE(report.weights.size() == 3);
  CHECK(report.weights[1] == 0.0);
  CHECK(std::isnan(report.losses[1]));
  CHECK(std::isfinite(report.total));
  CHECK(std::abs(report.total - (l.losses[0]->item() + l.losses[2]->item())) < 1e-5);
  // A batch of one task only, and an empty-of-this-task batch for every strategy path.
  const auto only_b = make_batch<float>({1, 1}, 4, {0, 0}, 6);
  const auto lb = m.task_losses(only_b);
  CHECK((!lb[0] && lb[1] && !lb[2]));
}

TEST_CASE("a task id outside the model is an error naming the example") {
  Generator gen(4);
  M m(nn::Encoder<>(tiny_config(), gen), gen);
  auto batch = make_batch<float>({0, 3}, 4, {0, 0}, 6);
  CHECK_THROWS_WITH(m.task_losses(batch), Catch::Contains("[mtl::route] example 1 has task_id 3, but the model has 3 tasks"));
  batch.task_id = from_vector<std::int64_t>({0});
  CHECK_THROWS_WITH(m.task_losses(batch), Catch::Contains("[mtl::route] task_id must be int64 [B] with B = 2"));
}

TEST_CASE("pooling: first, masked mean and last non-padded token against references") {
  Generator gen(5);
  const mtl::HeadContext<double> ctx{3, 7, nullptr};
  mtl::SequenceClassifier<2, mtl::Pooling::first, double> first(ctx, gen);
  mtl::SequenceClassifier<2, mtl::Pooling::mean, double> mean_head(ctx, gen);
  mtl::SequenceClassifier<2, mtl::Pooling::last, double> last(ctx, gen);
  const auto h = uniform<double>(Shape{2, 4, 3}, -1, 1, gen);
  const auto pad = from_vector<std::uint8_t>({0, 0, 0, 1, 0, 1, 1, 1}, Shape{2, 4});  // lengths 3 and 1
  const auto hv = h.to_vector();
  auto at = [&](Index b, Index t, Index c) { return hv[static_cast<std::size_t>((b * 4 + t) * 3 + c)]; };
  auto apply = [&](const nn::Linear<double>& lin, const std::vector<double>& x) {
    std::vector<double> y(2);
    for (Index o = 0; o < 2; ++o) {
      y[o] = lin.bias(o);
      for (Index c = 0; c < 3; ++c) y[o] += lin.weight(o, c) * x[c];
    }
    return y;
  };
  const auto fo = first.forward(h, pad).to_vector(), mo = mean_head.forward(h, pad).to_vector(), lo = last.forward(h, pad).to_vector();
  const Index len[2] = {3, 1};
  for (Index b = 0; b < 2; ++b) {
    std::vector<double> x0(3), xm(3, 0.0), xl(3);
    for (Index c = 0; c < 3; ++c) {
      x0[c] = at(b, 0, c);
      xl[c] = at(b, len[b] - 1, c);
      for (Index t = 0; t < len[b]; ++t) xm[c] += at(b, t, c) / static_cast<double>(len[b]);
    }
    const auto y0 = apply(first.proj, x0), ym = apply(mean_head.proj, xm), yl = apply(last.proj, xl);
    for (Index o = 0; o < 2; ++o) {
      CHECK(std::abs(fo[b * 2 + o] - y0[o]) < 1e-12);
      CHECK(std::abs(mo[b * 2 + o] - ym[o]) < 1e-12);
      CHECK(std::abs(lo[b * 2 + o] - yl[o]) < 1e-12);
    }
  }
  CHECK_THROWS_WITH(first.forward(uniform<double>(Shape{2, 4, 5}, -1, 1, gen)), Catch::Contains("[SequenceClassifier] hidden states must be [B, T, 3], got [2, 4, 5]"));
}

TEST_CASE("token classifier and LM losses ignore padded positions; regression is the mean squared error") {
  Generator gen(6);
  const mtl::HeadContext<double> ctx{3, 5, nullptr};
  mtl::TokenClassifier<4, double> tok(ctx, gen);
  mtl::Regression<1, mtl::Pooling::first, double> reg(ctx, gen);
  mtl::Batch<double> b;
  b.padding = from_vector<std::uint8_t>({0, 1, 0, 0}, Shape{2, 2});
  b.token_labels = from_vector<std::int64_t>({1, 3, 2, -100}, Shape{2, 2});
  b.values = from_vector<double>({0.5, -1.0});
  const auto h = uniform<double>(Shape{2, 2, 3}, -1, 1, gen);
  const auto logits = tok.forward(h, b.padding);
  // Counted tokens: (0,0) label 1 and (1,0) label 2; (0,1) is padded, (1,1) is -100.
  const auto z = logits.to_vector();
  auto ce = [&](std::size_t row, std::size_t label) {
    double s = 0;
    for (std::size_t j = 0; j < 4; ++j) s += std::exp(z[row * 4 + j]);
    return std::log(s) - z[row * 4 + label];
  };
  CHECK(std::abs(tok.loss(logits, b).item() - (ce(0, 1) + ce(2, 2)) / 2) < 1e-12);
  const auto pred = reg.forward(h, b.padding);
  const auto p = pred.to_vector();
  CHECK(std::abs(reg.loss(pred, b).item() - ((p[0] - 0.5) * (p[0] - 0.5) + (p[1] + 1.0) * (p[1] + 1.0)) / 2) < 1e-12);
  mtl::Batch<double> missing;
  CHECK_THROWS_WITH(reg.loss(pred, missing), Catch::Contains("[Regression] the batch has no values"));
}
