// Decoding: top-p (nucleus) sampling, min_new_tokens, and beam search with KV-cache reordering.
// Beam search is checked three ways: K = 1 equals greedy decoding; its reported score equals the
// model's log-probability of the returned sequence recomputed from scratch (so the cache rows
// really follow their beams); and on a hand-written step function it finds the best sequence
// that greedy decoding misses, with eos, length penalty and min_new_tokens.
#include <cmath>
#include <cstdint>
#include <map>
#include <vector>

#include "cerberus/cerberus.hpp"
#include "nn/nn_support.hpp"
#include "support/catch.hpp"

using namespace cerberus;

namespace {

using nn_test::random_ids;
using nn_test::tiny;

// Sum over new positions of log p(token | prefix), per row, from one full forward pass.
std::vector<double> sequence_logprob(const Tensor<float>& logits, const Tensor<std::int64_t>& seq, Index t0) {
  const auto lp = log_softmax(logits, 2).contiguous();
  const auto ids = seq.to_vector();
  const Index b = seq.size(0), t = seq.size(1), v = logits.size(2);
  std::vector<double> out(static_cast<std::size_t>(b), 0.0);
  for (Index r = 0; r < b; ++r)
    for (Index p = t0; p < t; ++p) out[static_cast<std::size_t>(r)] += lp.data()[(r * t + p - 1) * v + ids[static_cast<std::size_t>(r * t + p)]];
  return out;
}

// A hand-written "model" over tokens {0, 1, 2}: the next-token distribution depends on the last
// token only (the first step on the prompt sees `first`). Each row keeps its history, which
// reorder() permutes as a KV cache would be.
struct TableModel {
  std::vector<double> first;                   // p(token) at the first step
  std::map<std::int64_t, std::vector<double>> after;  // p(token | last token)
  std::vector<std::vector<std::int64_t>> history;

  Tensor<float> operator()(const Tensor<std::int64_t>& ids_new) {
    const Index b = ids_new.size(0), t = ids_new.size(1);
    const auto ids = ids_new.to_vector();
    history.resize(static_cast<std::size_t>(b));
    std::vector<float> logits;
    for (Index r = 0; r < b; ++r) {
      auto& h = history[static_cast<std::size_t>(r)];
      const bool at_prompt = h.empty();
      for (Index j = 0; j < t; ++j) h.push_back(ids[static_cast<std::size_t>(r * t + j)]);
      const auto& p = at_prompt ? first : after.at(h.back());
      for (const double x : p) logits.push_back(static_cast<float>(std::log(x)));
    }
    return from_vector<float>(logits, Shape{b, 3});
  }
  void reorder(const std::vector<Index>& rows) {
    std::vector<std::vector<std::int64_t>> h;
    for (const Index r : rows) h.push_back(history[static_cast<std::size_t>(r)]);
    history = h;
  }
};

nn::BeamSearchResult table_beam(TableModel m, const nn::BeamSearchOptions& o) {
  const auto prompt = from_vector<std::int64_t>({1}, Shape{1, 1});
  return nn::beam_search_with([&](const Tensor<std::int64_t>& ids) { return m(ids); }, [&](const std::vector<Index>& rows) { m.reorder(rows); },
                              prompt, o);
}

}  // namespace

