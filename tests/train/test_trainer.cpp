// train::Trainer and instruct::InstructionBatches: exact resume, early stopping, accumulation, the
// JSONL log, checkpoint errors; the batch stream's resumable position and answer modes.
#include "cerberus/train/trainer.hpp"

#include <filesystem>
#include <limits>
#include <fstream>
#include <string>
#include <vector>

#include "cerberus/cerberus.hpp"
#include "cerberus/instruct.hpp"
#include "cerberus/instruct/batches.hpp"
#include "cerberus/mtl.hpp"
#include "cerberus/mtl/weighting.hpp"
#include "support/catch.hpp"

using namespace cerberus;
namespace fs = std::filesystem;

namespace {

// A character tokenizer: one id per byte (4 + byte % 60); pad 0, bos 2, eos 3.
struct CharTokenizer {
  std::vector<std::int64_t> encode(std::string_view s) const {
    std::vector<std::int64_t> out;
    for (char c : s) out.push_back(4 + static_cast<unsigned char>(c) % 60);
    return out;
  }
  std::int64_t pad_id() const { return 0; }
  std::int64_t bos_id() const { return 2; }
  std::int64_t eos_id() const { return 3; }
};

nn::TransformerConfig tiny_config(double dropout) {
  nn::TransformerConfig c;
  c.vocab_size = 64;
  c.d_model = 16;
  c.n_layers = 2;
  c.n_heads = 2;
  c.d_ff = 32;
  c.max_seq_len = 48;
  c.dropout = dropout;
  return c;
}

using Model = mtl::Model<nn::Decoder<float>, mtl::Hard, mtl::Uncertainty, mtl::Task<"echo", mtl::LMHead<mtl::Tying::tied>>,
                         mtl::Task<"parity", mtl::SequenceClassifier<2, mtl::Pooling::last>>>;
// The same tasks in mixed precision (a weighting without parameters: the Trainer runs one optimizer).
using MixedModel = mtl::Model<nn::Decoder<bfloat16>, mtl::Hard, mtl::Equal, mtl::Task<"echo", mtl::LMHead<mtl::Tying::tied, bfloat16>>,
                              mtl::Task<"parity", mtl::SequenceClassifier<2, mtl::Pooling::last, bfloat16>>>;

std::vector<instruct::TaskData> toy_tasks() {
  using instruct::TaskKind;
  instruct::TaskData echo{instruct::TaskSpec::make("echo", TaskKind::generation, "Echo.", {{"{instruction} {input}"}, {"{input} {instruction}"}}), {}};
  instruct::TaskData parity{
      instruct::TaskSpec::make("parity", TaskKind::classification, "Parity?", {{"{instruction} {input}"}}, {"even", "odd"}), {}, instruct::Answer::label_only};
  const char* words[] = {"ab", "abc", "xyz", "hello", "cat", "dog", "tree", "moon", "sun", "a", "be", "sea"};
  for (const char* w : words) {
    echo.examples.push_back({w, w});
    parity.examples.push_back({w, std::string(w).size() % 2 == 0 ? "even" : "odd"});
  }
  return {echo, parity};
}

instruct::Mixture toy_mixture(const std::vector<instruct::TaskData>& tasks) {
  std::vector<instruct::TaskSource> sources;
  for (std::size_t i = 0; i < tasks.size(); ++i)
    sources.push_back({tasks[i].spec.name, static_cast<std::int64_t>(i), static_cast<std::int64_t>(tasks[i].examples.size())});
  return instruct::examples_proportional(sources);
}

instruct::BatchOptions batch_options() {
  instruct::BatchOptions o;
  o.batch_size = 6;
  o.collate.max_length = 40;
  o.collate.sep_id = 1;
  return o;
}

// Everything one run owns: tokenizer, batches (float: a bf16 model's Trainer converts them),
// model, optimizer (of the model's element type).
template <class M>
struct RunOf {
  using T = typename M::element_type;
  CharTokenizer tok;
  instruct::InstructionBatches<CharTokenizer> batches;
  Generator init;
  M model;
  optim::AdamW<cpu, T> optimizer;

  template <class Weighting>
  RunOf(std::uint64_t model_seed, double dropout, Weighting weighting)
      : batches(tok, toy_tasks(), toy_mixture(toy_tasks()), 7, batch_options()),
        init(model_seed),
        model(nn::Decoder<T>(tiny_config(dropout), init), init, std::move(weighting)),
        optimizer(model.trainable_parameters(), optim::AdamWOptions{.lr = 3e-3}) {}
};
struct Run : RunOf<Model> {
  Run(std::uint64_t model_seed, double dropout) : RunOf(model_seed, dropout, mtl::Uncertainty(2)) {}
};
struct MixedRun : RunOf<MixedModel> {
  MixedRun(std::uint64_t model_seed, double dropout) : RunOf(model_seed, dropout, mtl::Equal()) {}
};

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("cerberus_test_trainer_" + name);
  fs::remove_all(dir);
  return dir;
}

