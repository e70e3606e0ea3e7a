// Whole models with a language-model head: DecoderOnly (GPT-like) and EncoderDecoder (T5-like).
//
// Legend: B = batch, T = (target) time, S = source time, C = d_model, V = vocab.
// The trunk contract: hidden(...) / decode(...) return hidden states [B, T, C] after the final
// norm; logits(hidden) -> [B, T, V] is a separate call so that other heads can share the trunk;
// forward(...) = logits(hidden(...)); loss(...) = cross_entropy(logits, targets) with
// ignore_index (mean over counted tokens), computed by linear_cross_entropy from the hidden
// states: on the CPU the [B, T, V] logits are never held whole (ops/linear_cross_entropy.hpp). Ids are int64, padding masks uint8 with nonzero =
// padded (ops/attention.hpp's convention).
//
// Parameter names, DecoderOnly (i = 0 .. n_layers-1; bias entries only with config.bias and
// LayerNorm; gate_proj only for SwiGLU; embed_positions only for learned positions):
//   decoder.embed_tokens.weight [V, C]          decoder.embed_positions.weight [P, C]
//   decoder.layers.{i}.attn_norm.{weight,bias}  decoder.layers.{i}.attn.{q,k,v,o}_proj.{weight,bias}
//   decoder.layers.{i}.mlp_norm.{weight,bias}   decoder.layers.{i}.mlp.{gate,up,down}_proj.{weight,bias}
//   decoder.final_norm.{weight,bias}            lm_head.weight [V, C] (absent when tie_embeddings)
// EncoderDecoder:
//   shared.weight [V, C] (the token embedding of both stacks)
//   encoder.embed_positions.weight, encoder.layers.{i}.{attn_norm,attn,mlp_norm,mlp}.*, encoder.final_norm.*
//   decoder.embed_positions.weight, decoder.layers.{i}.{attn_norm,attn,cross_attn_norm,cross_attn,mlp_norm,mlp}.*,
//   decoder.final_norm.*, lm_head.weight (absent when tie_embeddings)
// Initialisation from a Generator: normal(0, 0.02) for Linear and Embedding weights, zeros for
// biases, ones for norm weights; o_proj and down_proj use 0.02 / sqrt(2 * layers of their stack).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "cerberus/nn/config.hpp"
#include "cerberus/nn/embedding.hpp"
#include "cerberus/nn/kv_cache.hpp"
#include "cerberus/nn/linear.hpp"
#include "cerberus/nn/module.hpp"
#include "cerberus/nn/stacks.hpp"
#include "cerberus/ops/linear.hpp"
#include "cerberus/ops/linear_cross_entropy.hpp"
#include "cerberus/ops/loss.hpp"

namespace cerberus::nn {

template <Element T = float, Device D = cpu>
class DecoderOnly : public Module<DecoderOnly<T, D>, T, D> {
 public:
  using Ids = Tensor<std::int64_t, D>;
  using Mask = Tensor<std::uint8_t, D>;
  using Cache = KVCache<T, D>;

  Decoder<T, D> decoder;
  std::optional<Linear<T, D>> lm_head;  // [V, C], no bias; absent when tied to decoder.embed_tokens

  DecoderOnly() = default;
  DecoderOnly(const TransformerConfig& c, Generator& gen) : decoder(c, gen, false) {
    if (!c.tie_embeddings) lm_head.emplace(c.d_model, c.vocab_size, false, gen);
  }

  const TransformerConfig& config() const { return decoder.config(); }
  // The [V, C] matrix the LM head multiplies by: lm_head.weight, or the token embedding when tied.
  const Tensor<T, D>& lm_head_weight() const { return lm_head ? lm_head->weight : decoder.embed_tokens->weight; }

  // The trunk: hidden states [B, T, C] after the final norm.
  // packing (nn/packing.hpp): several examples per row, attention kept inside each.
  Tensor<T, D> hidden(const Ids& ids, const Mask& key_padding = {}, const Packing<D>& packing = {}) {
    return decoder.forward(ids, key_padding, {}, {}, packing);
  }
  // hidden [B, T, C] -> logits [B, T, V] (one GEMM over [B*T, C]).
  Tensor<T, D> logits(const Tensor<T, D>& hidden_states) const { return linear(hidden_states, lm_head_weight()); }
  Tensor<T, D> forward(const Ids& ids, const Mask& key_padding = {}, const Packing<D>& packing = {}) {
    return logits(hidden(ids, key_padding, packing));
  }
  Tensor<T, D> operator()(const Ids& ids, const Mask& key_padding = {}, const Packing<D>& packing = {}) {
    return forward(ids, key_padding, packing);
  }

