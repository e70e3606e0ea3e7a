// Classification metrics over integer labels: accuracy, confusion matrix, macro-F1.
//
//   accuracy(pred, ref)                fraction of positions where pred == ref, in [0, 1]
//   confusion_matrix(pred, ref, K)     K x K counts, row = reference class, column = predicted
//   macro_f1(pred, ref)                unweighted mean of per-class F1, in [0, 1]
//
// Macro-F1 follows scikit-learn's f1_score(average="macro", zero_division=0) with labels=None:
// the classes averaged over are those that occur in the references or the predictions. A class
// absent from both is left out (it has no examples to be right or wrong about; counting it as 0
// would make the score depend on how many unused labels a task declares). A class that is
// referenced but never predicted, or predicted but never referenced, has an undefined precision
// or recall, taken as 0, so its F1 is 0.
#pragma once

#include <algorithm>
#include <cstdint>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "cerberus/core/error.hpp"

namespace cerberus::evaluation {

namespace detail {
inline void check_labels(const char* op, std::span<const std::int64_t> pred, std::span<const std::int64_t> ref) {
  if (pred.size() != ref.size())
    throw ValueError(std::string("[") + op + "] " + std::to_string(pred.size()) + " predictions but " + std::to_string(ref.size()) +
                     " references");
  if (pred.empty()) throw ValueError(std::string("[") + op + "] no examples");
}
}  // namespace detail

inline double accuracy(std::span<const std::int64_t> pred, std::span<const std::int64_t> ref) {
  detail::check_labels("accuracy", pred, ref);
  std::size_t right = 0;
  for (std::size_t i = 0; i < pred.size(); ++i) right += pred[i] == ref[i];
  return static_cast<double>(right) / static_cast<double>(pred.size());
}

// counts[r][p]: examples of reference class r predicted as p. Labels must lie in [0, K).
inline std::vector<std::vector<std::int64_t>> confusion_matrix(std::span<const std::int64_t> pred, std::span<const std::int64_t> ref,
                                                               std::int64_t num_classes) {
  detail::check_labels("confusion_matrix", pred, ref);
  if (num_classes <= 0) throw ValueError("[confusion_matrix] num_classes must be positive, got " + std::to_string(num_classes));
  std::vector<std::vector<std::int64_t>> m(static_cast<std::size_t>(num_classes), std::vector<std::int64_t>(static_cast<std::size_t>(num_classes), 0));
  for (std::size_t i = 0; i < pred.size(); ++i) {
    for (const std::int64_t label : {pred[i], ref[i]})
      if (label < 0 || label >= num_classes)
        throw IndexError("[confusion_matrix] label " + std::to_string(label) + " at example " + std::to_string(i) + " is outside [0, " +
                         std::to_string(num_classes) + ")");
    ++m[static_cast<std::size_t>(ref[i])][static_cast<std::size_t>(pred[i])];
  }
  return m;
}

// Per-class F1 of the classes that occur in pred or ref (sorted by label); see the top of this file.
inline std::vector<std::pair<std::int64_t, double>> per_class_f1(std::span<const std::int64_t> pred, std::span<const std::int64_t> ref) {
  detail::check_labels("macro_f1", pred, ref);
  std::set<std::int64_t> labels(pred.begin(), pred.end());
  labels.insert(ref.begin(), ref.end());
  std::vector<std::pair<std::int64_t, double>> out;
  for (const std::int64_t c : labels) {
    std::size_t tp = 0, predicted = 0, actual = 0;
    for (std::size_t i = 0; i < pred.size(); ++i) {
      tp += pred[i] == c && ref[i] == c;
      predicted += pred[i] == c;
      actual += ref[i] == c;
    }
    // F1 = 2 tp / (predicted + actual): the same as 2PR / (P + R), and 0 whenever tp == 0, which
    // is what zero_division = 0 gives for an undefined precision or recall.
    out.emplace_back(c, 2.0 * static_cast<double>(tp) / static_cast<double>(predicted + actual));
  }
  return out;
}

inline double macro_f1(std::span<const std::int64_t> pred, std::span<const std::int64_t> ref) {
  const auto f1 = per_class_f1(pred, ref);
  double sum = 0;
  for (const auto& [label, f] : f1) sum += f;
  return sum / static_cast<double>(f1.size());
}

}  // namespace cerberus::evaluation
