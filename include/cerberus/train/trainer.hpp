// train::Trainer: the training loop of a multi-task model, with evaluation, early stopping, a JSONL
// log and full-state checkpoints that resume bit-exactly.
//
//   train::Trainer trainer(model, optimizer, schedule, batches, evaluate, options);
//   trainer.resume();                  // continue from options.checkpoint_dir if it holds a run
//   train::TrainResult r = trainer.run();
//
// One optimizer step = `accumulation` micro-batches from the BatchSource: each goes through
// model.losses() and the model's loss weighting (backward adds into .grad()), plus the sharing
// penalty; the summed gradients are then divided by `accumulation` (so a step is the mean over
// the micro-batches whatever the weighting does with its losses), clipped to clip_norm, and the
// optimizer steps with the schedule's learning rate for that step. A step whose gradient norm is
// NaN or inf makes no update (TrainResult::skipped_steps, a "skipped" log line); the schedule
// follows the optimizer's own step count, so it does not advance either.
//
// Mixed precision: a bf16 model (mtl::Model over nn::Decoder<bfloat16>, ...) trains the same way
// with a bf16 optimizer (optim::AdamW over its trainable_parameters(): float master weights and
// moments in its state). Batches from a float source are converted (Batch::to), losses and the
// reported totals are float, gradients are bf16: accumulation scales them in bf16, clipping
// sums their squares in double and scales them in bf16. model-<step>.safetensors stores the bf16
// parameters as BF16 and state.safetensors the float masters, so resume() is bit-exact in bf16
// too.
//
// Weighting optimizer: a weighting with float parameters of its own (Uncertainty, GradNorm) in a
// bf16 model keeps them out of trainable_parameters() (mtl::Model::weighting_parameters), so the
// Trainer runs a second, float optimizer over them, built of the model optimizer's kind with its
// options (optim::AdamW<cpu, bfloat16> -> AdamW<cpu, float>(model.weighting_parameters(),
// optimizer.options())), or the one passed in:
//   train::Trainer trainer(model, optimizer, weighting_optimizer, schedule, batches, evaluate, options);
// It is treated as a float model's one optimizer treats those parameters: the schedule's lr
// (a ParameterGroup's lr_scale gives them another rate), accumulation divides their gradients too,
// the clipping norm is the global norm of both parameter lists together and one scale clips both,
// and a non-finite norm skips both updates. Its state is saved in state.safetensors under
// "weighting_optimizer.<its own names>" with its step count as a string entry, and the weighting's
// parameters go into the model files with the model's (F32 beside BF16, named "weighting.*" as
// in a float model; load such a file with LoadOptions{.strict = false} into each list).
//
// Devices: a model over a cuda trunk (mtl::Model<nn::Decoder<float, cuda>, ...>) trains the same
// way with a cuda optimizer (optim::AdamW over its trainable_parameters() deduces
// AdamW<cuda, float>). The batch source stays on the host: each micro-batch is counted there and
// moved to the model's device once (Batch::to<D>). Checkpoints are written from device memory and
// hold the same tensors as a cpu run's, so a file saved on cuda loads into a cpu model (and back);
// resume() loads into the device parameters and optimizer state.
//
// Every eval_every steps (and after the last) evaluate(model) returns named metrics and one
// selection score (higher is better, e.g. minus the mean validation loss). A better score by
// more than min_improvement saves best.safetensors; `patience` evaluations in a row without one
// stop the run early. Evaluation runs in eval mode, without recording, and restores train mode.
//
// Checkpoint directory (written at every evaluation, and when stopped by stop_after):
//   model-<step>.safetensors   the model's trainable parameters (weighting parameters included;
//                              BF16 tensors for a bf16 model)
//   state.safetensors          optimizer moments and step (the weighting optimizer's too, see
//                              above), the trainer's generator, and string entries: trainer step /
//                              tokens / best score / patience counter, the name of the model file
//                              above, the batch source's position, the (seed, offset) of every
//                              dropout layer's generator, and the loss weighting's statistics
//                              ("weighting.*", mtl/weighting/state.hpp)
//   best.safetensors           the parameters at the best evaluation so far
// Each file is written atomically (temp file + rename). The model file goes first and the state
// file, which names it, is the commit point: a run killed at any moment leaves the previous
// state naming a complete model file, and resume() reads only through the state file. Older
// model files are deleted after the new state is in place. A missing or malformed entry makes
// resume() throw a FileError naming the file and the entry.
//
// Bit-exact resume: the parameters, optimizer moments and step, the learning rate (a function of
// the step), the batch stream's position, every random generator that training draws from and
// the statistics of adaptive loss weightings (DWA's loss history, GradNorm's initial losses, RLW's
// and PCGrad's generators: a weighting's save_state / restore_state, mtl::HasWeightingState) are
// restored, so the losses and weights after resume() equal the uninterrupted run's, bit for bit
// on the CPU, with every weighting.
//
// The log (JSONL, one object a line, appended to): {"event": "step", "step", "loss", "lr",
// "grad_norm", "tokens", "tokens_per_s", "losses": {task: loss}, "weights": {task: w}} per step;
// {"event": "eval", "step", "score", "best", "metrics": {...}} per evaluation; "start" and "resume"
// and "stop" events with the reason. TrainResult keeps each step's total loss and task weights.
#pragma once

