// Adam (L2 weight decay folded into the gradient, like torch.optim.Adam) and AdamW (decoupled
// weight decay, like torch.optim.AdamW), one fused pass per parameter tensor:
//   g  = g + weight_decay * p                        Adam only
//   p  = p * (1 - lr * weight_decay)                 AdamW only
//   m  = beta1 * m + (1 - beta1) * g
//   v  = beta2 * v + (1 - beta2) * g * g
//   p  = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// t is the optimizer's step_count() (1 on the first step). PyTorch keeps one t per parameter;
// the two agree unless a parameter misses steps (no gradient), where PyTorch's bias correction
// restarts from that parameter's own count and ours follows the optimizer's.
//
// State: "<name>.exp_avg" (m) and "<name>.exp_avg_sq" (v), allocated as zeros at construction.
//
// AdamW decays only parameters of rank >= 2 by default (weight matrices, embeddings), never
// biases and norm gains; AdamWOptions::decay replaces that rule, and a ParameterGroup with its
// own weight_decay overrides both for its parameters.
#pragma once

#include <cmath>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "cerberus/core/config.hpp"
#include "cerberus/core/math.hpp"
#include "cerberus/optim/optimizer.hpp"

namespace cerberus::optim {

// Which parameters AdamW decays: (name, shape) -> true to decay.
using DecayRule = std::function<bool(const std::string& name, const Shape& shape)>;

// The default rule: matrices and higher-rank weights decay; biases, norm gains and scalars do not.
inline bool decay_matrices(const std::string& /*name*/, const Shape& shape) { return shape.rank() >= 2; }

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // L2: added to the gradient, every parameter
};

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;  // decoupled: p *= 1 - lr * weight_decay
  DecayRule decay = decay_matrices;
};

// The update of one element (or SIMD batch, or CUDA thread's element); the kind of decay is a
// template flag so the loop carries no test.
template <bool L2, bool Decoupled>
struct AdamUpdate {
  float beta1, one_minus_beta1, beta2, one_minus_beta2, eps;
  float step_size;              // lr / (1 - beta1^t)
  float inv_bias_correction2_sqrt;  // 1 / sqrt(1 - beta2^t)
  float weight_decay;           // L2
  float decay_factor;           // 1 - lr * weight_decay (decoupled)
  template <class V>
  CERBERUS_HOST_DEVICE void operator()(V& p, V& m, V& v, const V& grad) const {
    V g = grad;
    if constexpr (L2) g = grad + V(weight_decay) * p;
    if constexpr (Decoupled) p = p * V(decay_factor);
    m = V(beta1) * m + V(one_minus_beta1) * g;
    v = V(beta2) * v + V(one_minus_beta2) * g * g;
    // sqrt(v) / sqrt(1 - beta2^t) as a product: one division per element instead of two (a
    // division costs as much as the memory traffic here; the two forms differ by at most 1 ulp).
    const V denom = math::sqrt(v) * V(inv_bias_correction2_sqrt) + V(eps);
    p = p - V(step_size) * (m / denom);
  }
};

namespace detail {

template <Device D, class P>
class AdamFamily : public Optimizer<D, P> {
  using Base = Optimizer<D, P>;

 protected:
  using typename Base::Slot;
  AdamFamily(const char* op, const std::vector<ParameterGroup<D, P>>& groups, double lr, double beta1, double beta2, double eps,
             bool decoupled, const typename Base::DecayFor& decay_for)
      : Base(op, groups, checked(op, lr, beta1, beta2, eps), {"exp_avg", "exp_avg_sq"}, /*lazy_buffers=*/false, decay_for),
        beta1_(beta1), beta2_(beta2), eps_(eps), decoupled_(decoupled) {}

 private:
  static double checked(const char* op, double lr, double beta1, double beta2, double eps) {
    check_hyperparameter(lr >= 0 && std::isfinite(lr), op, "learning rate must be finite and >= 0", lr);
    check_hyperparameter(beta1 >= 0 && beta1 < 1, op, "beta1 must be in [0, 1)", beta1);
    check_hyperparameter(beta2 >= 0 && beta2 < 1, op, "beta2 must be in [0, 1)", beta2);
    check_hyperparameter(eps >= 0 && std::isfinite(eps), op, "eps must be finite and >= 0", eps);
    return lr;
  }

