// Inference for multi-task instruction models: predict(text, instruction) -> Prediction.
//
// Legend: B = rows of one forward pass, T = time, V = vocab, N = answer options of a task,
// K = beams, P = prompt tokens (bos, prompt text, sep), M = max_new_tokens.
//
//   instruct::Predictor predictor(model, tokenizer, registry, {.collate = training_collate_options});
//   Prediction p = predictor.predict("What a film!", "Is this sentence positive or negative?");
//     p.task "sentiment", p.kind, p.text "positive" (generated text, or the chosen option),
//     p.label 1 (-1 for generation), p.probabilities {0.1, 0.9} (one per option; empty for
//     generation), p.prompt (the rendered prompt), p.prompt_ids / p.output_ids (what the model read
//     and, for generation, the new tokens without eos).
//   predictor.predict_task("translate", text)            a task by name, with its own instruction
//   predictor.predict_many("sentiment", texts)           one task over many texts (evaluation)
//
// Routing (predict): the instruction goes to the task whose instruction equals it after
// normalising (lowercase, runs of whitespace as one space, no final punctuation); else to the task
// whose instruction shares the most words (Jaccard similarity of the sets of lowercased words,
// split at anything that is not a letter or digit) if that is >= options.min_similarity; a tie
// between two tasks, or no task above the threshold, is a ValueError listing the known
// instructions. The user's instruction text fills {instruction} (options.substitute_instruction;
// false = the task's own instruction); predict_task always uses the task's own.
//
// Prompts are built exactly as collation built the training sequences, from the same
// CollateOptions (options.collate), so the model reads at inference what it read in training:
//   LM-head tasks (collate_lm):          [bos] prompt [sep]   then the answer ... [eos]
//   classifier-head tasks                the input ids collate_lm makes of the prompt and an empty
//                                        target, as InstructionBatches trains them (label_only);
//                                        or [bos] prompt [eos] (collate_classify), per head_prompt
// The prompt's tokens are cut per collate.truncation (from the left by default) so that the whole
// sequence fits collate.max_length and the trunk's max_seq_len: for generation the prompt leaves
// room for max_new_tokens new tokens (eos included), for rank classification for the longest
// option + eos.
//
// What each task does, decided at construction from its kind and its head type:
//   generation + LMHead                 text: greedy, sampling (temperature / top-k / top-p, seeded)
//                                       or beam search (nn::generate_with / nn::beam_search_with),
//                                       max/min new tokens, stop at eos, repetition_penalty and
//                                       no_repeat_ngram_size over prompt + new tokens
//   classification + SequenceClassifier label = argmax, probabilities = softmax of the head's
//                                       logits [B, N] (N must be the number of options)
//   classification + LMHead             rank classification: each option o is scored
//                                       s_o = sum of log p(token | prefix) over the tokens of its
//                                       rendered target followed by eos (what collate_lm trains),
//                                       given [bos] prompt [sep]; label = argmax s_o,
//                                       probabilities = softmax over the N scores. Sums, not
//                                       per-token means: the model's own probability of each whole
//                                       answer, renormalised over the options (T0 / FLAN's rank
//                                       classification); no length normalisation, so a longer
//                                       option pays for each of its tokens.
// Anything else (generation through a classifier, a token classifier, a regression head, an
// option count that does not match a classifier) is a ValueError when the Predictor is built, as
// are task names or an order that differ from the model's.
//
// Generation paths, by sharing strategy:
//   Hard (one nn::Decoder trunk), Soft (an nn::Decoder per task or group)
//       KV cache: the task's trunk runs forward_step on the prompt once, then on one token per
//       step; the task's LM head reads the last position only.
//   Hierarchical, Adapters, MMoE, CGC, CrossStitch, any other trunk type
//       recompute: every step runs model.forward on the whole sequence so far (correct; each
//       new token costs a pass over the whole prefix instead of one position); the same path
//       with options.use_kv_cache = false.
// Both give the same tokens (tests/instruct/test_predict.cpp). Generation loops over texts;
// classification batches options.batch_rows rows per forward pass (right-padded; the trunk
// masks padded keys, so a row's result does not depend on its neighbours). Everything runs in
// eval mode (dropout off; the model's mode is restored afterwards) without recording gradients.
// Sampling restarts from options.generation.seed for every text, so a text's prediction does not
// depend on the call or on its position in predict_many.
//
// Devices: a model over a cuda trunk (mtl::Model<nn::Decoder<float, cuda>, ...>) predicts the
// same way. Prompts, token choices and scores stay on the host: each forward pass gets its batch
// on the device and gives its output back, and each KV-cache step sends its new ids and brings
// back one [rows, V] row of logits (tests/backend/cuda/test_generate_checkpoint.cu compares
// every method with the CPU's).
#pragma once

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "cerberus/autograd/grad_mode.hpp"
#include "cerberus/core/error.hpp"
#include "cerberus/instruct/collate.hpp"
#include "cerberus/instruct/templates.hpp"
#include "cerberus/mtl/batch.hpp"
#include "cerberus/mtl/heads.hpp"
#include "cerberus/mtl/model.hpp"
#include "cerberus/mtl/sharing/hard.hpp"
#include "cerberus/mtl/sharing/soft.hpp"
#include "cerberus/nn/beam_search.hpp"
#include "cerberus/nn/generate.hpp"
#include "cerberus/nn/stacks.hpp"
#include "cerberus/tensor/factories.hpp"