#include <chrono>
#include <cmath>
#include <concepts>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "cerberus/autograd/grad_mode.hpp"
#include "cerberus/core/device.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/core/random.hpp"
#include "cerberus/io/checkpoint.hpp"
#include "cerberus/io/json.hpp"
#include "cerberus/io/safetensors.hpp"
#include "cerberus/io/training_state.hpp"
#include "cerberus/mtl/batch.hpp"
#include "cerberus/mtl/weighting/concept.hpp"
#include "cerberus/optim/clip.hpp"
#include "cerberus/optim/schedule.hpp"
#include "cerberus/train/progress.hpp"

namespace cerberus::train {

namespace detail {
template <class B>
inline constexpr bool is_batch = false;
template <Element E, Device D>
inline constexpr bool is_batch<mtl::Batch<E, D>> = true;

// The device a model runs on: M::device_type (nn modules and mtl::Model), else cpu.
template <class M>
using model_device_t = device_of_t<M>;

// Whether the model's weighting has float parameters that its optimizer cannot take (a bf16
// mtl::Model with Uncertainty or GradNorm): they need an optimizer of their own.
template <class M>
inline constexpr bool needs_weighting_optimizer = requires { requires M::needs_weighting_optimizer; };

// The place of the weighting optimizer in a Trainer whose model needs none.
struct NoWeightingOptimizer {};
// The place of the weighting optimizer when the model needs one and the Trainer cannot build it
// from the model's optimizer (its static_assert then asks for one).
struct WeightingOptimizerNotBuildable {};

// O<D, P> (optim::AdamW<cpu, bfloat16>, ...) as the same optimizer over float parameters.
template <class O>
struct float_optimizer {};
template <template <Device, class> class O, Device D, class P>
struct float_optimizer<O<D, P>> {
  using type = O<D, float>;
};
// An optimizer whose kind the Trainer can build again over float parameters with the same
// hyper-parameters: O<D, float>(parameters, optimizer.options()).
template <class O, class D>
concept FloatRebuildable = requires(const O& o) {
  typename float_optimizer<O>::type;
  requires std::constructible_from<typename float_optimizer<O>::type, const nn::ParameterList<float, D>&, decltype(o.options())>;
};

template <class M, class O>
consteval auto weighting_optimizer_for() {
  if constexpr (!needs_weighting_optimizer<M>) return std::type_identity<NoWeightingOptimizer>{};
  else if constexpr (FloatRebuildable<O, model_device_t<M>>) return std::type_identity<typename float_optimizer<O>::type>{};
  else return std::type_identity<WeightingOptimizerNotBuildable>{};
}
// The weighting optimizer a Trainer builds for model M trained by optimizer O (or a marker).
template <class M, class O>
using weighting_optimizer_for_t = typename decltype(weighting_optimizer_for<M, O>())::type;
}  // namespace detail

// Where batches come from: next() (an mtl::Batch of any element type, usually on the host), and
// its position as strings for the training-state file.
template <class S>
concept BatchSource = requires(S& s, const S& cs, std::map<std::string, std::string>& out, const std::map<std::string, std::string>& in) {
  requires detail::is_batch<decltype(s.next())>;
  cs.save_state(out);
  s.restore_state(in);
};

// What the trainer needs from a model of element type float or bf16 on its device D: mtl::Model's
// losses / weighting / penalty (float) / parameters (of the model's type), all on D.
template <class M>
concept TrainableModel = requires(M& m, const mtl::Batch<typename M::element_type, detail::model_device_t<M>>& b) {
  requires mtl::SharedElement<typename M::element_type>;
  { m.losses(b) } -> std::same_as<mtl::TaskLossesOn<detail::model_device_t<M>>>;
  { m.weighting().backward(m.losses(b), m.shared_parameters()) } -> std::same_as<mtl::WeightingReport>;
  { m.penalty() } -> std::same_as<Tensor<float, detail::model_device_t<M>>>;
  { m.trainable_parameters() } -> std::same_as<nn::ParameterList<typename M::element_type, detail::model_device_t<M>>>;
  m.train(true);
};

struct Evaluation {
  std::map<std::string, double> metrics;  // e.g. "sentiment/accuracy", "translate/loss"
  double score = 0;                       // the selection score: higher is better
};

struct TrainerOptions {
  std::int64_t steps = 1000;          // optimizer steps in the whole run (a resumed run counts the steps done)
  int accumulation = 1;               // micro-batches per step
  double clip_norm = 1.0;             // global-norm clipping; 0 = off
  std::int64_t eval_every = 0;        // 0 = evaluate only after the last step
  std::int64_t patience = 0;          // evaluations without improvement before stopping; 0 = never stop early
  double min_improvement = 0.0;       // a score must beat the best by more than this
  std::filesystem::path checkpoint_dir = {};  // empty = no checkpoints
  std::filesystem::path log_path = {};        // empty = no log
  std::int64_t stop_after = 0;        // > 0: save and stop after this step, as if interrupted (resume tests, demos)
  std::FILE* progress = stderr;       // progress bar output; nullptr = none
  std::int64_t progress_every = 0;    // steps between progress lines in a non-interactive log (0 = a tenth of the run)
  std::uint64_t seed = 0;             // the trainer's generator (offered to callers as generator())
};

struct TrainResult {
  std::int64_t steps = 0;  // the step count at the end
  std::int64_t tokens = 0;          // in the whole run, steps before a resume included
  std::int64_t tokens_this_run = 0;  // in this call of run() (with `seconds`, its throughput)
  bool stopped_early = false;  // patience ran out
  bool interrupted = false;    // stop_after
  double best_score = -std::numeric_limits<double>::infinity();
  std::int64_t best_step = -1;
  std::optional<Evaluation> last_evaluation;
  std::int64_t skipped_steps = 0;  // steps whose gradient norm was NaN or inf: no update was made
  std::vector<double> step_losses;  // the total loss of every step this run() took (resume tests compare these)
  // Per step of this run(), each task's loss weight averaged over the micro-batches that held it,
  // as in the log (NaN for a task absent from the whole step).
  std::vector<std::vector<double>> step_weights;
  double seconds = 0;
};

namespace detail {

// Every module of a model, depth first (the module itself first).
template <class M, class F>
void for_each_module(M& m, F& f) {
  f(m);
  m.visit_children([&](const auto&, auto& child) { for_each_module(child, f); });
}

// The generators of the model's dropout layers, in visiting order (stable for a given model type).
template <class M>
std::vector<Generator*> dropout_generators(M& model) {
  std::vector<Generator*> out;
  auto collect = [&](auto& module) {
    if constexpr (requires { module.generator(); module.p(); }) out.push_back(&module.generator());
  };
  for_each_module(model, collect);
  return out;
}

inline std::string number(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

inline std::string number3(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", v);
  return buf;
}

inline std::int64_t parse_int(const std::map<std::string, std::string>& m, const std::string& key, const std::string& file) {
  const auto it = m.find(key);
  if (it == m.end()) throw FileError("[train::Trainer] " + file + ": training state has no entry '" + key + "' (not written by train::Trainer?)");
  try {
    std::size_t used = 0;
    const long long v = std::stoll(it->second, &used);
    if (used != it->second.size()) throw std::invalid_argument("trailing characters");
    return v;
  } catch (const std::exception&) {
    throw FileError("[train::Trainer] " + file + ": entry '" + key + "' is \"" + it->second + "\", expected an integer");
  }
}

template <Element E, Device D>
Tensor<E> host_copy(const Tensor<E, D>& t) {
  if constexpr (std::is_same_v<D, cpu>) return t.detach();
  else return t.detach().template to<cpu>();
}

// The model's optimizer and the weighting's as one io::TrainingStateOwner, so that one training-
// state file holds both: the model optimizer's entries under their own names, the weighting
// optimizer's under "weighting_optimizer.", and the model optimizer's step count (the Trainer
// writes the other's as a string entry). load_state loads the model optimizer and keeps the
// weighting optimizer's entries in `weighting_entries` for the Trainer, which loads them once
// it has read that step count.
template <class O, class W, Device D>
struct JointOptimizerState {
  static constexpr std::string_view prefix = "weighting_optimizer.";
  O& model;
  W& weighting;
  nn::ParameterList<float, D> weighting_entries = {};

  nn::ParameterList<float, D> state() const {
    nn::ParameterList<float, D> out = model.state();
    for (const auto& e : weighting.state()) out.push_back({std::string(prefix) + e.name, e.tensor});
    return out;
  }
  std::int64_t step_count() const { return model.step_count(); }
  void load_state(const nn::ParameterList<float, D>& state, std::int64_t step) {
    nn::ParameterList<float, D> own;
    weighting_entries.clear();
    for (const auto& e : state) {
      if (e.name.starts_with(prefix)) weighting_entries.push_back({e.name.substr(prefix.size()), e.tensor});
      else own.push_back(e);
    }
    model.load_state(own, step);
  }
};

}  // namespace detail

template <TrainableModel Model, class Optimizer, optim::LrSchedule Schedule, BatchSource Source,
          class WeightingOptimizer = detail::weighting_optimizer_for_t<Model, Optimizer>>
class Trainer {
 public:
  using T = typename Model::element_type;
  using D = detail::model_device_t<Model>;
  using Evaluate = std::function<Evaluation(Model&)>;
  using Weighting = std::remove_cvref_t<decltype(std::declval<Model&>().weighting())>;
  // Whether this Trainer runs a second optimizer, over model.weighting_parameters().
  static constexpr bool has_weighting_optimizer = !std::is_same_v<WeightingOptimizer, detail::NoWeightingOptimizer>;

