// Compile-fail: a group names a task the model does not have.
#include "cerberus/mtl.hpp"
#include "cerberus/mtl/weighting/static.hpp"
#include "cerberus/nn/stacks.hpp"

using namespace cerberus;

using M = mtl::Model<nn::Encoder<>, mtl::Hierarchical<1, mtl::Group<"u", "a">, mtl::Group<"g", "b", "translate">>, mtl::Equal,
                     mtl::Task<"a", mtl::SequenceClassifier<2>>, mtl::Task<"b", mtl::LMHead<>>>;
int main() { return sizeof(M) > 0 ? 0 : 1; }
