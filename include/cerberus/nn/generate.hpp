// Text generation with a KV cache: greedy, temperature / top-k / top-p sampling, repetition control.
//
// Legend: B = batch, T0 = prompt length, N = new tokens (<= max_new_tokens), V = vocab, S = source.
//   generate(DecoderOnly& model, prompt int64 [B, T0], options)                      -> [B, T0 + N]
//   generate(EncoderDecoder& model, src [B, S], start int64 [B, T0], options, src_padding) -> [B, T0 + N]
//   generate_with(step, prompt, options): the loop itself; step(ids_new [B, T_new]) returns the
//     next-token logits [B, V] of the last new position (and appends ids_new to its cache).
// The prompt is run once; each later step feeds only the token just chosen, so N new tokens cost
// N cache appends, one attention row each. Only the last position's hidden state goes through the
// LM head. Generation runs in eval mode (restored afterwards) and records nothing (NoGradGuard).
//
// Repetition control (Hugging Face's logits processors, applied to each row before anything
// below, with the row's ids so far: prompt + new tokens): repetition_penalty (CTRL, Keskar et al.
// 2019; 1 = off) divides the logit of every id present so far by the penalty if it is positive
// and multiplies it if negative (each id once, however often it occurs); no_repeat_ngram_size = n
// (0 = off) gives -inf to every token that would complete an n-gram already present in the row
// (with n = 1: every id present so far). Both read the sequence, not the step function, so they
// act the same with a KV cache and without. repetition_includes_prompt = false (not a Hugging Face
// option) makes them read the new tokens only: a translation or summary may then copy names and
// phrases from its input, and only its own loops are penalised.
//
// Choosing a token from a row of logits: temperature == 0 takes the argmax (greedy, first index
// on ties); otherwise, in the usual order (Hugging Face's warpers), the logits are divided by the
// temperature, restricted to the top_k largest (top_k == 0: all; ties at the k-th value are
// kept), then to the nucleus: the fewest most probable tokens whose probability (renormalised
// after top-k) reaches top_p (top_p == 1: all; the most probable token always stays; ties broken
// by lower id), and the result is sampled with a Generator seeded by options.seed, so a (model,
// prompt, options) triple always gives the same tokens. Until min_new_tokens tokens have been
// generated eos_id is never chosen (its logit counts as -inf). A row that has produced eos_id
// keeps producing eos_id; the loop stops early when every row has. Beam search: beam_search.hpp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "cerberus/autograd/grad_mode.hpp"
#include "cerberus/core/random.hpp"
#include "cerberus/nn/models.hpp"
#include "cerberus/tensor/factories.hpp"

