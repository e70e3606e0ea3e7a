// Pre-training a small GPT-style language model on real English text, on the CPU, end to end.
// Read it top to bottom: each stage is one numbered section of main().
//
//   1. read the text     State of the Union addresses + Moby-Dick (scripts/fetch-data.sh), split
//                        by document into train / validation
//   2. tokenizer         a SentencePiece model trained on the training text (reused when it exists)
//   3. batches           one id stream per split; B random windows of T + 1 tokens per step
//   4. model, training   nn::DecoderOnly + AdamW (warm-up + cosine, gradient clipping), with the
//                        validation loss / perplexity measured every few steps on fixed batches
//   5. checkpoint        weights + config, and the optimizer / RNG / step for an exact --resume
//   6. samples           continuations of a few prompts with nn::generate
//   7. summary           one line: steps, tokens, losses, perplexity, speed
//
// Usage: pretrain [--quick] [--data DIR] [--out DIR] [--resume] [--steps N] [--stop-after N] [--seed S]
//   --quick         a small model and a short run (under two minutes on 2 cores)
//   --data DIR      what scripts/fetch-data.sh filled (default data/)
//   --out DIR       where the tokenizer, checkpoint and training state go (default runs/pretrain/quick
//                   or runs/pretrain/full, so the two modes never overwrite each other)
//   --resume        continue the run saved in --out exactly where it stopped
//   --steps N       train for N steps instead of the mode's default
//   --stop-after N  stop (and save) after step N, as if interrupted; --resume continues from there
// Run: scripts/run-example.sh   (or build the `pretrain` target and run build/release/examples/pretrain)
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>

#include "cerberus/cerberus.hpp"
#include "cerberus/data/lm_batches.hpp"
#include "cerberus/data/text_corpus.hpp"
#include "cerberus/tokenizer.hpp"
#include "cerberus/train/progress.hpp"
#include "example_support.hpp"

using namespace cerberus;
namespace fs = std::filesystem;
using Id = std::int64_t;

