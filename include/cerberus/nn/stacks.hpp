// Transformer trunks: Encoder and Decoder, each a run-time std::vector of one block type.
//
// Legend: B = batch, T = (target) time, S = source time, C = d_model, V = vocab,
// P = max_seq_len, L = layers.
//   Encoder::forward(ids int64 [B, S], key_padding uint8 [B, S] or {})          -> hidden [B, S, C]
//   Decoder::forward(ids [B, T], key_padding [B, T] or {}, memory [B, S, C] or {},
//                    memory_padding [B, S] or {})                                -> hidden [B, T, C]
//   Decoder::forward_step(ids_new [B, T_new], cache, key_padding_new [B, T_new] or {},
//                         memory, memory_padding)                                -> hidden [B, T_new, C]
// packing (nn/packing.hpp, the last argument of forward, optional): segments [B, T] and positions
// [B, T] of several examples packed into one row; each example's hidden states are the ones it
// gets alone. Not with cross-attention; forward_step (decoding) takes none.
// Hidden states are taken after final_norm: heads (an LM head, classifiers) go on top of them.
// key_padding: nonzero = padded (the convention of ops/attention.hpp); padded keys are never
// attended to, so the hidden states of kept positions do not depend on what the padding holds.
//
// Parameter names (relative to the stack; a model prefixes "encoder." / "decoder."):
//   embed_tokens.weight [V, C]              (absent when the embedding is shared: EncoderDecoder)
//   embed_positions.weight [P, C]           (learned positions only)
//   layers.{i}.<block names>                (see blocks.hpp)
//   final_norm.weight [C], final_norm.bias [C] (bias: LayerNorm with bias only)
//
// Flow: embedding lookup, + positions (one fused pass, rows offset by the cache length when
// decoding), embedding dropout, the blocks, final norm. forward_step runs without recording
// (NoGradGuard): decoding is inference.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cerberus/autograd/grad_mode.hpp"
#include "cerberus/nn/blocks.hpp"
#include "cerberus/nn/config.hpp"
#include "cerberus/nn/dropout.hpp"
#include "cerberus/nn/embedding.hpp"
#include "cerberus/nn/kv_cache.hpp"
#include "cerberus/nn/module.hpp"
#include "cerberus/nn/norm.hpp"
#include "cerberus/nn/packing.hpp"
#include "cerberus/nn/positions.hpp"

namespace cerberus::nn {

namespace detail {
inline void check_ids(const char* op, const Shape& ids, const Shape* padding) {
  if (ids.rank() != 2) throw ShapeError(std::string("[") + op + "] ids must be [B, T], got " + ids.to_string());
  if (padding && !(*padding == ids))
    throw ShapeError(std::string("[") + op + "] key padding " + padding->to_string() + " must have the ids' shape " + ids.to_string());
}
template <class Mask>
const Shape* shape_if_defined(const Mask& m) {
  return m.defined() ? &m.shape() : nullptr;
}
// Token embeddings x [B, T, C] plus positions: each token's own position when packed, else 0 .. T-1.
template <Element T, Device D>
Tensor<T, D> add_positions(const PositionalEncoding<T, D>& positions, const Tensor<T, D>& x, const Packing<D>& packing) {
  return packing.positions.defined() ? positions.add(x, packing.positions) : positions.add(x, 0);
}
}  // namespace detail

template <Element T = float, Device D = cpu>
class Encoder : public Module<Encoder<T, D>, T, D> {
 public:
  using Ids = Tensor<std::int64_t, D>;
  using Mask = Tensor<std::uint8_t, D>;

  std::shared_ptr<Embedding<T, D>> embed_tokens;  // listed as a parameter only when owned
  PositionalEncoding<T, D> embed_positions;
  Dropout<T, D> dropout;  // embedding dropout
  std::vector<EncoderBlock<T, D>> layers;
  Norm<T, D> final_norm;

