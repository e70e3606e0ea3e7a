// Stochastic gradient descent with momentum, dampening, Nesterov momentum and L2 weight decay,
// step for step the rule of torch.optim.SGD:
//   d   = g + weight_decay * p
//   buf = d                                        on the parameter's first update
//   buf = momentum * buf + (1 - dampening) * d      afterwards
//   d   = nesterov ? d + momentum * buf : buf      (momentum > 0 only)
//   p   = p - lr * d
// State: "<name>.momentum_buffer" when momentum > 0, created from the first gradient (so it is
// absent from state() for a parameter that has never had one).
#pragma once

#include <type_traits>
#include <vector>

#include "cerberus/core/config.hpp"
#include "cerberus/optim/optimizer.hpp"

namespace cerberus::optim {

struct SGDOptions {
  double lr = 1e-2;
  double momentum = 0.0;
  double dampening = 0.0;
  bool nesterov = false;
  double weight_decay = 0.0;
};

// The update of one element (or one SIMD batch, or one CUDA thread's element). Decay and the
// branches are template flags so the loop carries no test and a zero decay adds no term.
template <bool Decay>
struct SgdUpdate {
  float lr, weight_decay;
  template <class V>
  CERBERUS_HOST_DEVICE void operator()(V& p, const V& g) const {
    if constexpr (Decay) p = p - V(lr) * (g + V(weight_decay) * p);
    else p = p - V(lr) * g;
  }
};

template <bool Decay, bool Nesterov, bool First>
struct SgdMomentumUpdate {
  float lr, weight_decay, momentum, one_minus_dampening;
  template <class V>
  CERBERUS_HOST_DEVICE void operator()(V& p, V& buf, const V& g) const {
    V d = g;
    if constexpr (Decay) d = g + V(weight_decay) * p;
    if constexpr (First) buf = d;
    else buf = V(momentum) * buf + V(one_minus_dampening) * d;
    if constexpr (Nesterov) p = p - V(lr) * (d + V(momentum) * buf);
    else p = p - V(lr) * buf;
  }
};

template <Device D = cpu, class P = float>
class SGD final : public Optimizer<D, P> {
  using Base = Optimizer<D, P>;
  using typename Base::Slot;

 public:
  SGD(const nn::ParameterList<P, D>& parameters, const SGDOptions& options)
      : SGD(std::vector<ParameterGroup<D, P>>{ParameterGroup<D, P>{parameters, 1.0, std::nullopt}}, options) {}
  SGD(const std::vector<ParameterGroup<D, P>>& groups, const SGDOptions& options)
      : Base("SGD", groups, checked(options).lr, options.momentum > 0 ? std::vector<std::string>{"momentum_buffer"} : std::vector<std::string>{},
             /*lazy_buffers=*/true, [wd = options.weight_decay](const std::string&, const Shape&) { return wd; }),
        options_(options) {}

  const SGDOptions& options() const { return options_; }

 private:
  static const SGDOptions& checked(const SGDOptions& o) {
    detail::check_hyperparameter(o.lr >= 0 && std::isfinite(o.lr), "SGD", "learning rate must be finite and >= 0", o.lr);
    detail::check_hyperparameter(o.momentum >= 0 && std::isfinite(o.momentum), "SGD", "momentum must be finite and >= 0", o.momentum);
    detail::check_hyperparameter(std::isfinite(o.dampening), "SGD", "dampening must be finite", o.dampening);
    detail::check_hyperparameter(o.weight_decay >= 0 && std::isfinite(o.weight_decay), "SGD", "weight_decay must be finite and >= 0",
                                 o.weight_decay);
    if (o.nesterov && (o.momentum <= 0 || o.dampening != 0))
      throw ValueError("[SGD] Nesterov momentum needs momentum > 0 and dampening = 0, got momentum " + std::to_string(o.momentum) +
                       " and dampening " + std::to_string(o.dampening));
    return o;
  }

  void update(Slot& slot, const Tensor<P, D>& grad) override {
    const float lr = static_cast<float>(this->lr() * slot.lr_scale);
    const float wd = static_cast<float>(slot.weight_decay);
    auto decay = [&](auto&& body) {
      if (slot.weight_decay != 0) body(std::true_type{});
      else body(std::false_type{});
    };
    if (options_.momentum == 0) {
      decay([&](auto dec) { this->apply_rule(slot, SgdUpdate<decltype(dec)::value>{lr, wd}, grad); });
      return;
    }
    auto& buffer = slot.buffers[0];
    const bool first = !buffer.defined();
    if (first) buffer = Tensor<float, D>::empty(slot.param.shape());
    float* b = buffer.data();
    const float mu = static_cast<float>(options_.momentum), keep = static_cast<float>(1.0 - options_.dampening);
    decay([&](auto dec) {
      auto run = [&](auto nesterov, auto is_first) {
        this->apply_rule(slot, SgdMomentumUpdate<decltype(dec)::value, decltype(nesterov)::value, decltype(is_first)::value>{lr, wd, mu, keep},
                         grad, b);
      };
      if (options_.nesterov) first ? run(std::true_type{}, std::true_type{}) : run(std::true_type{}, std::false_type{});
      else first ? run(std::false_type{}, std::true_type{}) : run(std::false_type{}, std::false_type{});
    });
  }

  SGDOptions options_;
};

}  // namespace cerberus::optim