TEST_CASE("top-p: a tiny nucleus is greedy; the nucleus holds exactly the tokens reaching p") {
  auto c = tiny();
  Generator gen(21);
  nn::DecoderOnly<float> model(c, gen);
  const auto prompt = random_ids(3, 3, c.vocab_size, 4);
  nn::SamplingOptions greedy;
  greedy.max_new_tokens = 10;
  const auto g = nn::generate(model, prompt, greedy).to_vector();
  nn::SamplingOptions nucleus = greedy;
  nucleus.temperature = 1.3;
  nucleus.top_p = 1e-6;
  nucleus.seed = 5;
  CHECK(nn::generate(model, prompt, nucleus).to_vector() == g);
  // Without the nucleus the same seed samples something else (so the check above means something).
  nucleus.top_p = 1.0;
  CHECK(nn::generate(model, prompt, nucleus).to_vector() != g);

  // p = (0.5, 0.3, 0.2): top_p 0.5 keeps token 0 alone; top_p 0.6 keeps {0, 1} with 0.5 : 0.3.
  const auto logits = from_vector<float>({std::log(0.5f), std::log(0.3f), std::log(0.2f)}, Shape{1, 3});
  nn::SamplingOptions o;
  o.temperature = 1.0;
  o.top_p = 0.5;
  Generator draws(3);
  for (int i = 0; i < 50; ++i) CHECK(nn::choose_tokens(logits, o, draws)[0] == 0);
  o.top_p = 0.6;
  int counts[3] = {0, 0, 0};
  for (int i = 0; i < 4000; ++i) ++counts[nn::choose_tokens(logits, o, draws)[0]];
  CHECK(counts[2] == 0);
  CHECK(std::abs(counts[0] / 4000.0 - 0.625) < 0.03);  // 0.5 / 0.8; 4 sigma is 0.031
  // top-k first, then top-p on the renormalised rest: top_k 2 leaves (0.625, 0.375), top_p 0.6 keeps token 0 only.
  o.top_k = 2;
  for (int i = 0; i < 50; ++i) CHECK(nn::choose_tokens(logits, o, draws)[0] == 0);
  o.top_p = 0.0;
  CHECK_THROWS_AS(nn::choose_tokens(logits, o, draws), ValueError);
}

TEST_CASE("sampling with top-k, top-p and temperature is reproducible for a seed") {
  auto c = tiny();
  Generator gen(22);
  nn::DecoderOnly<float> model(c, gen);
  const auto prompt = random_ids(2, 2, c.vocab_size, 7);
  nn::SamplingOptions o;
  o.max_new_tokens = 12;
  o.temperature = 0.9;
  o.top_k = 10;
  o.top_p = 0.9;
  o.seed = 42;
  const auto a = nn::generate(model, prompt, o).to_vector();
  CHECK(nn::generate(model, prompt, o).to_vector() == a);
  o.seed = 43;
  CHECK(nn::generate(model, prompt, o).to_vector() != a);
}

TEST_CASE("min_new_tokens keeps eos out until it is reached") {
  auto c = tiny();
  Generator gen(23);
  nn::DecoderOnly<float> model(c, gen);
  const auto prompt = random_ids(2, 3, c.vocab_size, 9);
  nn::SamplingOptions o;
  o.max_new_tokens = 8;
  const auto g = nn::generate(model, prompt, o).to_vector();
  o.eos_id = g[3];  // greedy's first token of row 0 becomes eos: without a minimum it stops at once
  const auto stopped = nn::generate(model, prompt, o);
  CHECK(stopped.to_vector()[3] == o.eos_id);
  o.min_new_tokens = 4;
  for (const double temperature : {0.0, 1.0}) {
    o.temperature = temperature;
    const auto out = nn::generate(model, prompt, o);
    const auto v = out.to_vector();
    const Index len = out.size(1);
    REQUIRE(len >= 3 + 4);
    for (Index r = 0; r < 2; ++r)
      for (Index t = 3; t < 3 + 4; ++t) CHECK(v[static_cast<std::size_t>(r * len + t)] != o.eos_id);
  }
  // The same for beam search.
  nn::BeamSearchOptions b;
  b.num_beams = 3;
  b.max_new_tokens = 8;
  b.eos_id = o.eos_id;
  b.min_new_tokens = 4;
  const auto r = nn::beam_search(model, prompt, b);
  for (Index row = 0; row < 2; ++row) {
    CHECK(r.lengths[static_cast<std::size_t>(row)] >= 4);
    for (Index t = 3; t < 3 + 4; ++t) CHECK(r.sequences.to_vector()[static_cast<std::size_t>(row * r.sequences.size(1) + t)] != o.eos_id);
  }
}

