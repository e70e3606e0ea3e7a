// train::Trainer over a cuda multi-task model against the same run on the CPU: a four-task model
// (hard sharing, Uncertainty weighting, whose log-variances live on the device and are trained
// and saved with the model) built on the CPU and copied to cuda, four AdamW steps of two
// micro-batches each with clipping, evaluation every two steps and checkpoints.
//   - the per-step losses and the final parameters against the CPU run;
//   - the device's model-<step>.safetensors loaded into a CPU model: equal, bit for bit, to the
//     device's parameters (saved from device memory);
//   - a run stopped after step 2 (stop_after), resumed by a new trainer into a differently
//     initialised cuda model: its later losses and final parameters against the uninterrupted
//     cuda run (scatter-adds use atomics on the device, so the last bits may differ: 1e-5).
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "cerberus/train/trainer.hpp"
#include "mtl_check.cuh"

namespace {

using namespace mtl_check;
namespace fs = std::filesystem;

// A resumable batch source cycling over fixed host batches (what InstructionBatches is to the
// flagship): the trainer moves each batch to the model's device.
struct Cycle {
  std::vector<mtl::Batch<float>> data;
  std::size_t position = 0;
  mtl::Batch<float> next() { return data[position++ % data.size()]; }
  void save_state(std::map<std::string, std::string>& out) const { out["cycle.position"] = std::to_string(position); }
  void restore_state(const std::map<std::string, std::string>& in) { position = std::stoull(in.at("cycle.position")); }
};

template <class D>
using TrainModel = Model<nn::Encoder<float, D>, mtl::Hard, mtl::Uncertainty>;

template <class D>
TrainModel<D> make_model(std::uint64_t seed) {
  Generator gen(seed);
  return TrainModel<D>(nn::Encoder<float, D>(config(), gen), gen, mtl::Uncertainty(4));
}

// The validation score: minus the mean of the present tasks' losses on a fixed batch.
template <class D>
train::Evaluation evaluate(TrainModel<D>& model) {
  static const mtl::Batch<float> validation = make_batch<float>({0, 1, 2, 3, 2, 1}, {0, 1, 2, 0, 0, 3}, 21);
  const auto out = model.forward_with_losses(validation.template to<D>());
  train::Evaluation e;
  double total = 0;
  int n = 0;
  for (std::size_t k = 0; k < out.losses.size(); ++k)
    if (out.losses[k]) {
      const double l = static_cast<double>(out.losses[k]->item());
      e.metrics[std::string(TrainModel<D>::task_names()[k]) + "/loss"] = l;
      total += l, ++n;
    }
  e.score = -total / n;
  return e;
}

train::TrainerOptions options(const fs::path& dir, std::int64_t stop_after = 0) {
  train::TrainerOptions o;
  o.steps = 4;
  o.accumulation = 2;
  o.clip_norm = 1.0;
  o.eval_every = 2;
  o.checkpoint_dir = dir;
  o.stop_after = stop_after;
  o.progress = nullptr;
  return o;
}

// AdamW as in test_transformer_step: eps = 1e-3 keeps a first update continuous in gradients
// near zero, whose sign rounding may differ between devices.
optim::AdamWOptions adamw() { return {.lr = 1e-2, .eps = 1e-3, .weight_decay = 0.01}; }

template <class D>
train::TrainResult train_run(TrainModel<D>& model, const fs::path& dir, std::int64_t stop_after = 0, bool resume = false) {
  optim::AdamW optimizer(model.trainable_parameters(), adamw());
  Cycle source{batches<float>()};
  train::Trainer trainer(model, optimizer, optim::ConstantLr(1e-2), source, evaluate<D>, options(dir, stop_after));
  if (resume) check::report(trainer.resume(), "resume() finds the interrupted run's state");
  return trainer.run();
}

void compare_losses(const std::string& name, const std::vector<double>& got, const std::vector<double>& want, std::size_t offset,
                    double tol) {
  bool ok = got.size() + offset == want.size();
  double worst = 0;
  for (std::size_t i = 0; ok && i < got.size(); ++i) {
    ok = close(got[i], want[i + offset], tol) && std::isfinite(got[i]);
    worst = std::max(worst, std::fabs(got[i] - want[i + offset]));
  }
  check::report(ok, name, std::to_string(got.size()) + " steps, largest difference " + check::fmt(worst) + " (tol " + check::fmt(tol) + ")");
}

}  // namespace

