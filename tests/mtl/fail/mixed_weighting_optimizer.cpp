// Compile-fail: a bf16 model whose weighting has float parameters (Uncertainty) stepped with one
// optimizer; its weighting parameters need a float optimizer of their own.
#include "cerberus/mtl.hpp"
#include "cerberus/mtl/weighting/uncertainty.hpp"
#include "cerberus/nn/stacks.hpp"
#include "cerberus/optim/adam.hpp"

using namespace cerberus;

using M = mtl::Model<nn::Encoder<bfloat16>, mtl::Hard, mtl::Uncertainty, mtl::Task<"a", mtl::SequenceClassifier<2, mtl::Pooling::first, bfloat16>>>;
int main() {
  Generator gen(1);
  M m(nn::Encoder<bfloat16>(nn::TransformerConfig{}, gen), gen, mtl::Uncertainty(1));
  optim::AdamW opt(m.trainable_parameters());
  m.step(mtl::Batch<bfloat16>{}, opt);
}