// Minus the mean loss of two fixed batches, with per-task metrics.
template <class M>
train::Evaluation evaluate_fixed_batches(M& m) {
  CharTokenizer tok;
  instruct::InstructionBatches<CharTokenizer> val(tok, toy_tasks(), toy_mixture(toy_tasks()), 99, batch_options());
  train::Evaluation e;
  double sum = 0;
  for (int i = 0; i < 2; ++i) {
    const auto losses = m.task_losses(val.next().template to<typename M::element_type>());
    for (std::size_t k = 0; k < losses.size(); ++k)
      if (losses[k]) sum += losses[k]->item(), e.metrics[std::string(M::task_names()[k]) + "/loss"] += losses[k]->item() / 2;
  }
  e.score = -sum;
  return e;
}
train::Evaluation evaluate_fixed(Model& m) { return evaluate_fixed_batches(m); }

// Every trainable parameter's values, in order (bf16 values exactly as floats).
template <class M>
std::vector<float> flat_parameters(const M& m) {
  std::vector<float> out;
  for (const auto& p : m.trainable_parameters())
    for (const auto x : p.tensor.contiguous().to_vector()) out.push_back(static_cast<float>(x));
  return out;
}

}  // namespace

TEST_CASE("InstructionBatches resumes mid-epoch with the identical batches", "[train][batches]") {
  CharTokenizer tok;
  instruct::InstructionBatches<CharTokenizer> a(tok, toy_tasks(), toy_mixture(toy_tasks()), 3, batch_options());
  for (int i = 0; i < 5; ++i) a.next();
  std::map<std::string, std::string> state;
  a.save_state(state);
  instruct::InstructionBatches<CharTokenizer> b(tok, toy_tasks(), toy_mixture(toy_tasks()), 12345, batch_options());
  b.restore_state(state);
  for (int i = 0; i < 8; ++i) {
    const auto x = a.next(), y = b.next();
    CHECK(x.ids.to_vector() == y.ids.to_vector());
    CHECK(x.token_labels.to_vector() == y.token_labels.to_vector());
    CHECK(x.task_id.to_vector() == y.task_id.to_vector());
    CHECK(x.labels.to_vector() == y.labels.to_vector());
  }
}

TEST_CASE("InstructionBatches: a label-only task's rows hold the prompt alone, a text task's rows its answer", "[train][batches]") {
  CharTokenizer tok;
  instruct::InstructionBatches<CharTokenizer> s(tok, toy_tasks(), toy_mixture(toy_tasks()), 5, batch_options());
  for (int i = 0; i < 4; ++i) {
    const auto pairs = s.next_pairs();
    for (const auto& p : pairs) {
      if (p.task_id == 1) {
        CHECK(p.target.empty());
        CHECK((p.label == 0 || p.label == 1));
        CHECK(p.prompt.find("Parity?") != std::string::npos);
      } else {
        CHECK_FALSE(p.target.empty());
        CHECK(p.prompt.find(p.target) != std::string::npos);  // echo: the answer is the input
      }
    }
  }
  std::vector<instruct::TaskData> bad = toy_tasks();
  bad[0].answer = instruct::Answer::label_only;  // a generation task cannot be answered by a label
  CHECK_THROWS_WITH((instruct::InstructionBatches<CharTokenizer>(tok, bad, toy_mixture(bad), 1, batch_options())),
                    Catch::Contains("answered by label but is not a classification task"));
}

