// mtl::Model: a multi-task model composed at compile time from a trunk, a sharing strategy, a
// loss weighting and a flat list of tasks.
//
//   using M = mtl::Model<nn::Encoder<>, mtl::Hard, mtl::Equal,
//                        mtl::Task<"sentiment", mtl::SequenceClassifier<2, mtl::Pooling::mean>>,
//                        mtl::Task<"tags", mtl::TokenClassifier<5>>>;
//   M model(nn::Encoder<>(config, gen), gen);
//   model.head<"sentiment">()            the head, found by name at compile time
//   model.losses(batch)                  TaskLosses: one mean loss per task present in the batch
//   model.forward(batch)                 each task's head output on its rows (and the rows)
//   model.forward_with_losses(batch)     both from one pass of the trunk (validation)
//   model.step(batch, optimizer)         zero_grad, losses, weighting.backward (+ the sharing
//                                        penalty), optimizer.step(); returns the WeightingReport
//
// Mixed precision: with a bf16 trunk and heads (nn::Encoder<bfloat16>, SequenceClassifier<2,
// Pooling::mean, bfloat16>, ...) weights, activations and gradients are bf16, while every loss
// is float (compute_t<T>): task_losses, TaskLosses, penalty and total_loss hold float tensors
// whose backward reaches the bf16 parameters. The optimizer is a bf16 one keeping float master
// weights (optim::AdamW over trainable_parameters() deduces AdamW<cpu, bfloat16>). A weighting's
// own parameters (Uncertainty, GradNorm) stay float, so a bf16 model keeps them out of
// trainable_parameters() and offers them as weighting_parameters(): build a float optimizer
// over them and pass it too, step(batch, optimizer, weighting_optimizer)
// (needs_weighting_optimizer says when; step(batch, optimizer) refuses to compile then;
// train::Trainer builds or takes that second optimizer itself). A float model lists them in
// trainable_parameters() and takes one optimizer.
//
// Device: the model runs on its trunk's device (Tr::device_type; cpu for nn::Encoder<> and for a
// trunk type that names none). Over a cuda trunk the same type list is a cuda model:
//   mtl::Model<nn::Encoder<float, cuda>, mtl::Hard, mtl::Equal, Task<"sentiment", SequenceClassifier<2>>, ...>
// Heads are rebound to that device (head_on_t: SequenceClassifier<2> becomes
// SequenceClassifier<2, Pooling::first, float, cuda>), and so is a weighting with learned
// parameters (weighting_on_t: the Uncertainty passed in becomes UncertaintyOn<cuda>). Batches,
// task losses and parameter lists are on the device (Batch<T, D>, TaskLossesOn<D>,
// nn::ParameterList<T, D>); move a host batch with batch.to<cuda>(). Routing reads task_id on
// the host (mtl::route). To start a cuda model from a cpu one, build the cuda model and copy the
// parameters by name (every name matches), or save a checkpoint and load it into the cuda model.
//
// Legend: B = examples, T = time, C = d_model. The trunk maps ids [B, T] + key padding [B, T]
// to hidden states [B, T, C]; the sharing strategy decides which trunk parameters each task
// sees; each head sees only its own task's rows. A task absent from a batch has no loss
// (nullopt), no head call and no gradient.
//
// Compile errors, each one sentence (tests/mtl/fail/): two tasks with one name, a name that is no
// task, a head whose element type or input width does not fit the trunk, weights whose count
// is not the task count, groups that do not partition the tasks.
//
// Tasks are a flat pack kept in a std::tuple of heads; every per-task operation is one fold
// over an index sequence, so a model with N tasks instantiates O(N) small templates.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#define CERBERUS_DETAIL_INCLUDE_ALLOWED
#include "cerberus/mtl/detail/routing.hpp"
#include "cerberus/mtl/detail/trunk.hpp"
#undef CERBERUS_DETAIL_INCLUDE_ALLOWED
#include "cerberus/autograd/grad_mode.hpp"
#include "cerberus/mtl/batch.hpp"
#include "cerberus/mtl/heads.hpp"
#include "cerberus/mtl/task.hpp"
#include "cerberus/mtl/weighting/concept.hpp"
#include "cerberus/nn/module.hpp"

