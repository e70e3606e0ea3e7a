// nn::PositionalEncoding: where a token's position enters the model, chosen at run time.
//
// Legend: B = batch, T = time, C = d_model, P = max_seq_len, D = head dim.
//   learned:    parameter weight [P, C] ~ normal(0, 0.02), added to the token embeddings
//   sinusoidal: fixed table [P, C] (Vaswani et al.: sin on even, cos on odd channels), added; no parameters
//   rope:       nothing added; rotary() gives the cos / sin tables [P, D/2] that attention applies
//               to q and k (ops/rope.hpp); no parameters
//   add(x [B, T, C], offset) -> [B, T, C]: x plus the rows for positions offset .. offset + T - 1
//   (offset = tokens already in a KV cache). One fused pass; the table rows are a view.
//   add(x [B, T, C], positions int64 [B, T]) -> [B, T, C]: x plus the row of each token's own
//   position (sequence packing, nn/packing.hpp): a gather of table rows, differentiable into the
//   learned table.
#pragma once

#include <cmath>
#include <string>

#include "cerberus/core/random.hpp"
#include "cerberus/nn/config.hpp"
#include "cerberus/nn/module.hpp"
#include "cerberus/ops/embedding.hpp"
#include "cerberus/ops/rope.hpp"
#include "cerberus/tensor/factories.hpp"

namespace cerberus::nn {

// pe[p, 2i] = sin(p / 10000^(2i / C)), pe[p, 2i + 1] = cos(p / 10000^(2i / C)); C even.
template <Element T = float, Device D = cpu>
Tensor<T, D> sinusoidal_table(Index positions, Index channels) {
  if (channels % 2 != 0) throw ValueError("[sinusoidal_table] channels must be even, got " + std::to_string(channels));
  auto host = Tensor<T, cpu>::empty(Shape{positions, channels});
  for (Index p = 0; p < positions; ++p)
    for (Index i = 0; i < channels / 2; ++i) {
      const double a = static_cast<double>(p) * std::pow(10000.0, -2.0 * static_cast<double>(i) / static_cast<double>(channels));
      host.data()[p * channels + 2 * i] = static_cast<T>(std::sin(a));
      host.data()[p * channels + 2 * i + 1] = static_cast<T>(std::cos(a));
    }
  if constexpr (std::is_same_v<D, cpu>) return host;
  else return host.template to<D>();
}

template <Element T = float, Device D = cpu>
class PositionalEncoding : public Module<PositionalEncoding<T, D>, T, D> {
 public:
  Tensor<T, D> weight;  // [P, C], learned only

  PositionalEncoding() = default;
  PositionalEncoding(const TransformerConfig& c, Generator& gen) : kind_(c.position), max_len_(c.max_seq_len) {
    switch (kind_) {
      case PositionKind::learned: weight = detail::make_parameter(normal<T, D>(Shape{c.max_seq_len, c.d_model}, 0.0, 0.02, gen)); break;
      case PositionKind::sinusoidal: table_ = sinusoidal_table<T, D>(c.max_seq_len, c.d_model); break;
      case PositionKind::rope: rotary_ = rotary_table<compute_t<T>, D>(c.max_seq_len, c.head_dim(), c.rope_theta); break;
    }
  }

  PositionKind kind() const { return kind_; }
  Index max_len() const { return max_len_; }
  // The rotary tables when kind() == rope, else null.
  const RotaryTable<compute_t<T>, D>* rotary() const { return kind_ == PositionKind::rope ? &rotary_ : nullptr; }

  // x [B, T, C] plus the position rows offset .. offset + T - 1 (x itself for rope).
  Tensor<T, D> add(const Tensor<T, D>& x, Index offset = 0) const {
    const Index t = x.size(-2);
    if (offset < 0 || offset + t > max_len_)
      throw ValueError("[PositionalEncoding] positions " + std::to_string(offset) + ".." + std::to_string(offset + t - 1) + " of x " +
                       x.shape().to_string() + " exceed max_seq_len " + std::to_string(max_len_));
    if (kind_ == PositionKind::rope) return x;
    const Tensor<T, D>& table = kind_ == PositionKind::learned ? weight : table_;
    return Tensor<T, D>(x + table.slice(0, offset, offset + t));
  }

  // x [B, T, C] plus the rows positions[b, t] (x itself for rope: attention rotates by them).
  Tensor<T, D> add(const Tensor<T, D>& x, const Tensor<std::int64_t, D>& positions) const {
    if (!positions.defined() || x.rank() != 3 || !(positions.shape() == Shape{x.size(0), x.size(1)}))
      throw ShapeError("[PositionalEncoding] positions must be int64 [B, T] matching x " + x.shape().to_string() + ", got " +
                       (positions.defined() ? positions.shape().to_string() : std::string("an undefined tensor")));
    if (kind_ == PositionKind::rope) return x;
    const Tensor<T, D>& table = kind_ == PositionKind::learned ? weight : table_;
    return Tensor<T, D>(x + embedding(table, positions));  // embedding names any position >= max_seq_len
  }

  template <class F>
  void visit_own_parameters(F&& f) {
    f("weight", weight);
  }

 private:
  PositionKind kind_ = PositionKind::learned;
  Index max_len_ = 0;
  Tensor<T, D> table_;                 // sinusoidal
  RotaryTable<compute_t<T>, D> rotary_;   // rope
};

}  // namespace cerberus::nn
