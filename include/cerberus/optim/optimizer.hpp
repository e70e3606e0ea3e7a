// The part every optimizer shares: the parameters it updates (deduplicated by storage, keyed by
// name), the learning rate, the step counter, zero_grad, and the state as a named list for exact
// resume. Concrete optimizers (optim/sgd.hpp, optim/adam.hpp) add one update rule.
//
// State is a ParameterList of tensors named "<parameter name>.<buffer>" (buffers: exp_avg and
// exp_avg_sq for Adam/AdamW, momentum_buffer for SGD with momentum), so a checkpoint writes it
// next to the parameters with the same code.
//
// Mixed precision: P, the parameters' element type, is float or bfloat16. With bfloat16 weights
// (a model built as nn::DecoderOnly<bfloat16>, say) each parameter gets a float master copy,
// state "<name>.master": the update rule runs in float on the master, moments and the bf16
// gradient read as float, and the result is rounded into the bf16 weight, in the same fused
// pass. Updates far smaller than a bf16 step (lr 1e-4 on a weight of 1 is 1/80 of one) then
// accumulate instead of rounding away. A weight whose value no longer matches its master
// (weights loaded into the model after the optimizer was built) is taken as the new master in
// that pass, so loading in either order is safe. state() returns the live buffers (no copy: clone
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
#include "cerberus/core/bfloat16.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/core/math.hpp"
#include "cerberus/nn/parameter.hpp"
#include "cerberus/optim/kernels.hpp"
#include "cerberus/tensor/tensor.hpp"

namespace cerberus::optim {

// Parameters that share a learning-rate multiplier and, when set, a weight decay that replaces
// the optimizer's (and, for AdamW, its decay rule) for every parameter of the group.
template <Device D = cpu, class P = float>
struct ParameterGroup {
  nn::ParameterList<P, D> parameters = {};
  double lr_scale = 1.0;
  std::optional<double> weight_decay = std::nullopt;
};

namespace detail {
inline void check_hyperparameter(bool ok, const char* op, const std::string& what, double value) {
  if (!ok) throw ValueError(std::string("[") + op + "] " + what + ", got " + std::to_string(value));
}
}  // namespace detail

// The update of a bf16 weight through its float master: the rule (AdamUpdate, SgdUpdate, ...)
// updates the master, which is then stored rounded into the weight. A weight that differs from
// its rounded master was changed from outside (loaded) and first replaces the master.
template <class Rule>
struct MasterWeightUpdate {
  Rule rule;
  template <class V, class... State>
  CERBERUS_HOST_DEVICE void operator()(V& weight, V& master, State&... state) const {
    master = math::select(math::not_equal(math::round_to_bfloat16(master), weight), weight, master);
    rule(master, state...);
    weight = master;
  }
};

template <class P>
concept OptimizerParameter = std::is_same_v<P, float> || std::is_same_v<P, bfloat16>;

template <Device D = cpu, class P = float>
class Optimizer {
  static_assert(OptimizerParameter<P>, "optimizers update float parameters, or bfloat16 ones through float master weights.");
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
  // Every gradient's shape is checked before any parameter changes, so a step that throws
  // leaves parameters, state and step_count() as they were.
  void step() {
    NoGradGuard no_grad;
    std::vector<std::pair<Slot*, Tensor<P, D>>> work;
    for (auto& slot : slots_) {
      Tensor<P, D> g = slot.param.grad();
      if (!g.defined()) continue;
      if (g.shape() != slot.param.shape())
        throw ShapeError(std::string("[") + op_ + ".step] the gradient of '" + slot.name + "' has shape " + g.shape().to_string() +
                         ", its parameter " + slot.param.shape().to_string());
      work.emplace_back(&slot, g.contiguous());  // the kernels walk flat arrays; kept alive until flush
    }
    ++step_count_;
    typename Kernels<D>::UpdateBatch batch;  // cuda: every parameter of one update rule in one launch
    for (auto& [slot, g] : work) update(*slot, g);
    batch.flush();
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
  nn::ParameterList<P, D> parameters() const {
    nn::ParameterList<P, D> out;
    for (const auto& slot : slots_) out.push_back({slot.name, slot.param});
    return out;
  }

  // The live state buffers, named "<parameter>.<buffer>". Buffers created lazily (SGD's momentum
  // buffer, made from the first gradient) are listed once they exist; master weights (bf16
  // parameters) first.
  nn::ParameterList<float, D> state() const {
    nn::ParameterList<float, D> out;
    for (const auto& slot : slots_) {
      if constexpr (mixed) out.push_back({slot.name + ".master", slot.master});
      for (std::size_t k = 0; k < buffer_names_.size(); ++k)
        if (slot.buffers[k].defined()) out.push_back({slot.name + "." + buffer_names_[k], slot.buffers[k]});
    }
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
      if constexpr (mixed) expected.emplace(slots_[s].name + ".master", std::pair{s, master_index});
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
    if constexpr (mixed)
      for (const auto& slot : slots_)
        if (!seen.count(slot.name + ".master")) problems.push_back("missing '" + slot.name + ".master'");
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
      if (k == master_index) {
        slots_[s].master.assign(entry.tensor.detach());
        continue;
      }
      auto& buffer = slots_[s].buffers[k];
      if (!buffer.defined()) buffer = Tensor<float, D>::empty(slots_[s].param.shape());
      buffer.assign(entry.tensor.detach());  // a copy: the caller may free or reuse its tensors
    }
    step_count_ = step_count;
  }

