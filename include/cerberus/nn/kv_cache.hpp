// nn::KVCache: the keys and values of every decoder layer, kept between decoding steps so that
// each new token costs one new attention row instead of a recompute of the whole prefix.
//
// Legend: B = batch, Hkv = key/value heads, P = capacity (max tokens), D = head dim,
// S = source (encoder) length, L = layers.
//   per layer: k, v         [B, Hkv, P, D]  preallocated once; positions 0 .. length()-1 are valid
//              cross_k/v    [B, Hkv, S, D]  cross-attention keys/values, projected from the encoder
//                                           output at the first step and reused afterwards
//   key_padding (optional)  uint8 [B, P]    nonzero = a padded position, appended step by step
//
// Layout: [B, Hkv, P, D] keeps each head's keys contiguous, so the valid prefix
// k[:, :, 0:length] is a strided view that attention reads in place (no copy per step). New keys
// are written into their slots (one strided copy of the new tokens only); buffers are reused
// across steps and after reset(). A step that would pass the capacity throws ValueError before
// anything is written.
// reorder(rows) makes row r a copy of old row rows[r] (beam search keeps the selected beams).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cerberus/core/error.hpp"
#include "cerberus/tensor/factories.hpp"
#include "cerberus/tensor/tensor.hpp"

namespace cerberus::nn {

template <Element T = float, Device D = cpu>
class KVCache {
 public:
  struct Layer {
    Tensor<T, D> k, v;              // [B, Hkv, P, D]
    Tensor<T, D> cross_k, cross_v;  // [B, Hkv, S, D] once computed; undefined before
  };

  KVCache() = default;
  KVCache(Index n_layers, Index batch, Index capacity, Index kv_heads, Index head_dim) : batch_(batch), capacity_(capacity) {
    if (n_layers <= 0 || batch <= 0 || capacity <= 0 || kv_heads <= 0 || head_dim <= 0)
      throw ValueError("[KVCache] layers (" + std::to_string(n_layers) + "), batch (" + std::to_string(batch) + "), capacity (" +
                       std::to_string(capacity) + "), kv heads (" + std::to_string(kv_heads) + ") and head dim (" +
                       std::to_string(head_dim) + ") must all be positive");
    layers_.resize(static_cast<std::size_t>(n_layers));
    for (auto& l : layers_) {
      l.k = Tensor<T, D>::empty(Shape{batch, kv_heads, capacity, head_dim});
      l.v = Tensor<T, D>::empty(Shape{batch, kv_heads, capacity, head_dim});
    }
  }

  Index length() const { return length_; }      // tokens cached so far
  Index capacity() const { return capacity_; }  // P
  Index batch() const { return batch_; }
  Index n_layers() const { return static_cast<Index>(layers_.size()); }
  Layer& layer(Index i) { return layers_.at(static_cast<std::size_t>(i)); }

  // Throws unless `t_new` more tokens of a batch of `batch` fit.
  void check_append(Index batch, Index t_new) const {
    if (layers_.empty()) throw ValueError("[KVCache] the cache was default-constructed; make one with the model's make_cache()");
    if (batch != batch_)
      throw ShapeError("[KVCache] new tokens have batch " + std::to_string(batch) + ", the cache was made for batch " + std::to_string(batch_));
    if (t_new < 1 || length_ + t_new > capacity_)
      throw ValueError("[KVCache] cannot append " + std::to_string(t_new) + " tokens to a cache holding " + std::to_string(length_) +
                       " of its " + std::to_string(capacity_) + " positions");
  }

