#if !defined(CERBERUS_DETAIL_INCLUDE_ALLOWED)
#error "cerberus/mtl/detail/trunk.hpp is internal; include <cerberus/mtl/model.hpp> instead"
#endif
// Helpers the sharing strategies use on a trunk: what a trunk is (concepts), running a stack's
// embedding and a range of its blocks, and deep copies of modules (fresh storage, same values).
// Packed batches (Batch::segments / positions) reach the trunk through trunk_forward, embed and
// run_blocks, which take an nn::Packing (undefined fields = not packed).
//
// Legend: B = batch, T = time, C = d_model.
//
// Device: a trunk's device is its `device_type` (nn modules: their D; cpu for a trunk type that
// names none), and ids, padding and packing are tensors on it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "cerberus/core/device.hpp"
#include "cerberus/mtl/heads.hpp"
#include "cerberus/nn/config.hpp"
#include "cerberus/nn/embedding.hpp"
#include "cerberus/nn/packing.hpp"

namespace cerberus::mtl {

// The device a trunk runs on: S::device_type, or cpu when S names none.
template <class S>
using trunk_device_t = device_of_t<S>;

// A trunk: a module mapping ids [B, T] and key padding [B, T] to hidden states [B, T, C] after
// its final norm, with a TransformerConfig (nn::Encoder, nn::Decoder, or a type of your own).
template <class S>
concept Trunk = requires(S& s, const Tensor<std::int64_t, trunk_device_t<S>>& ids, const Tensor<std::uint8_t, trunk_device_t<S>>& padding) {
  typename S::element_type;
  { s.forward(ids, padding) } -> std::same_as<Tensor<typename S::element_type, trunk_device_t<S>>>;
  { s.config() } -> std::convertible_to<const nn::TransformerConfig&>;
  s.named_parameters();
};

// A trunk made of a run-time stack of blocks with the layout of nn::Encoder / nn::Decoder, which
// strategies that split or copy blocks (Hierarchical) need.
template <class S>
concept BlockTrunk = Trunk<S> && requires(S& s, const Tensor<std::int64_t, trunk_device_t<S>>& ids) {
  s.layers.size();
  s.layers[0];
  s.final_norm;
  s.embed_positions.rotary();
  s.dropout(s.embed_positions.add((*s.embed_tokens)(ids), 0));
};

// The width a trunk promises at compile time (`static constexpr Index hidden_width`), 0 if none.
template <class S>
constexpr Index trunk_hidden_width() {
  if constexpr (requires { S::hidden_width; }) return static_cast<Index>(S::hidden_width);
  else return 0;
}

namespace detail {

// The token embedding of a trunk (for tied LM heads), or null.
template <class S>
std::shared_ptr<nn::Embedding<typename S::element_type, trunk_device_t<S>>> trunk_embedding(S& s) {
  if constexpr (requires { s.embed_tokens; }) return s.embed_tokens;
  else return nullptr;
}

template <class S>
HeadContext<typename S::element_type, trunk_device_t<S>> trunk_context(S& s) {
  return {s.config().d_model, s.config().vocab_size, trunk_embedding(s)};
}

// The packing of a batch (all rows), or of its rows `rows`.
template <class T, Device D>
nn::Packing<D> packing_of(const Batch<T, D>& batch) {
  return {batch.segments, batch.positions};
}
template <Device D>
nn::Packing<D> select_packing(const nn::Packing<D>& packing, const Tensor<std::int64_t, D>& rows) {
  auto take = [&](const Tensor<std::int64_t, D>& t) { return t.defined() ? index_select(t, 0, rows) : Tensor<std::int64_t, D>{}; };
  return {take(packing.segments), take(packing.positions)};
}

// trunk.forward(ids, padding), with the packing when there is one: nn::Encoder takes it third,
// nn::Decoder fifth (after memory and memory padding); a trunk of another type that takes none
// refuses a packed batch.
template <Trunk S, Device D = trunk_device_t<S>>
Tensor<typename S::element_type, D> trunk_forward(S& s, const Tensor<std::int64_t, D>& ids, const Tensor<std::uint8_t, D>& padding,
                                                  const nn::Packing<D>& packing) {
  using T = typename S::element_type;
  if (!packing.defined()) return s.forward(ids, padding);
  if constexpr (requires { s.forward(ids, padding, packing); }) return s.forward(ids, padding, packing);
  else if constexpr (requires { s.forward(ids, padding, Tensor<T, D>{}, Tensor<std::uint8_t, D>{}, packing); })
    return s.forward(ids, padding, Tensor<T, D>{}, Tensor<std::uint8_t, D>{}, packing);
  else
    throw ValueError("[mtl] the trunk's forward takes no nn::Packing, so it cannot run a packed batch (segments / positions " +
                     (packing.segments.defined() ? packing.segments.shape() : packing.positions.shape()).to_string() + ")");
}

// Embedding lookup + positions + embedding dropout, as the stack's own forward does (positions
// per token when packed).
template <BlockTrunk S, Device D = trunk_device_t<S>>
Tensor<typename S::element_type, D> embed(S& s, const Tensor<std::int64_t, D>& ids, const nn::Packing<D>& packing = {}) {
  if (packing.positions.defined()) return s.dropout(s.embed_positions.add((*s.embed_tokens)(ids), packing.positions));
  return s.dropout(s.embed_positions.add((*s.embed_tokens)(ids), 0));
}

// Blocks [begin, end) of `layers` on x [B, T, C]; packing as the blocks take it (an encoder block
// fourth, a decoder block sixth, after memory and memory padding).
template <class Layers, class Positions, class T, Device D>
Tensor<T, D> run_blocks(Layers& layers, std::size_t begin, std::size_t end, Tensor<T, D> x, const Tensor<std::uint8_t, D>& padding,
                        const Positions& positions, const nn::Packing<D>& packing = {}) {
  for (std::size_t i = begin; i < end; ++i) {
    if (!packing.defined()) x = layers[i].forward(x, padding, positions.rotary());
    else if constexpr (requires { layers[i].forward(x, padding, positions.rotary(), packing); })
      x = layers[i].forward(x, padding, positions.rotary(), packing);
    else
      x = layers[i].forward(x, padding, positions.rotary(), Tensor<T, D>{}, Tensor<std::uint8_t, D>{}, packing);
  }
  return x;
}

// A copy of module m whose parameters have storage of their own (the same values, trainable as
// before). A trunk's token embedding (held by shared_ptr) is copied too when the trunk owns it.
template <class M>
M deep_copy(const M& m) {
  M out = m;
  if constexpr (requires { out.embed_tokens; })
    if (out.embed_tokens) out.embed_tokens = std::make_shared<typename decltype(out.embed_tokens)::element_type>(*m.embed_tokens);
  out.visit_parameters("", [](const std::string&, auto& p) {
    const bool trainable = p.requires_grad();
    p = p.detach().clone();
    p.set_requires_grad(trainable);
  });
  return out;
}

}  // namespace detail
}  // namespace cerberus::mtl
