// instruct/collate.hpp with a 600-piece SentencePiece model trained in memory: the loss covers
// exactly the target tokens + eos (decoding the unmasked targets gives the target text back),
// targets are the inputs shifted by one, padding, task ids, every truncation policy and its
// counts, the encoder-decoder and classification variants, and templates -> collation end to end.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "cerberus/instruct.hpp"
#include "cerberus/tokenizer.hpp"
#include "support/catch.hpp"
#include "support/message.hpp"
#include "tokenizer/corpus.hpp"

using namespace cerberus;
using namespace cerberus::instruct;
using cerberus::testing_support::message_of;
using Ids = std::vector<std::int64_t>;

namespace {

const tokenizer::Tokenizer& tok() {
  static const tokenizer::Tokenizer t = [] {
    tokenizer::TrainerOptions o;
    o.vocab_size = 600;
    o.user_defined_symbols = {"<sep>"};
    return tokenizer::train(o, testing_support::make_corpus(3000)).tokenizer;
  }();
  return t;
}

Ids row(const Tensor<std::int64_t>& t, Index b) {
  const Ids all = t.contiguous().to_vector();
  const Index T = t.size(1);
  return Ids(all.begin() + b * T, all.begin() + (b + 1) * T);
}

// The ids at the positions where targets are not ignore_index, in order.
Ids unmasked(const LmBatch& batch, Index b) {
  Ids out;
  for (std::int64_t id : row(batch.targets, b))
    if (id != ignore_index) out.push_back(id);
  return out;
}

const std::vector<TextPair> pairs{
    {"Translate this sentence into French. the whale and the ship", "the sea and the captain", 0},
    {"Summarize this article. the nation and the congress have been at peace for many years", "peace", 1},
    {"Is this sentence positive or negative? a good day", "positive", 2, 1},
};

}  // namespace

TEST_CASE("collate_lm: the loss covers exactly the target tokens and eos") {
  const LmBatch b = collate_lm(std::span<const TextPair>(pairs), tok(), {.max_length = 64});
  REQUIRE(b.input_ids.shape() == b.targets.shape());
  REQUIRE(b.input_ids.size(0) == 3);
  const Index T = b.input_ids.size(1);
  for (Index i = 0; i < 3; ++i) {
    const auto& ex = pairs[static_cast<std::size_t>(i)];
    const Ids target = unmasked(b, i);
    const Ids expect_target = tok().encode(ex.target);
    REQUIRE(target.size() == expect_target.size() + 1);
    CHECK(target.back() == tok().eos_id());
    CHECK(tok().decode(target) == ex.target);  // decode drops eos
    CHECK(Ids(target.begin(), target.end() - 1) == expect_target);
    // Layout: prompt + target, inputs = sequence[:-1], targets = sequence[1:] on the target only.
    const Ids prompt = tok().encode(ex.prompt);
    const Ids ids = row(b.input_ids, i), tg = row(b.targets, i);
    const std::vector<std::uint8_t> pad = [&] {
      const auto all = b.padding.contiguous().to_vector();
      return std::vector<std::uint8_t>(all.begin() + i * T, all.begin() + (i + 1) * T);
    }();
    const std::size_t L = prompt.size() + expect_target.size() + 1;  // whole sequence
    for (std::size_t t = 0; t < static_cast<std::size_t>(T); ++t) {
      if (t + 1 < L) {
        CHECK(pad[t] == 0);
        CHECK(ids[t] == (t < prompt.size() ? prompt[t] : expect_target[t - prompt.size()]));
        if (t + 1 < prompt.size()) CHECK(tg[t] == ignore_index);  // predicting a prompt token: no loss
        else if (t + 1 < L) {
          CHECK(tg[t] != ignore_index);
          if (t + 1 < static_cast<std::size_t>(T)) CHECK((t + 2 == L || ids[t + 1] == tg[t]));  // shifted by one
        }
      } else {
        CHECK(pad[t] == 1);
        CHECK(ids[t] == tok().pad_id());
        CHECK(tg[t] == ignore_index);
      }
    }
  }
  CHECK(b.task_id.to_vector() == Ids{0, 1, 2});
  CHECK(b.labels.to_vector() == Ids{-1, -1, 1});
  CHECK(b.report.prompts_truncated == 0);
  CHECK(b.report.kept == Ids{0, 1, 2});
  // The multi-task view the model consumes.
  const mtl::Batch<float> m = b.to_mtl();
  CHECK(m.size() == 3);
  CHECK(m.token_labels.to_vector() == b.targets.to_vector());
  CHECK(m.padding.to_vector() == b.padding.to_vector());
}

