// A multi-task model whose size, sharing strategy and loss weighting are chosen when CMake
// configures the build (CERBERUS_EXAMPLE_D_MODEL, _LAYERS, _HEADS, _SHARING, _WEIGHTING; see
// docs/examples.md). They arrive through the generated cerberus_example_config.hpp as constants
// and types, so every choice is checked by the compiler.
//
// Three related tasks over sequences of 10 tokens (ids 1..40); half of the ids, scattered
// ((id * 7) % 41 < 20), are "marked":
//   count  is at least half of the sequence marked?        SequenceClassifier<2> (few examples)
//   mark   is each token marked?                            TokenClassifier<2>
//   share  which fraction of the sequence is marked?        Regression<1>
// The program trains on a fixed synthetic set for a few seconds, printing each task's loss and
// weight from the WeightingReport, then held-out accuracy. It fails (exit 1) unless every task's
// loss went down.
#include <cerberus/cerberus.hpp>
#include <cerberus/mtl.hpp>
#include <cerberus/mtl/weighting.hpp>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <string>
#include <type_traits>

#include "cerberus_example_config.hpp"

using namespace cerberus;
namespace cfg = cerberus_example;

using Model = mtl::Model<nn::Encoder<>, cfg::Sharing, cfg::Weighting,
                         mtl::Task<"count", mtl::SequenceClassifier<2, mtl::Pooling::mean>>,
                         mtl::Task<"mark", mtl::TokenClassifier<2>>,
                         mtl::Task<"share", mtl::Regression<1, mtl::Pooling::mean>>>;

constexpr Index kT = 10;
constexpr std::int64_t kVocab = 41;
constexpr bool is_marked(std::int64_t id) { return (id * 7) % kVocab < 20; }

// n[k] examples of task k, rows in task order.
mtl::Batch<float> synthetic(const std::array<Index, 3>& n, std::uint64_t seed) {
  Generator gen(seed);
  const Index b = n[0] + n[1] + n[2];
  const auto u = uniform<double>(Shape{b, kT}, 0.0, 1.0, gen).to_vector();
  std::vector<std::int64_t> ids(static_cast<std::size_t>(b * kT)), tok(ids.size()), labels(static_cast<std::size_t>(b)),
      task(labels.size());
  std::vector<float> values(labels.size());
  for (Index i = 0; i < b; ++i) {
    int marked = 0;
    for (Index j = 0; j < kT; ++j) {
      const auto at = static_cast<std::size_t>(i * kT + j);
      ids[at] = 1 + static_cast<std::int64_t>(u[at] * static_cast<double>(kVocab - 1));
      tok[at] = is_marked(ids[at]) ? 1 : 0;
      marked += static_cast<int>(tok[at]);
    }
    const auto row = static_cast<std::size_t>(i);
    labels[row] = 2 * marked >= kT ? 1 : 0;
    values[row] = static_cast<float>(marked) / static_cast<float>(kT);
    task[row] = i < n[0] ? 0 : i < n[0] + n[1] ? 1 : 2;
  }
  mtl::Batch<float> batch;
  batch.ids = from_vector<std::int64_t>(ids, Shape{b, kT});
  batch.task_id = from_vector<std::int64_t>(task);
  batch.labels = from_vector<std::int64_t>(labels);
  batch.token_labels = from_vector<std::int64_t>(tok, Shape{b, kT});
  batch.values = from_vector<float>(values);
  return batch;
}

// Held-out scores: accuracy for the classifiers, mean squared error for the regression.
struct Scores {
  double count_accuracy = 0, mark_accuracy = 0, share_mse = 0;
};

Scores evaluate(Model& model, const mtl::Batch<float>& test) {
  NoGradGuard no_grad;
  const auto out = model.forward(test);
  Scores s;
  auto accuracy = [](const Tensor<float>& logits, const Tensor<std::int64_t>& labels, int dim) {
    const auto pred = argmax(logits, dim).to_vector();
    const auto truth = labels.to_vector();
    Index right = 0;
    for (std::size_t i = 0; i < pred.size(); ++i) right += pred[i] == truth[i];
    return static_cast<double>(right) / static_cast<double>(pred.size());
  };
  const auto part = [&](std::size_t k) { return test.select(*out.rows[k]); };
  s.count_accuracy = accuracy(*out.outputs[0], part(0).labels, 1);
  s.mark_accuracy = accuracy(*out.outputs[1], part(1).token_labels, 2);
  const auto pred = out.outputs[2]->to_vector(), truth = part(2).values.to_vector();
  for (std::size_t i = 0; i < pred.size(); ++i) s.share_mse += (pred[i] - truth[i]) * (pred[i] - truth[i]);
  s.share_mse /= static_cast<double>(pred.size());
  return s;
}

// Uncertainty and GradNorm learn one value per task and are built with the task count.
template <class W>
W make_weighting(std::size_t tasks) {
  if constexpr (std::is_constructible_v<W, std::size_t>)
    return W(tasks);
  else
    return W{};
}

int main() {
  std::printf("configuration %s: Encoder d_model %lld, %lld layers, %lld heads; sharing %s (%s), weighting %s\n",
              cfg::config_name, static_cast<long long>(cfg::d_model), static_cast<long long>(cfg::layers),
              static_cast<long long>(cfg::heads), cfg::sharing_option, cfg::Sharing::name, cfg::weighting_option);

  nn::TransformerConfig c;
  c.vocab_size = kVocab;
  c.d_model = cfg::d_model;
  c.n_layers = cfg::layers;
  c.n_heads = cfg::heads;
  c.d_ff = 2 * cfg::d_model;
  c.max_seq_len = kT;
  Generator gen(42);
  Model model(nn::Encoder<>(c, gen), gen, make_weighting<cfg::Weighting>(Model::task_count));
  optim::AdamWOptions o;
  o.lr = 5e-3;
  auto optimizer = optim::AdamW(model.trainable_parameters(), o);

  const auto train = synthetic({24, 96, 96}, 1);
  const auto test = synthetic({200, 200, 200}, 2);
  std::printf("data: %lld training examples (count 24, mark 96, share 96), %lld held out; %zu trainable tensors\n",
              static_cast<long long>(train.size()), static_cast<long long>(test.size()), model.trainable_parameters().size());

  constexpr int kSteps = 120;
  std::vector<double> first, last;
  const auto start = std::chrono::steady_clock::now();
  for (int step = 0; step < kSteps; ++step) {
    const mtl::WeightingReport report = model.step(train, optimizer);
    if (step == 0) first = report.losses;
    last = report.losses;
    if (step % 20 == 0 || step == kSteps - 1) {
      std::printf("step %3d  total %.4f ", step, report.total);
      for (std::size_t k = 0; k < report.losses.size(); ++k)
        std::printf(" | %s loss %.4f weight %.3f", std::string(Model::task_names()[k]).c_str(), report.losses[k], report.weights[k]);
      std::printf("\n");
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  const Scores s = evaluate(model, test);
  std::printf("held out: count accuracy %.3f, mark accuracy %.3f, share mse %.4f (%d steps in %.1f s)\n", s.count_accuracy,
              s.mark_accuracy, s.share_mse, kSteps, seconds);
  for (std::size_t k = 0; k < first.size(); ++k)
    if (!std::isfinite(last[k]) || !(last[k] < first[k])) {
      std::printf("FAILED: task %zu's loss did not go down (%.4f -> %.4f)\n", k, first[k], last[k]);
      return 1;
    }
  return 0;
}
