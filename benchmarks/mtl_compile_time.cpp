// Compile-time probe for issue 5: one translation unit that builds a 3-task model under one
// sharing strategy (chosen by -DSTRATEGY=1..7), an AdamW over its parameters and one step.
// Not built by CMake; benchmarks/run_mtl_compile_time.sh compiles it once per strategy.
#include <cstdint>

#include "cerberus/cerberus.hpp"
#include "cerberus/mtl.hpp"
#include "cerberus/mtl/weighting/static.hpp"

#ifndef STRATEGY
#define STRATEGY 1
#endif

using namespace cerberus;

#if STRATEGY == 1
using Sharing = mtl::Hard;
#elif STRATEGY == 2
using Sharing = mtl::Hierarchical<1, mtl::Group<"u", "sentiment", "score">, mtl::Group<"g", "lm">>;
#elif STRATEGY == 3
using Sharing = mtl::Soft<0.01>;
#elif STRATEGY == 4
using Sharing = mtl::Adapters<4, 8.0>;
#elif STRATEGY == 5
using Sharing = mtl::MMoE<4>;
#elif STRATEGY == 6
using Sharing = mtl::CGC<2, 1>;
#elif STRATEGY == 7
using Sharing = mtl::CrossStitch<>;
#endif

using Model = mtl::Model<nn::Encoder<>, Sharing, mtl::Static<1.0, 1.0, 0.5>, mtl::Task<"sentiment", mtl::SequenceClassifier<2>>,
                         mtl::Task<"lm", mtl::LMHead<>>, mtl::Task<"score", mtl::Regression<>>>;

int main() {
  nn::TransformerConfig c;
  c.vocab_size = 32;
  c.d_model = 16;
  c.n_layers = 2;
  c.n_heads = 2;
  c.d_ff = 32;
  c.max_seq_len = 8;
  Generator gen(1);
  Model model(nn::Encoder<>(c, gen), gen);
  auto optimizer = optim::AdamW(model.trainable_parameters());
  mtl::Batch<float> batch;
  batch.ids = from_vector<std::int64_t>({1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, Shape{3, 4});
  batch.task_id = from_vector<std::int64_t>({0, 1, 2});
  batch.labels = from_vector<std::int64_t>({1, 0, 0});
  batch.token_labels = from_vector<std::int64_t>({2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}, Shape{3, 4});
  batch.values = from_vector<float>({0.5f, 0.0f, -0.5f});
  const mtl::WeightingReport report = model.step(batch, optimizer);
  return report.total > 0 ? 0 : 1;
}
