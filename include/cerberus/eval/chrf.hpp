// chrF and chrF++ as sacrebleu 2.x computes them (Popović 2015, 2017), scores in [0, 100].
//
//   corpus_chrf(hyps, refs, options)     refs[k][i] = the k-th reference of hypothesis i
//   sentence_chrf(hyp, refs, options)
//
// Defaults are sacrebleu's chrF2: character n-grams of orders 1..6 over Unicode code points
// (UTF-8 decoded) with whitespace removed, no word n-grams, beta = 2, case-sensitive. word_order =
// 2 gives chrF++ (word unigrams and bigrams, with one leading or trailing punctuation character
// split off each word as sacrebleu does). Per order, n-gram counts of the hypothesis, the
// reference and their clipped matches are summed over the corpus; each order gets an F-beta
// score and the score is their mean. An order with no n-grams on one side contributes
// precision/recall 1e-16 (sacrebleu's eps_smoothing, its 2.x default); eps_smoothing = false is
// the pre-2.0 "effective order" (average precision and recall over orders present on both sides).
// With several references, each sentence takes the statistics of the reference with the best
// sentence-level score.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "cerberus/core/error.hpp"

namespace cerberus::evaluation {

struct ChrfOptions {
  int char_order = 6;
  int word_order = 0;  // 2 = chrF++
  double beta = 2;
  bool remove_whitespace = true;
  bool eps_smoothing = true;
  bool lowercase = false;  // ASCII lowercasing
};

namespace detail {
// UTF-8 -> code points; an invalid byte stands for itself, so malformed text still gets scored.
inline std::u32string utf8_code_points(std::string_view s) {
  std::u32string out;
  for (std::size_t i = 0; i < s.size();) {
    const auto b = static_cast<unsigned char>(s[i]);
    const int extra = b >= 0xF0 && b < 0xF8 ? 3 : b >= 0xE0 ? (b < 0xF0 ? 2 : 0) : b >= 0xC0 ? 1 : 0;
    char32_t cp = extra == 3 ? b & 0x07u : extra == 2 ? b & 0x0Fu : extra == 1 ? b & 0x1Fu : b;
    bool ok = i + static_cast<std::size_t>(extra) < s.size();
    for (int k = 1; ok && k <= extra; ++k) {
      const auto c = static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]);
      ok = (c & 0xC0u) == 0x80u;
      cp = (cp << 6) | (c & 0x3Fu);
    }
    if (!ok) cp = b;
    out += cp;
    i += ok ? static_cast<std::size_t>(extra) + 1 : 1;
  }
  return out;
}

