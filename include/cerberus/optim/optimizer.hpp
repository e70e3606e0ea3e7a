// The part every optimizer shares: the parameters it updates (deduplicated by storage, keyed by
// name), the learning rate, the step counter, zero_grad, and the state as a named list for exact
// resume. Concrete optimizers (optim/sgd.hpp, optim/adam.hpp) add one update rule.
//
// State is a ParameterList of tensors named "<parameter name>.<buffer>" (buffers: exp_avg and
// exp_avg_sq for Adam/AdamW, momentum_buffer for SGD with momentum), so a checkpoint writes it
// next to the parameters with the same code. state() returns the live buffers (no copy: clone
// them to keep a snapshot); load_state() copies values into the optimizer's own buffers after
// checking every name and shape, and reports every problem at once.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "cerberus/autograd/grad_mode.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/nn/parameter.hpp"
#include "cerberus/optim/kernels.hpp"
#include "cerberus/tensor/tensor.hpp"

namespace cerberus::optim {

// Parameters that share a learning-rate multiplier and, when set, a weight decay that replaces
// the optimizer's (and, for AdamW, its decay rule) for every parameter of the group.
template <Device D = cpu>
struct ParameterGroup {
  nn::ParameterList<float, D> parameters = {};
  double lr_scale = 1.0;
  std::optional<double> weight_decay = std::nullopt;
};

namespace detail {
inline void check_hyperparameter(bool ok, const char* op, const std::string& what, double value) {
  if (!ok) throw ValueError(std::string("[") + op + "] " + what + ", got " + std::to_string(value));
}
}  // namespace detail

template <Device D = cpu>
class Optimizer {
  // Instantiates Kernels<D> with the class: a device whose kernels are not included (cuda without
  // <cerberus/backend/cuda.cuh>) fails here, with the message of optim/kernels.hpp.
  static_assert(sizeof(Kernels<D>) > 0);

 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;  // a copy would share the buffers, and resume from neither
  Optimizer& operator=(const Optimizer&) = delete;
  Optimizer(Optimizer&&) noexcept = default;
  Optimizer& operator=(Optimizer&&) noexcept = default;

  // One update of every parameter that has a gradient; parameters without one (undefined grad)
  // are skipped and their state is left as it was. step_count() counts calls.
  void step() {
    NoGradGuard no_grad;
    ++step_count_;
    for (auto& slot : slots_) {
      Tensor<float, D> g = slot.param.grad();
      if (!g.defined()) continue;
      if (g.shape() != slot.param.shape())
        throw ShapeError(std::string("[") + op_ + ".step] the gradient of '" + slot.name + "' has shape " + g.shape().to_string() +
                         ", its parameter " + slot.param.shape().to_string());
      update(slot, g.contiguous());  // the kernels walk flat arrays
    }
  }

  // set_to_none = true forgets the gradients (backward then adopts fresh buffers, as
  // torch.optim's default does); false fills them with zeros and keeps the memory.
  void zero_grad(bool set_to_none = true) const {
    for (const auto& slot : slots_) {
      if (set_to_none) slot.param.clear_grad();
      else slot.param.zero_grad();
    }
  }

  double lr() const { return lr_; }
  void set_lr(double lr) {
    detail::check_hyperparameter(lr >= 0 && std::isfinite(lr), "set_lr", std::string(op_) + " learning rate must be finite and >= 0", lr);
    lr_ = lr;
  }
  std::int64_t step_count() const { return step_count_; }

  // The parameters this optimizer updates (duplicates by storage removed, first name kept).
  nn::ParameterList<float, D> parameters() const {
    nn::ParameterList<float, D> out;
    for (const auto& slot : slots_) out.push_back({slot.name, slot.param});
    return out;
  }

  // The live state buffers, named "<parameter>.<buffer>". Buffers created lazily (SGD's momentum
  // buffer, made from the first gradient) are listed once they exist.
  nn::ParameterList<float, D> state() const {
    nn::ParameterList<float, D> out;
    for (const auto& slot : slots_)
      for (std::size_t k = 0; k < buffer_names_.size(); ++k)
        if (slot.buffers[k].defined()) out.push_back({slot.name + "." + buffer_names_[k], slot.buffers[k]});
    return out;
  }