namespace cerberus::instruct {

// A tokenizer Predictor can use: collation's (encode, pad/bos/eos ids) plus decode(ids) -> text.
template <class Tok>
concept PredictionTokenizer = TextTokenizer<Tok> && requires(const Tok& t, std::span<const std::int64_t> ids) {
  { t.decode(ids) } -> std::convertible_to<std::string>;
};

enum class Decoding { greedy, sampling, beam_search };

struct GenerationOptions {
  Decoding decoding = Decoding::greedy;
  Index max_new_tokens = 32;  // eos included
  Index min_new_tokens = 0;   // eos is not chosen before this many new tokens
  bool stop_at_eos = true;    // false: always max_new_tokens tokens (eos may still be among them)
  // Every decoding (nn::SamplingOptions' rules; beam search applies them to log-probabilities),
  // over the whole sequence the model reads: [bos] prompt [sep] and the new tokens.
  double repetition_penalty = 1.0;  // 1 = off; > 1 (e.g. 1.2) discourages ids already present
  Index no_repeat_ngram_size = 0;   // 0 = off; n: no n-gram of tokens occurs twice
  bool repetition_includes_prompt = true;  // false: the two rules read the new tokens only
  // Decoding::sampling (nn::SamplingOptions' rules):
  double temperature = 1.0;
  Index top_k = 0;     // 0 = every token
  double top_p = 1.0;  // 1 = every token
  std::uint64_t seed = 0;
  // Decoding::beam_search (nn::BeamSearchOptions' rules):
  Index num_beams = 4;
  double length_penalty = 1.0;  // score = sum of log-probabilities / length ^ length_penalty
  // false (Hugging Face's default): a prompt is done when no live beam can beat its worst kept
  // hypothesis. true: as soon as num_beams hypotheses have ended, which with few beams often keeps
  // early, unlikely ones (the weaker beam's eos) and drops the best, still-running one.
  bool early_stopping = false;
};

// What a classifier head read in training: InstructionBatches (Answer::label_only) feeds the
// collate_lm row of the prompt with an empty target: the inputs [bos] prompt [sep] (bos and sep
// where the CollateOptions ask for them; eos is only a target). collate_classify feeds
// [bos] prompt [eos].
enum class HeadPrompt { as_collate_lm, as_collate_classify };

struct PredictOptions {
  CollateOptions collate;           // the options the training batches were collated with
  HeadPrompt head_prompt = HeadPrompt::as_collate_lm;
  std::size_t template_index = 0;   // which template of each task renders the prompt
  RenderOptions render;             // as given to render() in training
  GenerationOptions generation;
  double min_similarity = 0.3;       // routing: least Jaccard word overlap for a paraphrase
  bool substitute_instruction = true;  // predict(): the user's instruction fills {instruction}
  Index batch_rows = 64;             // rows per forward pass when classifying
  bool use_kv_cache = true;          // false: generation always recomputes (checks, debugging)
};

struct Prediction {
  std::string task;
  TaskKind kind = TaskKind::generation;
  std::string text;                        // generated text, or the chosen option
  std::int64_t label = -1;                 // index of the chosen option; -1 for generation
  std::vector<double> probabilities;       // one per option (classification); empty for generation
  std::string prompt;                      // the rendered prompt
  std::vector<std::int64_t> prompt_ids;    // the tokens the model read before its answer
  std::vector<std::int64_t> output_ids;    // generation: the new tokens, eos not included
};

// Where predict() sends an instruction.
struct TaskRoute {
  std::size_t task = 0;
  double similarity = 1.0;  // 1 for an exact match, else the Jaccard word overlap
  bool exact = false;
};

// How a task is predicted (chosen at construction from its kind and head type).
enum class PredictionMethod { generate, classifier_head, rank_classification };

inline const char* method_name(PredictionMethod m) {
  switch (m) {
    case PredictionMethod::generate: return "generation";
    case PredictionMethod::classifier_head: return "classifier head";
    case PredictionMethod::rank_classification: return "rank classification";
  }
  return "?";
}

// Lowercase, whitespace runs -> one space, trimmed, final punctuation removed.
inline std::string normalize_instruction(std::string_view s) {
  std::string out;
  bool space = false;
  for (const char c : s) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  while (!out.empty() && (std::ispunct(static_cast<unsigned char>(out.back())) || out.back() == ' ')) out.pop_back();
  return out;
}

// The set of lowercased words (runs of letters, digits and non-ASCII bytes).
inline std::set<std::string> instruction_words(std::string_view s) {
  std::set<std::string> out;
  std::string w;
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || u >= 0x80) w += static_cast<char>(std::tolower(u));
    else if (!w.empty()) out.insert(std::exchange(w, {}));
  }
  if (!w.empty()) out.insert(w);
  return out;
}