  // Mean next-token cross-entropy: targets [B, T] (ignore_index where no loss is wanted). In the
  // compute type: float for a bf16 model.
  Tensor<compute_t<T>, D> loss(const Ids& ids, const Ids& targets, const Mask& key_padding = {}, std::int64_t ignore_index = -100,
                    const Packing<D>& packing = {}) {
    CrossEntropyOptions options;
    options.ignore_index = ignore_index;
    return linear_cross_entropy(hidden(ids, key_padding, packing), lm_head_weight(), targets, options);
  }

  Cache make_cache(Index batch, Index capacity = 0) const { return decoder.make_cache(batch, capacity); }
  // Logits [B, T_new, V] of new tokens ids_new [B, T_new], appended to the cache.
  Tensor<T, D> forward_step(const Ids& ids_new, Cache& cache, const Mask& key_padding_new = {}) {
    const Tensor<T, D> h = decoder.forward_step(ids_new, cache, key_padding_new);
    NoGradGuard decoding_is_not_recorded;
    return logits(h);
  }

  template <class F>
  void visit_children(F&& f) {
    f("decoder", decoder);
    if (lm_head) f("lm_head", *lm_head);
  }
};

template <Element T = float, Device D = cpu>
class EncoderDecoder : public Module<EncoderDecoder<T, D>, T, D> {
 public:
  using Ids = Tensor<std::int64_t, D>;
  using Mask = Tensor<std::uint8_t, D>;
  using Cache = KVCache<T, D>;

  std::shared_ptr<Embedding<T, D>> shared;  // token embedding of both stacks
  Encoder<T, D> encoder;                     // config.encoder_layers() blocks
  Decoder<T, D> decoder;                     // config.n_layers blocks with cross-attention
  std::optional<Linear<T, D>> lm_head;       // [V, C], absent when tied to shared

  EncoderDecoder() = default;
  EncoderDecoder(const TransformerConfig& c, Generator& gen) {
    c.validate();
    shared = std::make_shared<Embedding<T, D>>(c.vocab_size, c.d_model, gen);
    encoder = Encoder<T, D>(c, gen, c.encoder_layers(), shared);
    decoder = Decoder<T, D>(c, gen, c.n_layers, true, shared);
    if (!c.tie_embeddings) lm_head.emplace(c.d_model, c.vocab_size, false, gen);
  }

  const TransformerConfig& config() const { return decoder.config(); }
  const Tensor<T, D>& lm_head_weight() const { return lm_head ? lm_head->weight : shared->weight; }

  // The encoder's hidden states ("memory") [B, S, C].
  Tensor<T, D> encode(const Ids& src, const Mask& src_padding = {}) { return encoder.forward(src, src_padding); }
  // The decoder's hidden states [B, T, C] for target ids attending to memory [B, S, C].
  Tensor<T, D> decode(const Ids& tgt, const Tensor<T, D>& memory, const Mask& src_padding = {}, const Mask& tgt_padding = {}) {
    return decoder.forward(tgt, tgt_padding, memory, src_padding);
  }
  Tensor<T, D> logits(const Tensor<T, D>& hidden_states) const { return linear(hidden_states, lm_head_weight()); }
  Tensor<T, D> forward(const Ids& src, const Ids& tgt, const Mask& src_padding = {}, const Mask& tgt_padding = {}) {
    return logits(decode(tgt, encode(src, src_padding), src_padding, tgt_padding));
  }
  // Mean cross-entropy of predicting tgt_out [B, T] from src and tgt_in (teacher forcing), in
  // the compute type.
  Tensor<compute_t<T>, D> loss(const Ids& src, const Ids& tgt_in, const Ids& tgt_out, const Mask& src_padding = {}, const Mask& tgt_padding = {},
                    std::int64_t ignore_index = -100) {
    CrossEntropyOptions options;
    options.ignore_index = ignore_index;
    return linear_cross_entropy(decode(tgt_in, encode(src, src_padding), src_padding, tgt_padding), lm_head_weight(), tgt_out, options);
  }

  Cache make_cache(Index batch, Index capacity = 0) const { return decoder.make_cache(batch, capacity); }
  // Logits [B, T_new, V] of new target tokens; memory / src_padding as given to decode().
  Tensor<T, D> forward_step(const Ids& tgt_new, Cache& cache, const Tensor<T, D>& memory, const Mask& src_padding = {}) {
    const Tensor<T, D> h = decoder.forward_step(tgt_new, cache, {}, memory, src_padding);
    NoGradGuard decoding_is_not_recorded;
    return logits(h);
  }

  template <class F>
  void visit_children(F&& f) {
    if (shared) f("shared", *shared);  // null only in a default-constructed model
    f("encoder", encoder);
    f("decoder", decoder);
    if (lm_head) f("lm_head", *lm_head);
  }
};

}  // namespace cerberus::nn