 private:
  static_assert(!std::is_same_v<WeightingOptimizer, detail::WeightingOptimizerNotBuildable>,
                "the model's weighting has float parameters and the model's are not float, and this optimizer type cannot be rebuilt over "
                "float parameters (O<D, float>(parameters, optimizer.options())): pass a float optimizer over model.weighting_parameters() "
                "to the Trainer as well.");
  static_assert(!has_weighting_optimizer || detail::needs_weighting_optimizer<Model>,
                "a weighting optimizer is for a non-float model whose weighting has parameters; this model's trainable_parameters() "
                "hold them already: construct the Trainer without one.");
  static_assert(!mtl::DeclaresWeightingState<Weighting> || mtl::HasWeightingState<Weighting>,
                "the loss weighting declares save_state or restore_state but not both as save_state(mtl::WeightingState&, const "
                "std::string& prefix) const and restore_state(const mtl::WeightingState&, const std::string& prefix), so a resume "
                "could not restore its statistics.");

 public:
  // With a model that needs a weighting optimizer, the Trainer builds one of the model optimizer's
  // kind with its options: O<D, float>(model.weighting_parameters(), optimizer.options()).
  Trainer(Model& model, Optimizer& optimizer, Schedule schedule, Source& source, Evaluate evaluate, TrainerOptions options = {})
      : model_(model), optimizer_(optimizer), schedule_(std::move(schedule)), source_(source), evaluate_(std::move(evaluate)),
        options_(std::move(options)), generator_(options_.seed) {
    if constexpr (has_weighting_optimizer && !std::is_same_v<WeightingOptimizer, detail::WeightingOptimizerNotBuildable>) {
      if constexpr (requires { WeightingOptimizer(model.weighting_parameters(), optimizer.options()); }) {
        owned_weighting_optimizer_ = std::make_unique<WeightingOptimizer>(model.weighting_parameters(), optimizer.options());
        weighting_optimizer_ = owned_weighting_optimizer_.get();
      } else {
        static_assert(sizeof(WeightingOptimizer) == 0,
                      "this weighting optimizer type cannot be built from model.weighting_parameters() and optimizer.options(): pass one "
                      "to the Trainer's constructor.");
      }
    }
    check_options();
  }
  // The same, with the weighting's float parameters (model.weighting_parameters()) updated by
  // `weighting_optimizer` (a bf16 model with Uncertainty or GradNorm). It takes the schedule's lr
  // with the model's optimizer: give its parameter group an lr_scale for another rate.
  Trainer(Model& model, Optimizer& optimizer, WeightingOptimizer& weighting_optimizer, Schedule schedule, Source& source, Evaluate evaluate,
          TrainerOptions options = {})
      : model_(model), optimizer_(optimizer), weighting_optimizer_(&weighting_optimizer), schedule_(std::move(schedule)), source_(source),
        evaluate_(std::move(evaluate)), options_(std::move(options)), generator_(options_.seed) {
    if constexpr (has_weighting_optimizer && requires { weighting_optimizer.parameters(); }) {
      // A parameter left out would silently never learn.
      const auto updated = weighting_optimizer.parameters();
      for (const auto& p : model.weighting_parameters()) {
        bool found = false;
        for (const auto& q : updated) found = found || q.tensor.data() == p.tensor.data();
        if (!found) throw ValueError("[train::Trainer] the weighting optimizer does not update '" + p.name + "'; build it over model.weighting_parameters()");
      }
    }
    check_options();
  }