  // Records the padding of the next t_new tokens (uint8 [B, t_new], nonzero = padded; undefined =
  // none padded) and returns the mask of all length() + t_new keys, or an undefined tensor when
  // no step has ever been padded (attention then skips the mask entirely).
  Tensor<std::uint8_t, D> append_padding(const Tensor<std::uint8_t, D>& padding, Index t_new) {
    if (padding.defined() && !(padding.shape() == Shape{batch_, t_new}))
      throw ShapeError("[KVCache] key padding must be [B, T_new] = [" + std::to_string(batch_) + ", " + std::to_string(t_new) + "], got " +
                       padding.shape().to_string());
    if (!padding.defined() && !padding_.defined()) return {};
    if (!padding_.defined()) padding_ = zeros<std::uint8_t, D>(Shape{batch_, capacity_});  // earlier steps: none padded
    const auto slot = padding_.slice(1, length_, length_ + t_new);
    if (padding.defined()) copy_into(slot, padding);
    else slot.fill(0);
    return padding_.slice(1, 0, length_ + t_new);
  }

  // dst <- src through both layouts (same shape): a plain strided copy, not recorded for autodiff.
  template <Element U>
  static void copy_into(const Tensor<U, D>& dst, const Tensor<U, D>& src) {
    if (!(dst.shape() == src.shape()))
      throw ShapeError("[KVCache] cannot write a tensor of shape " + src.shape().to_string() + " into a slot of shape " + dst.shape().to_string());
    if (dst.numel() > 0) Backend<D>::template convert<U, U>(dst.data(), dst.strides(), src.data(), src.strides(), dst.shape());
  }

  // Marks t_new more tokens as cached (after every layer has written them).
  void advance(Index t_new) { length_ += t_new; }

  // Beam search: row r of the cache becomes old row rows[r] (rows.size() == batch(); a row may be
  // taken several times, others dropped). Only the valid prefix of self-attention keys and values
  // is copied (plus cross-attention keys/values and the padding mask), into fresh buffers, since
  // rows read and written in place would overwrite each other. Row-by-row strided copies keep
  // this device-generic and valid for any element type; an identity permutation costs nothing.
  void reorder(const std::vector<Index>& rows) {
    if (static_cast<Index>(rows.size()) != batch_)
      throw ShapeError("[KVCache::reorder] " + std::to_string(rows.size()) + " rows given for a cache of batch " + std::to_string(batch_));
    bool identity = true;
    for (Index r = 0; r < batch_; ++r) {
      const Index src = rows[static_cast<std::size_t>(r)];
      if (src < 0 || src >= batch_)
        throw IndexError("[KVCache::reorder] row " + std::to_string(src) + " is outside [0, " + std::to_string(batch_) + ")");
      identity = identity && src == r;
    }
    if (identity) return;
    for (auto& l : layers_) {
      l.k = gather_rows(l.k, rows, 2, length_);
      l.v = gather_rows(l.v, rows, 2, length_);
      if (l.cross_k.defined()) {
        l.cross_k = gather_rows(l.cross_k, rows, 2, l.cross_k.size(2));
        l.cross_v = gather_rows(l.cross_v, rows, 2, l.cross_v.size(2));
      }
    }
    if (padding_.defined()) padding_ = gather_rows(padding_, rows, 1, length_);
  }

  // Empties the cache for a new sequence; buffers are kept for reuse.
  void reset() {
    length_ = 0;
    padding_ = {};
    for (auto& l : layers_) l.cross_k = l.cross_v = Tensor<T, D>();
  }

 private:
  // A new contiguous buffer of x's shape whose row r holds x's row rows[r], positions [0, valid)
  // along `axis` (the rest is left unwritten: it is never read before being written).
  template <Element U>
  static Tensor<U, D> gather_rows(const Tensor<U, D>& x, const std::vector<Index>& rows, int axis, Index valid) {
    Tensor<U, D> out = Tensor<U, D>::empty(x.shape());
    if (valid == 0) return out;
    for (std::size_t r = 0; r < rows.size(); ++r) {
      const auto dst = out.slice(0, static_cast<Index>(r), static_cast<Index>(r) + 1).slice(axis, 0, valid);
      copy_into(dst, x.slice(0, rows[r], rows[r] + 1).slice(axis, 0, valid));
    }
    return out;
  }

  Index batch_ = 0, capacity_ = 0, length_ = 0;
  std::vector<Layer> layers_;
  Tensor<std::uint8_t, D> padding_;  // [B, P], allocated at the first padded step
};

}  // namespace cerberus::nn
