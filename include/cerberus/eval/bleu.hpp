// BLEU as sacrebleu 2.x computes it (Papineni et al. 2002; Post 2018), scores in [0, 100].
//
//   corpus_bleu(hyps, refs, options)      refs[k][i] = the k-th reference of hypothesis i (sacrebleu's
//                                         "reference streams"; one stream = one reference each)
//   sentence_bleu(hyp, refs, options)     one hypothesis against its references
//   tokenize_13a(text)                    mteval-v13a tokenization, sacrebleu's default
//
// Defaults are sacrebleu's: 13a tokenization, case-sensitive, n-grams 1..4, clipped counts against
// the per-n-gram maximum over references, reference length = the closest reference length (the
// shorter on ties), brevity penalty exp(1 - r / c) when c < r. Corpus BLEU sums the statistics of
// all sentences before taking precisions. Smoothing: sacrebleu's default for both corpus and
// sentence BLEU is "exp" (Chen & Cherry 2014 method 3: the n-th order with zero matches gets
// precision 1 / (2^k * total), k counting such orders); it changes nothing when every order has a
// match, which is the usual corpus case. sentence_bleu uses effective order (orders with no
// n-grams in the hypothesis are dropped from the geometric mean), as sacrebleu.sentence_bleu does.
#pragma once

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cerberus/core/error.hpp"

namespace cerberus::evaluation {

enum class BleuTokenize { none, v13a };          // none: split on whitespace only
enum class BleuSmooth { none, floor, add_k, exp };

struct BleuOptions {
  BleuTokenize tokenize = BleuTokenize::v13a;
  BleuSmooth smooth = BleuSmooth::exp;
  double smooth_value = -1;      // < 0: sacrebleu's default for the method (floor 0.1, add-k 1)
  bool lowercase = false;        // ASCII lowercasing
  bool effective_order = false;  // sentence_bleu() turns it on
  int max_order = 4;
};

struct BleuScore {
  double score = 0;                 // [0, 100]
  std::vector<double> precisions;   // per order, in percent (after smoothing)
  double brevity_penalty = 0;
  std::int64_t sys_len = 0, ref_len = 0;
  std::vector<std::int64_t> counts, totals;  // clipped matches and hypothesis n-grams per order
};

// mteval-v13a as sacrebleu's Tokenizer13a: unescape a few HTML entities, then pad punctuation
// with spaces by four regular expressions applied one after the other, then collapse whitespace.
// Working on UTF-8 bytes gives the same result as on code points: every pattern character is
// ASCII, and a multi-byte character's bytes are all "not a digit" and never punctuation.
inline std::string tokenize_13a(std::string_view text) {
  std::string s;
  for (std::size_t i = 0; i < text.size(); ++i) {  // <skipped>, "-\n" and "\n" as sacrebleu
    if (text.substr(i, 9) == "<skipped>") { i += 8; continue; }
    if (text.substr(i, 2) == "-\n") { ++i; continue; }
    s += text[i] == '\n' ? ' ' : text[i];
  }
  if (s.find('&') != std::string::npos) {
    const std::pair<std::string_view, std::string_view> entities[] = {{"&quot;", "\""}, {"&amp;", "&"}, {"&lt;", "<"}, {"&gt;", ">"}};
    for (const auto& [from, to] : entities) {  // sequential str.replace calls, as in Python
      std::string r;
      for (std::size_t i = 0; i < s.size();) {
        if (s.compare(i, from.size(), from) == 0) { r += to; i += from.size(); }
        else r += s[i++];
      }
      s = std::move(r);
    }
  }
  s = " " + s + " ";
  const auto digit = [](char c) { return c >= '0' && c <= '9'; };
  const auto period_comma = [](char c) { return c == '.' || c == ','; };
  // 1. ([\{-\~\[-\` -\&\(-\+\:-\@\/]) -> " \1 "
  std::string r;
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    const bool punct = (u >= '{' && u <= '~') || (u >= '[' && u <= '`') || (u >= ' ' && u <= '&') || (u >= '(' && u <= '+') ||
                       (u >= ':' && u <= '@') || u == '/';
    if (punct) { r += ' '; r += c; r += ' '; }
    else r += c;
  }
  s = std::move(r);
  // 2. ([^0-9])([\.,]) -> "\1 \2 "   (non-overlapping matches, left to right, like re.sub)
  r.clear();
  for (std::size_t i = 0; i < s.size();) {
    if (i + 1 < s.size() && !digit(s[i]) && period_comma(s[i + 1])) { r += s[i]; r += ' '; r += s[i + 1]; r += ' '; i += 2; }
    else r += s[i++];
  }
  s = std::move(r);
  // 3. ([\.,])([^0-9]) -> " \1 \2"
  r.clear();
  for (std::size_t i = 0; i < s.size();) {
    if (i + 1 < s.size() && period_comma(s[i]) && !digit(s[i + 1])) { r += ' '; r += s[i]; r += s[i + 1]; i += 2; }
    else r += s[i++];
  }
  s = std::move(r);
  // 4. ([0-9])(-) -> "\1 \2 "
  r.clear();
  for (std::size_t i = 0; i < s.size();) {
    if (i + 1 < s.size() && digit(s[i]) && s[i + 1] == '-') { r += s[i]; r += " - "; i += 2; }
    else r += s[i++];
  }
  // " ".join(line.split())
  std::string out;
  for (std::size_t i = 0; i < r.size();) {
    while (i < r.size() && std::isspace(static_cast<unsigned char>(r[i]))) ++i;
    if (i == r.size()) break;
    if (!out.empty()) out += ' ';
    while (i < r.size() && !std::isspace(static_cast<unsigned char>(r[i]))) out += r[i++];
  }
  return out;
}

