// nn::MultiHeadAttention: self- and cross-attention with grouped-query heads, masks, RoPE and a
// KV cache, over the fused flash-style kernel of ops/attention.hpp.
//
// Legend: B = batch, T = query time, S = key time (source, or cache length), C = d_model,
// H = query heads, Hkv = key/value heads (divides H; G = H / Hkv queries share one key head),
// D = head dim = C / H.
//   parameters: q_proj [H*D, C], k_proj [Hkv*D, C], v_proj [Hkv*D, C], o_proj [C, H*D]
//               (+ biases [.] when config.bias)
//   self_attention(x [B, T, C], causal, key_padding uint8 [B, T] or {}, rotary or null,
//                  packing {segments, positions} or {}) -> [B, T, C]
//   cross_attention(x [B, T, C], memory [B, S, C], memory_padding uint8 [B, S] or {}) -> [B, T, C]
//   *_step(...): the same for new tokens only, with keys / values kept in a KVCache layer
// key_padding follows ops/attention.hpp: nonzero = a padded key that no query attends to.
// packing (nn/packing.hpp): queries attend only keys of their own segment; RoPE rotates by the
// per-token positions when they are given.
//
// Data flow (no copy unless marked): each projection is one GEMM over [B*T, C]; its output
// [B, T, H*D] is viewed as [B, T, H, D] and, for RoPE, rotated into a fresh [B, T, H, D] (the
// op's one pass). Attention reads q, k, v through [B, H, T, D] permuted views (its kernel takes
// any strides with a contiguous last axis) and, on the CPU, writes its output in q's memory
// layout, [B, T, H, D], returned as a [B, H, T, D] view: permuting it back and reshaping to
// [B, T, H*D] for o_proj is a view, not a copy; in backward dq, dk and dv come back in the
// same [B, T, H, D] layout (ops/attention.hpp). With grouped-query heads the query
// heads of each group slot g (heads j*G + g, the Hugging Face repeat_kv order) are attended in
// one call against the shared Hkv key heads, so keys and values are never repeated in memory;
// the G outputs are stacked straight into the [B, T, Hkv, G, D] = [B, T, H*D] layout (one
// copy). Attention-probability dropout is not applied (the fused kernel never forms the
// probabilities); residual dropout happens in the blocks.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "cerberus/autograd/grad_mode.hpp"
#include "cerberus/nn/config.hpp"
#include "cerberus/nn/kv_cache.hpp"
#include "cerberus/nn/linear.hpp"
#include "cerberus/nn/module.hpp"
#include "cerberus/nn/packing.hpp"
#include "cerberus/ops/attention.hpp"
#include "cerberus/ops/indexing.hpp"
#include "cerberus/ops/rope.hpp"

namespace cerberus::nn {

template <Element T = float, Device D = cpu>
class MultiHeadAttention : public Module<MultiHeadAttention<T, D>, T, D> {
 public:
  using Mask = Tensor<std::uint8_t, D>;
  using Rotary = RotaryTable<compute_t<T>, D>;

  Linear<T, D> q_proj, k_proj, v_proj, o_proj;

  MultiHeadAttention() = default;
  // n_layers sets the residual scaling of o_proj's initialisation (0.02 / sqrt(2 n_layers)).
  MultiHeadAttention(const TransformerConfig& c, Index n_layers, Generator& gen)
      : heads_(c.n_heads), kv_heads_(c.kv_heads()), head_dim_(c.head_dim()) {
    const Index inner = heads_ * head_dim_, kv_inner = kv_heads_ * head_dim_;
    q_proj = Linear<T, D>(c.d_model, inner, c.bias, gen);
    k_proj = Linear<T, D>(c.d_model, kv_inner, c.bias, gen);
    v_proj = Linear<T, D>(c.d_model, kv_inner, c.bias, gen);
    o_proj = Linear<T, D>(inner, c.d_model, c.bias, gen, 0.02 / std::sqrt(2.0 * static_cast<double>(n_layers)));
  }

  Index heads() const { return heads_; }
  Index kv_heads() const { return kv_heads_; }
  Index head_dim() const { return head_dim_; }

