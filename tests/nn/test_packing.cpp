// Sequence packing through the nn stacks (nn/packing.hpp): packing never attends across
// examples. A packed row's hidden states equal each example's own unpacked forward (positions
// restarting at 0) for learned, sinusoidal and RoPE positions, grouped-query heads, padding at
// the end of a row, Decoder and Encoder; the gradient of one example's loss with respect to the
// token embeddings of another example in the same row is exactly zero; DecoderOnly's packed loss
// equals the token-weighted mean of the separate losses; shape errors and cross-attention refuse.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "cerberus/cerberus.hpp"
#include "nn/nn_support.hpp"
#include "support/catch.hpp"
#include "support/reference.hpp"

using namespace cerberus;
using cerberus::nn_test::tiny;
using cerberus::testing_support::compare;
using cerberus::testing_support::values;

namespace {

// Examples (token id lists) packed left to right into rows of width t; the rest is padding.
struct Packed {
  Tensor<std::int64_t> ids;
  Tensor<std::uint8_t> padding;
  nn::Packing<> packing;
};

Packed pack(const std::vector<std::vector<std::vector<std::int64_t>>>& rows, Index t) {
  const Index b = static_cast<Index>(rows.size());
  std::vector<std::int64_t> ids(static_cast<std::size_t>(b * t), 0), seg(static_cast<std::size_t>(b * t), -1),
      pos(static_cast<std::size_t>(b * t), 0);
  std::vector<std::uint8_t> pad(static_cast<std::size_t>(b * t), 1);
  for (Index r = 0; r < b; ++r) {
    std::size_t at = static_cast<std::size_t>(r * t);
    for (std::size_t e = 0; e < rows[static_cast<std::size_t>(r)].size(); ++e) {
      const auto& ex = rows[static_cast<std::size_t>(r)][e];
      for (std::size_t i = 0; i < ex.size(); ++i, ++at) {
        ids[at] = ex[i];
        seg[at] = static_cast<std::int64_t>(e);
        pos[at] = static_cast<std::int64_t>(i);
        pad[at] = 0;
      }
    }
  }
  return {from_vector<std::int64_t>(ids, Shape{b, t}), from_vector<std::uint8_t>(pad, Shape{b, t}),
          {from_vector<std::int64_t>(seg, Shape{b, t}), from_vector<std::int64_t>(pos, Shape{b, t})}};
}

std::vector<std::int64_t> tokens(Index n, std::int64_t first, Index vocab) {
  std::vector<std::int64_t> v;
  for (Index i = 0; i < n; ++i) v.push_back((first + 5 * i) % vocab);
  return v;
}

// Every example of a packed forward (hidden [B, T, C]) against the stack run on that example alone.
template <class Stack>
void expect_examples_unchanged(Stack& stack, const std::vector<std::vector<std::vector<std::int64_t>>>& rows, const Tensor<float>& hidden,
                               const std::string& what) {
  const Index t = hidden.size(1), c = hidden.size(2);
  const auto packed = values(hidden);
  for (std::size_t r = 0; r < rows.size(); ++r) {
    Index start = 0;
    for (const auto& ex : rows[r]) {
      const Index n = static_cast<Index>(ex.size());
      const auto alone = values(stack.forward(from_vector<std::int64_t>(ex, Shape{1, n})));
      const std::vector<double> got(packed.begin() + (static_cast<Index>(r) * t + start) * c, packed.begin() + (static_cast<Index>(r) * t + start + n) * c);
      const auto cmp = compare(got, alone, 1e-5, 1e-5);
      INFO(what << ": row " << r << ", example at " << start << " of length " << n << ": " << cmp.describe());
      CHECK(cmp.ok());
      start += n;
    }
  }
}

const std::vector<std::vector<std::vector<std::int64_t>>> packed_rows = {
    {tokens(5, 1, 23), tokens(7, 2, 23), tokens(3, 3, 23)},  // 15 of 17: two padded slots
    {tokens(9, 4, 23), tokens(8, 6, 23)},                    // full
};

}  // namespace

TEST_CASE("packing never attends across examples: a packed Decoder row equals each example alone") {
  for (const auto position : {nn::PositionKind::learned, nn::PositionKind::sinusoidal, nn::PositionKind::rope}) {
    for (const Index kv_heads : {Index{0}, Index{2}}) {
      auto c = tiny();
      c.position = position;
      c.n_kv_heads = kv_heads;
      Generator gen(7);
      nn::Decoder<> decoder(c, gen);
      const Packed p = pack(packed_rows, 17);
      const auto hidden = decoder.forward(p.ids, p.padding, {}, {}, p.packing);
      expect_examples_unchanged(decoder, packed_rows, hidden,
                                std::string("Decoder, ") + nn::to_string(position) + (kv_heads ? ", grouped-query" : ""));
    }
  }
}