  // Restores state() and step_count() saved earlier. Every entry must name a parameter of this
  // optimizer and one of its buffers, with the parameter's shape; eagerly kept buffers (Adam's
  // moments) must all be present; a lazy buffer that is absent means "not created yet". All
  // problems are reported in one ValueError and nothing is changed unless there are none.
  void load_state(const nn::ParameterList<float, D>& state, std::int64_t step_count) {
    std::vector<std::string> problems;
    if (step_count < 0) problems.push_back("step_count must be >= 0, got " + std::to_string(step_count));
    std::unordered_map<std::string, std::pair<std::size_t, std::size_t>> expected;  // name -> (slot, buffer)
    std::unordered_map<std::string, std::size_t> slot_of;
    for (std::size_t s = 0; s < slots_.size(); ++s) {
      slot_of.emplace(slots_[s].name, s);
      for (std::size_t k = 0; k < buffer_names_.size(); ++k) expected.emplace(slots_[s].name + "." + buffer_names_[k], std::pair{s, k});
    }
    std::unordered_set<std::string> seen;
    for (const auto& entry : state) {
      const auto it = expected.find(entry.name);
      if (it == expected.end()) {
        problems.push_back(describe_unknown(entry.name, slot_of));
        continue;
      }
      if (!seen.insert(entry.name).second) {
        problems.push_back("'" + entry.name + "' appears twice");
        continue;
      }
      const auto& param = slots_[it->second.first].param;
      if (!entry.tensor.defined()) problems.push_back("'" + entry.name + "' is an undefined tensor");
      else if (entry.tensor.shape() != param.shape())
        problems.push_back("'" + entry.name + "' has shape " + entry.tensor.shape().to_string() + ", expected " +
                           param.shape().to_string() + " (the shape of parameter '" + slots_[it->second.first].name + "')");
    }
    if (!lazy_buffers_)
      for (const auto& slot : slots_)
        for (const auto& buffer : buffer_names_)
          if (!seen.count(slot.name + "." + buffer)) problems.push_back("missing '" + slot.name + "." + buffer + "'");
    if (!problems.empty()) {
      std::string message = std::string("[load_state] ") + op_ + ": " + std::to_string(problems.size()) +
                            (problems.size() == 1 ? " problem" : " problems") + " with the saved state: ";
      for (std::size_t i = 0; i < problems.size(); ++i) message += (i ? "; " : "") + problems[i];
      throw ValueError(message);
    }

    NoGradGuard no_grad;
    for (auto& slot : slots_)
      for (auto& b : slot.buffers)
        if (lazy_buffers_) b = Tensor<float, D>();  // absent from the saved state: not created yet
    for (const auto& entry : state) {
      const auto [s, k] = expected.at(entry.name);
      auto& buffer = slots_[s].buffers[k];
      if (!buffer.defined()) buffer = Tensor<float, D>::empty(slots_[s].param.shape());
      buffer.assign(entry.tensor.detach());  // a copy: the caller may free or reuse its tensors
    }
    step_count_ = step_count;
  }

 protected:
  struct Slot {
    std::string name;
    Tensor<float, D> param;
    double lr_scale = 1.0;
    double weight_decay = 0.0;
    std::vector<Tensor<float, D>> buffers;  // one per buffer name; undefined until created
  };

  // How a parameter's weight decay is chosen when its group sets none.
  using DecayFor = std::function<double(const std::string& name, const Shape& shape)>;

