// Packed batches through the multi-task model (Batch::segments / positions): for every sharing
// strategy over a decoder trunk, the per-token tasks (LMHead, TokenClassifier) get the same loss
// packed as unpacked (the token-level mean over the same target tokens), with task rows mixed in
// one batch; select() carries the packing; a head that pools a whole row refuses a packed batch.
#include <string>
#include <vector>

#include "mtl/mtl_support.hpp"
#include "support/catch.hpp"

using namespace cerberus;
using namespace mtl_test;

namespace {

using Cls = mtl::SequenceClassifier<2, mtl::Pooling::mean>;
using Examples = std::vector<std::vector<std::int64_t>>;

template <class S>
using PackModel = mtl::Model<nn::Decoder<>, S, mtl::Equal, mtl::Task<"lm", mtl::LMHead<>>, mtl::Task<"tag", mtl::TokenClassifier<2>>,
                             mtl::Task<"cls", Cls>>;

nn::TransformerConfig config(nn::PositionKind position) {
  nn::TransformerConfig c = tiny_config(2);
  c.max_seq_len = 12;
  c.position = position;
  return c;
}

// Rows of examples (each row: examples of one task side by side) -> a batch; labels per token:
// lm = the next token of the same example (-100 on each example's last token), tag = id % 2.
// packed = false puts every example in a row of its own (no segments / positions).
mtl::Batch<float> make(const std::vector<std::pair<std::int64_t, std::vector<Examples>>>& rows_of_task, bool packed) {
  std::vector<std::pair<std::int64_t, Examples>> rows;
  for (const auto& [task, rs] : rows_of_task)
    for (const auto& r : rs) {
      if (packed) rows.push_back({task, r});
      else
        for (const auto& ex : r) rows.push_back({task, Examples{ex}});
    }
  Index t = 1;
  for (const auto& [task, r] : rows) {
    Index n = 0;
    for (const auto& ex : r) n += static_cast<Index>(ex.size());
    t = std::max(t, n);
  }
  const Index b = static_cast<Index>(rows.size());
  std::vector<std::int64_t> ids(static_cast<std::size_t>(b * t), 0), labels(ids.size(), -100), seg(ids.size(), -1), pos(ids.size(), 0),
      task_id;
  std::vector<std::uint8_t> pad(ids.size(), 1);
  for (Index i = 0; i < b; ++i) {
    const auto& [task, r] = rows[static_cast<std::size_t>(i)];
    task_id.push_back(task);
    std::size_t at = static_cast<std::size_t>(i * t);
    for (std::size_t e = 0; e < r.size(); ++e)
      for (std::size_t j = 0; j < r[e].size(); ++j, ++at) {
        ids[at] = r[e][j];
        pad[at] = 0;
        seg[at] = static_cast<std::int64_t>(e);
        pos[at] = static_cast<std::int64_t>(j);
        if (task == 0 && j + 1 < r[e].size()) labels[at] = r[e][j + 1];
        if (task == 1) labels[at] = r[e][j] % 2;
      }
  }
  mtl::Batch<float> batch;
  batch.ids = from_vector<std::int64_t>(ids, Shape{b, t});
  batch.padding = from_vector<std::uint8_t>(pad, Shape{b, t});
  batch.task_id = from_vector<std::int64_t>(task_id);
  batch.labels = zeros<std::int64_t>(Shape{b});
  batch.token_labels = from_vector<std::int64_t>(labels, Shape{b, t});
  if (packed) {
    batch.segments = from_vector<std::int64_t>(seg, Shape{b, t});
    batch.positions = from_vector<std::int64_t>(pos, Shape{b, t});
  }
  return batch;
}

const std::vector<std::pair<std::int64_t, std::vector<Examples>>> lm_and_tag = {
    {0, {{{1, 4, 7, 2}, {3, 9, 5, 8, 6}}, {{2, 2, 5}, {7, 1, 3, 10, 4, 6}}}},  // lm: two packed rows of two examples
    {1, {{{5, 6, 7}, {8, 9, 10, 1}}}},                                        // tag: one packed row
};

template <class S>
void expect_same_losses_packed(const char* name, nn::PositionKind position) {
  Generator gen(3);
  PackModel<S> model(nn::Decoder<>(config(position), gen), gen);
  const auto unpacked = model.task_losses(make(lm_and_tag, false));
  const auto packed = model.task_losses(make(lm_and_tag, true));
  for (std::size_t k : {std::size_t{0}, std::size_t{1}}) {
    REQUIRE(unpacked[k]);
    REQUIRE(packed[k]);
    INFO(name << ", " << nn::to_string(position) << ", task " << k);
    CHECK(packed[k]->item() == Approx(unpacked[k]->item()).epsilon(1e-5));
  }
  CHECK(!packed[2]);
}

}  // namespace

TEST_CASE("packed batches: per-token tasks get the same loss packed and unpacked, for every sharing strategy") {
  for (const auto position : {nn::PositionKind::learned, nn::PositionKind::rope}) {
    expect_same_losses_packed<mtl::Hard>("Hard", position);
    expect_same_losses_packed<mtl::Hierarchical<1, mtl::Group<"gen", "lm">, mtl::Group<"rest", "tag", "cls">>>("Hierarchical", position);
    expect_same_losses_packed<mtl::Soft<0.01>>("Soft", position);
    expect_same_losses_packed<mtl::CrossStitch<>>("CrossStitch", position);
    expect_same_losses_packed<mtl::Adapters<2, 4.0>>("Adapters", position);
    expect_same_losses_packed<mtl::MMoE<2>>("MMoE", position);
  }
}

TEST_CASE("packed batches: select() carries segments and positions") {
  const auto batch = make(lm_and_tag, true);
  const auto two = batch.select(from_vector<std::int64_t>({2, 0}));
  REQUIRE(two.packed());
  CHECK(two.segments.to_vector() == index_select(batch.segments, 0, from_vector<std::int64_t>({2, 0})).to_vector());
  CHECK(two.positions.to_vector() == index_select(batch.positions, 0, from_vector<std::int64_t>({2, 0})).to_vector());
  CHECK(!make(lm_and_tag, false).packed());
}

TEST_CASE("packed batches: a head that pools a whole row refuses them, naming the task") {
  Generator gen(4);
  PackModel<mtl::Hard> model(nn::Decoder<>(config(nn::PositionKind::learned), gen), gen);
  auto batch = make({{0, {{{1, 2, 3}, {4, 5}}}}, {2, {{{6, 7}, {8, 9, 1}}}}}, true);
  for (const bool losses : {true, false}) {
    try {
      if (losses) (void)model.task_losses(batch);
      else (void)model.forward(batch);
      FAIL("no exception");
    } catch (const ValueError& e) {
      const std::string m = e.what();
      INFO(m);
      CHECK(m.find("[mtl::Model] task \"cls\" has a head that pools a whole row") != std::string::npos);
      CHECK(m.find("[2, 5]") != std::string::npos);
    }
  }
  // Without the pooling task's rows the same packed batch is fine.
  CHECK_NOTHROW(model.task_losses(batch.select(from_vector<std::int64_t>({0}))));
}