TEST_CASE("beam search with one beam is greedy decoding (DecoderOnly and EncoderDecoder)") {
  auto c = tiny();
  c.position = nn::PositionKind::rope;
  c.n_kv_heads = 2;
  Generator gen(24);
  nn::DecoderOnly<float> model(c, gen);
  const auto prompt = random_ids(2, 4, c.vocab_size, 10);
  nn::SamplingOptions greedy;
  greedy.max_new_tokens = 9;
  nn::BeamSearchOptions one;
  one.num_beams = 1;
  one.max_new_tokens = 9;
  CHECK(nn::beam_search(model, prompt, one).sequences.to_vector() == nn::generate(model, prompt, greedy).to_vector());
  // With eos: the greedy row that meets eos ends there, padded with eos.
  greedy.eos_id = one.eos_id = nn::generate(model, prompt, greedy).to_vector()[4 + 2];  // row 0's 3rd new token
  const auto g = nn::generate(model, prompt, greedy);
  const auto bs = nn::beam_search(model, prompt, one);
  CHECK(bs.sequences.to_vector() == g.to_vector());
  CHECK(model.is_training());

  auto ce = tiny();
  Generator gen2(25);
  nn::EncoderDecoder<float> seq2seq(ce, gen2);
  const auto src = random_ids(2, 5, ce.vocab_size, 11);
  const auto start = from_vector<std::int64_t>({0, 0}, Shape{2, 1});
  nn::SamplingOptions g2;
  g2.max_new_tokens = 6;
  nn::BeamSearchOptions o2;
  o2.num_beams = 1;
  o2.max_new_tokens = 6;
  CHECK(nn::beam_search(seq2seq, src, start, o2).sequences.to_vector() == nn::generate(seq2seq, src, start, g2).to_vector());
}

TEST_CASE("beam search scores are the recomputed log-probabilities and at least greedy's") {
  auto c = tiny();
  Generator gen(26);
  nn::DecoderOnly<float> model(c, gen);
  model.eval();
  const Index t0 = 3, n = 7;
  const auto prompt = random_ids(3, t0, c.vocab_size, 12);
  nn::BeamSearchOptions o;
  o.num_beams = 4;
  o.max_new_tokens = n;
  o.length_penalty = 0.0;  // raw sums, comparable with greedy's
  const auto r = nn::beam_search(model, prompt, o);
  REQUIRE(r.sequences.shape() == Shape{3, t0 + n});
  // If any cache row attended another beam's keys the recomputed log-probability would differ.
  const auto lp = sequence_logprob(model.forward(r.sequences), r.sequences, t0);
  nn::SamplingOptions greedy;
  greedy.max_new_tokens = n;
  const auto g = nn::generate(model, prompt, greedy);
  const auto glp = sequence_logprob(model.forward(g), g, t0);
  bool some_row_better = false;
  for (std::size_t row = 0; row < 3; ++row) {
    CHECK(std::abs(lp[row] - r.scores[row]) < 1e-4);
    CHECK(lp[row] >= glp[row] - 1e-5);
    some_row_better = some_row_better || lp[row] > glp[row] + 1e-6;
  }
  CHECK(some_row_better);  // on this model the beam finds something greedy does not

  // The same through an EncoderDecoder (memory and padding repeated per beam, cross keys reordered).
  auto ce = tiny();
  Generator gen2(27);
  nn::EncoderDecoder<float> seq2seq(ce, gen2);
  seq2seq.eval();
  const auto src = random_ids(2, 5, ce.vocab_size, 13);
  const auto padding = from_vector<std::uint8_t>({0, 0, 0, 0, 0, 0, 0, 0, 1, 1}, Shape{2, 5});
  const auto start = from_vector<std::int64_t>({0, 0}, Shape{2, 1});
  const auto r2 = nn::beam_search(seq2seq, src, start, o, padding);
  const auto lp2 = sequence_logprob(seq2seq.forward(src, r2.sequences, padding), r2.sequences, 1);
  for (std::size_t row = 0; row < 2; ++row) CHECK(std::abs(lp2[row] - r2.scores[row]) < 1e-4);
}

TEST_CASE("beam search finds the best sequence that greedy decoding misses") {
  // First step: p(1) = 0.55, p(2) = 0.40. After 1 the next token is nearly uniform (best 0.34);
  // after 2 token 1 has 0.9. Greedy takes 1 then 0: 0.55 * 0.34 = 0.187; the best sequence is
  // 2 1: 0.40 * 0.9 = 0.36, which two beams find.
  TableModel m{{0.05, 0.55, 0.40}, {{0, {1 / 3., 1 / 3., 1 / 3.}}, {1, {0.34, 0.33, 0.33}}, {2, {0.05, 0.9, 0.05}}}, {}};
  nn::SamplingOptions greedy;
  greedy.max_new_tokens = 2;
  TableModel mg = m;
  const auto g = nn::generate_with([&](const Tensor<std::int64_t>& ids) { return mg(ids); }, from_vector<std::int64_t>({1}, Shape{1, 1}), greedy);
  CHECK(g.to_vector() == std::vector<std::int64_t>{1, 1, 0});
  nn::BeamSearchOptions o;
  o.max_new_tokens = 2;
  o.length_penalty = 0.0;
  o.num_beams = 1;
  CHECK(table_beam(m, o).sequences.to_vector() == std::vector<std::int64_t>{1, 1, 0});
  o.num_beams = 2;
  const auto r = table_beam(m, o);
  CHECK(r.sequences.to_vector() == std::vector<std::int64_t>{1, 2, 1});
  CHECK(std::abs(r.scores[0] - std::log(0.36)) < 1e-6);
}

