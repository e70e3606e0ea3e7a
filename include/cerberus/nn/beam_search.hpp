// Beam search with a KV cache, for DecoderOnly and EncoderDecoder (Hugging Face's BeamSearchScorer
// rules, written out here).
//
// Legend: B = batch, K = num_beams, T0 = prompt length, N = new tokens, V = vocab.
//   beam_search(DecoderOnly& model, prompt [B, T0], options)                       -> BeamSearchResult
//   beam_search(EncoderDecoder& model, src [B, S], start [B, T0], options, src_padding)
//   beam_search_with(step, reorder, prompt, options): the loop; step(ids_new [B*K, T_new]) returns
//     next-token logits [B*K, V] (appending ids_new to its cache), reorder(rows) makes cache row r
//     a copy of old row rows[r].
//   BeamSearchResult: sequences [B, T0 + N] (prompt + best hypothesis, right-padded with pad_id),
//     scores [B] (the best hypothesis' length-normalised score), lengths [B] (its new tokens).
//
// Every prompt row is repeated K times; at the first step only beam 0 of each row is live (the
// others start at -inf) so the K beams start from K different tokens. Each step scores the K * V
// extensions by cumulative log-probability (log-softmax in double) and walks the best 2K in order
// (ties: lower beam, then lower token): an extension by eos_id among the first K becomes a
// finished hypothesis, any other fills the next K beams. A hypothesis' score is its summed
// log-probability / (new tokens, eos included) ^ length_penalty (GNMT / Hugging Face; 0 = raw
// sum, > 0 favours longer output). Each row keeps its K best finished hypotheses; a row is done
// when it has K and either early_stopping is set or the best live beam's current score cannot
// reach the worst kept one (Hugging Face's heuristic). The loop stops when every row is done or
// after max_new_tokens; live beams are then counted as hypotheses. Before min_new_tokens new
// tokens eos_id gets log-probability -inf. With K = 1 and early_stopping this is greedy decoding.
//
// Repetition control (generate.hpp's rules, per beam, on the beam's own ids: prompt + its new
// tokens): as in Hugging Face's beam search, the processors act on the log-softmax scores, not on
// the logits, and the result is not renormalised: repetition_penalty multiplies the
// log-probability of every id already in the beam (log-probabilities are <= 0, so it only lowers
// them; an exact 0 stays 0), no_repeat_ngram_size gives -inf to the tokens that would complete an
// n-gram already in the beam. The penalised scores are what the beam scores sum, so a
// hypothesis' score then differs from its model log-probability, as it does in Hugging Face.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "cerberus/autograd/grad_mode.hpp"
#include "cerberus/nn/generate.hpp"

namespace cerberus::nn {

struct BeamSearchOptions {
  Index num_beams = 4;
  Index max_new_tokens = 32;
  Index min_new_tokens = 0;
  double length_penalty = 1.0;  // score = sum of log-probabilities / length ^ length_penalty
  bool early_stopping = true;   // a row is done as soon as it has num_beams finished hypotheses
  std::int64_t eos_id = -1;     // -1 = none: every hypothesis runs to max_new_tokens
  std::int64_t pad_id = -1;     // fills shorter results; -1 = eos_id (0 when there is no eos)
  double repetition_penalty = 1.0;  // > 0; 1 = off (SamplingOptions' rule, on log-probabilities)
  Index no_repeat_ngram_size = 0;   // 0 = off; n: no n-gram occurs twice in a beam's ids
  bool repetition_includes_prompt = true;  // false: the rules read the beam's new tokens only
};

struct BeamSearchResult {
  Tensor<std::int64_t> sequences;  // [B, T0 + N]
  std::vector<double> scores;      // [B]
  std::vector<Index> lengths;      // [B] new tokens of each row's best hypothesis
};

namespace detail {
struct Hypothesis {
  std::vector<std::int64_t> tokens;
  double score;
};

// The K best finished hypotheses of one prompt row.
class BeamHypotheses {
 public:
  BeamHypotheses(Index k, double length_penalty) : k_(static_cast<std::size_t>(k)), alpha_(length_penalty) {}
  double normalise(double sum_logprobs, Index length) const { return sum_logprobs / std::pow(static_cast<double>(length), alpha_); }
  void add(std::vector<std::int64_t> tokens, double sum_logprobs) {
    const double s = normalise(sum_logprobs, static_cast<Index>(tokens.size()));
    if (hyps_.size() == k_ && !(s > worst())) return;
    hyps_.push_back({std::move(tokens), s});
    if (hyps_.size() > k_) hyps_.erase(std::min_element(hyps_.begin(), hyps_.end(), [](auto& a, auto& b) { return a.score < b.score; }));
  }
  bool full() const { return hyps_.size() >= k_; }
  double worst() const {
    double w = std::numeric_limits<double>::infinity();
    for (const auto& h : hyps_) w = std::min(w, h.score);
    return w;
  }
  // Highest score; the earlier-added one on ties.
  const Hypothesis& best() const {
    return *std::max_element(hyps_.begin(), hyps_.end(), [](auto& a, auto& b) { return a.score < b.score; });
  }
  bool empty() const { return hyps_.empty(); }