// |A n B| / |A u B| of the two instructions' word sets (0 when both are empty).
inline double instruction_similarity(std::string_view a, std::string_view b) {
  const auto wa = instruction_words(a), wb = instruction_words(b);
  std::size_t both = 0;
  for (const auto& w : wa) both += wb.count(w);
  const std::size_t either = wa.size() + wb.size() - both;
  return either == 0 ? 0.0 : static_cast<double>(both) / static_cast<double>(either);
}

namespace detail {

// The Task<...> list and trunk of an mtl::Model.
template <class M>
struct model_parts;
template <class Tr, class S, class W, class... Tasks>
struct model_parts<mtl::Model<Tr, S, W, Tasks...>> {
  using tasks = std::tuple<Tasks...>;
};

template <class H>
inline constexpr bool is_lm_head = false;
template <mtl::Tying Tie, Element T, Device D>
inline constexpr bool is_lm_head<mtl::LMHead<Tie, T, D>> = true;

template <class H>
inline constexpr bool is_sequence_classifier = false;
template <Index N, mtl::Pooling P, Element T, Device D>
inline constexpr bool is_sequence_classifier<mtl::SequenceClassifier<N, P, T, D>> = true;

template <class Tr>
inline constexpr bool is_decoder = false;
template <Element T, Device D>
inline constexpr bool is_decoder<nn::Decoder<T, D>> = true;

// Strategies whose task k reads one whole trunk, unchanged: Hard (the trunk) and Soft (its task's
// or group's trunk). Matched by type: Adapters, Hierarchical, MMoE also hold a `trunk`, but
// change what it computes.
template <class S>
inline constexpr bool is_hard = false;
template <class Tr, std::size_t N>
inline constexpr bool is_hard<mtl::HardSharing<Tr, N>> = true;
template <class S>
inline constexpr bool is_soft = false;
template <class Tr, class Names, double Coef, class... Groups>
inline constexpr bool is_soft<mtl::SoftSharing<Tr, Names, Coef, Groups...>> = true;

// Cuts prompt tokens to `room` per the truncation policy.
inline void cut_prompt(std::vector<std::int64_t>& p, Index room, Truncation how, const std::string& where) {
  if (static_cast<Index>(p.size()) <= room) return;
  if (how == Truncation::error)
    throw ValueError("[instruct::Predictor] " + where + ": the prompt has " + std::to_string(p.size()) + " tokens, only " +
                     std::to_string(room) + " fit (Truncation::error)");
  if (how == Truncation::prompt_left) p.erase(p.begin(), p.end() - room);
  else p.resize(static_cast<std::size_t>(room));
}

// Softmax of scores (logits, or summed log-probabilities), in double.
inline std::vector<double> probabilities_of(const std::vector<double>& x) {
  std::vector<double> p(x.size());
  if (x.empty()) return p;
  const double mx = *std::max_element(x.begin(), x.end());
  double total = 0;
  for (std::size_t i = 0; i < x.size(); ++i) total += p[i] = std::exp(x[i] - mx);
  for (double& v : p) v /= total;
  return p;
}

template <Element T>
double to_double(T x) {
  return static_cast<double>(static_cast<compute_t<T>>(x));
}

inline std::int64_t index_of_max(const std::vector<double>& x) {
  return static_cast<std::int64_t>(std::max_element(x.begin(), x.end()) - x.begin());
}

// Puts a module in eval mode for a scope and restores its mode afterwards.
template <class M>
class EvalMode {
 public:
  explicit EvalMode(M& m) : m_(m), was_training_(m.is_training()) { m_.eval(); }
  ~EvalMode() { m_.train(was_training_); }
  EvalMode(const EvalMode&) = delete;
  EvalMode& operator=(const EvalMode&) = delete;

 private:
  M& m_;
  bool was_training_;
};

}  // namespace detail

template <class Model, PredictionTokenizer Tok>
class Predictor {
 public:
  using T = typename Model::T;
  using D = device_of_t<Model>;  // the model's device; prompts, choices and scores stay on the host
  static constexpr std::size_t task_count = Model::task_count;

