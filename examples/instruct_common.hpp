// What the instruction-tuning examples share (instruction_tuning.cpp, compare_sharing.cpp): the
// options, the sizes of each mode, the real data of the seed's three tasks, the pre-trained
// language model they start from (trained here when no checkpoint exists), the validation used
// while training, and the held-out evaluation against trivial baselines.
//
// Stages, in the order the examples run them:
//   prepare_data     data/ (scripts/fetch-data.sh) -> data/instruct/<task>/{train,validation,test}.jsonl,
//                    read back through the JSONL reader (rejected records are counted and shown)
//   pretrained_lm    runs/instruct/<mode>/pretrained/: a SentencePiece tokenizer and a GPT-style
//                    nn::DecoderOnly trained on State of the Union addresses, Moby-Dick and the
//                    English and French DDTP descriptions of TRAINING packages only
//   task_data        the three tasks as instruct::TaskData (templates, examples, answer mode)
//   validation_*     per-task validation loss and sentiment accuracy, for the trainer
//   evaluate_test    held-out metrics of a model and of the baselines, one table
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cerberus/cerberus.hpp"
#include "cerberus/data/instruction_data.hpp"
#include "cerberus/data/lm_batches.hpp"
#include "cerberus/data/sentiment.hpp"
#include "cerberus/data/text_corpus.hpp"
#include "cerberus/eval.hpp"
#include "cerberus/instruct.hpp"
#include "cerberus/instruct/predict.hpp"
#include "cerberus/io.hpp"
#include "cerberus/mtl.hpp"
#include "cerberus/mtl/weighting.hpp"
#include "cerberus/tokenizer.hpp"
#include "cerberus/train/progress.hpp"
#include "cerberus/train/trainer.hpp"
#include "example_support.hpp"

