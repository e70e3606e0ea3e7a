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
// too. A weighting with float parameters of its own (Uncertainty, GradNorm) is refused for a
// bf16 model at compile time: those need a second optimizer (mtl::Model::weighting_parameters),
// which the Trainer does not run; train such a model with Model::step.
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
//   state.safetensors          optimizer moments and step, the trainer's generator, and string
//                              entries: trainer step / tokens / best score / patience counter, the
//                              name of the model file above, the batch source's position, and the
//                              (seed, offset) of every dropout layer's generator
//   best.safetensors           the parameters at the best evaluation so far
// Each file is written atomically (temp file + rename). The model file goes first and the state
// file, which names it, is the commit point: a run killed at any moment leaves the previous
// state naming a complete model file, and resume() reads only through the state file. Older
// model files are deleted after the new state is in place.
//
// Bit-exact resume: the parameters, optimizer moments and step, the learning rate (a function of
// the step), the batch stream's position and every random generator that training draws from
// are restored, so the losses after resume() equal the uninterrupted run's, bit for bit. Not
// restored: the statistics of adaptive loss weightings (DWA's loss history, GradNorm's initial
// losses, RLW's and PCGrad's generators); with those the resumed run is close, not identical.
//
// The log (JSONL, one object a line, appended to): {"event": "step", "step", "loss", "lr",
// "grad_norm", "tokens", "tokens_per_s", "losses": {task: loss}, "weights": {task: w}} per step;
// {"event": "eval", "step", "score", "best", "metrics": {...}} per evaluation; "start" and "resume"
// and "stop" events with the reason.
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
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cerberus/autograd/grad_mode.hpp"
#include "cerberus/core/device.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/core/random.hpp"
#include "cerberus/io/checkpoint.hpp"
#include "cerberus/io/json.hpp"
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

}  // namespace detail

template <TrainableModel Model, class Optimizer, optim::LrSchedule Schedule, BatchSource Source>
class Trainer {
  static_assert(!requires { requires Model::needs_weighting_optimizer; },
                "the model's weighting has float parameters and the model's are not float: they need an optimizer of their own, "
                "which train::Trainer does not run. Use a weighting without parameters, or train with Model::step.");

 public:
  using T = typename Model::element_type;
  using D = detail::model_device_t<Model>;
  using Evaluate = std::function<Evaluation(Model&)>;

  Trainer(Model& model, Optimizer& optimizer, Schedule schedule, Source& source, Evaluate evaluate, TrainerOptions options = {})
      : model_(model), optimizer_(optimizer), schedule_(std::move(schedule)), source_(source), evaluate_(std::move(evaluate)),
        options_(std::move(options)), generator_(options_.seed) {
    if (options_.steps < 1) throw ValueError("[train::Trainer] steps must be >= 1, got " + std::to_string(options_.steps));
    if (options_.accumulation < 1) throw ValueError("[train::Trainer] accumulation must be >= 1, got " + std::to_string(options_.accumulation));
    if (options_.eval_every < 0 || options_.patience < 0) throw ValueError("[train::Trainer] eval_every and patience must be >= 0");
    if (options_.patience > 0 && !evaluate_) throw ValueError("[train::Trainer] early stopping (patience) needs an evaluate function");
    if (!options_.checkpoint_dir.empty()) std::filesystem::create_directories(options_.checkpoint_dir);
  }

  // Restores the run saved in checkpoint_dir; false (and nothing changed) when there is none.
  bool resume() {
    if (options_.checkpoint_dir.empty()) return false;
    const auto state_path = options_.checkpoint_dir / "state.safetensors";
    if (!std::filesystem::exists(state_path)) return false;
    const std::string file = state_path.string();
    const std::map<std::string, std::string> extra = io::load_training_state(file, optimizer_, generator_);
    const auto model_file = extra.find("trainer.model_file");
    if (model_file == extra.end()) throw FileError("[train::Trainer] " + file + ": no entry 'trainer.model_file'");
    io::load_checkpoint((options_.checkpoint_dir / model_file->second).string(), model_.trainable_parameters());
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
    log("{\"event\": \"resume\", \"step\": " + std::to_string(step_) + "}");
    return true;
  }

  TrainResult run() {
    const auto start = std::chrono::steady_clock::now();
    const std::int64_t tokens_at_start = tokens_;
    TrainResult result;
    const nn::ParameterList<T, D> params = model_.trainable_parameters();
    ProgressBar bar(options_.steps, options_.progress, options_.progress_every);
    bar.show_perplexity(false);
    if (step_ == 0) log("{\"event\": \"start\", \"steps\": " + std::to_string(options_.steps) + "}");
    model_.train(true);
    std::string stop_reason = "steps";
    while (step_ < options_.steps) {
      const double lr = optim::apply_schedule(schedule_, optimizer_);
      optimizer_.zero_grad();
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
      if (options_.accumulation > 1) scale_gradients(params, 1.0 / options_.accumulation);
      const double norm = options_.clip_norm > 0 ? optim::clip_grad_norm(params, options_.clip_norm) : optim::grad_norm(params);
      if (std::isfinite(norm)) {
        optimizer_.step();
      } else {  // a NaN or inf gradient would poison every parameter and moment: skip the update
        ++result.skipped_steps;
        log("{\"event\": \"skipped\", \"step\": " + std::to_string(step_ + 1) + ", \"reason\": \"non-finite gradient norm\"}");
      }
      ++step_;
      tokens_ += tokens;
      result.step_losses.push_back(total);
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

 private:
  template <class B>
  static std::int64_t count_tokens(const B& b) {
    if (!b.padding.defined()) return b.ids.numel();
    std::int64_t n = 0;
    for (const auto p : b.padding.to_vector()) n += p == 0;
    return n;
  }

  static void scale_gradients(const nn::ParameterList<T, D>& params, double s) {
    NoGradGuard no_grad;
    for (const auto& p : nn::unique_parameters(params)) {
      const Tensor<T, D> g = p.tensor.grad();
      if (g.defined()) g *= static_cast<float>(s);
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
      if (!options_.checkpoint_dir.empty())
        io::save_checkpoint((options_.checkpoint_dir / "best.safetensors").string(), model_.trainable_parameters(), {{"step", std::to_string(step_)}});
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
    io::save_checkpoint((options_.checkpoint_dir / model_file).string(), model_.trainable_parameters(), {{"step", std::to_string(step_)}});
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
    io::save_training_state((options_.checkpoint_dir / "state.safetensors").string(), optimizer_, generator_, extra);
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

}  // namespace cerberus::train