TEST_CASE("collate_lm: bos, no eos, and padding to max_length") {
  CollateOptions o{.max_length = 40, .add_bos = true, .add_eos = false, .pad_to_max_length = true};
  const LmBatch b = collate_lm(std::span<const TextPair>(pairs).first(1), tok(), o);
  CHECK(b.input_ids.shape() == Shape{1, 39});
  CHECK(row(b.input_ids, 0)[0] == tok().bos_id());
  const Ids target = unmasked(b, 0);
  CHECK(target == tok().encode(pairs[0].target));  // no eos
}

TEST_CASE("collate_lm: a <sep> id between prompt and target carries no loss") {
  const Ids sep{tok().id_of("<sep>")};
  const LmBatch b = collate_lm(std::span<const TextPair>(pairs).first(1), tok(), {.max_length = 64, .sep_id = sep[0]});
  const Ids prompt = tok().encode(pairs[0].prompt), target = tok().encode(pairs[0].target);
  const Ids ids = row(b.input_ids, 0);
  CHECK(ids[prompt.size()] == sep[0]);
  CHECK(Ids(ids.begin(), ids.begin() + static_cast<long>(prompt.size())) == prompt);
  CHECK(ids[prompt.size() + 1] == target[0]);
  CHECK(row(b.targets, 0)[prompt.size() - 1] == ignore_index);  // predicting <sep>: no loss
  CHECK(row(b.targets, 0)[prompt.size()] == target[0]);         // predicting the target from <sep>
  CHECK(tok().decode(unmasked(b, 0)) == pairs[0].target);
  // With a separator, a target may fill everything but sep and eos.
  const std::vector<TextPair> tight{{"the sea", "whale", 0}};
  const LmBatch t = collate_lm(std::span<const TextPair>(tight), tok(), {.max_length = 3, .sep_id = sep[0]});
  CHECK(row(t.input_ids, 0) == Ids{sep[0], tok().encode("whale")[0]});
  CHECK(t.report.prompt_tokens_dropped == static_cast<std::int64_t>(tok().encode("the sea").size()));
}

TEST_CASE("truncation: the prompt is cut from the left (or right), never the target, and counted") {
  const std::vector<TextPair> one{pairs[1]};
  const Ids prompt = tok().encode(one[0].prompt), target = tok().encode(one[0].target);
  const Index max_length = static_cast<Index>(target.size()) + 1 + 5;  // room for 5 prompt tokens
  const LmBatch left = collate_lm(std::span<const TextPair>(one), tok(), {.max_length = max_length});
  CHECK(left.report.prompts_truncated == 1);
  CHECK(left.report.prompt_tokens_dropped == static_cast<std::int64_t>(prompt.size()) - 5);
  const Ids ids = row(left.input_ids, 0);
  CHECK(Ids(ids.begin(), ids.begin() + 5) == Ids(prompt.end() - 5, prompt.end()));  // the end of the prompt stays
  CHECK(tok().decode(unmasked(left, 0)) == one[0].target);
  CHECK(left.input_ids.size(1) == max_length - 1);

  const LmBatch right = collate_lm(std::span<const TextPair>(one), tok(), {.max_length = max_length, .truncation = Truncation::prompt_right});
  const Ids rids = row(right.input_ids, 0);
  CHECK(Ids(rids.begin(), rids.begin() + 5) == Ids(prompt.begin(), prompt.begin() + 5));
  CHECK(tok().decode(unmasked(right, 0)) == one[0].target);

  CHECK(message_of([&] { collate_lm(std::span<const TextPair>(one), tok(), {.max_length = max_length, .truncation = Truncation::error}); }) ==
        "[instruct::collate] example 0: prompt " + std::to_string(prompt.size()) + " + target " + std::to_string(target.size() + 1) +
            " tokens exceed max_length " + std::to_string(max_length) + " (Truncation::error)");
}