namespace instruct_example {

using namespace cerberus;
namespace fs = std::filesystem;
using Id = std::int64_t;
using Clock = std::chrono::steady_clock;

using example_support::seconds_since;
using example_support::token_stream;
using example_support::usage_error;

// ---- options and modes ----------------------------------------------------------------------------
using Options = example_support::RunOptions;

struct Plan {
  const char* name;
  // Pre-training.
  int vocab_size;
  std::int64_t tokenizer_sentences;
  std::size_t ddtp_pretrain_documents;  // DDTP descriptions (per language) in the pre-training text
  nn::TransformerConfig model;
  Index pretrain_batch, pretrain_seq;
  std::int64_t pretrain_steps;
  double pretrain_lr;
  // Instruction tuning.
  Index batch_size, max_length;
  std::int64_t steps, warmup_steps, eval_every;
  double lr;
  std::size_t validation_examples;  // per task, for the validation loss while training
  std::size_t test_examples;        // per task, for the held-out table (sentiment: all of its test split)
  double sentiment_rate;            // the mixture's rate for sentiment (translate and summarize: 1)
  Index max_new_tokens;
};

inline Plan plan_for(const Options& o) {
  // GPT-style trunk: learned positions, pre-LN LayerNorm, GELU MLP, LM head tied to the embedding.
  nn::TransformerConfig c;
  c.norm = nn::NormKind::layer;
  c.mlp = nn::MlpKind::gelu;
  c.position = nn::PositionKind::learned;
  c.tie_embeddings = true;
  c.bias = true;
  c.dropout = 0.0;
  Plan p{};
  if (o.quick) {
    c.vocab_size = 3000, c.d_model = 128, c.n_layers = 2, c.n_heads = 4, c.d_ff = 512, c.max_seq_len = 128;
    p = {.name = "quick", .vocab_size = 3000, .tokenizer_sentences = 40000, .ddtp_pretrain_documents = 8000, .model = c,
         .pretrain_batch = 16, .pretrain_seq = 64, .pretrain_steps = 250, .pretrain_lr = 3e-3,
         .batch_size = 16, .max_length = 96, .steps = 600, .warmup_steps = 50, .eval_every = 200, .lr = 2e-3,
         .validation_examples = 48, .test_examples = 40, .sentiment_rate = 2.0, .max_new_tokens = 24};
  } else {
    c.vocab_size = 4000, c.d_model = 192, c.n_layers = 4, c.n_heads = 4, c.d_ff = 768, c.max_seq_len = 128;
    p = {.name = "full", .vocab_size = 4000, .tokenizer_sentences = 120000, .ddtp_pretrain_documents = 1000000, .model = c,
         .pretrain_batch = 16, .pretrain_seq = 128, .pretrain_steps = 700, .pretrain_lr = 2e-3,
         .batch_size = 16, .max_length = 128, .steps = 1200, .warmup_steps = 60, .eval_every = 200, .lr = 1e-3,
         .validation_examples = 128, .test_examples = 150, .sentiment_rate = 1.0, .max_new_tokens = 32};
  }
  if (o.steps > 0) {
    p.steps = o.steps;
    p.warmup_steps = std::min(p.warmup_steps, std::max<std::int64_t>(p.steps / 10, 1));
    p.eval_every = std::min(p.eval_every, p.steps);
  }
  return p;
}

inline Options parse_options(const char* program, int argc, char** argv) {
  Options o = example_support::parse_run_options(program, argc, argv, "runs/instruct");
  if (o.steps == 1) usage_error(program, "--steps must be at least 2 (one warm-up step, then the schedule)");
  return o;
}

// ---- 1. data ----------------------------------------------------------------------------------------
// Prepares data/instruct from the fetched sources (only what is missing or stale) and reads the
// three tasks back; prints one line per task.
inline std::vector<data::TaskSplits> prepare_data(const Options& o) {
  const fs::path cache = o.data_dir / "instruct";
  for (const char* needed : {"ddtp/Translation-en", "ddtp/Translation-fr", "sentiment/amazon.json"})
    if (!fs::exists(o.data_dir / needed))
      throw FileError("'" + (o.data_dir / needed).string() + "' not found: run scripts/fetch-data.sh " + o.data_dir.string() +
                      " first (or pass --data DIR)");
  const data::PreparationReport prepared = data::prepare_instruction_data(o.data_dir, cache);
  std::vector<data::TaskSplits> out;
  for (const data::PreparedTask& t : prepared.tasks) {
    data::LoadedTask loaded = data::read_prepared_task(cache, t.name);
    std::size_t rejected = 0;
    for (const auto& r : loaded.reports) rejected += r.records_rejected;
    std::size_t filtered = 0;
    for (const auto& [reason, n] : t.filtered) filtered += n;
    std::printf("1. data      %-9s %6zu train %5zu validation %5zu test  (%s; %zu left out by the filters, %zu rejected records)\n",
                t.name.c_str(), loaded.splits.train.size(), loaded.splits.validation.size(), loaded.splits.test.size(),
                t.rebuilt ? "prepared now" : "cached", filtered, rejected);
    out.push_back(std::move(loaded.splits));
  }
  std::printf("             %s (%.1f s)\n", cache.string().c_str(), prepared.seconds);
  return out;
}

// ---- 2. the pre-trained language model ----------------------------------------------------------------
struct PretrainedLm {
  tokenizer::Tokenizer tok;
  nn::DecoderOnly<float> model;
};

inline std::string config_json(const nn::TransformerConfig& c) { return io::to_json(c).dump(); }

// Loads runs/.../pretrained/ when it holds a model of this mode's shape; otherwise pre-trains one
// (tokenizer, then next-token prediction on the text) and saves it there.
inline PretrainedLm pretrained_lm(const Options& o, const Plan& plan) {
  const fs::path dir = o.out_dir / "pretrained";
  const fs::path tok_file = dir / "tokenizer.model", model_file = dir / "model.safetensors";
  nn::TransformerConfig config = plan.model;
  if (fs::exists(tok_file) && fs::exists(model_file)) {
    tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(tok_file);
    config.vocab_size = tok.vocab_size();
    const io::Metadata meta = io::SafetensorsFile(model_file.string()).metadata();
    const auto saved = meta.find("config");
    if (saved != meta.end() && saved->second == config_json(config)) {
      Generator init(o.seed);
      nn::DecoderOnly<float> model(config, init);
      io::load_checkpoint(model_file.string(), model.named_parameters());
      std::printf("2. pre-trained LM  loaded %s (%.2fM parameters, validation perplexity %s when saved)\n", model_file.string().c_str(),
                  static_cast<double>(model.num_parameters()) / 1e6, meta.count("validation_perplexity") ? meta.at("validation_perplexity").c_str() : "?");
      return {std::move(tok), std::move(model)};
    }
    std::printf("2. pre-trained LM  %s holds another shape: pre-training again\n", model_file.string().c_str());
  }
  const auto t0 = Clock::now();
  fs::create_directories(dir);
  // Text: SOTU + Moby-Dick, and the DDTP descriptions (English and French) of training packages,
  // so that pre-training never reads a validation or test package of translate or summarize.
  std::vector<data::Document> docs;
  for (const char* corpus : {"sotu", "moby-dick"}) {
    const fs::path d = o.data_dir / "pretrain" / corpus;
    if (!fs::is_directory(d)) throw FileError("'" + d.string() + "' not found: run scripts/fetch-data.sh " + o.data_dir.string() + " first");
    for (auto& doc : data::read_text_documents(d)) docs.push_back(std::move(doc));
  }
  {
    std::vector<data::Document> ddtp = data::read_ddtp_pretraining_documents(o.data_dir);
    // Keep the mode's share of each language, interleaved so a cut keeps both.
    std::vector<data::Document> en, fr;
    for (auto& d : ddtp) (d.name.ends_with(".fr") ? fr : en).push_back(std::move(d));
    for (auto* lang : {&en, &fr})
      for (std::size_t i = 0; i < lang->size() && i < plan.ddtp_pretrain_documents; ++i) docs.push_back(std::move((*lang)[i]));
  }
  auto [train_docs, valid_docs] = data::split_documents(std::move(docs), 0.02, o.seed);

  tokenizer::TrainerOptions t;
  t.vocab_size = plan.vocab_size;
  t.model_type = tokenizer::ModelType::unigram;
  t.pad_id = 0, t.unk_id = 1, t.bos_id = 2, t.eos_id = 3;
  t.user_defined_symbols = {"<sep>"};  // between an instruction's prompt and its answer
  t.input_sentence_size = plan.tokenizer_sentences;
  t.seed = static_cast<std::uint32_t>(o.seed);
  const std::vector<std::string> sentences = data::document_sentences(train_docs);
  auto trained = tokenizer::train(t, sentences);
  tokenizer::Tokenizer tok = std::move(trained.tokenizer);
  tok.save(tok_file);
  const std::vector<Id> train_stream = token_stream(tok, train_docs), valid_stream = token_stream(tok, valid_docs);
  std::printf("2. pre-trained LM  none in %s: pre-training one. Tokenizer: %lld pieces from %zu sentences; text: %.1fM train / %.2fM "
              "validation tokens (%.0f s)\n",
              dir.string().c_str(), static_cast<long long>(tok.vocab_size()), sentences.size(), static_cast<double>(train_stream.size()) / 1e6,
              static_cast<double>(valid_stream.size()) / 1e6, seconds_since(t0));

  config.vocab_size = tok.vocab_size();
  Generator init(o.seed);
  nn::DecoderOnly<float> model(config, init);
  const auto params = model.named_parameters();
  optim::AdamW<> optimizer(params, {.lr = plan.pretrain_lr, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1});
  const optim::WarmupCosine schedule(plan.pretrain_lr, std::max<std::int64_t>(plan.pretrain_steps / 10, 1), plan.pretrain_steps, 0.1);
  Generator batch_gen(o.seed + 1);
  const auto valid_batches = data::evenly_spaced_lm_batches(valid_stream, 6, plan.pretrain_batch, plan.pretrain_seq);
  auto validation_loss = [&] {
    NoGradGuard no_grad;
    model.eval();
    double total = 0;
    for (const auto& b : valid_batches) total += model.loss(b.inputs, b.targets).item();
    model.train();
    return total / static_cast<double>(valid_batches.size());
  };
  const double before = validation_loss();
  train::ProgressBar bar(plan.pretrain_steps, stdout);
  const auto t1 = Clock::now();
  while (optimizer.step_count() < plan.pretrain_steps) {
    const data::LmBatch b = data::random_lm_batch(train_stream, plan.pretrain_batch, plan.pretrain_seq, batch_gen);
    optim::apply_schedule(schedule, optimizer);
    const Tensor<float> loss = model.loss(b.inputs, b.targets);
    loss.backward();
    optim::clip_grad_norm(params, 1.0);
    optimizer.step();
    optimizer.zero_grad();
    bar.update(optimizer.step_count(), loss.item(), plan.pretrain_batch * plan.pretrain_seq);
  }
  const double after = validation_loss();
  char ppl[32];
  std::snprintf(ppl, sizeof ppl, "%.1f", std::exp(after));
  io::save_checkpoint(model_file.string(), params, {{"config", config_json(config)}, {"validation_perplexity", ppl}});
  std::printf("                   %lld steps in %.0f s: validation perplexity %.1f -> %.1f; saved %s (%.2fM parameters)\n",
              static_cast<long long>(plan.pretrain_steps), seconds_since(t1), std::exp(before), std::exp(after), model_file.string().c_str(),
              static_cast<double>(model.num_parameters()) / 1e6);
  return {std::move(tok), std::move(model)};
}

// ---- 3. tasks ------------------------------------------------------------------------------------------
inline std::vector<instruct::Example> examples_of(const std::vector<data::TextExample>& v, std::size_t limit = data::no_limit) {
  std::vector<instruct::Example> out;
  for (std::size_t i = 0; i < v.size() && i < limit; ++i) out.push_back({v[i].input, v[i].target});
  return out;
}

// The seed's three tasks (instruct::default_tasks(): its instructions, several templates each),
// in the model's task order; sentiment is answered by its classifier head.
inline std::vector<instruct::TaskData> task_data(const instruct::TaskRegistry& tasks, const std::vector<data::TaskSplits>& splits,
                                                 data::Split which, std::size_t limit = data::no_limit) {
  std::vector<instruct::TaskData> out;
  for (const instruct::TaskSpec& spec : tasks) {
    const auto it = std::find_if(splits.begin(), splits.end(), [&](const data::TaskSplits& s) { return s.name == spec.name; });
    if (it == splits.end()) throw ValueError("no prepared data for task '" + spec.name + "'");
    const bool head = spec.kind == instruct::TaskKind::classification;
    out.push_back({spec, examples_of(it->split(which), limit), head ? instruct::Answer::label_only : instruct::Answer::text});
  }
  return out;
}

// Explicit rates: translate 1, summarize 1, sentiment `sentiment_rate`. Examples-proportional
// mixing would draw sentiment (about 2.7k examples, next to about 50k of each other task) about
// once in forty; its classifier needs a few thousand examples before it rises above chance,
// so the quick mode draws it half of the time.
inline instruct::Mixture training_mixture(const std::vector<instruct::TaskData>& tasks, double sentiment_rate) {
  instruct::Mixture m("seed tasks");
  for (std::size_t i = 0; i < tasks.size(); ++i)
    m.add({tasks[i].spec.name, static_cast<std::int64_t>(i), static_cast<std::int64_t>(tasks[i].examples.size())},
          tasks[i].spec.name == "sentiment" ? sentiment_rate : 1.0);
  return m;
}

inline instruct::CollateOptions collate_options(const Plan& plan, const tokenizer::Tokenizer& tok) {
  instruct::CollateOptions c;
  c.max_length = plan.max_length;
  c.sep_id = tok.id_of("<sep>");
  c.overlong_target = instruct::OverlongTarget::truncate_target;
  return c;
}

// How the examples predict: prompts built as in training; greedy decoding that never repeats a
// 3-gram of its own output and discourages its own repeated tokens (x 1/1.2), while the input's
// words stay free to copy (names, phrases a summary lifts).
inline instruct::PredictOptions predict_options(const Plan& plan, const tokenizer::Tokenizer& tok) {
  instruct::PredictOptions po;
  po.collate = collate_options(plan, tok);
  po.generation.max_new_tokens = plan.max_new_tokens;
  po.generation.no_repeat_ngram_size = 3;
  po.generation.repetition_penalty = 1.2;
  po.generation.repetition_includes_prompt = false;
  return po;
}

// ---- 4. validation while training -----------------------------------------------------------------------
// Fixed validation batches (template 0), made once.
inline std::vector<mtl::Batch<float>> validation_batches(const std::vector<instruct::TaskData>& tasks, const tokenizer::Tokenizer& tok,
                                                         const instruct::CollateOptions& collate, Index batch_size) {
  std::vector<mtl::Batch<float>> out;
  for (std::size_t k = 0; k < tasks.size(); ++k) {
    std::vector<instruct::TextPair> pairs;
    for (const auto& ex : tasks[k].examples) {
      const instruct::Rendered r = instruct::render(tasks[k].spec, 0, ex);
      pairs.push_back({r.prompt, tasks[k].answer == instruct::Answer::label_only ? std::string() : r.target, static_cast<std::int64_t>(k), r.label});
      if (static_cast<Index>(pairs.size()) == batch_size) {
        out.push_back(instruct::collate_lm(pairs, tok, collate).to_mtl());
        pairs.clear();
      }
    }
    if (!pairs.empty()) out.push_back(instruct::collate_lm(pairs, tok, collate).to_mtl());
  }
  return out;
}

// Per task: mean validation loss; sentiment also its accuracy from the head. Score: minus the mean
// of the task losses (each task counts the same, whatever its size).
template <class Model>
train::Evaluation validate(Model& model, const std::vector<mtl::Batch<float>>& batches) {
  constexpr std::size_t n = Model::task_count;
  std::vector<double> loss(n, 0.0), count(n, 0.0);
  double correct = 0, seen = 0;
  for (const auto& b : batches) {
    const auto out = model.forward_with_losses(b);  // one trunk pass for the losses and the logits
    for (std::size_t k = 0; k < n; ++k)
      if (out.losses[k]) loss[k] += out.losses[k]->item(), count[k] += 1;
    for (std::size_t k = 0; k < n; ++k) {
      if (!out.outputs[k] || out.outputs[k]->rank() != 2) continue;  // classifier heads: [B_k, classes]
      const auto logits = out.outputs[k]->contiguous().to_vector();
      const auto rows = out.rows[k]->to_vector();
      const auto labels = b.labels.to_vector();
      const Index classes = out.outputs[k]->size(1);
      for (std::size_t r = 0; r < rows.size(); ++r) {
        const auto first = logits.begin() + static_cast<std::ptrdiff_t>(r * static_cast<std::size_t>(classes));
        const auto best = std::max_element(first, first + classes) - first;
        correct += best == labels[static_cast<std::size_t>(rows[r])];
        seen += 1;
      }
    }
  }
  train::Evaluation e;
  double sum = 0;
  for (std::size_t k = 0; k < n; ++k) {
    const double l = count[k] > 0 ? loss[k] / count[k] : NAN;
    e.metrics[std::string(Model::task_names()[k]) + "/loss"] = l;
    sum += l;
  }
  if (seen > 0) e.metrics["sentiment/accuracy"] = correct / seen;
  e.score = -sum / static_cast<double>(n);
  return e;
}

// ---- 5. held-out evaluation ------------------------------------------------------------------------------
struct Row {
  std::string system;
  std::map<std::string, double> scores;  // metric -> value
};

// The first `words` whitespace-separated words of text.
inline std::string first_words(std::string_view text, std::size_t words) { return data::first_words(text, words); }

// Baselines on the test examples: sentiment majority class (of the training labels) and the AFINN
// lexicon sum; translation: copying the input; summarization: the input's first N words, N the
// median length of the training summaries.
inline std::vector<Row> baseline_rows(const std::vector<data::TaskSplits>& splits, const std::map<std::string, std::vector<instruct::Example>>& test,
                                      const fs::path& data_dir) {
  std::vector<Row> rows;
  auto split_named = [&](std::string_view name) -> const data::TaskSplits& {
    return *std::find_if(splits.begin(), splits.end(), [&](const auto& s) { return s.name == name; });
  };
  {
    const auto& train = split_named("sentiment").train;
    std::size_t positive = 0;
    for (const auto& e : train) positive += e.target == "positive";
    const std::string majority = 2 * positive >= train.size() ? "positive" : "negative";
    const auto lexicon = data::read_afinn(data_dir / "sentiment" / "afinn-165.json");
    std::vector<std::int64_t> ref, maj, afinn;
    for (const auto& e : test.at("sentiment")) {
      ref.push_back(e.target == "positive");
      maj.push_back(majority == "positive");
      afinn.push_back(data::afinn_score(e.input, lexicon) > 0);
    }
    rows.push_back({"majority class (" + majority + ")", {{"sentiment accuracy", 100 * evaluation::accuracy(maj, ref)}, {"sentiment macro-F1", 100 * evaluation::macro_f1(maj, ref)}}});
    rows.push_back({"AFINN-165 lexicon sum", {{"sentiment accuracy", 100 * evaluation::accuracy(afinn, ref)}, {"sentiment macro-F1", 100 * evaluation::macro_f1(afinn, ref)}}});
  }
  {
    std::vector<std::string> hyps;
    std::vector<std::vector<std::string>> refs(1);  // one reference stream: refs[0][i] for hypothesis i
    for (const auto& e : test.at("translate")) hyps.push_back(e.input), refs[0].push_back(e.target);
    rows.push_back({"copy the input", {{"translate BLEU", evaluation::corpus_bleu(hyps, refs).score}, {"translate chrF", evaluation::corpus_chrf(hyps, refs)}}});
  }
  {
    std::vector<std::size_t> lengths;
    for (const auto& e : split_named("summarize").train) lengths.push_back(data::count_words(e.target));
    std::nth_element(lengths.begin(), lengths.begin() + static_cast<std::ptrdiff_t>(lengths.size() / 2), lengths.end());
    const std::size_t n = lengths.empty() ? 8 : lengths[lengths.size() / 2];
    std::vector<std::string> hyps, refs;
    for (const auto& e : test.at("summarize")) hyps.push_back(first_words(e.input, n)), refs.push_back(e.target);
    const evaluation::RougeScores r = evaluation::mean_rouge(hyps, refs);
    rows.push_back({"first " + std::to_string(n) + " words", {{"summarize ROUGE-1", 100 * r.rouge1.fmeasure}, {"summarize ROUGE-2", 100 * r.rouge2.fmeasure},
                                                             {"summarize ROUGE-L", 100 * r.rougeL.fmeasure}}});
  }
  return rows;
}

// A model's scores on the test examples, through the Predictor (greedy decoding with the KV cache
// where the sharing strategy allows it; sentiment through its head).
template <class Predictor>
Row model_row(std::string name, Predictor& predictor, const std::map<std::string, std::vector<instruct::Example>>& test) {
  Row row{std::move(name), {}};
  for (const auto& [task, examples] : test) {
    if (examples.empty()) continue;
    std::vector<std::string> inputs;
    for (const auto& e : examples) inputs.push_back(e.input);
    const std::vector<instruct::Prediction> out = predictor.predict_many(task, inputs);
    if (task == "sentiment") {
      std::vector<std::int64_t> pred, ref;
      for (std::size_t i = 0; i < out.size(); ++i) pred.push_back(out[i].label), ref.push_back(examples[i].target == "positive");
      // Options are {"negative", "positive"}: label 1 = positive.
      row.scores["sentiment accuracy"] = 100 * evaluation::accuracy(pred, ref);
      row.scores["sentiment macro-F1"] = 100 * evaluation::macro_f1(pred, ref);
    } else if (task == "translate") {
      std::vector<std::string> hyps;
      std::vector<std::vector<std::string>> refs(1);  // one reference stream
      for (std::size_t i = 0; i < out.size(); ++i) hyps.push_back(out[i].text), refs[0].push_back(examples[i].target);
      row.scores["translate BLEU"] = evaluation::corpus_bleu(hyps, refs).score;
      row.scores["translate chrF"] = evaluation::corpus_chrf(hyps, refs);
    } else {
      std::vector<std::string> hyps, refs;
      for (std::size_t i = 0; i < out.size(); ++i) hyps.push_back(out[i].text), refs.push_back(examples[i].target);
      const evaluation::RougeScores r = evaluation::mean_rouge(hyps, refs);
      row.scores["summarize ROUGE-1"] = 100 * r.rouge1.fmeasure;
      row.scores["summarize ROUGE-2"] = 100 * r.rouge2.fmeasure;
      row.scores["summarize ROUGE-L"] = 100 * r.rougeL.fmeasure;
    }
  }
  return row;
}

inline void print_table(const std::vector<Row>& rows, const std::vector<std::string>& columns) {
  std::printf("   %-34s", "system");
  for (const auto& c : columns) std::printf(" %*s", static_cast<int>(std::max<std::size_t>(c.size(), 6)), c.c_str());
  std::printf("\n");
  for (const auto& r : rows) {
    std::printf("   %-34s", r.system.c_str());
    for (const auto& c : columns) {
      const int w = static_cast<int>(std::max<std::size_t>(c.size(), 6));
      const auto it = r.scores.find(c);
      if (it == r.scores.end()) std::printf(" %*s", w, "-");
      else std::printf(" %*.1f", w, it->second);
    }
    std::printf("\n");
  }
}

inline const std::vector<std::string>& table_columns() {
  static const std::vector<std::string> c = {"sentiment accuracy", "sentiment macro-F1", "translate BLEU", "translate chrF",
                                             "summarize ROUGE-1", "summarize ROUGE-2", "summarize ROUGE-L"};
  return c;
}

}  // namespace instruct_example