 private:
  std::size_t k_;
  double alpha_;
  std::vector<Hypothesis> hyps_;
};

// out[i * V + j] = log_softmax(logits[i])[j] in double; token `banned` (if >= 0) gets -inf first.
template <FloatElement T>
void log_softmax_rows(const Tensor<T>& logits, std::vector<double>& out, std::int64_t banned) {
  const Index rows = logits.size(0), v = logits.size(1);
  const Tensor<T> x = logits.contiguous();
  out.assign(static_cast<std::size_t>(rows * v), 0.0);
  for (Index i = 0; i < rows; ++i) {
    double* lp = out.data() + i * v;
    for (Index j = 0; j < v; ++j) lp[j] = static_cast<double>(static_cast<compute_t<T>>(x.data()[i * v + j]));
    if (banned >= 0 && banned < v) lp[banned] = -std::numeric_limits<double>::infinity();
    const double mx = *std::max_element(lp, lp + v);
    double sum = 0;
    for (Index j = 0; j < v; ++j) sum += std::exp(lp[j] - mx);
    const double lse = mx + std::log(sum);
    for (Index j = 0; j < v; ++j) lp[j] -= lse;
  }
}
}  // namespace detail

template <class Step, class Reorder>
BeamSearchResult beam_search_with(Step&& step, Reorder&& reorder, const Tensor<std::int64_t>& prompt, const BeamSearchOptions& o) {
  if (prompt.rank() != 2 || prompt.size(1) < 1)
    throw ShapeError("[beam_search] the prompt must be [B, T0] with T0 >= 1, got " + prompt.shape().to_string());
  if (o.num_beams < 1) throw ValueError("[beam_search] num_beams must be >= 1, got " + std::to_string(o.num_beams));
  if (o.max_new_tokens < 1) throw ValueError("[beam_search] max_new_tokens must be >= 1, got " + std::to_string(o.max_new_tokens));
  if (o.min_new_tokens < 0) throw ValueError("[beam_search] min_new_tokens must be >= 0, got " + std::to_string(o.min_new_tokens));
  detail::check_repetition_options(o.repetition_penalty, o.no_repeat_ngram_size, "beam_search");
  const bool repetition_rules = o.repetition_penalty != 1.0 || o.no_repeat_ngram_size > 0;
  NoGradGuard generation_is_not_recorded;
  const Index b = prompt.size(0), t0 = prompt.size(1), k = o.num_beams, bk = b * k;
  const double neg_inf = -std::numeric_limits<double>::infinity();
  const std::int64_t pad = o.pad_id >= 0 ? o.pad_id : std::max<std::int64_t>(o.eos_id, 0);
  const std::vector<std::int64_t> ids = prompt.to_vector();

  std::vector<std::int64_t> expanded;  // row r * K + j = prompt row r
  for (Index r = 0; r < b; ++r)
    for (Index j = 0; j < k; ++j) expanded.insert(expanded.end(), ids.begin() + r * t0, ids.begin() + (r + 1) * t0);
  std::vector<double> beam_score(static_cast<std::size_t>(bk), neg_inf);
  for (Index r = 0; r < b; ++r) beam_score[static_cast<std::size_t>(r * k)] = 0.0;
  std::vector<std::vector<std::int64_t>> beam_tokens(static_cast<std::size_t>(bk));
  std::vector<detail::BeamHypotheses> finished(static_cast<std::size_t>(b), detail::BeamHypotheses(k, o.length_penalty));
  std::vector<bool> done(static_cast<std::size_t>(b), false);

  Tensor<std::int64_t> next = from_vector<std::int64_t>(expanded, Shape{bk, t0});
  std::vector<double> logp;
  struct Candidate {
    double score;
    Index beam;  // within the row, 0..K-1
    std::int64_t token;
  };
  std::vector<Candidate> candidates;
  std::vector<std::int64_t> beam_sequence;  // prompt + one beam's new tokens, for the repetition rules
  std::vector<char> seen;
  for (Index n = 0; n < o.max_new_tokens; ++n) {
    const auto logits = step(next);
    if (logits.rank() != 2 || logits.size(0) != bk)
      throw ShapeError("[beam_search] step must return logits [B*K, V] = [" + std::to_string(bk) + ", V], got " + logits.shape().to_string());
    const Index v = logits.size(1);
    detail::log_softmax_rows(logits, logp, n < o.min_new_tokens ? o.eos_id : -1);
    if (repetition_rules)
      for (Index i = 0; i < bk; ++i) {
        if (done[static_cast<std::size_t>(i / k)]) continue;  // its candidates are never read
        if (o.repetition_includes_prompt) beam_sequence.assign(ids.begin() + (i / k) * t0, ids.begin() + (i / k + 1) * t0);
        else beam_sequence.clear();
        const auto& tail = beam_tokens[static_cast<std::size_t>(i)];
        beam_sequence.insert(beam_sequence.end(), tail.begin(), tail.end());
        detail::apply_repetition_rules(logp.data() + i * v, v, beam_sequence, o.repetition_penalty, o.no_repeat_ngram_size, seen);
      }

    std::vector<Index> src(static_cast<std::size_t>(bk));
    std::vector<std::int64_t> column(static_cast<std::size_t>(bk));
    std::vector<double> new_score(static_cast<std::size_t>(bk));
    for (Index r = 0; r < b; ++r) {
      const auto ru = static_cast<std::size_t>(r);
      if (done[ru]) {  // keep the rows in place; their contents no longer matter
        for (Index j = 0; j < k; ++j) {
          const auto i = static_cast<std::size_t>(r * k + j);
          src[i] = r * k + j;
          column[i] = pad;
          new_score[i] = neg_inf;
        }
        continue;
      }
      candidates.clear();
      for (Index j = 0; j < k; ++j)
        for (Index t = 0; t < v; ++t)
          candidates.push_back({beam_score[static_cast<std::size_t>(r * k + j)] + logp[static_cast<std::size_t>((r * k + j) * v + t)], j, t});
      const auto better = [](const Candidate& a, const Candidate& c) {
        if (a.score != c.score) return a.score > c.score;
        return a.beam != c.beam ? a.beam < c.beam : a.token < c.token;
      };
      const auto top = std::min<std::size_t>(candidates.size(), static_cast<std::size_t>(2 * k));
      std::partial_sort(candidates.begin(), candidates.begin() + static_cast<std::ptrdiff_t>(top), candidates.end(), better);
      Index filled = 0;
      for (std::size_t rank = 0; rank < top && filled < k; ++rank) {
        const Candidate& c = candidates[rank];
        const auto from = static_cast<std::size_t>(r * k + c.beam);
        if (o.eos_id >= 0 && c.token == o.eos_id) {
          if (rank < static_cast<std::size_t>(k) && c.score > neg_inf) {
            auto tokens = beam_tokens[from];
            tokens.push_back(c.token);
            finished[ru].add(std::move(tokens), c.score);
          }
          continue;
        }
        const auto i = static_cast<std::size_t>(r * k + filled++);
        src[i] = r * k + c.beam;
        column[i] = c.token;
        new_score[i] = c.score;
      }
      for (; filled < k; ++filled) {  // fewer than K live extensions (tiny vocabularies)
        const auto i = static_cast<std::size_t>(r * k + filled);
        src[i] = r * k;
        column[i] = pad;
        new_score[i] = neg_inf;
      }
      if (finished[ru].full()) {
        const double best_live = new_score[static_cast<std::size_t>(r * k)];
        done[ru] = o.early_stopping || best_live == neg_inf || finished[ru].normalise(best_live, n + 1) <= finished[ru].worst();
      }
    }

    std::vector<std::vector<std::int64_t>> tokens(static_cast<std::size_t>(bk));
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      tokens[i] = beam_tokens[static_cast<std::size_t>(src[i])];
      tokens[i].push_back(column[i]);
    }
    beam_tokens = std::move(tokens);
    beam_score = new_score;
    if (std::all_of(done.begin(), done.end(), [](bool d) { return d; }) || n + 1 == o.max_new_tokens) break;
    reorder(src);
    next = from_vector<std::int64_t>(column, Shape{bk, 1});
  }