  void update(Slot& slot, const Tensor<P, D>& grad) override {
    // Scalars in double, as PyTorch computes them in Python, then rounded once to float.
    const double t = static_cast<double>(this->step_count());
    const double lr = this->lr() * slot.lr_scale;
    const double bias_correction1 = 1.0 - std::pow(beta1_, t), bias_correction2 = 1.0 - std::pow(beta2_, t);
    const float b1 = static_cast<float>(beta1_), b2 = static_cast<float>(beta2_);
    const float omb1 = static_cast<float>(1.0 - beta1_), omb2 = static_cast<float>(1.0 - beta2_);
    const float step_size = static_cast<float>(lr / bias_correction1);
    const float inv_bc2_sqrt = static_cast<float>(1.0 / std::sqrt(bias_correction2));
    const float wd = static_cast<float>(slot.weight_decay), decay = static_cast<float>(1.0 - lr * slot.weight_decay);
    const float eps = static_cast<float>(eps_);
    auto run = [&](auto l2, auto decoupled) {
      this->apply_rule(slot, AdamUpdate<decltype(l2)::value, decltype(decoupled)::value>{b1, omb1, b2, omb2, eps, step_size, inv_bc2_sqrt, wd, decay},
                       grad, slot.buffers[0].data(), slot.buffers[1].data());
    };
    if (slot.weight_decay == 0) run(std::false_type{}, std::false_type{});
    else if (decoupled_) run(std::false_type{}, std::true_type{});
    else run(std::true_type{}, std::false_type{});
  }

  double beta1_, beta2_, eps_;
  bool decoupled_;
};

}  // namespace detail

template <Device D = cpu, class P = float>
class Adam final : public detail::AdamFamily<D, P> {
 public:
  Adam(const nn::ParameterList<P, D>& parameters, const AdamOptions& options = {})
      : Adam(std::vector<ParameterGroup<D, P>>{ParameterGroup<D, P>{parameters, 1.0, std::nullopt}}, options) {}
  Adam(const std::vector<ParameterGroup<D, P>>& groups, const AdamOptions& options = {})
      : detail::AdamFamily<D, P>("Adam", groups, options.lr, options.beta1, options.beta2, options.eps, /*decoupled=*/false,
                              decay_everything(options)),
        options_(options) {}
  const AdamOptions& options() const { return options_; }

 private:
  static typename Optimizer<D, P>::DecayFor decay_everything(const AdamOptions& o) {
    detail::check_hyperparameter(o.weight_decay >= 0 && std::isfinite(o.weight_decay), "Adam", "weight_decay must be finite and >= 0",
                                 o.weight_decay);
    return [wd = o.weight_decay](const std::string&, const Shape&) { return wd; };
  }
  AdamOptions options_;
};

template <Device D = cpu, class P = float>
class AdamW final : public detail::AdamFamily<D, P> {
 public:
  AdamW(const nn::ParameterList<P, D>& parameters, const AdamWOptions& options = {})
      : AdamW(std::vector<ParameterGroup<D, P>>{ParameterGroup<D, P>{parameters, 1.0, std::nullopt}}, options) {}
  AdamW(const std::vector<ParameterGroup<D, P>>& groups, const AdamWOptions& options = {})
      : detail::AdamFamily<D, P>("AdamW", groups, options.lr, options.beta1, options.beta2, options.eps, /*decoupled=*/true,
                              decay_by_rule(options)),
        options_(options) {}
  const AdamWOptions& options() const { return options_; }

 private:
  static typename Optimizer<D, P>::DecayFor decay_by_rule(const AdamWOptions& o) {
    detail::check_hyperparameter(o.weight_decay >= 0 && std::isfinite(o.weight_decay), "AdamW", "weight_decay must be finite and >= 0",
                                 o.weight_decay);
    if (!o.decay) throw ValueError("[AdamW] the decay rule is empty; pass a function (name, shape) -> bool, e.g. optim::decay_matrices");
    return [wd = o.weight_decay, rule = o.decay](const std::string& name, const Shape& shape) { return rule(name, shape) ? wd : 0.0; };
  }
  AdamWOptions options_;
};

}  // namespace cerberus::optim
