// train::Trainer and instruct::InstructionBatches: exact resume (with every loss weighting, and a
// bf16 model whose weighting has its own parameters and optimizer), early stopping, accumulation
// and clipping, the JSONL log, checkpoint errors; the batch stream's resumable position and answer
// modes.
#include "cerberus/train/trainer.hpp"

#include <bit>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "cerberus/cerberus.hpp"
#include "cerberus/instruct.hpp"
#include "cerberus/instruct/batches.hpp"
#include "cerberus/mtl.hpp"
#include "cerberus/mtl/weighting.hpp"
#include "support/catch.hpp"
#include "support/message.hpp"

using namespace cerberus;
using testing_support::message_of;
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
// The same tasks in mixed precision, with any weighting (Equal: the Trainer runs one optimizer;
// Uncertainty or GradNorm: a second, float one for the weighting's parameters).
template <class W>
using MixedModelWith = mtl::Model<nn::Decoder<bfloat16>, mtl::Hard, W, mtl::Task<"echo", mtl::LMHead<mtl::Tying::tied, bfloat16>>,
                                  mtl::Task<"parity", mtl::SequenceClassifier<2, mtl::Pooling::last, bfloat16>>>;
using MixedModel = MixedModelWith<mtl::Equal>;
// Three tasks (PCGrad draws orders only with three or more), with any weighting.
template <class W>
using ThreeTaskModel = mtl::Model<nn::Decoder<float>, mtl::Hard, W, mtl::Task<"echo", mtl::LMHead<mtl::Tying::tied>>,
                                  mtl::Task<"parity", mtl::SequenceClassifier<2, mtl::Pooling::last>>,
                                  mtl::Task<"vowel", mtl::SequenceClassifier<2, mtl::Pooling::last>>>;

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

// toy_tasks() and a third: does the word start with a vowel?
std::vector<instruct::TaskData> three_tasks() {
  std::vector<instruct::TaskData> tasks = toy_tasks();
  instruct::TaskData vowel{
      instruct::TaskSpec::make("vowel", instruct::TaskKind::classification, "Vowel first?", {{"{instruction} {input}"}}, {"no", "yes"}),
      {},
      instruct::Answer::label_only};
  for (const auto& e : tasks[0].examples) vowel.examples.push_back({e.input, std::string("aeiou").find(e.input[0]) != std::string::npos ? "yes" : "no"});
  tasks.push_back(vowel);
  return tasks;
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
  RunOf(std::uint64_t model_seed, double dropout, Weighting weighting, const std::vector<instruct::TaskData>& tasks = toy_tasks())
      : batches(tok, tasks, toy_mixture(tasks), 7, batch_options()),
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

// Every trainable parameter's values, in order (bf16 values exactly as floats), then the
// weighting's parameters where the model keeps them apart (a bf16 model).
template <class M>
std::vector<float> flat_parameters(const M& m) {
  std::vector<float> out;
  for (const auto& p : m.trainable_parameters())
    for (const auto x : p.tensor.contiguous().to_vector()) out.push_back(static_cast<float>(x));
  if constexpr (M::needs_weighting_optimizer)
    for (const auto& p : m.weighting_parameters())
      for (const float x : p.tensor.contiguous().to_vector()) out.push_back(x);
  return out;
}

// Equal bit for bit (NaN marks an absent task in step_weights, and equals itself here).
bool same_bits(const std::vector<std::vector<double>>& a, const std::vector<std::vector<double>>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].size() != b[i].size()) return false;
    for (std::size_t k = 0; k < a[i].size(); ++k)
      if (std::bit_cast<std::uint64_t>(a[i][k]) != std::bit_cast<std::uint64_t>(b[i][k])) return false;
  }
  return true;
}

// The values of an optimizer's state, in order.
template <class O>
std::vector<float> flat_state(const O& optimizer) {
  std::vector<float> out;
  for (const auto& e : optimizer.state())
    for (const float x : e.tensor.contiguous().to_vector()) out.push_back(x);
  return out;
}

