// data/lm_batches.hpp: windows of T + 1 tokens as (inputs, targets) shifted by one, seeded random
// offsets that cover the whole range and repeat with the generator's state, evenly spaced fixed
// batches, and errors that say which row or size is wrong.
#include <cstdint>
#include <set>
#include <vector>

#include "cerberus/data/lm_batches.hpp"
#include "support/catch.hpp"
#include "support/message.hpp"

using namespace cerberus;
using cerberus::testing_support::message_of;
using Ids = std::vector<std::int64_t>;

namespace {
// A stream whose token at position i is 1000 + i, so a token tells where it came from.
Ids positions(std::int64_t n) {
  Ids s(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) s[static_cast<std::size_t>(i)] = 1000 + i;
  return s;
}
}  // namespace

TEST_CASE("lm_batch_at: row b is the window at offsets[b]; targets are inputs shifted by one") {
  const Ids s = positions(10);
  const std::vector<Index> offsets{0, 6, 3};
  const auto b = data::lm_batch_at(s, offsets, 3);
  CHECK(b.inputs.shape() == Shape{3, 3});
  CHECK(b.targets.shape() == Shape{3, 3});
  CHECK(b.inputs.to_vector() == Ids{1000, 1001, 1002, 1006, 1007, 1008, 1003, 1004, 1005});
  CHECK(b.targets.to_vector() == Ids{1001, 1002, 1003, 1007, 1008, 1009, 1004, 1005, 1006});
}

TEST_CASE("lm_batch_at: an offset whose window leaves the stream names its row and the valid range") {
  const Ids s = positions(10);
  const std::vector<Index> bad{0, 7};
  CHECK(message_of([&] { data::lm_batch_at(s, bad, 3); }) ==
        "[lm_batch_at] offset 7 of row 1 is outside [0, 6] (a window of 4 tokens in a stream of 10)");
  const std::vector<Index> negative{-1};
  CHECK(message_of([&] { data::lm_batch_at(s, negative, 3); }) ==
        "[lm_batch_at] offset -1 of row 0 is outside [0, 6] (a window of 4 tokens in a stream of 10)");
}

TEST_CASE("random_lm_batch: windows are consecutive tokens, offsets cover [0, N - T - 1], the generator decides") {
  const Ids s = positions(20);
  const Index t = 4;
  Generator gen(7);
  std::set<std::int64_t> starts;
  for (int k = 0; k < 200; ++k) {
    const auto b = data::random_lm_batch(s, 8, t, gen);
    REQUIRE(b.inputs.shape() == Shape{8, t});
    const Ids in = b.inputs.to_vector(), tg = b.targets.to_vector();
    for (Index r = 0; r < 8; ++r) {
      const std::int64_t first = in[static_cast<std::size_t>(r * t)];
      starts.insert(first - 1000);
      for (Index j = 0; j < t; ++j) {
        CHECK(in[static_cast<std::size_t>(r * t + j)] == first + j);
        CHECK(tg[static_cast<std::size_t>(r * t + j)] == first + j + 1);
      }
    }
  }
  // 1600 draws over 16 offsets: every offset 0..15 appears, nothing else.
  CHECK(starts.size() == 16);
  CHECK(*starts.begin() == 0);
  CHECK(*starts.rbegin() == 15);

  // The batches are a function of the generator's state: same seed, same batches; a generator
  // restored to a saved (seed, offset) continues with the same batches (what --resume relies on).
  Generator a(3), b(3);
  CHECK(data::random_lm_batch(s, 4, t, a).inputs.to_vector() == data::random_lm_batch(s, 4, t, b).inputs.to_vector());
  const std::uint64_t seed = a.seed(), offset = a.offset();
  const Ids next = data::random_lm_batch(s, 4, t, a).inputs.to_vector();
  Generator restored(99);
  restored.set_state(seed, offset);
  CHECK(data::random_lm_batch(s, 4, t, restored).inputs.to_vector() == next);
  Generator other(4);
  CHECK(data::random_lm_batch(s, 4, t, other).inputs.to_vector() != data::random_lm_batch(s, 4, t, b).inputs.to_vector());
}

TEST_CASE("evenly_spaced_lm_batches: fixed windows from the first to the last, without overlap when they fit") {
  const Ids s = positions(100);
  const auto batches = data::evenly_spaced_lm_batches(s, 3, 2, 4);  // 6 windows over offsets 0..95
  REQUIRE(batches.size() == 3);
  Ids firsts;
  for (const auto& b : batches) {
    CHECK(b.inputs.shape() == Shape{2, 4});
    const Ids in = b.inputs.to_vector();
    firsts.push_back(in[0] - 1000);
    firsts.push_back(in[4] - 1000);
  }
  CHECK(firsts == Ids{0, 19, 38, 57, 76, 95});  // i * 95 / 5
  for (std::size_t i = 1; i < firsts.size(); ++i) CHECK(firsts[i] - firsts[i - 1] >= 4);  // no overlap
  // Deterministic: the same batches every time.
  const auto again = data::evenly_spaced_lm_batches(s, 3, 2, 4);
  for (std::size_t k = 0; k < 3; ++k) CHECK(again[k].targets.to_vector() == batches[k].targets.to_vector());
  // One window: offset 0.
  CHECK(data::evenly_spaced_lm_batches(s, 1, 1, 4)[0].inputs.to_vector() == Ids{1000, 1001, 1002, 1003});
}

TEST_CASE("lm batches: sizes are checked and the message says what was expected") {
  const Ids s = positions(5);
  Generator gen(1);
  CHECK(message_of([&] { data::random_lm_batch(s, 2, 5, gen); }) ==
        "[random_lm_batch] a window of seq_len + 1 = 6 tokens needs a stream of at least that many, got 5 tokens");
  CHECK(message_of([&] { data::random_lm_batch(s, 0, 2, gen); }) == "[random_lm_batch] batch_size must be >= 1, got 0");
  CHECK(message_of([&] { data::random_lm_batch(s, 1, 0, gen); }) == "[random_lm_batch] seq_len must be >= 1, got 0");
  CHECK(message_of([&] { data::evenly_spaced_lm_batches(s, 0, 1, 2); }) ==
        "[evenly_spaced_lm_batches] num_batches must be >= 1, got 0");
  // A stream of exactly T + 1 tokens has one window.
  CHECK(data::random_lm_batch(s, 3, 4, gen).inputs.to_vector() == Ids{1000, 1001, 1002, 1003, 1000, 1001, 1002, 1003, 1000, 1001, 1002, 1003});
}