  BeamSearchResult result;
  std::vector<std::vector<std::int64_t>> best(static_cast<std::size_t>(b));
  Index longest = 0;
  for (Index r = 0; r < b; ++r) {
    const auto ru = static_cast<std::size_t>(r);
    if (!done[ru])  // max_new_tokens reached: the live beams compete with the finished ones
      for (Index j = 0; j < k; ++j) {
        const auto i = static_cast<std::size_t>(r * k + j);
        if (beam_score[i] > neg_inf) finished[ru].add(beam_tokens[i], beam_score[i]);
      }
    if (finished[ru].empty()) throw ValueError("[beam_search] row " + std::to_string(r) + " has no hypothesis with a finite score");
    best[ru] = finished[ru].best().tokens;
    result.scores.push_back(finished[ru].best().score);
    result.lengths.push_back(static_cast<Index>(best[ru].size()));
    longest = std::max(longest, static_cast<Index>(best[ru].size()));
  }
  std::vector<std::int64_t> out;
  out.reserve(static_cast<std::size_t>(b * (t0 + longest)));
  for (Index r = 0; r < b; ++r) {
    out.insert(out.end(), ids.begin() + r * t0, ids.begin() + (r + 1) * t0);
    out.insert(out.end(), best[static_cast<std::size_t>(r)].begin(), best[static_cast<std::size_t>(r)].end());
    out.insert(out.end(), static_cast<std::size_t>(longest - static_cast<Index>(best[static_cast<std::size_t>(r)].size())), pad);
  }
  result.sequences = from_vector<std::int64_t>(out, Shape{b, t0 + longest});
  return result;
}

