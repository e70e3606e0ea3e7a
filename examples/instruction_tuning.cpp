// The seed's example, made real: one Transformer, pre-trained as a small language model, then
// instruction-tuned jointly to translate English into French, summarize a package description and
// judge the sentiment of a review, and asked to predict(text, instruction). CPU only, real data.
// Read it top to bottom: each stage is one numbered section of main().
//
//   1. data            DDTP (Debian's translated package descriptions) and the UCI sentiment
//                      sentences (scripts/fetch-data.sh), prepared into data/instruct/ with fixed
//                      train / validation / test splits
//   2. pre-trained LM  loaded from runs/instruct/<mode>/pretrained/, or pre-trained now
//   3. tasks           the seed's instructions, several templates per task, a mixture with
//                      explicit rates (sentiment drawn more often than its size alone would say)
//   4. model           mtl::Model: the pre-trained decoder as the shared trunk, an LM head (tied to
//                      the embedding) for each text-writing task and a classifier head for
//                      sentiment; the sharing strategy and loss weighting come from CMake options
//                      (CERBERUS_INSTRUCT_SHARING / _WEIGHTING) through a generated header
//   5. training        train::Trainer: AdamW, warm-up + cosine, validation every few steps,
//                      early stopping, a JSONL log, checkpoints it can --resume from exactly
//   6. results         held-out test metrics of the model next to trivial baselines
//   7. predictions     predict(text, instruction) on held-out inputs and on the seed's sentence
//   8. save            the model (task names, sharing and weighting in its metadata) and its tokenizer
//
// Usage: instruction_tuning [--quick] [--data DIR] [--out DIR] [--resume] [--steps N] [--stop-after N] [--seed S]
//   --quick         small model, short runs: under two minutes on 2 cores (about 9 without it)
//   --resume        continue the instruction tuning saved in --out (after --stop-after or a crash)
// Exit status: 0 when every task's validation loss fell and sentiment beat the majority class on
// the test split; 3 when training ran but did not learn that much; 1 on an error.
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

#include "instruct_common.hpp"
#include "instruction_tuning_config.hpp"

using namespace instruct_example;
using Sharing = instruction_tuning_config::Sharing;
using Weighting = instruction_tuning_config::Weighting;

using Model = mtl::Model<nn::Decoder<float>, Sharing, Weighting,                            //
                         mtl::Task<"translate", mtl::LMHead<mtl::Tying::tied>>,              //
                         mtl::Task<"summarize", mtl::LMHead<mtl::Tying::tied>>,              //
                         mtl::Task<"sentiment", mtl::SequenceClassifier<2, mtl::Pooling::mean>>>;

namespace {

// The weightings with one learned value per task are built for the task count; the others take no size.
template <class W>
W make_weighting() {
  if constexpr (std::is_same_v<W, mtl::Uncertainty> || std::is_same_v<W, mtl::GradNorm>) return W(Model::task_count);
  else return W{};
}

}  // namespace

