// Compile-fail: two static weights for three tasks.
#include "cerberus/mtl.hpp"
#include "cerberus/mtl/weighting/static.hpp"
#include "cerberus/nn/stacks.hpp"

using namespace cerberus;

using M = mtl::Model<nn::Encoder<>, mtl::Hard, mtl::Static<1.0, 0.5>, mtl::Task<"a", mtl::SequenceClassifier<2>>,
                     mtl::Task<"b", mtl::SequenceClassifier<2>>, mtl::Task<"c", mtl::Regression<>>>;
int main() { return sizeof(M) > 0 ? 0 : 1; }
