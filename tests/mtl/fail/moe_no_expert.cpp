// Compile-fail: a mixture of experts without a shared expert (MMoE<0>).
#include "cerberus/mtl.hpp"
#include "cerberus/mtl/weighting/static.hpp"
#include "cerberus/nn/stacks.hpp"

using namespace cerberus;

using M = mtl::Model<nn::Encoder<>, mtl::MMoE<0>, mtl::Equal, mtl::Task<"a", mtl::SequenceClassifier<2>>, mtl::Task<"b", mtl::LMHead<>>>;
int main() { return sizeof(M) > 0 ? 0 : 1; }
