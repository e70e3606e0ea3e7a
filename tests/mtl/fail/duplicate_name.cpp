// Compile-fail: two tasks with the same name.
#include "cerberus/mtl.hpp"
#include "cerberus/mtl/weighting/static.hpp"
#include "cerberus/nn/stacks.hpp"

using namespace cerberus;

using M = mtl::Model<nn::Encoder<>, mtl::Hard, mtl::Equal, mtl::Task<"sentiment", mtl::SequenceClassifier<2>>,
                     mtl::Task<"sentiment", mtl::TokenClassifier<3>>>;
M* m = nullptr;
int main() { return sizeof(M) > 0 ? 0 : 1; }