TEST_CASE("beam search: eos ends hypotheses, length penalty and min_new_tokens choose among them") {
  // Token 0 is eos. First step: p(eos) = 0.5, p(1) = 0.3, p(2) = 0.2; after 1 or 2, eos has 0.95.
  // Hypotheses: [eos] log 0.5 = -0.693 (1 token); [1 eos] log 0.285 = -1.255 (2 tokens).
  TableModel m{{0.5, 0.3, 0.2}, {{0, {1 / 3., 1 / 3., 1 / 3.}}, {1, {0.95, 0.025, 0.025}}, {2, {0.95, 0.025, 0.025}}}, {}};
  nn::BeamSearchOptions o;
  o.num_beams = 2;
  o.max_new_tokens = 5;
  o.eos_id = 0;
  o.length_penalty = 0.0;
  auto r = table_beam(m, o);
  CHECK(r.sequences.to_vector() == std::vector<std::int64_t>{1, 0});
  CHECK(r.lengths[0] == 1);
  CHECK(std::abs(r.scores[0] - std::log(0.5)) < 1e-6);
  // length_penalty 1: -0.693 / 1 < -1.255 / 2 = -0.628, so the longer hypothesis wins.
  o.length_penalty = 1.0;
  r = table_beam(m, o);
  CHECK(r.sequences.to_vector() == std::vector<std::int64_t>{1, 1, 0});
  CHECK(std::abs(r.scores[0] - std::log(0.3 * 0.95) / 2) < 1e-6);
  // min_new_tokens 1 forbids the one-token [eos] even without a length penalty.
  o.length_penalty = 0.0;
  o.min_new_tokens = 1;
  r = table_beam(m, o);
  CHECK(r.sequences.to_vector() == std::vector<std::int64_t>{1, 1, 0});
  CHECK(std::abs(r.scores[0] - std::log(0.95 * 0.3 / 0.5)) < 1e-6);  // p(1) renormalised without eos: 0.6
  o.num_beams = 0;
  CHECK_THROWS_AS(table_beam(m, o), ValueError);
}

TEST_CASE("KVCache::reorder makes rows follow their new sources") {
  auto c = tiny();
  Generator gen(28);
  nn::DecoderOnly<float> model(c, gen);
  model.eval();
  const auto ids = random_ids(3, 5, c.vocab_size, 14);
  auto cache = model.make_cache(3, 8);
  model.forward_step(ids.slice(1, 0, 4).contiguous(), cache);
  cache.reorder({2, 0, 0});
  const auto step = model.forward_step(ids.slice(1, 4, 5).contiguous(), cache);  // row r: prefix of old row, new token of row r
  // Reference: full sequences [prefix of rows 2, 0, 0] + [last token of rows 0, 1, 2].
  const auto v = ids.to_vector();
  std::vector<std::int64_t> ref;
  const Index src[3] = {2, 0, 0};
  for (Index r = 0; r < 3; ++r) {
    for (Index t = 0; t < 4; ++t) ref.push_back(v[static_cast<std::size_t>(src[r] * 5 + t)]);
    ref.push_back(v[static_cast<std::size_t>(r * 5 + 4)]);
  }
  const auto full = model.forward(from_vector<std::int64_t>(ref, Shape{3, 5})).slice(1, 4, 5).contiguous();
  const auto got = step.contiguous();
  double worst = 0;
  for (Index i = 0; i < got.numel(); ++i) worst = std::max(worst, static_cast<double>(std::abs(got.data()[i] - full.data()[i])));
  CHECK(worst < 1e-4);
  CHECK_THROWS_AS(cache.reorder({0, 1}), ShapeError);
  CHECK_THROWS_AS(cache.reorder({0, 1, 3}), IndexError);
}