  // model and tokenizer are held by reference and must outlive the Predictor; `tasks` must list
  // the model's tasks, by name, in the model's order.
  Predictor(Model& model, const Tok& tokenizer, TaskRegistry tasks, PredictOptions options = {})
      : model_(model), tok_(tokenizer), tasks_(std::move(tasks)), options_(std::move(options)) {
    const auto& names = Model::task_names();
    bool same = tasks_.size() == task_count;
    for (std::size_t k = 0; same && k < task_count; ++k) same = tasks_[k].name == names[k];
    if (!same) {
      std::string model_list, registry_list;
      for (auto n : names) model_list += (model_list.empty() ? "" : ", ") + std::string(n);
      for (const auto& t : tasks_) registry_list += (registry_list.empty() ? "" : ", ") + t.name;
      throw ValueError("[instruct::Predictor] the task registry must list the model's tasks in the model's order: model (" + model_list +
                       "), registry (" + registry_list + ")");
    }
    methods_.resize(task_count);
    for (std::size_t k = 0; k < task_count; ++k) {
      const TaskSpec& spec = tasks_[k];
      if (options_.template_index >= spec.templates.size())
        throw ValueError("[instruct::Predictor] template_index " + std::to_string(options_.template_index) + ", but task '" + spec.name +
                         "' has " + std::to_string(spec.templates.size()) + " templates");
      with_task(k, [&](auto K) { methods_[k] = choose_method<K>(spec); });
    }
    if (options_.batch_rows < 1) throw ValueError("[instruct::Predictor] batch_rows must be >= 1, got " + std::to_string(options_.batch_rows));
  }

  const TaskRegistry& tasks() const { return tasks_; }
  PredictOptions& options() { return options_; }
  const PredictOptions& options() const { return options_; }
  PredictionMethod method(std::string_view task) const { return methods_[index_of(task)]; }
  // Whether generation for `task` runs on a KV cache (Hard and Soft over nn::Decoder), not recompute.
  bool uses_kv_cache(std::string_view task) const {
    bool out = false;
    with_task(index_of(task), [&](auto K) { out = options_.use_kv_cache && has_cached_trunk<K>(); });
    return out;
  }

  // The task an instruction goes to; see the top of this file.
  TaskRoute route(std::string_view instruction) const {
    const std::string wanted = normalize_instruction(instruction);
    std::vector<std::size_t> exact;
    for (std::size_t k = 0; k < tasks_.size(); ++k)
      if (!wanted.empty() && normalize_instruction(tasks_[k].instruction) == wanted) exact.push_back(k);
    if (exact.size() == 1) return {exact[0], 1.0, true};
    if (exact.size() > 1)
      throw ValueError("[instruct::Predictor] the instruction \"" + std::string(instruction) + "\" is the instruction of tasks '" +
                       tasks_[exact[0]].name + "' and '" + tasks_[exact[1]].name + "'; use predict_task(name, text)" + known_instructions());
    double best = -1;
    std::vector<std::size_t> best_tasks;
    for (std::size_t k = 0; k < tasks_.size(); ++k) {
      const double s = instruction_similarity(instruction, tasks_[k].instruction);
      if (s > best) {
        best = s;
        best_tasks = {k};
      } else if (s == best) {
        best_tasks.push_back(k);
      }
    }
    if (best_tasks.empty() || best < options_.min_similarity || best <= 0.0)
      throw ValueError("[instruct::Predictor] no task matches the instruction \"" + std::string(instruction) + "\" (best word overlap " +
                       std::to_string(best) + ", min_similarity " + std::to_string(options_.min_similarity) + ")" + known_instructions());
    if (best_tasks.size() > 1)
      throw ValueError("[instruct::Predictor] the instruction \"" + std::string(instruction) + "\" matches tasks '" + tasks_[best_tasks[0]].name +
                       "' and '" + tasks_[best_tasks[1]].name + "' equally (word overlap " + std::to_string(best) +
                       "); use predict_task(name, text)" + known_instructions());
    return {best_tasks[0], best, false};
  }

  // Routes `instruction` to a task and predicts; see the top of this file.
  Prediction predict(std::string_view text, std::string_view instruction) {
    const TaskRoute r = route(instruction);
    const auto users = options_.substitute_instruction ? std::optional<std::string_view>(instruction) : std::nullopt;
    const std::string prompt = render_prompt(r.task, text, users);
    return std::move(run(r.task, {&prompt, 1}).front());
  }

  // The task called `task`, with its own instruction.
  Prediction predict_task(std::string_view task, std::string_view text) {
    const std::size_t k = index_of(task);
    const std::string prompt = render_prompt(k, text, std::nullopt);
    return std::move(run(k, {&prompt, 1}).front());
  }

  // One task over many texts: classification in batches of options.batch_rows rows, generation
  // one text at a time. Result i is what predict_task(task, texts[i]) gives.
  std::vector<Prediction> predict_many(std::string_view task, std::span<const std::string> texts) {
    const std::size_t k = index_of(task);
    std::vector<std::string> prompts;
    prompts.reserve(texts.size());
    for (const auto& text : texts) prompts.push_back(render_prompt(k, text, std::nullopt));
    return run(k, prompts);
  }

 private:
  using Tasks = typename detail::model_parts<Model>::tasks;
  template <std::size_t K>
  using HeadAt = std::tuple_element_t<K, typename Model::Heads>;
  std::size_t index_of(std::string_view task) const { return static_cast<std::size_t>(tasks_.index_of(task)); }