namespace detail {
// x [B, ...] -> [B*K, ...] with row r * K + j = row r: plain strided copies, valid for any element
// type (views of uint8 masks would reach autograd code that only float types compile).
template <Element U, Device D>
Tensor<U, D> repeat_rows(const Tensor<U, D>& x, Index k) {
  if (!x.defined() || k == 1) return x;
  Shape shape = x.shape();
  shape[0] = x.size(0) * k;
  Tensor<U, D> out = Tensor<U, D>::empty(shape);
  for (Index r = 0; r < x.size(0); ++r)
    for (Index j = 0; j < k; ++j) KVCache<float, D>::copy_into(out.slice(0, r * k + j, r * k + j + 1), x.slice(0, r, r + 1));
  return out;
}
}  // namespace detail

template <Element T, Device D>
BeamSearchResult beam_search(DecoderOnly<T, D>& model, const Tensor<std::int64_t, D>& prompt, const BeamSearchOptions& options = {}) {
  detail::EvalScope<DecoderOnly<T, D>> eval_mode(model);
  if (prompt.rank() != 2) throw ShapeError("[beam_search] the prompt must be [B, T0], got " + prompt.shape().to_string());
  auto cache = model.make_cache(prompt.size(0) * options.num_beams,
                                detail::cache_capacity(model.config(), prompt.size(1), options.max_new_tokens));
  return beam_search_with(
      [&](const Tensor<std::int64_t, D>& ids_new) {
        const Tensor<T, D> h = model.decoder.forward_step(ids_new, cache);
        return model.logits(detail::last_position(h)).select(1, 0);
      },
      [&](const std::vector<Index>& rows) { cache.reorder(rows); }, prompt, options);
}

// Sequence-to-sequence: encodes src once per beam row, then searches after `start` ([B, T0]).
template <Element T, Device D>
BeamSearchResult beam_search(EncoderDecoder<T, D>& model, const Tensor<std::int64_t, D>& src, const Tensor<std::int64_t, D>& start,
                             const BeamSearchOptions& options = {}, const Tensor<std::uint8_t, D>& src_padding = {}) {
  detail::EvalScope<EncoderDecoder<T, D>> eval_mode(model);
  if (start.rank() != 2) throw ShapeError("[beam_search] the start ids must be [B, T0], got " + start.shape().to_string());
  if (src.rank() != 2 || src.size(0) != start.size(0))
    throw ShapeError("[beam_search] src must be [B, S] with the batch of start " + start.shape().to_string() + ", got " + src.shape().to_string());
  NoGradGuard generation_is_not_recorded;
  const Index k = options.num_beams;
  const Tensor<T, D> memory = detail::repeat_rows(model.encode(src, src_padding), k);
  const Tensor<std::uint8_t, D> padding = detail::repeat_rows(src_padding, k);
  auto cache = model.make_cache(start.size(0) * k, detail::cache_capacity(model.config(), start.size(1), options.max_new_tokens));
  return beam_search_with(
      [&](const Tensor<std::int64_t, D>& ids_new) {
        const Tensor<T, D> h = model.decoder.forward_step(ids_new, cache, {}, memory, padding);
        return model.logits(detail::last_position(h)).select(1, 0);
      },
      [&](const std::vector<Index>& rows) { cache.reorder(rows); }, start, options);
}

}  // namespace cerberus::nn