  Encoder() = default;
  // A standalone encoder (BERT-like) with config.n_layers blocks and its own token embedding.
  Encoder(const TransformerConfig& c, Generator& gen) : Encoder(c, gen, c.n_layers, nullptr) {}
  // n_layers blocks; the token embedding is `shared` when given (not listed among this
  // encoder's parameters), else a new one owned here.
  Encoder(const TransformerConfig& c, Generator& gen, Index n_layers, std::shared_ptr<Embedding<T, D>> shared) : config_(c) {
    c.validate();
    owns_embedding_ = !shared;
    embed_tokens = shared ? std::move(shared) : std::make_shared<Embedding<T, D>>(c.vocab_size, c.d_model, gen);
    embed_positions = PositionalEncoding<T, D>(c, gen);
    dropout = Dropout<T, D>(c.dropout, gen);
    layers.reserve(static_cast<std::size_t>(n_layers));
    for (Index i = 0; i < n_layers; ++i) layers.emplace_back(c, n_layers, gen);
    final_norm = Norm<T, D>(c.norm, c.d_model, c.norm_eps, c.bias);
  }

  const TransformerConfig& config() const { return config_; }

  Tensor<T, D> forward(const Ids& ids, const Mask& key_padding = {}, const Packing<D>& packing = {}) {
    detail::check_ids("Encoder", ids.shape(), detail::shape_if_defined(key_padding));
    detail::check_packing("Encoder", ids.shape(), packing);
    Tensor<T, D> x = dropout(detail::add_positions(embed_positions, (*embed_tokens)(ids), packing));
    for (auto& layer : layers) x = layer.forward(x, key_padding, embed_positions.rotary(), packing);
    return final_norm(x);
  }
  Tensor<T, D> operator()(const Ids& ids, const Mask& key_padding = {}, const Packing<D>& packing = {}) {
    return forward(ids, key_padding, packing);
  }

  template <class F>
  void visit_children(F&& f) {
    if (owns_embedding_ && embed_tokens) f("embed_tokens", *embed_tokens);
    f("embed_positions", embed_positions);
    f("dropout", dropout);
    for (std::size_t i = 0; i < layers.size(); ++i) f("layers." + std::to_string(i), layers[i]);
    f("final_norm", final_norm);
  }

 private:
  TransformerConfig config_;
  bool owns_embedding_ = true;
};

template <Element T = float, Device D = cpu>
class Decoder : public Module<Decoder<T, D>, T, D> {
 public:
  using Ids = Tensor<std::int64_t, D>;
  using Mask = Tensor<std::uint8_t, D>;
  using Cache = KVCache<T, D>;

  std::shared_ptr<Embedding<T, D>> embed_tokens;  // listed as a parameter only when owned
  PositionalEncoding<T, D> embed_positions;
  Dropout<T, D> dropout;  // embedding dropout
  std::vector<DecoderBlock<T, D>> layers;
  Norm<T, D> final_norm;

  Decoder() = default;
  // config.n_layers blocks, own token embedding; cross_attention adds an encoder-attending
  // sub-layer to every block.
  Decoder(const TransformerConfig& c, Generator& gen, bool cross_attention = false) : Decoder(c, gen, c.n_layers, cross_attention, nullptr) {}
  Decoder(const TransformerConfig& c, Generator& gen, Index n_layers, bool cross_attention, std::shared_ptr<Embedding<T, D>> shared)
      : config_(c) {
    c.validate();
    owns_embedding_ = !shared;
    embed_tokens = shared ? std::move(shared) : std::make_shared<Embedding<T, D>>(c.vocab_size, c.d_model, gen);
    embed_positions = PositionalEncoding<T, D>(c, gen);
    dropout = Dropout<T, D>(c.dropout, gen);
    layers.reserve(static_cast<std::size_t>(n_layers));
    for (Index i = 0; i < n_layers; ++i) layers.emplace_back(c, n_layers, cross_attention, gen);
    final_norm = Norm<T, D>(c.norm, c.d_model, c.norm_eps, c.bias);
  }