TEST_CASE("packing never attends across examples: a packed Encoder row equals each example alone") {
  for (const auto position : {nn::PositionKind::learned, nn::PositionKind::rope}) {
    auto c = tiny();
    c.position = position;
    Generator gen(8);
    nn::Encoder<> encoder(c, gen);
    const Packed p = pack(packed_rows, 17);
    expect_examples_unchanged(encoder, packed_rows, encoder.forward(p.ids, p.padding, p.packing),
                              std::string("Encoder, ") + nn::to_string(position));
  }
}

TEST_CASE("packing never attends across examples: one example's loss has exactly zero gradient on another's embeddings") {
  // Example A uses token ids 0..10, example B ids 11..22: the embedding rows of B's ids get
  // gradient only through B's tokens, so from A's loss they must get exactly 0. (Untied: a tied
  // LM head would give every vocabulary row a gradient through the softmax.)
  for (const auto position : {nn::PositionKind::learned, nn::PositionKind::rope}) {
    auto c = tiny();
    c.position = position;
    c.tie_embeddings = false;
    Generator gen(9);
    nn::DecoderOnly<> model(c, gen);
    const std::vector<std::int64_t> a = {0, 3, 6, 9, 1, 4, 7}, b = {11, 14, 17, 20, 12, 15, 18, 21, 13};
    const Packed p = pack({{b, a}, {a, b}}, 16);  // B before and after A: causal and anti-causal leaks both covered
    std::vector<std::int64_t> targets(32, -100);
    for (std::size_t i = 0; i + 1 < a.size(); ++i) {
      targets[9 + i] = a[i + 1];  // row 0: A starts at 9
      targets[16 + i] = a[i + 1];  // row 1: A starts at 0
    }
    const auto loss_a = model.loss(p.ids, from_vector<std::int64_t>(targets, Shape{2, 16}), p.padding, -100, p.packing);
    loss_a.backward();
    const auto grad = model.decoder.embed_tokens->weight.grad().to_vector();
    const Index width = c.d_model;
    double a_rows = 0, b_rows = 0;
    for (Index v = 0; v < c.vocab_size; ++v)
      for (Index j = 0; j < width; ++j) {
        const double g = std::abs(grad[static_cast<std::size_t>(v * width + j)]);
        (v <= 10 ? a_rows : b_rows) += g;
      }
    INFO(nn::to_string(position) << ": |grad| on A's rows " << a_rows << ", on B's rows " << b_rows);
    CHECK(a_rows > 0);
    CHECK(b_rows == 0.0);  // exactly: no path from A's loss to B's tokens
  }
}

TEST_CASE("packing: DecoderOnly's packed loss is the token-weighted mean of each example's own loss") {
  auto c = tiny();
  c.position = nn::PositionKind::rope;
  Generator gen(10);
  nn::DecoderOnly<> model(c, gen);
  const Packed p = pack(packed_rows, 17);
  const auto ids = p.ids.to_vector();
  std::vector<std::int64_t> targets(ids.size(), -100);
  double separate = 0;
  Index counted = 0, start = 0;
  for (std::size_t r = 0; r < packed_rows.size(); ++r, start = 0)
    for (const auto& ex : packed_rows[r]) {
      const Index n = static_cast<Index>(ex.size());
      for (Index i = 0; i + 1 < n; ++i) targets[static_cast<std::size_t>(static_cast<Index>(r) * 17 + start + i)] = ex[static_cast<std::size_t>(i + 1)];
      std::vector<std::int64_t> own(ex.begin() + 1, ex.end());
      own.push_back(-100);
      separate += model.loss(from_vector<std::int64_t>(ex, Shape{1, n}), from_vector<std::int64_t>(own, Shape{1, n})).item() * static_cast<double>(n - 1);
      counted += n - 1;
      start += n;
    }
  const double packed = model.loss(p.ids, from_vector<std::int64_t>(targets, Shape{2, 17}), p.padding, -100, p.packing).item();
  CHECK(packed == Approx(separate / static_cast<double>(counted)).epsilon(1e-5));
}

TEST_CASE("packing: errors name the stack and the shapes") {
  auto c = tiny();
  Generator gen(11);
  nn::Decoder<> decoder(c, gen);
  const auto ids = zeros<std::int64_t>(Shape{2, 5});
  try {
    (void)decoder.forward(ids, {}, {}, {}, nn::Packing<>{zeros<std::int64_t>(Shape{2, 4}), {}});
    FAIL("no exception");
  } catch (const ShapeError& e) {
    CHECK(std::string(e.what()) == "[Decoder] packing segments [2, 4] must have the ids' shape [2, 5]");
  }
  nn::Encoder<> encoder(c, gen);
  CHECK_THROWS_AS(encoder.forward(ids, {}, nn::Packing<>{{}, zeros<std::int64_t>(Shape{5, 2})}), ShapeError);
  nn::Decoder<> cross(c, gen, /*cross_attention=*/true);
  try {
    (void)cross.forward(ids, {}, zeros<float>(Shape{2, 3, c.d_model}), {}, nn::Packing<>{zeros<std::int64_t>(Shape{2, 5}), {}});
    FAIL("no exception");
  } catch (const ValueError& e) {
    CHECK(std::string(e.what()).find("[Decoder] packing is not supported with cross-attention") != std::string::npos);
  }
}