namespace cerberus::mtl {

namespace detail {
template <class Head, class Tr>
constexpr bool width_fits() {
  constexpr Index need = static_cast<Index>(Head::input_width), have = trunk_hidden_width<Tr>();
  return need == 0 || have == 0 || need == have;
}
template <class W, std::size_t N>
constexpr bool weight_count_fits() {
  return weighting_task_count<W> == 0 || weighting_task_count<W> == N;
}
}  // namespace detail

template <class Tr, class Sharing, class Weighting, class... Tasks>
class Model : public nn::Module<Model<Tr, Sharing, Weighting, Tasks...>, typename Tr::element_type, trunk_device_t<Tr>> {
 public:
  using T = typename Tr::element_type;
  using D = trunk_device_t<Tr>;
  using Loss = Tensor<compute_t<T>, D>;  // a task loss: float for float and bf16 models, double for double
  using Names = TaskNames<Tasks...>;
  static constexpr std::size_t task_count = sizeof...(Tasks);

  static_assert(Trunk<Tr>, "the trunk must map ids [B, T] and padding [B, T] to hidden states [B, T, C] and have a config().");
  static_assert(sizeof...(Tasks) >= 1, "a multi-task model needs at least one task.");
  static_assert((is_task_v<Tasks> && ...), "every task must be written mtl::Task<\"name\", Head>.");
  static_assert(names::distinct(Names::value), "two tasks of the model have the same name.");
  static_assert((std::is_same_v<typename Tasks::head_type::element_type, T> && ...),
                "a head's element type differs from the element type of the trunk's hidden states.");
  static_assert((detail::width_fits<typename Tasks::head_type, Tr>() && ...),
                "a head's input width does not match the width of the trunk's hidden states.");
  static_assert((TaskHead<head_on_t<typename Tasks::head_type, D>, T, D> && ...),
                "a head must be built from a HeadContext and offer forward(hidden, padding) and loss(output, batch).");
  static_assert(detail::weight_count_fits<Weighting, sizeof...(Tasks)>(), "the loss weighting has a different number of weights than the model has tasks.");
  static_assert(Sharing::template groups_known<Names>, "a sharing group names a task that the model does not have.");
  static_assert(Sharing::template groups_partition<Names>, "every task must belong to exactly one sharing group.");

  using Strategy = typename Sharing::template impl<Tr, Names>;
  using Heads = std::tuple<head_on_t<typename Tasks::head_type, D>...>;  // each head on the model's device
  using WeightingType = weighting_on_t<Weighting, D>;                     // Weighting itself on the cpu

  // `weighting` is the cpu form the type list names (Uncertainty(3), ...); on a device the model
  // keeps WeightingType built from it.
  Model(Tr trunk, Generator& gen, Weighting weighting = Weighting{})
      : strategy_(std::move(trunk), gen), heads_(make_heads(gen, std::index_sequence_for<Tasks...>{})), weighting_(make_weighting(std::move(weighting))) {
    const Index width = strategy_.context(0).d_model;
    if (trunk_hidden_width<Tr>() != 0 && trunk_hidden_width<Tr>() != width)
      throw ValueError("[mtl::Model] the trunk promises hidden width " + std::to_string(trunk_hidden_width<Tr>()) + " but its d_model is " +
                       std::to_string(width));
  }

  // Index of the task called Name in the task list (the batch's task_id of its examples).
  template <FixedString Name>
  static constexpr std::size_t task_index() {
    constexpr std::size_t i = names::index_of(Names::value, Name.view());
    static_assert(i != names::npos, "the model has no task with this name.");
    return i;
  }
  static constexpr const auto& task_names() { return Names::value; }

  template <FixedString Name>
  auto& head() {
    constexpr std::size_t i = task_index<Name>();
    return std::get<(i < task_count ? i : 0)>(heads_);  // (no second error after task_index's)
  }
  template <FixedString Name>
  const auto& head() const {
    constexpr std::size_t i = task_index<Name>();
    return std::get<(i < task_count ? i : 0)>(heads_);
  }

  Strategy& sharing() { return strategy_; }
  WeightingType& weighting() { return weighting_; }

