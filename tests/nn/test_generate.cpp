// Decoding: top-p (nucleus) sampling, min_new_tokens, and beam search with KV-cache reordering.
// Beam search is checked three ways: K = 1 equals greedy decoding; its reported score equals the
// model's log-probability of the returned sequence recomputed from scratch (so the cache rows
// really follow their beams); and on a hand-written step function it finds the best sequence
// that greedy decoding misses, with eos, length penalty and min_new_tokens. Repetition control
// (repetition_penalty, no_repeat_ngram_size) is checked on fixed logits against hand
// computations, for generate_with and beam_search_with.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
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

// A step function whose every row gets the same logits `row` at every step: whatever it picks
// comes from the repetition rules, not from the model.
struct FixedLogits {
  std::vector<float> row;
  Tensor<float> operator()(const Tensor<std::int64_t>& ids_new) const {
    std::vector<float> out;
    for (Index r = 0; r < ids_new.size(0); ++r) out.insert(out.end(), row.begin(), row.end());
    return from_vector<float>(out, Shape{ids_new.size(0), static_cast<Index>(row.size())});
  }
};

Tensor<std::int64_t> fixed_generate(const std::vector<float>& row, const std::vector<std::int64_t>& prompt, Index rows,
                                    const nn::SamplingOptions& o) {
  const FixedLogits step{row};
  return nn::generate_with(step, from_vector<std::int64_t>(prompt, Shape{rows, static_cast<Index>(prompt.size()) / rows}), o);
}

nn::BeamSearchResult fixed_beam(const std::vector<float>& row, const std::vector<std::int64_t>& prompt, const nn::BeamSearchOptions& o) {
  const FixedLogits step{row};
  return nn::beam_search_with(step, [](const std::vector<Index>&) {}, from_vector<std::int64_t>(prompt, Shape{1, static_cast<Index>(prompt.size())}),
                              o);
}

bool has_repeated_ngram(const std::vector<std::int64_t>& seq, std::size_t n) {
  for (std::size_t i = 0; i + n <= seq.size(); ++i)
    for (std::size_t j = i + 1; j + n <= seq.size(); ++j)
      if (std::equal(seq.begin() + static_cast<std::ptrdiff_t>(i), seq.begin() + static_cast<std::ptrdiff_t>(i + n),
                     seq.begin() + static_cast<std::ptrdiff_t>(j)))
        return true;
  return false;
}

}  // namespace

TEST_CASE("repetition_penalty divides positive and multiplies negative scores of seen ids, once each") {
  std::vector<double> scores{2.0, 1.5, -1.0, -0.5, 0.0, 3.0};
  std::vector<char> seen;
  nn::detail::penalise_repetitions(scores.data(), 6, {0, 2, 0, 4, 2, 7, -1}, 2.0, seen);  // 7 and -1: outside the vocab
  CHECK(scores == std::vector<double>{1.0, 1.5, -2.0, -0.5, 0.0, 3.0});

  // Greedy: 2.0 / 1.2 = 1.667 > 1.5 keeps token 0 although it occurs twice (penalised once);
  // 2.0 / 1.4 = 1.43 < 1.5 switches to the unseen token 1.
  nn::SamplingOptions o;
  Generator gen(0);
  const auto logits = from_vector<float>({2.0f, 1.5f, -3.0f}, Shape{1, 3});
  const std::vector<std::vector<std::int64_t>> seen_twice{std::vector<std::int64_t>{0, 0}};
  const std::vector<std::vector<std::int64_t>> seen_once{std::vector<std::int64_t>{0}};
  o.repetition_penalty = 1.2;
  CHECK(nn::choose_tokens(logits, o, gen, false, seen_twice)[0] == 0);
  o.repetition_penalty = 1.4;
  CHECK(nn::choose_tokens(logits, o, gen, false, seen_twice)[0] == 1);
  // Negative logits: -1.0 * 1.05 = -1.05 > -1.1 keeps token 0; -1.0 * 1.2 = -1.2 < -1.1 does not.
  const auto negative = from_vector<float>({-1.0f, -1.1f, -5.0f}, Shape{1, 3});
  o.repetition_penalty = 1.05;
  CHECK(nn::choose_tokens(negative, o, gen, false, seen_once)[0] == 0);
  o.repetition_penalty = 1.2;
  CHECK(nn::choose_tokens(negative, o, gen, false, seen_once)[0] == 1);
  CHECK_THROWS_AS(nn::choose_tokens(negative, o, gen), ValueError);  // the rules need the ids so far
  o.repetition_penalty = 0.0;
  CHECK_THROWS_AS(nn::choose_tokens(negative, o, gen, false, seen_once), ValueError);
}