namespace cerberus::nn {

struct SamplingOptions {
  Index max_new_tokens = 32;
  Index min_new_tokens = 0;  // eos_id is suppressed before this many new tokens
  double temperature = 0.0;  // 0 = greedy
  Index top_k = 0;           // 0 = every token
  double top_p = 1.0;        // nucleus sampling; 1 = every token
  std::uint64_t seed = 0;
  std::int64_t eos_id = -1;  // -1 = no end-of-sequence token
  double repetition_penalty = 1.0;  // > 0; 1 = off; > 1 discourages ids already in the sequence
  Index no_repeat_ngram_size = 0;   // 0 = off; n: no n-gram occurs twice in prompt + new tokens
  bool repetition_includes_prompt = true;  // false: the two rules above read the new tokens only
};

namespace detail {
// Zeroes the weights w (summing to total) outside the nucleus: the most probable tokens, by
// descending weight then ascending id, until their share reaches top_p. Returns the new total.
inline double keep_nucleus(std::vector<double>& w, double total, double top_p, std::vector<Index>& order) {
  order.resize(w.size());
  for (std::size_t j = 0; j < w.size(); ++j) order[j] = static_cast<Index>(j);
  std::stable_sort(order.begin(), order.end(), [&](Index a, Index b) { return w[static_cast<std::size_t>(a)] > w[static_cast<std::size_t>(b)]; });
  double kept = 0;
  std::size_t j = 0;
  for (; j < order.size() && (j == 0 || kept < top_p * total); ++j) kept += w[static_cast<std::size_t>(order[j])];
  for (; j < order.size(); ++j) w[static_cast<std::size_t>(order[j])] = 0.0;
  return kept;
}

inline void check_repetition_options(double repetition_penalty, Index no_repeat_ngram_size, const char* who) {
  if (!(repetition_penalty > 0.0))
    throw ValueError(std::string("[") + who + "] repetition_penalty must be > 0, got " + std::to_string(repetition_penalty));
  if (no_repeat_ngram_size < 0)
    throw ValueError(std::string("[") + who + "] no_repeat_ngram_size must be >= 0, got " + std::to_string(no_repeat_ngram_size));
}

// Hugging Face's RepetitionPenaltyLogitsProcessor on one row of scores [V]: every id of `sequence`
// (ids outside [0, V) are skipped) is penalised once. `seen` is scratch space.
inline void penalise_repetitions(double* scores, Index v, const std::vector<std::int64_t>& sequence, double penalty, std::vector<char>& seen) {
  if (penalty == 1.0) return;
  seen.assign(static_cast<std::size_t>(v), 0);
  for (const std::int64_t id : sequence) {
    if (id < 0 || id >= v || seen[static_cast<std::size_t>(id)]) continue;
    seen[static_cast<std::size_t>(id)] = 1;
    double& s = scores[id];
    s = s < 0 ? s * penalty : s / penalty;
  }
}

// Hugging Face's NoRepeatNGramLogitsProcessor on one row of scores [V]: with n-grams of `n`
// tokens, every earlier n-gram of `sequence` whose first n - 1 tokens equal the sequence's last
// n - 1 bans its last token. Nothing is banned while the sequence is shorter than n - 1.
inline void ban_repeated_ngrams(double* scores, Index v, const std::vector<std::int64_t>& sequence, Index n) {
  const auto len = static_cast<Index>(sequence.size());
  if (n <= 0 || len + 1 < n) return;
  const auto tail = sequence.end() - (n - 1);  // the n - 1 tokens a new token would follow
  for (Index start = 0; start + n <= len; ++start) {
    const auto gram = sequence.begin() + start;
    if (!std::equal(gram, gram + (n - 1), tail)) continue;
    const std::int64_t banned = gram[n - 1];
    if (banned >= 0 && banned < v) scores[banned] = -std::numeric_limits<double>::infinity();
  }
}

// Both repetition rules on one row of scores [V] (penalty first, as Hugging Face orders them).
inline void apply_repetition_rules(double* scores, Index v, const std::vector<std::int64_t>& sequence, double penalty, Index ngram_size,
                                   std::vector<char>& seen) {
  penalise_repetitions(scores, v, sequence, penalty, seen);
  ban_repeated_ngrams(scores, v, sequence, ngram_size);
}
}  // namespace detail

// One token per row of logits [B, V]; see the top of this file.
// suppress_eos: options.eos_id may not be chosen (min_new_tokens not reached yet).
// sequences: each row's ids so far (prompt + new tokens), read by the repetition rules; empty =
// no history, which only the defaults (both rules off) accept.
template <FloatElement T>
std::vector<std::int64_t> choose_tokens(const Tensor<T>& logits, const SamplingOptions& options, Generator& gen, bool suppress_eos = false,
                                        const std::vector<std::vector<std::int64_t>>& sequences = {}) {
  if (logits.rank() != 2) throw ShapeError("[generate] next-token logits must be [B, V], got " + logits.shape().to_string());
  if (!(options.temperature >= 0.0)) throw ValueError("[generate] temperature must be >= 0, got " + std::to_string(options.temperature));
  if (!(options.top_p > 0.0 && options.top_p <= 1.0)) throw ValueError("[generate] top_p must be in (0, 1], got " + std::to_string(options.top_p));
  detail::check_repetition_options(options.repetition_penalty, options.no_repeat_ngram_size, "generate");
  const Index b = logits.size(0), v = logits.size(1);
  const bool repetition_rules = options.repetition_penalty != 1.0 || options.no_repeat_ngram_size > 0;
  if (repetition_rules && static_cast<Index>(sequences.size()) != b)
    throw ValueError("[generate] repetition_penalty / no_repeat_ngram_size need the ids so far of each of the " + std::to_string(b) +
                     " rows, got " + std::to_string(sequences.size()));
  const Tensor<T> rows = logits.contiguous();
  std::vector<std::int64_t> out(static_cast<std::size_t>(b));
  std::vector<double> p(static_cast<std::size_t>(v)), sorted;
  std::vector<Index> order;
  std::vector<char> seen;
  for (Index r = 0; r < b; ++r) {
    const T* row = rows.data() + r * v;
    for (Index j = 0; j < v; ++j) p[static_cast<std::size_t>(j)] = static_cast<double>(static_cast<compute_t<T>>(row[j]));
    if (repetition_rules)
      detail::apply_repetition_rules(p.data(), v, sequences[static_cast<std::size_t>(r)], options.repetition_penalty,
                                     options.no_repeat_ngram_size, seen);
    if (suppress_eos && options.eos_id >= 0 && options.eos_id < v) p[static_cast<std::size_t>(options.eos_id)] = -std::numeric_limits<double>::infinity();
    if (options.temperature == 0.0) {
      out[static_cast<std::size_t>(r)] = std::max_element(p.begin(), p.end()) - p.begin();
      continue;
    }
    double threshold = -std::numeric_limits<double>::infinity();
    if (options.top_k > 0 && options.top_k < v) {
      sorted = p;
      std::nth_element(sorted.begin(), sorted.begin() + (options.top_k - 1), sorted.end(), std::greater<>());
      threshold = sorted[static_cast<std::size_t>(options.top_k - 1)];
    }
    const double max = *std::max_element(p.begin(), p.end());
    double total = 0;
    for (double& x : p) total += x = x >= threshold ? std::exp((x - max) / options.temperature) : 0.0;
    if (options.top_p < 1.0) total = detail::keep_nucleus(p, total, options.top_p, order);
    double u = gen.uniform() * total;
    Index pick = v - 1;
    for (Index j = 0; j < v; ++j) {
      u -= p[static_cast<std::size_t>(j)];
      if (u < 0 && p[static_cast<std::size_t>(j)] > 0) {
        pick = j;
        break;
      }
    }
    while (p[static_cast<std::size_t>(pick)] == 0 && pick > 0) --pick;  // rounding left u >= 0: the last kept token
    out[static_cast<std::size_t>(r)] = pick;
  }
  return out;
}

namespace detail {
// A tensor on the host / on device D, copied only when it is elsewhere.
template <class T, Device D>
Tensor<T> on_host(const Tensor<T, D>& t) {
  if constexpr (std::is_same_v<D, cpu>) return t;
  else return t.template to<cpu>();
}
template <Device D, class T>
Tensor<T, D> on_device(const Tensor<T>& t) {
  if constexpr (std::is_same_v<D, cpu>) return t;
  else return t.template to<D>();
}
}  // namespace detail

// The generation loop over any cached step function; see the top of this file. On a device
// other than the CPU the model runs there and each step's [B, V] logits come to the host, where
// the token is chosen (the same code, so the same choice as on the CPU for the same logits).
template <class Step, Device D = cpu>
Tensor<std::int64_t, D> generate_with(Step&& step, const Tensor<std::int64_t, D>& prompt, const SamplingOptions& options) {
  if (prompt.rank() != 2 || prompt.size(1) < 1)
    throw ShapeError("[generate] the prompt must be [B, T0] with T0 >= 1, got " + prompt.shape().to_string());
  if (options.max_new_tokens < 0) throw ValueError("[generate] max_new_tokens must be >= 0, got " + std::to_string(options.max_new_tokens));
  if (options.min_new_tokens < 0) throw ValueError("[generate] min_new_tokens must be >= 0, got " + std::to_string(options.min_new_tokens));
  NoGradGuard generation_is_not_recorded;
  Generator gen(options.seed);
  detail::check_repetition_options(options.repetition_penalty, options.no_repeat_ngram_size, "generate");
  const Index b = prompt.size(0), t0 = prompt.size(1);
  const std::vector<std::int64_t> ids = prompt.to_vector();  // row-major [B, T0]
  std::vector<std::vector<std::int64_t>> sequences(static_cast<std::size_t>(b));  // each row's prompt + new tokens
  for (Index r = 0; r < b; ++r) sequences[static_cast<std::size_t>(r)].assign(ids.begin() + r * t0, ids.begin() + (r + 1) * t0);
  // What the repetition rules read: the same rows, without the prompt when asked.
  std::vector<std::vector<std::int64_t>> history =
      options.repetition_includes_prompt ? sequences : std::vector<std::vector<std::int64_t>>(static_cast<std::size_t>(b));
  std::vector<bool> finished(static_cast<std::size_t>(b), false);
  Tensor<std::int64_t, D> next = prompt;
  for (Index n = 0; n < options.max_new_tokens; ++n) {
    const auto tokens = choose_tokens(detail::on_host(step(next)), options, gen, n < options.min_new_tokens, history);
    std::vector<std::int64_t> column(static_cast<std::size_t>(b));
    bool all_done = true;
    for (Index r = 0; r < b; ++r) {
      const auto i = static_cast<std::size_t>(r);
      column[i] = finished[i] ? options.eos_id : tokens[i];
      sequences[i].push_back(column[i]);
      history[i].push_back(column[i]);
      finished[i] = finished[i] || (options.eos_id >= 0 && column[i] == options.eos_id);
      all_done = all_done && finished[i];
    }
    if (all_done || n + 1 == options.max_new_tokens) break;
    next = detail::on_device<D>(from_vector<std::int64_t>(column, Shape{b, 1}));
  }
  const Index length = sequences.empty() ? t0 : static_cast<Index>(sequences[0].size());
  std::vector<std::int64_t> result;
  result.reserve(static_cast<std::size_t>(b * length));
  for (const auto& row : sequences) result.insert(result.end(), row.begin(), row.end());
  return detail::on_device<D>(from_vector<std::int64_t>(result, Shape{b, length}));
}

namespace detail {
// Puts a module in eval mode for a scope and restores its mode afterwards.
template <class M>
class EvalScope {
 public:
  explicit EvalScope(M& m) : m_(m), was_training_(m.is_training()) { m_.eval(); }
  ~EvalScope() { m_.train(was_training_); }
  EvalScope(const EvalScope&) = delete;
  EvalScope& operator=(const EvalScope&) = delete;

