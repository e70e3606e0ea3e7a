// Pre-norm Transformer blocks: EncoderBlock and DecoderBlock.
//
// Legend: B = batch, T = time, S = source (encoder) time, C = d_model.
//   EncoderBlock:  x = x + drop(attn(attn_norm(x)))             bidirectional self-attention
//                  x = x + drop(mlp(mlp_norm(x)))
//   DecoderBlock:  x = x + drop(attn(attn_norm(x)))             causal self-attention
//                  x = x + drop(cross_attn(cross_attn_norm(x), memory))   only with cross-attention
//                  x = x + drop(mlp(mlp_norm(x)))
//   forward(x [B, T, C], ...) -> [B, T, C]
// packing (nn/packing.hpp, last argument, optional): self-attention stays inside each packed
// example and RoPE uses the per-token positions. Cross-attention does not support packing.
// Parameter names (relative to the block): attn_norm.{weight,bias}, attn.{q,k,v,o}_proj.{weight,bias},
// [cross_attn_norm.*, cross_attn.*,] mlp_norm.*, mlp.{gate_proj,up_proj,down_proj}.*
// (no .bias entries for RMSNorm or when config.bias is false; gate_proj only for SwiGLU).
// Each residual update is one fused pass (x + dropout(y)); in eval mode dropout returns y itself.
#pragma once

#include <cstdint>
#include <optional>

#include "cerberus/nn/attention.hpp"
#include "cerberus/nn/config.hpp"
#include "cerberus/nn/dropout.hpp"
#include "cerberus/nn/kv_cache.hpp"
#include "cerberus/nn/mlp.hpp"
#include "cerberus/nn/module.hpp"
#include "cerberus/nn/norm.hpp"

namespace cerberus::nn {

template <Element T = float, Device D = cpu>
class EncoderBlock : public Module<EncoderBlock<T, D>, T, D> {
 public:
  using Mask = Tensor<std::uint8_t, D>;
  using Rotary = RotaryTable<compute_t<T>, D>;

  Norm<T, D> attn_norm;
  MultiHeadAttention<T, D> attn;
  Norm<T, D> mlp_norm;
  MLP<T, D> mlp;
  Dropout<T, D> dropout;  // residual dropout (no parameters)

  EncoderBlock() = default;
  EncoderBlock(const TransformerConfig& c, Index n_layers, Generator& gen)
      : attn_norm(c.norm, c.d_model, c.norm_eps, c.bias),
        attn(c, n_layers, gen),
        mlp_norm(c.norm, c.d_model, c.norm_eps, c.bias),
        mlp(c, n_layers, gen),
        dropout(c.dropout, gen) {}

  // x [B, T, C]; key_padding [B, T] (nonzero = padded) or {}; packing or {}.
  Tensor<T, D> forward(const Tensor<T, D>& x, const Mask& key_padding = {}, const Rotary* rotary = nullptr, const Packing<D>& packing = {}) {
    const Tensor<T, D> h = x + dropout(attn.self_attention(attn_norm(x), false, key_padding, rotary, packing));
    return h + dropout(mlp(mlp_norm(h)));
  }

  template <class F>
  void visit_children(F&& f) {
    f("attn_norm", attn_norm);
    f("attn", attn);
    f("mlp_norm", mlp_norm);
    f("mlp", mlp);
    f("dropout", dropout);
  }
};

template <Element T = float, Device D = cpu>
class DecoderBlock : public Module<DecoderBlock<T, D>, T, D> {
 public:
  using Mask = Tensor<std::uint8_t, D>;
  using Rotary = RotaryTable<compute_t<T>, D>;

  Norm<T, D> attn_norm;
  MultiHeadAttention<T, D> attn;
  std::optional<Norm<T, D>> cross_attn_norm;            // with cross-attention only
  std::optional<MultiHeadAttention<T, D>> cross_attn;  // with cross-attention only
  Norm<T, D> mlp_norm;
  MLP<T, D> mlp;
  Dropout<T, D> dropout;

  DecoderBlock() = default;
  DecoderBlock(const TransformerConfig& c, Index n_layers, bool cross_attention, Generator& gen)
      : attn_norm(c.norm, c.d_model, c.norm_eps, c.bias), attn(c, n_layers, gen) {
    if (cross_attention) {
      cross_attn_norm.emplace(c.norm, c.d_model, c.norm_eps, c.bias);
      cross_attn.emplace(c, n_layers, gen);
    }
    mlp_norm = Norm<T, D>(c.norm, c.d_model, c.norm_eps, c.bias);
    mlp = MLP<T, D>(c, n_layers, gen);
    dropout = Dropout<T, D>(c.dropout, gen);
  }

  bool has_cross_attention() const { return cross_attn.has_value(); }

  // Whole sequence: x [B, T, C]; key_padding [B, T] or {}; memory [B, S, C] and
  // memory_padding [B, S] for cross-attention; packing or {} (without cross-attention only: the
  // memory of a packed row would be shared by all its examples).
  Tensor<T, D> forward(const Tensor<T, D>& x, const Mask& key_padding = {}, const Rotary* rotary = nullptr,
                       const Tensor<T, D>& memory = {}, const Mask& memory_padding = {}, const Packing<D>& packing = {}) {
    if (cross_attn && packing.defined())
      throw ValueError("[DecoderBlock] packing is not supported with cross-attention (every packed example would attend the same memory)");
    Tensor<T, D> h = x + dropout(attn.self_attention(attn_norm(x), true, key_padding, rotary, packing));
    if (cross_attn) {
      require_memory(memory);
      h = h + dropout(cross_attn->cross_attention((*cross_attn_norm)(h), memory, memory_padding));
    }
    return h + dropout(mlp(mlp_norm(h)));
  }

  // New tokens x_new [B, T_new, C] at positions past ..; keys / values go to the cache layer.
  // key_padding covers all past + T_new keys, or is {}.
  Tensor<T, D> forward_step(const Tensor<T, D>& x_new, typename KVCache<T, D>::Layer& cache, Index past, const Mask& key_padding = {},
                            const Rotary* rotary = nullptr, const Tensor<T, D>& memory = {}, const Mask& memory_padding = {}) {
    Tensor<T, D> h = x_new + dropout(attn.self_attention_step(attn_norm(x_new), cache, past, key_padding, rotary));
    if (cross_attn) {
      if (!cache.cross_k.defined()) require_memory(memory);
      h = h + dropout(cross_attn->cross_attention_step((*cross_attn_norm)(h), cache, memory, memory_padding));
    }
    return h + dropout(mlp(mlp_norm(h)));
  }

  template <class F>
  void visit_children(F&& f) {
    f("attn_norm", attn_norm);
    f("attn", attn);
    if (cross_attn) {
      f("cross_attn_norm", *cross_attn_norm);
      f("cross_attn", *cross_attn);
    }
    f("mlp_norm", mlp_norm);
    f("mlp", mlp);
    f("dropout", dropout);
  }

 private:
  static void require_memory(const Tensor<T, D>& memory) {
    if (!memory.defined())
      throw ValueError("[DecoderBlock] this block has cross-attention and needs the encoder output (memory [B, S, C])");
  }
};

}  // namespace cerberus::nn
