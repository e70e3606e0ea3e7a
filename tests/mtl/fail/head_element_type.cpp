// Compile-fail: a head over double hidden states on a float trunk.
#include "cerberus/mtl.hpp"
#include "cerberus/mtl/weighting/static.hpp"
#include "cerberus/nn/stacks.hpp"

using namespace cerberus;

using M = mtl::Model<nn::Encoder<float>, mtl::Hard, mtl::Equal, mtl::Task<"sentiment", mtl::SequenceClassifier<2, mtl::Pooling::first, double>>>;
int main() { return sizeof(M) > 0 ? 0 : 1; }