  // Each task's head output on its own examples (nullopt where absent), with the rows they came
  // from; forward_with_losses also fills each present task's mean loss, computed from that same
  // output (one pass of the trunk gives both, e.g. for validation).
  struct Outputs {
    std::vector<std::optional<Tensor<T, D>>> outputs;
    detail::Rows<D> rows;
    std::vector<std::optional<Loss>> losses;  // forward_with_losses only; empty after forward
  };
  Outputs forward(const Batch<T, D>& batch) { return pass(batch, Pass::outputs); }
  Outputs forward_with_losses(const Batch<T, D>& batch) { return pass(batch, Pass::both); }

  // One mean loss per task over its own examples; nullopt for a task with no example.
  std::vector<std::optional<Loss>> task_losses(const Batch<T, D>& batch) { return pass(batch, Pass::losses).losses; }

  // The sharing strategy's penalty (Soft: the L2 coupling; computed in T, then converted), or an
  // undefined tensor.
  Loss penalty() {
    const Tensor<T, D> p = strategy_.penalty();
    return p.defined() ? detail::to_compute(p) : Loss{};
  }

  // sum_k w_k L_k over the present tasks (w = 1 when `weights` is empty) + the penalty: for
  // gradient checks and for training without a weighting object.
  Loss total_loss(const Batch<T, D>& batch, const std::vector<double>& weights = {}) {
    const auto losses = task_losses(batch);
    Loss total = penalty();
    for (std::size_t k = 0; k < task_count; ++k) {
      if (!losses[k]) continue;
      const double w = weights.empty() ? 1.0 : weights.at(k);
      const Loss term = *losses[k] * w;
      total = total.defined() ? Loss(total + term) : term;
    }
    return total;
  }

  // The parameters every task shares (the weighting measures gradient conflict on them).
  nn::ParameterList<T, D> shared_parameters() const { return strategy_.shared_parameters(); }
  // Everything the model's optimizer should update: the model's parameters, and for a float
  // model the weighting's own (named "weighting.<name>").
  nn::ParameterList<T, D> trainable_parameters() const {
    nn::ParameterList<T, D> out = this->named_parameters();
    if constexpr (std::is_same_v<T, float>) {
      const nn::ParameterList<float, D> own = weighting_parameters();
      out.insert(out.end(), own.begin(), own.end());
    }
    return out;
  }
  // The weighting's own parameters (always float; empty when it has none), named as in
  // trainable_parameters(). A non-float model needs a float optimizer of their own.
  nn::ParameterList<float, D> weighting_parameters() const {
    nn::ParameterList<float, D> out;
    for (auto p : mtl::weighting_parameters<D>(weighting_)) out.push_back({"weighting." + p.name, p.tensor});
    return out;
  }
  // Whether step() needs a second optimizer for weighting_parameters().
  static constexpr bool needs_weighting_optimizer = !std::is_same_v<T, float> && HasWeightingParameters<WeightingType, D>;

  // The losses as the weighting takes them (float: the model's element type is float or bf16).
  TaskLossesOn<D> losses(const Batch<T, D>& batch)
    requires std::is_same_v<compute_t<T>, float>
  {
    TaskLossesOn<D> out;
    for (auto name : Names::value) out.names.emplace_back(name);
    out.losses = task_losses(batch);
    return out;
  }

  // One training step: zero grads, losses, weighting backward (+ penalty backward), update.
  template <class Optimizer>
    requires LossWeighting<WeightingType, T, D>
  WeightingReport step(const Batch<T, D>& batch, Optimizer& optimizer) {
    static_assert(!needs_weighting_optimizer,
                  "this weighting's parameters are float and the model's are not: pass a float optimizer over model.weighting_parameters() "
                  "as well, step(batch, optimizer, weighting_optimizer).");
    return train_step(batch, optimizer);
  }
  // The same with the weighting's float parameters updated by their own optimizer (a bf16 model).
  template <class Optimizer, class WeightingOptimizer>
    requires LossWeighting<WeightingType, T, D>
  WeightingReport step(const Batch<T, D>& batch, Optimizer& optimizer, WeightingOptimizer& weighting_optimizer) {
    static_assert(needs_weighting_optimizer,
                  "step(batch, optimizer, weighting_optimizer) is for a non-float model whose weighting has parameters; here "
                  "trainable_parameters() holds them already: use step(batch, optimizer).");
    return train_step(batch, optimizer, weighting_optimizer);
  }