TEST_CASE("Trainer: a run interrupted and resumed gives the uninterrupted run's losses bit for bit", "[train][trainer]") {
  const fs::path dir_full = fresh_dir("full"), dir_cut = fresh_dir("cut");
  train::TrainerOptions o;
  o.steps = 12;
  o.accumulation = 2;
  o.eval_every = 4;
  o.progress = nullptr;
  const optim::WarmupCosine schedule(3e-3, 3, 12);

  Run full(11, 0.1);  // dropout on: its generators must be restored too
  o.checkpoint_dir = dir_full;
  train::Trainer t_full(full.model, full.optimizer, schedule, full.batches, evaluate_fixed, o);
  const train::TrainResult r_full = t_full.run();
  REQUIRE(r_full.step_losses.size() == 12);

  Run first(11, 0.1);
  o.checkpoint_dir = dir_cut;
  o.stop_after = 6;
  train::Trainer t_first(first.model, first.optimizer, schedule, first.batches, evaluate_fixed, o);
  const train::TrainResult r_first = t_first.run();
  CHECK(r_first.interrupted);
  CHECK(r_first.steps == 6);

  Run second(999, 0.1);  // another initialisation: everything must come from the checkpoint
  o.stop_after = 0;
  train::Trainer t_second(second.model, second.optimizer, schedule, second.batches, evaluate_fixed, o);
  REQUIRE(t_second.resume());
  CHECK(t_second.step() == 6);
  const train::TrainResult r_second = t_second.run();
  REQUIRE(r_second.step_losses.size() == 6);
  for (std::size_t i = 0; i < 6; ++i) {
    CHECK(r_first.step_losses[i] == r_full.step_losses[i]);
    CHECK(r_second.step_losses[i] == r_full.step_losses[6 + i]);
  }
  CHECK(flat_parameters(second.model) == flat_parameters(full.model));
  CHECK(r_second.best_step == r_full.best_step);
  CHECK(r_second.tokens == r_full.tokens);  // the whole run's, restored from the state
  CHECK(r_first.tokens_this_run + r_second.tokens_this_run == r_full.tokens_this_run);
  // Only the model file the state names is kept.
  int model_files = 0;
  for (const auto& e : fs::directory_iterator(dir_cut)) model_files += e.path().filename().string().starts_with("model-");
  CHECK(model_files == 1);
  CHECK(fs::exists(dir_cut / "best.safetensors"));
}

TEST_CASE("Trainer: a bf16 run interrupted and resumed gives the uninterrupted run's losses bit for bit", "[train][trainer][mixed]") {
  const fs::path dir_full = fresh_dir("mixed_full"), dir_cut = fresh_dir("mixed_cut");
  train::TrainerOptions o;
  o.steps = 8;
  o.accumulation = 2;
  o.eval_every = 4;
  o.progress = nullptr;
  const optim::WarmupCosine schedule(3e-3, 2, 8);
  const auto evaluate = evaluate_fixed_batches<MixedModel>;

  MixedRun full(11, 0.1);
  o.checkpoint_dir = dir_full;
  train::Trainer t_full(full.model, full.optimizer, schedule, full.batches, evaluate, o);
  const train::TrainResult r_full = t_full.run();
  REQUIRE(r_full.step_losses.size() == 8);
  CHECK(r_full.skipped_steps == 0);
  CHECK(r_full.step_losses.back() < r_full.step_losses.front());

  MixedRun first(11, 0.1);
  o.checkpoint_dir = dir_cut;
  o.stop_after = 3;  // between evaluations: the checkpoint written on interruption
  train::Trainer t_first(first.model, first.optimizer, schedule, first.batches, evaluate, o);
  const train::TrainResult r_first = t_first.run();
  CHECK(r_first.steps == 3);
  // The model file holds the bf16 parameters as BF16; the state holds their float masters.
  const io::SafetensorsFile model_file((dir_cut / "model-3.safetensors").string());
  const io::SafetensorsFile state_file((dir_cut / "state.safetensors").string());
  const auto first_param = first.model.trainable_parameters().front();
  CHECK(model_file.info(first_param.name).dtype == io::Dtype::BF16);
  CHECK(state_file.info(first_param.name + ".master").dtype == io::Dtype::F32);

  MixedRun second(999, 0.1);  // another initialisation: everything must come from the checkpoint
  o.stop_after = 0;
  train::Trainer t_second(second.model, second.optimizer, schedule, second.batches, evaluate, o);
  REQUIRE(t_second.resume());
  CHECK(t_second.step() == 3);
  const train::TrainResult r_second = t_second.run();
  REQUIRE(r_second.step_losses.size() == 5);
  for (std::size_t i = 0; i < 3; ++i) CHECK(r_first.step_losses[i] == r_full.step_losses[i]);
  for (std::size_t i = 0; i < 5; ++i) CHECK(r_second.step_losses[i] == r_full.step_losses[3 + i]);
  CHECK(flat_parameters(second.model) == flat_parameters(full.model));
  const auto masters = [](const MixedRun& r) {
    std::vector<float> out;
    for (const auto& e : r.optimizer.state())
      for (const float x : e.tensor.contiguous().to_vector()) out.push_back(x);
    return out;
  };
  CHECK(masters(second) == masters(full));
  CHECK(r_second.best_step == r_full.best_step);
}

