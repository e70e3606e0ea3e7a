// nn::Dropout: inverted dropout that follows the module's train() / eval() mode.
//
//   forward(x [...]) -> [...]   (x itself, no copy, in eval mode or when p = 0)
// Each Dropout owns a Generator seeded once at construction (from the model's initialisation
// generator), so a run is reproducible from the model seed alone and two dropout layers never
// share masks. The mask is regenerated in the backward, never stored (ops/dropout.hpp).
#pragma once

#include <cstdint>

#include "cerberus/core/random.hpp"
#include "cerberus/nn/module.hpp"
#include "cerberus/ops/dropout.hpp"

namespace cerberus::nn {

template <Element T = float, Device D = cpu>
class Dropout : public Module<Dropout<T, D>, T, D> {
 public:
  Dropout() = default;
  // Draws this layer's seed from `seeds` (two 32-bit words).
  Dropout(double p, Generator& seeds) : p_(p), gen_((std::uint64_t{seeds.next_u32()} << 32) | seeds.next_u32()) {
    if (!(p >= 0.0 && p <= 1.0)) throw ValueError("[Dropout] p must be in [0, 1], got " + std::to_string(p));
  }

  double p() const { return p_; }
  Generator& generator() { return gen_; }

  Tensor<T, D> forward(const Tensor<T, D>& x) {
    if (!this->is_training() || p_ == 0.0) return x;
    return dropout(x, p_, true, gen_);
  }
  Tensor<T, D> operator()(const Tensor<T, D>& x) { return forward(x); }

 private:
  double p_ = 0.0;
  Generator gen_;
};

}  // namespace cerberus::nn