  // Restores the run saved in checkpoint_dir; false (and nothing changed) when there is none.
  // A bad entry in the state file is a FileError naming the file and the entry.
  bool resume() {
    if (options_.checkpoint_dir.empty()) return false;
    const auto state_path = options_.checkpoint_dir / "state.safetensors";
    if (!std::filesystem::exists(state_path)) return false;
    const std::string file = state_path.string();
    try {
      restore(file);
    } catch (const ValueError& e) {  // an entry the optimizer, the batch source or the weighting rejected
      throw FileError("[train::Trainer] " + file + ": " + e.what());
    }
    log("{\"event\": \"resume\", \"step\": " + std::to_string(step_) + "}");
    return true;
  }

 private:
  void check_options() const {
    if (options_.steps < 1) throw ValueError("[train::Trainer] steps must be >= 1, got " + std::to_string(options_.steps));
    if (options_.accumulation < 1) throw ValueError("[train::Trainer] accumulation must be >= 1, got " + std::to_string(options_.accumulation));
    if (options_.eval_every < 0 || options_.patience < 0) throw ValueError("[train::Trainer] eval_every and patience must be >= 0");
    if (options_.patience > 0 && !evaluate_) throw ValueError("[train::Trainer] early stopping (patience) needs an evaluate function");
    if (!(options_.clip_norm >= 0) || !std::isfinite(options_.clip_norm))
      throw ValueError("[train::Trainer] clip_norm must be finite and >= 0 (0 = off), got " + std::to_string(options_.clip_norm));
    if (!options_.checkpoint_dir.empty()) std::filesystem::create_directories(options_.checkpoint_dir);
  }

