// nn::Module: what every module offers, written once (CRTP), on top of two small hooks a module
// writes itself:
//
//   template <class F> void visit_own_parameters(F&& f);   // f("weight", weight_tensor&) ...
//   template <class F> void visit_children(F&& f);         // f("q_proj", q_proj_module&) ...
//
// Both default to visiting nothing. From them the base derives hierarchical names
// (`layers.0.attn.q_proj.weight`), named_parameters(), parameters() (tied weights once),
// num_parameters(), set_trainable() (freezing = requires_grad off), zero_grad(), train() / eval().
// Undefined tensors are skipped, so an optional bias is simply left undefined.
//
// Modules are plain classes holding their sub-modules as members (a runtime std::vector for a
// stack of blocks): no registry, no type erasure. Parameters are tensor handles, so copying a
// module shares its parameters (like copying a Tensor shares its storage).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cerberus/core/dtype.hpp"
#include "cerberus/nn/parameter.hpp"
#include "cerberus/tensor/tensor.hpp"

namespace cerberus::nn {

namespace detail {
inline std::string join_name(const std::string& prefix, std::string_view name) {
  if (prefix.empty()) return std::string(name);
  std::string out;
  out.reserve(prefix.size() + 1 + name.size());
  out.append(prefix).append(1, '.').append(name);
  return out;
}

// A new parameter: a leaf that requires grad. Its autodiff state is created here, before any
// copy of the handle exists, so every copy (named_parameters, tied users) shares it.
template <Element T, Device D>
Tensor<T, D> make_parameter(Tensor<T, D> t) {
  t.set_requires_grad(true);
  return t;
}
}  // namespace detail

template <class Derived, Element T, Device D>
class Module {
 public:
  using element_type = T;
  using device_type = D;
  using tensor_type = Tensor<T, D>;

  // Default hooks: nothing to visit. Derived classes hide them with their own.
  template <class F>
  void visit_own_parameters(F&&) {}
  template <class F>
  void visit_children(F&&) {}

  // f(full_name, Tensor<T, D>& parameter) for every defined parameter, depth first, in
  // declaration order. The reference may be reassigned (to load or substitute a tensor).
  template <class F>
  void visit_parameters(const std::string& prefix, F&& f) {
    Derived& self = static_cast<Derived&>(*this);
    self.visit_own_parameters([&](std::string_view name, Tensor<T, D>& p) {
      if (p.defined()) f(detail::join_name(prefix, name), p);
    });
    self.visit_children([&](std::string_view name, auto& child) { child.visit_parameters(detail::join_name(prefix, name), f); });
  }

  // Every parameter with its hierarchical name (tied weights appear once, under their owner's name).
  ParameterList<T, D> named_parameters(const std::string& prefix = "") const {
    ParameterList<T, D> out;
    mutable_self().visit_parameters(prefix, [&](std::string name, Tensor<T, D>& p) { out.push_back({std::move(name), p}); });
    return out;
  }
  // The distinct parameter tensors (a tensor reached twice is listed once).
  std::vector<Tensor<T, D>> parameters() const {
    std::vector<Tensor<T, D>> out;
    for (auto& p : unique_parameters(named_parameters())) out.push_back(p.tensor);
    return out;
  }
  // Number of scalars in the distinct parameters.
  Index num_parameters() const {
    Index n = 0;
    for (const auto& p : parameters()) n += p.numel();
    return n;
  }

  // Freezes (false) or unfreezes (true) every parameter: a frozen parameter does not require
  // grad, so backward neither computes nor stores its gradient.
  void set_trainable(bool trainable) {
    visit_parameters("", [&](const std::string&, Tensor<T, D>& p) { p.set_requires_grad(trainable); });
  }
  // Sets every accumulated gradient to zero (keeps its memory for the next step).
  void zero_grad() {
    visit_parameters("", [](const std::string&, Tensor<T, D>& p) { p.zero_grad(); });
  }
  // Forgets every accumulated gradient (frees its memory).
  void clear_grad() {
    visit_parameters("", [](const std::string&, Tensor<T, D>& p) { p.clear_grad(); });
  }

  // Training mode (dropout active) for this module and every sub-module.
  void train(bool on = true) {
    training_ = on;
    static_cast<Derived&>(*this).visit_children([on](std::string_view, auto& child) { child.train(on); });
  }
  void eval() { train(false); }
  bool is_training() const { return training_; }

 private:
  Derived& mutable_self() const { return const_cast<Derived&>(static_cast<const Derived&>(*this)); }
  bool training_ = true;
};

}  // namespace cerberus::nn