  const TransformerConfig& config() const { return config_; }
  bool has_cross_attention() const { return !layers.empty() && layers.front().has_cross_attention(); }

  // The whole sequence (training, or a full recompute): hidden states [B, T, C]. packing: see the
  // top of this file (a decoder-only stack: no memory).
  Tensor<T, D> forward(const Ids& ids, const Mask& key_padding = {}, const Tensor<T, D>& memory = {}, const Mask& memory_padding = {},
                       const Packing<D>& packing = {}) {
    detail::check_ids("Decoder", ids.shape(), detail::shape_if_defined(key_padding));
    detail::check_packing("Decoder", ids.shape(), packing);
    if (packing.defined() && has_cross_attention())
      throw ValueError("[Decoder] packing is not supported with cross-attention (every packed example would attend the same memory " +
                       (memory.defined() ? memory.shape().to_string() : std::string("[B, S, C]")) + ")");
    Tensor<T, D> x = dropout(detail::add_positions(embed_positions, (*embed_tokens)(ids), packing));
    for (auto& layer : layers) x = layer.forward(x, key_padding, embed_positions.rotary(), memory, memory_padding, packing);
    return final_norm(x);
  }
  Tensor<T, D> operator()(const Ids& ids, const Mask& key_padding = {}, const Tensor<T, D>& memory = {}, const Mask& memory_padding = {},
                          const Packing<D>& packing = {}) {
    return forward(ids, key_padding, memory, memory_padding, packing);
  }

  // A cache for `batch` sequences of up to `capacity` tokens (default: max_seq_len).
  Cache make_cache(Index batch, Index capacity = 0) const {
    if (capacity == 0) capacity = config_.max_seq_len;
    if (capacity > config_.max_seq_len)
      throw ValueError("[Decoder] cache capacity " + std::to_string(capacity) + " exceeds max_seq_len " + std::to_string(config_.max_seq_len));
    return Cache(static_cast<Index>(layers.size()), batch, capacity, config_.kv_heads(), config_.head_dim());
  }

  // Appends ids_new [B, T_new] (positions cache.length() ..) and returns their hidden states
  // [B, T_new, C]; equal to the matching rows of forward() on the whole sequence. For
  // cross-attention, memory is needed at the first step only (its keys / values are cached).
  Tensor<T, D> forward_step(const Ids& ids_new, Cache& cache, const Mask& key_padding_new = {}, const Tensor<T, D>& memory = {},
                            const Mask& memory_padding = {}) {
    NoGradGuard decoding_is_not_recorded;
    detail::check_ids("Decoder", ids_new.shape(), detail::shape_if_defined(key_padding_new));
    if (cache.n_layers() != static_cast<Index>(layers.size()))
      throw ValueError("[Decoder] the cache has " + std::to_string(cache.n_layers()) + " layers, the decoder " + std::to_string(layers.size()));
    const Index t_new = ids_new.size(1), past = cache.length();
    cache.check_append(ids_new.size(0), t_new);
    Tensor<T, D> x = dropout(embed_positions.add((*embed_tokens)(ids_new), past));
    const Mask padding = cache.append_padding(key_padding_new, t_new);
    for (std::size_t i = 0; i < layers.size(); ++i)
      x = layers[i].forward_step(x, cache.layer(static_cast<Index>(i)), past, padding, embed_positions.rotary(), memory, memory_padding);
    cache.advance(t_new);
    return final_norm(x);
  }

  template <class F>
  void visit_children(F&& f) {
    if (owns_embedding_ && embed_tokens) f("embed_tokens", *embed_tokens);
    f("embed_positions", embed_positions);
    f("dropout", dropout);
    for (std::size_t i = 0; i < layers.size(); ++i) f("layers." + std::to_string(i), layers[i]);
    f("final_norm", final_norm);
  }

 private:
  TransformerConfig config_;
  bool owns_embedding_ = true;
};

}  // namespace cerberus::nn