  // `op` names the optimizer in errors. With lazy_buffers the derived class creates buffers on
  // first use; otherwise they are allocated here, zero-filled.
  Optimizer(const char* op, const std::vector<ParameterGroup<D>>& groups, double lr, std::vector<std::string> buffer_names,
            bool lazy_buffers, const DecayFor& decay_for)
      : op_(op), buffer_names_(std::move(buffer_names)), lazy_buffers_(lazy_buffers) {
    set_lr_checked(lr);
    // Tied parameters (one storage reached under two names) are updated once, under the first
    // name; unique_parameters keeps first occurrences in order, so a walk in step finds groups.
    nn::ParameterList<float, D> all;
    std::vector<std::size_t> group_of;
    for (std::size_t g = 0; g < groups.size(); ++g) {
      const auto& group = groups[g];
      detail::check_hyperparameter(group.lr_scale >= 0 && std::isfinite(group.lr_scale), op,
                                   "parameter group " + std::to_string(g) + ": lr_scale must be finite and >= 0", group.lr_scale);
      if (group.weight_decay)
        detail::check_hyperparameter(*group.weight_decay >= 0 && std::isfinite(*group.weight_decay), op,
                                     "parameter group " + std::to_string(g) + ": weight_decay must be finite and >= 0", *group.weight_decay);
      for (const auto& p : group.parameters) {
        if (!p.tensor.defined()) throw ValueError(std::string("[") + op + "] parameter '" + p.name + "' is an undefined tensor");
        if (!p.tensor.is_contiguous())
          throw ValueError(std::string("[") + op + "] parameter '" + p.name + "' (shape " + p.tensor.shape().to_string() +
                           ", strides " + p.tensor.strides().to_string() +
                           ") is not contiguous; optimizers update parameters as flat arrays");
        all.push_back(p);
        group_of.push_back(g);
      }
    }
    const auto unique = nn::unique_parameters(all);
    std::unordered_set<std::string> names;
    std::size_t next = 0;
    for (std::size_t i = 0; i < all.size() && next < unique.size(); ++i) {
      if (all[i].name != unique[next].name || all[i].tensor.data() != unique[next].tensor.data()) continue;
      const auto& p = unique[next++];
      if (!names.insert(p.name).second)
        throw ValueError(std::string("[") + op + "] two different parameters are named '" + p.name +
                         "'; state is keyed by name, so names must be unique");
      const auto& group = groups[group_of[i]];
      Slot slot{p.name, p.tensor, group.lr_scale, group.weight_decay ? *group.weight_decay : decay_for(p.name, p.tensor.shape()), {}};
      slot.buffers.resize(buffer_names_.size());
      if (!lazy_buffers_)
        for (auto& b : slot.buffers) {
          b = Tensor<float, D>::empty(p.tensor.shape());
          b.fill(0.0f);
        }
      slots_.push_back(std::move(slot));
    }
  }

  // One parameter's update from its (contiguous) gradient; step_count() is already the number
  // of this step (1 on the first).
  virtual void update(Slot& slot, const Tensor<float, D>& grad) = 0;

  const char* op_;
  std::vector<Slot> slots_;

 private:
  void set_lr_checked(double lr) {
    detail::check_hyperparameter(lr >= 0 && std::isfinite(lr), op_, "learning rate must be finite and >= 0", lr);
    lr_ = lr;
  }

  std::string describe_unknown(const std::string& name, const std::unordered_map<std::string, std::size_t>& slot_of) const {
    std::string kept;
    for (std::size_t k = 0; k < buffer_names_.size(); ++k) kept += (k ? ", '" : "'") + buffer_names_[k] + "'";
    if (buffer_names_.empty()) return "unknown state '" + name + "' (" + op_ + " with these settings keeps no state)";
    const auto dot = name.rfind('.');
    if (dot != std::string::npos && !slot_of.count(name.substr(0, dot)))
      return "unknown state '" + name + "' (no parameter named '" + name.substr(0, dot) + "')";
    return "unknown state '" + name + "' (expected '<parameter>.<buffer>' with buffer one of " + kept + ")";
  }

  std::vector<std::string> buffer_names_;
  bool lazy_buffers_;
  double lr_ = 0;
  std::int64_t step_count_ = 0;
};

}  // namespace cerberus::optim