  void restore(const std::string& file) {
    std::map<std::string, std::string> extra;
    if constexpr (has_weighting_optimizer) {
      detail::JointOptimizerState<Optimizer, WeightingOptimizer, D> joint{optimizer_, *weighting_optimizer_};
      extra = io::load_training_state(file, joint, generator_);
      try {
        weighting_optimizer_->load_state(joint.weighting_entries, detail::parse_int(extra, "trainer.weighting_optimizer.step", file));
      } catch (const ValueError& e) {
        throw FileError("[train::Trainer] " + file + ": the weighting optimizer's state (entries 'weighting_optimizer.*'): " + e.what());
      }
    } else {
      extra = io::load_training_state(file, optimizer_, generator_);
    }
    const auto model_file = extra.find("trainer.model_file");
    if (model_file == extra.end()) throw FileError("[train::Trainer] " + file + ": no entry 'trainer.model_file'");
    load_parameters((options_.checkpoint_dir / model_file->second).string());
    mtl::restore_weighting_state(model_.weighting(), extra, "weighting.");
    step_ = detail::parse_int(extra, "trainer.step", file);
    tokens_ = detail::parse_int(extra, "trainer.tokens", file);
    evals_without_improvement_ = detail::parse_int(extra, "trainer.evals_without_improvement", file);
    best_step_ = detail::parse_int(extra, "trainer.best_step", file);
    if (const auto it = extra.find("trainer.best_score"); it != extra.end() && it->second != "none") best_score_ = std::stod(it->second);
    source_.restore_state(extra);
    const auto generators = detail::dropout_generators(model_);
    if (detail::parse_int(extra, "trainer.dropout_layers", file) != static_cast<std::int64_t>(generators.size()))
      throw FileError("[train::Trainer] " + file + ": saved " + extra.at("trainer.dropout_layers") + " dropout generators, the model has " +
                      std::to_string(generators.size()));
    for (std::size_t i = 0; i < generators.size(); ++i) {
      const std::string k = "dropout." + std::to_string(i) + ".";
      generators[i]->set_state(static_cast<std::uint64_t>(std::stoull(extra.at(k + "seed"))), static_cast<std::uint64_t>(std::stoull(extra.at(k + "offset"))));
    }
  }