namespace {

// ---- options --------------------------------------------------------------------------------------
using Options = example_support::RunOptions;
using example_support::seconds_since;
using example_support::token_stream;

// Everything a mode decides: data, tokenizer, model and schedule sizes.
struct Plan {
  const char* name;
  int vocab_size;                  // SentencePiece pieces
  std::int64_t tokenizer_sentences;  // sentences SentencePiece samples to train on
  nn::TransformerConfig model;
  Index batch_size, seq_len;
  std::int64_t steps, warmup_steps, eval_every;
  Index eval_batches;
  double peak_lr;
  Index sample_tokens;
};

Plan plan_for(const Options& o) {
  // GPT-style: learned positions, pre-LN LayerNorm, GELU MLP, LM head tied to the token embedding.
  nn::TransformerConfig c;
  c.norm = nn::NormKind::layer;
  c.mlp = nn::MlpKind::gelu;
  c.position = nn::PositionKind::learned;
  c.tie_embeddings = true;
  c.bias = true;
  c.dropout = 0.0;
  Plan p{};
  if (o.quick) {
    c.vocab_size = 2000, c.d_model = 128, c.n_layers = 2, c.n_heads = 4, c.d_ff = 512, c.max_seq_len = 64;
    p = {.name = "quick", .vocab_size = 2000, .tokenizer_sentences = 30000, .model = c, .batch_size = 16, .seq_len = 64,
         .steps = 300, .warmup_steps = 30, .eval_every = 50, .eval_batches = 8, .peak_lr = 3e-3, .sample_tokens = 40};
  } else {
    c.vocab_size = 4000, c.d_model = 192, c.n_layers = 4, c.n_heads = 4, c.d_ff = 768, c.max_seq_len = 128;
    p = {.name = "full", .vocab_size = 4000, .tokenizer_sentences = 100000, .model = c, .batch_size = 16, .seq_len = 128,
         .steps = 1000, .warmup_steps = 60, .eval_every = 100, .eval_batches = 8, .peak_lr = 2e-3, .sample_tokens = 80};
  }
  if (o.steps > 0) {
    p.steps = o.steps;
    p.warmup_steps = std::min(p.warmup_steps, std::max<std::int64_t>(p.steps / 10, 1));
    p.eval_every = std::min(p.eval_every, p.steps);
  }
  return p;
}

// ---- 1. text ----------------------------------------------------------------------------------------
// One corpus folder as documents, with a message that says how to get it when it is missing.
std::vector<data::Document> read_corpus(const fs::path& data_dir, const char* sub) {
  const fs::path dir = data_dir / "pretrain" / sub;
  if (!fs::is_directory(dir))
    throw FileError("[pretrain] '" + dir.string() + "' not found (expected a folder of *.txt files): run scripts/fetch-data.sh " +
                    data_dir.string() + " first, or pass --data DIR");
  return data::read_text_documents(dir);
}

std::size_t bytes_of(const std::vector<data::Document>& docs) {
  std::size_t n = 0;
  for (const auto& d : docs)
    for (const auto& p : d.paragraphs) n += p.size() + 1;
  return n;
}

// ---- 2. tokenizer -----------------------------------------------------------------------------------
tokenizer::TrainerOptions tokenizer_options(const Plan& plan, std::uint64_t seed) {
  tokenizer::TrainerOptions t;
  t.vocab_size = plan.vocab_size;
  t.model_type = tokenizer::ModelType::unigram;
  t.pad_id = 0, t.unk_id = 1, t.bos_id = 2, t.eos_id = 3;
  // Reserved now so that instruction tuning can use them later without changing the vocabulary.
  t.user_defined_symbols = {"<sep>"};
  t.input_sentence_size = plan.tokenizer_sentences;
  t.seed = static_cast<std::uint32_t>(seed);
  return t;
}

// Why an existing model does not fit the options, or "" when it does.
std::string tokenizer_mismatch(const tokenizer::Tokenizer& tok, const tokenizer::TrainerOptions& t) {
  if (tok.vocab_size() != t.vocab_size)
    return "it has " + std::to_string(tok.vocab_size()) + " pieces, this run wants " + std::to_string(t.vocab_size);
  for (const std::string& s : t.user_defined_symbols)
    if (!tok.contains(s)) return "it lacks the symbol " + s;
  if (!tok.has_pad() || tok.pad_id() != t.pad_id || tok.unk_id() != t.unk_id || !tok.has_bos() || tok.bos_id() != t.bos_id ||
      !tok.has_eos() || tok.eos_id() != t.eos_id)
    return "its special ids differ from pad/unk/bos/eos = " + std::to_string(t.pad_id) + "/" + std::to_string(t.unk_id) + "/" +
           std::to_string(t.bos_id) + "/" + std::to_string(t.eos_id);
  return "";
}

// ---- 4. evaluation ------------------------------------------------------------------------------------
// Mean next-token loss over fixed batches (every batch has B * T targets, so the mean of means is exact).
double evaluate(nn::DecoderOnly<float>& model, const std::vector<data::LmBatch>& batches) {
  NoGradGuard no_grad;
  model.eval();
  double total = 0;
  for (const auto& b : batches) total += static_cast<double>(model.loss(b.inputs, b.targets).item());
  model.train();
  return total / static_cast<double>(batches.size());
}

// ---- 5. checkpoint ------------------------------------------------------------------------------------
struct RunFiles {
  fs::path tokenizer, model, state;
};

std::string config_json(const nn::TransformerConfig& c) { return io::to_json(c).dump(); }

}  // namespace