TEST_CASE("a target that alone exceeds max_length: an error by default, or skipped / truncated and counted") {
  const std::vector<TextPair> ex{{"the ship and the sea", "whale", 2}, pairs[0], {"the sea", "ship", 2}};
  const Ids long_target = tok().encode(pairs[0].target);
  const Index max_length = 4;
  REQUIRE(tok().encode("whale").size() == 1);
  REQUIRE(tok().encode("ship").size() == 1);
  REQUIRE(static_cast<Index>(long_target.size()) + 2 > max_length);
  CHECK(message_of([&] { collate_lm(std::span<const TextPair>(ex), tok(), {.max_length = max_length}); }) ==
        "[instruct::collate] example 1: the target alone needs " + std::to_string(long_target.size() + 2) +
            " tokens (target " + std::to_string(long_target.size()) +
            " + eos/bos/one prompt token), max_length is 4 (OverlongTarget::skip or truncate_target to go on, counted)");
  const LmBatch skipped = collate_lm(std::span<const TextPair>(ex), tok(), {.max_length = max_length, .overlong_target = OverlongTarget::skip});
  CHECK(skipped.report.skipped == Ids{1});
  CHECK(skipped.report.kept == Ids{0, 2});
  CHECK(skipped.input_ids.size(0) == 2);
  CHECK(skipped.task_id.to_vector() == Ids{2, 2});
  CHECK(skipped.report.summary().find("1 skipped") != std::string::npos);
  const LmBatch cut =
      collate_lm(std::span<const TextPair>(ex), tok(), {.max_length = max_length, .overlong_target = OverlongTarget::truncate_target});
  CHECK(cut.report.targets_truncated == 1);
  CHECK(cut.report.target_tokens_dropped == static_cast<std::int64_t>(long_target.size()) - 2);
  const Ids kept = unmasked(cut, 1);
  CHECK(kept == Ids{long_target[0], long_target[1], tok().eos_id()});
  CHECK(cut.input_ids.size(0) == 3);
}

TEST_CASE("collate_seq2seq: source = prompt eos; decoder input = start target; decoder targets = target eos") {
  const Seq2SeqBatch b = collate_seq2seq(std::span<const TextPair>(pairs), tok(), 64, {.max_length = 32});
  REQUIRE(b.source_ids.size(0) == 3);
  for (Index i = 0; i < 3; ++i) {
    const auto& ex = pairs[static_cast<std::size_t>(i)];
    Ids src;
    for (auto id : row(b.source_ids, i))
      if (id != tok().pad_id()) src.push_back(id);
    Ids expect = tok().encode(ex.prompt);
    expect.push_back(tok().eos_id());
    CHECK(src == expect);
    Ids tg;
    for (auto id : row(b.decoder_targets, i))
      if (id != ignore_index) tg.push_back(id);
    CHECK(tok().decode(tg) == ex.target);
    CHECK(tg.back() == tok().eos_id());
    const Ids din = row(b.decoder_input, i);
    CHECK(din[0] == tok().pad_id());  // T5's start token
    for (std::size_t t = 1; t < tg.size(); ++t) CHECK(din[t] == tg[t - 1]);
  }
  const Seq2SeqBatch cut = collate_seq2seq(std::span<const TextPair>(pairs), tok(), 4, {.max_length = 32});
  CHECK(cut.source_ids.size(1) == 4);
  CHECK(cut.report.prompts_truncated == 3);
}

TEST_CASE("collate_classify: prompt ids with labels for a head; an unlabelled example is an error") {
  const TaskRegistry reg = default_tasks();
  const TaskSpec& s = reg.at("sentiment");
  const std::vector<TextPair> ex{
      {render(s, 0, {"a good day", "positive"}).prompt, "positive", 2, render(s, 0, {"a good day", "positive"}).label},
      {render(s, 1, {"a bad war", "negative"}).prompt, "negative", 2, render(s, 1, {"a bad war", "negative"}).label}};
  const ClassifyBatch b = collate_classify(std::span<const TextPair>(ex), tok(), {.max_length = 128});
  CHECK(b.batch.labels.to_vector() == Ids{1, 0});
  CHECK(b.batch.task_id.to_vector() == Ids{2, 2});
  Ids r0;
  for (auto id : row(b.batch.ids, 0))
    if (id != tok().pad_id()) r0.push_back(id);
  Ids expect = tok().encode(ex[0].prompt);
  expect.push_back(tok().eos_id());
  CHECK(r0 == expect);
  const std::vector<TextPair> bad{pairs[0]};
  CHECK(message_of([&] { collate_classify(std::span<const TextPair>(bad), tok()); }) ==
        "[instruct::collate_classify] example 0 (task 0) has no label: its target \"the sea and the captain\" is not an option of a "
        "classification task");
}