namespace detail {
inline std::vector<std::string> split_whitespace(std::string_view s) {
  std::vector<std::string> words;
  for (std::size_t i = 0; i < s.size();) {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    const std::size_t start = i;
    while (i < s.size() && !std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    if (i > start) words.emplace_back(s.substr(start, i - start));
  }
  return words;
}

inline std::string ascii_lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

inline std::vector<std::string> bleu_words(std::string_view text, const BleuOptions& o) {
  std::string s(text);
  if (o.lowercase) s = ascii_lower(std::move(s));
  return split_whitespace(o.tokenize == BleuTokenize::v13a ? tokenize_13a(s) : s);
}

// n-grams of order 1..max_order, keyed by their words joined with a space (tokens hold no spaces).
inline std::unordered_map<std::string, std::int64_t> ngram_counts(const std::vector<std::string>& w, int max_order) {
  std::unordered_map<std::string, std::int64_t> counts;
  for (std::size_t i = 0; i < w.size(); ++i) {
    std::string key;
    for (std::size_t n = 0; n < static_cast<std::size_t>(max_order) && i + n < w.size(); ++n) {
      if (n) key += ' ';
      key += w[i + n];
      ++counts[key];
    }
  }
  return counts;
}

inline int order_of(const std::string& key) { return 1 + static_cast<int>(std::count(key.begin(), key.end(), ' ')); }

// sacrebleu's compute_bleu: precisions with smoothing, effective order, brevity penalty.
inline BleuScore bleu_from_statistics(std::vector<std::int64_t> counts, std::vector<std::int64_t> totals, std::int64_t sys_len,
                                      std::int64_t ref_len, const BleuOptions& o) {
  BleuScore s;
  s.counts = counts;
  s.totals = totals;
  s.sys_len = sys_len;
  s.ref_len = ref_len;
  const int n_max = o.max_order;
  std::vector<double> correct(counts.begin(), counts.end()), total(totals.begin(), totals.end());
  s.precisions.assign(static_cast<std::size_t>(n_max), 0.0);
  // No n-gram of any order matched: 0 whatever the smoothing (sacrebleu issue #141; otherwise
  // "exp" would give a short unrelated sentence a positive score).
  if (std::all_of(counts.begin(), counts.end(), [](std::int64_t c) { return c == 0; })) {
    s.brevity_penalty = sys_len < ref_len ? (sys_len > 0 ? std::exp(1.0 - static_cast<double>(ref_len) / static_cast<double>(sys_len)) : 0.0) : 1.0;
    return s;
  }
  double smooth_mteval = 1;
  int eff_order = n_max;
  const double value = o.smooth_value >= 0 ? o.smooth_value : (o.smooth == BleuSmooth::floor ? 0.1 : 1.0);
  for (int n = 1; n <= n_max; ++n) {
    const auto i = static_cast<std::size_t>(n - 1);
    if (o.smooth == BleuSmooth::add_k && n > 1) {
      correct[i] += value;
      total[i] += value;
    }
    if (total[i] == 0) break;
    if (o.effective_order) eff_order = n;
    if (correct[i] == 0) {
      if (o.smooth == BleuSmooth::exp) {
        smooth_mteval *= 2;
        s.precisions[i] = 100.0 / (smooth_mteval * total[i]);
      } else if (o.smooth == BleuSmooth::floor) {
        s.precisions[i] = 100.0 * value / total[i];
      }
    } else {
      s.precisions[i] = 100.0 * correct[i] / total[i];
    }
  }
  s.brevity_penalty = sys_len < ref_len ? (sys_len > 0 ? std::exp(1.0 - static_cast<double>(ref_len) / static_cast<double>(sys_len)) : 0.0) : 1.0;
  double log_sum = 0;
  for (int n = 0; n < eff_order; ++n) {
    const double p = s.precisions[static_cast<std::size_t>(n)];
    log_sum += p == 0 ? -9999999999.0 : std::log(p);  // sacrebleu's my_log
  }
  s.score = s.brevity_penalty * std::exp(log_sum / eff_order);
  return s;
}
}  // namespace detail

inline BleuScore corpus_bleu(const std::vector<std::string>& hyps, const std::vector<std::vector<std::string>>& refs,
                             const BleuOptions& options = {}) {
  if (options.max_order < 1) throw ValueError("[bleu] max_order must be >= 1, got " + std::to_string(options.max_order));
  if (refs.empty()) throw ValueError("[bleu] no reference streams");
  for (std::size_t k = 0; k < refs.size(); ++k)
    if (refs[k].size() != hyps.size())
      throw ValueError("[bleu] reference stream " + std::to_string(k) + " has " + std::to_string(refs[k].size()) + " sentences, the hypotheses " +
                       std::to_string(hyps.size()));
  const auto n_max = static_cast<std::size_t>(options.max_order);
  std::vector<std::int64_t> counts(n_max, 0), totals(n_max, 0);
  std::int64_t sys_len = 0, ref_len = 0;
  for (std::size_t i = 0; i < hyps.size(); ++i) {
    const auto hyp = detail::bleu_words(hyps[i], options);
    const auto hyp_len = static_cast<std::int64_t>(hyp.size());
    std::unordered_map<std::string, std::int64_t> max_ref;
    std::int64_t closest = -1, closest_diff = std::numeric_limits<std::int64_t>::max();
    for (const auto& stream : refs) {
      const auto ref = detail::bleu_words(stream[i], options);
      const auto len = static_cast<std::int64_t>(ref.size());
      const std::int64_t diff = std::abs(hyp_len - len);
      if (diff < closest_diff || (diff == closest_diff && len < closest)) {
        closest_diff = diff;
        closest = len;
      }
      for (const auto& [key, c] : detail::ngram_counts(ref, options.max_order)) max_ref[key] = std::max(max_ref[key], c);
    }
    sys_len += hyp_len;
    ref_len += closest;
    for (const auto& [key, c] : detail::ngram_counts(hyp, options.max_order)) {
      const auto it = max_ref.find(key);
      if (it != max_ref.end()) counts[static_cast<std::size_t>(detail::order_of(key) - 1)] += std::min(c, it->second);
    }
    for (std::size_t n = 0; n < n_max; ++n) totals[n] += std::max<std::int64_t>(0, hyp_len - static_cast<std::int64_t>(n));
  }
  return detail::bleu_from_statistics(counts, totals, sys_len, ref_len, options);
}

// sacrebleu.sentence_bleu: one hypothesis, its references, effective order on.
inline BleuScore sentence_bleu(const std::string& hyp, const std::vector<std::string>& refs, BleuOptions options = {}) {
  options.effective_order = true;
  std::vector<std::vector<std::string>> streams;
  for (const auto& r : refs) streams.push_back({r});
  return corpus_bleu({hyp}, streams, options);
}

}  // namespace cerberus::evaluation