  // Self-attention over the whole sequence x [B, T, C] (training, or a full recompute).
  Tensor<T, D> self_attention(const Tensor<T, D>& x, bool causal, const Mask& key_padding = {}, const Rotary* rotary = nullptr,
                              const Packing<D>& packing = {}) const {
    // q, k and v come from ONE product with the three weights stacked ([B*T, C] x [C, H*D + 2*Hkv*D]):
    // x is packed once instead of three times, and backward computes dx as one product and the
    // three weight gradients as one product (their rows are slices of it). Stacking copies the
    // weights (3 C^2 values, a few hundred microseconds at most), not the activations.
    const auto parts = split(project_qkv(x), std::vector<Index>{heads_ * head_dim_, kv_heads_ * head_dim_, kv_heads_ * head_dim_}, -1);
    Tensor<T, D> q = split_heads(parts[0], heads_), k = split_heads(parts[1], kv_heads_), v = split_heads(parts[2], kv_heads_);
    if (rotary && packing.positions.defined()) {  // positions restart in every packed example
      q = rotary_embedding(q, *rotary, packing.positions);
      k = rotary_embedding(k, *rotary, packing.positions);
    } else if (rotary) {
      q = rotary_embedding(q, *rotary, 0);
      k = rotary_embedding(k, *rotary, 0);
    }
    BasicAttentionOptions<D> options;  // masks stay on the model's device
    options.causal = causal;
    options.key_padding = key_padding;
    options.segments = packing.segments;
    return o_proj(attend(q, k.permute({0, 2, 1, 3}), v.permute({0, 2, 1, 3}), options));
  }

  // Self-attention of new tokens x_new [B, T_new, C] at positions past .. past + T_new - 1:
  // their keys and values are written into the cache layer, and each new query attends (causally)
  // every cached key. key_padding covers all past + T_new keys ([B, past + T_new]) or is {}.
  // Not differentiable (decoding): call it under a NoGradGuard (the stacks do).
  Tensor<T, D> self_attention_step(const Tensor<T, D>& x_new, typename KVCache<T, D>::Layer& cache, Index past,
                                   const Mask& key_padding = {}, const Rotary* rotary = nullptr) const {
    const Index t_new = x_new.size(1);
    Tensor<T, D> q = split_heads(q_proj(x_new), heads_), k = split_heads(k_proj(x_new), kv_heads_), v = split_heads(v_proj(x_new), kv_heads_);
    if (rotary) {  // absolute positions past .. past + T_new - 1
      q = rotary_embedding(q, *rotary, past);
      k = rotary_embedding(k, *rotary, past);
    }
    check_cache(cache.k, x_new, past + t_new);
    KVCache<T, D>::copy_into(cache.k.slice(2, past, past + t_new), k.permute({0, 2, 1, 3}));
    KVCache<T, D>::copy_into(cache.v.slice(2, past, past + t_new), v.permute({0, 2, 1, 3}));
    BasicAttentionOptions<D> options;  // masks stay on the model's device
    options.causal = true;  // the T_new queries are the last T_new of the past + T_new keys
    options.key_padding = key_padding;
    return o_proj(attend(q, cache.k.slice(2, 0, past + t_new), cache.v.slice(2, 0, past + t_new), options));
  }

  // Cross-attention: queries from x [B, T, C], keys and values from memory [B, S, C]
  // (the encoder output), never causal; memory_padding [B, S] or {}.
  Tensor<T, D> cross_attention(const Tensor<T, D>& x, const Tensor<T, D>& memory, const Mask& memory_padding = {}) const {
    if (memory.rank() != 3 || memory.size(0) != x.size(0) || memory.size(2) != x.size(2))
      throw ShapeError("[MultiHeadAttention] cross-attention memory must be [B, S, C] matching x [B, T, C]: x " + x.shape().to_string() +
                       ", memory " + memory.shape().to_string());
    const Tensor<T, D> q = split_heads(q_proj(x), heads_);
    const Tensor<T, D> k = split_heads(k_proj(memory), kv_heads_).permute({0, 2, 1, 3});
    const Tensor<T, D> v = split_heads(v_proj(memory), kv_heads_).permute({0, 2, 1, 3});
    BasicAttentionOptions<D> options;  // masks stay on the model's device
    options.key_padding = memory_padding;
    return o_proj(attend(q, k, v, options));
  }