TEST_CASE("templates -> mixture -> collation end to end: each row decodes back to its rendered target") {
  const TaskRegistry reg = default_tasks();
  const std::vector<std::vector<Example>> data{
      {{"the whale", "the ship"}, {"the sea", "the ocean"}},
      {{"the nation and the congress have been at peace", "peace"}},
      {{"a good day", "positive"}, {"a bad storm", "negative"}, {"good men", "positive"}}};
  std::vector<TaskSource> sources;
  for (std::size_t k = 0; k < reg.size(); ++k)
    sources.push_back({reg[k].name, static_cast<std::int64_t>(k), static_cast<std::int64_t>(data[k].size())});
  MixtureSampler sampler(temperature(sources, 2.0), 3);
  std::vector<TextPair> batch;
  for (int i = 0; i < 8; ++i) {
    const Draw d = sampler.next();
    const TaskSpec& spec = reg[static_cast<std::size_t>(d.task_id)];
    const Rendered r = render(spec, pick_template(d, spec.templates.size()),
                              data[static_cast<std::size_t>(d.task_id)][static_cast<std::size_t>(d.example)]);
    batch.push_back({r.prompt, r.target, d.task_id, r.label});
  }
  const LmBatch b = collate_lm(std::span<const TextPair>(batch), tok(), {.max_length = 96});
  REQUIRE(b.input_ids.size(0) == 8);
  for (Index i = 0; i < 8; ++i) CHECK(tok().decode(unmasked(b, i)) == batch[static_cast<std::size_t>(i)].target);
  Ids tids;
  for (const auto& p : batch) tids.push_back(p.task_id);
  CHECK(b.task_id.to_vector() == tids);
  const auto routed = mtl::route(b.task_id, b.input_ids.size(0), 3);
  std::int64_t n = 0;
  for (const auto& r : routed)
    if (r) n += r->size(0);
  CHECK(n == 8);
}

namespace {

// Short examples of two tasks, interleaved, for packing.
const std::vector<TextPair> short_pairs{
    {"Translate. the whale", "the sea", 0},
    {"Summarize. the nation and the congress", "peace", 1},
    {"Translate. a good day", "the captain and the ship", 0},
    {"Summarize. many years", "years", 1},
    {"Translate. the ship", "the whale and the sea", 0},
    {"Summarize. the congress have been at peace", "the nation", 1},
    {"Translate. the captain", "a ship", 0},
};

// Row b's positions [begin, end) of a [B, T] tensor.
template <class X>
std::vector<X> span_of(const Tensor<X>& t, Index b, Index begin, Index end) {
  const auto all = t.contiguous().to_vector();
  const Index T = t.size(1);
  return std::vector<X>(all.begin() + b * T + begin, all.begin() + b * T + end);
}

// Every packed example against collate_lm of that example alone (same options): the same
// input ids and targets (hence the same loss mask), segment = its index in the row, positions
// 0 .., one task per row, padding only after the last example (segment -1, ignore_index).
void check_packed_against_collate_lm(const std::vector<TextPair>& examples, const CollateOptions& o) {
  const LmBatch p = pack_lm(std::span<const TextPair>(examples), tok(), o);
  const Index B = p.input_ids.size(0), T = p.input_ids.size(1);
  REQUIRE(T == o.max_length - 1);
  REQUIRE(static_cast<Index>(p.row_examples.size()) == B);
  for (const auto* t : {&p.targets, &p.segments, &p.positions}) CHECK(t->shape() == Shape{B, T});
  const Ids tasks = p.task_id.to_vector();
  std::int64_t counted = 0, expected_counted = 0;
  Ids seen;
  for (Index b = 0; b < B; ++b) {
    Index at = 0;
    const auto& members = p.row_examples[static_cast<std::size_t>(b)];
    REQUIRE(!members.empty());
    for (std::size_t e = 0; e < members.size(); ++e) {
      const TextPair& ex = examples[static_cast<std::size_t>(members[e])];
      seen.push_back(members[e]);
      CHECK(ex.task_id == tasks[static_cast<std::size_t>(b)]);  // one task per row
      CollateOptions alone_o = o;
      alone_o.pad_to_max_length = false;
      const LmBatch alone = collate_lm(std::span<const TextPair>(&ex, 1), tok(), alone_o);
      const Index n = alone.input_ids.size(1);  // L - 1: no padding for a single example
      INFO("row " << b << ", example " << members[e] << " at " << at << ", " << n << " positions");
      REQUIRE(at + n <= T);
      CHECK(span_of(p.input_ids, b, at, at + n) == row(alone.input_ids, 0));
      CHECK(span_of(p.targets, b, at, at + n) == row(alone.targets, 0));
      CHECK(span_of(p.segments, b, at, at + n) == Ids(static_cast<std::size_t>(n), static_cast<std::int64_t>(e)));
      Ids positions(static_cast<std::size_t>(n));
      for (Index i = 0; i < n; ++i) positions[static_cast<std::size_t>(i)] = i;
      CHECK(span_of(p.positions, b, at, at + n) == positions);
      CHECK(span_of(p.padding, b, at, at + n) == std::vector<std::uint8_t>(static_cast<std::size_t>(n), 0));
      expected_counted += static_cast<std::int64_t>(unmasked(alone, 0).size());
      at += n;
    }
    CHECK(span_of(p.padding, b, at, T) == std::vector<std::uint8_t>(static_cast<std::size_t>(T - at), 1));
    CHECK(span_of(p.segments, b, at, T) == Ids(static_cast<std::size_t>(T - at), -1));
    CHECK(span_of(p.targets, b, at, T) == Ids(static_cast<std::size_t>(T - at), ignore_index));
    counted += static_cast<std::int64_t>(unmasked(p, b).size());
  }
  CHECK(counted == expected_counted);  // the loss covers exactly each example's target tokens + eos
  std::sort(seen.begin(), seen.end());
  CHECK(seen == p.report.kept);  // every kept example is in exactly one row
  CHECK(p.labels.to_vector() == Ids(static_cast<std::size_t>(B), -1));
}

}  // namespace

