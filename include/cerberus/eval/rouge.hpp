// ROUGE-1, ROUGE-2 and ROUGE-L (Lin 2004) as google-research's rouge_scorer computes them.
//
//   rouge(hypothesis, reference, tokenize)     -> RougeScores {rouge1, rouge2, rougeL}, each P/R/F
//   mean_rouge(hyps, refs, tokenize)           -> the per-sentence scores averaged (P, R and F each)
//
// ROUGE-N: clipped n-gram overlap; precision = overlap / hypothesis n-grams, recall = overlap /
// reference n-grams (0 when a side has none), F = 2PR / (P + R) (0 when P + R = 0). ROUGE-L is
// sentence-level: the longest common subsequence of the two token lists over their lengths
// (rouge_scorer's "rougeL"; the summary-level "rougeLsum" is not offered).
//
// Tokenization. RougeTokenize::alnum is rouge_scorer's default tokenizer and reproduces its and
// ROUGE-1.5.5's numbers: lowercase, every run of characters other than [a-z0-9] becomes a space.
// It erases non-ASCII letters, so for such text use RougeTokenize::whitespace: ASCII-lowercase
// and split on whitespace, punctuation kept attached. No stemming in either (rouge_scorer's
// use_stemmer = false, its default).
#pragma once

#include <algorithm>
#include <map>
#include <utility>
#include <string>
#include <string_view>
#include <vector>

#include "cerberus/core/error.hpp"
#include "cerberus/eval/bleu.hpp"  // detail::split_whitespace, detail::ascii_lower

namespace cerberus::evaluation {

enum class RougeTokenize { alnum, whitespace };

struct RougeScore {
  double precision = 0, recall = 0, fmeasure = 0;
};

struct RougeScores {
  RougeScore rouge1, rouge2, rougeL;
};

namespace detail {
inline std::vector<std::string> rouge_tokens(std::string_view text, RougeTokenize t) {
  std::string s = ascii_lower(std::string(text));
  if (t == RougeTokenize::alnum)
    for (char& c : s)
      if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) c = ' ';
  return split_whitespace(s);
}

inline RougeScore prf(double overlap, double hyp_total, double ref_total) {
  RougeScore s;
  s.precision = hyp_total > 0 ? overlap / hyp_total : 0.0;
  s.recall = ref_total > 0 ? overlap / ref_total : 0.0;
  s.fmeasure = s.precision + s.recall > 0 ? 2 * s.precision * s.recall / (s.precision + s.recall) : 0.0;
  return s;
}

inline RougeScore rouge_n(const std::vector<std::string>& hyp, const std::vector<std::string>& ref, std::size_t n) {
  const auto grams = [n](const std::vector<std::string>& w) {
    std::map<std::vector<std::string>, long> counts;
    for (std::size_t i = 0; i + n <= w.size(); ++i) ++counts[std::vector<std::string>(w.begin() + static_cast<long>(i), w.begin() + static_cast<long>(i + n))];
    return counts;
  };
  const auto h = grams(hyp), r = grams(ref);
  long overlap = 0, h_total = 0, r_total = 0;
  for (const auto& [g, c] : h) {
    h_total += c;
    const auto it = r.find(g);
    if (it != r.end()) overlap += std::min(c, it->second);
  }
  for (const auto& [g, c] : r) r_total += c;
  return prf(static_cast<double>(overlap), static_cast<double>(h_total), static_cast<double>(r_total));
}

inline std::size_t lcs_length(const std::vector<std::string>& a, const std::vector<std::string>& b) {
  std::vector<std::size_t> prev(b.size() + 1, 0), cur(b.size() + 1, 0);  // two rows of the DP table
  for (std::size_t i = 1; i <= a.size(); ++i) {
    for (std::size_t j = 1; j <= b.size(); ++j) cur[j] = a[i - 1] == b[j - 1] ? prev[j - 1] + 1 : std::max(prev[j], cur[j - 1]);
    std::swap(prev, cur);
  }
  return prev[b.size()];
}
}  // namespace detail

inline RougeScores rouge(std::string_view hypothesis, std::string_view reference, RougeTokenize tokenize = RougeTokenize::alnum) {
  const auto hyp = detail::rouge_tokens(hypothesis, tokenize), ref = detail::rouge_tokens(reference, tokenize);
  RougeScores s;
  s.rouge1 = detail::rouge_n(hyp, ref, 1);
  s.rouge2 = detail::rouge_n(hyp, ref, 2);
  s.rougeL = detail::prf(static_cast<double>(detail::lcs_length(hyp, ref)), static_cast<double>(hyp.size()), static_cast<double>(ref.size()));
  return s;
}

inline RougeScores mean_rouge(const std::vector<std::string>& hyps, const std::vector<std::string>& refs,
                              RougeTokenize tokenize = RougeTokenize::alnum) {
  if (hyps.size() != refs.size() || hyps.empty())
    throw ValueError("[rouge] need as many references as hypotheses, at least one: got " + std::to_string(hyps.size()) + " and " +
                     std::to_string(refs.size()));
  RougeScores m;
  for (std::size_t i = 0; i < hyps.size(); ++i) {
    const RougeScores s = rouge(hyps[i], refs[i], tokenize);
    for (auto [acc, x] : {std::pair{&m.rouge1, s.rouge1}, std::pair{&m.rouge2, s.rouge2}, std::pair{&m.rougeL, s.rougeL}}) {
      acc->precision += x.precision;
      acc->recall += x.recall;
      acc->fmeasure += x.fmeasure;
    }
  }
  const auto n = static_cast<double>(hyps.size());
  for (RougeScore* acc : {&m.rouge1, &m.rouge2, &m.rougeL}) {
    acc->precision /= n;
    acc->recall /= n;
    acc->fmeasure /= n;
  }
  return m;
}

}  // namespace cerberus::evaluation
