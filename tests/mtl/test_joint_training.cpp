// On a synthetic problem of related tasks with a shared latent feature, joint training (hard
// sharing) beats training the data-poor task alone, measured as held-out accuracy.
//
// The data (mtl_support.hpp, marked_tokens): tokens 1..40; half of them, scattered
// ((id * 7) % 41 < 20), are "marked" (the latent feature).
//   task "count"  (few examples):  are at least half the tokens marked?  SequenceClassifier<2>
//   task "mark"   (many examples): is each token marked?                   TokenClassifier<2>
// Learning "count" alone from 12 examples must discover which of 40 tokens are marked from 12 labels;
// jointly, the token task teaches the trunk the feature and "count" only needs a threshold.
#include <cstdio>

#include "mtl/mtl_support.hpp"
#include "support/catch.hpp"

using namespace cerberus;
using namespace mtl_test;

namespace {

using M = mtl::Model<nn::Encoder<>, mtl::Hard, mtl::Equal, mtl::Task<"count", mtl::SequenceClassifier<2, mtl::Pooling::mean>>,
                     mtl::Task<"mark", mtl::TokenClassifier<2>>>;

double count_accuracy(M& m, const mtl::Batch<float>& test) {
  NoGradGuard no_grad;
  const auto out = m.forward(test);
  const auto pred = argmax(*out.outputs[0], 1).to_vector();
  const auto labels = test.labels.to_vector();
  Index right = 0;
  for (std::size_t i = 0; i < pred.size(); ++i) right += pred[i] == labels[i];
  return static_cast<double>(right) / static_cast<double>(pred.size());
}

double train(const mtl::Batch<float>& data, const mtl::Batch<float>& test) {
  const nn::TransformerConfig c = marked_config();
  Generator gen(42);
  M m(nn::Encoder<>(c, gen), gen);
  optim::AdamWOptions o;
  o.lr = 1e-2;
  auto opt = optim::AdamW(m.trainable_parameters(), o);
  for (int step = 0; step < 150; ++step) m.step(data, opt);
  return count_accuracy(m, test);
}

}  // namespace

TEST_CASE("joint training with a related data-rich task beats single-task training on the data-poor task") {
  const auto joint_data = marked_tokens(12, 256, 1);
  const auto alone_data = joint_data.select(arange<std::int64_t>(12));  // the same 12 "count" examples
  const auto test = marked_tokens(400, 0, 2);
  const double alone = train(alone_data, test), joint = train(joint_data, test);
  std::printf("count accuracy: alone %.3f, joint %.3f\n", alone, joint);
  CHECK(joint >= alone + 0.1);
  CHECK(joint >= 0.7);
}