  template <class F>
  void visit_children(F&& f) {
    strategy_.visit_children(f);
    for_each_task([&](auto k) { f("heads." + std::string(Names::value[k]), std::get<k>(heads_)); });
  }

 private:
  template <std::size_t... I>
  Heads make_heads(Generator& gen, std::index_sequence<I...>) {
    return Heads{head_on_t<typename Tasks::head_type, D>(strategy_.context(I), gen)...};
  }
  static WeightingType make_weighting(Weighting&& w) {
    if constexpr (std::is_same_v<WeightingType, Weighting>) return std::move(w);
    else return WeightingType(w);
  }
  // What a pass computes: the heads' outputs, their losses, or both.
  enum class Pass { outputs, losses, both };
  // With losses only (training), a head that offers hidden_loss(hidden, batch) (LMHead) computes
  // its loss from the hidden states without building its output ([B, T, V] logits); its entry
  // of Outputs::outputs stays empty.
  Outputs pass(const Batch<T, D>& batch, Pass what) {
    Outputs out;
    out.rows = route(batch.task_id, batch.size(), task_count);
    check_packing(batch, out.rows);
    const auto hidden = strategy_.hidden(batch, out.rows);
    out.outputs.resize(task_count);
    if (what != Pass::outputs) out.losses.resize(task_count);
    for_each_task([&](auto k) {
      if (!out.rows[k]) return;
      auto& head = std::get<k>(heads_);
      if (what == Pass::outputs) {
        out.outputs[k] = head.forward(*hidden[k], select_padding(batch, *out.rows[k]));
        return;
      }
      const Batch<T, D> mine = out.rows[k]->numel() == batch.size() ? batch : batch.select(*out.rows[k]);
      if constexpr (requires { head.hidden_loss(*hidden[k], mine); }) {
        if (what == Pass::losses) {
          out.losses[k] = head.hidden_loss(*hidden[k], mine);
          return;
        }
      }
      out.outputs[k] = head.forward(*hidden[k], mine.padding);
      out.losses[k] = head.loss(*out.outputs[k], mine);
    });
    return out;
  }
  template <class... Optimizers>
  WeightingReport train_step(const Batch<T, D>& batch, Optimizers&... optimizers) {
    (optimizers.zero_grad(), ...);
    WeightingReport report = weighting_.backward(losses(batch), shared_parameters());
    if (const Loss p = penalty(); p.defined()) {
      p.backward();
      report.total += static_cast<double>(p.item());
    }
    (optimizers.step(), ...);
    return report;
  }
  template <class F>
  static void for_each_task(F&& f) {
    [&]<std::size_t... I>(std::index_sequence<I...>) { (f(std::integral_constant<std::size_t, I>{}), ...); }(std::index_sequence_for<Tasks...>{});
  }
  // A packed batch (several examples per row) only for tasks whose head works per token.
  static void check_packing(const Batch<T, D>& batch, const detail::Rows<D>& rows) {
    if (!batch.packed()) return;
    for_each_task([&](auto k) {
      using Head = std::tuple_element_t<k, Heads>;
      if constexpr (!requires { requires Head::per_token; })
        if (rows[k])
          throw ValueError("[mtl::Model] task \"" + std::string(Names::value[k]) + "\" has a head that pools a whole row, but the batch is " +
                           "packed (segments / positions " + (batch.segments.defined() ? batch.segments : batch.positions).shape().to_string() +
                           ": several examples per row): collate this task's examples unpacked (instruct::collate_classify / collate_lm)");
    });
  }
  static Tensor<std::uint8_t, D> select_padding(const Batch<T, D>& batch, const Tensor<std::int64_t, D>& rows) {
    if (!batch.padding.defined() || rows.numel() == batch.size()) return batch.padding;
    return index_select(batch.padding, 0, rows);
  }

  Strategy strategy_;
  Heads heads_;
  WeightingType weighting_;
};

}  // namespace cerberus::mtl