TEST_CASE("repetition_penalty in the generation loop: each row's prompt and new tokens count") {
  // Logits 3, 2, 1, 0.5; penalty 2. Row 0, prompt [0]: 3 -> 1.5 < 2, so 1; then 0 (1.5) beats
  // 1 (2 -> 1) and the unseen 2 (1), and stays. Row 1, prompt [1]: 2 -> 1 < 3, so 0, then 0 again.
  const std::vector<float> row{3.0f, 2.0f, 1.0f, 0.5f};
  nn::SamplingOptions o;
  o.max_new_tokens = 4;
  o.repetition_penalty = 2.0;
  CHECK(fixed_generate(row, {0, 1}, 2, o).to_vector() == std::vector<std::int64_t>{0, 1, 0, 0, 0, 1, 0, 0, 0, 0});
  o.repetition_penalty = 1.4;  // 3 / 1.4 = 2.14 > 2: never switches
  CHECK(fixed_generate(row, {0}, 1, o).to_vector() == std::vector<std::int64_t>{0, 0, 0, 0, 0});
}

TEST_CASE("repetition_includes_prompt = false: the rules read the new tokens only") {
  // Logits prefer 0, then 1, then 2, then 3; unigram banning. Prompt [0, 1]: with the prompt, 0 and
  // 1 are banned from the start (2, 3, then everything is banned: argmax of all -inf is id 0); new
  // tokens only: 0, 1, 2, 3.
  const std::vector<float> row{4.0f, 3.0f, 2.0f, 1.0f};
  nn::SamplingOptions o;
  o.max_new_tokens = 4;
  o.no_repeat_ngram_size = 1;
  CHECK(fixed_generate(row, {0, 1}, 1, o).to_vector() == std::vector<std::int64_t>{0, 1, 2, 3, 0, 0});
  o.repetition_includes_prompt = false;
  CHECK(fixed_generate(row, {0, 1}, 1, o).to_vector() == std::vector<std::int64_t>{0, 1, 0, 1, 2, 3});
  nn::BeamSearchOptions bo;
  bo.num_beams = 1;
  bo.max_new_tokens = 3;
  bo.no_repeat_ngram_size = 1;
  bo.repetition_includes_prompt = false;
  CHECK(fixed_beam(row, {0, 1}, bo).sequences.to_vector() == std::vector<std::int64_t>{0, 1, 0, 1, 2});
}

TEST_CASE("no_repeat_ngram_size bans exactly the tokens completing an n-gram already present") {
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> scores(6, 0.0);
  // Trigrams: the last two tokens (1, 2) began (1, 2, 3) and (1, 2, 4): 3 and 4 are banned.
  nn::detail::ban_repeated_ngrams(scores.data(), 6, {1, 2, 3, 1, 2, 4, 1, 2}, 3);
  CHECK(scores == std::vector<double>{0, 0, 0, -inf, -inf, 0});
  scores.assign(6, 0.0);
  nn::detail::ban_repeated_ngrams(scores.data(), 6, {1, 2, 3, 2}, 1);  // unigrams: every id present
  CHECK(scores == std::vector<double>{0, -inf, -inf, -inf, 0, 0});
  scores.assign(6, 0.0);
  nn::detail::ban_repeated_ngrams(scores.data(), 6, {1}, 3);  // shorter than n - 1: nothing
  CHECK(scores == std::vector<double>(6, 0.0));

  // Greedy over fixed logits 3, 2, 1, 0.5 with bigrams banned, by hand from prompt [0]:
  //   [0]          no bigram yet                         -> 0
  //   [0 0]        after 0: (0 0) seen, 0 banned          -> 1
  //   [0 0 1]      nothing followed 1                     -> 0
  //   [0 0 1 0]    after 0: 0, 1 banned                   -> 2
  //   [.. 0 2]     -> 0, then after 0: 0, 1, 2 banned     -> 3, then 0.
  const std::vector<float> row{3.0f, 2.0f, 1.0f, 0.5f};
  nn::SamplingOptions o;
  o.max_new_tokens = 7;
  o.no_repeat_ngram_size = 2;
  const auto g = fixed_generate(row, {0}, 1, o).to_vector();
  CHECK(g == std::vector<std::int64_t>{0, 0, 1, 0, 2, 0, 3, 0});
  CHECK_FALSE(has_repeated_ngram(g, 2));
  // The prompt counts: after [0 0] the first new token cannot be 0; per row.
  nn::SamplingOptions two;
  two.max_new_tokens = 2;
  two.no_repeat_ngram_size = 2;
  CHECK(fixed_generate(row, {0, 0, 2, 1}, 2, two).to_vector() == std::vector<std::int64_t>{0, 0, 1, 0, 2, 1, 0, 0});
  // Sampling never draws a banned token: after [0 0 1 0] the bigrams (0 0) and (0 1) ban 0 and 1.
  o.temperature = 1.0;
  o.max_new_tokens = 1;
  for (std::uint64_t seed = 0; seed < 50; ++seed) {
    o.seed = seed;
    const auto s = fixed_generate(row, {0, 0, 1, 0}, 1, o).to_vector();
    CHECK((s[4] == 2 || s[4] == 3));
  }
  o.no_repeat_ngram_size = -1;
  CHECK_THROWS_AS(fixed_generate(row, {0}, 1, o), ValueError);
}