TEST_CASE("pack_lm: each packed example equals collate_lm of it alone; segments, positions, one task per row") {
  check_packed_against_collate_lm(short_pairs, {.max_length = 32});
  check_packed_against_collate_lm(short_pairs, {.max_length = 20, .add_bos = true});
  check_packed_against_collate_lm(short_pairs, {.max_length = 24, .sep_id = tok().id_of("<sep>")});
  // Prompts cut to fit (the same rule as collate_lm), counted the same way.
  const CollateOptions tight{.max_length = 14};
  check_packed_against_collate_lm(pairs, tight);
  const std::int64_t cut = pack_lm(std::span<const TextPair>(pairs), tok(), tight).report.prompts_truncated;
  CHECK(cut > 0);
  CHECK(cut == collate_lm(std::span<const TextPair>(pairs), tok(), tight).report.prompts_truncated);
}

TEST_CASE("pack_lm: greedy first fit in input order, deterministic, and the packing reaches the mtl batch") {
  const CollateOptions o{.max_length = 32};
  const LmBatch p = pack_lm(std::span<const TextPair>(short_pairs), tok(), o);
  const LmBatch again = pack_lm(std::span<const TextPair>(short_pairs), tok(), o);
  CHECK(p.input_ids.to_vector() == again.input_ids.to_vector());
  CHECK(p.row_examples == again.row_examples);
  // Rows are opened in input order: the first row holds example 0, the second example 1.
  REQUIRE(p.row_examples.size() >= 2);
  CHECK(p.row_examples[0].front() == 0);
  CHECK(p.row_examples[1].front() == 1);
  // Fewer rows than examples, and denser than collate_lm padded to the same width.
  const LmBatch plain = collate_lm(std::span<const TextPair>(short_pairs), tok(), {.max_length = 32, .pad_to_max_length = true});
  INFO(short_pairs.size() << " examples in " << p.input_ids.size(0) << " rows, fill " << p.fill() << " (unpacked " << plain.fill() << ")");
  CHECK(p.input_ids.size(0) < static_cast<Index>(short_pairs.size()));
  CHECK(p.fill() > plain.fill());
  const mtl::Batch<float> m = p.to_mtl();
  REQUIRE(m.packed());
  CHECK(m.segments.to_vector() == p.segments.to_vector());
  CHECK(m.positions.to_vector() == p.positions.to_vector());
  CHECK(!collate_lm(std::span<const TextPair>(short_pairs), tok(), o).to_mtl().packed());
}

TEST_CASE("pack_lm: an overlong target follows collate_lm's rule") {
  const std::vector<TextPair> long_target{{"Translate.", "the sea and the captain and the whale and the ship and the nation", 0}};
  CHECK_THROWS_AS(pack_lm(std::span<const TextPair>(long_target), tok(), {.max_length = 6}), ValueError);
  const LmBatch skipped = pack_lm(std::span<const TextPair>(long_target), tok(), {.max_length = 6, .overlong_target = OverlongTarget::skip});
  CHECK(skipped.input_ids.size(0) == 0);
  CHECK(skipped.report.skipped == Ids{0});
  check_packed_against_collate_lm(long_target, {.max_length = 6, .overlong_target = OverlongTarget::truncate_target});
}