inline bool is_space32(char32_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// sacrebleu's CHRF._remove_punctuation: one punctuation character is split off the end, or else
// off the start, of every word longer than one character.
inline std::vector<std::u32string> chrf_words(const std::u32string& s) {
  static constexpr std::u32string_view punct = U"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
  std::vector<std::u32string> words;
  for (std::size_t i = 0; i < s.size();) {
    while (i < s.size() && is_space32(s[i])) ++i;
    const std::size_t start = i;
    while (i < s.size() && !is_space32(s[i])) ++i;
    if (i == start) continue;
    std::u32string w = s.substr(start, i - start);
    if (w.size() > 1 && punct.find(w.back()) != std::u32string_view::npos) {
      words.push_back(w.substr(0, w.size() - 1));
      words.push_back(w.substr(w.size() - 1));
    } else if (w.size() > 1 && punct.find(w.front()) != std::u32string_view::npos) {
      words.push_back(w.substr(0, 1));
      words.push_back(w.substr(1));
    } else {
      words.push_back(std::move(w));
    }
  }
  return words;
}

using NgramCounts = std::vector<std::map<std::u32string, std::int64_t>>;  // one map per order

inline NgramCounts chrf_ngrams(std::string_view text, const ChrfOptions& o) {
  std::u32string s = utf8_code_points(text);
  if (o.lowercase)
    for (char32_t& c : s)
      if (c >= 'A' && c <= 'Z') c = c - 'A' + 'a';
  NgramCounts out(static_cast<std::size_t>(o.char_order + o.word_order));
  std::u32string chars;
  for (const char32_t c : s)
    if (!o.remove_whitespace || !is_space32(c)) chars += c;
  for (int n = 1; n <= o.char_order; ++n)
    for (std::size_t i = 0; i + static_cast<std::size_t>(n) <= chars.size(); ++i) ++out[static_cast<std::size_t>(n - 1)][chars.substr(i, static_cast<std::size_t>(n))];
  if (o.word_order > 0) {
    const auto words = chrf_words(s);
    for (int n = 1; n <= o.word_order; ++n)
      for (std::size_t i = 0; i + static_cast<std::size_t>(n) <= words.size(); ++i) {
        std::u32string key;
        for (std::size_t k = 0; k < static_cast<std::size_t>(n); ++k) key += (k ? U" " : U"") + words[i + k];
        ++out[static_cast<std::size_t>(o.char_order + n - 1)][key];
      }
  }
  return out;
}

// [hyp, ref, match] per order, flattened.
inline std::vector<std::int64_t> chrf_statistics(const NgramCounts& hyp, const NgramCounts& ref) {
  std::vector<std::int64_t> stats;
  for (std::size_t n = 0; n < hyp.size(); ++n) {
    std::int64_t n_hyp = 0, n_ref = 0, n_match = 0;
    for (const auto& [g, c] : hyp[n]) {
      n_hyp += c;
      const auto it = ref[n].find(g);
      if (it != ref[n].end()) n_match += std::min(c, it->second);
    }
    for (const auto& [g, c] : ref[n]) n_ref += c;
    stats.insert(stats.end(), {n_hyp, n_ref, n_match});
  }
  return stats;
}

// sacrebleu's CHRF._compute_f_score.
inline double chrf_from_statistics(const std::vector<std::int64_t>& stats, const ChrfOptions& o) {
  const double eps = 1e-16, factor = o.beta * o.beta;
  const std::size_t orders = stats.size() / 3;
  double score = 0, avg_prec = 0, avg_rec = 0;
  int effective_order = 0;
  for (std::size_t i = 0; i < orders; ++i) {
    const auto n_hyp = static_cast<double>(stats[3 * i]), n_ref = static_cast<double>(stats[3 * i + 1]),
               n_match = static_cast<double>(stats[3 * i + 2]);
    const double prec = n_hyp > 0 ? n_match / n_hyp : eps;
    const double rec = n_ref > 0 ? n_match / n_ref : eps;
    const double denom = factor * prec + rec;
    score += denom > 0 ? (1 + factor) * prec * rec / denom : eps;
    if (n_hyp > 0 && n_ref > 0) {
      avg_prec += prec;
      avg_rec += rec;
      ++effective_order;
    }
  }
  if (o.eps_smoothing) return 100 * score / static_cast<double>(orders);
  if (effective_order == 0) return 0.0;
  avg_prec /= effective_order;
  avg_rec /= effective_order;
  if (avg_prec + avg_rec == 0) return 0.0;
  return 100 * (1 + factor) * avg_prec * avg_rec / (factor * avg_prec + avg_rec);
}
}  // namespace detail

inline double corpus_chrf(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs, const ChrfOptions& options = {}) {
  if (options.char_order < 0 || options.word_order < 0 || options.char_order + options.word_order < 1)
    throw ValueError("[chrf] char_order (" + std::to_string(options.char_order) + ") and word_order (" + std::to_string(options.word_order) +
                     ") must be >= 0 with at least one order");
  if (!(options.beta > 0)) throw ValueError("[chrf] beta must be positive, got " + std::to_string(options.beta));
  if (refs.empty()) throw ValueError("[chrf] no reference streams");
  for (std::size_t k = 0; k < refs.size(); ++k)
    if (refs[k].size() != hyps.size())
      throw ValueError("[chrf] reference stream " + std::to_string(k) + " has " + std::to_string(refs[k].size()) + " sentences, the hypotheses " +
                       std::to_string(hyps.size()));
  std::vector<std::int64_t> total(static_cast<std::size_t>(3 * (options.char_order + options.word_order)), 0);
  for (std::size_t i = 0; i < hyps.size(); ++i) {
    const auto hyp = detail::chrf_ngrams(hyps[i], options);
    std::vector<std::int64_t> best;
    double best_f = -1;
    for (const auto& stream : refs) {
      auto stats = detail::chrf_statistics(hyp, detail::chrf_ngrams(stream[i], options));
      const double f = detail::chrf_from_statistics(stats, options);
      if (f > best_f) {
        best_f = f;
        best = std::move(stats);
      }
    }
    for (std::size_t j = 0; j < total.size(); ++j) total[j] += best[j];
  }
  return detail::chrf_from_statistics(total, options);
}

inline double sentence_chrf(const std::string& hyp, const std::vector<std::string>& refs, const ChrfOptions& options = {}) {
  std::vector<std::vector<std::string>> streams;
  for (const auto& r : refs) streams.push_back({r});
  return corpus_chrf({hyp}, streams, options);
}

}  // namespace cerberus::evaluation