TEST_CASE("repetition control off is the old loop: choose_tokens without the ids so far") {
  auto c = tiny();
  Generator gen(31);
  nn::DecoderOnly<float> model(c, gen);
  const auto prompt = random_ids(2, 3, c.vocab_size, 5);
  for (const double temperature : {0.0, 0.8}) {
    nn::SamplingOptions o;
    o.max_new_tokens = 6;
    o.temperature = temperature;
    o.top_k = 5;
    o.seed = 3;
    const auto out = nn::generate(model, prompt, o);
    // The loop as it was before the repetition rules, by hand.
    model.eval();
    NoGradGuard no_grad;
    auto cache = model.make_cache(2, 3 + 5);
    Generator draws(o.seed);
    std::vector<std::int64_t> rows[2] = {{}, {}};
    Tensor<std::int64_t> next = prompt;
    for (Index n = 0; n < o.max_new_tokens; ++n) {
      const auto h = model.decoder.forward_step(next, cache);
      const auto tokens = nn::choose_tokens(model.logits(h.slice(1, h.size(1) - 1, h.size(1))).select(1, 0), o, draws);
      rows[0].push_back(tokens[0]);
      rows[1].push_back(tokens[1]);
      next = from_vector<std::int64_t>(tokens, Shape{2, 1});
    }
    model.train();
    const auto p = prompt.to_vector();
    std::vector<std::int64_t> expected(p.begin(), p.begin() + 3);
    expected.insert(expected.end(), rows[0].begin(), rows[0].end());
    expected.insert(expected.end(), p.begin() + 3, p.end());
    expected.insert(expected.end(), rows[1].begin(), rows[1].end());
    CHECK(out.to_vector() == expected);
  }
}

TEST_CASE("beam search: repetition rules act per beam on log-probabilities (Hugging Face)") {
  // Logits log p + 5 for p = 0.2, 0.5, 0.3: log-probabilities -1.609, -0.693, -1.204.
  const std::vector<float> row{static_cast<float>(std::log(0.2) + 5), static_cast<float>(std::log(0.5) + 5),
                               static_cast<float>(std::log(0.3) + 5)};
  nn::BeamSearchOptions o;
  o.num_beams = 1;
  o.max_new_tokens = 3;
  o.length_penalty = 0.0;
  CHECK(fixed_beam(row, {1}, o).sequences.to_vector() == std::vector<std::int64_t>{1, 1, 1, 1});
  // Penalty 1.5 on the prompt's token 1: its log-probability -0.693 * 1.5 = -1.04 still beats
  // -1.204, so beam search keeps 1, while greedy, penalising the raw logit 4.31 / 1.5 = 2.87 below
  // 3.80, switches to 2: the processors see log-probabilities in beam search, logits otherwise.
  o.repetition_penalty = 1.5;
  CHECK(fixed_beam(row, {1}, o).sequences.to_vector() == std::vector<std::int64_t>{1, 1, 1, 1});
  nn::SamplingOptions greedy;
  greedy.max_new_tokens = 1;
  greedy.repetition_penalty = 1.5;
  CHECK(fixed_generate(row, {1}, 1, greedy).to_vector() == std::vector<std::int64_t>{1, 2});
  // Penalty 2: 1 -> -1.386, so 2 (-1.204); then 2 -> -2.408 and 1 (-1.386) beats 0 (-1.609), twice.
  // The score sums the penalised log-probabilities.
  o.repetition_penalty = 2.0;
  auto r = fixed_beam(row, {1}, o);
  CHECK(r.sequences.to_vector() == std::vector<std::int64_t>{1, 2, 1, 1});
  CHECK(std::abs(r.scores[0] - (std::log(0.3) + 4 * std::log(0.5))) < 1e-5);

  // Bigrams banned, two beams, by hand from prompt [1]:
  //   step 1: [1] 0.5, [2] 0.3
  //   step 2: beam [1 1] bans 1: 2 -> 0.15, 0 -> 0.1; beam [1 2]: 1 -> 0.15 (tie: lower beam first)
  //   step 3: [1 1 2] -> 1: 0.075 (nothing followed 2); [1 2 1] bans 2, 1 -> 0.075
  // so [1 1 2 1] (the lower beam on the tie), with score log 0.075; without the rule, [1 1 1 1].
  o.repetition_penalty = 1.0;
  o.num_beams = 2;
  CHECK(fixed_beam(row, {1}, o).sequences.to_vector() == std::vector<std::int64_t>{1, 1, 1, 1});
  o.no_repeat_ngram_size = 2;
  r = fixed_beam(row, {1}, o);
  CHECK(r.sequences.to_vector() == std::vector<std::int64_t>{1, 1, 2, 1});
  CHECK(std::abs(r.scores[0] - std::log(0.075)) < 1e-5);
  o.max_new_tokens = 5;
  for (const Index k : {1, 2, 3}) {
    o.num_beams = k;
    CHECK_FALSE(has_repeated_ngram(fixed_beam(row, {1}, o).sequences.to_vector(), 2));
  }
  o.repetition_penalty = -1.0;
  CHECK_THROWS_AS(fixed_beam(row, {1}, o), ValueError);
}

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