// Rewrites a state file with `edit` applied to its tensors and metadata (a damaged checkpoint).
void rewrite_state(const fs::path& path, const std::function<void(std::vector<io::NamedTensor>&, io::Metadata&)>& edit) {
  std::vector<io::NamedTensor> tensors;
  io::Metadata metadata;
  {
    const io::SafetensorsFile file(path.string());
    for (const auto& info : file.tensors()) tensors.push_back({info.name, file.tensor<float>(info.name).clone()});
    metadata = file.metadata();
  }
  edit(tensors, metadata);
  io::save_safetensors(path.string(), tensors, metadata);
}

// A run of six steps of two micro-batches, uninterrupted, against the same run stopped after
// step 3 and resumed by a fresh Trainer into a differently initialised model: losses, weights,
// parameters and the weighting's statistics must be equal bit for bit. `make` builds the
// weighting afresh for each model (a copy of Uncertainty or GradNorm would share its parameter).
template <class Make>
void check_exact_resume(const std::string& name, Make make) {
  using W = decltype(make());
  using M = ThreeTaskModel<W>;
  const fs::path dir = fresh_dir("weighting_" + name);
  train::TrainerOptions o;
  o.steps = 6;
  o.accumulation = 2;
  o.progress = nullptr;
  const optim::WarmupCosine schedule(3e-3, 2, 6);
  RunOf<M> full(11, 0.1, make(), three_tasks());
  train::Trainer t_full(full.model, full.optimizer, schedule, full.batches, nullptr, o);
  const train::TrainResult r_full = t_full.run();

  RunOf<M> first(11, 0.1, make(), three_tasks());
  o.checkpoint_dir = dir;
  o.stop_after = 3;
  train::Trainer t_first(first.model, first.optimizer, schedule, first.batches, nullptr, o);
  const train::TrainResult r_first = t_first.run();
  REQUIRE(r_first.interrupted);
  const io::Metadata state = io::SafetensorsFile((dir / "state.safetensors").string()).metadata();
  bool weighting_entries = false;
  for (const auto& [key, value] : state) weighting_entries = weighting_entries || key.starts_with("extra.weighting.");
  CHECK(weighting_entries == mtl::HasWeightingState<typename M::WeightingType>);

  RunOf<M> second(999, 0.1, make(), three_tasks());
  o.stop_after = 0;
  train::Trainer t_second(second.model, second.optimizer, schedule, second.batches, nullptr, o);
  REQUIRE(t_second.resume());
  const train::TrainResult r_second = t_second.run();

  std::vector<double> losses = r_first.step_losses;
  losses.insert(losses.end(), r_second.step_losses.begin(), r_second.step_losses.end());
  std::vector<std::vector<double>> weights = r_first.step_weights;
  weights.insert(weights.end(), r_second.step_weights.begin(), r_second.step_weights.end());
  REQUIRE(r_full.step_losses.size() == 6);
  CHECK(losses == r_full.step_losses);
  CHECK(same_bits(weights, r_full.step_weights));
  CHECK(flat_parameters(second.model) == flat_parameters(full.model));
  mtl::WeightingState end_full, end_second;
  mtl::save_weighting_state(full.model.weighting(), end_full);
  mtl::save_weighting_state(second.model.weighting(), end_second);
  CHECK(end_second == end_full);
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

TEST_CASE("Trainer: every loss weighting resumes bit for bit, adaptive statistics included", "[train][trainer][weighting]") {
  check_exact_resume("equal", [] { return mtl::Equal(); });
  check_exact_resume("static", [] { return mtl::Static<1.0, 0.5, 2.0>(); });
  check_exact_resume("runtime_static", [] { return mtl::RuntimeStatic({1.0, 0.5, 2.0}); });
  check_exact_resume("uncertainty", [] { return mtl::Uncertainty(3); });
  check_exact_resume("dwa", [] { return mtl::DWA(); });
  check_exact_resume("gradnorm", [] { return mtl::GradNorm(3); });
  check_exact_resume("rlw", [] { return mtl::RLW(); });
  check_exact_resume("pcgrad", [] { return mtl::PCGrad(); });
  check_exact_resume("mgda", [] { return mtl::MGDA(); });
  check_exact_resume("cagrad", [] { return mtl::CAGrad(); });
}

namespace {

// A bf16 model whose weighting has float parameters, trained by the Trainer (which builds their
// AdamW<cpu, float> from the model's AdamW): 8 steps uninterrupted against 3 + a resume by a fresh
// Trainer into another initialisation + 5; the loss falls, the weighting's parameters move, the
// files hold what the header promises, and everything is equal bit for bit. `make` builds the
// weighting afresh for each model.
template <class Make>
void check_mixed_weighting_resume(const std::string& name, Make make, const std::string& parameter) {
  using M = MixedModelWith<decltype(make())>;
  static_assert(M::needs_weighting_optimizer);
  const fs::path dir = fresh_dir("mixed_weighting_" + name);
  train::TrainerOptions o;
  o.steps = 8;
  o.accumulation = 2;
  o.progress = nullptr;
  const optim::WarmupCosine schedule(3e-3, 2, 8);

  RunOf<M> full(11, 0.1, make());
  const std::vector<float> initial = full.model.weighting_parameters().at(0).tensor.to_vector();
  train::Trainer t_full(full.model, full.optimizer, schedule, full.batches, nullptr, o);
  static_assert(std::is_same_v<std::remove_reference_t<decltype(t_full.weighting_optimizer())>, optim::AdamW<cpu, float>>);
  const train::TrainResult r_full = t_full.run();
  REQUIRE(r_full.step_losses.size() == 8);
  CHECK(r_full.skipped_steps == 0);
  CHECK(r_full.step_losses.back() < r_full.step_losses.front());
  CHECK(t_full.weighting_optimizer().step_count() == 8);
  CHECK(full.model.weighting_parameters().at(0).tensor.to_vector() != initial);  // its optimizer stepped

  RunOf<M> first(11, 0.1, make());
  o.checkpoint_dir = dir;
  o.stop_after = 3;
  train::Trainer t_first(first.model, first.optimizer, schedule, first.batches, nullptr, o);
  const train::TrainResult r_first = t_first.run();
  REQUIRE(r_first.interrupted);
  // The model file: bf16 parameters as BF16, the weighting's as F32 under the model's names.
  const io::SafetensorsFile model_file((dir / "model-3.safetensors").string());
  CHECK(model_file.info(first.model.trainable_parameters().front().name).dtype == io::Dtype::BF16);
  CHECK(model_file.info("weighting." + parameter).dtype == io::Dtype::F32);
  // The state file: the weighting optimizer's moments under their prefix, and its step count.
  const io::SafetensorsFile state_file((dir / "state.safetensors").string());
  CHECK(state_file.info("weighting_optimizer.weighting." + parameter + ".exp_avg").dtype == io::Dtype::F32);
  CHECK(state_file.contains("weighting_optimizer.weighting." + parameter + ".exp_avg_sq"));
  CHECK(state_file.metadata().at("extra.trainer.weighting_optimizer.step") == "3");

  RunOf<M> second(999, 0.1, make());
  o.stop_after = 0;
  train::Trainer t_second(second.model, second.optimizer, schedule, second.batches, nullptr, o);
  REQUIRE(t_second.resume());
  CHECK(t_second.weighting_optimizer().step_count() == 3);
  const train::TrainResult r_second = t_second.run();
  std::vector<double> losses = r_first.step_losses;
  losses.insert(losses.end(), r_second.step_losses.begin(), r_second.step_losses.end());
  std::vector<std::vector<double>> weights = r_first.step_weights;
  weights.insert(weights.end(), r_second.step_weights.begin(), r_second.step_weights.end());
  CHECK(losses == r_full.step_losses);
  CHECK(same_bits(weights, r_full.step_weights));
  CHECK(flat_parameters(second.model) == flat_parameters(full.model));
  CHECK(flat_state(t_second.weighting_optimizer()) == flat_state(t_full.weighting_optimizer()));
  CHECK(flat_state(second.optimizer) == flat_state(full.optimizer));
}

}  // namespace

TEST_CASE("Trainer: a bf16 model with Uncertainty or GradNorm trains its weighting with a float optimizer and resumes bit for bit",
          "[train][trainer][mixed]") {
  check_mixed_weighting_resume("uncertainty", [] { return mtl::Uncertainty(2); }, "uncertainty.log_variance");
  check_mixed_weighting_resume("gradnorm", [] { return mtl::GradNorm(2); }, "gradnorm.weights");
}

TEST_CASE("Trainer: a weighting optimizer passed in is the one that updates the weighting's parameters", "[train][trainer][mixed]") {
  using M = MixedModelWith<mtl::Uncertainty>;
  RunOf<M> run(3, 0.0, mtl::Uncertainty(2));
  // lr_scale 0: the schedule's lr reaches this optimizer, and its group keeps the parameters still.
  optim::AdamW<cpu, float> frozen({optim::ParameterGroup<cpu, float>{run.model.weighting_parameters(), 0.0}}, {.lr = 3e-3});
  const std::vector<float> weighting_before = run.model.weighting_parameters().at(0).tensor.to_vector();
  const std::vector<float> model_before = flat_parameters(run.model);
  train::TrainerOptions o;
  o.steps = 2;
  o.progress = nullptr;
  train::Trainer t(run.model, run.optimizer, frozen, optim::ConstantLr(3e-3), run.batches, nullptr, o);
  CHECK(&t.weighting_optimizer() == &frozen);
  t.run();
  CHECK(frozen.step_count() == 2);
  CHECK(frozen.lr() == 3e-3);
  CHECK(run.model.weighting_parameters().at(0).tensor.to_vector() == weighting_before);
  CHECK(flat_parameters(run.model) != model_before);

  // One over other parameters would leave the weighting's untrained: refused.
  Tensor<float> stray = zeros<float>(Shape{2});
  stray.set_requires_grad(true);
  optim::AdamW<cpu, float> elsewhere(nn::ParameterList<float>{{"stray", stray}});
  CHECK(message_of([&] { train::Trainer(run.model, run.optimizer, elsewhere, optim::ConstantLr(3e-3), run.batches, nullptr, o); }) ==
        "[train::Trainer] the weighting optimizer does not update 'weighting.uncertainty.log_variance'; build it over "
        "model.weighting_parameters()");
}

TEST_CASE("Trainer: accumulation and clipping treat a bf16 model's weighting parameters as a float model's one list", "[train][trainer][mixed]") {
  // One step of two micro-batches with SGD, clipped, against the same by hand: both lists' gradients
  // halved, one global norm over both, one scale for both.
  using M = MixedModelWith<mtl::Uncertainty>;
  const double clip = 0.05, lr = 0.1;
  RunOf<M> a(5, 0.0, mtl::Uncertainty(2)), b(5, 0.0, mtl::Uncertainty(2));
  optim::SGD<cpu, bfloat16> sgd_a(a.model.trainable_parameters(), {.lr = lr});
  train::TrainerOptions o;
  o.steps = 1;
  o.accumulation = 2;
  o.clip_norm = clip;
  o.progress = nullptr;
  train::Trainer t(a.model, sgd_a, optim::ConstantLr(lr), a.batches, nullptr, o);  // builds SGD<cpu, float> for the weighting
  t.run();

  optim::SGD<cpu, bfloat16> sgd_b(b.model.trainable_parameters(), {.lr = lr});
  optim::SGD<cpu, float> sgd_w(b.model.weighting_parameters(), {.lr = lr});
  const auto params = b.model.trainable_parameters();
  const auto own = b.model.weighting_parameters();
  for (int i = 0; i < 2; ++i) b.model.weighting().backward(b.model.losses(b.batches.next().to<bfloat16>()), b.model.shared_parameters());
  const auto scale_all = [&](double s) {
    NoGradGuard g;
    for (const auto& p : nn::unique_parameters(params))
      if (p.tensor.grad().defined()) p.tensor.grad() *= static_cast<float>(s);
    for (const auto& p : own) p.tensor.grad() *= static_cast<float>(s);
  };
  scale_all(0.5);
  const double own_norm = optim::grad_norm(own), norm = std::hypot(optim::grad_norm(params), own_norm);
  REQUIRE(own_norm > 0);
  REQUIRE(norm > clip);  // the step is clipped
  scale_all(clip / (norm + 1e-6));
  sgd_b.step();
  sgd_w.step();
  CHECK(flat_parameters(a.model) == flat_parameters(b.model));
}

TEST_CASE("Trainer: a missing or malformed entry of the weighting's state is a clear error naming the file and the entry", "[train][trainer]") {
  SECTION("the weighting optimizer's moments") {
    using M = MixedModelWith<mtl::Uncertainty>;
    const fs::path dir = fresh_dir("damaged_weighting_optimizer");
    train::TrainerOptions o;
    o.steps = 2;
    o.stop_after = 1;
    o.progress = nullptr;
    o.checkpoint_dir = dir;
    {
      RunOf<M> run(3, 0.0, mtl::Uncertainty(2));
      train::Trainer(run.model, run.optimizer, optim::ConstantLr(1e-3), run.batches, nullptr, o).run();
    }
    const fs::path state = dir / "state.safetensors";
    rewrite_state(state, [](std::vector<io::NamedTensor>& tensors, io::Metadata&) {
      std::erase_if(tensors, [](const io::NamedTensor& t) { return t.name == "weighting_optimizer.weighting.uncertainty.log_variance.exp_avg"; });
    });
    RunOf<M> run(3, 0.0, mtl::Uncertainty(2));
    train::Trainer t(run.model, run.optimizer, optim::ConstantLr(1e-3), run.batches, nullptr, o);
    const std::string message = message_of([&] { t.resume(); });
    CHECK_THAT(message, Catch::Contains(state.string()));
    CHECK_THAT(message, Catch::Contains("weighting_optimizer.*"));
    CHECK_THAT(message, Catch::Contains("missing 'weighting.uncertainty.log_variance.exp_avg'"));
  }
  SECTION("an adaptive weighting's statistics") {
    using M = ThreeTaskModel<mtl::DWA>;
    const fs::path dir = fresh_dir("damaged_dwa");
    train::TrainerOptions o;
    o.steps = 3;
    o.stop_after = 2;
    o.progress = nullptr;
    o.checkpoint_dir = dir;
    {
      RunOf<M> run(3, 0.0, mtl::DWA(), three_tasks());
      train::Trainer(run.model, run.optimizer, optim::ConstantLr(1e-3), run.batches, nullptr, o).run();
    }
    const fs::path state = dir / "state.safetensors";
    rewrite_state(state, [](std::vector<io::NamedTensor>&, io::Metadata& m) { m["extra.weighting.dwa.newer"] = "0.5 x 1"; });
    RunOf<M> run(3, 0.0, mtl::DWA(), three_tasks());
    train::Trainer t(run.model, run.optimizer, optim::ConstantLr(1e-3), run.batches, nullptr, o);
    CHECK(message_of([&] { t.resume(); }) == "[train::Trainer] " + state.string() +
                                                  ": [DWA] the saved state's entry 'weighting.dwa.newer' is \"0.5 x 1\": expected numbers separated "
                                                  "by single spaces");
    rewrite_state(state, [](std::vector<io::NamedTensor>&, io::Metadata& m) { m.erase("extra.weighting.dwa.newer"); });
    CHECK(message_of([&] { t.resume(); }) == "[train::Trainer] " + state.string() + ": [DWA] the saved state has no entry 'weighting.dwa.newer'");
  }
}