int main(int argc, char** argv) try {
  const auto run_start = std::chrono::steady_clock::now();
  const Options opt = example_support::parse_run_options("pretrain", argc, argv, "runs/pretrain");
  const Plan plan = plan_for(opt);
  const RunFiles files{opt.out_dir / "tokenizer.model", opt.out_dir / "model.safetensors", opt.out_dir / "training_state.safetensors"};
  std::printf("cerberus pre-training example (%s mode) on %d threads\n\n", plan.name, static_cast<int>(num_threads()));

  // ==== 1. Read the text: State of the Union addresses and Moby-Dick, split by document =============
  auto t0 = std::chrono::steady_clock::now();
  std::vector<data::Document> train_docs, valid_docs;
  for (const char* corpus : {"sotu", "moby-dick"}) {
    // Split each corpus on its own, so validation holds some of both kinds of English.
    auto [train, valid] = data::split_documents(read_corpus(opt.data_dir, corpus), 0.05, opt.seed);
    std::printf("1. text      %-9s %3zu documents: %3zu train, %2zu validation (%.1f MB)\n", corpus, train.size() + valid.size(),
                train.size(), valid.size(), static_cast<double>(bytes_of(train) + bytes_of(valid)) / 1e6);
    for (auto& d : train) train_docs.push_back(std::move(d));
    for (auto& d : valid) valid_docs.push_back(std::move(d));
  }

  // ==== 2. Tokenizer: SentencePiece, trained on the training documents only ===========================
  fs::create_directories(opt.out_dir);
  const tokenizer::TrainerOptions tok_options = tokenizer_options(plan, opt.seed);
  tokenizer::Tokenizer tok;
  std::string why_retrain = "none saved yet";
  if (fs::exists(files.tokenizer)) {
    tok = tokenizer::Tokenizer::load(files.tokenizer);
    why_retrain = tokenizer_mismatch(tok, tok_options);
  }
  if (!why_retrain.empty()) {
    if (opt.resume && !fs::exists(files.tokenizer))
      throw FileError("[pretrain] --resume: '" + files.tokenizer.string() + "' not found (expected the tokenizer of an earlier run in " +
                      opt.out_dir.string() + ")");
    if (opt.resume)
      throw FileError("[pretrain] --resume needs the run's tokenizer, but '" + files.tokenizer.string() + "' does not fit this mode (" +
                      why_retrain + ")");
    t0 = std::chrono::steady_clock::now();
    const std::vector<std::string> sentences = data::document_sentences(train_docs);
    auto trained = tokenizer::train(tok_options, sentences);
    tok = std::move(trained.tokenizer);
    tok.save(files.tokenizer);
    std::printf("2. tokenizer trained a %lld-piece unigram model on %zu of %zu sentences in %.1f s (%s) -> %s\n",
                static_cast<long long>(tok.vocab_size()), std::min<std::size_t>(sentences.size(), tok_options.input_sentence_size),
                sentences.size(), seconds_since(t0), why_retrain.c_str(), files.tokenizer.string().c_str());
  } else {
    std::printf("2. tokenizer reusing %s (%lld pieces)\n", files.tokenizer.string().c_str(), static_cast<long long>(tok.vocab_size()));
  }
  {
    std::string shown;
    for (const std::string& p : tok.pieces("Call me Ishmael.")) shown += (shown.empty() ? "" : " ") + p;
    std::printf("             \"Call me Ishmael.\" -> %s\n", shown.c_str());
  }

  // ==== 3. Batches: one id stream per split; windows of T + 1 tokens ==================================
  t0 = std::chrono::steady_clock::now();
  const std::vector<Id> train_stream = token_stream(tok, train_docs);
  const std::vector<Id> valid_stream = token_stream(tok, valid_docs);
  const std::vector<data::LmBatch> valid_batches = data::evenly_spaced_lm_batches(valid_stream, plan.eval_batches, plan.batch_size, plan.seq_len);
  std::printf("3. batches   %zu train tokens, %zu validation tokens (%.1f s); %lld x %lld tokens per step, "
              "validation on %lld fixed batches\n",
              train_stream.size(), valid_stream.size(), seconds_since(t0), static_cast<long long>(plan.batch_size),
              static_cast<long long>(plan.seq_len), static_cast<long long>(plan.eval_batches));

  // ==== 4. Model and optimizer ========================================================================
  nn::TransformerConfig config = plan.model;
  config.vocab_size = tok.vocab_size();
  Generator init_gen(opt.seed);
  nn::DecoderOnly<float> model(config, init_gen);
  const auto params = model.named_parameters();
  optim::AdamW<> optimizer(params, {.lr = plan.peak_lr, .beta1 = 0.9, .beta2 = 0.95, .eps = 1e-8, .weight_decay = 0.1});
  const optim::WarmupCosine schedule(plan.peak_lr, plan.warmup_steps, plan.steps, /*min_ratio=*/0.1);
  Generator batch_gen(opt.seed + 1);  // draws the training windows; saved with the optimizer for --resume
  std::printf("4. model     DecoderOnly: %lld layers, d_model %lld, %lld heads, d_ff %lld, T %lld, vocab %lld: %.2fM parameters\n",
              static_cast<long long>(config.n_layers), static_cast<long long>(config.d_model), static_cast<long long>(config.n_heads),
              static_cast<long long>(config.d_ff), static_cast<long long>(config.max_seq_len), static_cast<long long>(config.vocab_size),
              static_cast<double>(model.num_parameters()) / 1e6);
  std::printf("             AdamW (weight decay 0.1), lr %.1e, %lld warm-up steps then cosine to 10%%, gradient norm clipped at 1\n",
              plan.peak_lr, static_cast<long long>(plan.warmup_steps));

  // ==== 5a. Resume: the weights, then the optimizer, the batch generator and the step =================
  std::int64_t tokens_before = 0;
  if (opt.resume) {
    for (const fs::path& f : {files.model, files.state})
      if (!fs::exists(f)) throw FileError("[pretrain] --resume: '" + f.string() + "' not found (expected a run saved by an earlier pretrain)");
    const io::Metadata meta = io::SafetensorsFile(files.model.string()).metadata();
    const auto saved = meta.find("config");
    if (saved == meta.end())
      throw FileError("[pretrain] --resume: '" + files.model.string() + "' has no \"config\" in its metadata (expected a pretrain checkpoint)");
    if (saved->second != config_json(config))
      throw ValueError("[pretrain] --resume: '" + files.model.string() + "' holds a different model (" + saved->second +
                       "), this run builds " + config_json(config) + ": resume with the same mode (--quick or not)");
    io::load_checkpoint(files.model.string(), params);
    const auto extra = io::load_training_state(files.state.string(), optimizer, batch_gen);
    auto entry = [](const std::map<std::string, std::string>& m, const std::string& key, const fs::path& file) {
      const auto it = m.find(key);
      if (it == m.end()) throw FileError("[pretrain] --resume: '" + file.string() + "' has no \"" + key + "\" entry (expected a pretrain run)");
      return it->second;
    };
    if (entry(meta, "step", files.model) != std::to_string(optimizer.step_count()))
      throw FileError("[pretrain] --resume: '" + files.model.string() + "' is at step " + entry(meta, "step", files.model) + " but '" +
                      files.state.string() + "' at step " + std::to_string(optimizer.step_count()) +
                      " (expected the same step; was a save interrupted?)");
    if (entry(extra, "total_steps", files.state) != std::to_string(plan.steps))
      throw ValueError("[pretrain] --resume: the saved run plans " + entry(extra, "total_steps", files.state) + " steps, this one " +
                       std::to_string(plan.steps) + " (the learning-rate schedule depends on it: pass the same --steps)");
    tokens_before = std::stoll(entry(extra, "tokens", files.state));
    std::printf("5. resumed   from step %lld of %lld (%s, %s)\n", static_cast<long long>(optimizer.step_count()),
                static_cast<long long>(plan.steps), files.model.string().c_str(), files.state.string().c_str());
  }

  // ==== 4b. Train, measuring validation loss / perplexity on the fixed batches every few steps =======
  const std::int64_t first_step = optimizer.step_count();
  const std::int64_t last_step = opt.stop_after > 0 ? std::min(opt.stop_after, plan.steps) : plan.steps;
  const std::int64_t tokens_per_step = plan.batch_size * plan.seq_len;
  double valid_loss = evaluate(model, valid_batches);
  std::printf("\n   step %5lld  validation loss %.3f  perplexity %8.1f\n", static_cast<long long>(first_step), valid_loss, std::exp(valid_loss));
  const bool tty = ::isatty(::fileno(stdout));
  train::ProgressBar bar(last_step - first_step, stdout, /*log_every=*/plan.eval_every);
  double recent_loss_sum = 0;
  std::int64_t recent_steps = 0;
  double train_loss = NAN;
  const auto train_start = std::chrono::steady_clock::now();
  while (optimizer.step_count() < last_step) {
    const data::LmBatch batch = data::random_lm_batch(train_stream, plan.batch_size, plan.seq_len, batch_gen);
    optim::apply_schedule(schedule, optimizer);
    const Tensor<float> loss = model.loss(batch.inputs, batch.targets);
    loss.backward();
    optim::clip_grad_norm(params, 1.0);
    optimizer.step();
    optimizer.zero_grad();

    const std::int64_t step = optimizer.step_count();
    const double l = loss.item();
    recent_loss_sum += l;
    ++recent_steps;
    bar.update(step - first_step, l, tokens_per_step);
    if (step % plan.eval_every == 0 || step == last_step) {
      valid_loss = evaluate(model, valid_batches);
      train_loss = recent_loss_sum / static_cast<double>(recent_steps);
      recent_loss_sum = 0, recent_steps = 0;
      if (tty) std::printf("\r\033[K");  // the progress bar's line is redrawn below this one
      std::printf("   step %5lld  validation loss %.3f  perplexity %8.1f   (train loss %.3f, lr %.2e)\n", static_cast<long long>(step), valid_loss,
                  std::exp(valid_loss), train_loss, optimizer.lr());
      // ==== 5b. Save: weights + config, then the training state; each file is replaced atomically ===
      const std::string at = std::to_string(step);
      io::save_checkpoint(files.model.string(), params,
                          {{"config", config_json(config)}, {"step", at}, {"tokenizer", files.tokenizer.filename().string()},
                           {"validation_loss", std::to_string(valid_loss)}});
      io::save_training_state(files.state.string(), optimizer, batch_gen,
                              {{"total_steps", std::to_string(plan.steps)},
                               {"tokens", std::to_string(tokens_before + (step - first_step) * tokens_per_step)}});
      std::fflush(stdout);
    }
  }
  const double train_seconds = seconds_since(train_start);
  const std::int64_t steps_done = optimizer.step_count() - first_step;
  const std::int64_t tokens_done = steps_done * tokens_per_step;
  std::printf("\n5. saved     %s (weights + config), %s (optimizer, RNG, step %lld), %s\n", files.model.string().c_str(),
              files.state.string().c_str(), static_cast<long long>(optimizer.step_count()), files.tokenizer.string().c_str());
  if (optimizer.step_count() < plan.steps)
    std::printf("             stopped at step %lld of %lld: run again with --resume to continue\n",
                static_cast<long long>(optimizer.step_count()), static_cast<long long>(plan.steps));

  // ==== 6. Samples: continuations of a few prompts ====================================================
  std::printf("\n6. samples   [prompt] continuation (temperature 0.8, top-k 40)\n");
  std::uint64_t sample_seed = opt.seed;
  for (const char* prompt : {"The people of the United States", "Call me"}) {
    const std::vector<Id> ids = tok.encode(prompt);
    const auto prompt_ids = from_vector<Id>(ids, Shape{1, static_cast<Index>(ids.size())});
    for (int k = 0; k < 2; ++k) {
      nn::SamplingOptions s{.max_new_tokens = std::min(plan.sample_tokens, config.max_seq_len - static_cast<Index>(ids.size())),
                            .temperature = 0.8, .top_k = 40, .seed = sample_seed++, .eos_id = tok.eos_id()};
      const std::vector<Id> out = nn::generate(model, prompt_ids, s).to_vector();
      // Decoded as a whole so the space between prompt and continuation comes out right.
      const std::string text = tok.decode(out);
      const std::string_view p = prompt;
      if (text.starts_with(p)) std::printf("   [%s]%s\n", prompt, text.c_str() + p.size());
      else std::printf("   %s\n", text.c_str());
    }
  }

  // ==== 7. Summary ======================================================================================
  std::printf("\npretrain (%s): %lld steps (now at step %lld of %lld), %.2fM tokens, train loss %.3f, validation loss %.3f, "
              "validation perplexity %.1f, %s tok/s, %.0f s in all\n",
              plan.name, static_cast<long long>(steps_done), static_cast<long long>(optimizer.step_count()),
              static_cast<long long>(plan.steps), static_cast<double>(tokens_done) / 1e6, train_loss, valid_loss,
              std::exp(valid_loss), train::human_count(train_seconds > 0 ? static_cast<double>(tokens_done) / train_seconds : 0).c_str(),
              seconds_since(run_start));
  return 0;
} catch (const Error& e) {
  std::fprintf(stderr, "pretrain: %s\n", e.what());
  return 1;
}