 private:
  M& m_;
  bool was_training_;
};

inline Index cache_capacity(const TransformerConfig& c, Index t0, Index max_new) {
  const Index needed = t0 + std::max<Index>(max_new - 1, 0);  // the last chosen token is never fed back
  if (needed > c.max_seq_len)
    throw ValueError("[generate] prompt length " + std::to_string(t0) + " + max_new_tokens " + std::to_string(max_new) +
                     " needs " + std::to_string(needed) + " positions, above max_seq_len " + std::to_string(c.max_seq_len));
  return std::max<Index>(needed, 1);
}

// hidden [B, T, C] -> its last position [B, 1, C].
template <Element T, Device D>
Tensor<T, D> last_position(const Tensor<T, D>& h) {
  return h.slice(1, h.size(1) - 1, h.size(1));
}
}  // namespace detail

template <Element T, Device D>
Tensor<std::int64_t, D> generate(DecoderOnly<T, D>& model, const Tensor<std::int64_t, D>& prompt, const SamplingOptions& options = {}) {
  detail::EvalScope<DecoderOnly<T, D>> eval_mode(model);
  if (prompt.rank() != 2) throw ShapeError("[generate] the prompt must be [B, T0], got " + prompt.shape().to_string());
  auto cache = model.make_cache(prompt.size(0), detail::cache_capacity(model.config(), prompt.size(1), options.max_new_tokens));
  return generate_with(
      [&](const Tensor<std::int64_t, D>& ids_new) {
        const Tensor<T, D> h = model.decoder.forward_step(ids_new, cache);
        return model.logits(detail::last_position(h)).select(1, 0);
      },
      prompt, options);
}

// Sequence-to-sequence: encodes src once, then generates after `start` (e.g. [B, 1] of a
// decoder start token).
template <Element T, Device D>
Tensor<std::int64_t, D> generate(EncoderDecoder<T, D>& model, const Tensor<std::int64_t, D>& src, const Tensor<std::int64_t, D>& start,
                                 const SamplingOptions& options = {}, const Tensor<std::uint8_t, D>& src_padding = {}) {
  detail::EvalScope<EncoderDecoder<T, D>> eval_mode(model);
  if (start.rank() != 2) throw ShapeError("[generate] the start ids must be [B, T0], got " + start.shape().to_string());
  NoGradGuard generation_is_not_recorded;
  const Tensor<T, D> memory = model.encode(src, src_padding);
  auto cache = model.make_cache(start.size(0), detail::cache_capacity(model.config(), start.size(1), options.max_new_tokens));
  return generate_with(
      [&](const Tensor<std::int64_t, D>& ids_new) {
        const Tensor<T, D> h = model.decoder.forward_step(ids_new, cache, {}, memory, src_padding);
        return model.logits(detail::last_position(h)).select(1, 0);
      },
      start, options);
}

}  // namespace cerberus::nn