 public:
  TrainResult run() {
    const auto start = std::chrono::steady_clock::now();
    const std::int64_t tokens_at_start = tokens_;
    TrainResult result;
    const nn::ParameterList<T, D> params = model_.trainable_parameters();
    nn::ParameterList<float, D> weighting_params;  // those of the weighting optimizer (empty without one)
    if constexpr (has_weighting_optimizer) weighting_params = model_.weighting_parameters();
    ProgressBar bar(options_.steps, options_.progress, options_.progress_every);
    bar.show_perplexity(false);
    if (step_ == 0) log("{\"event\": \"start\", \"steps\": " + std::to_string(options_.steps) + "}");
    model_.train(true);
    std::string stop_reason = "steps";
    while (step_ < options_.steps) {
      const double lr = optim::apply_schedule(schedule_, optimizer_);
      optimizer_.zero_grad();
      if constexpr (has_weighting_optimizer) {  // the lr a float model's one optimizer would give them
        weighting_optimizer_->set_lr(lr);
        weighting_optimizer_->zero_grad();
      }
      std::vector<double> loss_sum, weight_sum;
      std::vector<int> present;
      double total = 0;
      std::int64_t tokens = 0;
      std::vector<std::string> names;
      for (int micro = 0; micro < options_.accumulation; ++micro) {
        const auto next = source_.next();
        tokens += count_tokens(next);  // on the source's side (the host, usually): no copy back
        const mtl::Batch<T, D> batch = next.template to<T>().template to<D>();
        mtl::TaskLossesOn<D> losses = model_.losses(batch);
        if (names.empty()) names = losses.names;
        const mtl::WeightingReport report = model_.weighting().backward(losses, model_.shared_parameters());
        double step_total = report.total;
        if (const Tensor<float, D> p = model_.penalty(); p.defined()) {
          p.backward();
          step_total += static_cast<double>(p.item());
        }
        total += step_total / options_.accumulation;
        loss_sum.resize(report.losses.size(), 0.0);
        weight_sum.resize(report.losses.size(), 0.0);
        present.resize(report.losses.size(), 0);
        for (std::size_t k = 0; k < report.losses.size(); ++k) {
          if (std::isnan(report.losses[k])) continue;
          loss_sum[k] += report.losses[k];
          weight_sum[k] += report.weights.empty() ? 1.0 : report.weights[k];
          present[k] += 1;
        }
      }
      if (options_.accumulation > 1) {
        scale_gradients(params, 1.0 / options_.accumulation);
        scale_gradients(weighting_params, 1.0 / options_.accumulation);
      }
      const double norm = clip_gradients(params, weighting_params);
      if (std::isfinite(norm)) {
        optimizer_.step();
        if constexpr (has_weighting_optimizer) weighting_optimizer_->step();
      } else {  // a NaN or inf gradient would poison every parameter and moment: skip the update
        ++result.skipped_steps;
        log("{\"event\": \"skipped\", \"step\": " + std::to_string(step_ + 1) + ", \"reason\": \"non-finite gradient norm\"}");
      }
      ++step_;
      tokens_ += tokens;
      result.step_losses.push_back(total);
      std::vector<double> weights(present.size(), std::numeric_limits<double>::quiet_NaN());
      for (std::size_t k = 0; k < present.size(); ++k)
        if (present[k] > 0) weights[k] = weight_sum[k] / present[k];
      result.step_weights.push_back(std::move(weights));
      std::string detail;
      for (std::size_t k = 0; k < present.size() && k < names.size(); ++k)
        if (present[k] > 0) detail += (detail.empty() ? "" : "  ") + names[k] + " " + detail::number3(loss_sum[k] / present[k]);
      bar.set_detail(detail);
      bar.update(step_, total, tokens);
      log_step(lr, norm, tokens, bar.average_tokens_per_second(), total, names, loss_sum, weight_sum, present);

      const bool last = step_ == options_.steps;
      const bool interrupted = options_.stop_after > 0 && step_ == options_.stop_after && !last;
      if (evaluate_ && (last || (options_.eval_every > 0 && step_ % options_.eval_every == 0))) {
        result.last_evaluation = run_evaluation();
        if (options_.patience > 0 && evals_without_improvement_ >= options_.patience) {
          stop_reason = "early stopping: no improvement in " + std::to_string(options_.patience) + " evaluations";
          result.stopped_early = true;
          save();
          break;
        }
        save();
      } else if (interrupted) {
        save();
      }
      if (interrupted) {
        stop_reason = "stop_after";
        result.interrupted = true;
        break;
      }
    }
    log("{\"event\": \"stop\", \"step\": " + std::to_string(step_) + ", \"reason\": " + io::Json(stop_reason).dump() + "}");
    result.steps = step_;
    result.tokens = tokens_;
    result.tokens_this_run = tokens_ - tokens_at_start;
    result.best_score = best_score_;
    result.best_step = best_step_;
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return result;
  }

  std::int64_t step() const { return step_; }
  Generator& generator() { return generator_; }
  const TrainerOptions& options() const { return options_; }
  // The optimizer of model.weighting_parameters(): the one passed in, or the one the Trainer built.
  WeightingOptimizer& weighting_optimizer()
    requires has_weighting_optimizer
  {
    return *weighting_optimizer_;
  }

 private:
  template <class B>
  static std::int64_t count_tokens(const B& b) {
    if (!b.padding.defined()) return b.ids.numel();
    std::int64_t n = 0;
    for (const auto p : b.padding.to_vector()) n += p == 0;
    return n;
  }

  template <class E>
  static void scale_gradients(const nn::ParameterList<E, D>& params, double s) {
    NoGradGuard no_grad;
    for (const auto& p : nn::unique_parameters(params)) {
      const Tensor<E, D> g = p.tensor.grad();
      if (g.defined()) g *= static_cast<float>(s);
    }
  }

