// Which parameter sharing helps the seed's three tasks? The same pre-trained decoder, the same
// data, the same number of steps and the same optimizer, composed six ways at compile time:
//
//   hard           one trunk for all three tasks (mtl::Hard)
//   soft           a trunk per task, pulled together by an L2 penalty (mtl::Soft<0.01>)
//   hierarchical   the bottom block shared, the rest per group: {translate, summarize}, {sentiment}
//   single-task    three separate models, one task each (the baseline multi-task learning must beat)
//
// then one table of held-out test metrics, with the trivial baselines for scale. Every model is
// trained with train::Trainer and evaluated through instruct::Predictor, as instruction_tuning.cpp
// does (see that file for the stages). It starts from the pre-trained LM that instruction_tuning
// saves in runs/instruct/<mode>/pretrained/ (and pre-trains one when there is none).
//
// Usage: compare_sharing [--quick] [--data DIR] [--out DIR] [--steps N] [--seed S]
// Six trainings: about 6 minutes with --quick on 2 cores, about 40 without.
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "instruct_common.hpp"

using namespace instruct_example;

namespace {

using LM = mtl::LMHead<mtl::Tying::tied>;
using Classifier = mtl::SequenceClassifier<2, mtl::Pooling::mean>;
template <class Sharing, class... Tasks>
using ModelOf = mtl::Model<nn::Decoder<float>, Sharing, mtl::Equal, Tasks...>;
using Translate = mtl::Task<"translate", LM>;
using Summarize = mtl::Task<"summarize", LM>;
using Sentiment = mtl::Task<"sentiment", Classifier>;
using Groups = mtl::Hierarchical<1, mtl::Group<"writing", "translate", "summarize">, mtl::Group<"judging", "sentiment">>;

// Trains a model of type M (whose tasks are a subset of the seed's) from the pre-trained decoder
// and returns its test scores.
template <class M>
Row train_and_evaluate(const std::string& name, const Options& opt, const Plan& plan, const std::vector<data::TaskSplits>& splits,
                       const std::map<std::string, std::vector<instruct::Example>>& all_test) {
  const auto start = Clock::now();
  instruct::TaskRegistry tasks;
  for (auto task : M::task_names()) tasks.add(instruct::default_tasks().at(task));
  PretrainedLm lm = pretrained_lm(opt, plan);  // a fresh copy of the weights for every model
  const tokenizer::Tokenizer& tok = lm.tok;
  const auto train_tasks = task_data(tasks, splits, data::Split::train);
  const auto valid_tasks = task_data(tasks, splits, data::Split::validation, plan.validation_examples);
  const auto collate = collate_options(plan, tok);
  Generator init(opt.seed + 2);
  M model(std::move(lm.model.decoder), init);
  instruct::InstructionBatches<tokenizer::Tokenizer> batches(tok, train_tasks, training_mixture(train_tasks, plan.sentiment_rate), opt.seed,
                                                             {.batch_size = plan.batch_size, .collate = collate});
  optim::AdamW<> optimizer(model.trainable_parameters(), {.lr = plan.lr, .beta1 = 0.9, .beta2 = 0.98, .eps = 1e-8, .weight_decay = 0.01});
  const auto valid_batches = validation_batches(valid_tasks, tok, collate, plan.batch_size);
  train::TrainerOptions to;
  to.steps = plan.steps;
  to.eval_every = plan.eval_every;
  to.checkpoint_dir = opt.out_dir / "compare" / name;
  to.progress = nullptr;
  fs::remove_all(to.checkpoint_dir);
  train::Trainer trainer(model, optimizer, optim::WarmupCosine(plan.lr, plan.warmup_steps, plan.steps, 0.1), batches,
                         [&](M& m) { return validate(m, valid_batches); }, to);
  const train::TrainResult result = trainer.run();
  io::load_checkpoint((to.checkpoint_dir / "best.safetensors").string(), model.trainable_parameters());

  std::map<std::string, std::vector<instruct::Example>> test;
  for (const auto& spec : tasks) test[spec.name] = all_test.at(spec.name);
  instruct::Predictor predictor(model, tok, tasks, predict_options(plan, tok));
  Row row = model_row(name, predictor, test);
  std::printf("   %-28s %.2fM parameters, %lld steps, %.0f s\n", name.c_str(), static_cast<double>(model.num_parameters()) / 1e6,
              static_cast<long long>(result.steps), seconds_since(start));
  std::fflush(stdout);
  return row;
}

}  // namespace

int main(int argc, char** argv) try {
  const auto run_start = Clock::now();
  const Options opt = parse_options("compare_sharing", argc, argv);
  if (opt.resume || opt.stop_after > 0) usage_error("compare_sharing", "--resume and --stop-after are instruction_tuning's options");
  const Plan plan = plan_for(opt);
  std::printf("cerberus: hard, soft and hierarchical sharing against single-task models (%s mode), %d threads\n\n", plan.name,
              static_cast<int>(num_threads()));
  const std::vector<data::TaskSplits> splits = prepare_data(opt);
  pretrained_lm(opt, plan);  // trained once here if missing, then loaded by every model

  std::map<std::string, std::vector<instruct::Example>> test;
  for (const auto& t : task_data(instruct::default_tasks(), splits, data::Split::test, plan.test_examples)) test[t.spec.name] = t.examples;
  for (const auto& s : splits)
    if (s.name == "sentiment") test["sentiment"] = examples_of(s.test);

  std::printf("\ntraining each model for %lld steps of %lld examples:\n", static_cast<long long>(plan.steps), static_cast<long long>(plan.batch_size));
  std::vector<Row> rows = baseline_rows(splits, test, opt.data_dir);
  rows.push_back(train_and_evaluate<ModelOf<mtl::Hard, Translate, Summarize, Sentiment>>("hard", opt, plan, splits, test));
  rows.push_back(train_and_evaluate<ModelOf<mtl::Soft<0.01>, Translate, Summarize, Sentiment>>("soft (L2 0.01)", opt, plan, splits, test));
  rows.push_back(train_and_evaluate<ModelOf<Groups, Translate, Summarize, Sentiment>>("hierarchical (1 shared block)", opt, plan, splits, test));
  // Single-task models: one row, one task each.
  Row single{"single-task models", {}};
  for (Row r : {train_and_evaluate<ModelOf<mtl::Hard, Translate>>("single-task translate", opt, plan, splits, test),
                train_and_evaluate<ModelOf<mtl::Hard, Summarize>>("single-task summarize", opt, plan, splits, test),
                train_and_evaluate<ModelOf<mtl::Hard, Sentiment>>("single-task sentiment", opt, plan, splits, test)})
    single.scores.insert(r.scores.begin(), r.scores.end());
  rows.push_back(single);

  std::printf("\nheld-out test metrics (sentiment %zu, translate %zu, summarize %zu examples; greedy decoding)\n", test["sentiment"].size(),
              test["translate"].size(), test["summarize"].size());
  print_table(rows, table_columns());
  std::printf("\ncompare_sharing (%s): %.0f s in all\n", plan.name, seconds_since(run_start));
  return 0;
} catch (const Error& e) {
  std::fprintf(stderr, "compare_sharing: %s\n", e.what());
  return 1;
}