  template <class F>
  static void with_task(std::size_t k, F&& f) {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      ((I == k ? (f(std::integral_constant<std::size_t, I>{}), 0) : 0), ...);
    }(std::make_index_sequence<task_count>{});
  }

  template <std::size_t K>
  auto& head_at() {
    return model_.template head<std::tuple_element_t<K, Tasks>::name>();
  }

  // Hard / Soft over an nn::Decoder: task K's whole trunk, which forward_step can run.
  template <std::size_t K>
  static constexpr bool has_cached_trunk() {
    using S = typename Model::Strategy;
    if constexpr (detail::is_hard<S>) return detail::is_decoder<std::remove_cvref_t<decltype(std::declval<S&>().trunk)>>;
    else if constexpr (detail::is_soft<S>) return detail::is_decoder<typename decltype(std::declval<S&>().trunks)::value_type>;
    else return false;
  }
  template <std::size_t K>
  auto& cached_trunk() {
    using S = typename Model::Strategy;
    if constexpr (detail::is_hard<S>) return model_.sharing().trunk;
    else return model_.sharing().trunks[S::group_of[K]];
  }

  // The trunk's max_seq_len where the strategy shows its trunk (every strategy of mtl/sharing/).
  Index max_positions() {
    auto& s = model_.sharing();
    if constexpr (requires { s.trunks.front().config().max_seq_len; }) return s.trunks.front().config().max_seq_len;
    else if constexpr (requires { s.trunk.config().max_seq_len; }) return s.trunk.config().max_seq_len;
    else return std::numeric_limits<Index>::max() / 2;
  }

  template <std::size_t K>
  static PredictionMethod choose_method(const TaskSpec& spec) {
    using H = HeadAt<K>;
    const std::string where = "[instruct::Predictor] task '" + spec.name + "' (" + kind_name(spec.kind) + ")";
    if (spec.kind == TaskKind::generation) {
      if constexpr (detail::is_lm_head<H>) return PredictionMethod::generate;
      else throw ValueError(where + ": only an mtl::LMHead can generate text; this task's head is not one");
    } else {
      if constexpr (detail::is_lm_head<H>) return PredictionMethod::rank_classification;
      else if constexpr (detail::is_sequence_classifier<H>) {
        if (static_cast<std::size_t>(H::classes) != spec.options.size())
          throw ValueError(where + ": its SequenceClassifier has " + std::to_string(H::classes) + " classes but the task has " +
                           std::to_string(spec.options.size()) + " options");
        return PredictionMethod::classifier_head;
      } else {
        throw ValueError(where + ": a classification task needs an mtl::SequenceClassifier (labels from the head) or an mtl::LMHead "
                                 "(rank classification over the options); this task's head is neither");
      }
    }
  }

  std::string known_instructions() const {
    std::string s = "; known instructions:";
    for (const auto& t : tasks_) s += "\n  " + t.name + ": \"" + t.instruction + "\"";
    return s;
  }

  std::string render_prompt(std::size_t k, std::string_view text, std::optional<std::string_view> instruction) const {
    const TaskSpec& spec = tasks_[k];
    // A classification example needs a target among the options; prompts never contain it.
    const Example ex{std::string(text), spec.kind == TaskKind::classification ? spec.options.front() : std::string()};
    if (!instruction) return render(spec, options_.template_index, ex, {}, options_.render).prompt;
    TaskSpec with_users = spec;
    with_users.instruction = std::string(*instruction);
    return render(with_users, options_.template_index, ex, {}, options_.render).prompt;
  }

  // [bos] prompt [sep] with the prompt cut to leave `reserve` tokens of the sequence for the answer.
  std::vector<std::int64_t> lm_prefix(std::size_t k, const std::string& prompt, Index reserve, const char* reserved_for) {
    const CollateOptions& o = options_.collate;
    const Index specials = (o.add_bos ? 1 : 0) + (o.sep_id >= 0 ? 1 : 0);
    const Index limit = std::min(o.max_length, max_positions() + 1);  // the last token is never an input
    const Index room = limit - reserve - specials, min_prompt = specials > 0 ? 0 : 1;
    const std::string where = "task '" + tasks_[k].name + "'";
    if (room < min_prompt)
      throw ValueError("[instruct::Predictor] " + where + ": " + reserved_for + " (" + std::to_string(reserve) +
                       " tokens) leaves no room for the prompt within max_length " + std::to_string(o.max_length) + " (max_seq_len " +
                       std::to_string(max_positions()) + ")");
    std::vector<std::int64_t> p = tok_.encode(prompt);
    detail::cut_prompt(p, room, o.truncation, where);
    if (static_cast<Index>(p.size()) < min_prompt)
      throw ValueError("[instruct::Predictor] " + where + ": the prompt is empty and there is no bos or sep token to start from");
    std::vector<std::int64_t> s;
    if (o.add_bos) s.push_back(tok_.bos_id());
    s.insert(s.end(), p.begin(), p.end());
    if (o.sep_id >= 0) s.push_back(o.sep_id);
    return s;
  }

  // What a classifier head reads; see HeadPrompt.
  std::vector<std::int64_t> head_input(std::size_t k, const std::string& prompt) {
    if (options_.head_prompt == HeadPrompt::as_collate_lm) {
      CollateOptions lm = options_.collate;
      lm.max_length = std::min(lm.max_length, max_positions() + 1);  // the last token is never an input
      lm.pad_to_max_length = false;
      const std::vector<TextPair> one{{prompt, std::string(), static_cast<std::int64_t>(k), 0}};
      const LmBatch b = collate_lm(std::span<const TextPair>(one), tok_, lm);
      const std::vector<std::int64_t> ids = b.input_ids.to_vector();
      const std::vector<std::uint8_t> padded = b.padding.to_vector();
      std::vector<std::int64_t> s;
      for (std::size_t i = 0; i < ids.size() && padded[i] == 0; ++i) s.push_back(ids[i]);
      if (s.empty()) throw ValueError("[instruct::Predictor] task '" + tasks_[k].name + "': the prompt gives the classifier no input token");
      return s;
    }
    const CollateOptions& o = options_.collate;
    const Index specials = (o.add_bos ? 1 : 0) + (o.add_eos ? 1 : 0);
    const Index room = std::min(o.max_length, max_positions()) - specials;
    if (room < 1)
      throw ValueError("[instruct::Predictor] task '" + tasks_[k].name + "': max_length " + std::to_string(o.max_length) +
                       " leaves no room for the prompt");
    std::vector<std::int64_t> p = tok_.encode(prompt);
    detail::cut_prompt(p, room, o.truncation, "task '" + tasks_[k].name + "'");
    std::vector<std::int64_t> s;
    if (o.add_bos) s.push_back(tok_.bos_id());
    s.insert(s.end(), p.begin(), p.end());
    if (o.add_eos) s.push_back(tok_.eos_id());
    return s;
  }

  // rows (equal or different lengths) -> a right-padded batch of task k.
  mtl::Batch<T> make_batch(std::size_t k, const std::vector<std::vector<std::int64_t>>& rows) const {
    Index len = 1;
    for (const auto& r : rows) len = std::max<Index>(len, static_cast<Index>(r.size()));
    const Index b = static_cast<Index>(rows.size());
    std::vector<std::int64_t> ids(static_cast<std::size_t>(b * len), tok_.pad_id());
    std::vector<std::uint8_t> pad(static_cast<std::size_t>(b * len), 1);
    bool padded = false;
    for (Index i = 0; i < b; ++i) {
      const auto& r = rows[static_cast<std::size_t>(i)];
      std::copy(r.begin(), r.end(), ids.begin() + i * len);
      std::fill(pad.begin() + i * len, pad.begin() + i * len + static_cast<Index>(r.size()), std::uint8_t{0});
      padded = padded || static_cast<Index>(r.size()) < len;
    }
    mtl::Batch<T> batch;
    batch.ids = from_vector<std::int64_t>(ids, Shape{b, len});
    if (padded) batch.padding = from_vector<std::uint8_t>(pad, Shape{b, len});
    batch.task_id = full<std::int64_t>(Shape{b}, static_cast<std::int64_t>(k));
    return batch;
  }

  // Task k's head output on `batch` (all of whose rows are task k's), on the host. A model on
  // another device gets the batch there and gives its output back (one copy each way).
  Tensor<T> task_output(std::size_t k, const mtl::Batch<T>& batch) {
    if constexpr (std::is_same_v<D, cpu>) {
      auto out = model_.forward(batch);
      return *out.outputs[k];
    } else {
      auto out = model_.forward(batch.template to<D>());
      return out.outputs[k]->template to<cpu>();
    }
  }

  std::vector<Prediction> run(std::size_t k, std::span<const std::string> prompts) {
    detail::EvalMode<Model> eval_mode(model_);
    NoGradGuard prediction_is_not_recorded;
    std::vector<Prediction> out(prompts.size());
    for (std::size_t i = 0; i < prompts.size(); ++i) {
      out[i].task = tasks_[k].name;
      out[i].kind = tasks_[k].kind;
      out[i].prompt = prompts[i];
    }
    with_task(k, [&](auto K) {
      switch (methods_[k]) {
        case PredictionMethod::generate:
          for (auto& p : out) generate<K>(k, p);
          break;
        case PredictionMethod::classifier_head: classify_with_head(k, out); break;
        case PredictionMethod::rank_classification: rank_classify(k, out); break;
      }
    });
    return out;
  }

  // ---- generation ----------------------------------------------------------------------------

  template <std::size_t K>
  void generate(std::size_t k, Prediction& p) {
    if constexpr (detail::is_lm_head<HeadAt<K>>) {
      const GenerationOptions& g = options_.generation;
      if (g.max_new_tokens < 1) throw ValueError("[instruct::Predictor] max_new_tokens must be >= 1, got " + std::to_string(g.max_new_tokens));
      p.prompt_ids = lm_prefix(k, p.prompt, g.max_new_tokens, "max_new_tokens");
      const Index t0 = static_cast<Index>(p.prompt_ids.size());
      const Index rows = g.decoding == Decoding::beam_search ? g.num_beams : 1;
      const Tensor<std::int64_t> prompt = from_vector<std::int64_t>(p.prompt_ids, Shape{1, t0});
      const std::int64_t eos = g.stop_at_eos ? tok_.eos_id() : -1;
      std::vector<std::int64_t> tokens;
      auto decode_with = [&](auto&& step, auto&& reorder) {
        if (g.decoding == Decoding::beam_search) {
          nn::BeamSearchOptions bo;
          bo.num_beams = g.num_beams;
          bo.max_new_tokens = g.max_new_tokens;
          bo.min_new_tokens = g.min_new_tokens;
          bo.length_penalty = g.length_penalty;
          bo.early_stopping = g.early_stopping;
          bo.eos_id = eos;
          bo.pad_id = tok_.pad_id();
          bo.repetition_penalty = g.repetition_penalty;
          bo.no_repeat_ngram_size = g.no_repeat_ngram_size;
          bo.repetition_includes_prompt = g.repetition_includes_prompt;
          const nn::BeamSearchResult r = nn::beam_search_with(step, reorder, prompt, bo);
          const std::vector<std::int64_t> seq = r.sequences.to_vector();
          tokens.assign(seq.begin() + t0, seq.begin() + t0 + r.lengths[0]);
        } else {
          nn::SamplingOptions so;
          so.max_new_tokens = g.max_new_tokens;
          so.min_new_tokens = g.min_new_tokens;
          so.temperature = g.decoding == Decoding::greedy ? 0.0 : g.temperature;
          so.top_k = g.top_k;
          so.top_p = g.top_p;
          so.seed = g.seed;
          so.eos_id = eos;
          so.repetition_penalty = g.repetition_penalty;
          so.no_repeat_ngram_size = g.no_repeat_ngram_size;
          so.repetition_includes_prompt = g.repetition_includes_prompt;
          const std::vector<std::int64_t> seq = nn::generate_with(step, prompt, so).to_vector();
          tokens.assign(seq.begin() + t0, seq.end());
        }
      };
      if (g.decoding == Decoding::beam_search && g.num_beams < 1)
        throw ValueError("[instruct::Predictor] num_beams must be >= 1, got " + std::to_string(g.num_beams));
      auto& head = head_at<K>();
      bool cached = false;
      if constexpr (has_cached_trunk<K>()) {
        auto& trunk = cached_trunk<K>();
        if (options_.use_kv_cache && !trunk.has_cross_attention()) {
          cached = true;
          auto cache = trunk.make_cache(rows, std::max<Index>(t0 + g.max_new_tokens - 1, 1));
          decode_with(
              [&](const Tensor<std::int64_t>& ids_new) {
                // The loop chooses tokens on the host: the new ids go to the model's device and
                // the last position's logits come back.
                const Tensor<T, D> h = trunk.forward_step(nn::detail::on_device<D>(ids_new), cache);  // [rows, T_new, C]
                return nn::detail::on_host(head.forward(h.slice(1, h.size(1) - 1, h.size(1))).select(1, 0));  // [rows, V]
              },
              [&](const std::vector<Index>& order) { cache.reorder(order); });
        }
      }
      if (!cached) {
        // Recompute: every step reads the whole sequence so far through model.forward.
        std::vector<std::vector<std::int64_t>> seqs(static_cast<std::size_t>(rows));
        decode_with(
            [&](const Tensor<std::int64_t>& ids_new) {
              const std::vector<std::int64_t> v = ids_new.contiguous().to_vector();
              const Index n = ids_new.size(1);
              for (std::size_t r = 0; r < seqs.size(); ++r) {
                const auto row = v.begin() + static_cast<Index>(r) * n;
                seqs[r].insert(seqs[r].end(), row, row + n);
              }
              const Tensor<T> logits = task_output(k, make_batch(k, seqs));  // [rows, T, V]
              return logits.slice(1, logits.size(1) - 1, logits.size(1)).select(1, 0);
            },
            [&](const std::vector<Index>& order) {
              std::vector<std::vector<std::int64_t>> next;
              next.reserve(order.size());
              for (Index r : order) next.push_back(seqs[static_cast<std::size_t>(r)]);
              seqs = std::move(next);
            });
      }
      if (eos >= 0)
        if (auto at = std::find(tokens.begin(), tokens.end(), eos); at != tokens.end()) tokens.erase(at, tokens.end());
      p.output_ids = tokens;
      p.text = tok_.decode(std::span<const std::int64_t>(p.output_ids));
    }
  }

  // ---- classification ------------------------------------------------------------------------

  void classify_with_head(std::size_t k, std::vector<Prediction>& out) {
    const auto rows_per_pass = static_cast<std::size_t>(options_.batch_rows);
    for (auto& p : out) p.prompt_ids = head_input(k, p.prompt);
    for (std::size_t begin = 0; begin < out.size(); begin += rows_per_pass) {
      const std::size_t end = std::min(out.size(), begin + rows_per_pass);
      std::vector<std::vector<std::int64_t>> rows;
      for (std::size_t i = begin; i < end; ++i) rows.push_back(out[i].prompt_ids);
      const Tensor<T> logits = task_output(k, make_batch(k, rows)).contiguous();  // [B, N]
      const Index n = logits.size(1);
      const T* data = logits.data();
      for (std::size_t i = begin; i < end; ++i) {
        std::vector<double> z(static_cast<std::size_t>(n));
        for (Index j = 0; j < n; ++j) z[static_cast<std::size_t>(j)] = detail::to_double(data[static_cast<Index>(i - begin) * n + j]);
        finish_classification(k, out[i], detail::probabilities_of(z));
      }
    }
  }

  void rank_classify(std::size_t k, std::vector<Prediction>& out) {
    const TaskSpec& spec = tasks_[k];
    const CollateOptions& o = options_.collate;
    const std::size_t n_options = spec.options.size();
    // Each option's answer tokens: its rendered target (the template's target pattern), then eos.
    std::vector<std::vector<std::int64_t>> answers;
    Index longest = 0;
    for (const auto& option : spec.options) {
      std::vector<std::int64_t> a = tok_.encode(render(spec, options_.template_index, {"", option}, {}, options_.render).target);
      if (o.add_eos) a.push_back(tok_.eos_id());
      if (a.empty()) throw ValueError("[instruct::Predictor] task '" + spec.name + "': option \"" + option + "\" has no tokens to score");
      longest = std::max<Index>(longest, static_cast<Index>(a.size()));
      answers.push_back(std::move(a));
    }
    for (auto& p : out) p.prompt_ids = lm_prefix(k, p.prompt, longest, "the longest answer option");
    // Rows: (text i, option j) -> prefix_i + answer_j, fed without its last token.
    const std::size_t total = out.size() * n_options;
    const std::size_t rows_per_pass = std::max<std::size_t>(static_cast<std::size_t>(options_.batch_rows), 1);
    std::vector<double> scores(total, 0.0);
    for (std::size_t begin = 0; begin < total; begin += rows_per_pass) {
      const std::size_t end = std::min(total, begin + rows_per_pass);
      std::vector<std::vector<std::int64_t>> rows;
      for (std::size_t r = begin; r < end; ++r) {
        std::vector<std::int64_t> s = out[r / n_options].prompt_ids;
        const auto& a = answers[r % n_options];
        s.insert(s.end(), a.begin(), a.end() - 1);
        rows.push_back(std::move(s));
      }
      const Tensor<T> logits = task_output(k, make_batch(k, rows)).contiguous();  // [B, T, V]
      const Index t_len = logits.size(1), v = logits.size(2);
      const T* data = logits.data();
      for (std::size_t r = begin; r < end; ++r) {
        const auto& a = answers[r % n_options];
        const Index start = static_cast<Index>(out[r / n_options].prompt_ids.size()) - 1;  // predicts a[0]
        double score = 0;
        for (std::size_t j = 0; j < a.size(); ++j) {
          const T* row = data + (static_cast<Index>(r - begin) * t_len + start + static_cast<Index>(j)) * v;
          double mx = -std::numeric_limits<double>::infinity();
          for (Index c = 0; c < v; ++c) mx = std::max(mx, detail::to_double(row[c]));
          double sum = 0;
          for (Index c = 0; c < v; ++c) sum += std::exp(detail::to_double(row[c]) - mx);
          score += detail::to_double(row[a[j]]) - mx - std::log(sum);
        }
        scores[r] = score;
      }
    }
    for (std::size_t i = 0; i < out.size(); ++i)
      finish_classification(k, out[i], detail::probabilities_of(std::vector<double>(scores.begin() + static_cast<std::ptrdiff_t>(i * n_options),
                                                                           scores.begin() + static_cast<std::ptrdiff_t>((i + 1) * n_options))));
  }

  void finish_classification(std::size_t k, Prediction& p, std::vector<double> probabilities) const {
    p.label = detail::index_of_max(probabilities);
    p.text = tasks_[k].options[static_cast<std::size_t>(p.label)];
    p.probabilities = std::move(probabilities);
  }

  Model& model_;
  const Tok& tok_;
  TaskRegistry tasks_;
  PredictOptions options_;
  std::vector<PredictionMethod> methods_;
};

}  // namespace cerberus::instruct