 protected:
  static constexpr bool mixed = !std::is_same_v<P, float>;

  struct Slot {
    std::string name;
    Tensor<P, D> param;
    double lr_scale = 1.0;
    double weight_decay = 0.0;
    std::vector<Tensor<float, D>> buffers;  // one per buffer name; undefined until created
    Tensor<float, D> master = {};           // bf16 parameters only: the float weights updated
  };

  // Runs the update rule over the parameter, the given state arrays (float) and the gradient,
  // in one fused pass: in place on a float parameter, through the master of a bf16 one.
  template <class Rule, class... State>
  void apply_rule(Slot& slot, const Rule& rule, const Tensor<P, D>& grad, State*... state) {
    const Index n = slot.param.numel();
    const P* g = grad.data();
    if constexpr (mixed) Kernels<D>::update_elements(n, MasterWeightUpdate<Rule>{rule}, slot.param.data(), slot.master.data(), state..., g);
    else Kernels<D>::update_elements(n, rule, slot.param.data(), state..., g);
  }

  // How a parameter's weight decay is chosen when its group sets none.
  using DecayFor = std::function<double(const std::string& name, const Shape& shape)>;

  // `op` names the optimizer in errors. With lazy_buffers the derived class creates buffers on
  // first use; otherwise they are allocated here, zero-filled.
  Optimizer(const char* op, const std::vector<ParameterGroup<D, P>>& groups, double lr, std::vector<std::string> buffer_names,
            bool lazy_buffers, const DecayFor& decay_for)
      : op_(op), buffer_names_(std::move(buffer_names)), lazy_buffers_(lazy_buffers) {
    set_lr_checked(lr);
    // Tied parameters (one storage reached under two names) are updated once, under the first
    // name; unique_parameters keeps first occurrences in order, so a walk in step finds groups.
    nn::ParameterList<P, D> all;
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
      if constexpr (mixed) slot.master = p.tensor.detach().template to<float>();
      slots_.push_back(std::move(slot));
    }
  }

  // One parameter's update from its (contiguous) gradient; step_count() is already the number
  // of this step (1 on the first).
  virtual void update(Slot& slot, const Tensor<P, D>& grad) = 0;

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
    if constexpr (mixed) kept += kept.empty() ? "'master'" : ", 'master'";
    if (kept.empty()) return "unknown state '" + name + "' (" + op_ + " with these settings keeps no state)";
    const auto dot = name.rfind('.');
    if (dot != std::string::npos && !slot_of.count(name.substr(0, dot)))
      return "unknown state '" + name + "' (no parameter named '" + name.substr(0, dot) + "')";
    return "unknown state '" + name + "' (expected '<parameter>.<buffer>' with buffer one of " + kept + ")";
  }

  static constexpr std::size_t master_index = static_cast<std::size_t>(-1);  // load_state's key for "<name>.master"
  std::vector<std::string> buffer_names_;
  bool lazy_buffers_;
  double lr_ = 0;
  std::int64_t step_count_ = 0;
};

}  // namespace cerberus::optim