  // The global gradient norm of the model's and the weighting optimizer's parameters together,
  // clipped to clip_norm as clip_grad_norm does (a float model's one list holds both): one norm
  // and one scale for all, and a non-finite norm left unscaled for the caller to skip the step.
  double clip_gradients(const nn::ParameterList<T, D>& params, const nn::ParameterList<float, D>& weighting_params) {
    if constexpr (!has_weighting_optimizer) {
      return options_.clip_norm > 0 ? optim::clip_grad_norm(params, options_.clip_norm) : optim::grad_norm(params);
    } else {
      const double norm = std::hypot(optim::grad_norm(params), optim::grad_norm(weighting_params));
      if (options_.clip_norm > 0 && std::isfinite(norm)) {
        const double scale = options_.clip_norm / (norm + 1e-6);
        if (scale < 1.0) {
          scale_gradients(params, scale);
          scale_gradients(weighting_params, scale);
        }
      }
      return norm;
    }
  }

  // The model file: the trainable parameters and, with a weighting optimizer, the weighting's
  // float ones beside them (F32 next to BF16), all under the names the model gives them.
  void save_parameters(const std::string& path) const {
    const io::Metadata metadata = {{"step", std::to_string(step_)}};
    if constexpr (!has_weighting_optimizer) {
      io::save_checkpoint(path, model_.trainable_parameters(), metadata);
    } else {
      std::vector<io::NamedTensor> tensors;
      for (const auto& p : model_.trainable_parameters()) tensors.push_back({p.name, detail::host_copy(p.tensor)});
      for (const auto& p : model_.weighting_parameters()) tensors.push_back({p.name, detail::host_copy(p.tensor)});
      io::save_safetensors(path, tensors, metadata);
    }
  }
  void load_parameters(const std::string& path) {
    if constexpr (!has_weighting_optimizer) {
      io::load_checkpoint(path, model_.trainable_parameters());
    } else {
      // Two element types, two lists: each loads its own names (checking shape and dtype), once the
      // file's names are checked to be exactly theirs.
      const nn::ParameterList<T, D> params = model_.trainable_parameters();
      const nn::ParameterList<float, D> own = model_.weighting_parameters();
      std::map<std::string, bool> expected;
      for (const auto& p : params) expected[p.name] = false;
      for (const auto& p : own) expected[p.name] = false;
      std::string problems;
      const io::SafetensorsFile file(path);
      for (const auto& info : file.tensors()) {
        const auto it = expected.find(info.name);
        if (it == expected.end()) problems += "\n  unexpected in the file: '" + info.name + "', not a parameter of the model or its weighting";
        else it->second = true;
      }
      for (const auto& [name, found] : expected)
        if (!found) problems += "\n  missing in the file: '" + name + "'";
      if (!problems.empty()) throw FileError("[train::Trainer] " + path + " does not match the model (nothing was loaded):" + problems);
      io::load_checkpoint(path, params, io::LoadOptions{.strict = false});
      io::load_checkpoint(path, own, io::LoadOptions{.strict = false});
    }
  }

  Evaluation run_evaluation() {
    Evaluation e;
    {
      NoGradGuard no_grad;
      model_.train(false);
      e = evaluate_(model_);
      model_.train(true);
    }
    const bool better = best_step_ < 0 || e.score > best_score_ + options_.min_improvement;
    if (better) {
      best_score_ = e.score;
      best_step_ = step_;
      evals_without_improvement_ = 0;
      if (!options_.checkpoint_dir.empty()) save_parameters((options_.checkpoint_dir / "best.safetensors").string());
    } else {
      ++evals_without_improvement_;
    }
    std::string metrics;
    for (const auto& [k, v] : e.metrics) metrics += (metrics.empty() ? "" : ", ") + io::Json(k).dump() + ": " + detail::number(v);
    log("{\"event\": \"eval\", \"step\": " + std::to_string(step_) + ", \"score\": " + detail::number(e.score) + ", \"best\": " +
        (better ? "true" : "false") + ", \"metrics\": {" + metrics + "}}");
    return e;
  }