TEST_CASE("Trainer: early stopping after `patience` evaluations without improvement", "[train][trainer]") {
  Run run(3, 0.0);
  int calls = 0;
  auto worsening = [&](Model&) {
    train::Evaluation e;
    e.score = calls == 1 ? 1.0 : 0.5 - calls;  // best at the second evaluation, worse after
    e.metrics["calls"] = ++calls;
    return e;
  };
  train::TrainerOptions o;
  o.steps = 40;
  o.eval_every = 2;
  o.patience = 3;
  o.progress = nullptr;
  o.checkpoint_dir = fresh_dir("patience");
  o.log_path = o.checkpoint_dir / "log.jsonl";
  train::Trainer t(run.model, run.optimizer, optim::ConstantLr(1e-3), run.batches, worsening, o);
  const train::TrainResult r = t.run();
  CHECK(r.stopped_early);
  CHECK(r.steps == 10);  // evaluations at 2 (first), 4 (best), 6, 8, 10 (third without improvement)
  CHECK(r.best_step == 4);
  CHECK(r.best_score == 1.0);
  const auto best = io::SafetensorsFile((o.checkpoint_dir / "best.safetensors").string());
  CHECK(best.metadata().at("step") == "4");

  // The log: one JSON object a line; steps carry both tasks' losses.
  std::ifstream in(o.log_path);
  std::string line;
  int steps = 0, evals = 0;
  while (std::getline(in, line)) {
    const io::Json j = io::parse_json(line, "log.jsonl");
    const std::string event = j.find("event")->as_string();
    if (event == "step") {
      ++steps;
      CHECK(j.find("losses")->find("echo") != nullptr);
    }
    evals += event == "eval";
  }
  CHECK(steps == 10);
  CHECK(evals == 5);
}

TEST_CASE("Trainer: accumulation takes the mean gradient of its micro-batches", "[train][trainer]") {
  // Two steps of one micro-batch with SGD lr, versus what the trainer does with accumulation 2:
  // the update is -lr * (g1 + g2) / 2, computed here by hand.
  Run a(5, 0.0), b(5, 0.0);
  optim::SGD<> sgd_a(a.model.trainable_parameters(), optim::SGDOptions{.lr = 0.1});
  optim::SGD<> sgd_b(b.model.trainable_parameters(), optim::SGDOptions{.lr = 0.1});
  train::TrainerOptions o;
  o.steps = 1;
  o.accumulation = 2;
  o.clip_norm = 0;
  o.progress = nullptr;
  train::Trainer t(a.model, sgd_a, optim::ConstantLr(0.1), a.batches, nullptr, o);
  t.run();

  sgd_b.zero_grad();
  for (int i = 0; i < 2; ++i) {
    const auto losses = b.model.losses(b.batches.next());
    b.model.weighting().backward(losses, b.model.shared_parameters());
  }
  {
    NoGradGuard g;
    for (const auto& p : b.model.trainable_parameters())
      if (p.tensor.grad().defined()) p.tensor.grad() *= 0.5f;
  }
  sgd_b.step();
  const auto pa = flat_parameters(a.model), pb = flat_parameters(b.model);
  REQUIRE(pa.size() == pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) REQUIRE(pa[i] == Approx(pb[i]).margin(1e-7));
}

TEST_CASE("Trainer: a damaged state file is a clear error naming it", "[train][trainer]") {
  const fs::path dir = fresh_dir("damaged");
  {
    Run run(3, 0.0);
    train::TrainerOptions o;
    o.steps = 2;
    o.stop_after = 1;
    o.progress = nullptr;
    o.checkpoint_dir = dir;
    train::Trainer t(run.model, run.optimizer, optim::ConstantLr(1e-3), run.batches, nullptr, o);
    t.run();
  }
  const fs::path state = dir / "state.safetensors";
  fs::resize_file(state, fs::file_size(state) / 2);
  Run run(3, 0.0);
  train::TrainerOptions o;
  o.steps = 2;
  o.progress = nullptr;
  o.checkpoint_dir = dir;
  train::Trainer t(run.model, run.optimizer, optim::ConstantLr(1e-3), run.batches, nullptr, o);
  CHECK_THROWS_WITH(t.resume(), Catch::Contains("state.safetensors"));
}

TEST_CASE("Trainer: a step with a NaN gradient makes no update", "[train][trainer]") {
  Run run(3, 0.0);
  const auto params = run.model.trainable_parameters();
  // A NaN in the trunk's first weight reaches every gradient through the shared hidden states.
  params[0].tensor.data()[0] = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> before = params.back().tensor.contiguous().to_vector();
  train::TrainerOptions o;
  o.steps = 2;
  o.progress = nullptr;
  train::Trainer t(run.model, run.optimizer, optim::ConstantLr(1e-3), run.batches, nullptr, o);
  const train::TrainResult r = t.run();
  CHECK(r.skipped_steps == 2);
  CHECK(run.optimizer.step_count() == 0);
  CHECK(params.back().tensor.contiguous().to_vector() == before);
}