  // Cross-attention of new tokens; the memory's keys and values are projected at the first
  // step into the cache layer and reused by every later step.
  Tensor<T, D> cross_attention_step(const Tensor<T, D>& x_new, typename KVCache<T, D>::Layer& cache, const Tensor<T, D>& memory,
                                    const Mask& memory_padding = {}) const {
    if (!cache.cross_k.defined()) {
      if (!memory.defined() || memory.rank() != 3 || memory.size(0) != x_new.size(0) || memory.size(2) != x_new.size(2))
        throw ShapeError("[MultiHeadAttention] cross-attention memory must be [B, S, C] matching x [B, T, C]: x " +
                         x_new.shape().to_string() + ", memory " + memory.shape().to_string());
      cache.cross_k = split_heads(k_proj(memory), kv_heads_).permute({0, 2, 1, 3});
      cache.cross_v = split_heads(v_proj(memory), kv_heads_).permute({0, 2, 1, 3});
    }
    BasicAttentionOptions<D> options;  // masks stay on the model's device
    options.key_padding = memory_padding;
    return o_proj(attend(split_heads(q_proj(x_new), heads_), cache.cross_k, cache.cross_v, options));
  }

  template <class F>
  void visit_children(F&& f) {
    f("q_proj", q_proj);
    f("k_proj", k_proj);
    f("v_proj", v_proj);
    f("o_proj", o_proj);
  }

 private:
  // [B, T, heads * D] -> [B, T, heads, D] (a view).
  // x [B, T, C] -> [B, T, H*D + 2*Hkv*D]: q, k, v side by side from one product.
  Tensor<T, D> project_qkv(const Tensor<T, D>& x) const {
    const Tensor<T, D> w = concat({q_proj.weight, k_proj.weight, v_proj.weight}, 0);
    const bool biased = q_proj.bias.defined() && k_proj.bias.defined() && v_proj.bias.defined();
    if (!biased && (q_proj.bias.defined() || k_proj.bias.defined() || v_proj.bias.defined()))
      return concat({q_proj(x), k_proj(x), v_proj(x)}, -1);  // mixed biases (never built by the config): plain path
    return linear(x, w, biased ? concat({q_proj.bias, k_proj.bias, v_proj.bias}, 0) : Tensor<T, D>{});
  }

  Tensor<T, D> split_heads(const Tensor<T, D>& x, Index heads) const { return x.view({x.size(0), x.size(1), heads, head_dim_}); }

  void check_cache(const Tensor<T, D>& k, const Tensor<T, D>& x_new, Index needed) const {
    if (!k.defined() || k.rank() != 4 || k.size(0) != x_new.size(0) || k.size(1) != kv_heads_ || k.size(3) != head_dim_ ||
        k.size(2) < needed)
      throw ShapeError("[MultiHeadAttention] cache layer " + k.shape().to_string() + " cannot hold " + std::to_string(needed) +
                       " positions of " + std::to_string(kv_heads_) + " heads of size " + std::to_string(head_dim_) + " for x " +
                       x_new.shape().to_string());
  }

  // q [B, T, H, D] (any strides, last axis contiguous), k / v [B, Hkv, S, D] -> [B, T, H*D].
  Tensor<T, D> attend(const Tensor<T, D>& q, const Tensor<T, D>& k, const Tensor<T, D>& v, const BasicAttentionOptions<D>& options) const {
    const Index b = q.size(0), t = q.size(1), groups = heads_ / kv_heads_;
    if (groups == 1) {
      // [B, H, T, D], in [B, T, H, D] memory on the CPU: the reshape below is then a view.
      const Tensor<T, D> out = scaled_dot_product_attention(q.permute({0, 2, 1, 3}), k, v, options);
      return out.permute({0, 2, 1, 3}).reshape({b, t, heads_ * head_dim_});
    }
    const auto slots = split(q.reshape({b, t, kv_heads_, groups, head_dim_}), Index{1}, 3);  // G x [B, T, Hkv, 1, D]
    std::vector<Tensor<T, D>> outs;
    outs.reserve(static_cast<std::size_t>(groups));
    for (const auto& slot : slots)
      outs.push_back(scaled_dot_product_attention(slot.squeeze(3).permute({0, 2, 1, 3}), k, v, options).permute({0, 2, 1, 3}));
    return stack(outs, 3).view({b, t, heads_ * head_dim_});  // [B, T, Hkv, G, D]
  }

  Index heads_ = 0, kv_heads_ = 0, head_dim_ = 0;
};

}  // namespace cerberus::nn