  void save() {
    if (options_.checkpoint_dir.empty()) return;
    namespace fs = std::filesystem;
    const std::string model_file = "model-" + std::to_string(step_) + ".safetensors";
    save_parameters((options_.checkpoint_dir / model_file).string());
    std::map<std::string, std::string> extra;
    source_.save_state(extra);
    extra["trainer.step"] = std::to_string(step_);
    extra["trainer.tokens"] = std::to_string(tokens_);
    extra["trainer.model_file"] = model_file;
    extra["trainer.best_step"] = std::to_string(best_step_);
    extra["trainer.best_score"] = best_step_ < 0 ? "none" : detail::number(best_score_);
    extra["trainer.evals_without_improvement"] = std::to_string(evals_without_improvement_);
    const auto generators = detail::dropout_generators(model_);
    extra["trainer.dropout_layers"] = std::to_string(generators.size());
    for (std::size_t i = 0; i < generators.size(); ++i) {
      extra["dropout." + std::to_string(i) + ".seed"] = std::to_string(generators[i]->seed());
      extra["dropout." + std::to_string(i) + ".offset"] = std::to_string(generators[i]->offset());
    }
    mtl::save_weighting_state(model_.weighting(), extra, "weighting.");
    const std::string state_file = (options_.checkpoint_dir / "state.safetensors").string();
    if constexpr (has_weighting_optimizer) {
      extra["trainer.weighting_optimizer.step"] = std::to_string(weighting_optimizer_->step_count());
      io::save_training_state(state_file, detail::JointOptimizerState<Optimizer, WeightingOptimizer, D>{optimizer_, *weighting_optimizer_}, generator_,
                              extra);
    } else {
      io::save_training_state(state_file, optimizer_, generator_, extra);
    }
    // The new state names model_file: older model files are no longer reachable.
    for (const auto& entry : fs::directory_iterator(options_.checkpoint_dir)) {
      const std::string name = entry.path().filename().string();
      if (name != model_file && name.starts_with("model-") && name.ends_with(".safetensors")) fs::remove(entry.path());
    }
  }

  void log(const std::string& line) {
    if (options_.log_path.empty()) return;
    std::ofstream out(options_.log_path, std::ios::app);
    if (!out) throw FileError("[train::Trainer] cannot open the log " + options_.log_path.string() + " for appending");
    out << line << '\n';
  }

  void log_step(double lr, double norm, std::int64_t tokens, double tokens_per_s, double total, const std::vector<std::string>& names,
                const std::vector<double>& loss_sum, const std::vector<double>& weight_sum, const std::vector<int>& present) {
    if (options_.log_path.empty()) return;
    std::string losses, weights;
    for (std::size_t k = 0; k < present.size() && k < names.size(); ++k) {
      if (present[k] == 0) continue;
      const std::string key = io::Json(names[k]).dump();
      losses += (losses.empty() ? "" : ", ") + key + ": " + detail::number(loss_sum[k] / present[k]);
      weights += (weights.empty() ? "" : ", ") + key + ": " + detail::number(weight_sum[k] / present[k]);
    }
    log("{\"event\": \"step\", \"step\": " + std::to_string(step_) + ", \"loss\": " + detail::number(total) + ", \"lr\": " + detail::number(lr) +
        ", \"grad_norm\": " + detail::number(norm) + ", \"tokens\": " + std::to_string(tokens) + ", \"tokens_per_s\": " + detail::number(tokens_per_s) +
        ", \"losses\": {" + losses + "}, \"weights\": {" + weights + "}}");
  }

  Model& model_;
  Optimizer& optimizer_;
  std::unique_ptr<WeightingOptimizer> owned_weighting_optimizer_;  // the one built when none was passed
  WeightingOptimizer* weighting_optimizer_ = nullptr;              // that one or the caller's
  Schedule schedule_;
  Source& source_;
  Evaluate evaluate_;
  TrainerOptions options_;
  Generator generator_;
  std::int64_t step_ = 0;
  std::int64_t tokens_ = 0;
  double best_score_ = -std::numeric_limits<double>::infinity();
  std::int64_t best_step_ = -1;
  std::int64_t evals_without_improvement_ = 0;
};

// Deduces the template arguments from the constructor's (evaluate: a function, lambda or nullptr).
template <class Model, class Optimizer, class Schedule, class Source, class Evaluate>
Trainer(Model&, Optimizer&, Schedule, Source&, Evaluate&&, TrainerOptions) -> Trainer<Model, Optimizer, Schedule, Source>;
template <class Model, class Optimizer, class WeightingOptimizer, class Schedule, class Source, class Evaluate>
  requires(!optim::LrSchedule<WeightingOptimizer>)
Trainer(Model&, Optimizer&, WeightingOptimizer&, Schedule, Source&, Evaluate&&) -> Trainer<Model, Optimizer, Schedule, Source, WeightingOptimizer>;
template <class Model, class Optimizer, class WeightingOptimizer, class Schedule, class Source, class Evaluate>
  requires(!optim::LrSchedule<WeightingOptimizer>)
Trainer(Model&, Optimizer&, WeightingOptimizer&, Schedule, Source&, Evaluate&&, TrainerOptions)
    -> Trainer<Model, Optimizer, Schedule, Source, WeightingOptimizer>;

}  // namespace cerberus::train
