// The contract between a multi-task model and its loss weighting (namespace cerberus::mtl).
//
// A model computes one scalar loss per task (nullopt for a task with no example in the batch) and
// hands them, with the parameters every task shares (the trunk), to its weighting's backward().
// The weighting combines the losses, runs backward so that every parameter's .grad() holds the
// combined gradient (added to what it already held, like Tensor::backward), and reports:
//
//   losses          per task, the loss value; NaN for an absent task
//   weights         per task, the weight in force this step; 0 for an absent task. For gradient
//                   surgery: the coefficients c_i with shared gradient = sum_i c_i g_i
//   gradient_cosine N x N cosines of the task gradients g_i on the shared parameters; NaN in the
//                   rows and columns of absent tasks, 0 where a gradient is zero. Empty when the
//                   weighting was not asked to measure conflict (plain weightings, see
//                   `measure_conflict` in their options); always filled by surgery weightings
//   total           the combined loss value (surgery: the plain sum of the present losses)
//
// An absent task contributes nothing: no backward, no gradient, no change to any statistic.
//
// Mixed precision: the losses are always float (a bf16 model's heads return float losses), and
// every weighting's backward takes the shared parameters as nn::ParameterList<float> or
// nn::ParameterList<bfloat16> (SharedElement). With bf16 parameters, the weightings that read
// per-task gradients (measure_conflict, GradNorm, PCGrad, MGDA, CAGrad) do their arithmetic in
// double on the bf16 gradients and write the combined gradient back rounded to bf16. A
// weighting's own learned parameters (Uncertainty, GradNorm) stay float whatever the model's
// element type: see weighting_parameters below and mtl::Model.
//
// Device: the losses and the shared parameters live on the model's device D (TaskLossesOn<D>;
// TaskLosses is TaskLossesOn<cpu>), and every weighting's backward is a template over it. A
// weighting with learned parameters keeps them on the model's device: mtl::Model rebinds it
// through its `on_device<D>` alias (weighting_on_t), e.g. Uncertainty (= UncertaintyOn<cpu>) to
// UncertaintyOn<cuda>, built from the cpu object the user passed. Per-task gradients (conflict
// measurement, GradNorm, gradient surgery) are read into double vectors on the host: see
// task_gradients.hpp for what that costs on a device.
//
// State: a weighting with statistics outside its parameters (DWA, GradNorm, RLW, PCGrad) saves
// and restores them as string entries (save_state / restore_state, HasWeightingState in
// state.hpp), which train::Trainer writes into its training-state file.
#pragma once

#include <concepts>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "cerberus/core/device.hpp"
#include "cerberus/mtl/weighting/state.hpp"
#include "cerberus/nn/parameter.hpp"
#include "cerberus/tensor/tensor.hpp"

namespace cerberus::mtl {

// One scalar loss per task, in the model's task order; nullopt = the task is absent from this batch.
// The losses are tensors on device D (the model's).
template <Device D = cpu>
struct TaskLossesOn {
  using device_type = D;
  std::vector<std::string> names;
  std::vector<std::optional<Tensor<float, D>>> losses;
};
using TaskLosses = TaskLossesOn<cpu>;

struct WeightingReport {
  std::vector<double> losses, weights;
  std::vector<std::vector<double>> gradient_cosine;
  double total = 0;
};

// The element types of the shared parameters a weighting's backward takes.
template <class T>
concept SharedElement = std::same_as<T, float> || std::same_as<T, bfloat16>;

// A weighting usable by a model whose shared parameters have element type T, on device D.
template <class W, class T = float, class D = cpu>
concept LossWeighting = requires(W w, const TaskLossesOn<D>& l, const nn::ParameterList<T, D>& shared) {
  { w.backward(l, shared) } -> std::same_as<WeightingReport>;
};

// Weighting type W for a model on device D: W's own `on_device<D>` (the weightings with learned
// parameters have one, and a constructor from their cpu form), else W itself (a weighting
// without device state: its backward is a template over the device).
template <class W, class D>
using weighting_on_t = rebind_device_t<W, D>;

// The number of tasks a weighting type is built for at compile time, for the composition's check
// "weights match the task count": sizeof...(W) for Static<W...>, 0 (= any count, checked at run
// time) for every other weighting. Specialise it for a new fixed-size weighting.
template <class W>
inline constexpr std::size_t weighting_task_count = 0;

// A weighting with learned parameters (Uncertainty's log-variances, GradNorm's weights) offers
// them as `parameters()` so that an optimizer updates them. They are float in every model, on
// the weighting's device D: a float model's optimizer takes them with the model's parameters
// (Model::trainable_parameters); a bf16 model's cannot, so they get a float optimizer of their
// own (Model::weighting_parameters).
template <class W, class D = cpu>
concept HasWeightingParameters = requires(const W& w) {
  { w.parameters() } -> std::convertible_to<nn::ParameterList<float, D>>;
};

// The weighting's learned parameters on device D, or an empty list when it has none.
template <Device D = cpu, class W>
nn::ParameterList<float, D> weighting_parameters(const W& w) {
  if constexpr (HasWeightingParameters<W, D>) return w.parameters();
  else return {};
}

}  // namespace cerberus::mtl