int main(int argc, char** argv) try {
  const auto run_start = Clock::now();
  const Options opt = parse_options("instruction_tuning", argc, argv);
  const Plan plan = plan_for(opt);
  std::printf("cerberus instruction tuning (%s mode): sharing %s, weighting %s, %d threads\n\n", plan.name,
              instruction_tuning_config::sharing_option, instruction_tuning_config::weighting_option, static_cast<int>(num_threads()));

  // ==== 1. Data: three real tasks, split once and for all ============================================
  const std::vector<data::TaskSplits> splits = prepare_data(opt);

  // ==== 2. The pre-trained language model ==============================================================
  PretrainedLm lm = pretrained_lm(opt, plan);
  const tokenizer::Tokenizer& tok = lm.tok;

  // ==== 3. Tasks: instructions, templates, the mixture =================================================
  const instruct::TaskRegistry tasks = instruct::default_tasks();  // the seed's three instructions
  const std::vector<instruct::TaskData> train_tasks = task_data(tasks, splits, data::Split::train);
  const std::vector<instruct::TaskData> valid_tasks = task_data(tasks, splits, data::Split::validation, plan.validation_examples);
  const instruct::Mixture mixture = training_mixture(train_tasks, plan.sentiment_rate);
  std::printf("3. tasks     ");
  for (const auto& leaf : mixture.leaf_rates())
    std::printf("%s %.0f%%  ", leaf.task.name.c_str(), 100 * leaf.rate);
  std::printf("of the training examples, templates drawn per example\n");
  for (const auto& t : train_tasks) std::printf("             %-9s \"%s\"\n", t.spec.name.c_str(), t.spec.instruction.c_str());
  const instruct::CollateOptions collate = collate_options(plan, tok);

  // ==== 4. The multi-task model: the pre-trained decoder as its trunk ====================================
  Generator init(opt.seed + 2);
  const nn::TransformerConfig config = lm.model.decoder.config();
  Model model(std::move(lm.model.decoder), init, make_weighting<Weighting>());
  std::printf("4. model     mtl::Model<nn::Decoder, %s, %s, translate: LM head, summarize: LM head, sentiment: classifier>: %.2fM parameters\n",
              instruction_tuning_config::sharing_option, instruction_tuning_config::weighting_option,
              static_cast<double>(model.num_parameters()) / 1e6);

  // ==== 5. Training ========================================================================================
  fs::create_directories(opt.out_dir);
  instruct::InstructionBatches<tokenizer::Tokenizer> batches(tok, train_tasks, mixture, opt.seed, {.batch_size = plan.batch_size, .collate = collate});
  optim::AdamW<> optimizer(model.trainable_parameters(), {.lr = plan.lr, .beta1 = 0.9, .beta2 = 0.98, .eps = 1e-8, .weight_decay = 0.01});
  const optim::WarmupCosine schedule(plan.lr, plan.warmup_steps, plan.steps, 0.1);
  const std::vector<mtl::Batch<float>> valid_batches = validation_batches(valid_tasks, tok, collate, plan.batch_size);

  train::TrainerOptions to;
  to.steps = plan.steps;
  to.eval_every = plan.eval_every;
  to.patience = 3;
  to.checkpoint_dir = opt.out_dir / "checkpoint";
  to.log_path = opt.out_dir / "log.jsonl";
  to.stop_after = opt.stop_after;
  to.progress = stdout;
  to.progress_every = std::max<std::int64_t>(plan.eval_every / 4, 1);
  to.seed = opt.seed;
  if (!opt.resume) {  // a fresh run: the previous run's checkpoint and log go
    fs::remove_all(to.checkpoint_dir);
    fs::remove(to.log_path);
  }
  auto print_validation = [&](std::int64_t step, const train::Evaluation& e) {
    std::printf("   step %5lld  validation loss  translate %.3f  summarize %.3f  sentiment %.3f   sentiment accuracy %.1f%%\n",
                static_cast<long long>(step), e.metrics.at("translate/loss"), e.metrics.at("summarize/loss"), e.metrics.at("sentiment/loss"),
                100 * e.metrics.at("sentiment/accuracy"));
    std::fflush(stdout);
  };
  std::function<std::int64_t()> current_step;  // the trainer's, once it exists
  auto evaluate = [&](Model& m) {
    const train::Evaluation e = validate(m, valid_batches);
    print_validation(current_step(), e);
    return e;
  };
  train::Trainer trainer(model, optimizer, schedule, batches, evaluate, to);
  current_step = [&] { return trainer.step(); };
  if (opt.resume && !trainer.resume())
    throw FileError("--resume: no saved run in '" + to.checkpoint_dir.string() + "' (expected state.safetensors from an earlier --stop-after)");
  train::Evaluation first;
  {
    NoGradGuard no_grad;
    model.train(false);
    first = validate(model, valid_batches);
    model.train(true);
  }
  std::printf("5. training  %lld steps of %lld examples (max %lld tokens), AdamW lr %.0e, warm-up %lld then cosine; validation on %zu "
              "examples every %lld steps%s\n",
              static_cast<long long>(plan.steps), static_cast<long long>(plan.batch_size), static_cast<long long>(plan.max_length), plan.lr,
              static_cast<long long>(plan.warmup_steps), plan.validation_examples * 3, static_cast<long long>(plan.eval_every),
              opt.resume ? (", resumed at step " + std::to_string(trainer.step())).c_str() : "");
  print_validation(trainer.step(), first);
  const train::TrainResult result = trainer.run();
  if (result.interrupted) {
    std::printf("\nstopped after step %lld of %lld (--stop-after): run again with --resume to continue from %s\n",
                static_cast<long long>(result.steps), static_cast<long long>(plan.steps), to.checkpoint_dir.string().c_str());
    return 0;
  }
  std::printf("             %lld steps, %.2fM tokens in %.0f s (%s tok/s)%s; best validation at step %lld\n", static_cast<long long>(result.steps),
              static_cast<double>(result.tokens_this_run) / 1e6, result.seconds,
              train::human_count(result.seconds > 0 ? static_cast<double>(result.tokens_this_run) / result.seconds : 0).c_str(),
              result.stopped_early ? ", stopped early" : "", static_cast<long long>(result.best_step));
  io::load_checkpoint((to.checkpoint_dir / "best.safetensors").string(), model.trainable_parameters());
  const train::Evaluation last = result.last_evaluation ? *result.last_evaluation : first;

  // ==== 6. Results: held-out test metrics against trivial baselines =====================================
  std::map<std::string, std::vector<instruct::Example>> test;
  for (const auto& t : task_data(tasks, splits, data::Split::test, plan.test_examples)) test[t.spec.name] = t.examples;
  for (const auto& s : splits)
    if (s.name == "sentiment") test["sentiment"] = examples_of(s.test);  // all of it: classification is cheap
  instruct::Predictor predictor(model, tok, tasks, predict_options(plan, tok));
  const auto t_eval = Clock::now();
  std::vector<Row> rows = baseline_rows(splits, test, opt.data_dir);
  rows.push_back(model_row("cerberus (this run)", predictor, test));
  std::printf("\n6. results   on held-out test examples (sentiment %zu, translate %zu, summarize %zu; greedy decoding without repeated 3-grams), %.0f s\n",
              test["sentiment"].size(), test["translate"].size(), test["summarize"].size(), seconds_since(t_eval));
  print_table(rows, table_columns());

  // ==== 7. Predictions: predict(text, instruction) ======================================================
  std::printf("\n7. predictions\n");
  auto show = [&](const std::string& text, const std::string& instruction) {
    const instruct::Prediction p = predictor.predict(text, instruction);
    std::printf("   [%s] %s\n     -> %s", instruction.c_str(), text.c_str(), p.text.c_str());
    if (p.kind == instruct::TaskKind::classification) std::printf("  (p = %.2f)", p.probabilities[static_cast<std::size_t>(p.label)]);
    std::printf("\n");
  };
  for (const auto& [task, examples] : test)
    for (std::size_t i = 0; i < 2 && i < examples.size(); ++i) {
      show(examples[i].input, tasks.at(task).instruction);
      std::printf("        reference: %s\n", examples[i].target.c_str());
    }
  for (const auto& spec : tasks) show("This is a test sentence.", spec.instruction);

  // ==== 8. Save ===========================================================================================
  const fs::path model_file = opt.out_dir / "model.safetensors", tok_file = opt.out_dir / "tokenizer.model";
  std::string task_names;
  for (auto n : Model::task_names()) task_names += (task_names.empty() ? "" : ",") + std::string(n);
  io::save_checkpoint(model_file.string(), model.trainable_parameters(),
                      {{"config", config_json(config)}, {"tasks", task_names}, {"sharing", instruction_tuning_config::sharing_option},
                       {"weighting", instruction_tuning_config::weighting_option}, {"step", std::to_string(result.best_step)}});
  tok.save(tok_file);
  std::printf("\n8. saved     %s (the best validation step's weights), %s\n", model_file.string().c_str(), tok_file.string().c_str());

  // ==== Did it learn? ======================================================================================
  bool learned = true;
  for (const char* task : {"translate", "summarize", "sentiment"}) {
    const std::string key = std::string(task) + "/loss";
    if (!(last.metrics.at(key) < first.metrics.at(key))) {
      std::printf("check: %s validation loss did not fall (%.3f -> %.3f)\n", task, first.metrics.at(key), last.metrics.at(key));
      learned = false;
    }
  }
  const double accuracy = rows.back().scores.at("sentiment accuracy"), majority = rows.front().scores.at("sentiment accuracy");
  if (!(accuracy > majority)) {
    std::printf("check: sentiment accuracy %.1f%% does not beat the majority class (%.1f%%)\n", accuracy, majority);
    learned = false;
  }
  std::printf("\ninstruction_tuning (%s): %lld steps, validation loss translate %.3f -> %.3f, summarize %.3f -> %.3f, sentiment %.3f -> %.3f; "
              "sentiment test accuracy %.1f%% (majority %.1f%%); %.0f s in all\n",
              plan.name, static_cast<long long>(result.steps), first.metrics.at("translate/loss"), last.metrics.at("translate/loss"),
              first.metrics.at("summarize/loss"), last.metrics.at("summarize/loss"), first.metrics.at("sentiment/loss"),
              last.metrics.at("sentiment/loss"), accuracy, majority, seconds_since(run_start));
  return learned ? 0 : 3;
} catch (const Error& e) {
  std::fprintf(stderr, "instruction_tuning: %s\n", e.what());
  return 1;
}