int main() {
  return check::run("test_mtl_trainer (cuda)", [] {
    char pattern[] = "/tmp/cerberus_mtl_trainer_XXXXXX";
    const char* made = mkdtemp(pattern);
    if (!made) throw std::runtime_error("mkdtemp failed");
    const fs::path root(made);

    auto host = make_model<cpu>(5);
    auto device = make_model<cuda>(6);
    copy_model(host, device);
    const train::TrainResult rh = train_run(host, root / "cpu");
    const train::TrainResult rd = train_run(device, root / "cuda");
    check::report(rd.steps == 4 && rd.skipped_steps == 0 && rd.last_evaluation.has_value(), "cuda run: 4 steps, none skipped, evaluated");
    // Four AdamW steps apart: the devices' round-off grows with every update.
    compare_losses("cuda run's step losses vs the CPU run's", rd.step_losses, rh.step_losses, 0, 1e-3);
    compare_parameters("cuda run vs CPU run: final", host.trainable_parameters(), device.trainable_parameters(), 1e-3);
    check::report(close(rd.best_score, rh.best_score, 1e-3) && rd.best_step == rh.best_step, "best score and step as on the CPU",
                  check::fmt(rd.best_score) + " at " + std::to_string(rd.best_step) + " vs " + check::fmt(rh.best_score) + " at " +
                      std::to_string(rh.best_step));

    // The checkpoint written from device memory, loaded on the CPU: the device's values exactly.
    const fs::path file = root / "cuda" / "model-4.safetensors";
    check::report(fs::exists(file) && fs::exists(root / "cuda" / "best.safetensors"), "checkpoint files written from the device");
    auto loaded = make_model<cpu>(7);
    io::load_checkpoint(file.string(), loaded.trainable_parameters());
    const auto want = device.trainable_parameters();
    const auto got = loaded.trainable_parameters();
    bool same = want.size() == got.size();
    for (std::size_t k = 0; same && k < want.size(); ++k) same = want[k].name == got[k].name && want[k].tensor.to_vector() == got[k].tensor.to_vector();
    check::report(same, "checkpoint saved on cuda, loaded on the CPU", std::to_string(got.size()) + " tensors bitwise (weighting's included)");

    // Interrupted after step 2, resumed by a new trainer into another cuda model.
    auto first = make_model<cuda>(8);
    copy_model(make_model<cpu>(5), first);  // the initial weights of both runs above
    const train::TrainResult r1 = train_run(first, root / "resumed", 2);
    check::report(r1.interrupted && r1.steps == 2, "stop_after 2 interrupts the run");
    compare_losses("interrupted run's losses vs the uninterrupted run's", r1.step_losses, rd.step_losses, 0, 1e-5);
    auto resumed = make_model<cuda>(9);  // other weights: resume() must load the checkpoint's
    const train::TrainResult r2 = train_run(resumed, root / "resumed", 0, /*resume=*/true);
    check::report(r2.steps == 4 && !r2.interrupted, "the resumed run completes the 4 steps");
    compare_losses("resumed run's losses vs the uninterrupted run's", r2.step_losses, rd.step_losses, 2, 1e-5);
    compare_parameters("resumed vs uninterrupted: final", device.trainable_parameters(), resumed.trainable_parameters(), 1e-5);

    std::error_code ignored;
    fs::remove_all(root, ignored);
  });
}
